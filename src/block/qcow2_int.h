/* qcow2 driver internals shared by the qcow2*.c files: on-disk constants (QEMU's
 * docs/interop/qcow2.txt), the per-image state, the metadata caches and the helpers. */
#ifndef WISP_BLOCK_QCOW2_INT_H
#define WISP_BLOCK_QCOW2_INT_H

#include <endian.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "block/block.h"
#include "block/qcow2.h"

/* spec "Header" */
#define QCOW2_MAGIC            0x514649fbu /* "QFI\xfb" */
#define QCOW2_HDR_V2_LEN       72
#define QCOW2_HDR_V3_LEN       104
#define QCOW2_HDR_LEN_CTYPE    112 /* v3 header with the compression_type byte, padded */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21

#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)
#define QCOW2_COMPRESSION_ZLIB     0 /* header byte 104 */
#define QCOW2_COMPRESSION_ZSTD     1
#define QCOW2_INCOMPAT_KNOWN                                                                       \
    (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DATA_FILE |                    \
     QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS     (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW    (1ull << 1)

/* spec "Header extensions" */
#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_BITMAPS        0x23852875u
#define QCOW2_EXT_CRYPTO         0x0537be77u
#define QCOW2_EXT_DATA_FILE      0x44415441u

/* spec "Cluster mapping": L1 and L2 entries */
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0)
#define QCOW2_OFFSET_MASK      UINT64_C(0x00fffffffffffe00) /* bits 9-55 */
#define QCOW2_L1E_RESERVED     0x7f000000000001ffull
#define QCOW2_L2E_RESERVED     0x3f000000000001feull
#define QCOW2_RT_OFFSET_MASK   0xfffffffffffffe00ull /* refcount table: bits 9-63 */

#define QCOW2_SUBCLUSTERS 32 /* per cluster with extended L2 entries */

#define QCOW2_MAX_L1_BYTES      (32u << 20) /* as QEMU: refuse bigger L1 tables */
#define QCOW2_MAX_RT_BYTES      (8u << 20)  /* refcount table size limit, as QEMU */
#define QCOW2_MAX_SNAPSHOTS     65536
#define QCOW2_MAX_BACKING_DEPTH 64

/* Kind of a guest cluster after reading its L2 entry. */
enum qcow2_ctype {
    QCOW2_C_UNALLOCATED, /* read from backing / zero */
    QCOW2_C_ZERO_PLAIN,  /* zero flag, no host cluster */
    QCOW2_C_ZERO_ALLOC,  /* zero flag with a preallocated host cluster */
    QCOW2_C_NORMAL,      /* data at host offset */
    QCOW2_C_COMPRESSED,
};

/* One cached metadata table (an L2 table or a refcount block), one cluster big. */
struct qcow2_cached_table {
    uint64_t offset; /* host offset; 0 = slot empty */
    uint8_t *data;
    bool dirty;
    uint64_t last_use;
};

struct qcow2_cache {
    struct qcow2_cached_table *slots;
    unsigned nr_slots;
    uint64_t tick;
};

struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id, *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    bool icount_valid;
    uint64_t icount;
    uint32_t extra_size; /* extra data bytes as read (kept for rewrite, >= 16 when written) */
};

/* A refcount decrement postponed until the L2/L1 tables that dropped the reference are on
 * disk (crash safety, see qcow2_cache.c). */
struct qcow2_deferred_free {
    uint64_t offset, len; /* bytes; compressed data may cover parts of clusters */
};

/* What a host cluster holds, as a bit mask (qcow2_meta.c). A cluster with no bit set holds guest
 * data or nothing. L2 and SNAP_L2 may share a cluster (a table shared with a snapshot); any
 * other pair on one cluster is a corrupt image. */
#define QCOW2_META_HEADER     (1u << 0)
#define QCOW2_META_L1         (1u << 1) /* the active L1 table */
#define QCOW2_META_L2         (1u << 2) /* an L2 table the active L1 table names */
#define QCOW2_META_RT         (1u << 3) /* the refcount table */
#define QCOW2_META_RB         (1u << 4) /* a refcount block */
#define QCOW2_META_SNAP_TABLE (1u << 5)
#define QCOW2_META_SNAP_L1    (1u << 6) /* a snapshot's L1 table */
#define QCOW2_META_SNAP_L2    (1u << 7) /* an L2 table a snapshot's L1 table names */
#define QCOW2_META_ALL        0xffu

/* Host clusters [start, end) that hold `kinds`; sorted, disjoint, neighbours differ. */
struct qcow2_meta_range {
    uint64_t start, end;
    unsigned kinds;
};
struct qcow2_meta_map {
    struct qcow2_meta_range *r;
    size_t n, cap;
};

/* Host bytes [start, end) with data I/O in flight while the lock is dropped: their clusters are
 * not handed out again before the I/O is over, even when freed meanwhile. */
struct qcow2_host_io {
    uint64_t start, end;
};

/* A guest range whose clusters an allocating write is filling with the lock dropped. */
struct qcow2_inflight {
    uint64_t start, end;
    struct qcow2_inflight *next;
};

struct qcow2_state {
    pthread_mutex_t lock; /* protects everything below (metadata) */
    /* Allocating writes in flight (QEMU's cluster_allocs): another allocating write that
     * overlaps one waits on inflight_done, so a guest cluster is never allocated twice. */
    struct qcow2_inflight *inflight;
    pthread_cond_t inflight_done;
    struct block_dev *bs;
    struct block_file *file;
    const char *name; /* bs->filename, for messages */
    bool read_only;

    int version;
    unsigned cluster_bits;
    uint64_t cluster_size;
    uint64_t size; /* virtual size */
    uint64_t incompat, compat, autoclear;
    uint32_t header_length;
    unsigned compression_type; /* 0 = zlib */

    /* L1 table, host endian; entries beyond l1_size do not exist */
    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t *l1;
    bool l1_dirty;

    bool extended_l2;
    unsigned l2_entry_bytes; /* 8 or 16 */
    unsigned l2_bits;        /* log2 entries per L2 table */
    uint64_t l2_entries;

    /* refcounts */
    unsigned refcount_order; /* refcount_bits = 1 << order */
    uint64_t refcount_max;
    unsigned rb_bits; /* log2 refcount entries per refcount block */
    uint64_t rt_offset;
    uint32_t rt_clusters;
    uint64_t *rt; /* host endian, rt_entries = rt_clusters * cluster_size / 8 */
    uint64_t rt_entries;
    uint64_t rt_reserved; /* entries loaded with reserved bits set (repair opens; 0 otherwise) */
    uint64_t free_hint;   /* cluster index where the next free-cluster search starts */
    uint64_t free_hint_bytes; /* next free byte in the cluster packing compressed data, 0 = none */
    uint64_t host_end; /* no byte at or beyond this host offset was ever written: reads zero */
    /* O_DIRECT images: the file is fallocate()d ahead of host_end up to here (0 = not doing
     * it), and cut back to host_end at close. See qcow2_prealloc_ahead(). */
    uint64_t prealloc_end;
    struct qcow2_deferred_free *deferred;
    unsigned nr_deferred, cap_deferred;

    struct qcow2_cache l2_cache, rb_cache;

    /* snapshots */
    uint64_t snapshots_offset;
    uint32_t nb_snapshots;
    uint64_t snapshots_size; /* bytes of the snapshot table */
    struct qcow2_snapshot *snaps;

    char backing_file[1024];
    char backing_format[32];
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    bool has_feature_table;

    bool dirty_by_us; /* we set the dirty bit (lazy refcounts) and must clear it */

    /* Every cluster that holds metadata (qcow2_meta.c): every host write is checked against it
     * and the allocator never hands such a cluster out, whatever its refcount says. */
    struct qcow2_meta_map meta;
    struct qcow2_host_io *host_io;
    unsigned nr_host_io, cap_host_io;
    uint64_t busy_skip; /* lowest free cluster the allocator skipped for I/O in flight */
    /* Opened for qcow2_check (block_open_opts.repair): damaged tables are tolerated (check
     * reports and repairs them), guest writes are refused. */
    bool repair;
    /* Corruption was found while writable: the corrupt bit is set and nothing more is written
     * (QEMU's qcow2_signal_corruption). */
    bool corrupt_stop;
};

static inline uint64_t qcow2_be64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}
static inline uint32_t qcow2_be32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}
static inline uint16_t qcow2_be16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return be16toh(v);
}
static inline void qcow2_put_be64(void *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}
static inline void qcow2_put_be32(void *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}
static inline void qcow2_put_be16(void *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}

static inline uint64_t qcow2_offset_in_cluster(const struct qcow2_state *s, uint64_t off)
{
    return off & (s->cluster_size - 1);
}
static inline uint64_t qcow2_align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}
static inline uint64_t qcow2_l1_index(const struct qcow2_state *s, uint64_t guest)
{
    return guest >> (s->cluster_bits + s->l2_bits);
}
static inline uint64_t qcow2_l2_index(const struct qcow2_state *s, uint64_t guest)
{
    return (guest >> s->cluster_bits) & (s->l2_entries - 1);
}
/* Number of L1 entries needed for a virtual size. */
static inline uint64_t qcow2_l1_entries_for(unsigned cluster_bits, unsigned l2_bits, uint64_t size)
{
    unsigned shift = cluster_bits + l2_bits;
    return (size + (1ull << shift) - 1) >> shift;
}

/* qcow2_meta.c: the metadata map, structural validation at open, entry validation at use */
/* Sets `add` and clears `del` on the clusters covering host bytes [off, off + len). */
int qcow2_meta_update(struct qcow2_state *s, uint64_t off, uint64_t len, unsigned add,
                      unsigned del);
/* The kinds held by any cluster covering [off, off + len). */
unsigned qcow2_meta_kinds(const struct qcow2_state *s, uint64_t off, uint64_t len);
/* Does every cluster of [off, off + len) hold at least one of `kinds` and nothing else? */
bool qcow2_meta_is(const struct qcow2_state *s, uint64_t off, uint64_t len, unsigned kinds);
/* "the L1 table", "an L2 table", ... for the lowest kind in the mask. */
const char *qcow2_meta_name(unsigned kinds);
/* (Re)builds the map from the header, L1 table, refcount table and snapshots (reading the
 * snapshots' L1 tables). strict: any entry that is unaligned, has reserved bits, lies outside
 * the file or makes two kinds of metadata share a cluster is an error naming the offset; not
 * strict (repair): such entries are left out, for qcow2_check to report. */
int qcow2_meta_build(struct qcow2_state *s, bool strict, struct wisp_err *err);
void qcow2_meta_free(struct qcow2_state *s);
/* NULL when the L2 entry e (bitmap bmp) may be used; else what is wrong with it: reserved bits,
 * an unaligned or out-of-file host offset, a host cluster that holds metadata. */
const char *qcow2_l2_entry_problem(const struct qcow2_state *s, uint64_t e, uint64_t bmp, char *buf,
                                   size_t len);
/* The same, not counting metadata of the kinds in `ignore` (qcow2_check). */
const char *qcow2_entry_problem_except(const struct qcow2_state *s, uint64_t e, uint64_t bmp,
                                       unsigned ignore, char *buf, size_t len);
/* Same for an L2 table offset taken from an L1 entry of the active table (kind L2) or of a
 * snapshot's (SNAP_L2). */
const char *qcow2_l2_table_problem(const struct qcow2_state *s, uint64_t l1e, unsigned kind,
                                   char *buf, size_t len);

/* qcow2_io.c: every host write of the driver, fault injection, corruption, I/O in flight */
/* Writes metadata of `kind` (one QCOW2_META_* bit or a mask of allowed kinds): every cluster
 * written must be registered as one of them and as nothing else. */
int qcow2_write_meta(struct qcow2_state *s, unsigned kind, uint64_t off, const void *buf,
                     size_t len, struct wisp_err *err);
/* Writes guest data: no cluster written may hold metadata. */
int qcow2_write_data(struct qcow2_state *s, uint64_t off, const struct iovec *iov, int cnt,
                     struct wisp_err *err);
/* The same check alone, for data written with the lock dropped: the caller checks under the
 * lock, holds the clusters (I/O in flight, or allocated and not linked yet) and then writes
 * with block_file_pwritev. */
int qcow2_guard_data(struct qcow2_state *s, uint64_t off, uint64_t len, struct wisp_err *err);
/* A barrier between metadata writes (block_file_flush). */
int qcow2_barrier(struct qcow2_state *s, struct wisp_err *err);
/* Reports corruption found at use: fills err (EIO, the message names the image) and, on a
 * writable node, sets the corrupt bit and stops all further writes. Returns -EIO. */
int qcow2_corrupt(struct qcow2_state *s, struct wisp_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks host bytes [off, off + len) as having I/O in flight / no longer (lock held). */
int qcow2_host_io_begin(struct qcow2_state *s, uint64_t off, uint64_t len, struct wisp_err *err);
void qcow2_host_io_end(struct qcow2_state *s, uint64_t off, uint64_t len);
/* May clusters [c, c + n) be handed out (no metadata, no I/O in flight)? */
bool qcow2_clusters_reusable(const struct qcow2_state *s, uint64_t c, uint64_t n);

/* qcow2.c: header */
int qcow2_write_header(struct qcow2_state *s, struct wisp_err *err);
int qcow2_mark_dirty(struct qcow2_state *s, struct wisp_err *err);
int qcow2_check_metadata_range(struct qcow2_state *s, uint64_t off, uint64_t len, const char *what,
                               struct wisp_err *err);

/* qcow2_cache.c: metadata tables and flush ordering */
int qcow2_cache_init(struct qcow2_cache *c, unsigned nr_slots, uint64_t cluster_size);
void qcow2_cache_destroy(struct qcow2_cache *c);
/* Returns the table at host `offset` (loaded if needed; `fresh` = do not read, start zeroed). The
 * pointer is valid until the next cache call on this state. */
int qcow2_l2_get(struct qcow2_state *s, uint64_t offset, bool fresh, uint8_t **table,
                 struct wisp_err *err);
int qcow2_rb_get(struct qcow2_state *s, uint64_t offset, bool fresh, uint8_t **table,
                 struct wisp_err *err);
void qcow2_l2_mark_dirty(struct qcow2_state *s, const uint8_t *table);
void qcow2_rb_mark_dirty(struct qcow2_state *s, const uint8_t *table);
void qcow2_cache_forget(struct qcow2_cache *c, uint64_t offset);
/* Writes all metadata in crash-safe order (refcounts, barrier, L2, L1, deferred frees). */
int qcow2_flush_metadata(struct qcow2_state *s, struct wisp_err *err);
/* After host_end grew: reserves file space ahead of it (O_DIRECT images only). */
void qcow2_prealloc_ahead(struct qcow2_state *s);
int qcow2_write_l1(struct qcow2_state *s, struct wisp_err *err);

/* qcow2_refcount.c */
int qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster, uint64_t *rc, struct wisp_err *err);
int qcow2_update_refcount(struct qcow2_state *s, uint64_t offset, uint64_t len, int64_t addend,
                          struct wisp_err *err);
/* Allocates n contiguous host clusters (refcount 1). */
int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *offset, struct wisp_err *err);
/* Allocates a byte range inside clusters for compressed data (may share a cluster). */
int qcow2_alloc_bytes(struct qcow2_state *s, uint64_t bytes, uint64_t *offset,
                      struct wisp_err *err);
/* Drops one reference of [offset, offset+len) once the current metadata is on disk. */
int qcow2_free_deferred(struct qcow2_state *s, uint64_t offset, uint64_t len, struct wisp_err *err);
int qcow2_apply_deferred_frees(struct qcow2_state *s, struct wisp_err *err);
uint64_t qcow2_rb_entry_get(const struct qcow2_state *s, const uint8_t *rb, uint64_t i);
void qcow2_rb_entry_set(const struct qcow2_state *s, uint8_t *rb, uint64_t i, uint64_t v);

/* qcow2_cluster.c: guest I/O */
int qcow2_do_preadv(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                    struct wisp_err *err);
int qcow2_do_map_for_write(struct block_dev *bs, uint64_t offset, uint64_t len,
                           uint64_t *host_offset);
int qcow2_do_map_for_read(struct block_dev *bs, uint64_t offset, uint64_t len,
                          uint64_t *host_offset);
void qcow2_do_map_done(struct block_dev *bs, uint64_t host_offset, uint64_t len);
int qcow2_do_pwritev(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                     struct wisp_err *err);
int qcow2_do_discard(struct block_dev *bs, uint64_t offset, uint64_t len, struct wisp_err *err);
int qcow2_do_write_zeroes(struct block_dev *bs, uint64_t offset, uint64_t len, int flags,
                          struct wisp_err *err);
int qcow2_do_block_status(struct block_dev *bs, uint64_t offset, uint64_t len, uint64_t *pnum,
                          uint64_t *host_offset, struct wisp_err *err);
/* Reads the L2 entry (and bitmap for extended L2) of a guest offset; *l2e = 0 if no L2. */
int qcow2_get_l2_entry(struct qcow2_state *s, uint64_t guest, uint64_t *l2e, uint64_t *bitmap,
                       struct wisp_err *err);
enum qcow2_ctype qcow2_entry_type(const struct qcow2_state *s, uint64_t l2e);
/* Makes L2 table for guest offset writable in this node (allocating/COWing); returns the
 * table and the entry index. */
int qcow2_get_l2_for_write(struct qcow2_state *s, uint64_t guest, uint8_t **table, uint64_t *idx,
                           struct wisp_err *err);
uint64_t qcow2_l2_entry(const struct qcow2_state *s, const uint8_t *t, uint64_t i);
uint64_t qcow2_l2_bitmap(const struct qcow2_state *s, const uint8_t *t, uint64_t i);
void qcow2_l2_set(struct qcow2_state *s, uint8_t *t, uint64_t i, uint64_t e, uint64_t bitmap);
/* Drops the reference an L2 entry holds on its host cluster(s). */
int qcow2_free_l2_entry_target(struct qcow2_state *s, uint64_t l2e, struct wisp_err *err);

/* qcow2_compress.c */
int qcow2_read_compressed(struct qcow2_state *s, uint64_t l2e, uint8_t *cluster,
                          struct wisp_err *err);
void qcow2_compressed_range(const struct qcow2_state *s, uint64_t l2e, uint64_t *off,
                            uint64_t *len);

/* qcow2_create.c */
int qcow2_do_truncate(struct block_dev *bs, uint64_t size, bool shrink_ok, struct wisp_err *err);

/* qcow2_tree.c: over everything an L1 table reaches */
enum qcow2_tree_op {
    QCOW2_TREE_INC,          /* one more reference to every L2 table and cluster */
    QCOW2_TREE_DEC_NOW,      /* one less, at once (undoing an INC nothing relied on) */
    QCOW2_TREE_DEC_DEFERRED, /* one less once the tables that dropped them are on disk */
};
/* Validates every L2 table offset and L2 entry first (a bad one: qcow2_corrupt, nothing
 * changed), then applies op; a failure midway undoes what was done. */
int qcow2_refcount_tree(struct qcow2_state *s, const uint64_t *l1, uint32_t n,
                        enum qcow2_tree_op op, struct wisp_err *err);
/* OFLAG_COPIED on active L1/L2 entries exactly where the refcount is 1 (spec "Cluster
 * mapping"). Refcounts must be current (deferred frees applied). */
int qcow2_fix_copied(struct qcow2_state *s, struct wisp_err *err);

/* qcow2_snapshot.c */
int qcow2_read_snapshots(struct qcow2_state *s, struct wisp_err *err);
void qcow2_free_snapshots(struct qcow2_state *s);

#endif
