/* wisp-vmm's privileges (--uid/--gid): what it gives up, and when (docs/security.md). */
#ifndef WISP_VMM_PRIVILEGES_H
#define WISP_VMM_PRIVILEGES_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* --uid/--gid: the user and group wisp-vmm runs as once what it needs is open. */
struct vmm_privileges {
    bool drop; /* both --uid and --gid were given */
    bool has_uid, has_gid;
    uint32_t uid, gid;
    uint64_t keep_caps; /* --keep-caps: the file capabilities kept as UID (a bit per CAP_*) */
    bool dropped;       /* vmm_privileges_drop() ran */
    int keep_fd;        /* > 2: the one inherited fd kept open (--api-sock-fd) */
};

/*
 * Call order (main thread):
 *   vmm_privileges_prepare()  right after the command line is parsed, before anything is opened
 *                             and before any thread exists (the settings below are per thread
 *                             and inherited): PR_SET_NO_NEW_PRIVS, the capability bounding set
 *                             and ambient set emptied, every inherited fd above 2 closed (but
 *                             keep_fd, the --api-sock-fd socket), the
 *                             environment cleared of everything but WISP_* variables
 *   vmm_privileges_drop()     once /dev/kvm, taps, images and sockets are open (before the vCPUs
 *                             run, or as soon as the API socket listens when the VM starts
 *                             later): setgroups([]), setresgid, setresuid (every thread, glibc),
 *                             then no capability left; idempotent
 * With keep_caps (--keep-caps) the drop is made in vmm_privileges_prepare() instead, while the
 * process has one thread (capabilities are per thread): every thread starts as UID with exactly
 * keep_caps in its permitted, effective and bounding sets, so that what is opened before the
 * drop is opened as UID too (wisp-jailer's nodes and wisp-oci's tap are UID's).
 * Both do nothing unless p->drop.
 */
int vmm_privileges_prepare(struct vmm_privileges *p, struct wisp_err *err);
int vmm_privileges_drop(struct vmm_privileges *p, struct wisp_err *err);

#endif
