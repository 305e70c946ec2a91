/* The qcow2 format driver (QEMU's docs/interop/qcow2.txt): the block_driver and the extra entry
 * points wisp-img uses (create, check, compressed writes, internal snapshots, measure, rebase). */
#ifndef WISP_BLOCK_QCOW2_H
#define WISP_BLOCK_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"
#include "common/err.h"

/*
 * Ownership and call order. qcow2_driver is used through block_open()/block_close(); every
 * function below takes a block_dev opened with the qcow2 driver (bs->drv == &qcow2_driver) and
 * fails with -EINVAL otherwise. Functions that modify the image fail with -EROFS on a read-only
 * node. All of them are thread-safe with respect to concurrent I/O on the same node (they take
 * the driver's metadata lock). qcow2_create() works on a path and needs no open node.
 */
extern const struct block_driver qcow2_driver;

/* --- creation --- */
enum qcow2_prealloc {
    QCOW2_PREALLOC_OFF = 0,  /* only header, L1, refcount structures */
    QCOW2_PREALLOC_METADATA, /* every L2 table and data cluster allocated (not written) */
    QCOW2_PREALLOC_FALLOC,   /* metadata + posix_fallocate of the data area */
    QCOW2_PREALLOC_FULL,     /* metadata + zeroes written to the data area */
};

struct qcow2_create_opts {
    uint64_t size;                /* virtual size in bytes (rounded up to 512) */
    uint32_t cluster_size;        /* 0 = 65536; power of two, 512 .. 2 MiB */
    int version;                  /* 0 = 3; 2 or 3 */
    unsigned refcount_bits;       /* 0 = 16; power of two 1 .. 64 (v2: only 16) */
    bool lazy_refcounts;          /* v3 only */
    bool extended_l2;             /* v3 only, cluster_size >= 16K */
    const char *backing_file;     /* NULL = none; stored as given (relative to the image's dir) */
    const char *backing_format;   /* NULL = none; "raw" or "qcow2" */
    enum qcow2_prealloc prealloc; /* not with a backing file unless OFF/METADATA */
    const char *compression_type; /* NULL, "zlib" or "zstd" */
};

/* Creates (or truncates) `path` as an empty qcow2 image. The file is written with plain
 * syscalls and fsync'ed; it is not left behind on failure. */
int qcow2_create(const char *path, const struct qcow2_create_opts *o, struct wisp_err *err);

/* --- consistency check (wisp-img check) --- */
#define QCOW2_FIX_LEAKS  0x1 /* drop refcounts nobody references */
#define QCOW2_FIX_ERRORS 0x2 /* raise refcounts that are too low, fix OFLAG_COPIED */
#define QCOW2_FIX_ALL    (QCOW2_FIX_LEAKS | QCOW2_FIX_ERRORS)

struct qcow2_check_result {
    uint64_t corruptions, leaks; /* found (after fixing: still present) */
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t check_errors;        /* internal errors (I/O) while checking */
    uint64_t allocated_clusters;  /* guest clusters allocated in this image */
    uint64_t total_clusters;      /* guest clusters in the virtual disk */
    uint64_t fragmented_clusters; /* allocated clusters not contiguous to the previous */
    uint64_t compressed_clusters;
    uint64_t image_end_offset; /* end of the last referenced host cluster */
    /* Called once per problem with a line like QEMU's ("Leaked cluster 5 refcount=1 reference=0",
     * "ERROR l2_offset=... : ..."); NULL = messages are dropped. */
    void (*report)(void *opaque, const char *msg);
    void *opaque;
};

/* Walks all metadata, recounts every cluster reference and compares with the refcounts.
 * `fix` is 0 (read-only check; works on read-only nodes) or QCOW2_FIX_*. Returns 0 when the
 * walk completed (corruptions and leaks are reported in *r, not as an error), < 0 when the
 * image could not be checked. */
int qcow2_check(struct block_dev *bs, int fix, struct qcow2_check_result *r, struct wisp_err *err);

/* --- compressed clusters --- */
/* Writes whole clusters compressed (zlib raw deflate, qcow2 spec "Compressed Clusters
 * Descriptor"). offset must be cluster aligned; len a multiple of the cluster size, or shorter
 * only for the last cluster of the disk. Clusters that do not compress are written uncompressed.
 * The target clusters must be unallocated in this node (as for qemu-img convert -c). */
int qcow2_write_compressed(struct block_dev *bs, uint64_t offset, const void *buf, size_t len,
                           struct wisp_err *err);

/* --- internal snapshots (spec "Snapshots") --- */
struct qcow2_snapshot_info {
    char id[32];
    char name[256];
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint32_t icount_valid;
    uint64_t icount;
};

/* Creates a snapshot of the current disk state (no VM state); name must be unique. */
int qcow2_snapshot_create(struct block_dev *bs, const char *name, struct wisp_err *err);
/* *list is malloc'ed (free() it); *n entries. */
int qcow2_snapshot_list(struct block_dev *bs, struct qcow2_snapshot_info **list, unsigned *n,
                        struct wisp_err *err);
/* `name` matches a snapshot's name, or its id if no name matches. */
int qcow2_snapshot_apply(struct block_dev *bs, const char *name, struct wisp_err *err);
int qcow2_snapshot_delete(struct block_dev *bs, const char *name, struct wisp_err *err);

/* --- measure (wisp-img measure, like qemu-img measure) --- */
struct qcow2_measure_result {
    uint64_t required;        /* bytes needed for the allocated data + metadata */
    uint64_t fully_allocated; /* bytes needed if every cluster were allocated */
    uint64_t bitmaps;         /* always 0: persistent bitmaps are not written */
};

/* Computes sizes for a new image with options *o (o->size = virtual size). With `src` != NULL
 * the data clusters actually allocated in src (block_status DATA, not ZERO) are counted;
 * otherwise required == the size of an empty image. */
int qcow2_measure(const struct qcow2_create_opts *o, struct block_dev *src,
                  struct qcow2_measure_result *r, struct wisp_err *err);

/* --- rebase / commit --- */
/* Rewrites the backing file name and format in the header (NULL backing = none). Does not
 * touch data (the caller copies clusters for a safe rebase) and does not reopen bs->backing. */
int qcow2_set_backing(struct block_dev *bs, const char *backing, const char *fmt,
                      struct wisp_err *err);

/* Writes all cached metadata and clears the dirty bit if it was set by this node. Called by
 * close; exposed for tools that want a consistent image without closing (commit). */
int qcow2_make_clean(struct block_dev *bs, struct wisp_err *err);

#endif
