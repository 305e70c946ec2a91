/* wisp-oci's state directories: <root>/<id>/ holds state.json (runc's state plus wisp's part),
 * the lock, the monitor's control socket and the VM's sockets. */
#ifndef WISP_OCI_STATE_H
#define WISP_OCI_STATE_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "common/err.h"

struct oci_container {
    char id[1025];
    int dirfd;     /* <root>/<id>, O_PATH|O_DIRECTORY */
    int lockfd;    /* <root>/<id>/lock, flock()ed exclusively while open */
    json_t *state; /* state.json; NULL when it does not exist yet */
};

/* Opens (and locks) the container's directory. -ENOENT: no such container (no state.json:
 * runc's "container does not exist"); other errors fill err. */
int oci_container_open(const char *id, struct oci_container *c, struct wisp_err *err);
/* Makes <root>/<id> (mode 0700; the root too) and locks it: -EEXIST when it exists. */
int oci_container_new(const char *id, struct oci_container *c, struct wisp_err *err);
/* Writes state.json atomically (a temporary file, fsync, rename). */
int oci_container_save(struct oci_container *c, struct wisp_err *err);
void oci_container_close(struct oci_container *c);
/* Removes the directory and everything in it (no symlink followed); closes c. */
int oci_container_remove(struct oci_container *c, struct wisp_err *err);
/* Removes the directory name of the state directory with all in it (no symlink followed): what
 * a jailer killed with SIGKILL left. */
void oci_container_remove_subdir(const struct oci_container *c, const char *name);

/* The status now: "created", "running", "paused" as recorded while the monitor lives, else
 * "stopped" (a monitor that is gone, a zombie, or a pid reused since: start time differs).
 * *pid is the monitor's pid, 0 when stopped. */
const char *oci_container_status(struct oci_container *c, pid_t *pid);
/* The state as `runc state` prints it (a new reference). */
json_t *oci_container_public_state(struct oci_container *c);

/* The start time of a process (field 22 of /proc/PID/stat), and whether it is alive (not a
 * zombie). Returns 0 when there is no such process. */
unsigned long long oci_proc_start_time(pid_t pid, bool *alive);

/* "<dir path>/<name>" through /proc/self/fd, short enough for sun_path whatever the root. */
void oci_container_path(const struct oci_container *c, const char *name, char *buf, size_t len);
/* The state directory's real path (for the engines' pid files, the VMM's cwd). */
int oci_container_dir(const char *id, char *buf, size_t len);

/* Each container id under the root, sorted; returns the count (array of malloc'ed strings). */
int oci_list_ids(char ***ids, struct wisp_err *err);

#endif
