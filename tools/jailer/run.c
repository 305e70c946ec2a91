/* wisp-jailer's processes: the reaper (the jailer itself, outside the jail: it makes the jail
 * and the cgroups, waits for the VM's last process and removes both), and the child that enters
 * the namespaces, pivots into the jail and becomes the VMM. */
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jail/jail.h"

#define NSFS_MAGIC_NUMBER 0x6e736673

int jailer_run(const struct jail_options *o, struct wisp_err *err, bool *usage);

/* The VMM's pid, for the reaper's signal handler (the one global: a handler has no argument). */
static volatile pid_t vmm_pid;

static void forward_signal(int sig)
{
    if (vmm_pid > 0)
        kill(vmm_pid, sig);
}

/* The child (clone with CLONE_VM | CLONE_VFORK: it runs on the jailer's memory, on its own
 * stack, while the jailer waits for its exec; no page table is copied). What it needs is made
 * before the clone; it only makes system calls and, on a failure, sets child.failed. */
static struct {
    const struct jail *j;
    const struct jail_options *o;
    int netns_fd;
    char **argv;
    sigset_t mask; /* the jailer's signal mask before it blocked everything for the clone */
    volatile int failed;
    _Alignas(16) char stack[64 << 10];
} child;

static void child_fail(const char *what)
{
    jail_fail("wisp-jailer", what);
    child.failed = 1;
    _exit(1);
}

static int child_main(void *unused)
{
    (void)unused;
    const struct jail *j = child.j;
    const struct jail_options *o = child.o;
    if (child.netns_fd >= 0 && setns(child.netns_fd, CLONE_NEWNET) < 0)
        child_fail("--netns: setns");
    const char *failed = NULL;
    if (o->daemonize) { /* the host's /dev/null: the jail has none */
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
            failed = "/dev/null";
        close(null);
    }
    if (!failed)
        failed = jail_enter(j, o);
    if (!failed)
        failed = jail_join_cgroups(j);
    if (!failed)
        failed = jail_limits(o);
    if (failed)
        child_fail(failed);
    /* every fd but 0-2 closes at the exec */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        child_fail("close_range");
    char *envp[] = {NULL};
    /* the VMM ends with its jailer, whoever kills the jailer: without cgroups nothing else
     * would find it (wisp-vmm re-arms this after its --uid drop, which clears it) */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        child_fail("PR_SET_PDEATHSIG");
    sigprocmask(SIG_SETMASK, &child.mask, NULL);
    execve(child.argv[0], child.argv, envp);
    child_fail(o->exec_file);
    return 1;
}

static int open_netns(const char *path, struct wisp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "--netns %s", path);
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0 || sf.f_type != NSFS_MAGIC_NUMBER) {
        close(fd);
        return wisp_err_set(err, EINVAL,
                            "--netns %s: not a namespace (/run/netns/NAME, "
                            "/proc/PID/ns/net)",
                            path);
    }
    return fd;
}

/* Waits for every descendant (the jailer is their subreaper); the VMM's status is the result. */
static int reap(pid_t pid)
{
    int status = 0, result = 1;
    for (;;) {
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            break;
        if (p == pid)
            result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return result;
}

/* --daemonize: the foreground process waits for the reaper's word (the VMM runs) and exits 0;
 * if the reaper ends first, with its status. Returns the write end in the reaper. */
static int daemonize(void)
{
    int st[2];
    if (pipe2(st, O_CLOEXEC) < 0)
        return -errno;
    pid_t p = fork();
    if (p < 0)
        return -errno;
    if (p > 0) {
        close(st[1]);
        char c;
        if (read(st[0], &c, 1) == 1)
            _exit(0);
        int status;
        waitpid(p, &status, 0);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
    }
    close(st[0]);
    setsid();
    return st[1];
}

/* The VMM: one clone that makes its mount, ipc, uts (and pid) namespaces and returns once it
 * has exec'd wisp-vmm (or failed, having said why). */
static int start_child(struct jail *j, const struct jail_options *o, int netns_fd,
                       struct wisp_err *err, bool *usage)
{
    int r = jail_cgroups_create(j, o, err);
    if (r < 0) {
        *usage = r == -EINVAL;
        return r;
    }
    static struct jail_vmm_argv strings; /* lives until the jailer exits */
    child.argv = jail_vmm_argv(o, &strings);
    if (!child.argv)
        return wisp_err_set(err, ENOMEM, "out of memory");
    child.j = j, child.o = o, child.netns_fd = netns_fd, child.failed = 0;
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &child.mask); /* no handler runs on the child's stack */
    int flags = CLONE_VM | CLONE_VFORK | SIGCHLD | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                (o->new_pid_ns ? CLONE_NEWPID : 0);
    pid_t pid = clone(child_main, child.stack + sizeof(child.stack), flags, NULL);
    int e = errno;
    vmm_pid = pid;
    sigprocmask(SIG_SETMASK, &child.mask, NULL);
    jail_close_procs(j);
    if (pid < 0)
        return wisp_err_sys(err, e, "clone (mount, ipc, uts%s namespaces)",
                            o->new_pid_ns ? ", pid" : "");
    if (child.failed) { /* the child said why on stderr */
        reap(pid);
        return wisp_err_set(err, EIO, "the VMM was not started");
    }
    return pid;
}

int jailer_run(const struct jail_options *o, struct wisp_err *err, bool *usage)
{
    int netns_fd = o->netns ? open_netns(o->netns, err) : -1;
    if (netns_fd < -1 || netns_fd == -EINVAL || (o->netns && netns_fd < 0)) {
        *usage = true;
        return netns_fd;
    }
    int daemon_fd = o->daemonize ? daemonize() : -1;
    if (o->daemonize && daemon_fd < 0)
        return wisp_err_sys(err, -daemon_fd, "--daemonize");
    struct jail j;
    jail_init(&j);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        return wisp_err_sys(err, errno, "PR_SET_CHILD_SUBREAPER");
    int r = jail_build(&j, o, err);
    if (r < 0) {
        *usage = r == -EINVAL;
        jail_remove(&j, o);
        return r;
    }
    struct sigaction sa = {.sa_handler = forward_signal};
    sigemptyset(&sa.sa_mask);
    for (int sig = SIGHUP; sig <= SIGTERM; sig++)
        if (sig == SIGHUP || sig == SIGINT || sig == SIGQUIT || sig == SIGTERM)
            sigaction(sig, &sa, NULL);
    pid_t pid = start_child(&j, o, netns_fd, err, usage);
    if (netns_fd >= 0)
        close(netns_fd);
    if (pid < 0) {
        jail_remove(&j, o);
        return pid;
    }
    if (daemon_fd >= 0) {
        if (write(daemon_fd, "0", 1) < 0) {
        }
        close(daemon_fd);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            close(null);
        }
    }
    int status = reap(pid);
    jail_remove(&j, o);
    return status;
}
