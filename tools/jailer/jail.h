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
};

struct jail_cgroup_setting {
    const char *file, *value; /* "cpu.shares", "512" */
};

struct jail_options {
    const char *id, *exec_file, *exec_name, *base_dir, *netns, *parent_cgroup;
    uint32_t uid, gid;
    bool has_uid, has_gid, daemonize, new_pid_ns;
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
};

/* An empty record (no fd open). */
void jail_init(struct jail *j);
/* Builds <base>/<exec-name>/<id>/root with the exec file, the files and the device nodes, every
 * step beneath the base directory with no symlink followed (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS). -EINVAL-class failures are the caller's usage errors. */
int jail_build(struct jail *j, const struct jail_options *o, struct wisp_err *err);
/* The VM's cgroups (one per controller named by --cgroup in v1, one directory in v2), with
 * their settings; pid is moved into them. */
int jail_cgroups_create(struct jail *j, const struct jail_options *o, pid_t pid,
                        struct wisp_err *err);
/* Removes what jail_build and jail_cgroups_create made (after the VM's last process ended). */
void jail_remove(struct jail *j, const struct jail_options *o);

#endif
