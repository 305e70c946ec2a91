/* Snapshots of a paused VM and restoring them (docs/snapshot.md): what the API's
 * PUT /snapshot/create and PUT /snapshot/load do, with Firecracker's parameters. */
#ifndef WISP_VMM_SNAPSHOT_H
#define WISP_VMM_SNAPSHOT_H

#include <stdbool.h>

#include "common/err.h"

struct vmm;

enum snapshot_type {
    SNAPSHOT_FULL, /* all of guest memory */
    SNAPSHOT_DIFF, /* the pages written since the last snapshot (KVM's dirty log) */
};

struct snapshot_create_params {
    const char *snapshot_path; /* the VM's state: vCPUs, irqchip, PIT, clock, devices */
    const char *mem_file_path; /* guest memory */
    enum snapshot_type type;
};

enum snapshot_mem_backend {
    SNAPSHOT_MEM_FILE, /* backend_path is the memory file: mapped MAP_PRIVATE, loaded on demand */
    SNAPSHOT_MEM_UFFD, /* backend_path is a unix socket: a handler serves page faults */
};

struct snapshot_net_override {
    const char *iface_id;      /* a NIC of the snapshot */
    const char *host_dev_name; /* the tap this restored VM uses instead */
    const char *guest_mac;     /* NULL, or the MAC its device offers instead (a clone's own) */
};

/* wisp's extension: a drive of the snapshot opens another image (a clone's own qcow2 overlay
 * on the snapshot's image, `wisp-img create -f qcow2 -b base -F raw overlay`). The image must
 * have the drive's size. */
struct snapshot_drive_override {
    const char *drive_id;     /* a drive of the snapshot */
    const char *path_on_host; /* the image this restored VM uses instead */
};

/* wisp's extension: a virtio-9p share of the snapshot serves another directory (a clone's own
 * root). The snapshot holds no fid of the share (docs/9p.md), so nothing the guest has open
 * refers to the old directory. */
struct snapshot_fs_override {
    const char *fs_id;        /* the share's id, or NULL: then */
    const char *tag;          /* its tag (exactly one of the two) */
    const char *path_on_host; /* the directory the share serves instead */
    int read_only;            /* 0 or 1; -1: as the snapshot's */
};

#define SNAPSHOT_MAX_OVERRIDES 16

struct snapshot_load_params {
    const char *snapshot_path;
    enum snapshot_mem_backend backend;
    const char *backend_path;
    bool resume_vm;
    bool track_dirty_pages;
    bool clock_realtime; /* kvmclock advanced by the real time since the snapshot */
    struct snapshot_net_override overrides[SNAPSHOT_MAX_OVERRIDES];
    unsigned nr_overrides;
    struct snapshot_drive_override drive_overrides[SNAPSHOT_MAX_OVERRIDES];
    unsigned nr_drive_overrides;
    struct snapshot_fs_override fs_overrides[SNAPSHOT_MAX_OVERRIDES];
    unsigned nr_fs_overrides;
    /* vsock_override {uds_path}: the clone's own socket; NULL: the snapshot's */
    const char *vsock_uds_path;
    /* vsock_override {guest_cid} (wisp's): the clone's own cid; 0: the snapshot's */
    uint64_t vsock_guest_cid;
};

/* Called on the main loop when a snapshot is written (result 0) or failed (-errno, err). */
typedef void (*snapshot_done_fn)(void *opaque, int result, const struct wisp_err *err);

/*
 * The VM must be paused (VMM_PAUSED); it stays paused. Asynchronous, because writing guest
 * memory takes time the main loop may not spend: the state is taken at once (vCPUs on their
 * threads, devices quiesced), the files are written by a worker thread, and done(opaque, ...)
 * runs on the main loop when both are complete; returns 0 then, or -errno at once (err says
 * why: not paused, a diff without dirty tracking, a path that cannot be created, a snapshot
 * already under way). Writes both files or neither (each is written under a temporary name and
 * renamed when complete). The VM cannot be resumed meanwhile; if it ends, the snapshot is
 * abandoned (no file left behind, done is not called). The strings of p are copied.
 */
int vmm_snapshot_create(struct vmm *v, const struct snapshot_create_params *p,
                        snapshot_done_fn done, void *opaque, struct wisp_err *err);
/* Only on a fresh process (VMM_NOT_STARTED, nothing configured that the snapshot would
 * contradict): builds the machine from the snapshot and leaves it paused, or running with
 * resume_vm. A wrong, damaged or incompatible file is an error naming it; nothing is started. */
int vmm_snapshot_load(struct vmm *v, const struct snapshot_load_params *p, struct wisp_err *err);

/* For struct vmm (vmm.c): a create under way (the VM may not resume); stopping one (the VM
 * ends: files removed, the worker joined) before the machine goes; freeing what the snapshot
 * code kept (a restored VM's configuration), after the machine. */
bool vmm_snapshot_busy(const struct vmm *v);
void vmm_snapshot_cancel(struct vmm *v);
void vmm_snapshot_free(struct vmm *v);

#endif
