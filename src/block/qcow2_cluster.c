/* qcow2 guest I/O (spec "Cluster mapping"): L1/L2 lookup, reads (data, zero, compressed,
 * backing, subclusters), allocating writes with copy-on-write, discard, write_zeroes and
 * block_status. Reads and in-place writes of allocated clusters do their data I/O without the
 * metadata lock; allocation holds it. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

enum chunk_kind { K_BACKING, K_ZERO, K_DATA, K_COMPRESSED };

uint64_t qcow2_l2_entry(const struct qcow2_state *s, const uint8_t *t, uint64_t i)
{
    return qcow2_be64(t + i * s->l2_entry_bytes);
}

uint64_t qcow2_l2_bitmap(const struct qcow2_state *s, const uint8_t *t, uint64_t i)
{
    return s->extended_l2 ? qcow2_be64(t + i * 16 + 8) : 0;
}

void qcow2_l2_set(struct qcow2_state *s, uint8_t *t, uint64_t i, uint64_t e, uint64_t bitmap)
{
    qcow2_put_be64(t + i * s->l2_entry_bytes, e);
    if (s->extended_l2)
        qcow2_put_be64(t + i * 16 + 8, bitmap);
    qcow2_l2_mark_dirty(s, t);
}

enum qcow2_ctype qcow2_entry_type(const struct qcow2_state *s, uint64_t e)
{
    if (e & QCOW2_OFLAG_COMPRESSED)
        return QCOW2_C_COMPRESSED;
    if ((e & QCOW2_OFLAG_ZERO) && !s->extended_l2)
        return (e & QCOW2_OFFSET_MASK) ? QCOW2_C_ZERO_ALLOC : QCOW2_C_ZERO_PLAIN;
    return (e & QCOW2_OFFSET_MASK) ? QCOW2_C_NORMAL : QCOW2_C_UNALLOCATED;
}

int qcow2_get_l2_entry(struct qcow2_state *s, uint64_t guest, uint64_t *l2e, uint64_t *bitmap,
                       struct wisp_err *err)
{
    uint64_t l1i = qcow2_l1_index(s, guest);
    *l2e = *bitmap = 0;
    if (l1i >= s->l1_size || !(s->l1[l1i] & QCOW2_OFFSET_MASK))
        return 0;
    char why[160];
    const char *bad = qcow2_l2_table_problem(s, s->l1[l1i], QCOW2_META_L2, why, sizeof(why));
    if (bad)
        return qcow2_corrupt(s, err,
                             "invalid L1 entry 0x%016" PRIx64 " at offset 0x%" PRIx64
                             " (guest offset 0x%" PRIx64 "): %s",
                             s->l1[l1i], s->l1_offset + l1i * 8, guest, bad);
    uint8_t *t;
    uint64_t l2off = s->l1[l1i] & QCOW2_OFFSET_MASK;
    int ret = qcow2_l2_get(s, l2off, false, &t, err);
    if (ret < 0)
        return ret;
    uint64_t i = qcow2_l2_index(s, guest);
    *l2e = qcow2_l2_entry(s, t, i);
    *bitmap = qcow2_l2_bitmap(s, t, i);
    if ((bad = qcow2_l2_entry_problem(s, *l2e, *bitmap, why, sizeof(why))))
        return qcow2_corrupt(s, err,
                             "invalid L2 entry 0x%016" PRIx64 " at offset 0x%" PRIx64
                             " (guest offset 0x%" PRIx64 "): %s",
                             *l2e, l2off + i * s->l2_entry_bytes, guest, bad);
    return 0;
}

/* What the bytes at guest offset g (inside one cluster) are, and for how long (<= n) that holds. */
static enum chunk_kind chunk_kind(const struct qcow2_state *s, uint64_t g, uint64_t n, uint64_t e,
                                  uint64_t bmp, uint64_t *len, uint64_t *host)
{
    uint64_t in = qcow2_offset_in_cluster(s, g);
    *len = n;
    *host = (e & QCOW2_OFFSET_MASK) + in;
    switch (qcow2_entry_type(s, e)) {
    case QCOW2_C_COMPRESSED:
        return K_COMPRESSED;
    case QCOW2_C_ZERO_PLAIN:
    case QCOW2_C_ZERO_ALLOC:
        return K_ZERO;
    case QCOW2_C_NORMAL:
    case QCOW2_C_UNALLOCATED:
        break;
    }
    if (!s->extended_l2)
        return (e & QCOW2_OFFSET_MASK) ? K_DATA : K_BACKING;
    /* spec "Extended L2 Entries": bit x = subcluster x allocated, bit 32+x = reads as zero */
    uint64_t sc_size = s->cluster_size / QCOW2_SUBCLUSTERS;
    unsigned sc = (unsigned)(in / sc_size);
    unsigned st = ((bmp >> sc) & 1) | (((bmp >> (32 + sc)) & 1) << 1);
    uint64_t run = (sc + 1) * sc_size - in;
    for (unsigned j = sc + 1; j < QCOW2_SUBCLUSTERS && run < n; j++) {
        if ((((bmp >> j) & 1) | (((bmp >> (32 + j)) & 1) << 1)) != st)
            break;
        run += sc_size;
    }
    *len = run < n ? run : n;
    return (st & 1) ? K_DATA : (st & 2) ? K_ZERO : K_BACKING;
}

/* --- iovec helpers --- */
static int iov_slice(const struct iovec *iov, int cnt, size_t off, size_t len, struct iovec *out)
{
    int n = 0;
    for (int i = 0; i < cnt && len; i++) {
        if (off >= iov[i].iov_len) {
            off -= iov[i].iov_len;
            continue;
        }
        size_t l = iov[i].iov_len - off < len ? iov[i].iov_len - off : len;
        out[n].iov_base = (uint8_t *)iov[i].iov_base + off;
        out[n++].iov_len = l;
        len -= l;
        off = 0;
    }
    return n;
}

static void iov_memset(const struct iovec *iov, int cnt, size_t skip)
{
    for (int i = 0; i < cnt; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        memset((uint8_t *)iov[i].iov_base + skip, 0, iov[i].iov_len - skip);
        skip = 0;
    }
}

static void iov_copy(const struct iovec *iov, int cnt, uint8_t *buf, bool to_iov)
{
    for (int i = 0; i < cnt; i++) {
        if (to_iov)
            memcpy(iov[i].iov_base, buf, iov[i].iov_len);
        else
            memcpy(buf, iov[i].iov_base, iov[i].iov_len);
        buf += iov[i].iov_len;
    }
}

/* Reads one uniform chunk into iov (which covers exactly `len` bytes). */
static int read_chunk(struct qcow2_state *s, uint64_t g, uint64_t len, enum chunk_kind k,
                      uint64_t host, uint64_t e, const struct iovec *iov, int cnt,
                      struct wisp_err *err)
{
    struct block_dev *bk = s->bs->backing;
    switch (k) {
    case K_ZERO:
        iov_memset(iov, cnt, 0);
        return 0;
    case K_DATA:
        return block_file_preadv(s->file, host, iov, cnt, err);
    case K_BACKING:
        if (!bk || g >= bk->size) {
            iov_memset(iov, cnt, 0);
            return 0;
        }
        if (g + len > bk->size) {
            iov_memset(iov, cnt, bk->size - g);
            cleanup_free struct iovec *part = malloc(sizeof(*part) * (size_t)cnt);
            if (!part)
                return wisp_err_sys(err, ENOMEM, "%s: read", s->name);
            int pc = iov_slice(iov, cnt, 0, bk->size - g, part);
            return block_preadv(bk, g, part, pc, err);
        }
        return block_preadv(bk, g, iov, cnt, err);
    case K_COMPRESSED: {
        cleanup_free uint8_t *c = malloc(s->cluster_size);
        if (!c)
            return wisp_err_sys(err, ENOMEM, "%s: compressed cluster", s->name);
        int ret = qcow2_read_compressed(s, e, c, err);
        if (ret == 0)
            iov_copy(iov, cnt, c + qcow2_offset_in_cluster(s, g), true);
        return ret;
    }
    }
    return 0;
}

static int check_request(struct qcow2_state *s, uint64_t off, uint64_t len, struct wisp_err *err)
{
    if (off > s->size || len > s->size - off)
        return wisp_err_set(err, EINVAL,
                            "%s: request at 0x%" PRIx64 " (+%" PRIu64
                            ") beyond the disk size %" PRIu64,
                            s->name, off, len, s->size);
    return 0;
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t t = 0;
    for (int i = 0; i < cnt; i++)
        t += iov[i].iov_len;
    return t;
}

/* How many bytes from guest offset g (a cluster boundary), at most `max`, continue a data run
 * whose host bytes would go on at `host`: following clusters that are plain data at the next
 * host offsets, so one read covers them all (QEMU merges the same way). Lock held. */
static uint64_t data_run_extend(struct qcow2_state *s, uint64_t g, uint64_t max, uint64_t host)
{
    uint64_t extra = 0;
    while (extra < max && extra < (16u << 20)) {
        uint64_t e, bmp, len, h, r = s->cluster_size < max - extra ? s->cluster_size : max - extra;
        struct wisp_err ignored = {0};
        if (qcow2_get_l2_entry(s, g + extra, &e, &bmp, &ignored) < 0 ||
            chunk_kind(s, g + extra, r, e, bmp, &len, &h) != K_DATA || h != host + extra)
            break;
        extra += len;
        if (len < r)
            break;
    }
    return extra;
}

/* Under the lock: what the bytes from guest offset g are (at most n bytes, within one cluster,
 * extended over following contiguous data clusters up to `max`), with the host bytes the read
 * will touch marked as I/O in flight in *io_off, *io_len (0 = none). */
static int map_chunk(struct qcow2_state *s, uint64_t g, uint64_t n, uint64_t max,
                     enum chunk_kind *k, uint64_t *len, uint64_t *host, uint64_t *e,
                     uint64_t *io_off, uint64_t *io_len, struct wisp_err *err)
{
    uint64_t bmp;
    *io_len = 0;
    int ret = qcow2_get_l2_entry(s, g, e, &bmp, err);
    if (ret < 0)
        return ret;
    *k = chunk_kind(s, g, n, *e, bmp, len, host);
    if (*k == K_DATA) {
        if (*len == n && n < max)
            *len += data_run_extend(s, g + n, max - n, *host + n);
        *io_off = *host;
        *io_len = *len;
    } else if (*k == K_COMPRESSED) {
        qcow2_compressed_range(s, *e, io_off, io_len);
    }
    return *io_len ? qcow2_host_io_begin(s, *io_off, *io_len, err) : 0;
}

int qcow2_do_preadv(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                    struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    size_t total = iov_total(iov, iovcnt), done = 0;
    int ret = check_request(s, offset, total, err);
    cleanup_free struct iovec *part = malloc(sizeof(*part) * (size_t)(iovcnt + 1));
    if (ret < 0 || !part)
        return ret < 0 ? ret : wisp_err_sys(err, ENOMEM, "%s: read", s->name);
    while (done < total) {
        uint64_t g = offset + done, e, len, host, io_off = 0, io_len;
        uint64_t n = s->cluster_size - qcow2_offset_in_cluster(s, g);
        if (n > total - done)
            n = total - done;
        enum chunk_kind k;
        /* a cluster being read is not reused (freed and reallocated) until the read is over */
        pthread_mutex_lock(&s->lock);
        ret = map_chunk(s, g, n, total - done, &k, &len, &host, &e, &io_off, &io_len, err);
        pthread_mutex_unlock(&s->lock);
        if (ret < 0)
            return ret;
        int pc = iov_slice(iov, iovcnt, done, len, part);
        ret = read_chunk(s, g, len, k, host, e, part, pc, err);
        if (io_len) {
            pthread_mutex_lock(&s->lock);
            qcow2_host_io_end(s, io_off, io_len);
            pthread_mutex_unlock(&s->lock);
        }
        if (ret < 0)
            return ret;
        done += len;
    }
    return 0;
}

/* Reads a whole guest cluster (for copy-on-write) with the lock held. */
static int read_cluster_locked(struct qcow2_state *s, uint64_t gc, uint64_t e, uint64_t bmp,
                               uint8_t *buf, struct wisp_err *err)
{
    uint64_t pos = 0;
    while (pos < s->cluster_size) {
        uint64_t len, host;
        enum chunk_kind k = chunk_kind(s, gc + pos, s->cluster_size - pos, e, bmp, &len, &host);
        struct iovec v = {buf + pos, len};
        int ret = read_chunk(s, gc + pos, len, k, host, e, &v, 1, err);
        if (ret < 0)
            return ret;
        pos += len;
    }
    return 0;
}

int qcow2_free_l2_entry_target(struct qcow2_state *s, uint64_t e, struct wisp_err *err)
{
    uint64_t off, len;
    switch (qcow2_entry_type(s, e)) {
    case QCOW2_C_COMPRESSED:
        qcow2_compressed_range(s, e, &off, &len);
        return qcow2_free_deferred(s, off, len, err);
    case QCOW2_C_NORMAL:
    case QCOW2_C_ZERO_ALLOC:
        return qcow2_free_deferred(s, e & QCOW2_OFFSET_MASK, s->cluster_size, err);
    default:
        return 0;
    }
}

int qcow2_get_l2_for_write(struct qcow2_state *s, uint64_t guest, uint8_t **table, uint64_t *idx,
                           struct wisp_err *err)
{
    uint64_t l1i = qcow2_l1_index(s, guest), l1e = s->l1[l1i], old = l1e & QCOW2_OFFSET_MASK;
    *idx = qcow2_l2_index(s, guest);
    if (old && (l1e & QCOW2_OFLAG_COPIED))
        return qcow2_l2_get(s, old, false, table, err);
    /* No L2 table yet, or one shared with a snapshot: give this L1 entry its own copy. */
    cleanup_free uint8_t *copy = NULL;
    int ret;
    if (old) {
        uint8_t *t;
        if (!(copy = malloc(s->cluster_size)))
            return wisp_err_sys(err, ENOMEM, "%s: L2 copy", s->name);
        if ((ret = qcow2_l2_get(s, old, false, &t, err)) < 0)
            return ret;
        memcpy(copy, t, s->cluster_size);
    }
    uint64_t nl2;
    if ((ret = qcow2_alloc_clusters(s, 1, &nl2, err)) < 0)
        return ret;
    if (qcow2_meta_update(s, nl2, s->cluster_size, QCOW2_META_L2, 0) < 0)
        return wisp_err_set(err, ENOMEM, "%s: metadata map", s->name);
    if ((ret = qcow2_l2_get(s, nl2, true, table, err)) < 0)
        return ret;
    if (copy)
        memcpy(*table, copy, s->cluster_size);
    qcow2_l2_mark_dirty(s, *table);
    s->l1[l1i] = nl2 | QCOW2_OFLAG_COPIED;
    s->l1_dirty = true;
    return old ? qcow2_free_deferred(s, old, s->cluster_size, err) : 0;
}

static bool inflight_overlaps(const struct qcow2_state *s, uint64_t start, uint64_t end)
{
    for (const struct qcow2_inflight *f = s->inflight; f; f = f->next)
        if (start < f->end && f->start < end)
            return true;
    return false;
}

static void inflight_remove(struct qcow2_state *s, struct qcow2_inflight *f)
{
    for (struct qcow2_inflight **pp = &s->inflight; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    pthread_cond_broadcast(&s->inflight_done);
}

/* Can the cluster with entry e (bitmap bmp) be overwritten where it is? */
static bool entry_in_place(const struct qcow2_state *s, uint64_t e, uint64_t bmp)
{
    return (e & QCOW2_OFLAG_COPIED) && qcow2_entry_type(s, e) == QCOW2_C_NORMAL &&
           (!s->extended_l2 || (bmp & 0xffffffffu) == 0xffffffffu);
}

/* Points k guest clusters from gc at the host clusters from host, freeing what they held. */
static int link_clusters(struct qcow2_state *s, uint64_t gc, uint64_t k, uint64_t host,
                         struct wisp_err *err)
{
    for (uint64_t j = 0; j < k; j++) {
        uint8_t *t;
        uint64_t i, g = gc + (j << s->cluster_bits), h = host + (j << s->cluster_bits);
        int ret = qcow2_get_l2_for_write(s, g, &t, &i, err);
        if (ret < 0)
            return ret;
        uint64_t old = qcow2_l2_entry(s, t, i);
        qcow2_l2_set(s, t, i, h | QCOW2_OFLAG_COPIED, s->extended_l2 ? 0xffffffffu : 0);
        if ((old & QCOW2_OFFSET_MASK) != h && (ret = qcow2_free_l2_entry_target(s, old, err)) < 0)
            return ret;
    }
    return 0;
}

/* Writes iov at host offset `at` with the lock dropped while the k guest clusters from gc are
 * marked in flight (and the host bytes as I/O in flight), then links them to the host clusters
 * from host (or, when the write failed and they were allocated for it, gives those back). */
static int write_unlocked(struct qcow2_state *s, uint64_t gc, uint64_t k, uint64_t host,
                          bool allocated, uint64_t at, const struct iovec *iov, int cnt,
                          struct wisp_err *err)
{
    size_t len = iov_total(iov, cnt);
    int ret = qcow2_guard_data(s, at, len, err);
    if (ret == 0)
        ret = qcow2_host_io_begin(s, at, len, err);
    if (ret < 0) {
        if (allocated)
            qcow2_update_refcount(s, host, k << s->cluster_bits, -1, NULL);
        return ret;
    }
    struct qcow2_inflight f = {gc, gc + (k << s->cluster_bits), s->inflight};
    s->inflight = &f;
    pthread_mutex_unlock(&s->lock);
    ret = block_file_pwritev(s->file, at, iov, cnt, err);
    pthread_mutex_lock(&s->lock);
    inflight_remove(s, &f);
    qcow2_host_io_end(s, at, len);
    if (ret < 0) {
        if (allocated)
            qcow2_update_refcount(s, host, k << s->cluster_bits, -1, NULL);
        return ret;
    }
    return link_clusters(s, gc, k, host, err);
}

/*
 * Allocating write from guest offset g, at most `len` bytes of iov (which starts at g), with
 * the lock held; *used = bytes written. Returns 1 (nothing written) after waiting for an
 * overlapping allocation: the caller looks at the cluster again.
 *  - Whole clusters: a run of them that all need allocation gets contiguous host clusters and
 *    one write, done with the lock dropped (other requests allocate and write meanwhile).
 *  - Part of a cluster that reads as zeroes, in a fresh host cluster (never written, so zero
 *    on disk): only the part is written, also with the lock dropped.
 *  - Any other part of a cluster: copy-on-write of the whole cluster under the lock.
 */
static int write_alloc(struct qcow2_state *s, uint64_t g, uint64_t len, const struct iovec *iov,
                       int cnt, struct iovec *part, uint64_t *used, struct wisp_err *err)
{
    uint64_t cs = s->cluster_size, gc = g & ~(cs - 1), in = g - gc, e, bmp, host;
    uint64_t n = cs - in < len ? cs - in : len;
    if (inflight_overlaps(s, gc, gc + cs)) {
        pthread_cond_wait(&s->inflight_done, &s->lock);
        return 1;
    }
    int ret = qcow2_get_l2_entry(s, g, &e, &bmp, err);
    if (ret < 0)
        return ret;
    *used = n;
    enum qcow2_ctype type = qcow2_entry_type(s, e);
    bool in_place =
        (e & QCOW2_OFLAG_COPIED) && (type == QCOW2_C_NORMAL || type == QCOW2_C_ZERO_ALLOC);
    if (n == cs && in_place) { /* a whole preallocated zero cluster: keep its host cluster */
        host = e & QCOW2_OFFSET_MASK;
        int pc = iov_slice(iov, cnt, 0, cs, part);
        return write_unlocked(s, gc, 1, host, false, host, part, pc, err);
    }
    if (n == cs) { /* whole clusters: extend the run while the next ones need allocation too */
        /* at most half a refcount block's clusters: with 512-byte clusters a refcount block
         * covers only 256, and a run must fit beside the block that counts it */
        uint64_t k = 1, max = 256 < (1ull << (s->rb_bits - 1)) ? 256 : 1ull << (s->rb_bits - 1);
        if (max > len >> s->cluster_bits)
            max = len >> s->cluster_bits;
        for (; k < max; k++) {
            uint64_t g2 = gc + (k << s->cluster_bits), e2, b2;
            if (inflight_overlaps(s, g2, g2 + cs) ||
                (ret = qcow2_get_l2_entry(s, g2, &e2, &b2, err)) < 0 || entry_in_place(s, e2, b2))
                break;
        }
        if (ret < 0)
            return ret;
        if ((ret = qcow2_alloc_clusters(s, k, &host, err)) < 0)
            return ret;
        *used = k << s->cluster_bits;
        int pc = iov_slice(iov, cnt, 0, *used, part);
        return write_unlocked(s, gc, k, host, true, host, part, pc, err);
    }
    bool fresh = false;
    if (in_place) {
        host = e & QCOW2_OFFSET_MASK;
    } else {
        uint64_t end = s->host_end;
        if ((ret = qcow2_alloc_clusters(s, 1, &host, err)) < 0)
            return ret;
        fresh = host >= end;
    }
    bool old_zero = type == QCOW2_C_ZERO_PLAIN || type == QCOW2_C_ZERO_ALLOC ||
                    (type == QCOW2_C_UNALLOCATED && !s->bs->backing && !(bmp & 0xffffffffu));
    int pc = iov_slice(iov, cnt, 0, n, part);
    if (fresh && old_zero)
        return write_unlocked(s, gc, 1, host, true, host + in, part, pc, err);
    cleanup_free uint8_t *buf = malloc(cs);
    if (!buf)
        return wisp_err_sys(err, ENOMEM, "%s: copy-on-write buffer", s->name);
    if (old_zero)
        memset(buf, 0, cs);
    else if ((ret = read_cluster_locked(s, gc, e, bmp, buf, err)) < 0)
        return ret;
    iov_copy(part, pc, buf + in, false);
    struct iovec whole = {buf, cs};
    if ((ret = qcow2_write_data(s, host, &whole, 1, err)) < 0)
        return ret;
    return link_clusters(s, gc, 1, host, err);
}

/*
 * Under s->lock: can [g, g + n) be overwritten in place (its cluster allocated, unshared
 * (COPIED), uncompressed, every subcluster allocated)? Then 0 with the host offset in *host and
 * the host range marked as I/O in flight (the caller ends it); -EAGAIN when the write needs
 * allocation or COW; another negative errno on metadata errors.
 */
static int in_place_host(struct qcow2_state *s, uint64_t g, uint64_t n, uint64_t *host,
                         struct wisp_err *err)
{
    uint64_t e, bmp;
    int ret = qcow2_mark_dirty(s, err);
    if (ret == 0)
        ret = qcow2_get_l2_entry(s, g, &e, &bmp, err);
    if (ret < 0)
        return ret;
    if (!entry_in_place(s, e, bmp))
        return -EAGAIN;
    *host = (e & QCOW2_OFFSET_MASK) + qcow2_offset_in_cluster(s, g);
    if ((ret = qcow2_guard_data(s, *host, n, err)) < 0)
        return ret;
    return qcow2_host_io_begin(s, *host, n, err);
}

/* Writes from guest offset g (at most len bytes of iov, which starts at g): in place without
 * the lock's I/O for an allocated cluster, else through write_alloc. *used = bytes written. */
static int write_part(struct qcow2_state *s, uint64_t g, uint64_t len, const struct iovec *iov,
                      int cnt, struct iovec *part, uint64_t *used, struct wisp_err *err)
{
    uint64_t host, n = s->cluster_size - qcow2_offset_in_cluster(s, g);
    if (n > len)
        n = len;
    pthread_mutex_lock(&s->lock);
    int ret = in_place_host(s, g, n, &host, err);
    if (ret != -EAGAIN) {
        pthread_mutex_unlock(&s->lock);
        *used = n;
        if (ret < 0)
            return ret;
        int pc = iov_slice(iov, cnt, 0, n, part);
        ret = block_file_pwritev(s->file, host, part, pc, err);
        pthread_mutex_lock(&s->lock);
        qcow2_host_io_end(s, host, n);
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    *used = 0;
    ret = write_alloc(s, g, len, iov, cnt, part, used, err);
    if (ret == 1)
        ret = 0; /* waited for an overlapping allocation: the caller comes back */
    if (ret == 0 && s->nr_deferred > 4096)
        ret = qcow2_flush_metadata(s, err);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* block_driver.map_for_write: lets the io_uring engine overwrite an allocated cluster directly.
 * Only ranges within one cluster; anything else goes through qcow2_do_pwritev in the pool. The
 * host range stays marked as I/O in flight until qcow2_do_map_done(). */
int qcow2_do_map_for_write(struct block_dev *bs, uint64_t offset, uint64_t len,
                           uint64_t *host_offset)
{
    struct qcow2_state *s = bs->opaque;
    if (s->read_only || len == 0 || check_request(s, offset, len, NULL) < 0 ||
        qcow2_offset_in_cluster(s, offset) + len > s->cluster_size)
        return -EAGAIN;
    pthread_mutex_lock(&s->lock);
    int ret = in_place_host(s, offset, len, host_offset, NULL);
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? -EAGAIN : 0;
}

/* block_driver.map_for_read: [offset, offset + len) as one run of plain data clusters that are
 * contiguous on the host (read by the io_uring engine directly), marked as I/O in flight. */
int qcow2_do_map_for_read(struct block_dev *bs, uint64_t offset, uint64_t len,
                          uint64_t *host_offset)
{
    struct qcow2_state *s = bs->opaque;
    if (len == 0 || check_request(s, offset, len, NULL) < 0)
        return -EAGAIN;
    struct wisp_err ignored = {0};
    int ret = 0;
    uint64_t done = 0;
    pthread_mutex_lock(&s->lock);
    while (ret == 0 && done < len) {
        uint64_t g = offset + done, e, bmp, clen, host;
        uint64_t n = s->cluster_size - qcow2_offset_in_cluster(s, g);
        n = n < len - done ? n : len - done;
        if (qcow2_get_l2_entry(s, g, &e, &bmp, &ignored) < 0 ||
            chunk_kind(s, g, n, e, bmp, &clen, &host) != K_DATA || clen < n ||
            (done && host != *host_offset + done))
            ret = -EAGAIN;
        else if (!done)
            *host_offset = host;
        done += n;
    }
    if (ret == 0)
        ret = qcow2_host_io_begin(s, *host_offset, len, NULL);
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? -EAGAIN : 0;
}

void qcow2_do_map_done(struct block_dev *bs, uint64_t host_offset, uint64_t len)
{
    struct qcow2_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    qcow2_host_io_end(s, host_offset, len);
    pthread_mutex_unlock(&s->lock);
}

int qcow2_do_pwritev(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                     struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return wisp_err_set(err, EROFS, "%s: image is read-only", s->name);
    size_t total = iov_total(iov, iovcnt), done = 0;
    int ret = check_request(s, offset, total, err);
    /* part: a slice of iov (iovcnt + 1 entries at most); rest: iov from `done` on */
    cleanup_free struct iovec *part = malloc(sizeof(*part) * (size_t)(iovcnt + 1) * 2);
    if (ret < 0 || !part)
        return ret < 0 ? ret : wisp_err_sys(err, ENOMEM, "%s: write", s->name);
    struct iovec *rest = part + iovcnt + 1;
    while (done < total) {
        uint64_t used = 0;
        int rc = iov_slice(iov, iovcnt, done, total - done, rest);
        if ((ret = write_part(s, offset + done, total - done, rest, rc, part, &used, err)) < 0)
            return ret;
        done += used;
    }
    return 0;
}

/* Sets whole clusters [off, off+len) to `zero` (reads zero) or unallocated; frees what they held.
 * keep_alloc keeps a host cluster allocated under the zero flag (write_zeroes without unmap). */
static int set_clusters(struct qcow2_state *s, uint64_t off, uint64_t len, bool zero,
                        bool keep_alloc, struct wisp_err *err)
{
    for (uint64_t g = off; g < off + len; g += s->cluster_size) {
        uint64_t e, bmp, i;
        int ret = qcow2_get_l2_entry(s, g, &e, &bmp, err);
        if (ret < 0)
            return ret;
        if (!e && !bmp && !zero)
            continue;
        uint8_t *t;
        if ((ret = qcow2_get_l2_for_write(s, g, &t, &i, err)) < 0)
            return ret;
        e = qcow2_l2_entry(s, t, i);
        enum qcow2_ctype type = qcow2_entry_type(s, e);
        bool keep = keep_alloc && zero && (e & QCOW2_OFLAG_COPIED) &&
                    (type == QCOW2_C_NORMAL || type == QCOW2_C_ZERO_ALLOC);
        uint64_t ne = keep ? (e & (QCOW2_OFFSET_MASK | QCOW2_OFLAG_COPIED)) : 0, nb = 0;
        if (zero && s->extended_l2)
            nb = 0xffffffffull << 32;
        else if (zero)
            ne |= QCOW2_OFLAG_ZERO;
        qcow2_l2_set(s, t, i, ne, nb);
        if (!keep && (ret = qcow2_free_l2_entry_target(s, e, err)) < 0)
            return ret;
    }
    return 0;
}

static int zero_bytes(struct qcow2_state *s, uint64_t off, uint64_t len, struct wisp_err *err)
{
    cleanup_free uint8_t *z = calloc(1, s->cluster_size);
    if (!z)
        return wisp_err_sys(err, ENOMEM, "%s: zero buffer", s->name);
    while (len) {
        uint64_t n = s->cluster_size - qcow2_offset_in_cluster(s, off);
        n = n < len ? n : len;
        struct iovec v = {z, n}, part[2];
        uint64_t used = 0;
        int ret = write_part(s, off, n, &v, 1, part, &used, err);
        if (ret < 0)
            return ret;
        off += used;
        len -= used;
    }
    return 0;
}

int qcow2_do_write_zeroes(struct block_dev *bs, uint64_t off, uint64_t len, int flags,
                          struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return wisp_err_set(err, EROFS, "%s: image is read-only", s->name);
    int ret = check_request(s, off, len, err);
    if (ret < 0)
        return ret;
    uint64_t a = qcow2_align_up(off, s->cluster_size), b = (off + len) & ~(s->cluster_size - 1);
    if (off + len == s->size)
        b = qcow2_align_up(off + len, s->cluster_size); /* last partial cluster of the disk */
    bool can_flag = s->version >= 3 || (!bs->backing && (flags & BLOCK_WZ_MAY_UNMAP));
    if (a >= b || !can_flag)
        return zero_bytes(s, off, len, err);
    if (off < a && (ret = zero_bytes(s, off, a - off, err)) < 0)
        return ret;
    pthread_mutex_lock(&s->lock);
    ret = qcow2_mark_dirty(s, err);
    if (ret == 0)
        ret = set_clusters(s, a, b - a, s->version >= 3, !(flags & BLOCK_WZ_MAY_UNMAP), err);
    pthread_mutex_unlock(&s->lock);
    if (ret == 0 && off + len > b)
        ret = zero_bytes(s, b, off + len - b, err);
    return ret;
}

int qcow2_do_discard(struct block_dev *bs, uint64_t off, uint64_t len, struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return wisp_err_set(err, EROFS, "%s: image is read-only", s->name);
    int ret = check_request(s, off, len, err);
    uint64_t a = qcow2_align_up(off, s->cluster_size), b = (off + len) & ~(s->cluster_size - 1);
    if (off + len == s->size)
        b = qcow2_align_up(off + len, s->cluster_size);
    if (ret < 0 || a >= b)
        return ret; /* discard is advisory: partial clusters stay */
    pthread_mutex_lock(&s->lock);
    ret = qcow2_mark_dirty(s, err);
    /* With a backing file, a discarded cluster must not show the backing data (v3 zero flag). */
    if (ret == 0)
        ret = set_clusters(s, a, b - a, bs->backing && s->version >= 3, false, err);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int status_of(struct qcow2_state *s, enum chunk_kind k, uint64_t host, uint64_t *h)
{
    switch (k) {
    case K_ZERO:
        return BLOCK_STATUS_ZERO | BLOCK_STATUS_ALLOCATED;
    case K_DATA:
        *h = host;
        return BLOCK_STATUS_DATA | BLOCK_STATUS_ALLOCATED | BLOCK_STATUS_OFFSET;
    case K_COMPRESSED:
        return BLOCK_STATUS_DATA | BLOCK_STATUS_ALLOCATED;
    case K_BACKING:
        break;
    }
    return s->bs->backing ? 0 : BLOCK_STATUS_ZERO;
}

int qcow2_do_block_status(struct block_dev *bs, uint64_t offset, uint64_t len, uint64_t *pnum,
                          uint64_t *host_offset, struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    int ret = check_request(s, offset, len, err), st = -1;
    uint64_t done = 0, expect_host = 0;
    *pnum = 0;
    if (ret < 0 || len == 0)
        return ret;
    pthread_mutex_lock(&s->lock);
    while (done < len) {
        uint64_t g = offset + done, e, bmp, clen, host, h = 0;
        uint64_t n = s->cluster_size - qcow2_offset_in_cluster(s, g);
        n = n < len - done ? n : len - done;
        if ((ret = qcow2_get_l2_entry(s, g, &e, &bmp, err)) < 0)
            break;
        enum chunk_kind k = chunk_kind(s, g, n, e, bmp, &clen, &host);
        int cur = status_of(s, k, host, &h);
        if (st < 0) {
            st = cur;
            *host_offset = h;
        } else if (cur != st || ((cur & BLOCK_STATUS_OFFSET) && h != expect_host)) {
            break;
        }
        expect_host = h + clen;
        done += clen;
        if (clen < n)
            break;
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0 && done == 0)
        return ret;
    *pnum = done;
    return st;
}
