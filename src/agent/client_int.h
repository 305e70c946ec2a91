/* libwisp_agent's internals shared by its files (client.c, client_calls.c, client_pump.c). */
#ifndef WISP_AGENT_CLIENT_INT_H
#define WISP_AGENT_CLIENT_INT_H

#include "agent/client.h"
#include "agent/proto.h"

/* A decoded answer and the payload its strings point into. */
struct wa_answer {
    struct wa_msg m;
    uint8_t *payload;
};
void wa_answer_free(struct wa_answer *ans);

/* Waits (until the deadline) for fd to be ready for `events`: 0, -ETIMEDOUT or -errno. */
int wa_poll_until(int fd, short events, int64_t deadline);
int wa_send_all(int fd, const void *buf, size_t len, int64_t deadline);
/* A vsock connection to the agent's port, up to the OK line (retried while nobody listens). */
int wa_connect_raw(const char *uds_path, int64_t deadline, int *out, struct wisp_err *err);
int wa_hello(int fd, uint32_t id, int64_t deadline, struct wa_answer *ans, struct wisp_err *err);
int wa_send_request(int fd, const struct wa_msg *req, int64_t deadline, struct wisp_err *err);
/* Reads the answer to req: -errno of the agent's error, or a transport/protocol error. */
int wa_recv_answer(int fd, const struct wa_msg *req, struct wa_answer *ans, int64_t deadline,
                   struct wisp_err *err);
int wa_call(struct wisp_agent *a, struct wa_msg *req, struct wa_answer *ans, int64_t deadline,
            struct wisp_err *err);
int wa_client_fd(const struct wisp_agent *a);
uint32_t wa_client_next_id(struct wisp_agent *a);

#endif
