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

/* Writes the table to new clusters, switches the header to it, frees the old one. */
static int write_snapshot_table(struct qcow2_state *s, struct wisp_err *err)
{
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
    int ret = 0;
    if (total && (ret = qcow2_alloc_clusters(
                      s, qcow2_align_up(total, s->cluster_size) >> s->cluster_bits, &off, err)) < 0)
        return ret;
    if (total && (ret = block_file_pwrite(s->file, off, buf, total, err)) < 0)
        return ret;
    if ((ret = qcow2_flush_metadata(s, err)) < 0 || (ret = block_file_flush(s->file, err)) < 0)
        return ret;
    s->snapshots_offset = off;
    s->snapshots_size = total;
    if ((ret = qcow2_write_header(s, err)) < 0 || (ret = block_file_flush(s->file, err)) < 0)
        return ret;
    return old_size ? qcow2_free_deferred(s, old, qcow2_align_up(old_size, s->cluster_size), err)
                    : 0;
}

/* Adds one reference (addend 1) to, or defers dropping one (addend -1) from, every table and
 * cluster reachable from an L1 table. */
static int refcount_tree(struct qcow2_state *s, const uint64_t *l1, uint32_t n, int addend,
                         struct wisp_err *err)
{
    cleanup_free uint8_t *copy = malloc(s->cluster_size);
    if (!copy)
        return wisp_err_sys(err, ENOMEM, "%s: snapshot", s->name);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK, off, len;
        if (!l2)
            continue;
        uint8_t *t;
        int ret = qcow2_l2_get(s, l2, false, &t, err);
        if (ret < 0)
            return ret;
        memcpy(copy, t, s->cluster_size);
        ret = addend > 0 ? qcow2_update_refcount(s, l2, s->cluster_size, 1, err)
                         : qcow2_free_deferred(s, l2, s->cluster_size, err);
        for (uint64_t j = 0; ret == 0 && j < s->l2_entries; j++) {
            uint64_t e = qcow2_l2_entry(s, copy, j);
            enum qcow2_ctype ty = qcow2_entry_type(s, e);
            if (ty == QCOW2_C_COMPRESSED) {
                qcow2_compressed_range(s, e, &off, &len);
            } else if (ty == QCOW2_C_NORMAL || ty == QCOW2_C_ZERO_ALLOC) {
                off = e & QCOW2_OFFSET_MASK;
                len = s->cluster_size;
            } else {
                continue;
            }
            ret = addend > 0 ? qcow2_update_refcount(s, off, len, 1, err)
                             : qcow2_free_deferred(s, off, len, err);
        }
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* OFLAG_COPIED on active L1/L2 entries exactly where the refcount is 1 (spec "Cluster
 * mapping"). Refcounts must be current (deferred frees applied). */
static int fix_copied(struct qcow2_state *s, struct wisp_err *err)
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

static int do_create(struct qcow2_state *s, const char *name, struct wisp_err *err)
{
    if (find_snapshot(s, name) >= 0)
        return wisp_err_set(err, EEXIST, "%s: snapshot '%s' already exists", s->name, name);
    int ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = refcount_tree(s, s->l1, s->l1_size, 1, err);
    if (ret == 0)
        ret = fix_copied(s, err);
    uint64_t bytes = qcow2_align_up((uint64_t)s->l1_size * 8, s->cluster_size), l1off = 0;
    if (ret == 0 && s->l1_size)
        ret = qcow2_alloc_clusters(s, bytes >> s->cluster_bits, &l1off, err);
    cleanup_free uint64_t *be = calloc(bytes / 8 + 1, 8);
    if (ret == 0 && !be)
        ret = wisp_err_sys(err, ENOMEM, "%s: snapshot", s->name);
    for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++)
        be[i] = htobe64(s->l1[i]);
    if (ret == 0 && s->l1_size)
        ret = block_file_pwrite(s->file, l1off, be, (size_t)s->l1_size * 8, err);
    struct qcow2_snapshot *n = realloc(s->snaps, (s->nb_snapshots + 2u) * sizeof(*n));
    if (ret < 0 || !n)
        return ret < 0 ? ret : wisp_err_sys(err, ENOMEM, "%s: snapshot", s->name);
    s->snaps = n;
    struct qcow2_snapshot *sn = &s->snaps[s->nb_snapshots];
    memset(sn, 0, sizeof(*sn));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned id = 1;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if ((unsigned)atoi(s->snaps[i].id) >= id)
            id = (unsigned)atoi(s->snaps[i].id) + 1;
    char idbuf[16];
    snprintf(idbuf, sizeof(idbuf), "%u", id);
    sn->id = strdup(idbuf);
    sn->name = strdup(name);
    if (!sn->id || !sn->name) {
        free(sn->id);
        free(sn->name);
        return wisp_err_sys(err, ENOMEM, "%s: snapshot", s->name);
    }
    sn->l1_table_offset = l1off;
    sn->l1_size = s->l1_size;
    sn->date_sec = (uint32_t)ts.tv_sec;
    sn->date_nsec = (uint32_t)ts.tv_nsec;
    sn->disk_size = s->size;
    s->nb_snapshots++;
    return write_snapshot_table(s, err);
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
    pthread_mutex_unlock(&s->lock);
    return ret;
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
        l1[i] = be64toh(l1[i]) & ~QCOW2_L1E_RESERVED;
    if (ret < 0) {
        free(l1);
        return ret;
    }
    *out = l1;
    return 0;
}

static int do_apply(struct qcow2_state *s, struct qcow2_snapshot *sn, struct wisp_err *err)
{
    cleanup_free uint64_t *l1 = NULL;
    if (sn->l1_size > s->l1_size)
        return wisp_err_set(err, ENOTSUP, "%s: snapshot '%s' has a larger L1 table than the image",
                            s->name, sn->name);
    int ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = read_snapshot_l1(s, sn, &l1, err);
    if (ret == 0)
        ret = refcount_tree(s, l1, sn->l1_size, 1, err);
    if (ret == 0)
        ret = refcount_tree(s, s->l1, s->l1_size, -1, err);
    if (ret < 0)
        return ret;
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1[i] = i < sn->l1_size ? l1[i] & ~QCOW2_OFLAG_COPIED : 0;
    s->l1_dirty = true;
    /* increments, barrier, new L1, barrier, decrements: qcow2_cache.c's order */
    if ((ret = qcow2_flush_metadata(s, err)) < 0 || (ret = fix_copied(s, err)) < 0 ||
        (ret = qcow2_flush_metadata(s, err)) < 0)
        return ret;
    if (sn->disk_size != s->size) {
        s->size = sn->disk_size;
        s->bs->size = s->size;
        ret = qcow2_write_header(s, err);
    }
    return ret < 0 ? ret : block_file_flush(s->file, err);
}

static int do_delete(struct qcow2_state *s, int idx, struct wisp_err *err)
{
    struct qcow2_snapshot sn = s->snaps[idx];
    cleanup_free uint64_t *l1 = NULL;
    int ret = read_snapshot_l1(s, &sn, &l1, err);
    if (ret < 0)
        return ret;
    memmove(&s->snaps[idx], &s->snaps[idx + 1], (s->nb_snapshots - (uint32_t)idx - 1) * sizeof(sn));
    s->nb_snapshots--;
    if ((ret = write_snapshot_table(s, err)) == 0)
        ret = refcount_tree(s, l1, sn.l1_size, -1, err);
    if (ret == 0 && sn.l1_size)
        ret = qcow2_free_deferred(s, sn.l1_table_offset,
                                  qcow2_align_up((uint64_t)sn.l1_size * 8, s->cluster_size), err);
    free(sn.id);
    free(sn.name);
    if (ret == 0)
        ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = fix_copied(s, err);
    if (ret == 0)
        ret = qcow2_flush_metadata(s, err);
    return ret < 0 ? ret : block_file_flush(s->file, err);
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
    pthread_mutex_unlock(&s->lock);
    return ret;
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
