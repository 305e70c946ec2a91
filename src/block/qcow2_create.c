/* qcow2 image creation, preallocation, resize, measure and backing file rewrite. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

struct geometry {
    unsigned cluster_bits, l2_bits, refcount_order;
    uint64_t l1_entries, l1_clusters, rt_clusters, rb_count;
};

static unsigned log2u(uint64_t v)
{
    unsigned b = 0;
    while ((1ull << b) < v)
        b++;
    return b;
}

/* Refcount blocks and table clusters needed to count n clusters plus themselves. */
static void refcount_meta(unsigned cluster_bits, unsigned order, uint64_t n, uint64_t *rb,
                          uint64_t *rt)
{
    uint64_t per_rb = 1ull << (cluster_bits + 3 - order), per_rt = (1ull << cluster_bits) / 8;
    uint64_t last, total = 0;
    *rb = *rt = 0;
    do {
        last = total;
        *rb = (n + *rt + *rb + per_rb - 1) / per_rb;
        *rt = (*rb + per_rt - 1) / per_rt;
        total = n + *rb + *rt;
    } while (total != last);
}

static int check_opts(const struct qcow2_create_opts *o, struct geometry *g, struct wisp_err *err)
{
    uint64_t cs = o->cluster_size ? o->cluster_size : 65536;
    int version = o->version ? o->version : 3;
    unsigned rbits = o->refcount_bits ? o->refcount_bits : 16;
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
        return wisp_err_set(err, EINVAL,
                            "cluster size %" PRIu64 " must be a power of two in 512..2M", cs);
    if (version != 2 && version != 3)
        return wisp_err_set(err, EINVAL, "qcow2 version %d is not 2 or 3", version);
    if (rbits > 64 || (rbits & (rbits - 1)) || (version == 2 && rbits != 16))
        return wisp_err_set(err, EINVAL, "refcount_bits %u is invalid%s", rbits,
                            version == 2 ? " (version 2 needs 16)" : "");
    if (version == 2 && (o->lazy_refcounts || o->extended_l2))
        return wisp_err_set(err, EINVAL, "lazy refcounts and extended L2 need qcow2 version 3");
    if (o->extended_l2 && cs < 16384)
        return wisp_err_set(err, EINVAL, "extended L2 entries need a cluster size of at least 16K");
    if (o->compression_type && strcmp(o->compression_type, "zlib") &&
        strcmp(o->compression_type, "zstd"))
        return wisp_err_set(err, ENOTSUP, "compression type '%s' is not supported (zlib, zstd)",
                            o->compression_type);
    if (version == 2 && o->compression_type && !strcmp(o->compression_type, "zstd"))
        return wisp_err_set(err, EINVAL, "compression type zstd needs qcow2 version 3");
    if (o->backing_file && strlen(o->backing_file) > 1023)
        return wisp_err_set(err, ENAMETOOLONG, "backing file name is too long");
    if (o->backing_file && o->prealloc > QCOW2_PREALLOC_METADATA)
        return wisp_err_set(err, EINVAL,
                            "preallocation falloc/full cannot be used with a backing file");
    g->cluster_bits = log2u(cs);
    g->l2_bits = g->cluster_bits - (o->extended_l2 ? 4 : 3);
    g->refcount_order = log2u(rbits);
    uint64_t size = qcow2_align_up(o->size, 512);
    g->l1_entries = qcow2_l1_entries_for(g->cluster_bits, g->l2_bits, size);
    if (g->l1_entries > QCOW2_MAX_L1_BYTES / 8)
        return wisp_err_set(err, EFBIG,
                            "virtual size %" PRIu64 " is too large for cluster size %" PRIu64, size,
                            cs);
    g->l1_clusters = qcow2_align_up(g->l1_entries * 8, cs) / cs;
    refcount_meta(g->cluster_bits, g->refcount_order, 1 + g->l1_clusters, &g->rb_count,
                  &g->rt_clusters);
    return 0;
}

/* Layout: header, refcount table, refcount blocks, L1 table (as qemu-img does). */
static int write_empty_image(int fd, const struct qcow2_create_opts *o, const struct geometry *g,
                             struct wisp_err *err)
{
    uint64_t cs = 1ull << g->cluster_bits, meta = 1 + g->rt_clusters + g->rb_count + g->l1_clusters;
    cleanup_free uint8_t *buf = calloc(meta, cs);
    if (!buf)
        return wisp_err_sys(err, ENOMEM, "qcow2 metadata");
    struct qcow2_state s = {0};
    s.refcount_order = g->refcount_order;
    uint8_t *rt = buf + cs, *rb = rt + g->rt_clusters * cs;
    for (uint64_t i = 0; i < g->rb_count; i++)
        qcow2_put_be64(rt + 8 * i, (1 + g->rt_clusters + i) * cs);
    for (uint64_t c = 0; c < meta; c++)
        qcow2_rb_entry_set(&s, rb, c, 1);
    if (pwrite(fd, buf, meta * cs, 0) != (ssize_t)(meta * cs))
        return wisp_err_sys(err, errno, "writing qcow2 metadata");
    return 0;
}

static int init_header_state(struct qcow2_state *s, const struct qcow2_create_opts *o,
                             const struct geometry *g)
{
    s->version = o->version ? o->version : 3;
    s->cluster_bits = g->cluster_bits;
    s->cluster_size = 1ull << g->cluster_bits;
    s->size = qcow2_align_up(o->size, 512);
    s->refcount_order = g->refcount_order;
    s->rt_offset = s->cluster_size;
    s->rt_clusters = (uint32_t)g->rt_clusters;
    s->l1_offset = (1 + g->rt_clusters + g->rb_count) * s->cluster_size;
    s->l1_size = (uint32_t)g->l1_entries;
    s->header_length = s->version == 2 ? QCOW2_HDR_V2_LEN : QCOW2_HDR_LEN_CTYPE;
    if (o->lazy_refcounts)
        s->compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    if (o->extended_l2)
        s->incompat |= QCOW2_INCOMPAT_EXTL2;
    if (o->compression_type && !strcmp(o->compression_type, "zstd")) {
        s->compression_type = QCOW2_COMPRESSION_ZSTD;
        s->incompat |= QCOW2_INCOMPAT_COMPRESSION;
    }
    snprintf(s->backing_file, sizeof(s->backing_file), "%s",
             o->backing_file ? o->backing_file : "");
    snprintf(s->backing_format, sizeof(s->backing_format), "%s",
             o->backing_format ? o->backing_format : "");
    return 0;
}

/* Every guest cluster gets an L2 entry and a host cluster (qemu-img preallocation=metadata). */
static int preallocate(struct block_dev *bs, struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    for (uint64_t g = 0; g < s->size && ret == 0; g += s->cluster_size) {
        uint8_t *t;
        uint64_t i, host;
        if ((ret = qcow2_alloc_clusters(s, 1, &host, err)) < 0)
            break;
        if ((ret = qcow2_get_l2_for_write(s, g, &t, &i, err)) < 0)
            break;
        qcow2_l2_set(s, t, i, host | QCOW2_OFLAG_COPIED, s->extended_l2 ? 0xffffffffu : 0);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int create_prealloc(const char *path, const struct qcow2_create_opts *o,
                           struct wisp_err *err)
{
    struct block_open_opts opts = {.format = "qcow2", .no_backing = true};
    struct block_dev *bs = NULL;
    int ret = block_open(&bs, path, &opts, err);
    if (ret < 0)
        return ret;
    ret = preallocate(bs, err);
    struct qcow2_state *s = bs->opaque;
    uint64_t end = s->host_end;
    if (ret == 0)
        ret = qcow2_make_clean(bs, err);
    if (ret == 0 && o->prealloc == QCOW2_PREALLOC_FALLOC) {
        int r = posix_fallocate(block_file_fd(bs->file), 0, (off_t)end);
        if (r)
            ret = wisp_err_sys(err, r, "%s: fallocate", path);
    } else if (ret == 0 && o->prealloc == QCOW2_PREALLOC_FULL) {
        uint64_t fsize = 0;
        ret = block_file_size(bs->file, &fsize, err);
        cleanup_free uint8_t *z = calloc(1, 1 << 20);
        for (uint64_t off = fsize; ret == 0 && off < end; off += 1 << 20) {
            struct iovec v = {z, end - off < (1 << 20) ? end - off : 1 << 20};
            ret = qcow2_write_data(s, off, &v, 1, err); /* data clusters of the preallocation */
        }
    } else if (ret == 0) {
        ret = block_file_truncate(bs->file, end, err);
    }
    block_close(bs);
    return ret;
}

int qcow2_create(const char *path, const struct qcow2_create_opts *o, struct wisp_err *err)
{
    struct geometry g;
    int ret = check_opts(o, &g, err);
    if (ret < 0)
        return ret;
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s: cannot create", path);
    ret = write_empty_image(fd, o, &g, err);
    /* The header goes through the same writer as later updates; it needs a block_file. */
    struct block_file *f = NULL;
    if (ret == 0)
        ret = block_file_open(&f, path, false, BLOCK_CACHE_WRITEBACK, BLOCK_AIO_SYNC, err);
    if (ret == 0) {
        struct qcow2_state s = {0};
        s.file = f;
        s.name = path;
        init_header_state(&s, o, &g);
        ret = qcow2_meta_update(&s, 0, s.cluster_size, QCOW2_META_HEADER, 0) < 0
                  ? wisp_err_set(err, ENOMEM, "%s: out of memory", path)
                  : qcow2_write_header(&s, err);
        if (ret == 0)
            ret = block_file_flush(f, err);
        qcow2_meta_free(&s);
        block_file_close(f);
    }
    if (ret == 0 && o->prealloc != QCOW2_PREALLOC_OFF)
        ret = create_prealloc(path, o, err);
    if (ret < 0) {
        unlink(path);
        return wisp_err_wrap(err, "%s: creating qcow2 image", path);
    }
    return 0;
}

/* Resize (spec: only the L1 table may need to grow; it moves to new clusters). The old table
 * stays on disk (and registered) until the header names the new one: l1_move_end(). */
struct l1_move {
    uint64_t *old;
    uint64_t old_off, old_bytes;
    uint32_t old_size;
    uint64_t new_off, new_bytes;
};

static int grow_l1(struct qcow2_state *s, uint64_t entries, struct l1_move *mv,
                   struct wisp_err *err)
{
    uint64_t bytes = qcow2_align_up(entries * 8, s->cluster_size), off;
    uint64_t *l1 = calloc(bytes / 8, 8);
    if (!l1)
        return wisp_err_sys(err, ENOMEM, "%s: L1 table", s->name);
    memcpy(l1, s->l1, (size_t)s->l1_size * 8);
    int ret = qcow2_flush_metadata(s, err); /* L2 tables the old L1 names must be on disk */
    bool allocated = false;
    if (ret == 0)
        allocated = (ret = qcow2_alloc_clusters(s, bytes / s->cluster_size, &off, err)) == 0;
    if (ret == 0 && qcow2_meta_update(s, off, bytes, QCOW2_META_L1, 0) < 0)
        ret = wisp_err_set(err, ENOMEM, "%s: metadata map", s->name);
    if (ret == 0)
        ret = qcow2_flush_metadata(s, err);
    if (ret < 0) {
        if (allocated) { /* nothing names them yet */
            qcow2_meta_update(s, off, bytes, 0, QCOW2_META_L1);
            qcow2_update_refcount(s, off, bytes, -1, NULL);
        }
        free(l1);
        return ret;
    }
    *mv = (struct l1_move){
        s->l1,      s->l1_offset, qcow2_align_up((uint64_t)s->l1_size * 8, s->cluster_size),
        s->l1_size, off,          bytes};
    s->l1 = l1;
    s->l1_offset = off;
    s->l1_size = (uint32_t)entries;
    ret = qcow2_write_l1(s, err);
    return ret < 0 ? ret : qcow2_barrier(s, err);
}

/* After the header switched (ok) the old L1 table is freed; otherwise the old one stays in use
 * and the new clusters leak. */
static int l1_move_end(struct qcow2_state *s, struct l1_move *mv, bool ok, struct wisp_err *err)
{
    if (!mv->old)
        return 0;
    if (!ok) { /* the header never named the new table: its clusters go back */
        free(s->l1);
        s->l1 = mv->old;
        s->l1_offset = mv->old_off;
        s->l1_size = mv->old_size;
        qcow2_meta_update(s, mv->new_off, mv->new_bytes, 0, QCOW2_META_L1);
        qcow2_update_refcount(s, mv->new_off, mv->new_bytes, -1, NULL);
        return 0;
    }
    free(mv->old);
    if (!mv->old_bytes)
        return 0;
    qcow2_meta_update(s, mv->old_off, mv->old_bytes, 0, QCOW2_META_L1);
    return qcow2_free_deferred(s, mv->old_off, mv->old_bytes, err);
}

int qcow2_do_truncate(struct block_dev *bs, uint64_t size, bool shrink_ok, struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return wisp_err_set(err, EROFS, "%s: image is read-only", s->name);
    if (size & 511)
        return wisp_err_set(err, EINVAL, "%s: new size must be a multiple of 512", s->name);
    if (size < s->size && !shrink_ok)
        return wisp_err_set(err, EINVAL, "%s: shrinking needs shrink_ok (data would be lost)",
                            s->name);
    if (size < s->size && (s->nb_snapshots))
        return wisp_err_set(err, ENOTSUP, "%s: cannot shrink an image with snapshots", s->name);
    int ret = 0;
    if (size < s->size)
        ret = qcow2_do_discard(bs, qcow2_align_up(size, s->cluster_size),
                               s->size - qcow2_align_up(size, s->cluster_size), err);
    pthread_mutex_lock(&s->lock);
    uint64_t need = qcow2_l1_entries_for(s->cluster_bits, s->l2_bits, size);
    if (ret == 0 && need > QCOW2_MAX_L1_BYTES / 8)
        ret = wisp_err_set(err, EFBIG, "%s: size %" PRIu64 " is too large", s->name, size);
    struct l1_move mv = {0};
    if (ret == 0 && need > s->l1_size)
        ret = grow_l1(s, need, &mv, err);
    uint64_t old_size = s->size;
    bool committed = false;
    if (ret == 0) {
        s->size = size;
        ret = qcow2_write_header(s, err);
        committed = ret == 0; /* the header names the new size and L1 table */
        if (!committed)
            s->size = old_size;
    }
    if (committed) {
        bs->size = size;
        ret = qcow2_barrier(s, err);
    }
    int r2 = l1_move_end(s, &mv, committed, err);
    if (ret == 0)
        ret = r2;
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_set_backing(struct block_dev *bs, const char *backing, const char *fmt,
                      struct wisp_err *err)
{
    if (bs->drv != &qcow2_driver)
        return wisp_err_set(err, EINVAL, "%s: not a qcow2 node", bs->filename);
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return wisp_err_set(err, EROFS, "%s: image is read-only", s->name);
    if (backing && strlen(backing) >= sizeof(s->backing_file))
        return wisp_err_set(err, ENAMETOOLONG, "%s: backing file name is too long", s->name);
    if (fmt && strlen(fmt) >= sizeof(s->backing_format))
        return wisp_err_set(err, EINVAL, "%s: backing format name is too long", s->name);
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_flush_metadata(s, err);
    snprintf(s->backing_file, sizeof(s->backing_file), "%s", backing ? backing : "");
    snprintf(s->backing_format, sizeof(s->backing_format), "%s", backing && fmt ? fmt : "");
    if (ret == 0)
        ret = qcow2_write_header(s, err);
    if (ret == 0)
        ret = qcow2_barrier(s, err);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* Metadata + data bytes of a fully allocated image of `size` bytes, computed the way qemu-img
 * measure does (header, L2 tables, L1 rounded to clusters, refcount structures), so the two
 * tools print the same numbers. */
static uint64_t prealloc_size(const struct geometry *g, uint64_t size, bool extended_l2)
{
    uint64_t cs = 1ull << g->cluster_bits, l2e = extended_l2 ? 16 : 8;
    uint64_t aligned = qcow2_align_up(size, cs), meta = cs;
    uint64_t nl2e = qcow2_align_up(aligned / cs, cs / l2e);
    meta += nl2e * l2e;
    uint64_t nl1e = qcow2_align_up(nl2e * l2e / cs, cs / 8);
    meta += nl1e * 8;
    uint64_t rb, rt;
    refcount_meta(g->cluster_bits, g->refcount_order, (meta + aligned) / cs, &rb, &rt);
    return meta + (rb + rt) * cs + aligned;
}

int qcow2_measure(const struct qcow2_create_opts *o, struct block_dev *src,
                  struct qcow2_measure_result *r, struct wisp_err *err)
{
    struct geometry g;
    int ret = check_opts(o, &g, err);
    if (ret < 0)
        return ret;
    uint64_t cs = 1ull << g.cluster_bits, size = qcow2_align_up(o->size, 512), data = 0;
    for (uint64_t off = 0; src && off < size && off < src->size; off += cs) {
        uint64_t end = src->size - off < cs ? src->size : off + cs, pos = off;
        while (pos < end) {
            uint64_t pnum, host;
            int st = block_status(src, pos, end - pos, &pnum, &host, err);
            if (st < 0)
                return st;
            if ((st & BLOCK_STATUS_DATA) && !(st & BLOCK_STATUS_ZERO)) {
                data += cs;
                break;
            }
            pos += pnum ? pnum : end - pos;
        }
    }
    r->fully_allocated = prealloc_size(&g, size, o->extended_l2);
    /* as qemu-img: the metadata of the full image is counted, only unused data is left out */
    r->required = r->fully_allocated - qcow2_align_up(size, cs) + data;
    r->bitmaps = 0;
    return 0;
}
