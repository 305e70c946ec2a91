/* qcow2 internal snapshots (spec "Snapshots"): the snapshot table, and create/list/apply/delete
 * with refcount updates. A cluster's refcount counts the L1 tables that reach it (through any
 * L2 table), so a snapshot adds one to every L2 table and data cluster of the active state. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

#define SNAP_MAX_TABLE (64u << 20)

void qcow2_free_snapshots(struct qcow2_state *s)
{
    for (uint32_t i = 0; s->snaps && i < s->nb_snapshots; i++) {
        free(s->snaps[i].id);
        free(s->snaps[i].name);
    }
    free(s->snaps);
    s->snaps = NULL;
}

static int read_one(struct qcow2_state *s, uint64_t *pos, struct qcow2_snapshot *sn,
                    struct wisp_err *err)
{
    uint8_t h[40], extra[24] = {0};
    int ret = block_file_pread(s->file, *pos, h, sizeof(h), err);
    if (ret < 0)
        return ret;
    sn->l1_table_offset = qcow2_be64(h);
    sn->l1_size = qcow2_be32(h + 8);
    uint16_t id_len = qcow2_be16(h + 12), name_len = qcow2_be16(h + 14);
    sn->date_sec = qcow2_be32(h + 16);
    sn->date_nsec = qcow2_be32(h + 20);
    sn->vm_clock_nsec = qcow2_be64(h + 24);
    sn->vm_state_size = qcow2_be32(h + 32);
    sn->extra_size = qcow2_be32(h + 36);
    if (sn->extra_size > 1024)
        return wisp_err_set(err, EINVAL,
                            "%s: snapshot at offset 0x%" PRIx64 " has %u bytes of extra data",
                            s->name, *pos, sn->extra_size);
    uint64_t p = *pos + 40;
    size_t n = sn->extra_size < sizeof(extra) ? sn->extra_size : sizeof(extra);
    if (n && (ret = block_file_pread(s->file, p, extra, n, err)) < 0)
        return ret;
    sn->disk_size = s->size;
    if (n >= 8)
        sn->vm_state_size = qcow2_be64(extra);
    if (n >= 16)
        sn->disk_size = qcow2_be64(extra + 8);
    if (n >= 24) {
        sn->icount_valid = true;
        sn->icount = qcow2_be64(extra + 16);
    }
    p += sn->extra_size;
    sn->id = calloc(1, id_len + 1u);
    sn->name = calloc(1, name_len + 1u);
    if (!sn->id || !sn->name)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot table", s->name);
    if ((ret = block_file_pread(s->file, p, sn->id, id_len, err)) < 0 ||
        (ret = block_file_pread(s->file, p + id_len, sn->name, name_len, err)) < 0)
        return ret;
    *pos = qcow2_align_up(p + id_len + name_len, 8);
    if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return wisp_err_set(err, EINVAL, "%s: snapshot '%s' has an L1 table of %u entries", s->name,
                            sn->name, sn->l1_size);
    return sn->l1_size
               ? qcow2_check_metadata_range(s, sn->l1_table_offset, (uint64_t)sn->l1_size * 8,
                                            "snapshot L1 table", err)
               : 0;
}

int qcow2_read_snapshots(struct qcow2_state *s, struct wisp_err *err)
{
    s->snaps = calloc(s->nb_snapshots + 1u, sizeof(*s->snaps));
    if (!s->snaps)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot table", s->name);
    uint64_t pos = s->snapshots_offset;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        int ret = read_one(s, &pos, &s->snaps[i], err);
        if (ret < 0)
            return ret;
        if (pos - s->snapshots_offset > SNAP_MAX_TABLE)
            return wisp_err_set(err, EINVAL, "%s: snapshot table at 0x%" PRIx64 " is too large",
                                s->name, s->snapshots_offset);
    }
    s->snapshots_size = pos - s->snapshots_offset;
    return 0;
}

static size_t entry_size(const struct qcow2_snapshot *sn)
{
    return qcow2_align_up(40 + 24 + strlen(sn->id) + strlen(sn->name), 8);
}

/* Writes the table to new clusters, switches the header to it, frees the old one. *committed:
 * the header names the new table (from then on a failure does not undo anything). */
static int write_snapshot_table(struct qcow2_state *s, bool *committed, struct wisp_err *err)
{
    *committed = false;
    size_t total = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        total += entry_size(&s->snaps[i]);
    cleanup_free uint8_t *buf = calloc(1, total + 8);
    if (!buf)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot table", s->name);
    uint8_t *p = buf;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snaps[i];
        size_t il = strlen(sn->id), nl = strlen(sn->name);
        qcow2_put_be64(p, sn->l1_table_offset);
        qcow2_put_be32(p + 8, sn->l1_size);
        qcow2_put_be16(p + 12, (uint16_t)il);
        qcow2_put_be16(p + 14, (uint16_t)nl);
        qcow2_put_be32(p + 16, sn->date_sec);
        qcow2_put_be32(p + 20, sn->date_nsec);
        qcow2_put_be64(p + 24, sn->vm_clock_nsec);
        qcow2_put_be32(p + 32, (uint32_t)(sn->vm_state_size > UINT32_MAX ? 0 : sn->vm_state_size));
        qcow2_put_be32(p + 36, 24);
        qcow2_put_be64(p + 40, sn->vm_state_size);
        qcow2_put_be64(p + 48, sn->disk_size);
        qcow2_put_be64(p + 56, sn->icount_valid ? sn->icount : UINT64_MAX);
        memcpy(p + 64, sn->id, il);
        memcpy(p + 64 + il, sn->name, nl);
        p += entry_size(sn);
    }
    uint64_t off = 0, old = s->snapshots_offset, old_size = s->snapshots_size;
    uint64_t bytes = qcow2_align_up(total, s->cluster_size);
    int ret = 0;
    if (total && (ret = qcow2_alloc_clusters(s, bytes >> s->cluster_bits, &off, err)) < 0)
        return ret;
    if (total && qcow2_meta_update(s, off, bytes, QCOW2_META_SNAP_TABLE, 0) < 0)
        ret = wisp_err_set(err, ENOMEM, "%s: metadata map", s->name);
    if (ret == 0 && total)
        ret = qcow2_write_meta(s, QCOW2_META_SNAP_TABLE, off, buf, total, err);
    if (ret == 0)
        ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = qcow2_barrier(s, err);
    if (ret == 0) {
        s->snapshots_offset = off;
        s->snapshots_size = total;
        if ((ret = qcow2_write_header(s, err)) < 0) { /* the header names the old table */
            s->snapshots_offset = old;
            s->snapshots_size = old_size;
        }
    }
    if (ret < 0) {
        if (total) { /* never referenced: give the new clusters back now */
            qcow2_meta_update(s, off, bytes, 0, QCOW2_META_SNAP_TABLE);
            qcow2_update_refcount(s, off, bytes, -1, NULL);
        }
        return ret;
    }
    *committed = true;
    ret = qcow2_barrier(s, err);
    if (old_size) {
        qcow2_meta_update(s, old, qcow2_align_up(old_size, s->cluster_size), 0,
                          QCOW2_META_SNAP_TABLE);
        int r2 = qcow2_free_deferred(s, old, qcow2_align_up(old_size, s->cluster_size), err);
        ret = ret < 0 ? ret : r2;
    }
    return ret;
}

/* The qcow2 state of bs in *out, or an error when bs is not qcow2 or (with write) read-only. */
static int snap_state(struct block_dev *bs, bool write, struct qcow2_state **out,
                      struct wisp_err *err)
{
    if (bs->drv != &qcow2_driver)
        return wisp_err_set(err, EINVAL, "%s: not a qcow2 node", bs->filename);
    struct qcow2_state *s = bs->opaque;
    if (write && s->read_only)
        return wisp_err_set(err, EROFS, "%s: image is read-only", s->name);
    *out = s;
    return 0;
}

/* After a snapshot operation (done or undone) the map is built again from the tables: L2 tables
 * now shared with a snapshot, or no longer used by any. */
static int rebuild_map(struct qcow2_state *s, struct wisp_err *err)
{
    struct wisp_err e = {0};
    int ret = qcow2_meta_build(s, true, &e);
    if (ret < 0 && err && !err->msg[0])
        *err = e;
    return ret;
}

static int find_snapshot(struct qcow2_state *s, const char *name)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (!strcmp(s->snaps[i].name, name))
            return (int)i;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (!strcmp(s->snaps[i].id, name))
            return (int)i;
    return -1;
}

/* Writes a copy of the active L1 table to new clusters for a snapshot; *off = where. */
static int write_snapshot_l1(struct qcow2_state *s, uint64_t *off, struct wisp_err *err)
{
    uint64_t bytes = qcow2_align_up((uint64_t)s->l1_size * 8, s->cluster_size);
    *off = 0;
    if (!s->l1_size)
        return 0;
    cleanup_free uint64_t *be = calloc(bytes / 8, 8);
    if (!be)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot", s->name);
    for (uint32_t i = 0; i < s->l1_size; i++)
        be[i] = htobe64(s->l1[i]);
    int ret = qcow2_alloc_clusters(s, bytes >> s->cluster_bits, off, err);
    if (ret < 0)
        return ret;
    if (qcow2_meta_update(s, *off, bytes, QCOW2_META_SNAP_L1, 0) < 0)
        ret = wisp_err_set(err, ENOMEM, "%s: metadata map", s->name);
    if (ret == 0)
        ret = qcow2_write_meta(s, QCOW2_META_SNAP_L1, *off, be, (size_t)s->l1_size * 8, err);
    if (ret < 0) {
        qcow2_meta_update(s, *off, bytes, 0, QCOW2_META_SNAP_L1);
        qcow2_update_refcount(s, *off, bytes, -1, NULL);
        *off = 0;
    }
    return ret;
}

/* Fills a new snapshot entry (id: one more than the largest numeric id). */
static int new_entry(struct qcow2_state *s, const char *name, struct qcow2_snapshot *sn,
                     struct wisp_err *err)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned id = 1;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if ((unsigned)atoi(s->snaps[i].id) >= id)
            id = (unsigned)atoi(s->snaps[i].id) + 1;
    char idbuf[16];
    snprintf(idbuf, sizeof(idbuf), "%u", id);
    *sn = (struct qcow2_snapshot){.l1_size = s->l1_size,
                                  .date_sec = (uint32_t)ts.tv_sec,
                                  .date_nsec = (uint32_t)ts.tv_nsec,
                                  .disk_size = s->size,
                                  .id = strdup(idbuf),
                                  .name = strdup(name)};
    if (sn->id && sn->name)
        return 0;
    free(sn->id);
    free(sn->name);
    return wisp_err_sys(err, ENOMEM, "%s: snapshot", s->name);
}

/* Creates the snapshot; on failure before the header names the new table, every change is
 * undone (references, OFLAG_COPIED, new clusters), so the image is as it was. */
static int do_create(struct qcow2_state *s, const char *name, struct wisp_err *err)
{
    if (find_snapshot(s, name) >= 0)
        return wisp_err_set(err, EEXIST, "%s: snapshot '%s' already exists", s->name, name);
    /* room for the entry first: once the array holds it, nothing else reallocates it */
    struct qcow2_snapshot *arr = realloc(s->snaps, (s->nb_snapshots + 2u) * sizeof(*arr));
    if (!arr)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot", s->name);
    s->snaps = arr;
    struct qcow2_snapshot sn;
    int ret = new_entry(s, name, &sn, err);
    if (ret < 0)
        return ret;
    bool counted = false, committed = false;
    ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = qcow2_refcount_tree(s, s->l1, s->l1_size, QCOW2_TREE_INC, err);
    counted = ret == 0;
    if (ret == 0)
        ret = qcow2_fix_copied(s, err);
    if (ret == 0)
        ret = write_snapshot_l1(s, &sn.l1_table_offset, err);
    if (ret == 0) {
        s->snaps[s->nb_snapshots++] = sn;
        if ((ret = write_snapshot_table(s, &committed, err)) < 0 && !committed)
            s->nb_snapshots--;
    }
    if (ret == 0 || committed)
        return ret;
    struct wisp_err ignored = {0};
    if (sn.l1_table_offset) {
        uint64_t bytes = qcow2_align_up((uint64_t)s->l1_size * 8, s->cluster_size);
        qcow2_meta_update(s, sn.l1_table_offset, bytes, 0, QCOW2_META_SNAP_L1);
        qcow2_update_refcount(s, sn.l1_table_offset, bytes, -1, &ignored);
    }
    if (counted && qcow2_refcount_tree(s, s->l1, s->l1_size, QCOW2_TREE_DEC_NOW, &ignored) == 0)
        qcow2_fix_copied(s, &ignored);
    free(sn.id);
    free(sn.name);
    return ret;
}

int qcow2_snapshot_create(struct block_dev *bs, const char *name, struct wisp_err *err)
{
    struct qcow2_state *s = NULL;
    int sr = snap_state(bs, true, &s, err);
    if (sr < 0)
        return sr;
    if (!name || !name[0] || strlen(name) > 255)
        return wisp_err_set(err, EINVAL, "%s: invalid snapshot name", s->name);
    pthread_mutex_lock(&s->lock);
    int ret = do_create(s, name, err);
    int r2 = rebuild_map(s, err);
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? ret : r2;
}

int qcow2_snapshot_list(struct block_dev *bs, struct qcow2_snapshot_info **list, unsigned *n,
                        struct wisp_err *err)
{
    struct qcow2_state *s = NULL;
    int sr = snap_state(bs, false, &s, err);
    if (sr < 0)
        return sr;
    pthread_mutex_lock(&s->lock);
    struct qcow2_snapshot_info *l = calloc(s->nb_snapshots + 1u, sizeof(*l));
    for (uint32_t i = 0; l && i < s->nb_snapshots; i++) {
        const struct qcow2_snapshot *sn = &s->snaps[i];
        snprintf(l[i].id, sizeof(l[i].id), "%s", sn->id);
        snprintf(l[i].name, sizeof(l[i].name), "%s", sn->name);
        l[i].vm_state_size = sn->vm_state_size;
        l[i].disk_size = sn->disk_size;
        l[i].date_sec = sn->date_sec;
        l[i].date_nsec = sn->date_nsec;
        l[i].vm_clock_nsec = sn->vm_clock_nsec;
        l[i].icount_valid = sn->icount_valid;
        l[i].icount = sn->icount;
    }
    *n = s->nb_snapshots;
    pthread_mutex_unlock(&s->lock);
    if (!l)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot list", s->name);
    *list = l;
    return 0;
}

static int read_snapshot_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn, uint64_t **out,
                            struct wisp_err *err)
{
    uint64_t *l1 = calloc(sn->l1_size + 1u, 8);
    if (!l1)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot L1", s->name);
    int ret = block_file_pread(s->file, sn->l1_table_offset, l1, (size_t)sn->l1_size * 8, err);
    for (uint32_t i = 0; i < sn->l1_size; i++)
        l1[i] = be64toh(l1[i]); /* validated with the tables (qcow2_refcount_tree) */
    if (ret < 0) {
        free(l1);
        return ret;
    }
    *out = l1;
    return 0;
}

/* After a snapshot operation committed: the deferred frees, OFLAG_COPIED where refcounts are
 * now 1, everything on disk. A failure is retried once, so that a transient error does not leave
 * the flags behind the refcounts; the first error is returned. */
static int settle(struct qcow2_state *s, struct wisp_err *err)
{
    int first = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct wisp_err e = {0};
        int ret = qcow2_flush_metadata(s, &e);
        if (ret == 0)
            ret = qcow2_fix_copied(s, &e);
        if (ret == 0)
            ret = qcow2_flush_metadata(s, &e);
        if (ret == 0)
            ret = qcow2_barrier(s, &e);
        if (ret == 0)
            return first;
        if (!first) {
            first = ret;
            if (err)
                *err = e;
        }
    }
    return first;
}

/* Makes the snapshot's state the active one. The commit point is the L1 table write in the
 * second flush; a failure before it undoes the references taken and keeps the active table. */
static int do_apply(struct qcow2_state *s, struct qcow2_snapshot *sn, struct wisp_err *err)
{
    cleanup_free uint64_t *l1 = NULL, *old = NULL;
    if (sn->l1_size > s->l1_size)
        return wisp_err_set(err, ENOTSUP, "%s: snapshot '%s' has a larger L1 table than the image",
                            s->name, sn->name);
    unsigned nr_deferred = s->nr_deferred;
    int ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = read_snapshot_l1(s, sn, &l1, err);
    if (ret == 0 && !(old = malloc((size_t)s->l1_size * 8 + 8)))
        ret = wisp_err_sys(err, ENOMEM, "%s: L1 table", s->name);
    if (ret == 0)
        ret = qcow2_refcount_tree(s, l1, sn->l1_size, QCOW2_TREE_INC, err);
    if (ret < 0)
        return ret;
    nr_deferred = s->nr_deferred;
    if ((ret = qcow2_refcount_tree(s, s->l1, s->l1_size, QCOW2_TREE_DEC_DEFERRED, err)) < 0)
        goto undo;
    memcpy(old, s->l1, (size_t)s->l1_size * 8);
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1[i] = i < sn->l1_size ? l1[i] & ~QCOW2_OFLAG_COPIED : 0;
    s->l1_dirty = true;
    /* increments, barrier, new L1, barrier, decrements: qcow2_cache.c's order */
    if ((ret = qcow2_flush_metadata(s, err)) < 0) {
        if (!s->l1_dirty) { /* the new table is on disk: the apply happened */
            settle(s, NULL);
            return ret;
        }
        memcpy(s->l1, old, (size_t)s->l1_size * 8);
        s->nr_deferred = nr_deferred; /* refcount_tree appended only whole entries here */
        goto undo;
    }
    if ((ret = settle(s, err)) < 0)
        return ret;
    if (sn->disk_size != s->size) {
        uint64_t size = s->size;
        s->size = sn->disk_size;
        if ((ret = qcow2_write_header(s, err)) < 0) {
            s->size = size;
            return ret;
        }
        s->bs->size = s->size;
    }
    return qcow2_barrier(s, err);
undo:;
    struct wisp_err ignored = {0};
    qcow2_refcount_tree(s, l1, sn->l1_size, QCOW2_TREE_DEC_NOW, &ignored);
    return ret;
}

/* Drops the snapshot. The commit point is the header naming the table without it; before it,
 * the entry goes back into the table. */
static int do_delete(struct qcow2_state *s, int idx, struct wisp_err *err)
{
    struct qcow2_snapshot sn = s->snaps[idx];
    cleanup_free uint64_t *l1 = NULL;
    int ret = read_snapshot_l1(s, &sn, &l1, err);
    if (ret < 0)
        return ret;
    memmove(&s->snaps[idx], &s->snaps[idx + 1], (s->nb_snapshots - (uint32_t)idx - 1) * sizeof(sn));
    s->nb_snapshots--;
    bool committed;
    if ((ret = write_snapshot_table(s, &committed, err)) < 0 && !committed) {
        memmove(&s->snaps[idx + 1], &s->snaps[idx], (s->nb_snapshots - (uint32_t)idx) * sizeof(sn));
        s->snaps[idx] = sn;
        s->nb_snapshots++;
        return ret;
    }
    free(sn.id);
    free(sn.name);
    /* the snapshot is gone (even if the barrier after the header failed): drop its references */
    struct wisp_err later = {0};
    int r = qcow2_refcount_tree(s, l1, sn.l1_size, QCOW2_TREE_DEC_DEFERRED, &later);
    if (r == 0 && sn.l1_size) {
        uint64_t bytes = qcow2_align_up((uint64_t)sn.l1_size * 8, s->cluster_size);
        qcow2_meta_update(s, sn.l1_table_offset, bytes, 0, QCOW2_META_SNAP_L1);
        r = qcow2_free_deferred(s, sn.l1_table_offset, bytes, &later);
    }
    if (r == 0)
        r = settle(s, &later);
    if (ret == 0 && r < 0) {
        *err = later;
        ret = r;
    }
    return ret;
}

/* Runs op on the snapshot called `name` (by name, as qemu-img -a/-d do), under the image lock. */
static int on_named_snapshot(struct block_dev *bs, const char *name,
                             int (*op)(struct qcow2_state *s, int idx, struct wisp_err *err),
                             struct wisp_err *err)
{
    struct qcow2_state *s = NULL;
    int ret = snap_state(bs, true, &s, err);
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&s->lock);
    int i = find_snapshot(s, name);
    if (i < 0)
        ret = wisp_err_set(err, ENOENT, "%s: no snapshot named '%s'", s->name, name);
    else
        ret = op(s, i, err);
    int r2 = i >= 0 ? rebuild_map(s, err) : 0;
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? ret : r2;
}

static int apply_at(struct qcow2_state *s, int idx, struct wisp_err *err)
{
    return do_apply(s, &s->snaps[idx], err);
}

int qcow2_snapshot_apply(struct block_dev *bs, const char *name, struct wisp_err *err)
{
    return on_named_snapshot(bs, name, apply_at, err);
}

int qcow2_snapshot_delete(struct block_dev *bs, const char *name, struct wisp_err *err)
{
    return on_named_snapshot(bs, name, do_delete, err);
}
