/* qcow2 metadata caches (L2 tables and refcount blocks, LRU, write-back) and the order in which
 * cached metadata reaches the disk.
 *
 * Crash safety (what QEMU guarantees, see docs/qcow2.md): on disk a cluster must never be
 * referenced by an L2/L1 entry while its refcount is lower than the references. So:
 *   1. refcount blocks (increments) are written first, then a barrier (qcow2_barrier),
 *   2. then L2 tables, then a barrier if the L1 table changed, then the L1 table,
 *   3. refcount decrements are kept in a deferred list and applied only after 2. is on disk
 *      (barrier), so a freed cluster is never reused while an on-disk L2 entry points to it.
 * A crash between any two steps leaves leaked clusters at worst. With lazy refcounts (dirty bit
 * set) step 1's barrier is skipped: the refcounts are rebuilt on the next open. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"

/* Slot buffers are allocated on first use, so a big cache costs nothing for a small image. */
int qcow2_cache_init(struct qcow2_cache *c, unsigned nr_slots, uint64_t cluster_size)
{
    c->slots = calloc(nr_slots, sizeof(*c->slots));
    if (!c->slots)
        return -ENOMEM;
    c->nr_slots = nr_slots;
    return 0;
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
    if (!c->slots)
        return;
    for (unsigned i = 0; i < c->nr_slots; i++)
        free(c->slots[i].data);
    free(c->slots);
    c->slots = NULL;
}

void qcow2_cache_forget(struct qcow2_cache *c, uint64_t offset)
{
    for (unsigned i = 0; i < c->nr_slots; i++)
        if (c->slots[i].offset == offset) {
            c->slots[i].offset = 0;
            c->slots[i].dirty = false;
        }
}

static int write_slot(struct qcow2_state *s, struct qcow2_cached_table *t, bool is_l2,
                      struct wisp_err *err)
{
    const char *what = is_l2 ? "L2 table" : "refcount block";
    /* an L2 table may be shared with a snapshot (check fixes flags in such tables) */
    unsigned kind = is_l2 ? QCOW2_META_L2 | QCOW2_META_SNAP_L2 : QCOW2_META_RB;
    int ret = qcow2_write_meta(s, kind, t->offset, t->data, s->cluster_size, err);
    if (ret < 0)
        return wisp_err_wrap(err, "%s: writing %s at offset 0x%" PRIx64, s->name, what, t->offset);
    t->dirty = false;
    return 0;
}

static int write_dirty(struct qcow2_state *s, struct qcow2_cache *c, bool is_l2, unsigned *written,
                       struct wisp_err *err)
{
    for (unsigned i = 0; i < c->nr_slots; i++) {
        if (!c->slots[i].dirty)
            continue;
        int ret = write_slot(s, &c->slots[i], is_l2, err);
        if (ret < 0)
            return ret;
        (*written)++;
    }
    return 0;
}

static bool cache_has_dirty(const struct qcow2_cache *c)
{
    for (unsigned i = 0; i < c->nr_slots; i++)
        if (c->slots[i].dirty)
            return true;
    return false;
}

static bool lazy(const struct qcow2_state *s)
{
    return s->dirty_by_us;
}

/* Step 1: refcount blocks, then the barrier that orders them before any L2 write. */
static int flush_refcounts_before_l2(struct qcow2_state *s, struct wisp_err *err)
{
    unsigned n = 0;
    int ret = write_dirty(s, &s->rb_cache, false, &n, err);
    if (ret == 0 && n && !lazy(s))
        ret = qcow2_barrier(s, err);
    return ret;
}

int qcow2_write_l1(struct qcow2_state *s, struct wisp_err *err)
{
    size_t bytes = (size_t)s->l1_size * 8;
    uint64_t *be = malloc(bytes ? bytes : 8);
    if (!be)
        return wisp_err_sys(err, ENOMEM, "%s: L1 table", s->name);
    for (uint32_t i = 0; i < s->l1_size; i++)
        be[i] = htobe64(s->l1[i]);
    int ret = bytes ? qcow2_write_meta(s, QCOW2_META_L1, s->l1_offset, be, bytes, err) : 0;
    free(be);
    if (ret < 0)
        return wisp_err_wrap(err, "%s: writing the L1 table at offset 0x%" PRIx64, s->name,
                             s->l1_offset);
    s->l1_dirty = false;
    return 0;
}

int qcow2_flush_metadata(struct qcow2_state *s, struct wisp_err *err)
{
    int ret = 0;
    if (cache_has_dirty(&s->l2_cache) || s->l1_dirty)
        ret = flush_refcounts_before_l2(s, err);
    unsigned n = 0;
    if (ret == 0)
        ret = write_dirty(s, &s->l2_cache, true, &n, err);
    if (ret == 0 && s->l1_dirty) {
        if (n)
            ret = qcow2_barrier(s, err);
        if (ret == 0)
            ret = qcow2_write_l1(s, err);
        n++;
    }
    if (ret == 0 && s->nr_deferred) {
        if (n)
            ret = qcow2_barrier(s, err);
        if (ret == 0)
            ret = qcow2_apply_deferred_frees(s, err);
    }
    unsigned m = 0;
    if (ret == 0)
        ret = write_dirty(s, &s->rb_cache, false, &m, err);
    return ret;
}

/* Finds or loads a table; evicts the least recently used slot. */
static int cache_get(struct qcow2_state *s, struct qcow2_cache *c, bool is_l2, uint64_t offset,
                     bool fresh, uint8_t **table, struct wisp_err *err)
{
    struct qcow2_cached_table *victim = NULL;
    if (offset == 0 || (offset & (s->cluster_size - 1)))
        return wisp_err_set(err, EIO, "%s: %s at invalid offset 0x%" PRIx64 " (corrupt image)",
                            s->name, is_l2 ? "L2 table" : "refcount block", offset);
    c->tick++;
    for (unsigned i = 0; i < c->nr_slots; i++) {
        struct qcow2_cached_table *t = &c->slots[i];
        if (t->offset == offset) {
            t->last_use = c->tick;
            if (fresh)
                memset(t->data, 0, s->cluster_size);
            *table = t->data;
            return 0;
        }
        if (!victim || (victim->offset && (!t->offset || t->last_use < victim->last_use)))
            victim = t;
    }
    int ret;
    if (!victim->data && posix_memalign((void **)&victim->data, 4096, s->cluster_size)) {
        victim->data = NULL;
        return wisp_err_sys(err, ENOMEM, "%s: metadata cache", s->name);
    }
    if (victim->dirty) {
        if (is_l2 && (ret = flush_refcounts_before_l2(s, err)) < 0)
            return ret;
        if ((ret = write_slot(s, victim, is_l2, err)) < 0)
            return ret;
    }
    victim->offset = 0;
    if (fresh) {
        memset(victim->data, 0, s->cluster_size);
    } else if ((ret = block_file_pread(s->file, offset, victim->data, s->cluster_size, err)) < 0) {
        return wisp_err_wrap(err, "%s: reading %s at offset 0x%" PRIx64, s->name,
                             is_l2 ? "L2 table" : "refcount block", offset);
    }
    victim->offset = offset;
    victim->last_use = c->tick;
    *table = victim->data;
    return 0;
}

int qcow2_l2_get(struct qcow2_state *s, uint64_t offset, bool fresh, uint8_t **table,
                 struct wisp_err *err)
{
    return cache_get(s, &s->l2_cache, true, offset, fresh, table, err);
}

int qcow2_rb_get(struct qcow2_state *s, uint64_t offset, bool fresh, uint8_t **table,
                 struct wisp_err *err)
{
    return cache_get(s, &s->rb_cache, false, offset, fresh, table, err);
}

static void mark_dirty(struct qcow2_cache *c, const uint8_t *table)
{
    for (unsigned i = 0; i < c->nr_slots; i++)
        if (c->slots[i].data == table && c->slots[i].offset) {
            c->slots[i].dirty = true;
            return;
        }
}

void qcow2_l2_mark_dirty(struct qcow2_state *s, const uint8_t *table)
{
    mark_dirty(&s->l2_cache, table);
}

void qcow2_rb_mark_dirty(struct qcow2_state *s, const uint8_t *table)
{
    mark_dirty(&s->rb_cache, table);
}
