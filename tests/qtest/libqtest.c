/* The client side of wisp-vmm's device test protocol: process, socket, and one function per
 * command (docs/qtest.md). */
#include "libqtest.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REPLY_TIMEOUT_MS 30000
#define START_TIMEOUT_MS 10000
#define EXIT_TIMEOUT_MS  10000
#define ALLOC_START      0x100000ull

struct qtest {
    pid_t pid;
    bool exited;
    int status;
    int fd;
    char dir[200], sock[224], log[224]; /* a unix socket path has at most 107 bytes anyway */
    char *rbuf;                         /* received, not yet returned */
    size_t rlen, rcap;
    char *line; /* the last reply */
    size_t line_cap;
    char last[96]; /* the last command, for messages */
    uint64_t ram_low_end, alloc_next;
};

static void default_fail(const char *msg)
{
    fprintf(stderr, "libqtest: %s\n", msg);
    abort();
}

static void (*fail_handler)(const char *msg) = default_fail;

void qtest_set_fail_handler(void (*fn)(const char *msg))
{
    fail_handler = fn ? fn : default_fail;
}

const char *qtest_vmm(void)
{
    const char *v = getenv("WISP_VMM");
    return v && *v ? v : "wisp-vmm";
}

void qtest_fail(const struct qtest *q, const char *fmt, ...)
{
    static char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *log = q ? qtest_log(q) : NULL;
    if (log && *log && n >= 0 && (size_t)n < sizeof(msg)) {
        size_t len = strlen(log);
        const char *tail = len > 3000 ? log + len - 3000 : log;
        snprintf(msg + n, sizeof(msg) - (size_t)n, "\nwisp-vmm's stderr:\n%s", tail);
    }
    free(log);
    fail_handler(msg);
    abort(); /* a handler that returned */
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Reaps wisp-vmm if it has exited; true then. */
static bool reap(struct qtest *q, bool block)
{
    if (q->exited)
        return true;
    int st;
    pid_t r = waitpid(q->pid, &st, block ? 0 : WNOHANG);
    if (r != q->pid)
        return false;
    q->exited = true;
    q->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return true;
}

static void spawn(struct qtest *q, const char *vmm, const char *const *args)
{
    size_t n = 0;
    while (args[n])
        n++;
    const char **argv = calloc(n + 6, sizeof(*argv));
    if (!argv)
        qtest_fail(NULL, "out of memory");
    argv[0] = vmm;
    argv[1] = "--serial";
    argv[2] = "none"; /* the caller's own --serial comes later and wins */
    memcpy(argv + 3, args, n * sizeof(*argv));
    argv[n + 3] = "--test-socket";
    argv[n + 4] = q->sock;
    pid_t parent = getpid();
    q->pid = fork();
    if (q->pid < 0)
        qtest_fail(NULL, "fork: %s", strerror(errno));
    if (q->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* no wisp-vmm outlives a crashed test */
        if (getppid() != parent)
            _exit(127);
        int in = open("/dev/null", O_RDONLY),
            log = open(q->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (in < 0 || log < 0 || dup2(in, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
            _exit(127);
        execv(vmm, (char *const *)argv);
        dprintf(2, "libqtest: cannot run %s: %s\n", vmm, strerror(errno));
        _exit(127);
    }
    free(argv);
}

static int connect_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void wait_connect(struct qtest *q)
{
    int64_t deadline = now_ms() + START_TIMEOUT_MS;
    for (;;) {
        q->fd = connect_socket(q->sock);
        if (q->fd >= 0)
            return;
        if (q->fd != -ENOENT && q->fd != -ECONNREFUSED)
            qtest_fail(q, "connect %s: %s", q->sock, strerror(-q->fd));
        if (reap(q, false))
            qtest_fail(q, "wisp-vmm exited with status %d before its test socket was up",
                       q->status);
        if (now_ms() > deadline)
            qtest_fail(q, "wisp-vmm's test socket %s did not appear within %d ms", q->sock,
                       START_TIMEOUT_MS);
        usleep(2000);
    }
}

static void read_memmap(struct qtest *q)
{
    const char *r = qtest_cmd(q, "memmap");
    unsigned long long gpa, size;
    unsigned n;
    if (sscanf(r, "OK %u %llx %llx", &n, &gpa, &size) != 3 || n < 1)
        qtest_fail(q, "memmap: unexpected reply '%s'", r);
    q->ram_low_end = gpa + size;
    q->alloc_next = ALLOC_START;
}

struct qtest *qtest_startv(const char *vmm, const char *const *args)
{
    struct qtest *q = calloc(1, sizeof(*q));
    if (!q)
        qtest_fail(NULL, "out of memory");
    q->fd = -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(q->dir, sizeof(q->dir), "%s/wisp-qtest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(q->dir))
        qtest_fail(NULL, "mkdtemp %s: %s", q->dir, strerror(errno));
    snprintf(q->sock, sizeof(q->sock), "%s/qtest.sock", q->dir);
    snprintf(q->log, sizeof(q->log), "%s/stderr", q->dir);
    spawn(q, vmm, args);
    wait_connect(q);
    read_memmap(q);
    return q;
}

struct qtest *qtest_start(const char *vmm, ...)
{
    const char *args[64];
    unsigned n = 0;
    va_list ap;
    va_start(ap, vmm);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 63;)
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return qtest_startv(vmm, args);
}

static void cleanup(struct qtest *q)
{
    if (q->fd >= 0)
        close(q->fd);
    unlink(q->sock);
    unlink(q->log);
    rmdir(q->dir);
    free(q->rbuf);
    free(q->line);
    free(q);
}

void qtest_kill(struct qtest *q)
{
    if (!q)
        return;
    if (!reap(q, false)) {
        kill(q->pid, SIGKILL);
        reap(q, true);
    }
    cleanup(q);
}

int qtest_wait_exit(struct qtest *q, unsigned timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (!reap(q, false)) {
        if (now_ms() > deadline)
            qtest_fail(q, "wisp-vmm did not exit within %u ms", timeout_ms);
        usleep(1000);
    }
    int status = q->status;
    cleanup(q);
    return status;
}

int qtest_quit(struct qtest *q)
{
    const char *r = qtest_cmd(q, "quit");
    if (strcmp(r, "OK"))
        qtest_fail(q, "quit: unexpected reply '%s'", r);
    return qtest_wait_exit(q, EXIT_TIMEOUT_MS);
}

pid_t qtest_pid(const struct qtest *q)
{
    return q->pid;
}

const char *qtest_socket_path(const struct qtest *q)
{
    return q->sock;
}

int qtest_connect_extra(const struct qtest *q)
{
    int fd = connect_socket(q->sock);
    if (fd < 0)
        qtest_fail(q, "connect %s: %s", q->sock, strerror(-fd));
    return fd;
}

void qtest_reconnect(struct qtest *q)
{
    close(q->fd);
    q->rlen = 0;
    wait_connect(q);
}

/* --- lines --- */

static void send_all(struct qtest *q, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(q->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            qtest_fail(q, "sending '%s': %s", q->last, n < 0 ? strerror(errno) : "closed");
        p += n;
        len -= (size_t)n;
    }
}

static const char *recv_line_within(struct qtest *q, unsigned timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        char *nl = q->rlen ? memchr(q->rbuf, '\n', q->rlen) : NULL;
        if (nl) {
            size_t len = (size_t)(nl - q->rbuf);
            if (len + 1 > q->line_cap) {
                q->line_cap = len + 1;
                if (!(q->line = realloc(q->line, q->line_cap)))
                    qtest_fail(q, "out of memory");
            }
            memcpy(q->line, q->rbuf, len);
            q->line[len] = '\0';
            memmove(q->rbuf, nl + 1, q->rlen - len - 1);
            q->rlen -= len + 1;
            return q->line;
        }
        if (q->rcap - q->rlen < 65536) {
            q->rcap = q->rcap ? q->rcap * 2 : 131072;
            if (!(q->rbuf = realloc(q->rbuf, q->rcap)))
                qtest_fail(q, "out of memory");
        }
        int64_t left = deadline - now_ms();
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) == 0)
            qtest_fail(q, "no reply to '%s' within %u ms", q->last, timeout_ms);
        ssize_t n = recv(q->fd, q->rbuf + q->rlen, q->rcap - q->rlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            usleep(50000);
            if (reap(q, false))
                qtest_fail(q, "wisp-vmm exited with status %d instead of answering '%s'", q->status,
                           q->last);
            qtest_fail(q, "the test socket closed instead of answering '%s'", q->last);
        }
        q->rlen += (size_t)n;
    }
}

const char *qtest_recv_line(struct qtest *q)
{
    return recv_line_within(q, REPLY_TIMEOUT_MS);
}

void qtest_send_raw(struct qtest *q, const void *data, size_t len)
{
    snprintf(q->last, sizeof(q->last), "%.*s", (int)(len < 60 ? len : 60), (const char *)data);
    send_all(q, data, len);
}

static const char *vcmd(struct qtest *q, unsigned timeout_ms, const char *fmt, va_list ap)
{
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    char *buf = small;
    if (n < 0)
        qtest_fail(q, "bad command format '%s'", fmt);
    if ((size_t)n + 1 >= sizeof(small)) {
        if (!(buf = malloc((size_t)n + 2)))
            qtest_fail(q, "out of memory");
        vsnprintf(buf, (size_t)n + 1, fmt, ap2);
    }
    va_end(ap2);
    buf[n] = '\n';
    snprintf(q->last, sizeof(q->last), "%.*s", n < 80 ? n : 80, buf);
    send_all(q, buf, (size_t)n + 1);
    if (buf != small)
        free(buf);
    return recv_line_within(q, timeout_ms);
}

const char *qtest_cmd(struct qtest *q, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *r = vcmd(q, REPLY_TIMEOUT_MS, fmt, ap);
    va_end(ap);
    return r;
}

bool qtest_reply_ok(const char *reply)
{
    return !strncmp(reply, "OK", 2) && (reply[2] == '\0' || reply[2] == ' ');
}

static void expect_ok(struct qtest *q, const char *r)
{
    if (strcmp(r, "OK"))
        qtest_fail(q, "'%s': expected OK, got '%s'", q->last, r);
}

static uint64_t expect_value(struct qtest *q, const char *r)
{
    char *end;
    if (strncmp(r, "OK 0x", 5))
        qtest_fail(q, "'%s': expected OK 0xVALUE, got '%s'", q->last, r);
    errno = 0;
    unsigned long long v = strtoull(r + 5, &end, 16);
    if (errno || *end)
        qtest_fail(q, "'%s': bad value in '%s'", q->last, r);
    return v;
}

/* --- registers --- */

#define QTEST_READ(name, type, cmd)                                                                \
    type qtest_##name(struct qtest *q, uint64_t addr)                                              \
    {                                                                                              \
        return (type)expect_value(q, qtest_cmd(q, cmd " 0x%llx", (unsigned long long)addr));       \
    }
#define QTEST_WRITE(name, type, cmd)                                                               \
    void qtest_##name(struct qtest *q, uint64_t addr, type v)                                      \
    {                                                                                              \
        expect_ok(q, qtest_cmd(q, cmd " 0x%llx 0x%llx", (unsigned long long)addr,                  \
                               (unsigned long long)v));                                            \
    }

QTEST_READ(readb, uint8_t, "readb")
QTEST_READ(readw, uint16_t, "readw")
QTEST_READ(readl, uint32_t, "readl")
QTEST_READ(readq, uint64_t, "readq")
QTEST_WRITE(writeb, uint8_t, "writeb")
QTEST_WRITE(writew, uint16_t, "writew")
QTEST_WRITE(writel, uint32_t, "writel")
QTEST_WRITE(writeq, uint64_t, "writeq")

uint8_t qtest_inb(struct qtest *q, uint16_t port)
{
    return (uint8_t)expect_value(q, qtest_cmd(q, "inb 0x%x", port));
}

uint16_t qtest_inw(struct qtest *q, uint16_t port)
{
    return (uint16_t)expect_value(q, qtest_cmd(q, "inw 0x%x", port));
}

uint32_t qtest_inl(struct qtest *q, uint16_t port)
{
    return (uint32_t)expect_value(q, qtest_cmd(q, "inl 0x%x", port));
}

void qtest_outb(struct qtest *q, uint16_t port, uint8_t v)
{
    expect_ok(q, qtest_cmd(q, "outb 0x%x 0x%x", port, v));
}

void qtest_outw(struct qtest *q, uint16_t port, uint16_t v)
{
    expect_ok(q, qtest_cmd(q, "outw 0x%x 0x%x", port, v));
}

void qtest_outl(struct qtest *q, uint16_t port, uint32_t v)
{
    expect_ok(q, qtest_cmd(q, "outl 0x%x 0x%x", port, v));
}

/* --- guest RAM --- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

void qtest_memread(struct qtest *q, uint64_t gpa, void *buf, size_t len)
{
    const char *r = qtest_cmd(q, "memread 0x%llx %zu", (unsigned long long)gpa, len);
    if (strncmp(r, "OK ", 3) || strlen(r + 3) != 2 * len)
        qtest_fail(q, "'%s': expected OK and %zu hex digits, got '%.200s'", q->last, 2 * len, r);
    uint8_t *out = buf;
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(r[3 + 2 * i]), lo = hexval(r[4 + 2 * i]);
        if (hi < 0 || lo < 0)
            qtest_fail(q, "'%s': bad hex in the reply", q->last);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
}

void qtest_memwrite(struct qtest *q, uint64_t gpa, const void *buf, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *hex = malloc(2 * len + 1);
    if (!hex)
        qtest_fail(q, "out of memory");
    const uint8_t *p = buf;
    for (size_t i = 0; i < len; i++) {
        hex[2 * i] = digits[p[i] >> 4];
        hex[2 * i + 1] = digits[p[i] & 15];
    }
    hex[2 * len] = '\0';
    const char *r = qtest_cmd(q, "memwrite 0x%llx %s", (unsigned long long)gpa, hex);
    free(hex);
    expect_ok(q, r);
}

void qtest_memset(struct qtest *q, uint64_t gpa, size_t len, uint8_t byte)
{
    expect_ok(q, qtest_cmd(q, "memset 0x%llx %zu 0x%x", (unsigned long long)gpa, len, byte));
}

uint16_t qtest_mem_u16(struct qtest *q, uint64_t gpa)
{
    uint8_t b[2];
    qtest_memread(q, gpa, b, 2);
    return (uint16_t)(b[0] | b[1] << 8);
}

uint32_t qtest_mem_u32(struct qtest *q, uint64_t gpa)
{
    uint8_t b[4];
    qtest_memread(q, gpa, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void put_le(struct qtest *q, uint64_t gpa, uint64_t v, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    qtest_memwrite(q, gpa, b, n);
}

void qtest_mem_put_u16(struct qtest *q, uint64_t gpa, uint16_t v)
{
    put_le(q, gpa, v, 2);
}

void qtest_mem_put_u32(struct qtest *q, uint64_t gpa, uint32_t v)
{
    put_le(q, gpa, v, 4);
}

void qtest_mem_put_u64(struct qtest *q, uint64_t gpa, uint64_t v)
{
    put_le(q, gpa, v, 8);
}

uint64_t qtest_alloc(struct qtest *q, uint64_t size, uint64_t align)
{
    uint64_t at = (q->alloc_next + align - 1) & ~(align - 1);
    if (size == 0 || at + size > q->ram_low_end)
        qtest_fail(q, "qtest_alloc: %llu bytes do not fit below 0x%llx", (unsigned long long)size,
                   (unsigned long long)q->ram_low_end);
    q->alloc_next = at + size;
    qtest_memset(q, at, size, 0);
    return at;
}

/* --- interrupts --- */

uint64_t qtest_irq_count(struct qtest *q, unsigned gsi)
{
    const char *r = qtest_cmd(q, "irq_count %u", gsi);
    unsigned long long n;
    if (sscanf(r, "OK %llu", &n) != 1)
        qtest_fail(q, "'%s': unexpected reply '%s'", q->last, r);
    return n;
}

bool qtest_irq_wait(struct qtest *q, unsigned gsi, unsigned timeout_ms)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "irq_wait %u %u\n", gsi, timeout_ms);
    qtest_send_raw(q, cmd, strlen(cmd));
    const char *r = recv_line_within(q, REPLY_TIMEOUT_MS + timeout_ms);
    if (!strcmp(r, "OK"))
        return true;
    if (!strcmp(r, "ERR timeout"))
        return false;
    qtest_fail(q, "'%s': unexpected reply '%s'", q->last, r);
}

int qtest_irq_level(struct qtest *q, unsigned gsi)
{
    const char *r = qtest_cmd(q, "irq_level %u", gsi);
    int level;
    if (sscanf(r, "OK %d", &level) != 1)
        qtest_fail(q, "'%s': unexpected reply '%s'", q->last, r);
    return level;
}

/* --- the machine --- */

unsigned qtest_devices(struct qtest *q, struct qtest_device *out, unsigned max)
{
    const char *r = qtest_cmd(q, "devices");
    unsigned n, used = 0;
    int off;
    if (sscanf(r, "OK %u%n", &n, &off) != 1)
        qtest_fail(q, "devices: unexpected reply '%s'", r);
    r += off;
    for (unsigned i = 0; i < n; i++) {
        struct qtest_device d;
        unsigned long long base, size;
        if (sscanf(r, " %39s %39s %llx %llx %u%n", d.name, d.type, &base, &size, &d.gsi, &off) != 5)
            qtest_fail(q, "devices: cannot parse entry %u of the reply", i);
        r += off;
        d.base = base;
        d.size = size;
        if (used < max)
            out[used++] = d;
    }
    return used;
}

bool qtest_find_device(struct qtest *q, const char *type, unsigned nth, struct qtest_device *out)
{
    struct qtest_device d[32];
    unsigned n = qtest_devices(q, d, 32);
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(d[i].type, type) && nth-- == 0) {
            *out = d[i];
            return true;
        }
    return false;
}

char *qtest_log(const struct qtest *q)
{
    FILE *f = fopen(q->log, "r");
    char *s = NULL;
    size_t len = 0;
    if (f) {
        FILE *m = open_memstream(&s, &len);
        char buf[4096];
        size_t n;
        while (m && (n = fread(buf, 1, sizeof(buf), f)) > 0)
            fwrite(buf, 1, n, m);
        if (m)
            fclose(m);
        fclose(f);
    }
    return s ? s : strdup("");
}

bool qtest_log_wait(const struct qtest *q, const char *needle, unsigned timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        char *log = qtest_log(q);
        bool found = log && strstr(log, needle);
        free(log);
        if (found)
            return true;
        if (now_ms() > deadline)
            return false;
        usleep(2000);
    }
}

void qtest_expect_log(const struct qtest *q, const char *needle, unsigned timeout_ms)
{
    if (!qtest_log_wait(q, needle, timeout_ms))
        qtest_fail(q, "wisp-vmm's log does not say '%s' within %u ms", needle, timeout_ms);
}
