/* qcow2 check and repair internals shared by qcow2_check.c and qcow2_rebuild.c. */
#ifndef WISP_BLOCK_QCOW2_CHECK_H
#define WISP_BLOCK_QCOW2_CHECK_H

#include "block/qcow2_int.h"

/* An entry the check found unusable; repair drops it. */
enum qcow2_bad_where {
    QCOW2_BAD_L1,      /* active L1 entry `index` */
    QCOW2_BAD_SNAP_L1, /* entry `index` of the L1 table at `table` (snapshot `snap`) */
    QCOW2_BAD_L2,      /* entry `index` of the L2 table at `table` */
};
struct qcow2_bad_entry {
    enum qcow2_bad_where where;
    uint64_t table;
    uint32_t index, snap;
};

struct qcow2_check {
    struct qcow2_state *s;
    struct qcow2_check_result *r;
    int fix;
    uint32_t *refs;     /* references to each cluster, counted from the tables */
    uint64_t nclusters; /* clusters of the file */
    uint8_t *active_l2; /* bit per cluster: an L2 table of the active L1 table */
    uint8_t *rb_valid;  /* per refcount table entry: the block can be used */
    uint64_t last_host; /* for fragmentation */
    bool rebuild;       /* the refcount structure is damaged */
    struct qcow2_bad_entry *bad;
    size_t nbad, capbad;
};

void qcow2_check_report(struct qcow2_check *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Makes every entry in c->bad read as zeroes (L2) or unallocated (L1). */
int qcow2_check_drop_entries(struct qcow2_check *c, struct wisp_err *err);
/* Writes a new refcount structure from c->refs into fresh clusters past the end of the file and
 * switches the header to it; the old structure is left unreferenced (free). */
int qcow2_rebuild_refcounts(struct qcow2_check *c, struct wisp_err *err);

#endif
