/*
 * wisp-bench-spawn: one launch of a VMM, timed from a C parent (bench/launch/jailed.py; docs/
 * benchmarks.md, "Jailed launch"), so that the spawner's own cost is the same for every kind.
 *
 *   wisp-bench-spawn [--in-process] -- ARGV...
 *
 * Plain: vfork and exec ARGV (wisp-vmm, or wisp-jailer with its arguments). --in-process: ARGV
 * is a wisp-jailer command line, and the jail is made as wispd makes it: libwisp_jail parses and
 * checks it and builds the tree here, a fork-like clone makes the child's mount, ipc, uts and
 * pid namespaces, and the child enters the jail and execs the VMM; the jail is removed after.
 * The child's stdout is a pipe; prints "pid PID first_ms MS" once its first byte arrives, then
 * "wall_ms MS status N" when it has ended (and, in-process, its jail is gone).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jail/jail.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void __attribute__((noreturn)) child(int out, char **argv, const struct jail_run *j)
{
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(null, 2) < 0)
        _exit(126);
    if (!j) {
        execv(argv[0], argv);
        _exit(127);
    }
    jail_run_exec(j, 3);
    _exit(125);
}

int main(int argc, char **argv)
{
    static bool in_process; /* static: vfork may clobber a local */
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--in-process")) {
            in_process = true;
        } else {
            fprintf(stderr, "usage: wisp-bench-spawn [--in-process] -- ARGV...\n");
            return !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") ? 0 : 2;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "wisp-bench-spawn: no command after --\n");
        return 2;
    }
    char **cmd = argv + i + 1;
    int ncmd = argc - i - 1;
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return perror("pipe"), 1;
    static struct jail_run *j; /* static: vfork may clobber a local */
    double t0 = now_ms();
    pid_t pid;
    if (in_process) {
        struct wisp_err err = {0};
        if (!(j = jail_run_prepare(ncmd, cmd, &err))) {
            fprintf(stderr, "wisp-bench-spawn: %s\n", err.msg);
            return 1;
        }
        pid = jail_clone();
    } else {
        pid = vfork();
    }
    if (pid == 0)
        child(out[1], cmd, j);
    if (pid < 0)
        return perror("clone"), 1;
    close(out[1]);
    char b;
    ssize_t n = read(out[0], &b, 1);
    double first = now_ms() - t0;
    printf("pid %d first_ms %.3f byte %s\n", (int)pid, first, n == 1 && b == '!' ? "ok" : "bad");
    fflush(stdout);
    char sink[4096];
    while (read(out[0], sink, sizeof(sink)) > 0) {
    }
    int status = 0;
    waitpid(pid, &status, 0);
    jail_run_free(j, true);
    printf("wall_ms %.3f status %d\n", now_ms() - t0,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}
