/* wisp-jailer's parts (docs/wisp-jailer.md): the jail's directory tree, its cgroups, and the
 * options that describe them. */
#ifndef WISP_JAILER_JAIL_H
#define WISP_JAILER_JAIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define JAIL_MAX_FILES   32
#define JAIL_MAX_CGROUPS 32
#define JAIL_MAX_LIMITS  8
#define JAIL_ID_MAX      64

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
/* Removes what jail_build and jail_cgroups_create made (after the VM's last process ended). */
void jail_remove(struct jail *j, const struct jail_options *o);

#endif
