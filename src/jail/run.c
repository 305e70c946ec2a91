/* A jail made in-process (jail.h, "run.c"): the steps wispd, wisp-oci and bench/launch share. */
#include <errno.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jail.h"

struct jail_run *jail_run_prepare(int argc, char **argv, struct wisp_err *err)
{
    struct jail_run *r = malloc(sizeof(*r)); /* its path arrays stay untouched until used */
    if (!r) {
        wisp_err_set(err, ENOMEM, "out of memory for a jail");
        return NULL;
    }
    jail_init(&r->jail);
    r->opts.nr_owned = 0;
    r->vmm_argv = NULL;
    int e = jail_parse(argc, argv, &r->opts, err);
    if (e > 0) /* --help: not a jail */
        e = wisp_err_set(err, EINVAL, "--help is not a jail");
    if (e == 0)
        e = jail_build(&r->jail, &r->opts, err);
    if (e == 0 && !(r->vmm_argv = jail_vmm_argv(&r->opts, &r->strings)))
        e = wisp_err_set(err, ENOMEM, "out of memory for wisp-vmm's command line");
    if (e < 0) {
        jail_run_free(r, true); /* what jail_build made */
        return NULL;
    }
    return r;
}

void jail_run_free(struct jail_run *r, bool remove)
{
    if (!r)
        return;
    if (remove)
        jail_remove(&r->jail, &r->opts);
    else
        jail_release(&r->jail);
    jail_options_free(&r->opts);
    free(r->vmm_argv);
    free(r);
}

pid_t jail_clone(void)
{
    /* glibc has no fork with flags: the raw clone copies the address space as fork does */
    return (pid_t)syscall(SYS_clone,
                          SIGCHLD | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID, NULL,
                          NULL, NULL, NULL);
}

const char *jail_run_exec(const struct jail_run *r, unsigned first_fd)
{
    const char *failed = jail_enter(&r->jail, &r->opts);
    if (!failed)
        failed = jail_limits(&r->opts);
    if (!failed && syscall(SYS_close_range, first_fd, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        failed = "close_range";
    if (failed)
        return failed;
    char *envp[] = {NULL};
    execve(r->vmm_argv[0], r->vmm_argv, envp);
    return r->opts.exec_file;
}
