/* libwisp_agent's stdio: attaching a process's streams (one vsock connection each) and pumping
 * them between host fds while waiting for the process's end. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/client_int.h"
#include "common/cleanup.h"

int wisp_agent_attach(const char *uds_path, const char *container, const char *exec_id,
                      enum wisp_agent_stream stream, int64_t deadline, int *out,
                      struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_ATTACH,
                         .id = 2,
                         .container = container,
                         .exec_id = exec_id,
                         .stream = (uint32_t)stream};
    cleanup_close int fd = -1;
    struct wa_answer ans;
    int r, flags;

    wa_set(&req, WT_STREAM);
    if ((r = wa_msg_check(&req, err)) < 0)
        return wisp_err_wrap(err, "ATTACH");
    if ((r = wa_connect_raw(uds_path, deadline, &fd, err)) < 0)
        return r;
    if ((r = wa_hello(fd, 1, deadline, &ans, err)) < 0)
        return r;
    wa_answer_free(&ans);
    if ((r = wa_send_request(fd, &req, deadline, err)) < 0 ||
        (r = wa_recv_answer(fd, &req, &ans, deadline, err)) < 0)
        return r;
    wa_answer_free(&ans);
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        return wisp_err_sys(err, errno, "attach: fcntl");
    *out = steal_fd(&fd);
    return 0;
}

/* One direction of a pump: src -> buf -> dst. */
struct half {
    int src, dst;
    bool eof, done, shut_dst;
    size_t len, off;
    char buf[16384];
};

static void half_init(struct half *h, int src, int dst, bool shut_dst)
{
    h->src = src;
    h->dst = dst;
    h->eof = h->done = false;
    h->shut_dst = shut_dst;
    h->len = h->off = 0;
    if (src < 0)
        h->done = true;
}

static void half_finish(struct half *h)
{
    h->done = true;
    if (h->shut_dst && h->dst >= 0)
        shutdown(h->dst, SHUT_WR);
}

/* Writes at most PIPE_BUF bytes after POLLOUT, so a blocking pipe does not block. */
static ssize_t write_some(int fd, const char *p, size_t n)
{
    ssize_t w;

    if (n > 4096)
        n = 4096;
    w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == ENOTSOCK)
        w = write(fd, p, n);
    return w;
}

static void half_io(struct half *h, short revents, bool src_ready)
{
    ssize_t n;

    if (h->done)
        return;
    if (h->len == 0 && src_ready) {
        n = read(h->src, h->buf, sizeof(h->buf));
        if (n > 0) {
            h->len = (size_t)n;
            h->off = 0;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            h->eof = true; /* end of file, or EIO of a pty whose processes ended */
        }
    } else if (h->len && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        n = write_some(h->dst, h->buf + h->off, h->len);
        if (n > 0) {
            h->off += (size_t)n;
            h->len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            h->len = 0; /* the reader is gone: drop what it cannot take */
            h->eof = true;
            h->shut_dst = false;
        }
    }
    if (h->eof && h->len == 0)
        half_finish(h);
}

struct pump_state {
    struct half halves[3];
    int wait_fd;
    bool exited;
    struct wa_msg req;
};

static int pump_poll(struct pump_state *st, int64_t deadline, struct wisp_err *err)
{
    struct pollfd fds[7];
    int idx[3] = {-1, -1, -1}, n = 0, wait_idx = -1, r;
    int64_t left = deadline == WISP_AGENT_NO_DEADLINE ? -1 : deadline - wisp_agent_deadline(0);

    if (deadline != WISP_AGENT_NO_DEADLINE && left <= 0)
        return wisp_err_set(err, ETIMEDOUT,
                            "agent: the process's stdio and end did not come "
                            "before the deadline");
    for (int i = 0; i < 3; i++) {
        struct half *h = &st->halves[i];

        if (h->done)
            continue;
        idx[i] = n;
        fds[n++] = h->len ? (struct pollfd){.fd = h->dst, .events = POLLOUT}
                          : (struct pollfd){.fd = h->src, .events = POLLIN};
    }
    if (!st->exited) {
        wait_idx = n;
        fds[n++] = (struct pollfd){.fd = st->wait_fd, .events = POLLIN};
    }
    r = poll(fds, (nfds_t)n, left < 0 || left > 1000 ? 1000 : (int)left);
    if (r < 0 && errno != EINTR)
        return wisp_err_sys(err, errno, "poll");
    for (int i = 0; i < 3 && r > 0; i++) {
        struct half *h = &st->halves[i];

        if (idx[i] < 0 || !fds[idx[i]].revents)
            continue;
        half_io(h, fds[idx[i]].revents, h->len == 0);
    }
    return r > 0 && wait_idx >= 0 && fds[wait_idx].revents ? 1 : 0;
}

int wisp_agent_pump_and_wait(struct wisp_agent *a, const char *container, const char *exec_id,
                             struct wisp_agent_stdio_pump *io, int *wait_status, int64_t deadline,
                             struct wisp_err *err)
{
    struct pump_state *st = calloc(1, sizeof(*st));
    bool pty = io->stdin_conn >= 0 && io->stdin_conn == io->stdout_conn;
    struct wa_answer ans;
    int r = 0;

    if (!st) {
        r = wisp_err_set(err, ENOMEM, "pump");
        goto out;
    }
    half_init(&st->halves[0], io->stdin_conn >= 0 ? io->in_fd : -1, io->stdin_conn, !pty);
    if (io->in_fd < 0 && io->stdin_conn >= 0 && !pty)
        shutdown(io->stdin_conn, SHUT_WR); /* no input: its end of file at once */
    half_init(&st->halves[1], io->stdout_conn, io->out_fd, false);
    half_init(&st->halves[2], io->stderr_conn, io->err_fd, false);
    for (int i = 1; i < 3; i++) /* output with nowhere to go is read and dropped */
        if (st->halves[i].dst < 0 && !st->halves[i].done)
            st->halves[i].dst = open("/dev/null", O_WRONLY | O_CLOEXEC);
    st->wait_fd = wa_client_fd(a);
    st->req = (struct wa_msg){
        .type = WA_WAIT, .id = wa_client_next_id(a), .container = container, .exec_id = exec_id};
    if ((r = wa_send_request(st->wait_fd, &st->req, deadline, err)) < 0)
        goto out;
    while (!st->exited || !st->halves[1].done || !st->halves[2].done) {
        r = pump_poll(st, deadline, err);
        if (r < 0)
            goto out;
        if (r == 1) {
            if ((r = wa_recv_answer(st->wait_fd, &st->req, &ans, deadline, err)) < 0)
                goto out;
            if (wait_status)
                *wait_status = (int)ans.m.status;
            wa_answer_free(&ans);
            st->exited = true;
            if (pty) /* the terminal's input has no end of its own: stop reading it */
                st->halves[0].done = true;
        }
        r = 0;
    }
out:
    for (int i = 1; st && i < 3; i++)
        if (st->halves[i].dst >= 0 && st->halves[i].dst != (i == 1 ? io->out_fd : io->err_fd))
            close(st->halves[i].dst);
    free(st);
    if (io->stdin_conn >= 0)
        close(io->stdin_conn);
    if (io->stdout_conn >= 0 && io->stdout_conn != io->stdin_conn)
        close(io->stdout_conn);
    if (io->stderr_conn >= 0)
        close(io->stderr_conn);
    io->stdin_conn = io->stdout_conn = io->stderr_conn = -1;
    return r;
}
