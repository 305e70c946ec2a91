/* qcow2 repair: a new refcount structure (QEMU's rebuild_refcount_structure), used by
 * qcow2_check when the old one cannot be trusted (a refcount table entry that is invalid or
 * names a cluster holding something else, a referenced cluster without a refcount block).
 * The refcounts come from the references the check counted, never from the old blocks; the new
 * blocks and table go to fresh clusters past the end of the file, so nothing in use is written;
 * the header switches to them in one write once they are on disk. The old blocks and table are
 * then referenced by nothing and count as free. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_check.h"
#include "common/cleanup.h"

struct layout {
    uint64_t end;     /* first cluster of the new structure (end of everything else) */
    uint64_t regions; /* refcount table entries needed */
    uint64_t nblocks; /* refcount blocks (regions with something to count) */
    uint64_t rt_clusters;
    uint8_t *needed; /* per region: has a block */
};

static bool region_used(const struct qcow2_check *c, uint64_t r, uint64_t per_rb)
{
    for (uint64_t i = r * per_rb; i < (r + 1) * per_rb && i < c->nclusters; i++)
        if (c->refs[i])
            return true;
    return false;
}

/* The fixed point: blocks for every used region, including those the new structure itself
 * occupies, and a table with an entry for each. */
static int plan(struct qcow2_check *c, struct layout *l, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    uint64_t per_rb = 1ull << s->rb_bits, per_rt = s->cluster_size / 8;
    uint64_t m = 0, t = 0, pm, pt;
    l->end = c->nclusters;
    do {
        pm = m, pt = t;
        uint64_t total = l->end + m + t;
        l->regions = (total + per_rb - 1) / per_rb;
        free(l->needed);
        if (!(l->needed = calloc(l->regions, 1)))
            return wisp_err_sys(err, ENOMEM, "%s: refcount rebuild", s->name);
        m = 0;
        for (uint64_t r = 0; r < l->regions; r++) {
            bool ours = (r + 1) * per_rb > l->end; /* holds part of the new structure */
            l->needed[r] = ours || region_used(c, r, per_rb);
            m += l->needed[r];
        }
        t = (l->regions + per_rt - 1) / per_rt;
    } while (m != pm || t != pt);
    l->nblocks = m;
    l->rt_clusters = t;
    if (t * s->cluster_size > QCOW2_MAX_RT_BYTES)
        return wisp_err_set(err, EFBIG, "%s: the new refcount table would be too large", s->name);
    return 0;
}

/* Writes the blocks, then the table; *rt = the new table (host endian). */
static int write_structure(struct qcow2_check *c, const struct layout *l, uint32_t *refs,
                           uint64_t *rt, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    uint64_t per_rb = 1ull << s->rb_bits, total = l->end + l->nblocks + l->rt_clusters;
    cleanup_free uint8_t *buf = malloc(s->cluster_size);
    cleanup_free uint64_t *be = calloc(l->rt_clusters, s->cluster_size);
    if (!buf || !be)
        return wisp_err_sys(err, ENOMEM, "%s: refcount rebuild", s->name);
    uint64_t next = l->end;
    for (uint64_t r = 0; r < l->regions; r++) {
        if (!l->needed[r])
            continue;
        memset(buf, 0, s->cluster_size);
        for (uint64_t i = 0; i < per_rb && r * per_rb + i < total; i++) {
            uint64_t v = refs[r * per_rb + i];
            if (v > s->refcount_max)
                return wisp_err_set(err, EOVERFLOW,
                                    "%s: cluster %" PRIu64 " has %" PRIu64
                                    " references, more than refcount_bits can hold",
                                    s->name, r * per_rb + i, v);
            qcow2_rb_entry_set(s, buf, i, v);
        }
        rt[r] = next << s->cluster_bits;
        be[r] = htobe64(rt[r]);
        int ret = qcow2_write_meta(s, QCOW2_META_RB, rt[r], buf, s->cluster_size, err);
        if (ret < 0)
            return ret;
        next++;
    }
    return qcow2_write_meta(s, QCOW2_META_RT, next << s->cluster_bits, be,
                            l->rt_clusters << s->cluster_bits, err);
}

/* Makes the new table the image's (in memory and in the header). */
static int switch_table(struct qcow2_state *s, uint64_t *rt, uint64_t entries, uint64_t off,
                        uint32_t clusters, struct wisp_err *err)
{
    uint64_t *old = s->rt, old_entries = s->rt_entries, old_off = s->rt_offset;
    uint32_t old_clusters = s->rt_clusters;
    s->rt = rt;
    s->rt_entries = entries;
    s->rt_offset = off;
    s->rt_clusters = clusters;
    int ret = qcow2_write_header(s, err);
    if (ret < 0) { /* the header still names the old table */
        s->rt = old;
        s->rt_entries = old_entries;
        s->rt_offset = old_off;
        s->rt_clusters = old_clusters;
        return ret;
    }
    free(old);
    return qcow2_barrier(s, err);
}

int qcow2_rebuild_refcounts(struct qcow2_check *c, struct wisp_err *err)
{
    struct qcow2_state *s = c->s;
    struct layout l = {0};
    qcow2_check_report(c, "Rebuilding refcount structure");
    /* the old table and blocks are not counted: they are being replaced */
    for (uint64_t i = 0; i < s->rt_clusters; i++)
        c->refs[(s->rt_offset >> s->cluster_bits) + i]--;
    for (uint64_t i = 0; i < s->rt_entries; i++)
        if (c->rb_valid[i])
            c->refs[s->rt[i] >> s->cluster_bits]--;
    int ret = plan(c, &l, err);
    uint64_t total = l.end + l.nblocks + l.rt_clusters, per_rt = s->cluster_size / 8;
    cleanup_free uint32_t *refs = ret == 0 ? calloc(total + 1, sizeof(*refs)) : NULL;
    cleanup_free uint64_t *rt = ret == 0 ? calloc(l.rt_clusters * per_rt, 8) : NULL;
    if (ret == 0 && (!refs || !rt))
        ret = wisp_err_sys(err, ENOMEM, "%s: refcount rebuild", s->name);
    if (ret == 0) {
        memcpy(refs, c->refs, c->nclusters * sizeof(*refs));
        for (uint64_t i = l.end; i < total; i++)
            refs[i] = 1;
        uint64_t new_off = l.end << s->cluster_bits;
        if (s->host_end < total << s->cluster_bits)
            s->host_end = total << s->cluster_bits;
        if (qcow2_meta_update(s, new_off, l.nblocks << s->cluster_bits, QCOW2_META_RB, 0) < 0 ||
            qcow2_meta_update(s, (l.end + l.nblocks) << s->cluster_bits,
                              l.rt_clusters << s->cluster_bits, QCOW2_META_RT, 0) < 0)
            ret = wisp_err_set(err, ENOMEM, "%s: metadata map", s->name);
    }
    if (ret == 0)
        ret = write_structure(c, &l, refs, rt, err);
    if (ret == 0)
        ret = qcow2_barrier(s, err);
    for (unsigned i = 0; ret == 0 && i < s->rb_cache.nr_slots; i++) /* old blocks */
        s->rb_cache.slots[i].offset = 0, s->rb_cache.slots[i].dirty = false;
    if (ret == 0)
        ret = switch_table(s, rt, l.rt_clusters * per_rt, (l.end + l.nblocks) << s->cluster_bits,
                           (uint32_t)l.rt_clusters, err);
    if (s->rt == rt)
        rt = NULL; /* the image's table now */
    if (ret == 0) {
        s->rt_reserved = 0; /* the new table has none */
        s->free_hint = 0;
        s->free_hint_bytes = 0;
        ret = qcow2_meta_build(s, !s->repair, err);
    }
    free(l.needed);
    return ret < 0 ? wisp_err_wrap(err, "%s: rebuilding the refcount structure", s->name) : 0;
}
