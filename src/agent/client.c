/* libwisp_agent's connection and requests: CONNECT over the vsock unix socket, HELLO, one
 * request and its answer at a time, every wait bounded by the caller's deadline. */
#include "agent/client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/client_int.h"
#include "agent/proto.h"
#include "common/cleanup.h"
#include "wisp-config.h"

struct wisp_agent {
    int fd;
    uint32_t next_id;
    uint32_t version;
    char name[WISP_AGENT_SHORT_MAX + 1];
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wisp_agent_deadline(int64_t ms_from_now)
{
    if (ms_from_now < 0 || ms_from_now > INT64_MAX / 2)
        return WISP_AGENT_NO_DEADLINE;
    return now_ms() + ms_from_now;
}

int wa_poll_until(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = deadline == WISP_AGENT_NO_DEADLINE ? -1 : deadline - now_ms();
        int r;

        if (left < 0 && deadline != WISP_AGENT_NO_DEADLINE)
            return -ETIMEDOUT;
        r = poll(&p, 1, left > 60000 || left < 0 ? 60000 : (int)left);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0)
            return 0;
    }
}

int wa_send_all(int fd, const void *buf, size_t len, int64_t deadline)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        int r;

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return errno == EPIPE ? -ECONNRESET : -errno;
        if ((r = wa_poll_until(fd, POLLOUT, deadline)) < 0)
            return r;
    }
    return 0;
}

/* Reads exactly len bytes (never more: what follows an ATTACH answer is the stream). */
static int recv_exact(int fd, void *buf, size_t len, int64_t deadline)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
        int r;

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        if ((r = wa_poll_until(fd, POLLIN, deadline)) < 0)
            return r;
    }
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

/* One try: connect, CONNECT line, OK line. 1 = try again (the guest is not listening yet). */
static int connect_once(const char *uds_path, int64_t deadline, int *out, struct wisp_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    cleanup_close int fd = -1;
    char line[32], req[32];
    int64_t try_deadline;
    size_t got = 0;
    int r;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return wisp_err_sys(err, errno, "socket");
    memcpy(sa.sun_path, uds_path, strlen(uds_path));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED || errno == EAGAIN)
            return 1;
        if (errno != EINPROGRESS)
            return wisp_err_sys(err, errno, "connect to %s", uds_path);
        if ((r = wa_poll_until(fd, POLLOUT, deadline)) < 0)
            return wisp_err_set(err, -r, "connect to %s: timed out", uds_path);
    }
    snprintf(req, sizeof(req), "CONNECT %u\n", WISP_AGENT_PORT);
    if ((r = wa_send_all(fd, req, strlen(req), deadline)) < 0)
        return r == -ECONNRESET ? 1 : wisp_err_set(err, -r, "%s: sending CONNECT", uds_path);
    /* wisp-vmm answers or closes within 2 s once the guest's driver runs; before that (early
     * boot) a connection may just sit: try a new one after 10 s */
    try_deadline = now_ms() + 10000;
    if (try_deadline > deadline)
        try_deadline = deadline;
    while (got < sizeof(line) - 1) {
        if ((r = recv_exact(fd, line + got, 1, try_deadline)) < 0) {
            if (r == -ECONNRESET || (r == -ETIMEDOUT && try_deadline < deadline))
                return 1; /* wisp-vmm closes without a line: nothing listens on the port yet */
            return wisp_err_set(err, -r, "%s: waiting for the agent's OK%s", uds_path,
                                r == -ETIMEDOUT ? " (timed out)" : "");
        }
        if (line[got++] == '\n')
            break;
    }
    line[got] = '\0';
    if (strncmp(line, "OK ", 3) != 0 || line[got - 1] != '\n')
        return wisp_err_set(err, EPROTO, "%s: '%.*s' instead of OK to CONNECT", uds_path,
                            (int)(got ? got - 1 : 0), line);
    *out = steal_fd(&fd);
    return 0;
}

int wa_connect_raw(const char *uds_path, int64_t deadline, int *out, struct wisp_err *err)
{
    int r;

    if (!uds_path || strlen(uds_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return wisp_err_set(err, ENAMETOOLONG, "vsock socket path '%s' is too long",
                            uds_path ? uds_path : "");
    for (;;) {
        r = connect_once(uds_path, deadline, out, err);
        if (r <= 0)
            return r;
        if (deadline != WISP_AGENT_NO_DEADLINE && now_ms() + 50 >= deadline)
            return wisp_err_set(err, ETIMEDOUT,
                                "no guest agent answered on %s port %u before "
                                "the deadline",
                                uds_path, WISP_AGENT_PORT);
        sleep_ms(50);
    }
}

void wa_answer_free(struct wa_answer *ans)
{
    wa_msg_free(&ans->m);
    free(ans->payload);
    ans->payload = NULL;
}

int wa_recv_answer(int fd, const struct wa_msg *req, struct wa_answer *ans, int64_t deadline,
                   struct wisp_err *err)
{
    uint8_t raw[WA_HDR_SIZE];
    struct wa_hdr h;
    int r;

    memset(ans, 0, sizeof(*ans));
    if ((r = recv_exact(fd, raw, sizeof(raw), deadline)) < 0)
        return wisp_err_set(err, -r, "agent: no answer to %s%s", wa_type_name(req->type),
                            r == -ETIMEDOUT ? " before the deadline" : " (connection closed)");
    if ((r = wa_hdr_decode(raw, &h, err)) < 0)
        return wisp_err_wrap(err, "agent's answer to %s", wa_type_name(req->type));
    if (h.type != (req->type | WA_RESPONSE) || h.id != req->id)
        return wisp_err_set(err, EPROTO, "agent answered %s id %u to %s id %u",
                            wa_type_name(h.type), h.id, wa_type_name(req->type), req->id);
    ans->payload = malloc(h.len ? h.len : 1);
    if (!ans->payload)
        return wisp_err_set(err, ENOMEM, "agent's answer: %u bytes", h.len);
    if ((r = recv_exact(fd, ans->payload, h.len, deadline)) < 0) {
        wa_answer_free(ans);
        return wisp_err_set(err, -r, "agent: the answer to %s was cut short",
                            wa_type_name(req->type));
    }
    if ((r = wa_decode(h.type, h.id, ans->payload, h.len, &ans->m, err)) < 0) {
        wa_answer_free(ans);
        return wisp_err_wrap(err, "agent");
    }
    if (ans->m.errnum) {
        r = wisp_err_set(err, (int)ans->m.errnum, "agent: %s: %s", wa_type_name(req->type),
                         ans->m.message ? ans->m.message : strerror((int)ans->m.errnum));
        wa_answer_free(ans);
        return r;
    }
    return 0;
}

int wa_send_request(int fd, const struct wa_msg *req, int64_t deadline, struct wisp_err *err)
{
    struct wa_buf b = {0};
    int r = wa_msg_check(req, err);

    if (r < 0)
        return wisp_err_wrap(err, "%s", wa_type_name(req->type));
    if ((r = wa_encode(&b, req)) < 0) {
        wa_buf_free(&b);
        return wisp_err_set(err, -r, "%s: the request does not fit in a frame (%u bytes)",
                            wa_type_name(req->type), WA_MAX_PAYLOAD);
    }
    r = wa_send_all(fd, b.data, b.len, deadline);
    wa_buf_free(&b);
    if (r < 0)
        return wisp_err_set(err, -r, "agent: sending %s%s", wa_type_name(req->type),
                            r == -ETIMEDOUT ? ": timed out" : ": connection closed");
    return 0;
}

int wa_hello(int fd, uint32_t id, int64_t deadline, struct wa_answer *ans, struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_HELLO,
                         .id = id,
                         .version = WISP_AGENT_VERSION,
                         .name = "libwisp_agent " WISP_VERSION};
    int r;

    wa_set(&req, WT_VERSION);
    if ((r = wa_send_request(fd, &req, deadline, err)) < 0)
        return r;
    if ((r = wa_recv_answer(fd, &req, ans, deadline, err)) < 0)
        return r;
    if (ans->m.version != WISP_AGENT_VERSION) {
        r = wisp_err_set(err, EPROTONOSUPPORT, "agent speaks protocol version %u, this client %u",
                         ans->m.version, WISP_AGENT_VERSION);
        wa_answer_free(ans);
    }
    return r;
}

int wisp_agent_connect(const char *uds_path, int64_t deadline, struct wisp_agent **out,
                       struct wisp_err *err)
{
    struct wa_answer ans;
    struct wisp_agent *a;
    int fd, r;

    if ((r = wa_connect_raw(uds_path, deadline, &fd, err)) < 0)
        return r;
    if ((r = wa_hello(fd, 1, deadline, &ans, err)) < 0) {
        close(fd);
        return r;
    }
    a = calloc(1, sizeof(*a));
    if (!a) {
        wa_answer_free(&ans);
        close(fd);
        return wisp_err_set(err, ENOMEM, "agent connection");
    }
    a->fd = fd;
    a->next_id = 2;
    a->version = ans.m.version;
    snprintf(a->name, sizeof(a->name), "%s", ans.m.name ? ans.m.name : "");
    wa_answer_free(&ans);
    *out = a;
    return 0;
}

void wisp_agent_close(struct wisp_agent *a)
{
    if (!a)
        return;
    close(a->fd);
    free(a);
}

uint32_t wisp_agent_version(const struct wisp_agent *a)
{
    return a->version;
}

const char *wisp_agent_name(const struct wisp_agent *a)
{
    return a->name;
}

int wa_client_fd(const struct wisp_agent *a)
{
    return a->fd;
}

uint32_t wa_client_next_id(struct wisp_agent *a)
{
    return a->next_id++;
}

/* Sends req (its id assigned here) and waits for its answer. */
int wa_call(struct wisp_agent *a, struct wa_msg *req, struct wa_answer *ans, int64_t deadline,
            struct wisp_err *err)
{
    int r;

    req->id = a->next_id++;
    if ((r = wa_send_request(a->fd, req, deadline, err)) < 0)
        return r;
    return wa_recv_answer(a->fd, req, ans, deadline, err);
}
