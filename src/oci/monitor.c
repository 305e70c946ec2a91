/* The container's monitor (monitor.h): the VM's network and cgroups, wisp-vmm as its child,
 * the agent's container and process, stdio, signals, the exit status. docs/oci.md, "Processes". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "agent/client.h"
#include "agentmap.h"
#include "common/cleanup.h"
#include "common/io.h"
#include "monitor.h"
#include "oci.h"
#include "vm.h"

int oci_wait_status_code(unsigned status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

static void report(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int fd, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        wisp_write_all(fd, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Is fd the character device /dev/null (a stream the process need not have)? */
static bool is_dev_null(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
}

struct signal_thread {
    char uds[PATH_MAX];
    char id[1025], exec_id[80];
    int sfd;
    int pty_slave;
};

/* Signals sent to the monitor go to the container's process (as they would reach runc's init);
 * SIGWINCH on the console's slave becomes a resize. */
static void *signal_forwarder(void *arg)
{
    struct signal_thread *t = arg;
    struct signalfd_siginfo si;
    struct wisp_agent *a = NULL;
    struct wisp_err err;

    while (read(t->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD || si.ssi_signo == SIGPIPE)
            continue;
        if (!a && wisp_agent_connect(t->uds, wisp_agent_deadline(5000), &a, &err) < 0) {
            a = NULL;
            continue;
        }
        if (si.ssi_signo == SIGWINCH) {
            struct winsize ws;
            if (t->pty_slave >= 0 && ioctl(t->pty_slave, TIOCGWINSZ, &ws) == 0)
                wisp_agent_resize(a, t->id, t->exec_id, ws.ws_row, ws.ws_col,
                                  wisp_agent_deadline(5000), &err);
            continue;
        }
        if (wisp_agent_signal(a, t->id, t->exec_id, (int)si.ssi_signo, false,
                              wisp_agent_deadline(5000), &err) == -ECONNRESET) {
            wisp_agent_close(a);
            a = NULL;
        }
    }
    return NULL;
}

static void block_signals(sigset_t *set)
{
    sigfillset(set);
    sigdelset(set, SIGKILL);
    sigdelset(set, SIGSTOP);
    sigdelset(set, SIGSEGV);
    sigdelset(set, SIGBUS);
    sigdelset(set, SIGFPE);
    sigdelset(set, SIGILL);
    sigdelset(set, SIGABRT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

void oci_forward_signals(const char *uds, const char *id, const char *exec_id, int pty_slave)
{
    static struct signal_thread st;
    sigset_t set;
    pthread_t thr;

    block_signals(&set);
    snprintf(st.uds, sizeof(st.uds), "%s", uds);
    snprintf(st.id, sizeof(st.id), "%s", id);
    snprintf(st.exec_id, sizeof(st.exec_id), "%s", exec_id);
    st.pty_slave = pty_slave;
    st.sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (st.sfd >= 0 && pthread_create(&thr, NULL, signal_forwarder, &st) == 0)
        pthread_detach(thr);
}

/* The container's network: join the engine's namespace, take over its interface. */
static int setup_network(struct oci_monitor_args *a, struct oci_netif *nif, bool *have,
                         struct wisp_err *err)
{
    cleanup_close int fd = -1;
    int r;

    *have = false;
    if (!a->spec->netns_path)
        return 0;
    fd = open(a->spec->netns_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
        return wisp_err_sys(err, errno, "network namespace %s", a->spec->netns_path);
    if ((r = oci_net_probe(nif, have, err)) < 0)
        return r;
    /* a jailed VMM opens the tap as its user (without CAP_NET_ADMIN): the tap is the user's */
    nif->tap_uid = a->guest->jail ? (long)a->guest->jail_uid : -1;
    nif->tap_gid = a->guest->jail ? (long)a->guest->jail_gid : -1;
    if (*have && (r = oci_net_plumb(nif, err)) < 0)
        return r;
    if (*have) {
        json_object_set_new(a->info, "tap", json_string(nif->tap));
        json_object_set_new(a->info, "netif", json_string(nif->name));
    }
    return 0;
}

/* Everything up to the container's process created and its streams attached. */
static int prepare(struct oci_monitor_args *a, struct oci_vm *vm, struct wisp_agent **agent,
                   struct wisp_agent_stdio_pump *io, struct wisp_err *err)
{
    struct oci_netif nif;
    struct oci_agent_network net;
    struct oci_agent_container ctr;
    struct oci_agent_process proc;
    bool have_net, pipes[3];
    int64_t deadline = wisp_agent_deadline(OCI_BOOT_TIMEOUT_MS);
    uint32_t gpid;
    int r;

    if ((r = setup_network(a, &nif, &have_net, err)) < 0)
        return r;
    vm->netif = have_net ? &nif : NULL;
    if ((r = oci_vm_start(vm, a->c, a->spec, a->guest, err)) < 0)
        return r;
    json_object_set_new(a->info, "vmm_pid", json_integer(vm->pid));
    /* In steps, so that a VM that ended is noticed at once instead of at the deadline. */
    do {
        r = wisp_agent_connect(vm->vsock_path, wisp_agent_deadline(1000), agent, err);
        if (r == 0 || !oci_vm_running(vm))
            break;
    } while (wisp_agent_deadline(0) < deadline);
    if (r < 0)
        return oci_vm_explain(vm, r, err, "the guest agent did not answer");
    if (vm->template_pending) { /* the agent is up, nothing mounted: this VM is the template */
        wisp_agent_close(*agent);
        *agent = NULL;
        oci_vm_template_commit(vm, a->c);
        if ((r = wisp_agent_connect(vm->vsock_path, deadline, agent, err)) < 0)
            return oci_vm_explain(vm, r, err, "the guest agent did not answer after the snapshot");
    }
    json_object_set_new(a->info, "restored", json_boolean(vm->restored));
    if (vm->restored) /* the host's part of a start; the rest is the guest's (docs/oci.md) */
        json_object_set_new(a->info, "restore_us", json_integer(vm->restore_us));
    if (vm->tmpl.dir[0])
        json_object_set_new(a->info, "template", json_string(vm->tmpl.dir));
    if (have_net) {
        oci_agent_network_from_netif(&nif, &net);
        if ((r = wisp_agent_network(*agent, &net.n, deadline, err)) < 0)
            return r;
    }
    r = oci_agent_container_from_spec(a->c->id, a->spec, &ctr, err);
    /* the guest's RNG reseeded from the host's before the container exists: a restored
     * template's clones would otherwise share its state (docs/snapshot.md) */
    uint8_t seed[64];
    if (r == 0 && getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        r = wisp_err_sys(err, errno, "getrandom for the guest's RNG seed");
    ctr.c.seed = seed;
    ctr.c.seed_len = sizeof(seed);
    if (r == 0)
        r = wisp_agent_container_create(*agent, &ctr.c, deadline, err);
    /* Restored: the guest may take the restore's vsock transport reset (docs/vsock.md,
     * "Snapshots") after its agent accepted this connection, which the reset then closes (a
     * CI run's oci-template: "no answer to CONTAINER_CREATE (connection closed)"). Once more
     * on a new connection; a container that exists then is the first request's, whole (the
     * agent answers after its last step, and adds no container whose setup failed). */
    if ((r == -ECONNRESET || r == -EPIPE) && vm->restored) {
        wisp_agent_close(*agent);
        *agent = NULL;
        *err = (struct wisp_err){0};
        r = wisp_agent_connect(vm->vsock_path, deadline, agent, err);
        if (r == 0)
            r = wisp_agent_container_create(*agent, &ctr.c, deadline, err);
        if (r == -EEXIST)
            r = 0;
    }
    oci_agent_container_free(&ctr);
    if (r < 0)
        return r;
    pipes[0] = !a->spec->terminal && !is_dev_null(0);
    pipes[1] = !a->spec->terminal && !is_dev_null(1);
    pipes[2] = !a->spec->terminal && !is_dev_null(2);
    if ((r = oci_agent_process_from_json(a->spec->process, pipes, &proc, err)) < 0)
        return r;
    if (a->pty_slave >= 0) {
        struct winsize ws;
        if (ioctl(a->pty_slave, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
            proc.p.rows = ws.ws_row;
            proc.p.cols = ws.ws_col;
        }
    }
    if ((r = wisp_agent_process_create(*agent, a->c->id, "", &proc.p, &gpid, deadline, err)) < 0)
        return r;
    json_object_set_new(a->info, "guest_pid", json_integer(gpid));
    *io = (struct wisp_agent_stdio_pump){-1, -1, -1, -1, -1, -1};
    if (a->spec->terminal) {
        r = wisp_agent_attach(vm->vsock_path, a->c->id, "", WISP_AGENT_STREAM_PTY, deadline,
                              &io->stdin_conn, err);
        io->stdout_conn = io->stdin_conn;
        io->in_fd = io->out_fd = a->pty_slave;
        return r;
    }
    for (int k = 0; k < 3 && r == 0; k++) {
        int *conn = k == 0 ? &io->stdin_conn : k == 1 ? &io->stdout_conn : &io->stderr_conn;
        if (!pipes[k])
            continue;
        r = wisp_agent_attach(vm->vsock_path, a->c->id, "", (enum wisp_agent_stream)k, deadline,
                              conn, err);
    }
    io->in_fd = pipes[0] ? 0 : -1;
    io->out_fd = pipes[1] ? 1 : -1;
    io->err_fd = pipes[2] ? 2 : -1;
    return r;
}

/* Closes every fd above 2 but those in keep (an engine's fds that runc's init would not keep
 * either: they must not stay open in the monitor or the VMM for as long as the container). */
void oci_close_other_fds(const int *keep, int n)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self = d ? dirfd(d) : -1;

    while (d && (e = readdir(d))) {
        int fd = atoi(e->d_name), k;
        if (fd <= 2 || fd == self || e->d_name[0] == '.')
            continue;
        for (k = 0; k < n && keep[k] != fd; k++)
            ;
        if (k == n)
            close(fd);
    }
    if (d)
        closedir(d);
}

/* A monitor's stderr is the container's: its own messages go to --log, else monitor.log. */
void oci_monitor_log_to_dir(const struct oci_container *c)
{
    static char path[PATH_MAX];

    if (oci_g.log_path && strcmp(oci_g.log_path, "/dev/stderr") != 0)
        return;
    oci_container_dir(c->id, path, sizeof(path));
    strncat(path, "/monitor.log", sizeof(path) - strlen(path) - 1);
    oci_g.log_path = path;
}

void oci_monitor_main(struct oci_monitor_args *a)
{
    struct oci_vm vm;
    struct wisp_agent *agent = NULL;
    struct wisp_agent_stdio_pump io;
    struct wisp_err err = {0};
    sigset_t set;
    int status = 0, code, r;
    char *info;

    int keep[] = {a->ready_fd, a->pty_slave, a->c->dirfd};

    oci_close_other_fds(keep, 3);
    setsid();
    if (a->pty_slave >= 0) {
        int null = open("/dev/null", O_RDWR);
        ioctl(a->pty_slave, TIOCSCTTY, 0); /* so that a resize of the master sends SIGWINCH */
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
        if (null > 2)
            close(null);
    }
    block_signals(&set); /* before any child: they unblock what they need */
    oci_monitor_log_to_dir(a->c);
    oci_vm_init(&vm, a->c, a->guest);
    if (vm.jail_root[0])
        json_object_set_new(a->info, "jail_root", json_string(vm.jail_root));
    r = prepare(a, &vm, &agent, &io, &err);
    if (r < 0) {
        report(a->ready_fd, "error %s\n", err.msg);
        oci_vm_stop(&vm, agent);
        _exit(1);
    }
    info = json_dumps(a->info, JSON_COMPACT);
    report(a->ready_fd, "ok %s\n", info ? info : "{}");
    free(info);
    close(a->ready_fd);

    oci_forward_signals(vm.vsock_path, a->c->id, "", a->pty_slave);

    r = wisp_agent_pump_and_wait(agent, a->c->id, "", &io, &status, WISP_AGENT_NO_DEADLINE, &err);
    if (r < 0) {
        oci_logf("error", "container %s: %s", a->c->id, err.msg);
        status = SIGKILL; /* the VM went away under the container: as if killed */
    }
    code = oci_wait_status_code((unsigned)status);
    oci_vm_stop(&vm, agent);
    _exit(code);
}
