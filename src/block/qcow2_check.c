/* qcow2 consistency check and repair (what qemu-img check does): recount every reference to every
 * host cluster from the header, L1/L2 tables of the active state and of every snapshot, the
 * refcount structures and the snapshot table, then compare with the stored refcounts. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

struct check {
    struct qcow2_state *s;
    struct qcow2_check_result *r;
    uint32_t *refs;
    uint64_t nclusters;
    uint64_t last_host; /* for fragmentation */
};

static void report(struct check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(struct check *c, const char *fmt, ...)
{
    if (!c->r->report)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->r->report(c->r->opaque, msg);
}

static void add_ref(struct check *c, uint64_t off, uint64_t len, const char *what)
{
    struct qcow2_state *s = c->s;
    if (!len)
        return;
    uint64_t c0 = off >> s->cluster_bits, c1 = (off + len - 1) >> s->cluster_bits;
    for (uint64_t i = c0; i <= c1; i++) {
        if (i >= c->nclusters) {
            report(c, "ERROR: %s at offset 0x%" PRIx64 " is beyond the end of the image file", what,
                   i << s->cluster_bits);
            c->r->corruptions++;
            continue;
        }
        if (c->refs[i] < UINT32_MAX)
            c->refs[i]++;
    }
}

static int walk_l2(struct check *c, uint64_t l2off, bool active, struct wisp_err *err)
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
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_l2_entry(s, copy, i), off, len;
        switch (qcow2_entry_type(s, e)) {
        case QCOW2_C_COMPRESSED:
            qcow2_compressed_range(s, e, &off, &len);
            add_ref(c, off, len, "compressed cluster");
            if (active) {
                c->r->allocated_clusters++;
                c->r->compressed_clusters++;
            }
            break;
        case QCOW2_C_NORMAL:
        case QCOW2_C_ZERO_ALLOC:
            off = e & QCOW2_OFFSET_MASK;
            if (off & (s->cluster_size - 1)) {
                report(c, "ERROR offset=%" PRIx64 ": data cluster is not properly aligned", off);
                c->r->corruptions++;
                break;
            }
            add_ref(c, off, s->cluster_size, "data cluster");
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

static int walk_l1(struct check *c, const uint64_t *l1, uint32_t n, bool active,
                   struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2)
            continue;
        if (l2 & (s->cluster_size - 1) || (l2 >> s->cluster_bits) >= c->nclusters) {
            report(c, "ERROR l2_offset=%" PRIx64 ": L2 table is not aligned or beyond the file",
                   l2);
            c->r->corruptions++;
            continue;
        }
        add_ref(c, l2, s->cluster_size, "L2 table");
        int ret = walk_l2(c, l2, active, err);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int walk_snapshots(struct check *c, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    for (uint32_t k = 0; k < s->nb_snapshots; k++) {
        struct qcow2_snapshot *sn = &s->snaps[k];
        add_ref(c, sn->l1_table_offset, (uint64_t)sn->l1_size * 8, "snapshot L1 table");
        cleanup_free uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);
        if (!l1)
            return wisp_err_sys(err, ENOMEM, "%s: check", s->name);
        int ret = block_file_pread(s->file, sn->l1_table_offset, l1, (size_t)sn->l1_size * 8, err);
        if (ret < 0)
            return ret;
        for (uint32_t i = 0; i < sn->l1_size; i++)
            l1[i] = be64toh(l1[i]);
        if ((ret = walk_l1(c, l1, sn->l1_size, false, err)) < 0)
            return ret;
    }
    return 0;
}

/* Active L1/L2 entries must carry OFLAG_COPIED exactly when the refcount is 1. */
static int check_copied(struct check *c, int fix, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2 = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        if (!l2 || (l2 >> s->cluster_bits) >= c->nclusters)
            continue;
        int ret = qcow2_get_refcount(s, l2 >> s->cluster_bits, &rc, err);
        if (ret < 0)
            return ret;
        bool want = c->refs[l2 >> s->cluster_bits] == 1;
        if (want != !!(s->l1[i] & QCOW2_OFLAG_COPIED)) {
            report(c,
                   "ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64
                   " refcount=%" PRIu64,
                   i, s->l1[i], rc);
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
            if ((ret = qcow2_l2_get(s, l2, false, &t, err)) < 0)
                return ret;
            uint64_t e = qcow2_l2_entry(s, t, j), bmp = qcow2_l2_bitmap(s, t, j);
            enum qcow2_ctype ty = qcow2_entry_type(s, e);
            if (ty != QCOW2_C_NORMAL && ty != QCOW2_C_ZERO_ALLOC)
                continue;
            uint64_t hc = (e & QCOW2_OFFSET_MASK) >> s->cluster_bits;
            if (hc >= c->nclusters)
                continue;
            bool w = c->refs[hc] == 1;
            if (w == !!(e & QCOW2_OFLAG_COPIED))
                continue;
            report(c, "ERROR OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%u", e,
                   c->refs[hc]);
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

static int compare_cluster(struct check *c, uint64_t i, int fix, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    uint64_t stored, want = i < c->nclusters ? c->refs[i] : 0;
    int ret = qcow2_get_refcount(s, i, &stored, err);
    if (ret < 0 || stored == want)
        return ret;
    bool leak = stored > want;
    report(c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
           leak ? "Leaked" : "ERROR", i, stored, want);
    int need = leak ? QCOW2_FIX_LEAKS : QCOW2_FIX_ERRORS;
    if (!(fix & need) || (!leak && want > s->refcount_max)) {
        if (leak)
            c->r->leaks++;
        else
            c->r->corruptions++;
        return 0;
    }
    ret = qcow2_update_refcount(s, i << s->cluster_bits, 1, (int64_t)(want - stored), err);
    if (ret < 0)
        return ret;
    if (leak)
        c->r->leaks_fixed++;
    else
        c->r->corruptions_fixed++;
    return 0;
}

static int compare_refcounts(struct check *c, int fix, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    uint64_t per_rb = 1ull << s->rb_bits;
    for (uint64_t i = 0; i < c->nclusters; i++) {
        int ret = compare_cluster(c, i, fix, err);
        if (ret < 0)
            return ret;
        if (c->refs[i])
            c->r->image_end_offset = (i + 1) << s->cluster_bits;
    }
    /* refcounts stored for clusters past the end of the file are leaks too */
    for (uint64_t idx = c->nclusters / per_rb; idx < s->rt_entries; idx++) {
        if (!s->rt[idx])
            continue;
        for (uint64_t i = idx * per_rb; i < (idx + 1) * per_rb; i++) {
            if (i < c->nclusters)
                continue;
            int ret = compare_cluster(c, i, fix, err);
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

static int count_refs(struct check *c, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    add_ref(c, 0, s->cluster_size, "header");
    add_ref(c, s->l1_offset, (uint64_t)s->l1_size * 8, "L1 table");
    int ret = walk_l1(c, s->l1, s->l1_size, true, err);
    if (ret == 0)
        ret = walk_snapshots(c, err);
    if (ret < 0)
        return ret;
    if (s->nb_snapshots)
        add_ref(c, s->snapshots_offset, s->snapshots_size, "snapshot table");
    add_ref(c, s->rt_offset, (uint64_t)s->rt_clusters << s->cluster_bits, "refcount table");
    for (uint64_t i = 0; i < s->rt_entries; i++)
        if (s->rt[i])
            add_ref(c, s->rt[i], s->cluster_size, "refcount block");
    return 0;
}

int qcow2_check(struct block_dev *bs, int fix, struct qcow2_check_result *r, struct wisp_err *err)
{
    if (bs->drv != &qcow2_driver)
        return wisp_err_set(err, EINVAL, "%s: not a qcow2 node", bs->filename);
    struct qcow2_state *s = bs->opaque;
    if (fix && s->read_only)
        return wisp_err_set(err, EROFS, "%s: cannot repair a read-only image", s->name);
    uint64_t fsize;
    int ret = block_file_size(s->file, &fsize, err);
    if (ret < 0)
        return ret;
    struct check c = {.s = s, .r = r};
    c.nclusters = qcow2_align_up(fsize, s->cluster_size) >> s->cluster_bits;
    c.refs = calloc(c.nclusters + 1, sizeof(*c.refs));
    if (!c.refs)
        return wisp_err_sys(err, ENOMEM, "%s: check of %" PRIu64 " clusters", s->name, c.nclusters);
    r->total_clusters = qcow2_align_up(s->size, s->cluster_size) >> s->cluster_bits;
    pthread_mutex_lock(&s->lock);
    if (!s->read_only)
        ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = count_refs(&c, err);
    if (ret == 0)
        ret = compare_refcounts(&c, fix, err);
    if (ret == 0)
        ret = check_copied(&c, fix, err);
    if (ret == 0 && fix)
        ret = qcow2_flush_metadata(s, err);
    if (ret == 0 && fix)
        ret = block_file_flush(s->file, err);
    pthread_mutex_unlock(&s->lock);
    free(c.refs);
    if (ret < 0)
        r->check_errors++;
    return ret;
}
