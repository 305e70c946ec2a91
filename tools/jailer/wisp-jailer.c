/*
 * wisp-jailer: runs wisp-vmm (or --exec-file) in a jail, Firecracker's jailer done for wisp
 * (docs/wisp-jailer.md): <base>/<exec-name>/<id>/root with hard links (or bind mounts) of the
 * exec file and the --file files, /dev/kvm and /dev/net/tun nodes only, new mount, ipc, uts and
 * (--new-pid-ns) pid namespaces, --netns joined, the VM's cgroups, rlimits, every fd closed,
 * then the exec file run with --uid/--gid. The jailer stays outside as the VM's reaper: when the
 * VM's last process has ended it removes the jail directory and the cgroups and exits with the
 * VM's status.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/parse.h"
#include "jail/jail.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

static const char usage_text[] =
    "usage: wisp-jailer --id ID --exec-file PATH --uid UID --gid GID [options] -- [VMM args]\n"
    "\n"
    "Runs PATH (wisp-vmm) jailed: in <base>/<exec-name>/<ID>/root, new mount, ipc and uts\n"
    "namespaces, as UID:GID with no capability; the VMM's own arguments follow \"--\" (paths\n"
    "in them are the jail's). The jailer waits for the VM and removes the jail when it ends.\n"
    "Firecracker's jailer's options where the two overlap; see docs/wisp-jailer.md.\n"
    "\n"
    "    --id ID                 the VM's id: 1 to 64 letters, digits and '-'; passed on as --id\n"
    "    --exec-file PATH        the VMM to run (an executable regular file, statically linked)\n"
    "    --uid UID --gid GID     the unprivileged user and group it runs as (numeric, not 0)\n"
    "    --chroot-base-dir DIR   where jails are made (default " JAIL_DEFAULT_BASE ")\n"
    "    --netns PATH            join this network namespace (e.g. /run/netns/NAME)\n"
    "    --cgroup FILE=VALUE     write VALUE into the VM's cgroup file FILE (cpu.shares=512,\n"
    "                            pids.max=64, memory.limit_in_bytes=...); repeatable\n"
    "    --cgroup-version 1|2    1 (default): a cgroup per controller named, under\n"
    "                            /sys/fs/cgroup/<controller>; 2: one under the cgroup2 mount\n"
    "    --parent-cgroup NAME    the cgroups' parent (default: the exec file's name)\n"
    "    --resource-limit no-file=N|fsize=N|nproc=N\n"
    "                            an rlimit of the VMM (repeatable; default no-file=2048)\n"
    "    --daemonize             detach: stdio to /dev/null, a new session; the jailer exits 0\n"
    "                            once the VMM runs, and its reaper removes the jail later\n"
    "    --new-pid-ns            the VMM is pid 1 of a new pid namespace\n"
    "    --mount-proc            (wisp) a proc file system at the jail's /proc showing only the\n"
    "                            pids of that namespace (subset=pid, hidepid=invisible): for a\n"
    "                            9p share (reopens files by /proc/self/fd); needs --new-pid-ns\n"
    "    --file HOST[:JAILPATH]  (wisp) make HOST available at JAILPATH (default /<basename>):\n"
    "                            a hard link, or a bind mount across file systems; repeatable.\n"
    "                            Ownership is HOST's: the VMM opens it after its drop only if\n"
    "                            UID may (what it opens before, it opens as root). A directory\n"
    "                            is always bind-mounted (nosuid, nodev)\n"
    "    --ro-file HOST[:JAILPATH]\n"
    "                            (wisp) the same, always a read-only bind mount (never a hard\n"
    "                            link: writes fail even with CAP_DAC_OVERRIDE)\n"
    "    --keep-caps CAP,...     (wisp) passed on to wisp-vmm: it becomes UID before opening\n"
    "                            anything and keeps exactly these file capabilities (chown,\n"
    "                            dac_override, dac_read_search, fowner, fsetid: a 9p share\n"
    "                            served as UID). No hard link is made then: the exec file is\n"
    "                            a read-only bind mount, each --file a bind mount\n"
    "    -h, --help              print this text and exit\n"
    "\n"
    "EXIT STATUS\n"
    "    the VMM's, or 1 (runtime error) or 2 (usage error: a bad option, id or path, a missing\n"
    "    netns, a symlink in the base directory); nothing of the jail is left after either\n";

static int usage_error(const struct wisp_err *err)
{
    fprintf(stderr, "wisp-jailer: %s\n", err->msg);
    return EXIT_USAGE;
}

int jailer_run(const struct jail_options *o, struct wisp_err *err, bool *usage);

int main(int argc, char **argv)
{
    struct jail_options o;
    struct wisp_err err = {0};
    int r = jail_parse(argc, argv, &o, &err);
    if (r == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (r < 0)
        return usage_error(&err);
    bool usage = false;
    r = jailer_run(&o, &err, &usage);
    if (r < 0) {
        fprintf(stderr, "wisp-jailer: %s\n", err.msg);
        return usage ? EXIT_USAGE : EXIT_RUNTIME;
    }
    return r;
}
