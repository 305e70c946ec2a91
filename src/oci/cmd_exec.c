/* wisp-oci exec: another process in a running container, through the guest agent. With
 * --detach a monitor of its own (its pid in --pid-file) pumps its stdio and exits with its
 * status, as runc's exec'd process does; without, wisp-oci exec is that monitor. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "agent/client.h"
#include "agentmap.h"
#include "common/cleanup.h"
#include "common/io.h"
#include "monitor.h"
#include "oci.h"
#include "spec.h"
#include "state.h"
#include "vm.h"

struct exec_ctx {
    struct oci_container *c;
    json_t *process;
    const char *console;
    char exec_id[40];
    char uds[PATH_MAX];
    int pty_slave;
};

static bool is_null(int fd)
{
    struct stat st;
    return fstat(fd, &st) < 0 || (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
}

/* The exec'd process created, attached and started; *a and *io for the pump. */
static int exec_start(struct exec_ctx *x, struct wisp_agent **a, struct wisp_agent_stdio_pump *io,
                      struct wisp_err *err)
{
    int64_t deadline = wisp_agent_deadline(60000);
    bool terminal = json_is_true(json_object_get(x->process, "terminal"));
    bool pipes[3] = {!terminal && !is_null(0), !terminal && !is_null(1), !terminal && !is_null(2)};
    struct oci_agent_process proc;
    uint32_t gpid;
    int r;

    if ((r = oci_agent_process_from_json(x->process, pipes, &proc, err)) < 0)
        return r;
    if (x->pty_slave >= 0) {
        struct winsize ws;
        if (ioctl(x->pty_slave, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
            proc.p.rows = ws.ws_row, proc.p.cols = ws.ws_col;
    }
    if ((r = wisp_agent_connect(x->uds, deadline, a, err)) < 0)
        return r;
    r = wisp_agent_process_create(*a, x->c->id, x->exec_id, &proc.p, &gpid, deadline, err);
    if (r < 0)
        return r;
    *io = (struct wisp_agent_stdio_pump){-1, -1, -1, -1, -1, -1};
    if (terminal) {
        r = wisp_agent_attach(x->uds, x->c->id, x->exec_id, WISP_AGENT_STREAM_PTY, deadline,
                              &io->stdin_conn, err);
        io->stdout_conn = io->stdin_conn;
        io->in_fd = io->out_fd = x->pty_slave;
    } else {
        for (int k = 0; k < 3 && r == 0; k++) {
            int *conn = k == 0 ? &io->stdin_conn : k == 1 ? &io->stdout_conn : &io->stderr_conn;
            if (pipes[k])
                r = wisp_agent_attach(x->uds, x->c->id, x->exec_id, (enum wisp_agent_stream)k,
                                      deadline, conn, err);
        }
        io->in_fd = pipes[0] ? 0 : -1;
        io->out_fd = pipes[1] ? 1 : -1;
        io->err_fd = pipes[2] ? 2 : -1;
    }
    if (r == 0)
        r = wisp_agent_process_start(*a, x->c->id, x->exec_id, deadline, err);
    return r;
}

/* Pumps until the process ends; forgets it in the agent; returns its status code. */
static int exec_finish(struct exec_ctx *x, struct wisp_agent *a, struct wisp_agent_stdio_pump *io)
{
    struct wisp_err err = {0};
    int status = 0, r;
    char name[64];

    oci_forward_signals(x->uds, x->c->id, x->exec_id, x->pty_slave);
    r = wisp_agent_pump_and_wait(a, x->c->id, x->exec_id, io, &status, WISP_AGENT_NO_DEADLINE,
                                 &err);
    if (r < 0) {
        oci_logf("error", "exec in %s: %s", x->c->id, err.msg);
        status = SIGKILL;
    } else {
        wisp_agent_process_delete(a, x->c->id, x->exec_id, wisp_agent_deadline(5000), &err);
    }
    wisp_agent_close(a);
    snprintf(name, sizeof(name), "exec.%d", (int)getpid());
    unlinkat(x->c->dirfd, name, 0);
    return oci_wait_status_code((unsigned)status);
}

static void record_exec_pid(struct oci_container *c, pid_t pid)
{
    char name[64];
    int fd;

    snprintf(name, sizeof(name), "exec.%d", (int)pid);
    fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

static json_t *argv_process(struct oci_container *c, int argc, char **argv, const char *cwd,
                            bool tty, struct wisp_err *err)
{
    char path[PATH_MAX];
    const char *bundle = json_string_value(json_object_get(c->state, "bundle"));
    json_t *cfg, *p, *args = json_array();

    snprintf(path, sizeof(path), "%s/config.json", bundle ? bundle : ".");
    cfg = oci_load_json_file(path, err);
    if (!cfg)
        return NULL;
    p = json_copy(json_object_get(cfg, "process"));
    json_decref(cfg);
    if (!p)
        p = json_object();
    for (int i = 0; i < argc; i++)
        json_array_append_new(args, json_string(argv[i]));
    json_object_set_new(p, "args", args);
    json_object_set_new(p, "terminal", json_boolean(tty));
    if (cwd)
        json_object_set_new(p, "cwd", json_string(cwd));
    return p;
}

int cmd_exec(int argc, char **argv)
{
    const char *process = NULL, *console = NULL, *pid_file = NULL, *cwd = NULL, *preserve = NULL;
    bool detach = false, tty = false, ignore_paused = false;
    const struct oci_opt opts[] = {
        {"process", 'p', true, &process, NULL},
        {"console-socket", 0, true, &console, NULL},
        {"pid-file", 0, true, &pid_file, NULL},
        {"detach", 'd', false, NULL, &detach},
        {"tty", 't', false, NULL, &tty},
        {"cwd", 0, true, &cwd, NULL},
        {"preserve-fds", 0, true, &preserve, NULL},
        {"ignore-paused", 0, false, NULL, &ignore_paused},
        {NULL, 0, false, NULL, NULL},
    };
    int i = oci_parse_opts("exec", argc, argv, 1, opts), master = -1, rp[2];
    struct wisp_err err = {0};
    struct oci_container c;
    struct exec_ctx x = {.c = &c, .console = console, .pty_slave = -1};
    struct wisp_agent *a = NULL;
    struct wisp_agent_stdio_pump io;
    unsigned char rnd[8];
    const char *status;
    pid_t pid;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (argc - i < 1 || (!process && argc - i < 2))
        return oci_usage("exec", "\"exec\" requires a container id and, without --process, a "
                                 "command");
    if (oci_open_or_fail(argv[i], &c))
        return OCI_EXIT_EXEC_ERR;
    status = oci_container_status(&c, &pid);
    if (strcmp(status, "stopped") == 0 || (strcmp(status, "paused") == 0 && !ignore_paused)) {
        bool paused = status[0] == 'p';
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: cannot exec in a %s container%s",
                        paused ? "paused" : "stopped",
                        paused ? " (use --ignore-paused to override)" : "");
    }
    x.process = process ? oci_load_json_file(process, &err)
                        : argv_process(&c, argc - i - 1, argv + i + 1, cwd, tty, &err);
    if (!x.process || oci_process_check(x.process, "exec: process", &err) < 0) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: %s", err.msg);
    }
    tty = json_is_true(json_object_get(x.process, "terminal"));
    if (tty && !console)
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: a terminal needs --console-socket");
    if (!tty && console)
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: cannot use console socket if wisp-oci "
                                           "will not allocate tty");
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0, sizeof(rnd));
    snprintf(x.exec_id, sizeof(x.exec_id), "exec-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    oci_vsock_path(&c, x.uds, sizeof(x.uds));
    if (tty && (oci_open_pty(&master, &x.pty_slave, &err) < 0 ||
                oci_send_console(console, master, &err) < 0))
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: %s", err.msg);
    if (master >= 0)
        close(master);
    close(c.lockfd); /* an exec does not hold the container's lock while it runs */
    c.lockfd = -1;

    if (!detach) {
        if (x.pty_slave >= 0) {
            setsid();
            ioctl(x.pty_slave, TIOCSCTTY, 0);
        }
        if (exec_start(&x, &a, &io, &err) < 0) {
            wisp_agent_close(a);
            return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: %s", err.msg);
        }
        if (pid_file && oci_write_pid_file(pid_file, getpid(), &err) < 0)
            oci_logf("warning", "%s", err.msg);
        record_exec_pid(&c, getpid());
        return exec_finish(&x, a, &io);
    }
    if (pipe2(rp, O_CLOEXEC) < 0)
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: pipe: %s", strerror(errno));
    pid = fork();
    if (pid < 0)
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: fork: %s", strerror(errno));
    if (pid == 0) {
        int keep[] = {rp[1], x.pty_slave, c.dirfd};
        oci_close_other_fds(keep, 3);
        setsid();
        if (x.pty_slave >= 0) {
            int null = open("/dev/null", O_RDWR);
            ioctl(x.pty_slave, TIOCSCTTY, 0);
            dup2(null, 0), dup2(null, 1), dup2(null, 2);
        }
        oci_monitor_log_to_dir(&c);
        record_exec_pid(&c, getpid());
        if (exec_start(&x, &a, &io, &err) < 0) {
            dprintf(rp[1], "error %s\n", err.msg);
            wisp_agent_close(a);
            char name[64];
            snprintf(name, sizeof(name), "exec.%d", (int)getpid());
            unlinkat(c.dirfd, name, 0);
            _exit(OCI_EXIT_EXEC_ERR);
        }
        dprintf(rp[1], "ok\n");
        close(rp[1]);
        _exit(exec_finish(&x, a, &io));
    }
    close(rp[1]);
    if (x.pty_slave >= 0)
        close(x.pty_slave);
    char msg[4096] = "";
    ssize_t n, got = 0;
    while ((n = read(rp[0], msg + got, sizeof(msg) - 1 - (size_t)got)) > 0)
        got += n;
    msg[got] = 0;
    close(rp[0]);
    if (strncmp(msg, "ok", 2) != 0) {
        msg[strcspn(msg, "\n")] = 0;
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: %s",
                        strncmp(msg, "error ", 6) == 0 ? msg + 6 : "the exec's monitor ended");
    }
    if (pid_file && oci_write_pid_file(pid_file, pid, &err) < 0)
        return oci_fail(OCI_EXIT_EXEC_ERR, "exec failed: %s", err.msg);
    return 0;
}
