/* wisp-agent: the guest agent (docs/agent-protocol.md). Listens on AF_VSOCK port 1024 and
 * serves the host's requests: containers, their processes and stdio, the network, shutdown.
 * One thread and one poll loop; connections reset by a snapshot restore are dropped and new
 * ones accepted (the listening socket survives VIRTIO_VSOCK_EVENT_TRANSPORT_RESET). */
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "wisp-config.h"

void agent_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("wisp-agent: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* --- answers */

static void conn_queue(struct conn *c, const uint8_t *data, size_t len)
{
    if (c->dead)
        return;
    if (c->outlen + len > CONN_OUT_MAX) {
        agent_log("a client does not read its answers (%zu bytes queued): dropped", c->outlen);
        c->dead = true;
        return;
    }
    if (c->outoff + c->outlen + len > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        uint8_t *p;

        memmove(c->out, c->out + c->outoff, c->outlen);
        c->outoff = 0;
        while (cap < c->outlen + len)
            cap *= 2;
        p = realloc(c->out, cap);
        if (!p) {
            c->dead = true;
            return;
        }
        c->out = p;
        c->outcap = cap;
    }
    memcpy(c->out + c->outoff + c->outlen, data, len);
    c->outlen += len;
}

void conn_answer(struct conn *c, uint16_t type, uint32_t id, const struct wa_msg *ans)
{
    struct wa_msg m = {0};
    struct wa_buf b = {0};

    if (ans)
        m = *ans;
    m.type = type | WA_RESPONSE;
    m.id = id;
    m.errnum = 0;
    if (wa_encode(&b, &m) == 0)
        conn_queue(c, b.data, b.len);
    else
        c->dead = true;
    wa_buf_free(&b);
}

void conn_answer_error(struct conn *c, uint16_t type, uint32_t id, const struct wisp_err *err)
{
    struct wa_msg m = {.type = type | WA_RESPONSE, .id = id};
    struct wa_buf b = {0};
    char msg[sizeof(err->msg)];

    snprintf(msg, sizeof(msg), "%s", err->msg[0] ? err->msg : strerror(err->errnum));
    m.errnum = err->errnum > 0 && err->errnum < 4096 ? (uint32_t)err->errnum : EIO;
    m.message = msg;
    if (wa_encode(&b, &m) == 0)
        conn_queue(c, b.data, b.len);
    wa_buf_free(&b);
}

void pending_add(struct agent *ag, struct conn *c, const struct wa_msg *req, struct proc *p)
{
    struct pending *pd = calloc(1, sizeof(*pd));

    if (!pd) {
        struct wisp_err err = {.errnum = ENOMEM, .msg = "out of memory"};

        conn_answer_error(c, req->type, req->id, &err);
        return;
    }
    *pd = (struct pending){
        .next = ag->pendings, .conn = c, .id = req->id, .type = req->type, .proc = p};
    ag->pendings = pd;
}

void pending_settle(struct agent *ag, struct proc *p, uint16_t type, const struct wa_msg *ans,
                    const struct wisp_err *err)
{
    for (struct pending **pp = &ag->pendings; *pp;) {
        struct pending *pd = *pp;

        if (pd->proc != p || (type && pd->type != type)) {
            pp = &pd->next;
            continue;
        }
        if (err)
            conn_answer_error(pd->conn, pd->type, pd->id, err);
        else
            conn_answer(pd->conn, pd->type, pd->id, ans);
        *pp = pd->next;
        free(pd);
    }
}

static void pending_drop_conn(struct agent *ag, struct conn *c)
{
    for (struct pending **pp = &ag->pendings; *pp;) {
        struct pending *pd = *pp;

        if (pd->conn == c) {
            *pp = pd->next;
            free(pd);
        } else {
            pp = &pd->next;
        }
    }
}

/* --- requests */

static int handle_simple(struct agent *ag, struct conn *c, const struct wa_msg *m,
                         struct wa_msg *ans, char **arena, struct wisp_err *err)
{
    struct container *ctr;

    switch (m->type) {
    case WA_HELLO:
        c->hello = true;
        ans->version = WISP_AGENT_VERSION;
        wa_set(ans, WT_VERSION);
        ans->name = "wisp-agent " WISP_VERSION;
        return 0;
    case WA_CONTAINER_CREATE:
        return container_create(ag, m, err);
    case WA_PROCESS_CREATE:
        return proc_create(ag, c, m, err);
    case WA_PROCESS_START:
        return proc_start(ag, c, m, err);
    case WA_SIGNAL:
        return proc_signal(ag, m, err);
    case WA_WAIT:
        return proc_wait(ag, c, m, ans, err);
    case WA_RESIZE:
        return proc_resize(ag, m, err);
    case WA_PROCESS_DELETE:
        return proc_delete(ag, m, err);
    case WA_PS:
        if (!(ctr = container_find(ag, m->container)))
            return wisp_err_set(err, ENOENT, "no container '%s'", m->container);
        return ps_collect(ag, ctr, ans, arena, err);
    case WA_NETWORK:
        return net_apply(&m->net, err);
    case WA_CONTAINER_DELETE:
        if (!(ctr = container_find(ag, m->container)))
            return wisp_err_set(err, ENOENT, "no container '%s'", m->container);
        return container_delete(ag, ctr, err);
    case WA_SHUTDOWN:
        ag->shutting_down = true;
        ag->shutdown_grace_ms = wa_has(m, WT_TIMEOUT_MS) ? m->timeout_ms : 2000;
        ag->shutdown_conn = c;
        c->flush_then_close = true;
        return 0;
    case WA_ATTACH:
        return stream_attach(ag, c, m, err);
    }
    return wisp_err_set(err, EPROTO, "unknown request type %u", m->type);
}

static void handle_frame(struct agent *ag, struct conn *c, const struct wa_hdr *h,
                         const uint8_t *payload)
{
    struct wisp_err err = {0};
    struct wa_msg m, ans = {0};
    char *arena = NULL;
    int r;

    if (h->type & WA_RESPONSE) {
        agent_log("a client sent an answer (%s): dropped", wa_type_name(h->type));
        c->dead = true;
        return;
    }
    if (wa_decode(h->type, h->id, payload, h->len, &m, &err) < 0) {
        conn_answer_error(c, h->type, h->id, &err);
        return;
    }
    if (!c->hello && m.type != WA_HELLO) {
        wisp_err_set(&err, EPROTO, "HELLO must come first");
        conn_answer_error(c, m.type, m.id, &err);
        wa_msg_free(&m);
        return;
    }
    r = handle_simple(ag, c, &m, &ans, &arena, &err);
    if (r < 0)
        conn_answer_error(c, m.type, m.id, &err);
    else if (r == 0 && m.type != WA_ATTACH) /* ATTACH answered in stream_attach */
        conn_answer(c, m.type, m.id, &ans);
    free(ans.procs);
    free(arena);
    wa_msg_free(&m);
}

/* --- connections */

static void conn_read(struct agent *ag, struct conn *c)
{
    struct wisp_err err = {0};
    struct wa_hdr h;
    ssize_t n;

    if (c->incap - c->inlen < 65536) {
        size_t cap = c->incap ? c->incap * 2 : 65536 * 2;
        uint8_t *p;

        if (cap > WA_HDR_SIZE + WA_MAX_PAYLOAD + 65536)
            cap = WA_HDR_SIZE + WA_MAX_PAYLOAD + 65536;
        if (cap <= c->incap || !(p = realloc(c->in, cap))) {
            c->dead = true;
            return;
        }
        c->in = p;
        c->incap = cap;
    }
    n = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            c->dead = true; /* closed, or reset (a snapshot restore: ECONNRESET) */
        return;
    }
    c->inlen += (size_t)n;
    while (!c->dead && c->fd >= 0 && c->inlen >= WA_HDR_SIZE) {
        size_t whole;

        if (wa_hdr_decode(c->in, &h, &err) < 0) {
            /* no way to find the next frame: answer and close */
            conn_answer_error(c, h.type & (uint16_t)~WA_RESPONSE, h.id, &err);
            c->flush_then_close = true;
            c->inlen = 0;
            return;
        }
        whole = WA_HDR_SIZE + h.len;
        if (c->inlen < whole)
            return;
        handle_frame(ag, c, &h, c->in + WA_HDR_SIZE);
        if (c->became) { /* an ATTACH: the bytes after it belong to the stream */
            struct pump *in = &c->became->in;
            size_t rest = c->inlen - whole;

            if (rest > STREAM_BUF)
                rest = STREAM_BUF;
            if (rest && !in->done && in->buf) {
                memcpy(in->buf, c->in + whole, rest);
                in->len = rest;
                in->off = 0;
            }
            return;
        }
        memmove(c->in, c->in + whole, c->inlen - whole);
        c->inlen -= whole;
    }
}

static void conn_write(struct conn *c)
{
    while (c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                c->dead = true;
            return;
        }
        c->outoff += (size_t)n;
        c->outlen -= (size_t)n;
    }
    c->outoff = 0;
    if (c->flush_then_close)
        c->dead = true;
}

static void conn_free(struct agent *ag, struct conn *c)
{
    pending_drop_conn(ag, c);
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
    ag->nconns--;
}

static void accept_conn(struct agent *ag)
{
    int fd = accept4(ag->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct conn *c;

    if (fd < 0)
        return; /* EAGAIN, or a connection reset before we took it */
    if (ag->nconns >= AGENT_CONNS_MAX || !(c = calloc(1, sizeof(*c)))) {
        agent_log("too many connections (%zu): one refused", ag->nconns);
        close(fd);
        return;
    }
    c->fd = fd;
    c->next = ag->conns;
    ag->conns = c;
    ag->nconns++;
}

/* --- the loop */

enum watch_kind { W_LISTEN, W_SIGCHLD, W_CONN, W_SYNC, W_STREAM_IN, W_STREAM_OUT };

struct watch {
    enum watch_kind kind;
    void *obj;
};

#define WATCH_MAX 1024

static void sweep(struct agent *ag)
{
    for (struct conn **pp = &ag->conns; *pp;) {
        struct conn *c = *pp;

        if (c->dead || c->fd < 0) {
            *pp = c->next;
            if (c == ag->shutdown_conn)
                ag->shutdown_conn = NULL;
            conn_free(ag, c);
        } else {
            pp = &c->next;
        }
    }
    streams_sweep(ag);
}

static void add_watch(struct pollfd *fds, struct watch *w, int *n, int fd, short ev,
                      enum watch_kind kind, void *obj)
{
    if (*n >= WATCH_MAX || fd < 0)
        return;
    fds[*n] = (struct pollfd){.fd = fd, .events = ev};
    w[*n] = (struct watch){kind, obj};
    (*n)++;
}

static void stream_watches(struct agent *ag, struct pollfd *fds, struct watch *w, int *n)
{
    for (struct stream *s = ag->streams; s; s = s->next) {
        struct pump *pm[2] = {&s->in, &s->out};

        for (int i = 0; i < 2; i++) {
            if (pm[i]->done)
                continue;
            if (pm[i]->len)
                add_watch(fds, w, n, pm[i]->dst, POLLOUT, i ? W_STREAM_OUT : W_STREAM_IN, s);
            else
                add_watch(fds, w, n, pm[i]->src, POLLIN, i ? W_STREAM_OUT : W_STREAM_IN, s);
        }
    }
}

static void run_once(struct agent *ag)
{
    static struct pollfd fds[WATCH_MAX];
    static struct watch w[WATCH_MAX];
    int n = 0, r;

    add_watch(fds, w, &n, ag->listen_fd, POLLIN, W_LISTEN, NULL);
    add_watch(fds, w, &n, ag->sigchld_fd, POLLIN, W_SIGCHLD, NULL);
    for (struct conn *c = ag->conns; c; c = c->next)
        add_watch(fds, w, &n, c->fd, (short)(POLLIN | (c->outlen ? POLLOUT : 0)), W_CONN, c);
    for (struct proc *p = ag->procs; p; p = p->next)
        if (p->sync_fd >= 0 && (p->state == PROC_SETUP || p->state == PROC_STARTING))
            add_watch(fds, w, &n, p->sync_fd, POLLIN, W_SYNC, p);
    stream_watches(ag, fds, w, &n);
    r = poll(fds, (nfds_t)n, 1000);
    if (r <= 0)
        return;
    for (int i = 0; i < n; i++) {
        short ev = fds[i].revents;

        if (!ev)
            continue;
        switch (w[i].kind) {
        case W_LISTEN:
            accept_conn(ag);
            break;
        case W_SIGCHLD: {
            struct signalfd_siginfo si;

            while (read(ag->sigchld_fd, &si, sizeof(si)) == sizeof(si))
                ;
            proc_reap(ag);
            break;
        }
        case W_CONN: {
            struct conn *c = w[i].obj;

            if (!c->dead && c->fd >= 0 && (ev & (POLLIN | POLLHUP | POLLERR)))
                conn_read(ag, c);
            if (!c->dead && c->fd >= 0 && c->outlen)
                conn_write(c);
            break;
        }
        case W_SYNC:
            proc_sync_event(ag, w[i].obj);
            break;
        case W_STREAM_IN:
        case W_STREAM_OUT: {
            struct stream *s = w[i].obj;

            if (!s->dead)
                pump_io(w[i].kind == W_STREAM_IN ? &s->in : &s->out, ev);
            break;
        }
        }
    }
    /* answers queued by events of other sources (a reaped process's WAIT) go out now */
    for (struct conn *c = ag->conns; c; c = c->next)
        if (!c->dead && c->fd >= 0 && c->outlen)
            conn_write(c);
    sweep(ag);
}

static int listen_vsock(struct wisp_err *err)
{
    struct sockaddr_vm sa = {
        .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = WISP_AGENT_PORT};
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return wisp_err_sys(err, errno, "AF_VSOCK socket (no virtio-vsock device?)");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
        int e = errno;

        close(fd);
        return wisp_err_sys(err, e, "vsock port %u", WISP_AGENT_PORT);
    }
    return fd;
}

static void mount_basics(struct agent *ag)
{
    static const struct {
        const char *src, *dst, *type, *data;
    } m[] = {
        {"proc", "/proc", "proc", NULL},
        {"sysfs", "/sys", "sysfs", NULL},
        {"devtmpfs", "/dev", "devtmpfs", NULL},
        {"devpts", "/dev/pts", "devpts", "mode=0620,ptmxmode=0666"},
    };

    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        if (!ag->pid1 && i < 3)
            continue; /* wisp-init mounted them */
        mkdir(m[i].dst, 0755);
        if (mount(m[i].src, m[i].dst, m[i].type, MS_NOSUID, m[i].data) < 0 && errno != EBUSY)
            agent_log("mount %s on %s: %s", m[i].type, m[i].dst, strerror(errno));
    }
    mkdir("/run", 0755);
    mkdir(AGENT_RUN_DIR, 0700);
}

/* SHUTDOWN: after its answer left, end every container's processes and the VM. */
static void shutdown_vm(struct agent *ag)
{
    struct wisp_err err = {0};

    agent_log("shutdown: ending the containers");
    for (struct container *c = ag->ctrs; c; c = c->next)
        container_kill_all(ag, c, SIGTERM);
    for (uint32_t waited = 0; waited < ag->shutdown_grace_ms; waited += 50) {
        bool any = false;

        proc_reap(ag);
        for (struct proc *p = ag->procs; p; p = p->next)
            any |= p->state != PROC_EXITED;
        if (!any)
            break;
        usleep(50000);
    }
    while (ag->ctrs)
        container_delete(ag, ag->ctrs, &err);
    sync();
    agent_log("shutdown: done");
    if (ag->pid1) {
        reboot(RB_AUTOBOOT);
        agent_log("reboot: %s", strerror(errno));
    }
}

static void usage(void)
{
    fputs("Usage: wisp-agent [--help | --version]\n\n"
          "The wisp guest agent: run inside a VM (by wisp-init with wisp.agent=1 on the kernel\n"
          "command line, or as the VM's init), it listens on AF_VSOCK port 1024 and serves the\n"
          "host's requests (containers, processes, stdio, network, shutdown) in the protocol\n"
          "of docs/agent-protocol.md. It takes no options. Exit status: 0 after SHUTDOWN,\n"
          "1 when it cannot listen, 2 for a usage error.\n",
          stdout);
}

int main(int argc, char **argv)
{
    struct agent ag = {.listen_fd = -1, .sigchld_fd = -1};
    struct wisp_err err = {0};
    sigset_t chld;

    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("wisp-agent %s (protocol %u)\n", WISP_VERSION, WISP_AGENT_VERSION);
        return 0;
    }
    if (argc > 1) {
        usage();
        return strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ? 0 : 2;
    }
    ag.pid1 = getpid() == 1;
    umask(022);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    ag.sigchld_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    /* orphans of the containers' processes are reparented to the agent, which reaps them */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    mount_basics(&ag);
    if (!getenv("PATH"))
        setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    ag.listen_fd = listen_vsock(&err);
    if (ag.listen_fd < 0) {
        agent_log("%s", err.msg);
        return 1;
    }
    agent_log("listening on vsock port %u (protocol %u)", WISP_AGENT_PORT, WISP_AGENT_VERSION);
    for (;;) {
        run_once(&ag);
        if (ag.shutting_down && (!ag.shutdown_conn || !ag.shutdown_conn->outlen))
            break;
    }
    shutdown_vm(&ag);
    return 0;
}
