/* Each VM's console (docs/wispd.md, "Console"): the log that wisp-vmm writes itself (its stdout,
 * a regular file kept to --console-log-max by wisp-vmm, so a VM never waits for wispd and the
 * log survives a restart of wispd), the input FIFO that is wisp-vmm's stdin, and the readers:
 * GET /v1/vms/{name}/log (the log, or with ?follow=1 a stream of it) and the attached consoles
 * (POST /v1/vms/{name}/console, upgraded to a raw connection: the log first, then output as it
 * comes and input to the guest). New output is noticed with inotify on the logs of VMs that have
 * readers; nothing is buffered in wispd: each reader has its offset in the file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/http.h"
#include "common/cleanup.h"
#include "common/evloop.h"
#include "wispd.h"

#define REPLAY_DEFAULT (64 * 1024) /* bytes of scrollback an attached console gets first */
#define SEND_CHUNK     (64 * 1024)

struct console_reader {
    struct vm_console *con;
    uint64_t off;            /* the next byte of the log this reader gets */
    struct api_stream *st;   /* GET .../log: a streamed answer */
    struct api_upgraded *up; /* POST .../console: the raw connection */
    int fd;
    struct evloop_source *src;
    bool out_blocked; /* the socket is full: waiting for EPOLLOUT */
    bool ending;      /* the VM ended: what is left, then the end */
    bool follow;      /* a stream: more after the end of the log */
    uint64_t stop_at; /* a stream without follow: ends here */
    struct console_reader *next;
};

struct vm_console {
    struct wispd *d;
    struct vm *vm; /* NULL once the VM is removed (its streams may still be ending) */
    int log_fd;    /* read-only, while there are readers */
    int wd;        /* inotify watch of the log, -1 none */
    int in_fd;     /* the input FIFO's write end, opened at the first input */
    uint64_t input_dropped;
    struct console_reader *readers;
    struct vm_console *next; /* d->consoles->list */
};

struct consoles {
    int inotify_fd;
    struct evloop_source *src;
    struct vm_console *list;
};

static void log_path(const struct vm *vm, char *buf, size_t size)
{
    snprintf(buf, size, "%s/logs/%lld.log", vm->d->state_dir, (long long)vm->id);
}

static void fifo_path(const struct vm *vm, char *buf, size_t size)
{
    snprintf(buf, size, "%s/run/%lld.in", vm->d->state_dir, (long long)vm->id);
}

/* The start of the kept part at or after `off` (wisp-vmm punches the older part out), the end
 * of the file when there is no data after off. */
static uint64_t data_from(int fd, uint64_t off)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d >= 0)
        return (uint64_t)d;
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : off;
}

static uint64_t log_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Where the last `lines` lines of [start, end) begin (scanning back from the end). */
static uint64_t tail_lines(int fd, uint64_t start, uint64_t end, uint64_t lines)
{
    char buf[8192];
    uint64_t pos = end, seen = 0;
    if (!lines)
        return end;
    bool last = true; /* a newline that ends the file does not count as a line */
    while (pos > start) {
        size_t n = pos - start < sizeof(buf) ? (size_t)(pos - start) : sizeof(buf);
        ssize_t r = pread(fd, buf, n, (off_t)(pos - n));
        if (r != (ssize_t)n)
            return start;
        for (size_t i = n; i-- > 0;) {
            if (buf[i] == '\n' && !(last && pos - n + i == end - 1) && ++seen == lines)
                return pos - n + i + 1;
            last = false;
        }
        pos -= n;
    }
    return start;
}

/* ---- per-VM state ---------------------------------------------------------------------- */

static void inotify_ready(void *opaque, uint32_t events);

static struct consoles *consoles_get(struct wispd *d, struct wisp_err *err)
{
    if (d->consoles)
        return d->consoles;
    struct consoles *c = calloc(1, sizeof(*c));
    if (!c) {
        wisp_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    c->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (c->inotify_fd < 0 ||
        evloop_add_fd(d->loop, c->inotify_fd, EPOLLIN, inotify_ready, d, &c->src, err) < 0) {
        if (c->inotify_fd < 0)
            wisp_err_sys(err, errno, "inotify_init1");
        else
            close(c->inotify_fd);
        free(c);
        return NULL;
    }
    d->consoles = c;
    return c;
}

static struct vm_console *console_get(struct vm *vm, struct wisp_err *err)
{
    if (vm->console)
        return vm->console;
    struct consoles *cs = consoles_get(vm->d, err);
    if (!cs)
        return NULL;
    char path[256];
    log_path(vm, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_CREAT, 0640);
    if (fd < 0) {
        wisp_err_sys(err, errno, "%s", path);
        return NULL;
    }
    struct vm_console *con = calloc(1, sizeof(*con));
    int wd = con ? inotify_add_watch(cs->inotify_fd, path, IN_MODIFY) : -1;
    if (!con || wd < 0) {
        wisp_err_sys(err, con ? errno : ENOMEM, "%s: inotify_add_watch", path);
        free(con);
        close(fd);
        return NULL;
    }
    *con = (struct vm_console){
        .d = vm->d, .vm = vm, .log_fd = fd, .wd = wd, .in_fd = -1, .next = cs->list};
    cs->list = con;
    vm->console = con;
    return con;
}

/* The last reader has gone: the watch and the fds go too (a VM without readers costs wispd
 * nothing). */
static void console_put(struct vm_console *con)
{
    if (con->readers)
        return;
    struct consoles *cs = con->d->consoles;
    for (struct vm_console **p = &cs->list; *p; p = &(*p)->next)
        if (*p == con) {
            *p = con->next;
            break;
        }
    inotify_rm_watch(cs->inotify_fd, con->wd);
    close(con->log_fd);
    if (con->in_fd >= 0)
        close(con->in_fd);
    if (con->vm)
        con->vm->console = NULL;
    free(con);
}

static void reader_unlink(struct console_reader *r)
{
    for (struct console_reader **p = &r->con->readers; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
}

static void reader_close(struct console_reader *r)
{
    struct vm_console *con = r->con;
    reader_unlink(r);
    evloop_source_remove(r->src);
    api_upgraded_close(r->up);
    free(r);
    console_put(con);
}

/* ---- attached consoles (raw connections) ----------------------------------------------- */

/* Sends the log from r->off on, until the socket is full or the reader has it all. */
static void reader_send(struct console_reader *r)
{
    int log_fd = r->con->log_fd;
    uint64_t size = log_size(log_fd);
    if (r->off > size) /* truncated: the VM started again */
        r->off = 0;
    r->off = data_from(log_fd, r->off);
    while (r->off < size) {
        off_t o = (off_t)r->off;
        size_t n = size - r->off < SEND_CHUNK ? (size_t)(size - r->off) : SEND_CHUNK;
        ssize_t w = sendfile(r->fd, log_fd, &o, n);
        if (w < 0 && errno == EAGAIN) {
            if (!r->out_blocked)
                evloop_fd_modify(r->src, EPOLLIN | EPOLLOUT);
            r->out_blocked = true;
            return;
        }
        if (w <= 0) {
            reader_close(r); /* the client went away */
            return;
        }
        r->off = (uint64_t)o;
    }
    if (r->out_blocked)
        evloop_fd_modify(r->src, EPOLLIN);
    r->out_blocked = false;
    if (r->ending)
        reader_close(r);
}

/* Input from the client goes to the guest through the FIFO; never waits: what the FIFO (64
 * KiB, a guest that does not read) has no room for is dropped and counted. */
static void reader_input(struct console_reader *r, const char *buf, size_t len)
{
    struct vm_console *con = r->con;
    if (con->in_fd < 0 && con->vm) {
        char path[256];
        fifo_path(con->vm, path, sizeof(path));
        con->in_fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    }
    if (con->in_fd < 0) {
        con->input_dropped += len;
        return;
    }
    ssize_t w = write(con->in_fd, buf, len);
    if (w < (ssize_t)len)
        con->input_dropped += len - (size_t)(w > 0 ? w : 0);
}

static void reader_ready(void *opaque, uint32_t events)
{
    struct console_reader *r = opaque;
    if (events & EPOLLOUT) {
        reader_send(r);
        return; /* r may be gone; input comes at the next round */
    }
    char buf[4096];
    ssize_t n = read(r->fd, buf, sizeof(buf));
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) { /* detached */
        reader_close(r);
        return;
    }
    reader_input(r, buf, (size_t)n);
}

struct attach_req {
    struct wispd *d;
    int64_t id;
    char name[72];
    uint64_t replay;
};

static void attached(void *opaque, int fd, const char *extra, size_t extra_len,
                     struct api_upgraded *u)
{
    struct attach_req *a = opaque;
    struct vm *vm = wispd_find(a->d, a->name); /* it may have gone meanwhile */
    if (vm && vm->id != a->id)
        vm = NULL;
    uint64_t replay = a->replay;
    free(a);
    struct wisp_err err = {0};
    struct vm_console *con = vm ? console_get(vm, &err) : NULL;
    struct console_reader *r = con ? calloc(1, sizeof(*r)) : NULL;
    if (!r) {
        if (con)
            console_put(con);
        api_upgraded_close(u);
        return;
    }
    *r = (struct console_reader){.con = con, .up = u, .fd = fd, .next = con->readers};
    uint64_t size = log_size(con->log_fd);
    r->off = size > replay ? size - replay : 0;
    con->readers = r;
    if (evloop_add_fd(vm->d->loop, fd, EPOLLIN, reader_ready, r, &r->src, NULL) < 0) {
        reader_close(r);
        return;
    }
    if (extra_len)
        reader_input(r, extra, extra_len);
    reader_send(r);
}

/* POST /v1/vms/{name}/console (Upgrade: wisp-console), ?replay=BYTES. */
void console_h_attach(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    struct vm *vm = wispd_live_vm_or_reply(d, req, "a console attaches to a running VM");
    if (!vm)
        return;
    const char *q = api_request_query(req, "replay");
    char *end;
    unsigned long long replay = q ? strtoull(q, &end, 10) : REPLAY_DEFAULT;
    if (q && (*end || !*q)) {
        api_reply_error(req, 400, "console: replay: '%s' is not a number of bytes", q);
        return;
    }
    struct attach_req *a = malloc(sizeof(*a));
    if (!a) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    *a = (struct attach_req){.d = d, .id = vm->id, .replay = replay};
    snprintf(a->name, sizeof(a->name), "%s", vm->name);
    if (!api_reply_upgrade(req, "wisp-console", attached, a))
        free(a); /* refused (no Upgrade header): answered 400 */
}

/* ---- GET /v1/vms/{name}/log ------------------------------------------------------------ */

static long stream_fill(void *opaque, char *buf, size_t max)
{
    struct console_reader *r = opaque;
    int log_fd = r->con->log_fd;
    uint64_t size = log_size(log_fd);
    if (!r->follow && size > r->stop_at)
        size = r->stop_at;
    if (r->off > size)
        r->off = r->follow ? 0 : size;
    r->off = data_from(log_fd, r->off);
    if (r->off < size) {
        size_t n = size - r->off < max ? (size_t)(size - r->off) : max;
        ssize_t got = pread(log_fd, buf, n, (off_t)r->off);
        if (got > 0) {
            r->off += (uint64_t)got;
            return got;
        }
    }
    return r->follow && !r->ending ? 0 : -1;
}

static void stream_closed(void *opaque)
{
    struct console_reader *r = opaque;
    struct vm_console *con = r->con;
    reader_unlink(r);
    free(r);
    console_put(con);
}

/* ?tail=N (lines), ?follow=1 (a stream until the VM ends). */
void console_h_log(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    struct vm *vm = wispd_vm_or_404(d, req);
    if (!vm)
        return;
    const char *t = api_request_query(req, "tail"), *f = api_request_query(req, "follow");
    char *end;
    unsigned long long tail = t ? strtoull(t, &end, 10) : 0;
    if (t && (*end || !*t)) {
        api_reply_error(req, 400, "log: tail: '%s' is not a number of lines", t);
        return;
    }
    bool follow = f && strcmp(f, "0") && strcmp(f, "false");
    struct wisp_err err = {0};
    struct vm_console *con = console_get(vm, &err);
    if (!con) {
        api_reply_error(req, 500, "%s", err.msg);
        return;
    }
    struct console_reader *r = calloc(1, sizeof(*r));
    if (!r) {
        console_put(con);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    uint64_t size = log_size(con->log_fd), start = data_from(con->log_fd, 0);
    *r = (struct console_reader){.con = con,
                                 .fd = -1,
                                 .off = t ? tail_lines(con->log_fd, start, size, tail) : start,
                                 .follow = follow,
                                 .ending = vm->state == VM_STOPPED,
                                 .stop_at = size,
                                 .next = con->readers};
    con->readers = r;
    r->st = api_reply_stream(req, 200, "text/plain", stream_fill, stream_closed, r);
    if (!r->st) {
        reader_unlink(r);
        free(r);
        console_put(con);
    }
}

/* ---- output and the VM's end ----------------------------------------------------------- */

static void console_wake(struct vm_console *con)
{
    for (struct console_reader *r = con->readers, *next; r; r = next) {
        next = r->next;
        if (r->st)
            api_stream_wake(r->st);
        else if (!r->out_blocked)
            reader_send(r); /* may close r */
    }
}

static void inotify_ready(void *opaque, uint32_t events)
{
    struct wispd *d = opaque;
    struct consoles *cs = d->consoles;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    while ((n = read(cs->inotify_fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            for (struct vm_console *con = cs->list; con; con = con->next)
                if (con->wd == ev->wd) {
                    console_wake(con);
                    break;
                }
        }
    }
}

void console_vm_ended(struct vm *vm)
{
    struct vm_console *con = vm->console;
    if (!con)
        return;
    for (struct console_reader *r = con->readers; r; r = r->next)
        r->ending = true;
    if (con->in_fd >= 0) {
        close(con->in_fd);
        con->in_fd = -1;
    }
    console_wake(con);
}

void console_vm_removed(struct vm *vm)
{
    char path[256];
    fifo_path(vm, path, sizeof(path));
    unlink(path);
    struct vm_console *con = vm->console;
    if (!con)
        return;
    con->vm = NULL; /* the VM is freed next; streams still ending keep con */
    vm->console = NULL;
    for (struct console_reader *r = con->readers; r; r = r->next)
        if (r->st) {
            r->ending = true;
            r->follow = false;
        }
    bool streams = false;
    for (struct console_reader *r = con->readers, *next; r; r = next) {
        next = r->next;
        if (r->up)
            reader_close(r); /* frees con with the last reader */
        else
            streams = true;
    }
    if (streams)
        for (struct console_reader *r = con->readers; r; r = r->next)
            api_stream_wake(r->st);
}

void console_shutdown(struct wispd *d)
{
    struct consoles *cs = d->consoles;
    if (!cs)
        return;
    /* attached consoles end now (their clients see the end); streams end with the server */
    for (struct vm_console *con = cs->list, *next_con; con; con = next_con) {
        next_con = con->next;
        for (struct console_reader *r = con->readers, *next; r; r = next) {
            next = r->next;
            if (r->up)
                reader_close(r); /* frees con with its last reader */
        }
    }
}

int console_open_input(struct vm *vm, struct wisp_err *err)
{
    char path[256];
    fifo_path(vm, path, sizeof(path));
    if (mkfifo(path, 0600) < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "%s", path);
    /* read-write: wisp-vmm never sees an end of input when no console is attached, and the
     * open does not wait for a writer */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s", path);
    return fd;
}
