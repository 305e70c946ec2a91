/* libwisp_jail: wisp-jailer's parts (docs/wisp-jailer.md), shared by wisp-jailer and by
 * wispd's in-process jail: its command line parsed into options (options.c), the jail's
 * directory tree and its cgroups (jail.c, cgroup.c), and the steps of the child that becomes
 * the VMM (enter.c). */
#ifndef WISP_JAILER_JAIL_H
#define WISP_JAILER_JAIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define JAIL_MAX_FILES    32
#define JAIL_MAX_CGROUPS  32
#define JAIL_MAX_LIMITS   8
#define JAIL_ID_MAX       64
#define JAIL_MAX_OWNED    104 /* what the parser allocated: 2 per file, 1 per cgroup, 2 */
#define JAIL_DEFAULT_BASE "/srv/jailer"

struct jail_file {
    const char *host;      /* the file to make available */
    const char *jail_path; /* absolute inside the jail, "/" + basename(host) by default */
    bool bind;             /* on another file system: bind-mounted in the jail's namespace */
    bool ro;               /* --ro-file: always a read-only bind mount, never a hard link */
    bool dir;              /* a directory: always a bind mount (nosuid, nodev) */
};

struct jail_cgroup_setting {
    const char *file, *value; /* "cpu.shares", "512" */
};

struct jail_options {
    const char *id, *exec_file, *exec_name, *base_dir, *netns, *parent_cgroup;
    const char *keep_caps; /* --keep-caps: passed on to wisp-vmm; no hard link is made then */
    uint32_t uid, gid;
    bool has_uid, has_gid, daemonize, new_pid_ns;
    bool mount_proc;    /* --mount-proc: /proc in the jail, its pids only (subset=pid) */
    int cgroup_version; /* 1 or 2 */
    struct jail_file files[JAIL_MAX_FILES];
    unsigned nr_files;
    struct jail_cgroup_setting cgroups[JAIL_MAX_CGROUPS];
    unsigned nr_cgroups;
    struct {
        int resource;
        uint64_t value;
    } limits[JAIL_MAX_LIMITS];
    unsigned nr_limits;
    char **vmm_args; /* after "--" */
    int nr_vmm_args;
    void *owned[JAIL_MAX_OWNED]; /* freed by jail_options_free */
    unsigned nr_owned;
};

/* What the jailer made, so that a failure or the VM's end removes exactly that. */
struct jail {
    int base_fd, exec_dir_fd; /* <base>, <base>/<exec-name> */
    bool made_id_dir;
    bool bind[JAIL_MAX_FILES];            /* files[i] is bind-mounted (another file system) */
    char root[4096];                      /* <base>/<exec-name>/<id>/root, as a host path */
    char cgroups[JAIL_MAX_CGROUPS][4096]; /* cgroup directories made, in order */
    unsigned nr_cgroups;
    int procs_fd[JAIL_MAX_CGROUPS]; /* their cgroup.procs, which the VMM writes itself into */
    unsigned nr_procs;
    dev_t kvm, tun; /* the host's /dev/kvm and /dev/net/tun (tun 0: none) */
};

/* options.c. wisp-jailer's command line (argv[0] is skipped, the VMM's arguments follow "--")
 * into *o, every path and id checked: 0, 1 for --help, or -EINVAL (a usage error) with err.
 * Strings point into argv or into allocations jail_options_free releases. */
int jail_parse(int argc, char **argv, struct jail_options *o, struct wisp_err *err);
void jail_options_free(struct jail_options *o);

/* enter.c: the child's steps between its clone (new mount, ipc, uts and maybe pid namespaces)
 * and its exec, system calls only (safe in a fork-like clone of a threaded process). Each
 * returns NULL, or what failed with errno set. jail_enter: the jail bind-mounted onto itself,
 * the files that could not be linked bind-mounted in, the tmpfs /dev, pivot_root into it, the
 * old root detached, the hostname. */
const char *jail_enter(const struct jail *j, const struct jail_options *o);
/* The rlimits (--resource-limit; no-file 2048 unless given). */
const char *jail_limits(const struct jail_options *o);
/* Writes the caller into the cgroups jail_cgroups_create opened. */
const char *jail_join_cgroups(const struct jail *j);
/* "PROG: WHAT: <errno's text>" on fd 2, with no allocation or lock. */
void jail_fail(const char *prog, const char *what);

/* wisp-vmm's command line in the jail: /<exec-name> --id ID [args...] --uid UID --gid GID
 * [--keep-caps CAPS]; its strings in *s and o; the array is malloc'ed (NULL: out of memory). */
struct jail_vmm_argv {
    char uid[16], gid[16], path[300];
};
char **jail_vmm_argv(const struct jail_options *o, struct jail_vmm_argv *s);

/* An empty record (no fd open). */
void jail_init(struct jail *j);
/* Builds <base>/<exec-name>/<id>/root with the exec file, the files and an empty dev/ (the child
 * mounts a tmpfs there with the device nodes: jail_make_devices), every step beneath the base
 * directory with no symlink followed (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS).
 * -EINVAL-class failures are the caller's usage errors. */
int jail_build(struct jail *j, const struct jail_options *o, struct wisp_err *err);
/* In the child, in its mount namespace, before pivot_root: a tmpfs on the jail's dev/ holding
 * kvm and net/tun (the host's numbers, UID:GID, 0600); it vanishes with the namespace. Sets
 * errno and returns what failed, or NULL. */
const char *jail_make_devices(const struct jail *j, const struct jail_options *o);
/* The VM's cgroups (one per controller named by --cgroup in v1, one directory in v2), with
 * their settings, and their cgroup.procs opened (procs_fd) for the VMM to join before its exec. */
int jail_cgroups_create(struct jail *j, const struct jail_options *o, struct wisp_err *err);
/* Closes the cgroup.procs fds (the VMM has joined). */
void jail_close_procs(struct jail *j);
/* Closes the record's fds and leaves the jail in place (another process removes it later). */
void jail_release(struct jail *j);
/* Removes what jail_build and jail_cgroups_create made (after the VM's last process ended). */
void jail_remove(struct jail *j, const struct jail_options *o);

/* run.c: a jail made in-process (wispd's VMs, wisp-oci's containers, bench/launch's in-proc):
 * wisp-jailer's command line parsed and checked, the tree built and wisp-vmm's command line in
 * it; then a fork-like clone into the jail's namespaces whose child takes wisp-jailer's child's
 * steps and execs wisp-vmm. */
struct jail_run {
    struct jail jail;
    struct jail_options opts;
    struct jail_vmm_argv strings;
    char **vmm_argv;
};
/* argv[0] is skipped, as by jail_parse. NULL with err (nothing made, nothing to free). */
struct jail_run *jail_run_prepare(int argc, char **argv, struct wisp_err *err);
/* Frees the run; with remove, the jail's tree and cgroups are removed too (the VM has ended),
 * else kept (jail_release: someone removes it later). NULL is fine. */
void jail_run_free(struct jail_run *r, bool remove);
/* fork()'s semantics (SIGCHLD, a copy of the address space, no atfork handler) with new mount,
 * ipc, uts and pid namespaces: the child is pid 1 of its own. */
pid_t jail_clone(void);
/* In the child: jail_enter, jail_limits, every fd from first_fd on marked close-on-exec, the
 * exec of wisp-vmm with an empty environment. Returns only on failure: what failed (errno
 * set), for jail_fail. System calls only. */
const char *jail_run_exec(const struct jail_run *r, unsigned first_fd);

#endif
