/* libwisp_agent's requests: one function per message type (docs/agent-protocol.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/client_int.h"

/* A request whose answer carries nothing but its errno. */
static int call_plain(struct wisp_agent *a, struct wa_msg *req, int64_t deadline,
                      struct wisp_err *err)
{
    struct wa_answer ans;
    int r = wa_call(a, req, &ans, deadline, err);

    if (r == 0)
        wa_answer_free(&ans);
    return r;
}

int wisp_agent_container_create(struct wisp_agent *a, const struct wisp_agent_container *c,
                                int64_t deadline, struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_CONTAINER_CREATE, .container = c->id, .ctr = *c};

    return call_plain(a, &req, deadline, err);
}

int wisp_agent_process_create(struct wisp_agent *a, const char *container, const char *exec_id,
                              const struct wisp_agent_process *p, uint32_t *pid, int64_t deadline,
                              struct wisp_err *err)
{
    struct wa_msg req = {
        .type = WA_PROCESS_CREATE, .container = container, .exec_id = exec_id, .process = *p};
    struct wa_answer ans;
    int r;

    wa_set(&req, WT_UID);
    wa_set(&req, WT_GID);
    wa_set(&req, WT_STDIN);
    wa_set(&req, WT_STDOUT);
    wa_set(&req, WT_STDERR);
    if ((r = wa_call(a, &req, &ans, deadline, err)) < 0)
        return r;
    if (pid)
        *pid = ans.m.pid;
    wa_answer_free(&ans);
    return 0;
}

static int call_process(struct wisp_agent *a, enum wa_type type, const char *container,
                        const char *exec_id, int64_t deadline, struct wisp_err *err)
{
    struct wa_msg req = {.type = type, .container = container, .exec_id = exec_id};

    return call_plain(a, &req, deadline, err);
}

int wisp_agent_process_start(struct wisp_agent *a, const char *container, const char *exec_id,
                             int64_t deadline, struct wisp_err *err)
{
    return call_process(a, WA_PROCESS_START, container, exec_id, deadline, err);
}

int wisp_agent_process_delete(struct wisp_agent *a, const char *container, const char *exec_id,
                              int64_t deadline, struct wisp_err *err)
{
    return call_process(a, WA_PROCESS_DELETE, container, exec_id, deadline, err);
}

int wisp_agent_signal(struct wisp_agent *a, const char *container, const char *exec_id, int signo,
                      bool all, int64_t deadline, struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_SIGNAL,
                         .container = container,
                         .exec_id = exec_id,
                         .signo = signo > 0 ? (uint32_t)signo : 0,
                         .all = all};

    wa_set(&req, WT_SIGNAL);
    return call_plain(a, &req, deadline, err);
}

int wisp_agent_wait(struct wisp_agent *a, const char *container, const char *exec_id,
                    int *wait_status, int64_t deadline, struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_WAIT, .container = container, .exec_id = exec_id};
    struct wa_answer ans;
    int r;

    if ((r = wa_call(a, &req, &ans, deadline, err)) < 0)
        return r;
    if (wait_status)
        *wait_status = (int)ans.m.status;
    wa_answer_free(&ans);
    return 0;
}

int wisp_agent_resize(struct wisp_agent *a, const char *container, const char *exec_id,
                      uint16_t rows, uint16_t cols, int64_t deadline, struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_RESIZE, .container = container, .exec_id = exec_id};

    req.process.rows = rows;
    req.process.cols = cols;
    return call_plain(a, &req, deadline, err);
}

/* Copies the entries and their strings into one allocation the caller frees. */
static int copy_ps(const struct wa_msg *m, struct wisp_agent_ps_entry **out, size_t *n,
                   struct wisp_err *err)
{
    size_t size = m->nprocs * sizeof(**out) + 1;
    struct wisp_agent_ps_entry *e;
    char *s;

    for (size_t i = 0; i < m->nprocs; i++) {
        const struct wisp_agent_ps_entry *p = &m->procs[i];

        size += (p->state ? strlen(p->state) + 1 : 1) + (p->cmd ? strlen(p->cmd) + 1 : 1) +
                (p->exec_id ? strlen(p->exec_id) + 1 : 0);
    }
    e = malloc(size);
    if (!e)
        return wisp_err_set(err, ENOMEM, "PS answer: %zu entries", m->nprocs);
    s = (char *)(e + m->nprocs);
    for (size_t i = 0; i < m->nprocs; i++) {
        const struct wisp_agent_ps_entry *p = &m->procs[i];
        const char *strs[3] = {p->state ? p->state : "", p->cmd ? p->cmd : "", p->exec_id};
        const char **dst[3] = {&e[i].state, &e[i].cmd, &e[i].exec_id};

        e[i] = *p;
        for (int k = 0; k < 3; k++) {
            *dst[k] = NULL;
            if (!strs[k])
                continue;
            strcpy(s, strs[k]);
            *dst[k] = s;
            s += strlen(s) + 1;
        }
    }
    *out = e;
    *n = m->nprocs;
    return 0;
}

int wisp_agent_ps(struct wisp_agent *a, const char *container, struct wisp_agent_ps_entry **entries,
                  size_t *n, int64_t deadline, struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_PS, .container = container};
    struct wa_answer ans;
    int r;

    if ((r = wa_call(a, &req, &ans, deadline, err)) < 0)
        return r;
    r = copy_ps(&ans.m, entries, n, err);
    wa_answer_free(&ans);
    return r;
}

int wisp_agent_network(struct wisp_agent *a, const struct wisp_agent_network *n, int64_t deadline,
                       struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_NETWORK, .net = *n};

    return call_plain(a, &req, deadline, err);
}

int wisp_agent_container_delete(struct wisp_agent *a, const char *container, int64_t deadline,
                                struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_CONTAINER_DELETE, .container = container};

    return call_plain(a, &req, deadline, err);
}

int wisp_agent_shutdown(struct wisp_agent *a, uint32_t grace_ms, int64_t deadline,
                        struct wisp_err *err)
{
    struct wa_msg req = {.type = WA_SHUTDOWN, .timeout_ms = grace_ms};

    wa_set(&req, WT_TIMEOUT_MS);
    return call_plain(a, &req, deadline, err);
}
