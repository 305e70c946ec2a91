/* A non-blocking HTTP client for wisp-vmm's API socket (docs/api.md) on wispd's event loop:
 * a short sequence of requests on one connection (all but the last pipelined), with a deadline,
 * so that a hung wisp-vmm costs wispd a timer and an fd, never a blocked loop. */
#ifndef WISP_WISPD_VMMCLIENT_H
#define WISP_WISPD_VMMCLIENT_H

#include <stddef.h>

#include "common/err.h"

struct evloop;
struct vmm_client;

struct vmm_request {
    const char *method;
    char *path; /* owned by the client once given */
    char *body; /* owned; NULL for none */
};

/* Called once, from the loop: status 0 when every request got a 2xx answer; else a negative
 * errno and a message naming the request and wisp-vmm's fault_message (or the timeout). The
 * client is freed after the call returns. */
typedef void (*vmm_client_done_fn)(void *opaque, int status, const char *message);

/*
 * Sends reqs[0..n) to the socket at `path` on one connection: reqs[0..n-1) at once (answered in
 * order), reqs[n-1] once each of those got a 2xx answer (so a start's InstanceStart never
 * follows a refused configuration). Until `connect_wait_ms` has passed the socket may not exist
 * yet (a wisp-vmm just started): connecting is retried every 0.25 ms, after 20 ms every 2 ms.
 * Each answer must come within `timeout_ms` of the one before. Takes the paths and bodies even on
 * failure. *out (optional) is valid until done runs or vmm_client_cancel().
 */
int vmm_client_run(struct vmm_client **out, struct evloop *loop, const char *path,
                   struct vmm_request *reqs, size_t n, unsigned connect_wait_ms,
                   unsigned timeout_ms, vmm_client_done_fn done, void *opaque,
                   struct wisp_err *err);

/* After vmm_client_run: the last request's 2xx answer body goes to *answer (malloc'd; the
 * caller frees it) before done runs. */
void vmm_client_keep_answer(struct vmm_client *c, char **answer);

/* Drops the client without calling done (its VM went away). NULL is fine. */
void vmm_client_cancel(struct vmm_client *c);

#endif
