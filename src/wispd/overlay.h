/* Per-clone qcow2 overlays for clones of a VM with writable drives (overlay.c). */
#ifndef WISP_WISPD_OVERLAY_H
#define WISP_WISPD_OVERLAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct evloop_source;
struct vm;
struct wispd;

struct overlay_job {
    json_t *def;        /* the source's definition (its drives) */
    const char *img;    /* wisp-img */
    const char *dir;    /* the snapshot's directory: the copies and the overlays go there */
    const char *prefix; /* clone k is PREFIX-k */
    unsigned count;     /* clones 1 .. count */
    bool chown;         /* jailed clones: the files owned by uid, gid */
    uid_t uid;
    gid_t gid;
    void (*done)(struct overlay_job *j, bool ok, const char *msg); /* from the loop */
    /* the child's */
    int pidfd, msg_fd;
    struct evloop_source *src;
};

/* The source's writable drives can be cloned (ids usable in file names, images raw or qcow2
 * without a backing file): 0 with how many there are, or -errno with err. */
int overlay_check(const struct vm *vm, unsigned *nr_writable, struct wisp_err *err);
/* Clone `clone`'s overlay of drive `id`, and the drive's copy it is on, in dir. */
void overlay_paths(const char *dir, const char *clone, const char *id, char *overlay, char *backing,
                   size_t size);
/* Makes the copies and every clone's overlays in a child; j->done when it has ended. */
int overlay_job_start(struct wispd *d, struct overlay_job *j, struct wisp_err *err);
/* A removed VM's own overlays (the drives with "backing" under DIR/snapshots/) are deleted. */
void overlay_vm_removed(struct wispd *d, const struct vm *vm);

#endif
