/* wisp-agent's internals: the state of the guest agent (docs/agent-protocol.md) and the
 * functions its files share. One thread, one poll loop; nothing blocks on a host peer. */
#ifndef WISP_GUEST_AGENT_H
#define WISP_GUEST_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/proto.h"
#include "common/err.h"

#define AGENT_RUN_DIR   "/run/wisp-agent"
#define AGENT_CONNS_MAX 128
#define CONN_OUT_MAX    (8u << 20) /* answers a client does not read: then it is dropped */
#define STREAM_BUF      65536

/* A control connection: frames in, answers out. */
struct conn {
    struct conn *next;
    int fd;
    bool hello, dead, flush_then_close;
    uint8_t *in;
    size_t inlen, incap;
    uint8_t *out;
    size_t outlen, outoff, outcap;
    struct stream *became; /* set by ATTACH: the fd went to this stream */
};

/* One direction of a stream: src -> buf -> dst. */
struct pump {
    int src, dst;
    bool eof, done;
    size_t len, off;
    uint8_t *buf;
};

/* An attached stream: a vsock connection carrying one of a process's stdio (or its pty). */
struct stream {
    struct stream *next;
    struct proc *proc;
    enum wisp_agent_stream kind;
    int conn_fd;
    int pipe_fd;         /* owned: the pipe's end (stdin's write end, stdout's read end) */
    struct pump in, out; /* in: conn -> pipe/pty; out: pipe/pty -> conn */
    bool dead;
};

enum proc_state { PROC_SETUP, PROC_CREATED, PROC_STARTING, PROC_RUNNING, PROC_EXITED };

/* An answer owed to a client once a process gets somewhere (created, started, ended). */
struct pending {
    struct pending *next;
    struct conn *conn;
    uint32_t id;
    uint16_t type;
    struct proc *proc;
};

struct proc {
    struct proc *next;
    struct container *ctr;
    char exec_id[WISP_AGENT_ID_MAX + 1];
    pid_t pid;
    enum proc_state state;
    int status;      /* wait status once PROC_EXITED */
    int sync_fd;     /* the child's setup socket while it sets up or starts */
    int stdio_fd[3]; /* the agent's pipe ends until a stream takes them */
    int pty_master;
    bool terminal;
    bool attached[4];
};

struct container {
    struct container *next;
    char id[WISP_AGENT_ID_MAX + 1];
    char dir[256];   /* AGENT_RUN_DIR/<id> */
    char root[300];  /* dir/rootfs: the container's root, mounted */
    pid_t *sessions; /* the session ids of its processes (each started with setsid) */
    size_t nsessions;
};

struct agent {
    int listen_fd, sigchld_fd;
    bool pid1;
    struct conn *conns;
    size_t nconns;
    struct stream *streams;
    struct proc *procs;
    struct container *ctrs;
    struct pending *pendings;
    bool shutting_down;
    uint32_t shutdown_grace_ms;
    struct conn *shutdown_conn;
};

void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Answers: an error (errnum, message) or a success carrying `ans`'s fields (may be NULL). */
void conn_answer(struct conn *c, uint16_t type, uint32_t id, const struct wa_msg *ans);
void conn_answer_error(struct conn *c, uint16_t type, uint32_t id, const struct wisp_err *err);
void pending_add(struct agent *ag, struct conn *c, const struct wa_msg *req, struct proc *p);
/* Answers (and drops) every pending answer of `type` for p: ok (ans) or an error. */
void pending_settle(struct agent *ag, struct proc *p, uint16_t type, const struct wa_msg *ans,
                    const struct wisp_err *err);

/* container.c */
struct container *container_find(struct agent *ag, const char *id);
int container_create(struct agent *ag, const struct wa_msg *m, struct wisp_err *err);
int container_delete(struct agent *ag, struct container *c, struct wisp_err *err);
int container_add_session(struct container *c, pid_t sid);
/* Sends signo to every process in the container's sessions. */
void container_kill_all(struct agent *ag, struct container *c, int signo);
int mount_options(const char *const *opts, size_t n, unsigned long *flags, unsigned long *prop,
                  char *data, size_t datalen);

/* process.c: each returns 0 (answered: *ans filled), 1 (the answer is pending), or -errno. */
struct proc *proc_find(struct agent *ag, struct container *c, const char *exec_id);
int proc_create(struct agent *ag, struct conn *conn, const struct wa_msg *m, struct wisp_err *err);
int proc_start(struct agent *ag, struct conn *conn, const struct wa_msg *m, struct wisp_err *err);
int proc_wait(struct agent *ag, struct conn *conn, const struct wa_msg *m, struct wa_msg *ans,
              struct wisp_err *err);
int proc_signal(struct agent *ag, const struct wa_msg *m, struct wisp_err *err);
int proc_resize(struct agent *ag, const struct wa_msg *m, struct wisp_err *err);
int proc_delete(struct agent *ag, const struct wa_msg *m, struct wisp_err *err);
/* The child's setup socket is readable (or the child ended); true when p was freed. */
bool proc_sync_event(struct agent *ag, struct proc *p);
/* Reaps every ended child (SIGCHLD). */
void proc_reap(struct agent *ag);
void proc_free(struct agent *ag, struct proc *p);

/* stream.c */
int stream_attach(struct agent *ag, struct conn *c, const struct wa_msg *m, struct wisp_err *err);
void stream_close_for(struct agent *ag, struct proc *p);
void streams_sweep(struct agent *ag);
void pump_io(struct pump *pm, short revents);

/* net.c */
int net_apply(const struct wisp_agent_network *n, struct wisp_err *err);

/* ps.c: fills ans->procs (strings in *arena, to free() with ans->procs after encoding). */
int ps_collect(struct agent *ag, struct container *c, struct wa_msg *ans, char **arena,
               struct wisp_err *err);
/* Calls fn for every pid whose session is one of the container's. */
void ps_foreach_in_sessions(struct container *c, void (*fn)(pid_t pid, void *opaque), void *opaque);

#endif
