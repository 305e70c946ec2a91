/* qcow2 consistency check and repair (what qemu-img check does, stricter): recount every
 * reference to every host cluster from the header, the L1/L2 tables of the active state and of
 * every snapshot, the snapshot table and the refcount structures, validating every entry on the
 * way, then compare with the stored refcounts.
 *
 * Repair (QCOW2_FIX_*) runs in this order: entries that cannot be used (unaligned, reserved
 * bits, outside the file, on other metadata) are dropped; when the refcount structure itself is
 * damaged (a refcount table entry that is invalid or shares its cluster with anything else, a
 * referenced cluster without a refcount block) it is rebuilt into fresh clusters past the end
 * of the file (qcow2_rebuild.c, QEMU's rebuild_refcount_structure); otherwise refcounts are
 * fixed in place; then OFLAG_COPIED. A second pass must then find nothing, or the repair is not
 * reported as done; when it finds nothing the corrupt and dirty bits are cleared. Repairing
 * only leaks is refused while corruptions are present (dropping references counted wrongly
 * could free clusters in use). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_check.h"
#include "common/cleanup.h"

void qcow2_check_report(struct qcow2_check *c, const char *fmt, ...)
{
    if (!c->r->report)
        return;
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->r->report(c->r->opaque, msg);
}

static void add_ref(struct qcow2_check *c, uint64_t off, uint64_t len)
{
    struct qcow2_state *s = c->s;
    if (!len)
        return;
    uint64_t c0 = off >> s->cluster_bits, c1 = (off + len - 1) >> s->cluster_bits;
    for (uint64_t i = c0; i <= c1 && i < c->nclusters; i++)
        if (c->refs[i] < UINT32_MAX)
            c->refs[i]++;
}

static int add_bad(struct qcow2_check *c, enum qcow2_bad_where where, uint64_t table,
                   uint32_t index, uint32_t snap)
{
    if (c->nbad == c->capbad) {
        size_t cap = c->capbad ? c->capbad * 2 : 16;
        void *p = realloc(c->bad, cap * sizeof(*c->bad));
        if (!p)
            return -ENOMEM;
        c->bad = p;
        c->capbad = cap;
    }
    c->bad[c->nbad++] = (struct qcow2_bad_entry){where, table, index, snap};
    c->r->corruptions++;
    return 0;
}

/* Data clusters, zero-allocated clusters and compressed ranges of one L2 table. */
static int walk_l2(struct qcow2_check *c, uint64_t l2off, bool active, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    uint8_t *t;
    int ret = qcow2_l2_get(s, l2off, false, &t, err);
    if (ret < 0)
        return ret;
    cleanup_free uint8_t *copy = malloc(s->cluster_size);
    if (!copy)
        return wisp_err_sys(err, ENOMEM, "%s: check", s->name);
    memcpy(copy, t, s->cluster_size);
    char why[160];
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_l2_entry(s, copy, i), bmp = qcow2_l2_bitmap(s, copy, i), off, len;
        /* a refcount block on a data cluster is the refcount table's fault (rebuild) */
        const char *bad = qcow2_entry_problem_except(s, e, bmp, QCOW2_META_RB, why, sizeof(why));
        if (bad) {
            qcow2_check_report(c, "%s L2 entry 0x%016" PRIx64 " at offset 0x%" PRIx64 ": %s",
                               c->fix & QCOW2_FIX_ERRORS ? "Repairing" : "ERROR", e,
                               l2off + i * s->l2_entry_bytes, bad);
            if (add_bad(c, QCOW2_BAD_L2, l2off, (uint32_t)i, 0) < 0)
                return wisp_err_sys(err, ENOMEM, "%s: check", s->name);
            continue;
        }
        switch (qcow2_entry_type(s, e)) {
        case QCOW2_C_COMPRESSED:
            qcow2_compressed_range(s, e, &off, &len);
            add_ref(c, off, len);
            if (active) {
                c->r->allocated_clusters++;
                c->r->compressed_clusters++;
            }
            break;
        case QCOW2_C_NORMAL:
        case QCOW2_C_ZERO_ALLOC:
            off = e & QCOW2_OFFSET_MASK;
            add_ref(c, off, s->cluster_size);
            if (active) {
                c->r->allocated_clusters++;
                if (c->last_host && off != c->last_host + s->cluster_size)
                    c->r->fragmented_clusters++;
                c->last_host = off;
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

/* The L2 tables of an L1 table (the active one: snap < 0) and what they reach. */
static int walk_l1(struct qcow2_check *c, const uint64_t *l1, uint32_t n, uint64_t l1_off, int snap,
                   struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    char why[160];
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK, cl = l2 >> s->cluster_bits;
        if (!l1[i])
            continue;
        const char *bad = qcow2_l2_table_problem(s, l1[i], 0, why, sizeof(why));
        if (!bad && !l2)
            continue;
        if (!bad && snap < 0 && c->active_l2[cl / 8] & (1u << (cl % 8)))
            bad = "names an L2 table another entry of the active L1 table names";
        if (bad) {
            qcow2_check_report(c, "%s L1 entry %u (0x%016" PRIx64 ") at offset 0x%" PRIx64 "%s: %s",
                               c->fix & QCOW2_FIX_ERRORS ? "Repairing" : "ERROR", i, l1[i],
                               l1_off + (uint64_t)i * 8, snap < 0 ? "" : " (snapshot)", bad);
            if (add_bad(c, snap < 0 ? QCOW2_BAD_L1 : QCOW2_BAD_SNAP_L1, l1_off, i,
                        snap < 0 ? 0 : (uint32_t)snap) < 0)
                return wisp_err_sys(err, ENOMEM, "%s: check", s->name);
            continue;
        }
        if (snap < 0)
            c->active_l2[cl / 8] |= (uint8_t)(1u << (cl % 8));
        add_ref(c, l2, s->cluster_size);
        int ret = walk_l2(c, l2, snap < 0, err);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int walk_snapshots(struct qcow2_check *c, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    for (uint32_t k = 0; k < s->nb_snapshots; k++) {
        struct qcow2_snapshot *sn = &s->snaps[k];
        add_ref(c, sn->l1_table_offset, (uint64_t)sn->l1_size * 8);
        if (!sn->l1_size)
            continue;
        if (!qcow2_meta_is(s, sn->l1_table_offset, (uint64_t)sn->l1_size * 8, QCOW2_META_SNAP_L1)) {
            qcow2_check_report(c,
                               "ERROR the L1 table of snapshot '%s' at offset 0x%" PRIx64
                               " overlaps other metadata",
                               sn->name, sn->l1_table_offset);
            c->r->corruptions++;
            continue;
        }
        cleanup_free uint64_t *l1 = calloc(sn->l1_size, 8);
        if (!l1)
            return wisp_err_sys(err, ENOMEM, "%s: check", s->name);
        int ret = block_file_pread(s->file, sn->l1_table_offset, l1, (size_t)sn->l1_size * 8, err);
        if (ret < 0)
            return ret;
        for (uint32_t i = 0; i < sn->l1_size; i++)
            l1[i] = be64toh(l1[i]);
        if ((ret = walk_l1(c, l1, sn->l1_size, sn->l1_table_offset, (int)k, err)) < 0)
            return ret;
    }
    return 0;
}

/* The refcount structure: every block valid, alone on its cluster (counted once, after all
 * else), and a block for every region that holds a referenced cluster; else: rebuild. */
static void check_refblocks(struct qcow2_check *c)
{
    struct qcow2_state *s = c->s;
    uint64_t per_rb = 1ull << s->rb_bits;
    if (s->rt_reserved) {
        qcow2_check_report(c, "ERROR %" PRIu64 " refcount table entries have reserved bits set",
                           s->rt_reserved);
        c->r->corruptions++;
        c->rebuild = true;
    }
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t rb = s->rt[i], cl = rb >> s->cluster_bits;
        if (!rb)
            continue;
        const char *bad = NULL;
        if (rb & (s->cluster_size - 1))
            bad = "is not aligned to a cluster";
        else if (cl >= c->nclusters)
            bad = "lies outside the image file";
        else if (c->refs[cl] || qcow2_meta_kinds(s, rb, s->cluster_size) & ~QCOW2_META_RB)
            bad = "shares its cluster with other metadata or data";
        if (bad) {
            qcow2_check_report(c, "ERROR refcount block %" PRIu64 " at offset 0x%" PRIx64 " %s", i,
                               rb, bad);
            c->r->corruptions++;
            c->rebuild = true;
        }
        c->rb_valid[i] = !bad;
        if (!bad)
            c->refs[cl]++;
    }
    for (uint64_t cl = 0; cl < c->nclusters; cl++) {
        uint64_t idx = cl / per_rb;
        if (c->refs[cl] && (idx >= s->rt_entries || !c->rb_valid[idx])) {
            qcow2_check_report(c, "ERROR cluster %" PRIu64 " is in use but has no refcount block",
                               cl);
            c->r->corruptions++;
            c->rebuild = true;
            cl = (idx + 1) * per_rb - 1; /* once per region */
        }
    }
}

/* Counts every reference; the refcount structure last (see check_refblocks). */
static int count_refs(struct qcow2_check *c, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    add_ref(c, 0, s->cluster_size);
    add_ref(c, s->l1_offset, (uint64_t)s->l1_size * 8);
    if (s->nb_snapshots)
        add_ref(c, s->snapshots_offset, s->snapshots_size);
    add_ref(c, s->rt_offset, (uint64_t)s->rt_clusters << s->cluster_bits);
    int ret = walk_l1(c, s->l1, s->l1_size, s->l1_offset, -1, err);
    if (ret == 0)
        ret = walk_snapshots(c, err);
    if (ret == 0)
        check_refblocks(c);
    return ret;
}

/* Stored refcount of cluster i (0 where the structure cannot tell). */
static int stored_refcount(struct qcow2_check *c, uint64_t i, uint64_t *rc, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    uint64_t idx = i >> s->rb_bits;
    *rc = 0;
    if (idx >= s->rt_entries || !c->rb_valid[idx])
        return 0;
    return qcow2_get_refcount(s, i, rc, err);
}

/* Compares stored refcounts with the references; with fix (and a sound structure) repairs. */
static int compare_refcounts(struct qcow2_check *c, int fix, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    uint64_t per_rb = 1ull << s->rb_bits;
    uint64_t end = c->nclusters;
    for (uint64_t idx = c->nclusters / per_rb; idx < s->rt_entries; idx++)
        if (c->rb_valid[idx]) /* refcounts stored past the end of the file: leaks too */
            end = (idx + 1) * per_rb;
    for (uint64_t i = 0; i < end; i++) {
        uint64_t stored, want = i < c->nclusters ? c->refs[i] : 0;
        int ret = stored_refcount(c, i, &stored, err);
        if (ret < 0)
            return ret;
        if (want)
            c->r->image_end_offset = (i + 1) << s->cluster_bits;
        if (stored == want)
            continue;
        bool leak = stored > want;
        int need = leak ? QCOW2_FIX_LEAKS : QCOW2_FIX_ERRORS;
        bool repair = (fix & need) && !c->rebuild && (leak || want <= s->refcount_max);
        qcow2_check_report(c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                           repair ? "Repairing"
                           : leak ? "Leaked"
                                  : "ERROR",
                           i, stored, want);
        if (repair && (ret = qcow2_update_refcount(s, i << s->cluster_bits, 1,
                                                   (int64_t)(want - stored), err)) < 0)
            return ret;
        if (repair)
            leak ? c->r->leaks_fixed++ : c->r->corruptions_fixed++;
        else
            leak ? c->r->leaks++ : c->r->corruptions++;
    }
    return 0;
}

/* Active L1/L2 entries must carry OFLAG_COPIED exactly when the cluster is referenced once. */
static int check_copied(struct qcow2_check *c, int fix, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2 = s->l1[i] & QCOW2_OFFSET_MASK, cl = l2 >> s->cluster_bits;
        if (!l2 || cl >= c->nclusters || !(c->active_l2[cl / 8] & (1u << (cl % 8))))
            continue;
        bool want = c->refs[cl] == 1;
        if (want != !!(s->l1[i] & QCOW2_OFLAG_COPIED)) {
            qcow2_check_report(
                c, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64 " refcount=%u",
                fix & QCOW2_FIX_ERRORS ? "Repairing" : "ERROR", i, s->l1[i], c->refs[cl]);
            if (fix & QCOW2_FIX_ERRORS) {
                s->l1[i] = want ? s->l1[i] | QCOW2_OFLAG_COPIED : s->l1[i] & ~QCOW2_OFLAG_COPIED;
                s->l1_dirty = true;
                c->r->corruptions_fixed++;
            } else {
                c->r->corruptions++;
            }
        }
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint8_t *t;
            int ret = qcow2_l2_get(s, l2, false, &t, err);
            if (ret < 0)
                return ret;
            uint64_t e = qcow2_l2_entry(s, t, j), bmp = qcow2_l2_bitmap(s, t, j);
            enum qcow2_ctype ty = qcow2_entry_type(s, e);
            uint64_t hc = (e & QCOW2_OFFSET_MASK) >> s->cluster_bits;
            if ((ty != QCOW2_C_NORMAL && ty != QCOW2_C_ZERO_ALLOC) || hc >= c->nclusters)
                continue;
            bool w = c->refs[hc] == 1;
            if (w == !!(e & QCOW2_OFLAG_COPIED))
                continue;
            qcow2_check_report(c, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%u",
                               fix & QCOW2_FIX_ERRORS ? "Repairing" : "ERROR", e, c->refs[hc]);
            if (fix & QCOW2_FIX_ERRORS) {
                qcow2_l2_set(s, t, j, w ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED, bmp);
                c->r->corruptions_fixed++;
            } else {
                c->r->corruptions++;
            }
        }
    }
    return 0;
}

static void check_free(struct qcow2_check *c)
{
    free(c->refs);
    free(c->active_l2);
    free(c->rb_valid);
    free(c->bad);
    c->refs = NULL, c->active_l2 = c->rb_valid = NULL, c->bad = NULL;
    c->nbad = c->capbad = 0;
}

int qcow2_check_drop_entries(struct qcow2_check *c, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    for (size_t k = 0; k < c->nbad; k++) {
        const struct qcow2_bad_entry *b = &c->bad[k];
        int ret = 0;
        if (b->where == QCOW2_BAD_L1) {
            s->l1[b->index] = 0;
            s->l1_dirty = true;
        } else if (b->where == QCOW2_BAD_SNAP_L1) {
            static const uint64_t zero;
            ret = qcow2_write_meta(s, QCOW2_META_SNAP_L1, b->table + (uint64_t)b->index * 8, &zero,
                                   8, err);
        } else {
            uint8_t *t;
            if ((ret = qcow2_l2_get(s, b->table, false, &t, err)) < 0)
                return ret;
            /* reads zeroes from now on (v2 has no zero flag: unallocated) */
            if (s->extended_l2)
                qcow2_l2_set(s, t, b->index, 0, 0xffffffffull << 32);
            else
                qcow2_l2_set(s, t, b->index, s->version >= 3 ? QCOW2_OFLAG_ZERO : 0, 0);
        }
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int compare_all(struct qcow2_check *c, int fix, struct wisp_err *err)
{
    int ret = compare_refcounts(c, fix, err);
    return ret < 0 ? ret : check_copied(c, fix, err);
}

/* One pass: counts and compares; with fix, also repairs refcounts and flags in place, unless
 * entries must be dropped or the structure rebuilt first (repair() does that). */
static int check_pass(struct qcow2_state *s, int fix, struct qcow2_check *c,
                      struct qcow2_check_result *r, struct wisp_err *err)
{
    uint64_t fsize;
    int ret = block_file_size(s->file, &fsize, err);
    if (ret < 0)
        return ret;
    *c = (struct qcow2_check){.s = s, .r = r, .fix = fix};
    c->nclusters = qcow2_align_up(fsize > s->host_end ? fsize : s->host_end, s->cluster_size) >>
                   s->cluster_bits;
    c->refs = calloc(c->nclusters + 1, sizeof(*c->refs));
    c->active_l2 = calloc(c->nclusters / 8 + 1, 1);
    c->rb_valid = calloc(s->rt_entries + 1, 1);
    if (!c->refs || !c->active_l2 || !c->rb_valid)
        return wisp_err_sys(err, ENOMEM, "%s: check of %" PRIu64 " clusters", s->name,
                            c->nclusters);
    r->total_clusters = qcow2_align_up(s->size, s->cluster_size) >> s->cluster_bits;
    if ((ret = count_refs(c, err)) < 0)
        return ret;
    if ((fix & QCOW2_FIX_ERRORS) && (c->nbad || c->rebuild))
        return 0;
    if (fix == QCOW2_FIX_LEAKS) { /* only when nothing else is wrong */
        struct qcow2_check_result scratch = {0};
        c->r = &scratch;
        ret = compare_all(c, 0, err);
        c->r = r;
        if (ret < 0)
            return ret;
        if (r->corruptions || c->rebuild || scratch.corruptions) {
            qcow2_check_report(c, "Not repairing leaked clusters: the image has errors "
                                  "(repair everything with -r all)");
            fix = c->fix = 0;
        }
    }
    return compare_all(c, fix, err);
}

/* The repair sequence (see the top of the file): passes that drop entries or rebuild the
 * structure are followed by another, until one only fixes in place; then the final, read-only
 * pass whose counts go to *r. */
static int repair(struct qcow2_state *s, int fix, struct qcow2_check_result *r,
                  struct wisp_err *err)
{
    struct qcow2_check c = {0};
    uint64_t fixed = 0, leaks_fixed = 0;
    int ret = 0;
    for (int round = 0; ret == 0 && round < 4; round++) {
        struct qcow2_check_result pass = {.report = r->report, .opaque = r->opaque};
        ret = check_pass(s, fix, &c, &pass, err);
        bool again = ret == 0 && (fix & QCOW2_FIX_ERRORS) && (c.nbad || c.rebuild);
        if (ret == 0 && again && c.nbad) {
            ret = qcow2_check_drop_entries(&c, err);
            fixed += c.nbad;
        } else if (ret == 0 && again) {
            ret = qcow2_rebuild_refcounts(&c, err);
            fixed += pass.corruptions;
        }
        fixed += pass.corruptions_fixed;
        leaks_fixed += pass.leaks_fixed;
        check_free(&c);
        if (!again)
            break;
    }
    if (ret == 0)
        ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = qcow2_barrier(s, err);
    /* the last pass decides; only a clean one clears the corrupt and dirty bits */
    struct qcow2_check_result final = {.report = r->report, .opaque = r->opaque};
    if (ret == 0)
        ret = check_pass(s, 0, &c, &final, err);
    check_free(&c);
    final.corruptions_fixed = fixed;
    final.leaks_fixed = leaks_fixed;
    *r = final;
    if (ret == 0 && !r->corruptions &&
        (s->incompat & (QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DIRTY))) {
        s->incompat &= ~(QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DIRTY);
        s->dirty_by_us = false;
        ret = qcow2_write_header(s, err);
        if (ret == 0)
            ret = qcow2_barrier(s, err);
    }
    return ret;
}

int qcow2_check(struct block_dev *bs, int fix, struct qcow2_check_result *r, struct wisp_err *err)
{
    if (bs->drv != &qcow2_driver)
        return wisp_err_set(err, EINVAL, "%s: not a qcow2 node", bs->filename);
    struct qcow2_state *s = bs->opaque;
    if (fix && s->read_only)
        return wisp_err_set(err, EROFS, "%s: cannot repair a read-only image", s->name);
    if (fix && s->corrupt_stop)
        return wisp_err_set(err, EIO,
                            "%s: corruption was found while the image was in use; close it and "
                            "repair it (wisp-img check -r all)",
                            s->name);
    pthread_mutex_lock(&s->lock);
    int ret = s->read_only ? 0 : qcow2_flush_metadata(s, err);
    if (ret == 0 && fix) {
        ret = repair(s, fix, r, err);
    } else if (ret == 0) {
        struct qcow2_check c;
        ret = check_pass(s, 0, &c, r, err);
        check_free(&c);
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0)
        r->check_errors++;
    return ret;
}
