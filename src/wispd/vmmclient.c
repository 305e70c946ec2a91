/* The non-blocking client for wisp-vmm's API (vmmclient.h). */
#include "vmmclient.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/evloop.h"

#define MAX_ANSWER 65536

struct vmm_client {
    struct evloop *loop;
    struct sockaddr_un addr;
    struct vmm_request *reqs;
    size_t n, cur, sent; /* requests, answers had, requests sent */
    unsigned timeout_ms;
    uint64_t connect_start_ns, connect_deadline_ns;
    vmm_client_done_fn done;
    void *opaque;
    int fd;
    struct evloop_source *fd_src, *timer;
    char *out;
    size_t out_len, out_off;
    char in[MAX_ANSWER + 1];
    size_t in_len;
    char **answer; /* vmm_client_keep_answer */
};

void vmm_client_keep_answer(struct vmm_client *c, char **answer)
{
    c->answer = answer;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void close_conn(struct vmm_client *c)
{
    evloop_source_remove(c->fd_src);
    c->fd_src = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->out);
    c->out = NULL;
}

static void client_free(struct vmm_client *c)
{
    close_conn(c);
    evloop_source_remove(c->timer);
    for (size_t i = 0; i < c->n; i++) {
        free(c->reqs[i].path);
        free(c->reqs[i].body);
    }
    free(c->reqs);
    free(c);
}

void vmm_client_cancel(struct vmm_client *c)
{
    if (c)
        client_free(c);
}

static void finish(struct vmm_client *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct vmm_client *c, int status, const char *fmt, ...)
{
    char msg[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    vmm_client_done_fn done = c->done;
    void *opaque = c->opaque;
    client_free(c);
    done(opaque, status, msg);
}

static void start_request(struct vmm_client *c);

/* The requests go on one keep-alive connection: every one but the last is sent at once
 * (pipelined: wisp-vmm's HTTP server answers them in order), the last (InstanceStart, a resume)
 * only once all of those were answered 2xx, with "Connection: close". A start is then two
 * round trips whatever the number of devices. */
static int queue_request(struct vmm_client *c, size_t i)
{
    const struct vmm_request *r = &c->reqs[i];
    size_t blen = r->body ? strlen(r->body) : 0;
    char *text;
    int len = asprintf(&text,
                       "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: %s\r\n"
                       "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                       r->method, r->path, i + 1 == c->n ? "close" : "keep-alive", blen,
                       r->body ? r->body : "");
    if (len < 0)
        return -ENOMEM;
    char *out = realloc(c->out, c->out_len + (size_t)len);
    if (!out) {
        free(text);
        return -ENOMEM;
    }
    memcpy(out + c->out_len, text, (size_t)len);
    free(text);
    c->out = out;
    c->out_len += (size_t)len;
    c->sent = i + 1;
    return 0;
}

/* The length of the first whole answer in c->in ("HTTP/1.1 NNN", headers, a body of its
 * Content-Length; none for 204 and 304), 0 while it is not all in; at_eof: the rest is its
 * body. -1: an answer this client cannot delimit. */
static long answer_length(const struct vmm_client *c, bool at_eof)
{
    const char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - c->in) + 4;
    unsigned status = 0;
    sscanf(c->in, "HTTP/1.%*d %u", &status);
    long body = -1;
    for (const char *l = memchr(c->in, '\n', head); l && l < end; l = memchr(l + 1, '\n', head)) {
        if (!strncasecmp(l + 1, "Content-Length:", 15)) {
            char *e;
            unsigned long v = strtoul(l + 16, &e, 10);
            if (v > MAX_ANSWER)
                return -1;
            body = (long)v;
        }
    }
    if (body < 0 && (status == 204 || status == 304))
        body = 0;
    if (body < 0) /* no length: the last answer, up to the end of the connection */
        return at_eof && c->cur + 1 == c->n ? (long)c->in_len : 0;
    return head + (size_t)body <= c->in_len ? (long)(head + (size_t)body) : 0;
}

/* One whole answer of length len is at the start of c->in: a 2xx goes on, anything else ends
 * the client with wisp-vmm's fault_message. false when the client has finished. */
static bool answer_complete(struct vmm_client *c, size_t len)
{
    const struct vmm_request *r = &c->reqs[c->cur];
    char save = c->in[len];
    c->in[len] = '\0';
    unsigned status = 0;
    if (sscanf(c->in, "HTTP/1.%*d %u", &status) != 1) {
        finish(c, -EPROTO, "%s %s: the answer is not HTTP", r->method, r->path);
        return false;
    }
    const char *body = strstr(c->in, "\r\n\r\n");
    if (status / 100 != 2) {
        const char *fault = body ? body + 4 : "";
        json_t *j = body ? json_loads(body + 4, 0, NULL) : NULL;
        if (j && json_is_string(json_object_get(j, "fault_message")))
            fault = json_string_value(json_object_get(j, "fault_message"));
        char msg[400];
        snprintf(msg, sizeof(msg), "%s", fault);
        json_decref(j);
        finish(c, -EIO, "wisp-vmm: %s %s: %u: %s", r->method, r->path, status, msg);
        return false;
    }
    if (c->answer && c->cur + 1 == c->n)
        *c->answer = strdup(body ? body + 4 : "");
    c->in[len] = save;
    memmove(c->in, c->in + len, c->in_len - len);
    c->in_len -= len;
    if (++c->cur == c->n) {
        finish(c, 0, NULL);
        return false;
    }
    evloop_timer_arm(c->timer, (uint64_t)c->timeout_ms * 1000000, 0);
    if (c->cur == c->sent) { /* the batch is answered: the last request */
        if (queue_request(c, c->sent) < 0) {
            finish(c, -ENOMEM, "out of memory");
            return false;
        }
        evloop_fd_modify(c->fd_src, EPOLLOUT | EPOLLIN);
    }
    return true;
}

static void conn_ready(void *opaque, uint32_t events)
{
    struct vmm_client *c = opaque;
    if (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
            finish(c, -errno, "%s %s: sending: %s", c->reqs[c->cur].method, c->reqs[c->cur].path,
                   strerror(errno));
            return;
        }
        if (w > 0)
            c->out_off += (size_t)w;
        if (c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
            evloop_fd_modify(c->fd_src, EPOLLIN);
        }
        return;
    }
    ssize_t rd = read(c->fd, c->in + c->in_len, MAX_ANSWER - c->in_len);
    if (rd < 0 && errno == EAGAIN)
        return;
    if (rd < 0) {
        finish(c, -errno, "%s %s: reading: %s", c->reqs[c->cur].method, c->reqs[c->cur].path,
               strerror(errno));
        return;
    }
    c->in_len += (size_t)rd;
    for (;;) {
        long len = answer_length(c, rd == 0);
        if (len < 0 || (len == 0 && (rd == 0 || c->in_len == MAX_ANSWER))) {
            finish(c, -EPROTO, "%s %s: %s", c->reqs[c->cur].method, c->reqs[c->cur].path,
                   rd == 0 ? "wisp-vmm closed the connection before its answer"
                           : "an answer too long or without a length");
            return;
        }
        if (len == 0 || !answer_complete(c, (size_t)len))
            return;
    }
}

static void timer_fired(void *opaque)
{
    struct vmm_client *c = opaque;
    if (c->fd < 0) { /* the first request, or waiting for the socket to appear */
        if (c->cur == c->n)
            finish(c, 0, NULL);
        else
            start_request(c);
        return;
    }
    finish(c, -ETIMEDOUT, "%s %s: wisp-vmm did not answer within %u ms", c->reqs[c->cur].method,
           c->reqs[c->cur].path, c->timeout_ms);
}

/* Connects (retrying while the socket may still appear) and sends the batch. */
static void start_request(struct vmm_client *c)
{
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        finish(c, -errno, "socket: %s", strerror(errno));
        return;
    }
    if (connect(c->fd, (struct sockaddr *)&c->addr, sizeof(c->addr)) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        uint64_t now = now_ns();
        if ((e == ENOENT || e == ECONNREFUSED || e == EAGAIN) && now < c->connect_deadline_ns) {
            /* A VMM's socket appears a few ms after its fork: tried every 0.25 ms for the
             * first 20 ms (a failed connect costs ~10 us of the loop), then every 2 ms. */
            evloop_timer_arm(c->timer, now - c->connect_start_ns < 20000000 ? 250000 : 2000000, 0);
            return;
        }
        finish(c, -e, "%s: connecting: %s", c->addr.sun_path, strerror(e));
        return;
    }
    c->out_len = c->out_off = c->in_len = 0;
    for (size_t i = 0; i < (c->n > 1 ? c->n - 1 : 1); i++)
        if (queue_request(c, i) < 0) {
            finish(c, -ENOMEM, "out of memory");
            return;
        }
    if (evloop_add_fd(c->loop, c->fd, EPOLLOUT, conn_ready, c, &c->fd_src, NULL) < 0) {
        finish(c, -ENOMEM, "the event loop refused the connection");
        return;
    }
    evloop_timer_arm(c->timer, (uint64_t)c->timeout_ms * 1000000, 0);
}

int vmm_client_run(struct vmm_client **out, struct evloop *loop, const char *path,
                   struct vmm_request *reqs, size_t n, unsigned connect_wait_ms,
                   unsigned timeout_ms, vmm_client_done_fn done, void *opaque, struct wisp_err *err)
{
    struct vmm_client *c = calloc(1, sizeof(*c));
    struct vmm_request *copy = calloc(n ? n : 1, sizeof(*copy));
    if (!c || !copy || strlen(path) >= sizeof(c->addr.sun_path)) {
        for (size_t i = 0; i < n; i++) {
            free(reqs[i].path);
            free(reqs[i].body);
        }
        free(c);
        free(copy);
        return wisp_err_set(err, c && copy ? ENAMETOOLONG : ENOMEM, "%s: %s", path,
                            c && copy ? "the socket path is too long" : "out of memory");
    }
    memcpy(copy, reqs, n * sizeof(*copy));
    *c = (struct vmm_client){.loop = loop,
                             .reqs = copy,
                             .n = n,
                             .timeout_ms = timeout_ms,
                             .connect_start_ns = now_ns(),
                             .connect_deadline_ns = now_ns() + (uint64_t)connect_wait_ms * 1000000,
                             .done = done,
                             .opaque = opaque,
                             .fd = -1};
    c->addr.sun_family = AF_UNIX;
    strcpy(c->addr.sun_path, path);
    int ret = evloop_add_timer(loop, timer_fired, c, &c->timer, err);
    if (ret < 0) {
        client_free(c);
        return ret;
    }
    if (out)
        *out = c;
    evloop_timer_arm(c->timer, 1, 0); /* starts from the loop: done never runs in the caller */
    return 0;
}
