/* The HTTP server (http.h) on libmicrohttpd in external-event mode: its epoll fd is a source of
 * the owner's event loop, MHD_run() runs when it is readable, MHD_get_timeout() arms a timer.
 * The listen socket is ours (bound 0600); requests are bounded in size, number and time. */
#include "api/http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/ratelimit.h"

#define API_MAX_PARAMS       4
#define API_PARAM_NAME_MAX   32
#define API_DEFAULT_BODY     51200
#define API_DEFAULT_CONNS    128
#define API_DEFAULT_DEADLINE 10
#define API_IDLE_TIMEOUT_S   60 /* libmicrohttpd's own backstop; the deadline comes first */
#define API_LISTEN_BACKLOG   128
#define API_TMP_SUFFIX       ".%06u~" /* the temporary name beside the path (the pid) */

/* One connection (libmicrohttpd's socket context), for the request deadline. */
struct api_conn {
    int fd;
    uint64_t since_ns; /* connection start, or the previous answer on it */
    bool complete;     /* the current request has arrived whole: the deadline is met */
    bool dropped;      /* shut down at the deadline */
    bool upgraded;     /* handed over (api_reply_upgrade): no deadline */
    struct api_conn *prev, *next;
};

struct api_request {
    struct api_server *s;
    struct MHD_Connection *conn;
    struct api_conn *c;
    char method[16];
    char *path;
    char *body;
    size_t body_len, body_cap;
    bool too_large;
    bool in_handler, suspended, dispatched;
    struct MHD_Response *response; /* the answer, until it is queued */
    unsigned status;
    unsigned nr_params;
    char param_names[API_MAX_PARAMS][API_PARAM_NAME_MAX];
    char *param_values[API_MAX_PARAMS];
    struct api_request *prev, *next; /* s->suspended */
};

struct route_entry {
    const struct api_route *route;
    void *opaque;
};

struct api_server {
    struct evloop *loop;
    struct MHD_Daemon *mhd;
    char *path;
    bool bound; /* path is our socket: removed at the end */
    struct api_server_limits limits;
    struct evloop_source *epoll_src, *mhd_timer, *deadline_timer;
    struct route_entry *routes;
    size_t nr_routes, cap_routes;
    struct api_conn *conns;
    unsigned nr_conns;
    struct api_request *suspended;
    struct api_stream *streams; /* streamed answers not over yet */
};

struct api_stream {
    struct api_server *s;
    struct MHD_Connection *conn;
    api_stream_fill_fn fill;
    void (*closed)(void *opaque);
    void *opaque;
    bool waiting; /* suspended until api_stream_wake */
    bool ended;   /* the server shuts down: the next fill ends it */
    struct api_stream *prev, *next;
};

struct api_upgraded {
    struct api_server *s;
    struct MHD_UpgradeResponseHandle *urh;
    api_upgrade_fn fn;
    void *opaque;
};

/* ---- running libmicrohttpd on the loop ------------------------------------------------- */

static void server_arm_timer(struct api_server *s)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    uint64_t ns = 0; /* disarmed: nothing to time */
    if (MHD_get_timeout(s->mhd, &ms) == MHD_YES)
        ns = ms ? (ms > 3600000 ? 3600000ull : ms) * 1000000ull : 1; /* 0 would disarm */
    (void)evloop_timer_arm(s->mhd_timer, ns, 0);
}

static void server_run(struct api_server *s)
{
    (void)MHD_run(s->mhd);
    server_arm_timer(s);
}

static void server_epoll_ready(void *opaque, uint32_t events)
{
    server_run(opaque);
}

static void server_timer(void *opaque)
{
    server_run(opaque);
}

/* Soon, from the loop (after a suspended request was answered). */
static void server_kick(struct api_server *s)
{
    (void)evloop_timer_arm(s->mhd_timer, 1, 0);
}

/* Every second while connections exist: a request that has not arrived whole within the
 * deadline is dropped. shutdown() (not close: the fd stays libmicrohttpd's) makes its next
 * read see the end, and it closes the connection. */
static void server_deadlines(void *opaque)
{
    struct api_server *s = opaque;
    uint64_t now = monotonic_ns(), limit = (uint64_t)s->limits.request_deadline_s * 1000000000ull;
    bool dropped = false;
    for (struct api_conn *c = s->conns; c; c = c->next) {
        if (c->complete || c->dropped || c->upgraded || c->fd < 0 || now - c->since_ns < limit)
            continue;
        (void)shutdown(c->fd, SHUT_RDWR);
        c->dropped = dropped = true;
    }
    if (dropped) {
        wisp_log("API %s: a client did not send its request within %u s: disconnected", s->path,
                 s->limits.request_deadline_s);
        server_run(s);
    }
}

static void server_notify_connection(void *cls, struct MHD_Connection *connection,
                                     void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
    struct api_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        struct api_conn *c = calloc(1, sizeof(*c));
        *socket_context = c;
        if (!c)
            return; /* no deadline for it; the idle timeout still applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->since_ns = monotonic_ns();
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        if (s->nr_conns++ == 0)
            (void)evloop_timer_arm(s->deadline_timer, 1000000000ull, 1000000000ull);
        return;
    }
    struct api_conn *c = *socket_context;
    *socket_context = NULL;
    if (!c)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    if (--s->nr_conns == 0)
        (void)evloop_timer_arm(s->deadline_timer, 0, 0);
    /* at the connection limit libmicrohttpd stops watching the listen socket and watches it
     * again in its next run: make that run come, for the clients waiting in the backlog */
    if (s->nr_conns + 1 >= s->limits.max_connections)
        server_kick(s);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void server_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct api_server *s = cls;
    char line[256];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    wisp_log("API %s: %s", s->path, line);
}
#pragma GCC diagnostic pop

/* ---- requests -------------------------------------------------------------------------- */

const char *api_request_method(const struct api_request *r)
{
    return r->method;
}

const char *api_request_path(const struct api_request *r)
{
    return r->path;
}

const char *api_request_param(const struct api_request *r, const char *name)
{
    for (unsigned i = 0; i < r->nr_params; i++)
        if (!strcmp(r->param_names[i], name))
            return r->param_values[i];
    return NULL;
}

const char *api_request_query(const struct api_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *api_request_body(const struct api_request *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

static void request_free(struct api_request *r)
{
    if (r->response)
        MHD_destroy_response(r->response);
    for (unsigned i = 0; i < r->nr_params; i++)
        free(r->param_values[i]);
    free(r->path);
    free(r->body);
    free(r);
}

static void suspended_remove(struct api_request *r)
{
    struct api_server *s = r->s;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->suspended = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Sets the answer and resumes a suspended request ; the access handler runs again and queues it. */
static void reply_with(struct api_request *r, unsigned status, struct MHD_Response *resp)
{
    r->response = resp;
    r->status = status;
    if (r->suspended && !r->in_handler) {
        suspended_remove(r);
        r->suspended = false;
        MHD_resume_connection(r->conn);
        server_kick(r->s);
    }
}

void api_reply(struct api_request *r, unsigned status, const char *content_type, const char *body,
               size_t len)
{
    if (r->response) /* answered twice: the first answer stands */
        return;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        body ? len : 0, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (resp && body && content_type)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    reply_with(r, status, resp); /* NULL (out of memory): closed without an answer */
}

void api_reply_json(struct api_request *r, unsigned status, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (!text) {
        api_reply_error(r, 500, "out of memory for the answer");
        return;
    }
    api_reply(r, status, "application/json", text, strlen(text));
    free(text);
}

void api_reply_empty(struct api_request *r)
{
    api_reply(r, 204, NULL, NULL, 0);
}

void api_reply_error(struct api_request *r, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s}", "fault_message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    static const char oom[] = "{\"fault_message\":\"out of memory\"}";
    api_reply(r, status, "application/json", text ? text : oom, text ? strlen(text) : strlen(oom));
    free(text);
}

void api_request_suspend(struct api_request *r)
{
    r->suspended = true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct api_stream *st = cls;
    if (st->ended)
        return MHD_CONTENT_READER_END_OF_STREAM;
    long n = st->fill(st->opaque, buf, max);
    if (n < 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n == 0) { /* nothing yet: wait without polling until api_stream_wake */
        st->waiting = true;
        MHD_suspend_connection(st->conn);
    }
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct api_stream *st = cls;
    struct api_server *s = st->s;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (st->closed)
        st->closed(st->opaque);
    free(st);
}

struct api_stream *api_reply_stream(struct api_request *r, unsigned status,
                                    const char *content_type, api_stream_fill_fn fill,
                                    void (*closed)(void *opaque), void *opaque)
{
    if (r->response)
        return NULL;
    struct api_stream *st = calloc(1, sizeof(*st));
    struct MHD_Response *resp =
        st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free)
           : NULL;
    if (!resp) {
        free(st);
        api_reply_error(r, 500, "out of memory for the answer");
        return NULL;
    }
    if (content_type)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    *st = (struct api_stream){
        .s = r->s, .conn = r->conn, .fill = fill, .closed = closed, .opaque = opaque};
    st->next = r->s->streams;
    if (st->next)
        st->next->prev = st;
    r->s->streams = st;
    reply_with(r, status, resp);
    return st;
}

void api_stream_wake(struct api_stream *st)
{
    if (!st || !st->waiting)
        return;
    st->waiting = false;
    MHD_resume_connection(st->conn);
    server_kick(st->s);
}

static void upgrade_handler(void *cls, struct MHD_Connection *connection, void *con_cls,
                            const char *extra_in, size_t extra_in_size, MHD_socket sock,
                            struct MHD_UpgradeResponseHandle *urh)
{
    struct api_upgraded *u = cls;
    struct api_request *r = con_cls;
    if (r && r->c)
        r->c->upgraded = true;
    u->urh = urh;
    int fl = fcntl(sock, F_GETFL);
    if (fl >= 0)
        (void)fcntl(sock, F_SETFL, fl | O_NONBLOCK);
    u->fn(u->opaque, sock, extra_in, extra_in_size, u);
}

bool api_reply_upgrade(struct api_request *r, const char *protocol, api_upgrade_fn fn, void *opaque)
{
    const char *up = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE);
    if (!r->s->limits.allow_upgrade || !up || strcasecmp(up, protocol)) {
        api_reply_error(r, 400, "%s %s: needs the headers 'Connection: Upgrade' and 'Upgrade: %s'",
                        r->method, r->path, protocol);
        return false;
    }
    struct api_upgraded *u = calloc(1, sizeof(*u));
    struct MHD_Response *resp = u ? MHD_create_response_for_upgrade(upgrade_handler, u) : NULL;
    if (!resp) {
        free(u);
        api_reply_error(r, 500, "out of memory for the answer");
        return false;
    }
    *u = (struct api_upgraded){.s = r->s, .fn = fn, .opaque = opaque};
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, protocol);
    reply_with(r, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
    return true;
}

void api_upgraded_close(struct api_upgraded *u)
{
    if (!u)
        return;
    (void)MHD_upgrade_action(u->urh, MHD_UPGRADE_ACTION_CLOSE);
    server_kick(u->s);
    free(u);
}

/* ---- routing --------------------------------------------------------------------------- */

/* Matches path against pattern segment by segment; with `capture`, copies the values of the
 * {name} segments into r (false when out of memory). */
static bool route_match(const char *pattern, const char *path, struct api_request *r, bool capture)
{
    const char *p = pattern, *u = path;
    unsigned n = 0;
    while (*p && *u) {
        if (*p++ != '/' || *u++ != '/')
            return false;
        size_t plen = strcspn(p, "/"), ulen = strcspn(u, "/");
        if (plen > 2 && p[0] == '{' && p[plen - 1] == '}') {
            if (ulen == 0 || n == API_MAX_PARAMS || plen - 2 >= API_PARAM_NAME_MAX)
                return false;
            if (capture) {
                snprintf(r->param_names[n], API_PARAM_NAME_MAX, "%.*s", (int)(plen - 2), p + 1);
                if (!(r->param_values[n] = strndup(u, ulen)))
                    return false;
                r->nr_params = n + 1;
            }
            n++;
        } else if (plen != ulen || memcmp(p, u, plen) != 0) {
            return false;
        }
        p += plen;
        u += ulen;
    }
    return !*p && !*u;
}

static const struct route_entry *route_find(struct api_server *s, struct api_request *r)
{
    for (size_t i = 0; i < s->nr_routes; i++) {
        const struct api_route *rt = s->routes[i].route;
        if (!strcmp(rt->method, r->method) && route_match(rt->pattern, r->path, r, false))
            return route_match(rt->pattern, r->path, r, true) ? &s->routes[i] : NULL;
    }
    return NULL;
}

static void request_dispatch(struct api_server *s, struct api_request *r)
{
    r->dispatched = true;
    const struct route_entry *e = r->too_large ? NULL : route_find(s, r);
    if (r->too_large) {
        api_reply_error(r, 400, "the request body is larger than %zu bytes", s->limits.max_body);
    } else if (!e) { /* Firecracker's answer to an unknown method or path */
        api_reply_error(r, 400, "Invalid request method and/or path: %s %s.", r->method, r->path);
    } else {
        r->in_handler = true;
        e->route->fn(r, e->opaque);
        r->in_handler = false;
        if (r->response) /* suspended, then answered at once after all */
            r->suspended = false;
        if (!r->response && !r->suspended)
            api_reply_error(r, 500, "the handler of %s %s gave no answer", r->method, r->path);
    }
}

/* Queues the answer; libmicrohttpd sends it and then calls server_completed(). */
static enum MHD_Result request_answer(struct api_request *r)
{
    if (!r->response)
        return MHD_NO; /* out of memory for the answer: the connection is closed */
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, r->response);
    MHD_destroy_response(r->response);
    r->response = NULL;
    return ok;
}

static struct api_request *request_new(struct api_server *s, struct MHD_Connection *connection,
                                       const char *url, const char *method)
{
    struct api_request *r = calloc(1, sizeof(*r));
    if (!r || !(r->path = strdup(url))) {
        free(r);
        return NULL;
    }
    r->s = s;
    r->conn = connection;
    snprintf(r->method, sizeof(r->method), "%s", method);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->c = ci ? ci->socket_context : NULL;
    /* a declared length over the limit is refused before anything is read */
    const char *cl =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > s->limits.max_body)
            r->too_large = true;
    }
    return r;
}

static void request_take_body(struct api_request *r, const char *data, size_t len)
{
    size_t max = r->s->limits.max_body;
    if (r->too_large || len > max - r->body_len) {
        r->too_large = true; /* the rest is read and dropped; the deadline bounds it */
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_len + len + 1 < 1024 ? 1024 : (r->body_len + len + 1) * 2;
        if (cap > max + 1)
            cap = max + 1;
        char *b = realloc(r->body, cap);
        if (!b) {
            r->too_large = true;
            return;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
}

static enum MHD_Result server_access(void *cls, struct MHD_Connection *connection, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    struct api_server *s = cls;
    struct api_request *r = *con_cls;
    if (!r) { /* the headers have arrived */
        if (!(r = request_new(s, connection, url, method)))
            return MHD_NO; /* out of memory: the connection is closed */
        *con_cls = r;
        if (!r->too_large)
            return MHD_YES;
        request_dispatch(s, r); /* answered at once, the body is never read */
        return request_answer(r);
    }
    if (r->dispatched) {         /* resumed with its answer, or answered before its body */
        if (*upload_data_size) { /* a body after the answer: dropped */
            *upload_data_size = 0;
            return MHD_YES;
        }
        return request_answer(r);
    }
    if (*upload_data_size) {
        request_take_body(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->c)
        r->c->complete = true;
    request_dispatch(s, r);
    if (!r->suspended)
        return request_answer(r);
    r->next = s->suspended; /* suspended: answered later */
    if (s->suspended)
        s->suspended->prev = r;
    s->suspended = r;
    MHD_suspend_connection(connection);
    return MHD_YES;
}

static void server_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                             enum MHD_RequestTerminationCode toe)
{
    struct api_request *r = *con_cls;
    *con_cls = NULL;
    if (!r)
        return;
    if (r->dispatched && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        wisp_log_at(WISP_LOG_INFO, __FILE__, __LINE__, "API: %s %s: %u", r->method, r->path,
                    r->status);
    if (r->suspended)
        suspended_remove(r);
    if (r->c) { /* the next request's clock starts now */
        r->c->complete = false;
        r->c->since_ns = monotonic_ns();
    }
    request_free(r);
}

/* ---- the server ------------------------------------------------------------------------ */

/* The listen socket, bound with mode 0600 (fchmod before bind sets the mode the socket file
 * is created with, without touching the process's umask) under a temporary name beside PATH,
 * listening, and only then renamed to PATH without replacing anything there: a client that
 * sees the path can connect (no ECONNREFUSED between bind and listen). */
static int server_listen(struct api_server *s, int *fd_out, struct wisp_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(s->path);
    if (len + sizeof(API_TMP_SUFFIX) > sizeof(sa.sun_path))
        return wisp_err_set(err, ENAMETOOLONG, "%s: longer than %zu bytes (a unix socket path)",
                            s->path, sizeof(sa.sun_path) - sizeof(API_TMP_SUFFIX));
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s" API_TMP_SUFFIX, s->path, (unsigned)getpid());
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s: socket", s->path);
    int r = fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0
                ? wisp_err_sys(err, errno, "%s: bind", sa.sun_path)
                : 0;
    bool bound = r == 0;
    if (r == 0 && listen(fd, API_LISTEN_BACKLOG) < 0)
        r = wisp_err_sys(err, errno, "%s: listen", s->path);
    if (r == 0 && renameat2(AT_FDCWD, sa.sun_path, AT_FDCWD, s->path, RENAME_NOREPLACE) < 0)
        r = errno == EEXIST
                ? wisp_err_set(err, EEXIST, "%s: the path exists (remove it first)", s->path)
                : wisp_err_sys(err, errno, "%s: rename", s->path);
    if (r < 0) {
        if (bound)
            (void)unlink(sa.sun_path);
        close(fd);
        return r;
    }
    s->bound = true;
    *fd_out = fd;
    return 0;
}

static int server_start_mhd(struct api_server *s, int fd, struct wisp_err *err)
{
    s->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                                  (s->limits.allow_upgrade ? MHD_ALLOW_UPGRADE : 0),
                              0, NULL, NULL, server_access, s, MHD_OPTION_EXTERNAL_LOGGER,
                              server_mhd_log, s, /* first, or MHD says so on stderr */
                              MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)s->limits.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)API_IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED,
                              server_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
                              server_notify_connection, s, MHD_OPTION_END);
    if (!s->mhd) {
        close(fd);
        return wisp_err_set(err, EIO, "%s: the HTTP server (libmicrohttpd) did not start", s->path);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di)
        return wisp_err_set(err, EIO, "%s: libmicrohttpd has no epoll fd", s->path);
    int r =
        evloop_add_fd(s->loop, di->epoll_fd, EPOLLIN, server_epoll_ready, s, &s->epoll_src, err);
    if (r == 0)
        r = evloop_add_timer(s->loop, server_timer, s, &s->mhd_timer, err);
    if (r == 0)
        r = evloop_add_timer(s->loop, server_deadlines, s, &s->deadline_timer, err);
    return r;
}

static struct api_server *server_new(struct evloop *loop, const char *path,
                                     const struct api_server_limits *limits, struct wisp_err *err)
{
    struct api_server *s = calloc(1, sizeof(*s));
    if (!s || !(s->path = strdup(path))) {
        free(s);
        wisp_err_set(err, ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    s->loop = loop;
    s->limits = (struct api_server_limits){API_DEFAULT_BODY, API_DEFAULT_CONNS,
                                           API_DEFAULT_DEADLINE, false};
    if (limits && limits->max_body)
        s->limits.max_body = limits->max_body;
    if (limits && limits->max_connections)
        s->limits.max_connections = limits->max_connections;
    if (limits && limits->request_deadline_s)
        s->limits.request_deadline_s = limits->request_deadline_s;
    if (limits)
        s->limits.allow_upgrade = limits->allow_upgrade;
    return s;
}

/* Serves on fd (listening), or on a socket bound at s->path when fd < 0. */
static int server_start(struct api_server **out, struct api_server *s, int fd, struct wisp_err *err)
{
    int r = fd < 0 ? server_listen(s, &fd, err) : 0;
    if (r == 0)
        r = server_start_mhd(s, fd, err);
    if (r < 0) {
        api_server_destroy(s);
        return r;
    }
    server_arm_timer(s);
    *out = s;
    return 0;
}

int api_server_create(struct api_server **out, struct evloop *loop, const char *path,
                      const struct api_server_limits *limits, struct wisp_err *err)
{
    struct api_server *s = server_new(loop, path, limits, err);
    return s ? server_start(out, s, -1, err) : -ENOMEM;
}

int api_server_adopt(struct api_server **out, struct evloop *loop, int fd, const char *name,
                     const struct api_server_limits *limits, struct wisp_err *err)
{
    struct api_server *s = server_new(loop, name, limits, err);
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    return server_start(out, s, fd, err);
}

int api_server_add_routes(struct api_server *s, const struct api_route *routes, size_t n,
                          void *opaque, struct wisp_err *err)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < s->nr_routes && (strcmp(s->routes[k].route->method, routes[i].method) ||
                                    strcmp(s->routes[k].route->pattern, routes[i].pattern)))
            k++;
        if (k == s->cap_routes) {
            size_t cap = s->cap_routes ? s->cap_routes * 2 : 32;
            struct route_entry *e = realloc(s->routes, cap * sizeof(*e));
            if (!e)
                return wisp_err_set(err, ENOMEM, "%s: out of memory for routes", s->path);
            s->routes = e;
            s->cap_routes = cap;
        }
        s->routes[k] = (struct route_entry){.route = &routes[i], .opaque = opaque};
        if (k == s->nr_routes)
            s->nr_routes++;
    }
    return 0;
}

const char *api_server_path(const struct api_server *s)
{
    return s->path;
}

void api_server_destroy(struct api_server *s)
{
    if (!s)
        return;
    if (s->mhd) {
        /* libmicrohttpd may not stop with suspended connections: answer them first */
        while (s->suspended)
            api_reply_error(s->suspended, 503, "the server is shutting down");
        for (struct api_stream *st = s->streams; st; st = st->next) {
            st->ended = true;
            if (st->waiting) {
                st->waiting = false;
                MHD_resume_connection(st->conn);
            }
        }
        (void)MHD_run(s->mhd);
        MHD_stop_daemon(s->mhd); /* closes the listen socket and every connection */
    }
    evloop_source_remove(s->epoll_src);
    evloop_source_remove(s->mhd_timer);
    evloop_source_remove(s->deadline_timer);
    if (s->bound)
        (void)unlink(s->path);
    free(s->routes);
    free(s->path);
    free(s);
}
