/* wisp-agent's stdio streams: an ATTACH turns a vsock connection into one stream of a process
 * (stdin, stdout, stderr or its pty), pumped without blocking (docs/agent-protocol.md, "Stdio"). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

static ssize_t write_to(int fd, const uint8_t *p, size_t n)
{
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

    if (w < 0 && errno == ENOTSOCK)
        w = write(fd, p, n);
    return w;
}

void pump_io(struct pump *pm, short revents)
{
    ssize_t n;

    if (pm->done)
        return;
    if (pm->len == 0) {
        n = read(pm->src, pm->buf, STREAM_BUF);
        if (n > 0) {
            pm->len = (size_t)n;
            pm->off = 0;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            pm->eof = true; /* end of file; EIO: a pty whose processes all ended */
        }
    } else if (revents & (POLLOUT | POLLERR | POLLHUP)) {
        n = write_to(pm->dst, pm->buf + pm->off, pm->len);
        if (n > 0) {
            pm->off += (size_t)n;
            pm->len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            pm->len = 0; /* the reader went away: nothing more to deliver */
            pm->eof = true;
        }
    }
    if (pm->eof && pm->len == 0)
        pm->done = true;
}

/* The answer must leave before the first byte of the stream: flush it now (it is small; the
 * client waits for it), waiting at most a second for room. */
static int flush_answer(struct conn *c, struct wisp_err *err)
{
    while (c->outlen) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            c->outoff += (size_t)n;
            c->outlen -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return wisp_err_sys(err, errno, "ATTACH answer");
        if (poll(&p, 1, 1000) <= 0)
            return wisp_err_set(err, ETIMEDOUT, "ATTACH answer: the client does not read");
    }
    c->outoff = 0;
    return 0;
}

static int pump_init(struct pump *pm, int src, int dst, struct wisp_err *err)
{
    *pm = (struct pump){.src = src, .dst = dst};
    if (src < 0 || dst < 0) {
        pm->done = true;
        return 0;
    }
    pm->buf = malloc(STREAM_BUF);
    if (!pm->buf)
        return wisp_err_set(err, ENOMEM, "stream buffer");
    return 0;
}

static int stream_fd_for(struct proc *p, enum wisp_agent_stream kind, struct wisp_err *err)
{
    static const char *const names[] = {"stdin", "stdout", "stderr", "pty"};

    if (p->attached[kind])
        return wisp_err_set(err, EBUSY, "%s of '%s' is attached already", names[kind], p->exec_id);
    if (kind == WISP_AGENT_STREAM_PTY) {
        if (!p->terminal || p->pty_master < 0)
            return wisp_err_set(err, EINVAL, "process '%s' has no terminal", p->exec_id);
        return p->pty_master;
    }
    if (p->terminal || p->stdio_fd[kind] < 0)
        return wisp_err_set(err, EINVAL, "process '%s' has no %s pipe (a terminal, or null)",
                            p->exec_id, names[kind]);
    return p->stdio_fd[kind];
}

int stream_attach(struct agent *ag, struct conn *c, const struct wa_msg *m, struct wisp_err *err)
{
    enum wisp_agent_stream kind = (enum wisp_agent_stream)m->stream;
    struct container *ctr = container_find(ag, m->container);
    struct proc *p = ctr ? proc_find(ag, ctr, m->exec_id) : NULL;
    struct stream *s;
    int fd, r;

    if (!p)
        return wisp_err_set(err, ENOENT, "no process '%s' in container '%s'", m->exec_id,
                            m->container);
    if ((fd = stream_fd_for(p, kind, err)) < 0)
        return fd;
    if (!(s = calloc(1, sizeof(*s))))
        return wisp_err_set(err, ENOMEM, "stream");
    s->proc = p;
    s->kind = kind;
    s->conn_fd = c->fd;
    s->pipe_fd = kind == WISP_AGENT_STREAM_PTY ? -1 : fd;
    if (kind == WISP_AGENT_STREAM_STDIN)
        r = pump_init(&s->in, c->fd, fd, err) ?: pump_init(&s->out, -1, -1, err);
    else if (kind == WISP_AGENT_STREAM_PTY)
        r = pump_init(&s->in, c->fd, fd, err) ?: pump_init(&s->out, fd, c->fd, err);
    else
        r = pump_init(&s->in, -1, -1, err) ?: pump_init(&s->out, fd, c->fd, err);
    if (r == 0) {
        conn_answer(c, m->type, m->id, NULL);
        r = flush_answer(c, err);
    }
    if (r < 0) {
        free(s->in.buf);
        free(s->out.buf);
        free(s);
        return r;
    }
    p->attached[kind] = true;
    if (kind != WISP_AGENT_STREAM_PTY)
        p->stdio_fd[kind] = -1; /* the stream owns the pipe's end now */
    c->fd = -1;
    c->became = s;
    c->dead = true;
    s->next = ag->streams;
    ag->streams = s;
    return 0;
}

void stream_close_for(struct agent *ag, struct proc *p)
{
    for (struct stream *s = ag->streams; s; s = s->next) {
        if (s->proc != p)
            continue;
        s->proc = NULL;
        if (s->kind == WISP_AGENT_STREAM_PTY)
            s->dead = true; /* the master goes with the process */
    }
}

static bool stream_finished(const struct stream *s)
{
    if (s->dead)
        return true;
    if (s->kind == WISP_AGENT_STREAM_STDIN)
        return s->in.done;
    return s->out.done;
}

void streams_sweep(struct agent *ag)
{
    for (struct stream **pp = &ag->streams; *pp;) {
        struct stream *s = *pp;

        if (!stream_finished(s)) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        if (s->kind != WISP_AGENT_STREAM_STDIN)
            shutdown(s->conn_fd, SHUT_WR); /* the host reads its end of file */
        close(s->conn_fd);
        if (s->pipe_fd >= 0)
            close(s->pipe_fd);
        free(s->in.buf);
        free(s->out.buf);
        free(s);
    }
}
