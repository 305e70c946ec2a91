/* A small HTTP/1.1 server on a unix socket, driven by a wisp event loop: libmicrohttpd in
 * external-event mode, routing by method and path pattern, bounded requests, and answers that
 * may come later (wisp-vmm's API, docs/api.md; later wispd's). */
#ifndef WISP_API_HTTP_H
#define WISP_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

struct evloop;
struct api_server;
struct api_request;

/*
 * Threads: everything here runs on the thread of the event loop the server was created on
 * (libmicrohttpd has no thread of its own: its epoll fd is one source of that loop and its
 * timeouts one timer). Handlers run there, one at a time, and never block: a request whose
 * answer comes later (a pause that waits for the vCPUs, work on a device's I/O thread) is
 * suspended and answered from a later callback of the same loop.
 *
 * Untrusted input: a client may send anything. The server bounds the body (a larger one is a
 * 400 before it is read), the connections at once (more are accepted and closed at once), and
 * the time a request may take to arrive (a slow or stalled client is dropped); bytes that are
 * not HTTP get libmicrohttpd's 400 and the connection is closed. Nothing a client does blocks
 * the loop.
 */

/* Called for a request whose method and path matched a route (loop thread). The handler
 * answers with one api_reply_*() call, or suspends the request and answers later. */
typedef void (*api_handler_fn)(struct api_request *req, void *opaque);

struct api_route {
    const char *method;  /* "GET", "PUT", "PATCH", ... */
    const char *pattern; /* "/drives/{drive_id}": literal segments and whole-segment captures */
    api_handler_fn fn;
};

struct api_server_limits {
    size_t max_body;             /* bytes; default 51200 (Firecracker's default payload limit) */
    unsigned max_connections;    /* at once; default 128 */
    unsigned request_deadline_s; /* from a connection's start, or from its previous answer, to
                                    the end of the next request's body; default 10 */
    bool allow_upgrade;          /* api_reply_upgrade() may be used (wispd's console) */
};

/*
 * Creates the socket at `path` (mode 0600, created by bind: a path that exists is refused,
 * nothing is removed) and serves it on `loop`. limits may be NULL (defaults). Routes are added
 * with api_server_add_routes(). Pair with api_server_destroy(), which removes the socket file.
 */
int api_server_create(struct api_server **out, struct evloop *loop, const char *path,
                      const struct api_server_limits *limits, struct wisp_err *err);
/* Adds n routes (the table must outlive the server); their handlers get `opaque`. A route
 * added later with the method and pattern of an earlier one replaces it. */
int api_server_add_routes(struct api_server *s, const struct api_route *routes, size_t n,
                          void *opaque, struct wisp_err *err);
/* Answers every suspended request with 503 ("the server is shutting down"), closes every
 * connection and the socket, removes the socket file, frees. NULL is fine. A request handle
 * is invalid afterwards: whoever held one for a later answer must have forgotten it. */
void api_server_destroy(struct api_server *s);
/* The same on fd, a listening unix stream socket someone else bound (non-blocking; the server
 * owns it from now on, even on failure); name stands for it in messages. Its path is not
 * removed at the end: whoever bound it does that. */
int api_server_adopt(struct api_server **out, struct evloop *loop, int fd, const char *name,
                     const struct api_server_limits *limits, struct wisp_err *err);
const char *api_server_path(const struct api_server *s);

/* The request (valid until it is answered; a suspended one until its answer). */
const char *api_request_method(const struct api_request *r);
const char *api_request_path(const struct api_request *r);
/* The value of a {name} capture of the route's pattern, or NULL. */
const char *api_request_param(const struct api_request *r, const char *name);
/* The body, NUL-terminated (len may be NULL); "" when there is none. */
const char *api_request_body(const struct api_request *r, size_t *len);

/* Answers. Exactly one per request, on the loop's thread, from the handler or (suspended)
 * later. `body` may be NULL. */
void api_reply(struct api_request *r, unsigned status, const char *content_type, const char *body,
               size_t len);
/* status with a JSON body; steals the reference to `json` (NULL: 500). */
void api_reply_json(struct api_request *r, unsigned status, json_t *json);
/* 204 No Content. */
void api_reply_empty(struct api_request *r);
/* status with the body {"fault_message": "<message>"} (Firecracker's error shape). */
void api_reply_error(struct api_request *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The value of ?name=value in the request's URL, or NULL. */
const char *api_request_query(const struct api_request *r, const char *name);

/*
 * A streamed answer (chunked, for long-lived streams such as JSON lines of events): `fill` is
 * called (loop thread) for the next bytes: it copies at most `max` into buf and returns the
 * count; 0 when there is nothing yet (the connection waits, without polling, until
 * api_stream_wake()); -1 to end the answer. `closed` is called once when the stream is over
 * (the end, the client went away, the server shuts down); the handle is invalid after it.
 * A client that goes away while the stream waits is noticed at the next wake.
 */
struct api_stream;
typedef long (*api_stream_fill_fn)(void *opaque, char *buf, size_t max);
struct api_stream *api_reply_stream(struct api_request *r, unsigned status,
                                    const char *content_type, api_stream_fill_fn fill,
                                    void (*closed)(void *opaque), void *opaque);
void api_stream_wake(struct api_stream *s);

/*
 * Answers 101 Switching Protocols (the request must have "Upgrade: <protocol>"; else 400) and
 * hands the connection over: `fn` gets the socket (non-blocking; bytes the client already sent
 * after the request in extra/extra_len) and owns it until api_upgraded_close(u). The server's
 * request deadline no longer applies to it. Needs limits.allow_upgrade.
 */
struct api_upgraded;
typedef void (*api_upgrade_fn)(void *opaque, int fd, const char *extra, size_t extra_len,
                               struct api_upgraded *u);
/* false: refused and answered (fn is never called). A client that goes away before the 101 is
 * sent never reaches fn either. */
bool api_reply_upgrade(struct api_request *r, const char *protocol, api_upgrade_fn fn,
                       void *opaque);
void api_upgraded_close(struct api_upgraded *u);

/* From the handler: the answer comes later (api_reply_*() from another callback of the loop).
 * The connection reads nothing meanwhile. */
void api_request_suspend(struct api_request *r);

#endif
