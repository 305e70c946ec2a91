/* qcow2 refcounts (spec "Cluster refcounts"): reading and updating refcount entries of any width
 * 1..64 bits, cluster allocation, creation of refcount blocks and growth of the refcount table. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

/* Entries narrower than a byte are packed starting at the least significant bit, as QEMU
 * does; entries of 8 bits and more are big-endian integers. */
uint64_t qcow2_rb_entry_get(const struct qcow2_state *s, const uint8_t *rb, uint64_t i)
{
    switch (s->refcount_order) {
    case 0:
        return (rb[i / 8] >> (i % 8)) & 1;
    case 1:
        return (rb[i / 4] >> (2 * (i % 4))) & 3;
    case 2:
        return (rb[i / 2] >> (4 * (i % 2))) & 15;
    case 3:
        return rb[i];
    case 4:
        return qcow2_be16(rb + 2 * i);
    case 5:
        return qcow2_be32(rb + 4 * i);
    default:
        return qcow2_be64(rb + 8 * i);
    }
}

void qcow2_rb_entry_set(const struct qcow2_state *s, uint8_t *rb, uint64_t i, uint64_t v)
{
    unsigned bits = 1u << s->refcount_order, shift;
    switch (s->refcount_order) {
    case 0:
    case 1:
    case 2:
        shift = (unsigned)(bits * (i % (8 / bits)));
        rb[i / (8 / bits)] =
            (uint8_t)((rb[i / (8 / bits)] & ~(((1u << bits) - 1) << shift)) | (v << shift));
        break;
    case 3:
        rb[i] = (uint8_t)v;
        break;
    case 4:
        qcow2_put_be16(rb + 2 * i, (uint16_t)v);
        break;
    case 5:
        qcow2_put_be32(rb + 4 * i, (uint32_t)v);
        break;
    default:
        qcow2_put_be64(rb + 8 * i, v);
    }
}

int qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster, uint64_t *rc, struct wisp_err *err)
{
    uint64_t idx = cluster >> s->rb_bits;
    *rc = 0;
    if (idx >= s->rt_entries || !s->rt[idx])
        return 0;
    uint8_t *rb;
    int ret = qcow2_rb_get(s, s->rt[idx], false, &rb, err);
    if (ret < 0)
        return ret;
    *rc = qcow2_rb_entry_get(s, rb, cluster & ((1ull << s->rb_bits) - 1));
    return 0;
}

static int write_rt_entry(struct qcow2_state *s, uint64_t idx, struct wisp_err *err)
{
    uint8_t be[8];
    qcow2_put_be64(be, s->rt[idx]);
    int ret = qcow2_write_meta(s, QCOW2_META_RT, s->rt_offset + idx * 8, be, 8, err);
    return ret < 0 ? wisp_err_wrap(err, "%s: writing refcount table entry %" PRIu64, s->name, idx)
                   : 0;
}

/* A refcount block for region idx (which has none, so all its clusters are free) is placed on
 * the region's first cluster and counts itself. It is written before the table points to it. */
static int create_refblock(struct qcow2_state *s, uint64_t idx, struct wisp_err *err)
{
    uint64_t off = idx << (s->rb_bits + s->cluster_bits);
    /* A corrupt refcount table can lack the block of a region holding metadata (region 0 holds
     * the header): never put a refcount block on top of it. */
    if (!qcow2_clusters_reusable(s, off >> s->cluster_bits, 1))
        return qcow2_corrupt(s, err,
                             "refcount table entry %" PRIu64
                             " is missing but its region holds metadata or data in use",
                             idx);
    uint8_t *rb;
    int ret = qcow2_meta_update(s, off, s->cluster_size, QCOW2_META_RB, 0) < 0
                  ? wisp_err_set(err, ENOMEM, "%s: metadata map", s->name)
                  : qcow2_rb_get(s, off, true, &rb, err);
    if (ret < 0)
        return ret;
    qcow2_rb_entry_set(s, rb, 0, 1);
    ret = qcow2_write_meta(s, QCOW2_META_RB, off, rb, s->cluster_size, err);
    if (ret == 0 && !s->dirty_by_us)
        ret = qcow2_barrier(s, err);
    if (ret < 0) {
        qcow2_cache_forget(&s->rb_cache, off);
        qcow2_meta_update(s, off, s->cluster_size, 0, QCOW2_META_RB);
        return wisp_err_wrap(err, "%s: writing a new refcount block", s->name);
    }
    s->rt[idx] = off;
    if (s->host_end < off + s->cluster_size)
        s->host_end = off + s->cluster_size;
    return write_rt_entry(s, idx, err);
}

/* Grows the refcount table so that entry `need` exists. The new table and the refcount blocks
 * describing it go to the first region the old table cannot describe (all free); the header
 * switches to the new table only once it is on disk; then the old table is freed. */
static int grow_refcount_table(struct qcow2_state *s, uint64_t need, struct wisp_err *err)
{
    uint64_t per_cl = s->cluster_size / 8, per_rb = 1ull << s->rb_bits;
    uint64_t entries = s->rt_entries * 2 > need + 1 ? s->rt_entries * 2 : need + 1;
    uint64_t new_cl = (entries + per_cl - 1) / per_cl, k = 1;
    while ((new_cl + k + per_rb - 1) / per_rb > k)
        k++;
    entries = new_cl * per_cl;
    uint64_t first = s->rt_entries << s->rb_bits; /* first cluster not coverable today */
    uint64_t first_idx = s->rt_entries;
    if (first_idx + k > entries || new_cl * s->cluster_size > QCOW2_MAX_RT_BYTES)
        return wisp_err_set(err, EFBIG, "%s: refcount table cannot grow further", s->name);
    cleanup_free uint64_t *rt = calloc(entries, 8);
    cleanup_free uint8_t *rb = calloc(1, s->cluster_size);
    if (!rt || !rb)
        return wisp_err_sys(err, ENOMEM, "%s: growing the refcount table", s->name);
    uint64_t used = k + new_cl; /* clusters first .. first+used-1 are ours */
    uint64_t new_off = (first + k) << s->cluster_bits, blocks = first << s->cluster_bits;
    int ret = 0;
    if (qcow2_meta_kinds(s, blocks, used << s->cluster_bits))
        return qcow2_corrupt(s, err, "metadata lies beyond the space the refcount table covers");
    if (qcow2_meta_update(s, blocks, k << s->cluster_bits, QCOW2_META_RB, 0) < 0 ||
        qcow2_meta_update(s, new_off, new_cl << s->cluster_bits, QCOW2_META_RT, 0) < 0)
        ret = wisp_err_set(err, ENOMEM, "%s: metadata map", s->name);
    for (uint64_t j = 0; j < k && ret == 0; j++) {
        memset(rb, 0, s->cluster_size);
        for (uint64_t c = 0; c < per_rb && j * per_rb + c < used; c++)
            qcow2_rb_entry_set(s, rb, c, 1);
        ret = qcow2_write_meta(s, QCOW2_META_RB, (first + j) << s->cluster_bits, rb,
                               s->cluster_size, err);
    }
    for (uint64_t i = 0; i < entries; i++) {
        uint64_t v = i < s->rt_entries ? s->rt[i] : 0;
        if (i >= first_idx && i < first_idx + k)
            v = (first + (i - first_idx)) << s->cluster_bits;
        rt[i] = htobe64(v);
    }
    if (ret == 0)
        ret = qcow2_write_meta(s, QCOW2_META_RT, new_off, rt, entries * 8, err);
    if (ret == 0)
        ret = qcow2_barrier(s, err);
    if (ret < 0) {
        qcow2_meta_update(s, blocks, used << s->cluster_bits, 0, QCOW2_META_RB | QCOW2_META_RT);
        return wisp_err_wrap(err, "%s: growing the refcount table", s->name);
    }
    uint64_t old_off = s->rt_offset, old_cl = s->rt_clusters;
    if (s->host_end < (first + used) << s->cluster_bits)
        s->host_end = (first + used) << s->cluster_bits;
    for (uint64_t i = 0; i < entries; i++)
        rt[i] = be64toh(rt[i]);
    cleanup_free uint64_t *old_rt = s->rt;
    uint64_t old_entries = s->rt_entries;
    s->rt = steal_ptr(&rt);
    s->rt_entries = entries;
    s->rt_offset = new_off;
    s->rt_clusters = (uint32_t)new_cl;
    if ((ret = qcow2_write_header(s, err)) < 0) {
        /* the header still names the old table: keep using it (the new clusters leak) */
        s->rt = steal_ptr(&old_rt);
        s->rt_entries = old_entries;
        s->rt_offset = old_off;
        s->rt_clusters = (uint32_t)old_cl;
        return ret;
    }
    ret = qcow2_barrier(s, err);
    qcow2_meta_update(s, old_off, old_cl << s->cluster_bits, 0, QCOW2_META_RT);
    int r2 = qcow2_update_refcount(s, old_off, old_cl << s->cluster_bits, -1, err);
    return ret < 0 ? ret : r2;
}

/*
 * With O_DIRECT, a write into a hole or past the end of the file makes ext4 (and most file
 * systems) allocate blocks under the inode's exclusive lock, one write at a time: 4 KiB writes
 * at queue depth 32 into new clusters ran ~5x slower here than into reserved (unwritten)
 * blocks, which take concurrent writes. So when allocation passes the reserved end, the next
 * QCOW2_PREALLOC_STEP of the file is reserved with fallocate() (QEMU's `preallocate` filter
 * does the same, 128 MiB at a time, when asked); close cuts the file back to host_end. A crash
 * leaves at most one step of unreferenced space at the end, which qcow2 allows. Reserved
 * blocks read as zeroes, so "fresh" clusters stay fresh. Where fallocate is not supported,
 * or fails (ENOSPC), it stops being tried and writes allocate as before.
 */
#define QCOW2_PREALLOC_STEP (8u << 20)

void qcow2_prealloc_ahead(struct qcow2_state *s)
{
    if (!s->prealloc_end || s->host_end <= s->prealloc_end)
        return;
    uint64_t end = (s->host_end + QCOW2_PREALLOC_STEP - 1) & ~(uint64_t)(QCOW2_PREALLOC_STEP - 1);
    if (block_file_preallocate(s->file, s->prealloc_end, end - s->prealloc_end) < 0)
        s->prealloc_end = 0;
    else
        s->prealloc_end = end;
}

int qcow2_update_refcount(struct qcow2_state *s, uint64_t offset, uint64_t len, int64_t addend,
                          struct wisp_err *err)
{
    if (!len)
        return 0;
    uint64_t c0 = offset >> s->cluster_bits, c1 = (offset + len - 1) >> s->cluster_bits;
    if (addend > 0 && s->host_end < (c1 + 1) << s->cluster_bits) {
        s->host_end = (c1 + 1) << s->cluster_bits; /* allocated clusters may hold old bytes */
        qcow2_prealloc_ahead(s);
    }
    for (uint64_t c = c0; c <= c1; c++) {
        uint64_t idx = c >> s->rb_bits;
        int ret;
        if (idx >= s->rt_entries && (ret = grow_refcount_table(s, idx, err)) < 0)
            return ret;
        if (!s->rt[idx] && (ret = create_refblock(s, idx, err)) < 0)
            return ret;
        uint8_t *rb;
        if ((ret = qcow2_rb_get(s, s->rt[idx], false, &rb, err)) < 0)
            return ret;
        uint64_t i = c & ((1ull << s->rb_bits) - 1);
        uint64_t old = qcow2_rb_entry_get(s, rb, i), v = old + (uint64_t)addend;
        if ((addend < 0 && old < (uint64_t)-addend) ||
            (addend > 0 && (v < old || v > s->refcount_max)))
            return wisp_err_set(err, EINVAL,
                                "%s: refcount of cluster at offset 0x%" PRIx64
                                " would %s (refcount %" PRIu64 ", change %" PRId64 ")",
                                s->name, c << s->cluster_bits,
                                addend < 0 ? "underflow" : "overflow", old, addend);
        qcow2_rb_entry_set(s, rb, i, v);
        qcow2_rb_mark_dirty(s, rb);
        if (v == 0 && c < s->free_hint)
            s->free_hint = c;
    }
    return 0;
}

/*
 * n contiguous clusters past everything allocated, for runs too long for the search below: a
 * new refcount block sits on its region's first cluster, so a run longer than half a region
 * would never fit in new territory (512-byte clusters: a region is 256 clusters, and growing an
 * L1 table to map 64 GiB needs 32768). Here the refcount blocks of the regions the run covers
 * go first, on the clusters just before it, and count themselves (the layout QEMU uses too):
 *   [host_end: m new refcount blocks][the n clusters]
 */
static int alloc_clusters_at_end(struct qcow2_state *s, uint64_t n, uint64_t *offset,
                                 struct wisp_err *err)
{
    for (;;) {
        uint64_t start = (s->host_end + s->cluster_size - 1) >> s->cluster_bits, m = 0, prev;
        do { /* m = regions of [start, start + m + n) without a refcount block */
            prev = m;
            m = 0;
            for (uint64_t r = start >> s->rb_bits; r <= (start + prev + n - 1) >> s->rb_bits; r++)
                m += r >= s->rt_entries || !s->rt[r];
        } while (m != prev);
        uint64_t last = (start + m + n - 1) >> s->rb_bits;
        if (last >= s->rt_entries) { /* the table moves past host_end: plan again after */
            int ret = grow_refcount_table(s, last, err);
            if (ret < 0)
                return ret;
            continue;
        }
        /* write the new blocks (each counting the new blocks in its region), then the table */
        uint64_t b = start, new_lo = start << s->cluster_bits,
                 new_hi = (start + m) << s->cluster_bits;
        for (uint64_t r = start >> s->rb_bits; r <= last; r++) {
            if (s->rt[r])
                continue;
            uint64_t off = b++ << s->cluster_bits;
            uint8_t *rb;
            int ret = qcow2_meta_update(s, off, s->cluster_size, QCOW2_META_RB, 0) < 0
                          ? wisp_err_set(err, ENOMEM, "%s: metadata map", s->name)
                          : qcow2_rb_get(s, off, true, &rb, err);
            if (ret < 0)
                return ret;
            for (uint64_t c = start; c < start + m; c++)
                if (c >> s->rb_bits == r)
                    qcow2_rb_entry_set(s, rb, c & ((1ull << s->rb_bits) - 1), 1);
            ret = qcow2_write_meta(s, QCOW2_META_RB, off, rb, s->cluster_size, err);
            if (ret < 0) {
                qcow2_cache_forget(&s->rb_cache, off);
                qcow2_meta_update(s, off, s->cluster_size, 0, QCOW2_META_RB);
                return wisp_err_wrap(err, "%s: writing a new refcount block", s->name);
            }
            s->rt[r] = off;
        }
        s->host_end = new_hi;
        int ret = m && !s->dirty_by_us ? qcow2_barrier(s, err) : 0;
        for (uint64_t r = start >> s->rb_bits; r <= last && ret == 0; r++)
            if (s->rt[r] >= new_lo && s->rt[r] < new_hi)
                ret = write_rt_entry(s, r, err);
        /* new blocks in regions that already had a refcount block are counted there */
        for (uint64_t c = start; c < start + m && ret == 0; c++) {
            uint64_t r = c >> s->rb_bits;
            if (s->rt[r] < new_lo || s->rt[r] >= new_hi)
                ret = qcow2_update_refcount(s, c << s->cluster_bits, s->cluster_size, 1, err);
        }
        if (ret == 0)
            ret = qcow2_update_refcount(s, (start + m) << s->cluster_bits, n << s->cluster_bits, 1,
                                        err);
        if (ret < 0)
            return ret;
        *offset = (start + m) << s->cluster_bits;
        return 0;
    }
}

int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *offset, struct wisp_err *err)
{
    if (n > (1ull << s->rb_bits) / 2)
        return alloc_clusters_at_end(s, n, offset, err);
    uint64_t start = s->free_hint ? s->free_hint : 1, c = start;
    while (c - start < n) {
        uint64_t idx = c >> s->rb_bits, rc;
        int ret;
        if (c >> (56 - s->cluster_bits))
            return wisp_err_set(err, ENOSPC, "%s: image is full (host offsets above 2^56)",
                                s->name);
        if (idx >= s->rt_entries && (ret = grow_refcount_table(s, idx, err)) < 0)
            return ret;
        if (!s->rt[idx] && (ret = create_refblock(s, idx, err)) < 0)
            return ret;
        if ((ret = qcow2_get_refcount(s, c, &rc, err)) < 0)
            return ret;
        /* metadata is never handed out, even with a (corrupt) refcount of 0; a freed cluster
         * with I/O in flight waits until it is over */
        bool busy = !rc && !qcow2_clusters_reusable(s, c, 1);
        if (busy && !qcow2_meta_kinds(s, c << s->cluster_bits, s->cluster_size) && c < s->busy_skip)
            s->busy_skip = c;
        if (rc || busy) {
            start = c + 1;
            if (c == s->free_hint)
                s->free_hint = start;
        }
        c++;
    }
    int ret = qcow2_update_refcount(s, start << s->cluster_bits, n << s->cluster_bits, 1, err);
    if (ret < 0)
        return ret;
    *offset = start << s->cluster_bits;
    if (s->free_hint == 0 || s->free_hint == start)
        s->free_hint = start + n;
    return 0;
}

/* Compressed data is packed: consecutive allocations share a host cluster, each sharing adding
 * one reference to it (spec "Compressed Clusters Descriptor"). */
int qcow2_alloc_bytes(struct qcow2_state *s, uint64_t bytes, uint64_t *offset, struct wisp_err *err)
{
    uint64_t cur = s->free_hint_bytes;
    int ret;
    if (cur && qcow2_offset_in_cluster(s, cur) + bytes <= s->cluster_size) {
        uint64_t rc;
        if ((ret = qcow2_get_refcount(s, cur >> s->cluster_bits, &rc, err)) < 0)
            return ret;
        if (rc) {
            if ((ret = qcow2_update_refcount(s, cur, 1, 1, err)) < 0)
                return ret;
            *offset = cur;
            s->free_hint_bytes = qcow2_offset_in_cluster(s, cur + bytes) ? cur + bytes : 0;
            return 0;
        }
    }
    uint64_t n = (bytes + s->cluster_size - 1) >> s->cluster_bits, off;
    if ((ret = qcow2_alloc_clusters(s, n, &off, err)) < 0)
        return ret;
    *offset = off;
    s->free_hint_bytes = qcow2_offset_in_cluster(s, off + bytes) ? off + bytes : 0;
    return 0;
}

int qcow2_free_deferred(struct qcow2_state *s, uint64_t offset, uint64_t len, struct wisp_err *err)
{
    if (s->nr_deferred) {
        struct qcow2_deferred_free *last = &s->deferred[s->nr_deferred - 1];
        if (last->offset + last->len == offset && !(offset & (s->cluster_size - 1)) &&
            !(len & (s->cluster_size - 1)) && !(last->len & (s->cluster_size - 1))) {
            last->len += len;
            return 0;
        }
    }
    if (s->nr_deferred == s->cap_deferred) {
        unsigned cap = s->cap_deferred ? s->cap_deferred * 2 : 64;
        void *p = realloc(s->deferred, cap * sizeof(*s->deferred));
        if (!p)
            return wisp_err_sys(err, ENOMEM, "%s: deferred frees", s->name);
        s->deferred = p;
        s->cap_deferred = cap;
    }
    s->deferred[s->nr_deferred++] = (struct qcow2_deferred_free){offset, len};
    return 0;
}

int qcow2_apply_deferred_frees(struct qcow2_state *s, struct wisp_err *err)
{
    for (unsigned i = 0; i < s->nr_deferred; i++) {
        int ret = qcow2_update_refcount(s, s->deferred[i].offset, s->deferred[i].len, -1, err);
        if (ret < 0)
            return ret;
    }
    s->nr_deferred = 0;
    s->free_hint_bytes = 0; /* the packing cluster may have been freed */
    return 0;
}
