/* wisp-agent's process listing: every process in the sessions of a container's processes
 * (each starts with setsid; the kit's kernel has no pid namespace or cgroup to ask). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "common/cleanup.h"

struct stat_line {
    pid_t pid, ppid, sid;
    char state[2];
    char comm[64];
};

static ssize_t read_small(const char *path, char *buf, size_t size)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -1;
    n = read(fd, buf, size - 1);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

/* /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces or ')'. */
static int read_stat(pid_t pid, struct stat_line *st)
{
    char path[64], buf[1024], *open_paren, *close_paren;
    int ppid, pgrp, sid;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (read_small(path, buf, sizeof(buf)) <= 0)
        return -1;
    open_paren = strchr(buf, '(');
    close_paren = strrchr(buf, ')');
    if (!open_paren || !close_paren || close_paren < open_paren)
        return -1;
    *close_paren = '\0';
    snprintf(st->comm, sizeof(st->comm), "%s", open_paren + 1);
    if (sscanf(close_paren + 2, "%1s %d %d %d", st->state, &ppid, &pgrp, &sid) != 4)
        return -1;
    st->pid = pid;
    st->ppid = ppid;
    st->sid = sid;
    return 0;
}

static bool in_sessions(const struct container *c, pid_t sid)
{
    for (size_t i = 0; i < c->nsessions; i++)
        if (c->sessions[i] == sid)
            return true;
    return false;
}

void ps_foreach_in_sessions(struct container *c, void (*fn)(pid_t pid, void *opaque), void *opaque)
{
    DIR *d = opendir("/proc");
    struct dirent *e;

    if (!d)
        return;
    /* getsid(2): one system call per process instead of reading its stat file (each one
     * costs under an emulated guest kernel) */
    while ((e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name), sid;

        if (pid > 1 && pid != getpid() && (sid = getsid(pid)) > 0 && in_sessions(c, sid))
            fn(pid, opaque);
    }
    closedir(d);
}

struct ps_ctx {
    struct agent *ag;
    struct container *c;
    struct wa_msg *ans;
    char *arena;
    size_t used, cap;
    int error;
};

static const char *arena_add(struct ps_ctx *x, const char *s)
{
    size_t len = strlen(s) + 1;

    if (x->used + len > x->cap)
        return NULL;
    memcpy(x->arena + x->used, s, len);
    x->used += len;
    return x->arena + x->used - len;
}

static void cmdline_of(pid_t pid, const char *comm, char *out, size_t size)
{
    char path[64];
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    n = read_small(path, out, size);
    if (n <= 0) {
        snprintf(out, size, "[%s]", comm);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\0')
            out[i] = ' ';
    while (n > 0 && out[n - 1] == ' ')
        out[--n] = '\0';
}

static uint32_t uid_of(pid_t pid)
{
    char path[64], buf[2048], *line;
    unsigned uid = 0;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (read_small(path, buf, sizeof(buf)) > 0 && (line = strstr(buf, "\nUid:")))
        sscanf(line + 5, "%u", &uid);
    return uid;
}

static void add_entry(pid_t pid, void *opaque)
{
    struct ps_ctx *x = opaque;
    struct wisp_agent_ps_entry *e, *arr;
    char cmd[WISP_AGENT_CMD_MAX + 1];
    struct stat_line st;

    if (x->error || x->ans->nprocs >= WISP_AGENT_PROCS_MAX || read_stat(pid, &st) < 0)
        return;
    arr = realloc(x->ans->procs, (x->ans->nprocs + 1) * sizeof(*arr));
    if (!arr) {
        x->error = -ENOMEM;
        return;
    }
    x->ans->procs = arr;
    e = &arr[x->ans->nprocs];
    cmdline_of(pid, st.comm, cmd, sizeof(cmd));
    *e = (struct wisp_agent_ps_entry){
        .pid = (uint32_t)pid, .ppid = (uint32_t)st.ppid, .uid = uid_of(pid)};
    e->state = arena_add(x, st.state);
    e->cmd = arena_add(x, cmd);
    for (struct proc *p = x->ag->procs; p; p = p->next)
        if (p->ctr == x->c && p->pid == pid && p->state != PROC_EXITED)
            e->exec_id = arena_add(x, p->exec_id);
    if (!e->state || !e->cmd)
        x->error = -E2BIG;
    else
        x->ans->nprocs++;
}

int ps_collect(struct agent *ag, struct container *c, struct wa_msg *ans, char **arena,
               struct wisp_err *err)
{
    struct ps_ctx x = {.ag = ag, .c = c, .ans = ans, .cap = 512u << 10};

    x.arena = malloc(x.cap);
    if (!x.arena)
        return wisp_err_set(err, ENOMEM, "ps");
    *arena = x.arena;
    ps_foreach_in_sessions(c, add_entry, &x);
    if (x.error)
        return wisp_err_set(err, -x.error, "ps: too many processes");
    return 0;
}
