/* The device test protocol server (docs/qtest.md): a unix socket on the main loop, one client at
 * a time, one text line per command and one reply line per command, in order. */
#include "vmm/qtest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/evloop.h"
#include "common/log.h"
#include "common/parse.h"
#include "vmm/machine.h"

#define QTEST_MAX_MEM    (1u << 20)                /* memread/memwrite bytes per command */
#define QTEST_MAX_LINE   (2 * QTEST_MAX_MEM + 128) /* a memwrite of QTEST_MAX_MEM bytes fits */
#define QTEST_OUT_HIGH   (4u << 20) /* no more commands are taken while this much output waits */
#define QTEST_MAX_WAIT   600000     /* irq_wait: at most 10 minutes */
#define QTEST_MAX_ARGS   4
#define QTEST_GSIS       RESOURCES_MAX_GSIS
#define QTEST_READ_CHUNK 65536

/* An interrupt line whose irqfd (a virtio device's) the server watches instead of KVM. */
struct qtest_irq {
    struct qtest *q;
    int fd; /* -1: none */
    struct evloop_source *src;
    uint64_t pulses; /* eventfd writes seen so far */
    uint64_t waited; /* pulses already answered by an irq_wait */
};

struct qtest {
    struct machine *m;
    char *path;
    bool bound; /* path is our socket: removed at the end */
    int listen_fd, client_fd;
    struct evloop_source *listen_src, *client_src, *timer;
    char *in; /* received bytes not processed yet */
    size_t in_len, in_cap, in_scanned;
    bool discarding; /* the rest of an over-long line is dropped */
    char *out;       /* replies not written yet: [out_off, out_len) */
    size_t out_off, out_len, out_cap;
    bool waiting; /* an irq_wait is pending: later lines wait for its answer */
    unsigned wait_gsi;
    struct qtest_irq irq[QTEST_GSIS];
    atomic_int level[QTEST_GSIS]; /* set_irq levels (legacy lines) */
};

static void client_close(struct qtest *q);
static void client_update(struct qtest *q);

/* --- output --- */

static bool out_reserve(struct qtest *q, size_t n)
{
    if (q->out_off) { /* the unwritten rest to the front */
        memmove(q->out, q->out + q->out_off, q->out_len - q->out_off);
        q->out_len -= q->out_off;
        q->out_off = 0;
    }
    if (q->out_cap - q->out_len >= n)
        return true;
    size_t cap = q->out_cap ? q->out_cap : 4096;
    while (cap - q->out_len < n)
        cap *= 2;
    char *p = realloc(q->out, cap);
    if (!p) {
        wisp_log("test socket: out of memory for a reply; the client is disconnected");
        client_close(q);
        return false;
    }
    q->out = p;
    q->out_cap = cap;
    return true;
}

static void __attribute__((format(printf, 2, 3))) reply(struct qtest *q, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
    line[len++] = '\n';
    if (q->client_fd >= 0 && out_reserve(q, len)) {
        memcpy(q->out + q->out_len, line, len);
        q->out_len += len;
    }
}

/* Writes what the socket takes now; false when the client went away. */
static bool out_flush(struct qtest *q)
{
    while (q->out_off < q->out_len) {
        ssize_t n = send(q->client_fd, q->out + q->out_off, q->out_len - q->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n <= 0)
            return false;
        q->out_off += (size_t)n;
    }
    return true;
}

/* --- arguments --- */

static int arg_u64(struct qtest *q, const char *s, const char *what, uint64_t *v)
{
    if (parse_u64(s, v) == 0)
        return 0;
    reply(q, "ERR %s '%.64s' is not a number (decimal or 0x-hex, 64 bits)", what, s);
    return -EINVAL;
}

static int arg_value(struct qtest *q, const char *s, unsigned size, uint64_t *v)
{
    if (arg_u64(q, s, "value", v) < 0)
        return -EINVAL;
    if (size < 8 && *v >> (8 * size)) {
        reply(q, "ERR value %s does not fit in %u byte%s", s, size, size > 1 ? "s" : "");
        return -ERANGE;
    }
    return 0;
}

static int arg_gsi(struct qtest *q, const char *s, unsigned *gsi)
{
    uint64_t v;
    if (arg_u64(q, s, "GSI", &v) < 0)
        return -EINVAL;
    if (v >= QTEST_GSIS) {
        reply(q, "ERR GSI %s is beyond the machine's lines (0 to %u)", s, QTEST_GSIS - 1);
        return -ERANGE;
    }
    *gsi = (unsigned)v;
    return 0;
}

static const struct guest_mem *qtest_mem(const struct qtest *q)
{
    return &q->m->vm.mem;
}

/* The host address of guest RAM [gpa, gpa + len), or NULL after an ERR reply. */
static void *arg_ram(struct qtest *q, uint64_t gpa, uint64_t len)
{
    void *p = gpa_to_hva(qtest_mem(q), gpa, len);
    if (!p)
        reply(q, "ERR [0x%llx, +0x%llx) is not guest RAM (it must lie in one RAM region)",
              (unsigned long long)gpa, (unsigned long long)len);
    return p;
}

/* --- register accesses --- */

static unsigned access_size(char suffix)
{
    return suffix == 'b' ? 1 : suffix == 'w' ? 2 : suffix == 'l' ? 4 : 8;
}

/* readX/writeX: what a vCPU's access sees. RAM is RAM (KVM never exits for it); anything else
 * goes to the MMIO bus as a vCPU's MMIO exit does (unclaimed: reads all ones, writes dropped). */
static void cmd_mmio(struct qtest *q, char **argv, unsigned argc)
{
    bool write = argv[0][0] == 'w';
    unsigned size = access_size(argv[0][write ? 5 : 4]);
    uint64_t addr, v = 0;
    if (argc != (write ? 3u : 2u)) {
        reply(q, "ERR usage: %s ADDR%s", argv[0], write ? " VALUE" : "");
        return;
    }
    if (arg_u64(q, argv[1], "address", &addr) < 0 || (write && arg_value(q, argv[2], size, &v) < 0))
        return;
    uint8_t *ram = gpa_to_hva(qtest_mem(q), addr, size);
    if (ram && write)
        memcpy(ram, &v, size);
    else if (ram)
        memcpy(&v, ram, size);
    else if (write)
        bus_write(&q->m->mmio, addr, &v, size);
    else
        bus_read(&q->m->mmio, addr, &v, size);
    if (write)
        reply(q, "OK");
    else
        reply(q, "OK 0x%llx", (unsigned long long)v);
}

/* inX/outX: the port bus, as a vCPU's port exit. */
static void cmd_pio(struct qtest *q, char **argv, unsigned argc)
{
    bool out = argv[0][0] == 'o';
    unsigned size = access_size(argv[0][out ? 3 : 2]);
    uint64_t port, v = 0;
    if (argc != (out ? 3u : 2u)) {
        reply(q, "ERR usage: %s PORT%s", argv[0], out ? " VALUE" : "");
        return;
    }
    if (arg_u64(q, argv[1], "port", &port) < 0 || (out && arg_value(q, argv[2], size, &v) < 0))
        return;
    if (port > 0x10000 - size) {
        reply(q, "ERR port %s: a %u-byte access must end at or below 0xffff", argv[1], size);
        return;
    }
    if (out)
        bus_write(&q->m->pio, port, &v, size);
    else
        bus_read(&q->m->pio, port, &v, size);
    if (out)
        reply(q, "OK");
    else
        reply(q, "OK 0x%llx", (unsigned long long)v);
}

/* --- guest RAM --- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int arg_len(struct qtest *q, const char *s, uint64_t max, uint64_t *len)
{
    if (arg_u64(q, s, "length", len) < 0)
        return -EINVAL;
    if (*len == 0 || *len > max) {
        reply(q, "ERR length %s: 1 to %llu bytes", s, (unsigned long long)max);
        return -ERANGE;
    }
    return 0;
}

static void cmd_memread(struct qtest *q, char **argv, unsigned argc)
{
    uint64_t gpa, len;
    if (argc != 3) {
        reply(q, "ERR usage: memread GPA LEN");
        return;
    }
    if (arg_u64(q, argv[1], "address", &gpa) < 0 || arg_len(q, argv[2], QTEST_MAX_MEM, &len) < 0)
        return;
    const uint8_t *p = arg_ram(q, gpa, len);
    if (!p || !out_reserve(q, 4 + 2 * len))
        return;
    static const char digits[] = "0123456789abcdef";
    char *o = q->out + q->out_len;
    memcpy(o, "OK ", 3);
    o += 3;
    for (uint64_t i = 0; i < len; i++) {
        uint8_t b = __atomic_load_n(&p[i], __ATOMIC_RELAXED); /* a device may write it now */
        *o++ = digits[b >> 4];
        *o++ = digits[b & 15];
    }
    *o++ = '\n';
    q->out_len = (size_t)(o - q->out);
}

static void cmd_memwrite(struct qtest *q, char **argv, unsigned argc)
{
    uint64_t gpa;
    if (argc != 3) {
        reply(q, "ERR usage: memwrite GPA HEX");
        return;
    }
    if (arg_u64(q, argv[1], "address", &gpa) < 0)
        return;
    const char *hex = argv[2];
    size_t n = strlen(hex);
    for (size_t i = 0; i < n; i++)
        if (hex_digit(hex[i]) < 0) {
            reply(q, "ERR memwrite: '%c' at position %zu is not a hex digit", hex[i], i);
            return;
        }
    if (n % 2) {
        reply(q, "ERR memwrite: %zu hex digits, not whole bytes", n);
        return;
    }
    uint8_t *p = arg_ram(q, gpa, n / 2);
    if (!p)
        return;
    for (size_t i = 0; i < n / 2; i++)
        p[i] = (uint8_t)(hex_digit(hex[2 * i]) << 4 | hex_digit(hex[2 * i + 1]));
    reply(q, "OK");
}

static void cmd_memset(struct qtest *q, char **argv, unsigned argc)
{
    uint64_t gpa, len, byte;
    if (argc != 4) {
        reply(q, "ERR usage: memset GPA LEN BYTE");
        return;
    }
    if (arg_u64(q, argv[1], "address", &gpa) < 0 ||
        arg_len(q, argv[2], qtest_mem(q)->total, &len) < 0 || arg_value(q, argv[3], 1, &byte) < 0)
        return;
    void *p = arg_ram(q, gpa, len);
    if (!p)
        return;
    memset(p, (int)byte, len);
    reply(q, "OK");
}

/* --- interrupts --- */

/* Takes what the line's eventfd counted since the last look. */
static void irq_drain(struct qtest_irq *irq)
{
    uint64_t v;
    if (irq->fd >= 0 && read(irq->fd, &v, sizeof(v)) == sizeof(v))
        irq->pulses += v;
}

static void wait_answer(struct qtest *q, bool fired)
{
    q->waiting = false;
    evloop_timer_arm(q->timer, 0, 0);
    if (fired)
        q->irq[q->wait_gsi].waited = q->irq[q->wait_gsi].pulses;
    reply(q, fired ? "OK" : "ERR timeout");
}

static void irq_fired(void *opaque, uint32_t events)
{
    struct qtest_irq *irq = opaque;
    struct qtest *q = irq->q;
    irq_drain(irq);
    if (q->waiting && &q->irq[q->wait_gsi] == irq && irq->pulses > irq->waited) {
        wait_answer(q, true);
        client_update(q); /* the lines that waited behind it */
    }
}

static void wait_expired(void *opaque)
{
    struct qtest *q = opaque;
    if (q->waiting) {
        wait_answer(q, false);
        client_update(q);
    }
}

static void cmd_irq_count(struct qtest *q, char **argv, unsigned argc)
{
    unsigned gsi;
    if (argc != 2) {
        reply(q, "ERR usage: irq_count GSI");
        return;
    }
    if (arg_gsi(q, argv[1], &gsi) < 0)
        return;
    irq_drain(&q->irq[gsi]);
    reply(q, "OK %llu", (unsigned long long)q->irq[gsi].pulses);
}

static void cmd_irq_wait(struct qtest *q, char **argv, unsigned argc)
{
    unsigned gsi;
    uint64_t ms;
    if (argc != 3) {
        reply(q, "ERR usage: irq_wait GSI TIMEOUT_MS");
        return;
    }
    if (arg_gsi(q, argv[1], &gsi) < 0 || arg_u64(q, argv[2], "timeout", &ms) < 0)
        return;
    struct qtest_irq *irq = &q->irq[gsi];
    if (irq->fd < 0) {
        reply(q, "ERR GSI %u has no interrupt eventfd (irq_level reads the levels of other lines)",
              gsi);
        return;
    }
    if (ms > QTEST_MAX_WAIT) {
        reply(q, "ERR timeout %s ms: at most %u", argv[2], QTEST_MAX_WAIT);
        return;
    }
    irq_drain(irq);
    q->wait_gsi = gsi;
    if (irq->pulses > irq->waited || ms == 0) {
        wait_answer(q, irq->pulses > irq->waited);
        return;
    }
    q->waiting = true;
    evloop_timer_arm(q->timer, ms * 1000000, 0);
}

static void cmd_irq_level(struct qtest *q, char **argv, unsigned argc)
{
    unsigned gsi;
    if (argc != 2) {
        reply(q, "ERR usage: irq_level GSI");
        return;
    }
    if (arg_gsi(q, argv[1], &gsi) == 0)
        reply(q, "OK %d", atomic_load(&q->level[gsi]));
}

/* --- the machine --- */

static void cmd_devices(struct qtest *q, char **argv, unsigned argc)
{
    const struct device_resources *res = &q->m->res;
    char line[480];
    size_t n = (size_t)snprintf(line, sizeof(line), "OK %u", res->nr_virtio);
    for (unsigned i = 0; i < res->nr_virtio && n < sizeof(line); i++) {
        const struct resource_virtio_mmio *v = &res->virtio[i];
        const struct device *dev = device_list_find(&q->m->devices, v->owner);
        n += (size_t)snprintf(line + n, sizeof(line) - n, " %s %s 0x%llx 0x%llx %u", v->owner,
                              dev ? dev->ops->type : "?", (unsigned long long)v->base,
                              (unsigned long long)v->size, v->gsi);
    }
    if (n >= sizeof(line))
        reply(q, "ERR too many devices for one reply line");
    else
        reply(q, "%s", line);
}

static void cmd_memmap(struct qtest *q, char **argv, unsigned argc)
{
    const struct guest_mem *mem = qtest_mem(q);
    char line[256];
    size_t n = (size_t)snprintf(line, sizeof(line), "OK %u", mem->nr_regions);
    for (unsigned i = 0; i < mem->nr_regions; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " 0x%llx 0x%llx",
                              (unsigned long long)mem->regions[i].gpa,
                              (unsigned long long)mem->regions[i].size);
    reply(q, "%s", line);
}

static void cmd_reset(struct qtest *q, char **argv, unsigned argc)
{
    device_list_reset(&q->m->devices);
    reply(q, "OK");
}

static void cmd_quit(struct qtest *q, char **argv, unsigned argc)
{
    reply(q, "OK");
    machine_request_stop(q->m, 0, "the test client sent quit");
}

struct qtest_command {
    const char *name;
    void (*run)(struct qtest *q, char **argv, unsigned argc);
};

static const struct qtest_command commands[] = {
    {"readb", cmd_mmio},        {"readw", cmd_mmio},
    {"readl", cmd_mmio},        {"readq", cmd_mmio},
    {"writeb", cmd_mmio},       {"writew", cmd_mmio},
    {"writel", cmd_mmio},       {"writeq", cmd_mmio},
    {"inb", cmd_pio},           {"inw", cmd_pio},
    {"inl", cmd_pio},           {"outb", cmd_pio},
    {"outw", cmd_pio},          {"outl", cmd_pio},
    {"memread", cmd_memread},   {"memwrite", cmd_memwrite},
    {"memset", cmd_memset},     {"irq_count", cmd_irq_count},
    {"irq_wait", cmd_irq_wait}, {"irq_level", cmd_irq_level},
    {"devices", cmd_devices},   {"memmap", cmd_memmap},
    {"reset", cmd_reset},       {"quit", cmd_quit},
};

static void run_line(struct qtest *q, char *line)
{
    char *argv[QTEST_MAX_ARGS + 1];
    unsigned argc = 0;
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r')
        line[len - 1] = '\0';
    for (char *save, *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save))
        if (argc <= QTEST_MAX_ARGS)
            argv[argc++] = t;
    if (argc == 0) {
        reply(q, "ERR empty line");
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (!strcmp(argv[0], commands[i].name)) {
            if (argc > QTEST_MAX_ARGS)
                reply(q, "ERR %s: too many arguments", argv[0]);
            else
                commands[i].run(q, argv, argc);
            return;
        }
    reply(q, "ERR unknown command '%.64s'", argv[0]);
}

/* --- the client --- */

/* No command runs while an irq_wait waits, while too much output waits, or once the VM ends
 * (after quit, or a write to the test-exit port: the lines after it are not run). */
static bool client_can_take(const struct qtest *q)
{
    return !q->waiting && q->out_len - q->out_off < QTEST_OUT_HIGH && !atomic_load(&q->m->stopping);
}

/* Runs the complete lines received, in order, while no irq_wait is pending and the output has
 * room; a line longer than QTEST_MAX_LINE gets one ERR and is dropped. */
static void client_process(struct qtest *q)
{
    size_t start = 0;
    while (q->client_fd >= 0 && client_can_take(q)) {
        char *nl = memchr(q->in + q->in_scanned, '\n', q->in_len - q->in_scanned);
        if (!nl) {
            q->in_scanned = q->in_len;
            break;
        }
        *nl = '\0';
        if (!q->discarding)
            run_line(q, q->in + start);
        q->discarding = false;
        start = q->in_scanned = (size_t)(nl - q->in) + 1;
    }
    if (q->client_fd < 0)
        return;
    memmove(q->in, q->in + start, q->in_len - start);
    q->in_len -= start;
    q->in_scanned -= start;
    if (q->in_len == QTEST_MAX_LINE && q->in_scanned == q->in_len && client_can_take(q)) {
        if (!q->discarding)
            reply(q, "ERR line longer than %u bytes", QTEST_MAX_LINE);
        q->discarding = true;
        q->in_len = q->in_scanned = 0;
    }
}

/* Processes what can be processed, writes what the socket takes, and watches for more. */
static void client_update(struct qtest *q)
{
    if (q->client_fd < 0)
        return;
    client_process(q);
    if (q->client_fd < 0)
        return;
    if (!out_flush(q)) {
        client_close(q);
        return;
    }
    uint32_t events = 0;
    if (client_can_take(q) && q->in_len < QTEST_MAX_LINE)
        events |= EPOLLIN;
    if (q->out_off < q->out_len)
        events |= EPOLLOUT;
    evloop_fd_modify(q->client_src, events);
}

/* One read of what arrived; false when the client closed or failed. */
static bool client_read(struct qtest *q)
{
    if (q->in_len == q->in_cap) {
        size_t cap = q->in_cap * 2 < QTEST_MAX_LINE ? q->in_cap * 2 : QTEST_MAX_LINE;
        char *p = realloc(q->in, cap);
        if (!p)
            return false;
        q->in = p;
        q->in_cap = cap;
    }
    if (q->in_len == q->in_cap)
        return true; /* full of lines waiting to run: read later */
    ssize_t n = recv(q->client_fd, q->in + q->in_len, q->in_cap - q->in_len, MSG_DONTWAIT);
    if (n > 0)
        q->in_len += (size_t)n;
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

static void client_event(void *opaque, uint32_t events)
{
    struct qtest *q = opaque;
    bool alive = events & EPOLLIN ? client_read(q) : !(events & (EPOLLHUP | EPOLLERR));
    if (!alive) {
        client_close(q);
        return;
    }
    client_update(q);
}

static void client_close(struct qtest *q)
{
    if (q->client_fd < 0)
        return;
    evloop_source_remove(q->client_src);
    q->client_src = NULL;
    close(q->client_fd);
    q->client_fd = -1;
    q->in_len = q->in_scanned = 0;
    q->out_off = q->out_len = 0;
    q->discarding = false;
    q->waiting = false;
    evloop_timer_arm(q->timer, 0, 0);
    if (q->m->args->debug)
        wisp_log("test socket: the client disconnected");
}

static void listen_event(void *opaque, uint32_t events)
{
    struct qtest *q = opaque;
    int fd = accept4(q->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (q->client_fd >= 0) {
        static const char busy[] = "ERR busy: another client is connected (one at a time)\n";
        (void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
        return;
    }
    struct wisp_err err = {0};
    if (!q->in && (q->in = malloc(QTEST_READ_CHUNK)))
        q->in_cap = QTEST_READ_CHUNK;
    if (!q->in ||
        evloop_add_fd(q->m->loop, fd, EPOLLIN, client_event, q, &q->client_src, &err) < 0) {
        wisp_log("test socket: cannot take a client: %s", q->in ? err.msg : "out of memory");
        close(fd);
        return;
    }
    q->client_fd = fd;
    if (q->m->args->debug)
        wisp_log("test socket: a client connected");
}

/* --- life cycle and the machine's hooks --- */

int qtest_create(struct qtest **out, struct machine *m, const char *path, struct wisp_err *err)
{
    struct qtest *q = calloc(1, sizeof(*q));
    if (!q || !(q->path = strdup(path))) {
        free(q);
        return wisp_err_set(err, ENOMEM, "--test-socket %s: out of memory", path);
    }
    q->m = m;
    q->listen_fd = q->client_fd = -1;
    for (unsigned i = 0; i < QTEST_GSIS; i++) {
        q->irq[i] = (struct qtest_irq){.q = q, .fd = -1};
        atomic_init(&q->level[i], 0);
    }
    int r = evloop_add_timer(m->loop, wait_expired, q, &q->timer, err);
    if (r < 0) {
        qtest_destroy(q);
        return r;
    }
    *out = q;
    return 0;
}

int qtest_listen(struct qtest *q, struct wisp_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(q->path) >= sizeof(sa.sun_path))
        return wisp_err_set(err, ENAMETOOLONG,
                            "--test-socket %s: longer than a unix socket path may be (%zu bytes)",
                            q->path, sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, q->path, strlen(q->path) + 1);
    q->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (q->listen_fd < 0)
        return wisp_err_sys(err, errno, "--test-socket %s: socket", q->path);
    mode_t old = umask(0177); /* the socket is created 0600: only its owner may drive the VM */
    int r = bind(q->listen_fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    umask(old);
    if (r < 0 && e == EADDRINUSE)
        return wisp_err_set(err, EEXIST, "--test-socket %s: the path exists (remove it first)",
                            q->path);
    if (r < 0)
        return wisp_err_sys(err, e, "--test-socket %s: bind", q->path);
    q->bound = true;
    if (listen(q->listen_fd, 4) < 0)
        return wisp_err_sys(err, errno, "--test-socket %s: listen", q->path);
    return evloop_add_fd(q->m->loop, q->listen_fd, EPOLLIN, listen_event, q, &q->listen_src, err);
}

void qtest_destroy(struct qtest *q)
{
    if (!q)
        return;
    if (q->client_fd >= 0)
        (void)out_flush(q); /* the answer to quit (or to the write that ended the VM) */
    client_close(q);
    evloop_source_remove(q->listen_src);
    if (q->listen_fd >= 0)
        close(q->listen_fd);
    if (q->bound)
        unlink(q->path);
    evloop_source_remove(q->timer);
    for (unsigned i = 0; i < QTEST_GSIS; i++)
        evloop_source_remove(q->irq[i].src);
    free(q->in);
    free(q->out);
    free(q->path);
    free(q);
}

int qtest_attach_irqfd(struct qtest *q, unsigned gsi, int fd, bool assign, struct wisp_err *err)
{
    if (gsi >= QTEST_GSIS)
        return wisp_err_set(err, EINVAL, "test socket: GSI %u is beyond the %u lines it watches",
                            gsi, QTEST_GSIS);
    struct qtest_irq *irq = &q->irq[gsi];
    if (!assign) {
        if (irq->fd == fd) {
            evloop_source_remove(irq->src);
            irq->src = NULL;
            irq->fd = -1;
        }
        return 0;
    }
    if (irq->fd >= 0)
        return wisp_err_set(err, EBUSY, "test socket: GSI %u has an interrupt eventfd already",
                            gsi);
    int r = evloop_add_fd(q->m->loop, fd, EPOLLIN, irq_fired, irq, &irq->src, err);
    if (r == 0)
        irq->fd = fd;
    return r;
}

void qtest_set_irq(struct qtest *q, unsigned gsi, int level)
{
    if (gsi < QTEST_GSIS)
        atomic_store(&q->level[gsi], level ? 1 : 0);
}
