/* qcow2 walks over everything an L1 table reaches (spec "Snapshots": a cluster's refcount counts
 * the L1 tables that reach it): adding or dropping one reference to every L2 table and cluster,
 * all entries validated before anything changes and undone when a step fails midway; and
 * OFLAG_COPIED set exactly where the refcount is 1. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

/* The host range an L2 entry holds a reference on; false when it holds none. */
static bool entry_range(const struct qcow2_state *s, uint64_t e, uint64_t *off, uint64_t *len)
{
    switch (qcow2_entry_type(s, e)) {
    case QCOW2_C_COMPRESSED:
        qcow2_compressed_range(s, e, off, len);
        return true;
    case QCOW2_C_NORMAL:
    case QCOW2_C_ZERO_ALLOC:
        *off = e & QCOW2_OFFSET_MASK;
        *len = s->cluster_size;
        return true;
    default:
        return false;
    }
}

/* Every L2 table the L1 table names, and every entry in them, may be used. */
static int tree_validate(struct qcow2_state *s, const uint64_t *l1, uint32_t n,
                         struct wisp_err *err)
{
    char why[160];
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2)
            continue;
        const char *bad = qcow2_l2_table_problem(s, l1[i], QCOW2_META_L2, why, sizeof(why));
        if (bad)
            return qcow2_corrupt(s, err, "L1 entry %u (0x%016" PRIx64 ") %s", i, l1[i], bad);
        uint8_t *t;
        int ret = qcow2_l2_get(s, l2, false, &t, err);
        if (ret < 0)
            return ret;
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint64_t e = qcow2_l2_entry(s, t, j), bmp = qcow2_l2_bitmap(s, t, j);
            if ((bad = qcow2_l2_entry_problem(s, e, bmp, why, sizeof(why))))
                return qcow2_corrupt(
                    s, err, "invalid L2 entry 0x%016" PRIx64 " at offset 0x%" PRIx64 ": %s", e,
                    l2 + j * s->l2_entry_bytes, bad);
        }
    }
    return 0;
}

static int tree_one(struct qcow2_state *s, uint64_t off, uint64_t len, enum qcow2_tree_op op,
                    struct wisp_err *err)
{
    switch (op) {
    case QCOW2_TREE_INC:
        return qcow2_update_refcount(s, off, len, 1, err);
    case QCOW2_TREE_DEC_NOW:
        return qcow2_update_refcount(s, off, len, -1, err);
    case QCOW2_TREE_DEC_DEFERRED:
        return qcow2_free_deferred(s, off, len, err);
    }
    return -EINVAL;
}

/* Applies op to the first `limit` ranges in walk order (tables, then their entries); *done =
 * how many were applied. */
static int tree_walk(struct qcow2_state *s, const uint64_t *l1, uint32_t n, enum qcow2_tree_op op,
                     uint64_t limit, uint64_t *done, struct wisp_err *err)
{
    cleanup_free uint8_t *copy = malloc(s->cluster_size);
    if (!copy)
        return wisp_err_sys(err, ENOMEM, "%s: L2 table copy", s->name);
    *done = 0;
    for (uint32_t i = 0; i < n && *done < limit; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK, off, len;
        if (!l2)
            continue;
        uint8_t *t;
        int ret = qcow2_l2_get(s, l2, false, &t, err);
        if (ret < 0)
            return ret;
        memcpy(copy, t, s->cluster_size); /* refcount updates may evict the table */
        if ((ret = tree_one(s, l2, s->cluster_size, op, err)) < 0)
            return ret;
        (*done)++;
        for (uint64_t j = 0; j < s->l2_entries && *done < limit; j++) {
            if (!entry_range(s, qcow2_l2_entry(s, copy, j), &off, &len))
                continue;
            if ((ret = tree_one(s, off, len, op, err)) < 0)
                return ret;
            (*done)++;
        }
    }
    return 0;
}

int qcow2_refcount_tree(struct qcow2_state *s, const uint64_t *l1, uint32_t n,
                        enum qcow2_tree_op op, struct wisp_err *err)
{
    int ret = tree_validate(s, l1, n, err);
    if (ret < 0)
        return ret;
    unsigned nr_deferred = s->nr_deferred;
    uint64_t last_len = nr_deferred ? s->deferred[nr_deferred - 1].len : 0;
    uint64_t done = 0, undone;
    if ((ret = tree_walk(s, l1, n, op, UINT64_MAX, &done, err)) == 0)
        return 0;
    if (op == QCOW2_TREE_DEC_DEFERRED) { /* nothing happened yet: forget the list's new part */
        s->nr_deferred = nr_deferred;
        if (nr_deferred)
            s->deferred[nr_deferred - 1].len = last_len;
    } else {
        struct wisp_err ignored = {0};
        enum qcow2_tree_op back = op == QCOW2_TREE_INC ? QCOW2_TREE_DEC_NOW : QCOW2_TREE_INC;
        tree_walk(s, l1, n, back, done, &undone, &ignored);
    }
    return ret;
}

int qcow2_fix_copied(struct qcow2_state *s, struct wisp_err *err)
{
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2 = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        if (!l2)
            continue;
        int ret = qcow2_get_refcount(s, l2 >> s->cluster_bits, &rc, err);
        if (ret < 0)
            return ret;
        uint64_t ne = rc == 1 ? s->l1[i] | QCOW2_OFLAG_COPIED : s->l1[i] & ~QCOW2_OFLAG_COPIED;
        if (ne != s->l1[i]) {
            s->l1[i] = ne;
            s->l1_dirty = true;
        }
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint8_t *t;
            if ((ret = qcow2_l2_get(s, l2, false, &t, err)) < 0)
                return ret;
            uint64_t e = qcow2_l2_entry(s, t, j), bmp = qcow2_l2_bitmap(s, t, j), drc;
            enum qcow2_ctype ty = qcow2_entry_type(s, e);
            if (ty != QCOW2_C_NORMAL && ty != QCOW2_C_ZERO_ALLOC)
                continue;
            if ((ret = qcow2_get_refcount(s, (e & QCOW2_OFFSET_MASK) >> s->cluster_bits, &drc,
                                          err)) < 0)
                return ret;
            uint64_t n2 = drc == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
            if (n2 != e) {
                if ((ret = qcow2_l2_get(s, l2, false, &t, err)) < 0)
                    return ret;
                qcow2_l2_set(s, t, j, n2, bmp);
            }
        }
    }
    return 0;
}
