/* VM templates (template.c, docs/oci.md "Templates"): a booted, paused guest with its agent,
 * snapshotted once per guest configuration (the first container's VM), restored by every
 * later container start. */
#ifndef WISP_OCI_TEMPLATE_H
#define WISP_OCI_TEMPLATE_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "common/err.h"
#include "host.h"

struct oci_template {
    const struct oci_guest *g;
    unsigned mem_mib, vcpus;
    const char *cmdline;
    char identity[4 * PATH_MAX + 2048]; /* what the template was made of, compared in full */
    char dir[PATH_MAX + 32];            /* <cache_dir>/<hash of identity> */
    char state[PATH_MAX + 48], mem[PATH_MAX + 48];
    ino_t state_ino; /* the state file found (a discard removes only that one) */
    int lock_fd;     /* the flock while this VM is being made the template */
};

/* The identity of the template for this guest (kernel, initramfs and wisp-vmm by their files'
 * identity, wisp-oci's version, memory, vCPUs, the kernel command line) and its paths. */
int oci_template_identity(struct oci_template *t, const struct oci_guest *g, unsigned mem_mib,
                          unsigned vcpus, const char *cmdline, struct wisp_err *err);
/* Takes the template's flock. 1: a usable template is there (t->state, t->mem; the lock is
 * let go). 0: there is none (a stale or damaged one was removed) and the lock stays held: the
 * caller boots the VM and, once its agent answers and before anything is mounted on the
 * rootfs share, calls oci_template_commit() with the VM's API socket (pause, snapshot, resume),
 * or oci_template_abandon(). */
int oci_template_lookup(struct oci_template *t, struct wisp_err *err);
/* jail_root: a jailed VMM's root on the host (it writes the snapshot there, and it is moved
 * into the cache), or NULL. */
int oci_template_commit(struct oci_template *t, const char *api_sock, const char *jail_root,
                        struct wisp_err *err);
void oci_template_abandon(struct oci_template *t);
/* The template did not load: it goes (if it is still the one found), the next get rebuilds. */
void oci_template_discard(const struct oci_template *t);

#endif
