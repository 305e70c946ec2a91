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

#include "jail.h"

#define NSFS_MAGIC_NUMBER 0x6e736673
#define DEFAULT_NOFILE    2048

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
    fprintf(stderr, "wisp-jailer: %s: %s\n", what, strerror(errno));
    child.failed = 1;
    _exit(1);
}

static void child_limits(const struct jail_options *o)
{
    bool nofile_given = false; /* a no-file given replaces the default (under a lower hard
                                  limit, without CAP_SYS_RESOURCE, the default cannot be set) */
    for (unsigned i = 0; i < o->nr_limits; i++)
        nofile_given |= o->limits[i].resource == RLIMIT_NOFILE;
    struct rlimit nofile = {DEFAULT_NOFILE, DEFAULT_NOFILE};
    if (!nofile_given && setrlimit(RLIMIT_NOFILE, &nofile) < 0)
        child_fail("setrlimit no-file");
    for (unsigned i = 0; i < o->nr_limits; i++) {
        struct rlimit l = {o->limits[i].value, o->limits[i].value};
        if (setrlimit(o->limits[i].resource, &l) < 0)
            child_fail("--resource-limit");
    }
}

/* In its new mount namespace (made by the clone): the jail bind-mounted onto itself, the files
 * that could not be linked bind-mounted in, the tmpfs /dev, then pivot_root into it and the old
 * root detached. */
static void child_enter(const struct jail *j, const struct jail_options *o)
{
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        child_fail("mount / MS_SLAVE|MS_REC");
    if (mount(j->root, j->root, NULL, MS_BIND | MS_REC, NULL) < 0)
        child_fail("bind mount of the jail's root");
    for (unsigned i = 0; i < o->nr_files; i++) {
        char target[8192];
        snprintf(target, sizeof(target), "%s%s", j->root, o->files[i].jail_path);
        const struct jail_file *f = &o->files[i];
        if (j->bind[i] && mount(f->host, target, NULL, MS_BIND | (f->dir ? MS_REC : 0), NULL) < 0)
            child_fail(f->host);
        /* a directory: nothing in it runs or opens a host device; read-only: not even with
         * CAP_DAC_OVERRIDE (--keep-caps) */
        unsigned long flags = (f->ro ? MS_RDONLY : 0) | (f->dir ? MS_NOSUID | MS_NODEV : 0);
        if (j->bind[i] && flags &&
            mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | flags, NULL) < 0)
            child_fail(f->host);
    }
    /* the VMM's own pids only (the pid namespace of --new-pid-ns), nothing of /proc/sys or
     * the host's: a 9p server reopens files through /proc/self/fd */
    char proc[4200];
    snprintf(proc, sizeof(proc), "%s/proc", j->root);
    if (o->mount_proc && mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                               "subset=pid,hidepid=invisible") < 0)
        child_fail("--mount-proc: a proc file system (subset=pid) at the jail's /proc");
    const char *failed = jail_make_devices(j, o);
    if (failed)
        child_fail(failed);
    if (o->daemonize) {
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
            child_fail("/dev/null");
        close(null);
    }
    if (chdir(j->root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
        child_fail("pivot_root into the jail");
    if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        child_fail("detaching the host's root");
    if (sethostname(o->id, strlen(o->id)) < 0)
        child_fail("sethostname");
}

/* wisp-vmm's command line: /<exec-name> --id ID [args...] --uid UID --gid GID (made by the
 * jailer before the clone; lives until the jailer exits). */
static char **vmm_argv(const struct jail_options *o, struct wisp_err *err)
{
    static char uid[16], gid[16], path[300];
    snprintf(uid, sizeof(uid), "%u", o->uid);
    snprintf(gid, sizeof(gid), "%u", o->gid);
    snprintf(path, sizeof(path), "/%s", o->exec_name);
    char **argv = calloc((size_t)o->nr_vmm_args + 10, sizeof(*argv));
    if (!argv) {
        wisp_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    int n = 0;
    argv[n++] = path;
    argv[n++] = "--id";
    argv[n++] = (char *)o->id;
    for (int i = 0; i < o->nr_vmm_args; i++)
        argv[n++] = o->vmm_args[i];
    argv[n++] = "--uid";
    argv[n++] = uid;
    argv[n++] = "--gid";
    argv[n++] = gid;
    if (o->keep_caps) {
        argv[n++] = "--keep-caps";
        argv[n++] = (char *)o->keep_caps;
    }
    return argv;
}

static int child_main(void *unused)
{
    (void)unused;
    const struct jail *j = child.j;
    const struct jail_options *o = child.o;
    if (child.netns_fd >= 0 && setns(child.netns_fd, CLONE_NEWNET) < 0)
        child_fail("--netns: setns");
    child_enter(j, o);
    for (unsigned i = 0; i < j->nr_procs; i++) /* its cgroups: "0" is the writer itself */
        if (write(j->procs_fd[i], "0", 1) != 1)
            child_fail("joining the VM's cgroup (cgroup.procs)");
    child_limits(o);
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
    child.argv = vmm_argv(o, err);
    if (!child.argv)
        return -ENOMEM;
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
