/* virtio-vsock's host side (Firecracker's hybrid model, docs/vsock.md): the AF_UNIX socket at
 * uds_path where host clients connect and write "CONNECT <port>\n" (answered "OK <hostport>\n"
 * once the guest accepts), the connections the guest opens to host port P (to uds_path_P), and
 * the bytes between each connection's host socket and the guest with credit-based flow control
 * (§5.10.6.3). All on the device's I/O thread (vsock_int.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "devices/device.h"
#include "virtio/vsock_int.h"

#define VSOCK_ACCEPT_BATCH 16
#define VSOCK_READ_BATCH   16 /* packets per wake of one connection, so others get a turn */

static void vsock_conn_event(void *opaque, uint32_t events);
static void vsock_conn_add_fd(struct vsock_conn *c);

static int vsock_sockaddr(struct sockaddr_un *sa, const char *path, struct wisp_err *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return wisp_err_set(err, ENAMETOOLONG, "%s: longer than %zu bytes", path,
                            sizeof(sa->sun_path) - 1);
    strcpy(sa->sun_path, path);
    return 0;
}

int vsock_host_listen(struct virtio_vsock *vs, struct wisp_err *err)
{
    /* messages without the device's name: the device list adds it */
    struct sockaddr_un sa;
    if (!vs->p->uds_path)
        return wisp_err_set(err, EINVAL, "no uds_path");
    int r = vsock_sockaddr(&sa, vs->p->uds_path, err);
    if (r < 0)
        return wisp_err_wrap(err, "uds_path");
    vs->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (vs->listen_fd < 0)
        return wisp_err_set(err, errno, "uds_path %s: socket", vs->p->uds_path);
    if (bind(vs->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return wisp_err_set(err, errno, "cannot bind %s%s", vs->p->uds_path,
                            errno == EADDRINUSE ? " (it exists: remove it or choose another)" : "");
    vs->bound_path = strdup(vs->p->uds_path);
    if (!vs->bound_path)
        return wisp_err_set(err, ENOMEM, "out of memory");
    if (listen(vs->listen_fd, 128) < 0)
        return wisp_err_set(err, errno, "cannot listen on %s", vs->p->uds_path);
    return 0;
}

void vsock_host_unlisten(struct virtio_vsock *vs)
{
    if (vs->listen_fd >= 0)
        close(vs->listen_fd);
    vs->listen_fd = -1;
    if (vs->bound_path)
        unlink(vs->bound_path);
    free(vs->bound_path);
    vs->bound_path = NULL;
}

uint32_t vsock_conn_peer_credit(const struct vsock_conn *c)
{
    uint32_t used = c->tx_cnt - c->peer_fwd_cnt; /* wraps as the counters do */
    return used >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - used;
}

struct vsock_conn *vsock_conn_find(struct virtio_vsock *vs, uint32_t host_port, uint32_t guest_port)
{
    for (struct vsock_conn *c = vs->conns; c; c = c->next)
        if (c->host_port == host_port && c->guest_port == guest_port && c->state != VSOCK_CONN_LINE)
            return c;
    return NULL;
}

void vsock_conn_update_events(struct vsock_conn *c)
{
    struct virtio_vsock *vs = c->vs;
    if (c->fd < 0)
        return;
    uint32_t want = 0;
    if (!vs->host_paused) {
        if (c->state == VSOCK_CONN_LINE)
            want |= EPOLLIN;
        else if (c->state == VSOCK_CONN_OPEN && !c->host_eof && !c->pending && vs->serving &&
                 !vs->rx_starved && vsock_conn_peer_credit(c) > 0)
            want |= EPOLLIN;
        if (c->out_len)
            want |= EPOLLOUT;
    }
    if (!c->src) { /* hung up (vsock_conn_event): watched again once there is work */
        if (!want)
            return;
        vsock_conn_add_fd(c);
        if (!c->src)
            return;
    }
    if (want != c->armed && evloop_fd_modify(c->src, want) == 0)
        c->armed = want;
}

static void vsock_conn_unlink_ctl(struct vsock_conn *c)
{
    struct virtio_vsock *vs = c->vs;
    if (!c->on_ctl)
        return;
    struct vsock_conn *prev = NULL;
    for (struct vsock_conn *it = vs->ctl_head; it; prev = it, it = it->ctl_next)
        if (it == c) {
            if (prev)
                prev->ctl_next = c->ctl_next;
            else
                vs->ctl_head = c->ctl_next;
            if (vs->ctl_tail == c)
                vs->ctl_tail = prev;
            break;
        }
    c->on_ctl = false;
}

static void vsock_conn_close_fd(struct vsock_conn *c)
{
    evloop_source_remove(c->src);
    c->src = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_start = 0;
}

void vsock_conn_free(struct vsock_conn *c)
{
    struct virtio_vsock *vs = c->vs;
    vsock_conn_unlink_ctl(c);
    for (struct vsock_conn **pp = &vs->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    vs->nr_conns--;
    vsock_conn_close_fd(c);
    free(c);
}

void vsock_conn_drop_all(struct virtio_vsock *vs)
{
    while (vs->conns)
        vsock_conn_free(vs->conns);
    vs->ctl_head = vs->ctl_tail = NULL;
}

bool vsock_conn_close(struct vsock_conn *c, bool rst)
{
    vsock_conn_close_fd(c);
    if (c->state == VSOCK_CONN_CLOSED) /* its RST is on the way */
        return false;
    /* the guest never heard of a connection still reading its line or whose REQUEST waits */
    if (!rst || c->state == VSOCK_CONN_LINE || (c->pending & VSOCK_SEND_REQUEST)) {
        vsock_conn_free(c);
        return true;
    }
    c->state = VSOCK_CONN_CLOSED;
    c->pending = 0;
    vsock_queue_pending(c, VSOCK_SEND_RST);
    return false;
}

static void vsock_conn_add_fd(struct vsock_conn *c)
{
    struct wisp_err err = {0};
    if (evloop_add_fd(c->vs->loop, c->fd, 0, vsock_conn_event, c, &c->src, &err) < 0)
        c->src = NULL;
    c->armed = 0;
}

static struct vsock_conn *vsock_conn_new(struct virtio_vsock *vs, int fd)
{
    struct vsock_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->vs = vs;
    c->fd = fd;
    c->next = vs->conns;
    vs->conns = c;
    vs->nr_conns++;
    vsock_conn_add_fd(c);
    if (!c->src) {
        vsock_conn_free(c);
        return NULL;
    }
    return c;
}

/* The guest's fwd_cnt view lags ours by a quarter of the buffer: it is told (§5.10.6.3). */
static void vsock_conn_forwarded(struct vsock_conn *c, uint32_t n)
{
    c->fwd_cnt += n;
    c->vs->bytes_to_host += n;
    if (c->fwd_cnt - c->fwd_cnt_sent >= VSOCK_BUF_ALLOC / 4)
        vsock_queue_pending(c, VSOCK_SEND_CREDIT);
}

/* After the guest's bytes are all with the host: its SHUTDOWN takes effect. */
static void vsock_conn_drained(struct vsock_conn *c)
{
    if (c->out_len || c->fd < 0)
        return;
    if (c->guest_shut_send && c->guest_shut_rcv) {
        vsock_conn_close(c, true); /* §5.10.6.6: the guest waits for our RST */
        return;
    }
    if (c->guest_shut_send && !c->shut_wr_done) {
        c->shut_wr_done = true;
        (void)shutdown(c->fd, SHUT_WR);
    }
}

/* sendmsg/read only on host sockets (no send/recv): the I/O thread's seccomp list is short. */
static ssize_t vsock_send(int fd, const void *buf, size_t len)
{
    struct iovec iov = {(void *)buf, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    return sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void vsock_conn_flush(struct vsock_conn *c)
{
    while (c->out_len) {
        ssize_t n = vsock_send(c->fd, c->out + c->out_start, c->out_len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            vsock_conn_close(c, true);
            return;
        }
        c->out_start += (uint32_t)n;
        c->out_len -= (uint32_t)n;
        vsock_conn_forwarded(c, (uint32_t)n);
    }
    if (!c->out_len)
        c->out_start = 0;
    vsock_conn_drained(c);
}

bool vsock_conn_from_guest(struct vsock_conn *c, const struct iovec *iov, unsigned nr,
                           uint32_t skip, uint32_t len)
{
    if ((uint64_t)c->out_len + len > VSOCK_BUF_ALLOC ||
        (uint32_t)(c->rx_cnt + len - c->fwd_cnt) > VSOCK_BUF_ALLOC)
        return false;
    c->rx_cnt += len;
    struct iovec data[VSOCK_MAX_IOV];
    unsigned nd = 0;
    uint64_t left = len;
    for (unsigned i = 0; i < nr && left; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= (uint32_t)iov[i].iov_len;
            continue;
        }
        size_t n = iov[i].iov_len - skip < left ? iov[i].iov_len - skip : left;
        data[nd++] = (struct iovec){(uint8_t *)iov[i].iov_base + skip, n};
        left -= n, skip = 0;
    }
    size_t sent = 0;
    if (!c->out_len && nd) { /* straight to the host socket while it takes them */
        struct msghdr mh = {.msg_iov = data, .msg_iovlen = nd};
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            vsock_conn_close(c, true);
            return true;
        }
        if (n > 0) {
            sent = (size_t)n;
            vsock_conn_forwarded(c, (uint32_t)n);
        }
    }
    if (sent < len) { /* the rest waits, within the credit given */
        if (!c->out && !(c->out = malloc(VSOCK_BUF_ALLOC))) {
            vsock_conn_close(c, true);
            return true;
        }
        if (c->out_start + c->out_len + (len - sent) > VSOCK_BUF_ALLOC) {
            memmove(c->out, c->out + c->out_start, c->out_len);
            c->out_start = 0;
        }
        uint8_t *dst = c->out + c->out_start + c->out_len;
        for (unsigned i = 0; i < nd; i++) {
            size_t l = data[i].iov_len;
            if (sent >= l) {
                sent -= l;
                continue;
            }
            memcpy(dst, (uint8_t *)data[i].iov_base + sent, l - sent);
            dst += l - sent;
            c->out_len += (uint32_t)(l - sent);
            sent = 0;
        }
    }
    vsock_conn_drained(c);
    return true;
}

void vsock_conn_guest_shutdown(struct vsock_conn *c, uint32_t flags)
{
    if (flags & VIRTIO_VSOCK_SHUTDOWN_RCV) {
        c->guest_shut_rcv = true;
        c->host_eof = true; /* nothing more is read from the host for it */
    }
    if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
        c->guest_shut_send = true;
    vsock_conn_drained(c);
}

void vsock_conn_guest_request(struct virtio_vsock *vs, uint32_t port, uint32_t guest_port)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
    struct sockaddr_un sa;
    struct wisp_err err = {0};
    snprintf(path, sizeof(path), "%s_%u", vs->p->uds_path, port);
    int fd = -1;
    if (vs->nr_conns < VSOCK_MAX_CONNS && vsock_sockaddr(&sa, path, &err) == 0)
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd); /* nobody listens there (or its backlog is full): refused */
        fd = -1;
    }
    struct vsock_conn *c = fd >= 0 ? vsock_conn_new(vs, fd) : NULL;
    if (!c) {
        vsock_queue_stray_rst(vs, port, guest_port);
        return;
    }
    c->host_port = port;
    c->guest_port = guest_port;
    c->state = VSOCK_CONN_OPEN;
    vsock_queue_pending(c, VSOCK_SEND_RESPONSE);
}

void vsock_conn_accepted(struct vsock_conn *c)
{
    char ok[24];
    int len = snprintf(ok, sizeof(ok), "OK %u\n", c->host_port);
    /* the first bytes on a fresh socket: its buffer takes them whole */
    if (vsock_send(c->fd, ok, (size_t)len) != len) {
        vsock_conn_close(c, true);
        return;
    }
    c->state = VSOCK_CONN_OPEN;
    vsock_conn_update_events(c);
}

static uint32_t vsock_local_port(struct virtio_vsock *vs)
{
    for (;;) {
        uint32_t p = vs->next_local_port++;
        if (vs->next_local_port == UINT32_MAX)
            vs->next_local_port = VSOCK_LOCAL_PORT0;
        bool used = false;
        for (struct vsock_conn *c = vs->conns; c && !used; c = c->next)
            used = c->state != VSOCK_CONN_LINE && c->host_port == p;
        if (!used)
            return p;
    }
}

static uint64_t vsock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void vsock_request_timer_arm(struct virtio_vsock *vs)
{
    uint64_t oldest = 0;
    for (struct vsock_conn *c = vs->conns; c; c = c->next)
        if (c->state == VSOCK_CONN_REQUESTED && (!oldest || c->requested_ns < oldest))
            oldest = c->requested_ns;
    if (!vs->request_timer)
        return;
    uint64_t now = vsock_now_ns(), due = oldest + VSOCK_REQUEST_NS;
    (void)evloop_timer_arm(vs->request_timer, !oldest ? 0 : due > now ? due - now : 1, 0);
}

/* Firecracker's rule too: a host client whose REQUEST the guest leaves unanswered is closed
 * (without a line) and the guest gets an RST for it. */
static void vsock_request_timeout(void *opaque)
{
    struct virtio_vsock *vs = opaque;
    uint64_t now = vsock_now_ns();
    for (struct vsock_conn *c = vs->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == VSOCK_CONN_REQUESTED && now - c->requested_ns >= VSOCK_REQUEST_NS)
            (void)vsock_conn_close(c, true);
    }
    vsock_request_timer_arm(vs);
    vsock_rx_run(vs);
}

/* "CONNECT <port>\n" (decimal, 32 bits): read a byte at a time, so that nothing after the line
 * is taken from the socket. False when the connection is gone (a bad line, end of file). */
static bool vsock_conn_read_line(struct vsock_conn *c)
{
    for (;;) {
        char ch;
        ssize_t n = read(c->fd, &ch, 1); /* the socket is non-blocking */
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return true;
        if (n <= 0 || c->line_len == VSOCK_LINE_MAX - 1)
            return !vsock_conn_close(c, false);
        if (ch != '\n') {
            c->line[c->line_len++] = ch;
            continue;
        }
        c->line[c->line_len] = 0;
        uint64_t port = 0;
        const char *d = c->line + 8;
        bool ok = !strncmp(c->line, "CONNECT ", 8) && *d;
        for (; ok && *d; d++) {
            ok = *d >= '0' && *d <= '9' && (port = port * 10 + (uint64_t)(*d - '0')) <= UINT32_MAX;
        }
        if (!ok) /* Firecracker closes a bad line's connection */
            return !vsock_conn_close(c, false);
        c->guest_port = (uint32_t)port;
        c->host_port = vsock_local_port(c->vs);
        c->state = VSOCK_CONN_REQUESTED;
        c->requested_ns = vsock_now_ns();
        vsock_queue_pending(c, VSOCK_SEND_REQUEST);
        vsock_request_timer_arm(c->vs);
        return true;
    }
}

void vsock_conn_readable(struct vsock_conn *c)
{
    struct virtio_vsock *vs = c->vs;
    for (unsigned i = 0; i < VSOCK_READ_BATCH && c->fd >= 0 && (c->armed & EPOLLIN); i++) {
        int r = vsock_rx_data(c);
        if (r < 0) {
            vs->rx_starved = true;
            break;
        }
        if (r == 0)
            break;
    }
}

static void vsock_conn_event(void *opaque, uint32_t events)
{
    struct vsock_conn *c = opaque;
    struct virtio_vsock *vs = c->vs;
    bool gone = false;
    if (c->state == VSOCK_CONN_LINE) {
        gone = !vsock_conn_read_line(c);
    } else {
        if ((events & EPOLLOUT) && c->out_len)
            vsock_conn_flush(c);
        if (c->fd >= 0 && (events & EPOLLIN))
            vsock_conn_readable(c);
        if (c->fd >= 0 && (events & EPOLLERR)) {
            gone = vsock_conn_close(c, true);
        } else if (c->fd >= 0 && (events & EPOLLHUP) && !c->armed) {
            /* the host closed while nothing is wanted from its socket (the guest has no credit
             * left): epoll would report the hang-up again and again, so the socket is not
             * watched until there is work; what it holds is read then, and its end after */
            evloop_source_remove(c->src);
            c->src = NULL;
        }
    }
    if (!gone && c->fd >= 0)
        vsock_conn_update_events(c);
    vsock_rx_run(vs); /* may free c */
}

static void vsock_host_accept(void *opaque, uint32_t events)
{
    struct virtio_vsock *vs = opaque;
    for (unsigned i = 0; i < VSOCK_ACCEPT_BATCH; i++) {
        int fd = accept4(vs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (vs->nr_conns >= VSOCK_MAX_CONNS) {
            close(fd);
            continue;
        }
        struct vsock_conn *c = vsock_conn_new(vs, fd);
        if (c) {
            c->state = VSOCK_CONN_LINE;
            vsock_conn_update_events(c);
        }
    }
}

void vsock_host_pause(struct virtio_vsock *vs, bool paused)
{
    vs->host_paused = paused;
    if (!vs->listen_src && vs->listen_fd >= 0) {
        struct wisp_err err = {0};
        if (evloop_add_fd(vs->loop, vs->listen_fd, 0, vsock_host_accept, vs, &vs->listen_src,
                          &err) < 0)
            wisp_log("%s: %s", vs->vdev.dev->name, err.msg);
    }
    if (!vs->request_timer)
        (void)evloop_add_timer(vs->loop, vsock_request_timeout, vs, &vs->request_timer, NULL);
    if (vs->listen_src)
        (void)evloop_fd_modify(vs->listen_src, paused ? 0 : EPOLLIN);
    for (struct vsock_conn *c = vs->conns; c; c = c->next)
        vsock_conn_update_events(c);
}
