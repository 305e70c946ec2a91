/* wisp-agent's processes: create (a child set up and waiting), start (execve), wait, signal,
 * resize, delete; runc's create/start split (docs/agent-protocol.md, "Processes"). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* What the child reports on its setup socket: 0 = ready (or nothing: execve succeeded). */
struct sync_msg {
    int32_t errnum;
    char what[256];
};

struct proc *proc_find(struct agent *ag, struct container *c, const char *exec_id)
{
    for (struct proc *p = ag->procs; p; p = p->next)
        if (p->ctr == c && strcmp(p->exec_id, exec_id) == 0)
            return p;
    return NULL;
}

static struct proc *proc_lookup(struct agent *ag, const struct wa_msg *m, struct wisp_err *err)
{
    struct container *c = container_find(ag, m->container);
    struct proc *p = c ? proc_find(ag, c, m->exec_id) : NULL;

    if (!c)
        wisp_err_set(err, ENOENT, "no container '%s'", m->container);
    else if (!p)
        wisp_err_set(err, ENOENT, "no process '%s' in container '%s'", m->exec_id, m->container);
    return p;
}

/* --- the child */

static void child_fail(int sync, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
static void child_fail(int sync, int errnum, const char *fmt, ...)
{
    struct sync_msg msg = {.errnum = errnum ? errnum : EIO};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg.what, sizeof(msg.what), fmt, ap);
    va_end(ap);
    if (errnum)
        snprintf(msg.what + strlen(msg.what), sizeof(msg.what) - strlen(msg.what), ": %s",
                 strerror(errnum));
    (void)!write(sync, &msg, sizeof(msg));
    _exit(127);
}

static void mkdir_p(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    mkdir(path, 0755);
}

/* args[0] found in PATH (from the process's environment) unless it holds a '/'. */
static int find_exe(const char *name, char **env, char *out, size_t size)
{
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    int last = ENOENT;

    if (strchr(name, '/')) {
        snprintf(out, size, "%s", name);
        return access(out, X_OK) == 0 ? 0 : errno;
    }
    for (char **e = env; e && *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);

        if ((size_t)snprintf(out, size, "%.*s/%s", (int)len, len ? path : ".", name) < size) {
            if (access(out, X_OK) == 0)
                return 0;
            if (errno != ENOENT && errno != ENOTDIR)
                last = errno;
        }
        path += len + (colon ? 1 : 0);
    }
    return last;
}

struct child_args {
    const struct wa_msg *m;
    struct proc *p;
    int sync;     /* the child's end of the setup socket */
    int stdio[3]; /* the child's ends of the pipes (or -1: /dev/null) */
    int pty_slave;
    char **argv, **envp;
};

static void child_stdio(struct child_args *a)
{
    if (a->pty_slave >= 0) {
        if (ioctl(a->pty_slave, TIOCSCTTY, 0) < 0)
            child_fail(a->sync, errno, "%s", "TIOCSCTTY");
        for (int i = 0; i < 3; i++)
            if (dup2(a->pty_slave, i) < 0)
                child_fail(a->sync, errno, "%s", "dup2 of the terminal");
        return;
    }
    for (int i = 0; i < 3; i++) {
        int fd = a->stdio[i] >= 0 ? a->stdio[i] : open("/dev/null", O_RDWR);

        if (fd < 0 || dup2(fd, i) < 0)
            child_fail(a->sync, errno, "%s", "stdio");
    }
}

static void child_identity(struct child_args *a)
{
    const struct wisp_agent_process *pr = &a->m->process;

    for (size_t i = 0; i < pr->nrlimits; i++) {
        struct rlimit rl = {.rlim_cur = pr->rlimits[i].soft, .rlim_max = pr->rlimits[i].hard};

        if (setrlimit(wa_rlimit_from_name(pr->rlimits[i].type), &rl) < 0)
            child_fail(a->sync, errno, "setrlimit %s", pr->rlimits[i].type);
    }
    umask(pr->has_umask ? pr->umask : 022);
    if (setgroups(pr->ngids, pr->additional_gids) < 0)
        child_fail(a->sync, errno, "%s", "setgroups");
    if (setgid(pr->gid) < 0)
        child_fail(a->sync, errno, "%s", "setgid");
    if (setuid(pr->uid) < 0)
        child_fail(a->sync, errno, "%s", "setuid");
    if (pr->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(a->sync, errno, "%s", "PR_SET_NO_NEW_PRIVS");
}

static void __attribute__((noreturn)) child_main(struct child_args *a)
{
    const struct wisp_agent_process *pr = &a->m->process;
    struct sync_msg ready = {0};
    char cwd[WISP_AGENT_PATH_MAX + 1], exe[WISP_AGENT_PATH_MAX + 1];
    sigset_t none;
    char go;
    int e;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    if (setsid() < 0)
        child_fail(a->sync, errno, "%s", "setsid");
    child_stdio(a);
    if (dup2(a->sync, 3) < 0)
        child_fail(a->sync, errno, "%s", "dup2");
    a->sync = 3;
    close_range(4, ~0u, 0);
    fcntl(3, F_SETFD, FD_CLOEXEC); /* execve closes it: the agent reads the end of file */
    if (chdir(a->p->ctr->root) < 0 || chroot(".") < 0)
        child_fail(a->sync, errno, "chroot %s", a->p->ctr->root);
    snprintf(cwd, sizeof(cwd), "%s", pr->cwd ? pr->cwd : "/");
    mkdir_p(cwd);
    if (chdir(cwd) < 0)
        child_fail(a->sync, errno, "cwd %s", cwd);
    child_identity(a);
    if ((e = find_exe(a->argv[0], a->envp, exe, sizeof(exe))) != 0)
        child_fail(a->sync, e, "executable '%s'", a->argv[0]);
    if (write(a->sync, &ready, sizeof(ready)) != sizeof(ready))
        _exit(127);
    if (read(a->sync, &go, 1) != 1)
        _exit(127); /* deleted before it started */
    execve(exe, a->argv, a->envp);
    child_fail(a->sync, errno, "execve %s", exe);
    _exit(127);
}

/* --- the agent's side */

static char **null_terminated(const char **v, size_t n)
{
    char **out = calloc(n + 1, sizeof(*out));

    if (out)
        memcpy(out, v, n * sizeof(*out));
    return out;
}

static int open_pty(struct proc *p, const struct wa_msg *m, int *slave, struct wisp_err *err)
{
    char path[512];
    struct winsize ws = {.ws_row = m->process.rows, .ws_col = m->process.cols};
    int master;

    /* the container's own devpts (its /dev/pts) when it has one, so the slave is named there */
    snprintf(path, sizeof(path), "%s/dev/pts/ptmx", p->ctr->root);
    master = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0)
        master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0)
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0)
        return wisp_err_sys(err, errno, "a terminal: /dev/ptmx");
    if (unlockpt(master) < 0 || (*slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY)) < 0) {
        int e = errno;

        close(master);
        return wisp_err_sys(err, e, "a terminal: its slave");
    }
    if (ws.ws_row && ws.ws_col)
        ioctl(master, TIOCSWINSZ, &ws);
    p->pty_master = master;
    return 0;
}

static int make_stdio(struct proc *p, const struct wa_msg *m, struct child_args *a,
                      struct wisp_err *err)
{
    for (int i = 0; i < 3; i++) {
        int fds[2];

        if (m->process.stdio[i] != WISP_AGENT_STDIO_PIPE)
            continue;
        if (pipe2(fds, O_CLOEXEC) < 0)
            return wisp_err_sys(err, errno, "pipe");
        p->stdio_fd[i] = fds[i == 0 ? 1 : 0];
        a->stdio[i] = fds[i == 0 ? 0 : 1];
        fcntl(p->stdio_fd[i], F_SETFL, O_NONBLOCK);
    }
    return 0;
}

static struct proc *proc_new(struct container *c, const char *exec_id)
{
    struct proc *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->ctr = c;
    snprintf(p->exec_id, sizeof(p->exec_id), "%s", exec_id);
    p->sync_fd = p->pty_master = -1;
    for (int i = 0; i < 3; i++)
        p->stdio_fd[i] = -1;
    return p;
}

static void close_child_ends(struct child_args *a)
{
    for (int i = 0; i < 3; i++)
        if (a->stdio[i] >= 0)
            close(a->stdio[i]);
    if (a->pty_slave >= 0)
        close(a->pty_slave);
    if (a->sync >= 0)
        close(a->sync);
    free(a->argv);
    free(a->envp);
}

static int check_create(struct agent *ag, const struct wa_msg *m, struct container **out,
                        struct wisp_err *err)
{
    struct container *c = container_find(ag, m->container);
    struct proc *init;

    if (!c)
        return wisp_err_set(err, ENOENT, "no container '%s'", m->container);
    if (proc_find(ag, c, m->exec_id))
        return wisp_err_set(err, EEXIST, "container '%s' has a process '%s' already", m->container,
                            m->exec_id);
    init = proc_find(ag, c, "");
    if (m->exec_id[0] && (!init || init->state == PROC_EXITED))
        return wisp_err_set(err, ESRCH, "container '%s' has no running process to exec beside",
                            m->container);
    *out = c;
    return 0;
}

int proc_create(struct agent *ag, struct conn *conn, const struct wa_msg *m, struct wisp_err *err)
{
    struct child_args a = {.m = m, .sync = -1, .stdio = {-1, -1, -1}, .pty_slave = -1};
    struct container *c = NULL;
    struct proc *p;
    int sv[2], r;
    pid_t pid;

    if ((r = check_create(ag, m, &c, err)) < 0)
        return r;
    if (!(p = proc_new(c, m->exec_id)))
        return wisp_err_set(err, ENOMEM, "process");
    a.p = p;
    p->terminal = m->process.terminal;
    a.argv = null_terminated(m->process.args, m->process.nargs);
    a.envp = null_terminated(m->process.env, m->process.nenv);
    r = !a.argv || !a.envp ? wisp_err_set(err, ENOMEM, "arguments") : 0;
    if (r == 0)
        r = p->terminal ? open_pty(p, m, &a.pty_slave, err) : make_stdio(p, m, &a, err);
    if (r == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        r = wisp_err_sys(err, errno, "socketpair");
    if (r == 0) {
        p->sync_fd = sv[0];
        a.sync = sv[1];
        pid = fork();
        if (pid == 0)
            child_main(&a);
        if (pid < 0)
            r = wisp_err_sys(err, errno, "fork");
        p->pid = pid;
    }
    close_child_ends(&a);
    if (r < 0) {
        proc_free(ag, p);
        return r;
    }
    fcntl(p->sync_fd, F_SETFL, O_NONBLOCK);
    container_add_session(c, p->pid);
    p->state = PROC_SETUP;
    p->next = ag->procs;
    ag->procs = p;
    pending_add(ag, conn, m, p);
    return 1;
}

int proc_start(struct agent *ag, struct conn *conn, const struct wa_msg *m, struct wisp_err *err)
{
    struct proc *p = proc_lookup(ag, m, err);

    if (!p)
        return -err->errnum;
    if (p->state == PROC_SETUP)
        return wisp_err_set(err, EBUSY, "process '%s' is still being created", p->exec_id);
    if (p->state != PROC_CREATED)
        return wisp_err_set(err, EALREADY, "process '%s' was started already", p->exec_id);
    if (write(p->sync_fd, "S", 1) != 1)
        return wisp_err_sys(err, errno, "starting '%s'", p->exec_id);
    p->state = PROC_STARTING;
    pending_add(ag, conn, m, p);
    return 1;
}

/* Reads the child's report: ready (SETUP), or execve's success (end of file) or failure.
 * Returns true when p was freed (a failed creation). */
bool proc_sync_event(struct agent *ag, struct proc *p)
{
    struct sync_msg msg;
    struct wisp_err err = {0};
    struct wa_msg ans = {0};
    ssize_t n = read(p->sync_fd, &msg, sizeof(msg));

    if (n < 0 && errno == EAGAIN)
        return false;
    if (n == (ssize_t)sizeof(msg) && msg.errnum == 0 && p->state == PROC_SETUP) {
        p->state = PROC_CREATED;
        ans.pid = (uint32_t)p->pid;
        wa_set(&ans, WT_PID);
        pending_settle(ag, p, WA_PROCESS_CREATE, &ans, NULL);
        return false;
    }
    close(p->sync_fd);
    p->sync_fd = -1;
    if (n == (ssize_t)sizeof(msg) && msg.errnum) {
        msg.what[sizeof(msg.what) - 1] = '\0';
        wisp_err_set(&err, msg.errnum, "%s", msg.what);
    } else if (p->state == PROC_SETUP) {
        wisp_err_set(&err, EIO, "the process ended while it was being set up");
    }
    if (p->state == PROC_STARTING && !err.errnum) {
        p->state = PROC_RUNNING;
        pending_settle(ag, p, WA_PROCESS_START, NULL, NULL);
        return false;
    }
    /* a failure: creation's ends the process record (the id may be used again); start's
     * leaves an ended process (status 127) for WAIT */
    if (p->state == PROC_SETUP) {
        pending_settle(ag, p, WA_PROCESS_CREATE, NULL, &err);
        kill(p->pid, SIGKILL);
        proc_free(ag, p);
        return true;
    }
    p->state = PROC_RUNNING; /* until reaped */
    pending_settle(ag, p, WA_PROCESS_START, NULL, &err);
    return false;
}

static void proc_ended(struct agent *ag, struct proc *p, int status)
{
    struct wa_msg ans = {0};

    /* its last report first: created or started, or why not (a failed creation frees p) */
    if (p->sync_fd >= 0 && proc_sync_event(ag, p))
        return;
    p->state = PROC_EXITED;
    p->status = status;
    ans.status = (uint32_t)status;
    wa_set(&ans, WT_STATUS);
    pending_settle(ag, p, WA_WAIT, &ans, NULL);
    if (!p->exec_id[0]) /* the container's own process: the rest go with it */
        container_kill_all(ag, p->ctr, SIGKILL);
}

void proc_reap(struct agent *ag)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (struct proc *p = ag->procs; p; p = p->next) {
            if (p->pid == pid && p->state != PROC_EXITED) {
                proc_ended(ag, p, status);
                break;
            }
        }
    }
}

int proc_wait(struct agent *ag, struct conn *conn, const struct wa_msg *m, struct wa_msg *ans,
              struct wisp_err *err)
{
    struct proc *p = proc_lookup(ag, m, err);

    if (!p)
        return -err->errnum;
    if (p->state != PROC_EXITED) {
        pending_add(ag, conn, m, p);
        return 1;
    }
    ans->status = (uint32_t)p->status;
    wa_set(ans, WT_STATUS);
    return 0;
}

int proc_signal(struct agent *ag, const struct wa_msg *m, struct wisp_err *err)
{
    struct container *c = container_find(ag, m->container);
    struct proc *p;

    if (!c)
        return wisp_err_set(err, ENOENT, "no container '%s'", m->container);
    if (m->all) {
        container_kill_all(ag, c, (int)m->signo);
        return 0;
    }
    if (!(p = proc_lookup(ag, m, err)))
        return -err->errnum;
    if (p->state == PROC_EXITED)
        return wisp_err_set(err, ESRCH, "process '%s' has ended", p->exec_id);
    if (kill(p->pid, (int)m->signo) < 0)
        return wisp_err_sys(err, errno, "kill %d", p->pid);
    return 0;
}

int proc_resize(struct agent *ag, const struct wa_msg *m, struct wisp_err *err)
{
    struct winsize ws = {.ws_row = m->process.rows, .ws_col = m->process.cols};
    struct proc *p = proc_lookup(ag, m, err);

    if (!p)
        return -err->errnum;
    if (p->pty_master < 0)
        return wisp_err_set(err, ENOTTY, "process '%s' has no terminal", p->exec_id);
    if (ioctl(p->pty_master, TIOCSWINSZ, &ws) < 0)
        return wisp_err_sys(err, errno, "TIOCSWINSZ");
    return 0;
}

void proc_free(struct agent *ag, struct proc *p)
{
    struct wisp_err err = {.errnum = ECANCELED};

    snprintf(err.msg, sizeof(err.msg), "process '%s' was deleted", p->exec_id);
    pending_settle(ag, p, 0, NULL, &err);
    stream_close_for(ag, p);
    for (struct proc **pp = &ag->procs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if (p->sync_fd >= 0)
        close(p->sync_fd);
    if (p->pty_master >= 0)
        close(p->pty_master);
    for (int i = 0; i < 3; i++)
        if (p->stdio_fd[i] >= 0)
            close(p->stdio_fd[i]);
    p->ctr = NULL;
    free(p);
}

int proc_delete(struct agent *ag, const struct wa_msg *m, struct wisp_err *err)
{
    struct proc *p = proc_lookup(ag, m, err);

    if (!p)
        return -err->errnum;
    if (p->state != PROC_EXITED && p->state != PROC_CREATED)
        return wisp_err_set(err, EBUSY, "process '%s' is running", p->exec_id);
    if (p->state == PROC_CREATED)
        kill(p->pid, SIGKILL); /* never started: its child goes (reaped as an orphan pid) */
    proc_free(ag, p);
    return 0;
}
