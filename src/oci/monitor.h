/* The container's monitor: the host process whose pid the engine gets (--pid-file). It lives as
 * long as the container, runs wisp-vmm as its child, pumps stdio between the engine's fds (or
 * the console's pty) and the agent, forwards signals, and exits with the container's status
 * (128 + N for signal N). monitor.c; exec monitors: cmd_exec.c. */
#ifndef WISP_OCI_MONITOR_H
#define WISP_OCI_MONITOR_H

#include <stdbool.h>
#include <sys/types.h>

#include "host.h"
#include "spec.h"
#include "state.h"

struct oci_monitor_args {
    struct oci_container *c;
    struct oci_spec *spec;
    struct oci_guest *guest;
    const char *bundle;
    int ready_fd;  /* "ok\n" or "error MESSAGE\n" for create, then closed */
    int pty_slave; /* the console's slave, -1 without a terminal */
    json_t *info;  /* what the monitor made (tap, vmm pid...): sent with "ok" as JSON */
};

/* Runs in the child create forked; never returns (exits with the container's status). */
void oci_monitor_main(struct oci_monitor_args *a) __attribute__((noreturn));

/* A thread that forwards the signals the process gets to the agent's process (and SIGWINCH
 * on pty_slave as a resize); blocks the signals in the calling thread first. */
void oci_forward_signals(const char *uds, const char *id, const char *exec_id, int pty_slave);
/* Closes every fd above 2 but those in keep. */
void oci_close_other_fds(const int *keep, int n);
/* Points the log at the state directory's monitor.log unless --log names a file. */
void oci_monitor_log_to_dir(const struct oci_container *c);
/* pty helpers (cmd_create.c). */
int oci_open_pty(int *master, int *slave, struct wisp_err *err);
int oci_send_console(const char *socket_path, int master, struct wisp_err *err);
int oci_write_pid_file(const char *path, pid_t pid, struct wisp_err *err);

/* The container's exit status as a shell gives it: the code, or 128 + the signal. */
int oci_wait_status_code(unsigned status);

#endif
