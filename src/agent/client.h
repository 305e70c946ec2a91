/* libwisp_agent: the host's client of the guest agent (guest/agent/, docs/agent-protocol.md),
 * over a VM's vsock unix socket (Firecracker's hybrid model, docs/vsock.md). */
#ifndef WISP_AGENT_CLIENT_H
#define WISP_AGENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/types.h"
#include "common/err.h"

/*
 * Deadlines. Every call that talks to the guest takes an absolute deadline in milliseconds of
 * CLOCK_MONOTONIC (wisp_agent_deadline(ms) makes one) and fails with -ETIMEDOUT when it
 * passes: a dead or stuck guest never hangs the caller. WISP_AGENT_NO_DEADLINE waits as long
 * as the VM lives (its vsock socket closes when wisp-vmm ends: -ECONNRESET).
 *
 * Errors. Calls return 0 or a negative errno and fill *err (may be NULL). An error the agent
 * answered carries the agent's errno (-ENOENT for an unknown container or process, -EEXIST,
 * -EBUSY, -ESRCH, ...) and a message starting "agent: "; a transport failure is -ETIMEDOUT,
 * -ECONNRESET (the VM or the connection went away) or -EPROTO (a malformed answer).
 *
 * Threads. A struct wisp_agent is one connection with one request in flight at a time; use it
 * from one thread at a time. Open several for concurrent calls (a WAIT that blocks while other
 * calls go on: one connection each). Connections are cheap (a unix connect and a vsock one).
 *
 * Call order for a container (runc's create/start split):
 *   wisp_agent_connect -> [wisp_agent_network] -> wisp_agent_container_create
 *   -> wisp_agent_process_create(exec_id "") -> wisp_agent_attach (each stream, optional)
 *   -> wisp_agent_process_start -> ... wisp_agent_wait -> wisp_agent_container_delete
 *   -> wisp_agent_shutdown (ends the VM) -> wisp_agent_close
 * and for an exec'd process: wisp_agent_process_create(exec_id "e1") -> attach -> start ->
 * wait -> wisp_agent_process_delete.
 */
#define WISP_AGENT_NO_DEADLINE INT64_MAX

/* now (CLOCK_MONOTONIC) + ms_from_now, in ms; ms_from_now < 0 gives WISP_AGENT_NO_DEADLINE. */
int64_t wisp_agent_deadline(int64_t ms_from_now);

struct wisp_agent;

/*
 * Connects to the guest agent through the VM's vsock socket `uds_path` (CONNECT 1024) and
 * exchanges HELLO. While nothing listens in the guest yet (the VM is booting: wisp-vmm closes
 * the connection without an OK line) or the socket does not exist yet, it retries every 50 ms
 * until the deadline. *out is freed with wisp_agent_close().
 */
int wisp_agent_connect(const char *uds_path, int64_t deadline, struct wisp_agent **out,
                       struct wisp_err *err);
void wisp_agent_close(struct wisp_agent *a);
/* The agent's protocol version and name ("wisp-agent 0.1.0"), from its HELLO. */
uint32_t wisp_agent_version(const struct wisp_agent *a);
const char *wisp_agent_name(const struct wisp_agent *a);

/* Mounts the container's root (a 9p tag or a guest path), then its mounts in order, writes its
 * files, creates /dev nodes when asked, sets the hostname, remounts the root read-only when
 * asked. -EEXIST for an id in use. */
int wisp_agent_container_create(struct wisp_agent *a, const struct wisp_agent_container *c,
                                int64_t deadline, struct wisp_err *err);

/*
 * Creates a process of container `container`: exec_id "" is the container's own (its init:
 * when it ends, every other process of the container is killed, as a pid namespace's end
 * does), any other id an exec'd process. The process is set up (session, stdio or pty, root,
 * cwd, rlimits, umask, groups, gid, uid, no_new_privs, the executable found) and waits: it
 * runs the program only on wisp_agent_process_start(). *pid is its pid in the guest.
 * Setup failures come back here (-ENOENT: no such executable, -EACCES, ...).
 */
int wisp_agent_process_create(struct wisp_agent *a, const char *container, const char *exec_id,
                              const struct wisp_agent_process *p, uint32_t *pid, int64_t deadline,
                              struct wisp_err *err);
/* execve()s the created process's program; an exec failure is answered here. -EALREADY when
 * it was started already. */
int wisp_agent_process_start(struct wisp_agent *a, const char *container, const char *exec_id,
                             int64_t deadline, struct wisp_err *err);
/* kill(2)s the process with signo; all = every process of the container (exec_id ignored). */
int wisp_agent_signal(struct wisp_agent *a, const char *container, const char *exec_id, int signo,
                      bool all, int64_t deadline, struct wisp_err *err);
/* Waits for the process to end; *wait_status as waitpid(2) gives it (WIFEXITED ...). Returns
 * at once for a process that ended already (its status is kept until it is deleted). */
int wisp_agent_wait(struct wisp_agent *a, const char *container, const char *exec_id,
                    int *wait_status, int64_t deadline, struct wisp_err *err);
/* Sets the process's terminal size (TIOCSWINSZ: the process gets SIGWINCH). -ENOTTY without one. */
int wisp_agent_resize(struct wisp_agent *a, const char *container, const char *exec_id,
                      uint16_t rows, uint16_t cols, int64_t deadline, struct wisp_err *err);

/* The container's processes (every process in the sessions of the processes the host made).
 * *entries (and the strings it points to) is one allocation: free() it. */
int wisp_agent_ps(struct wisp_agent *a, const char *container, struct wisp_agent_ps_entry **entries,
                  size_t *n, int64_t deadline, struct wisp_err *err);

/* Sets interfaces (MTU, addresses, up), then routes, then /etc/resolv.conf of the guest. */
int wisp_agent_network(struct wisp_agent *a, const struct wisp_agent_network *n, int64_t deadline,
                       struct wisp_err *err);

/* Forgets an ended process (its status and unread output). -EBUSY while it runs. */
int wisp_agent_process_delete(struct wisp_agent *a, const char *container, const char *exec_id,
                              int64_t deadline, struct wisp_err *err);
/* Kills (SIGKILL) every process of the container, unmounts its root and forgets it. */
int wisp_agent_container_delete(struct wisp_agent *a, const char *container, int64_t deadline,
                                struct wisp_err *err);
/* Ends every container (SIGTERM, then SIGKILL after grace_ms), syncs and ends the VM (wisp-vmm
 * exits 0). Returns once the agent has answered; the VM ends shortly after. */
int wisp_agent_shutdown(struct wisp_agent *a, uint32_t grace_ms, int64_t deadline,
                        struct wisp_err *err);

/*
 * Attaches one stream of a process: a new vsock connection, returned in *fd (a unix socket,
 * blocking, close-on-exec) that carries the raw bytes from then on. STDIN: write the process's
 * input, shutdown(SHUT_WR) or close for its end of file. STDOUT/STDERR: read until end of file
 * (the process and every holder of the pipe closed it). PTY: both ways (input and output of the
 * terminal). Attach before wisp_agent_process_start() to miss nothing; output a process wrote
 * before waits in its pipe (64 KiB, then the process blocks). -EBUSY: attached already;
 * -EINVAL: the process has no such stream (stdio NULL, or PTY without a terminal).
 */
int wisp_agent_attach(const char *uds_path, const char *container, const char *exec_id,
                      enum wisp_agent_stream stream, int64_t deadline, int *fd,
                      struct wisp_err *err);

/*
 * Pumps a process's stdio between host fds and attached streams and waits for its end: copies
 * in_fd -> stdin_conn (then shutdown(SHUT_WR) on in_fd's end of file), stdout_conn -> out_fd,
 * stderr_conn -> err_fd, until the process ended (WAIT on `a`) and both outputs reached their
 * end of file. With a terminal pass the PTY connection as both stdin_conn and stdout_conn
 * (stderr_conn -1). Any fd may be -1 (that direction is skipped). The conns are closed on
 * return; the host fds are not. Non-blocking inside; returns -ETIMEDOUT at the deadline.
 */
struct wisp_agent_stdio_pump {
    int in_fd, out_fd, err_fd;
    int stdin_conn, stdout_conn, stderr_conn;
};
int wisp_agent_pump_and_wait(struct wisp_agent *a, const char *container, const char *exec_id,
                             struct wisp_agent_stdio_pump *io, int *wait_status, int64_t deadline,
                             struct wisp_err *err);

#endif
