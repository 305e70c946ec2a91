/* qcow2 compressed clusters (spec "Compressed Clusters Descriptor"), packed at byte
 * granularity: raw deflate for compression type zlib (window 2^12 as QEMU writes it; inflate
 * accepts any window), one zstd frame for compression type zstd (libzstd). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

/* Host byte range of the compressed data: offset in bits 0..x-1, number of additional 512-byte
 * sectors in bits x..61, with x = 62 - (cluster_bits - 8). */
void qcow2_compressed_range(const struct qcow2_state *s, uint64_t e, uint64_t *off, uint64_t *len)
{
    unsigned x = 62 - (s->cluster_bits - 8);
    *off = e & ((1ull << x) - 1);
    uint64_t sectors = ((e >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;
    *len = sectors * 512 - (*off & 511);
}

/* The descriptor rounds the length up to sectors, so bytes may follow the frame; the frame
 * must fill the cluster exactly. */
static int unzstd_cluster(struct qcow2_state *s, uint64_t off, const uint8_t *src, size_t len,
                          uint8_t *cluster, struct wisp_err *err)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return wisp_err_set(err, ENOMEM, "%s: ZSTD_createDCtx failed", s->name);
    ZSTD_inBuffer in = {src, len, 0};
    ZSTD_outBuffer out = {cluster, s->cluster_size, 0};
    bool ok = true;
    while (ok && out.pos < out.size) {
        size_t in_before = in.pos, out_before = out.pos;
        size_t r = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(r) || (r == 0 && out.pos < out.size) ||
            (in.pos == in_before && out.pos == out_before))
            ok = false; /* corrupt, frame too short, or no progress (truncated input) */
    }
    ZSTD_freeDCtx(d);
    if (!ok)
        return wisp_err_set(err, EIO,
                            "%s: compressed (zstd) cluster at host offset 0x%" PRIx64 " is corrupt",
                            s->name, off);
    return 0;
}

int qcow2_read_compressed(struct qcow2_state *s, uint64_t e, uint8_t *cluster, struct wisp_err *err)
{
    uint64_t off, len;
    qcow2_compressed_range(s, e, &off, &len);
    if (len > 2 * s->cluster_size + 512)
        return wisp_err_set(err, EIO, "%s: compressed cluster at 0x%" PRIx64 " is too long",
                            s->name, off);
    cleanup_free uint8_t *in = malloc(len);
    if (!in)
        return wisp_err_sys(err, ENOMEM, "%s: compressed cluster", s->name);
    int ret = block_file_pread(s->file, off, in, len, err);
    if (ret < 0)
        return ret;
    if (s->compression_type == QCOW2_COMPRESSION_ZSTD)
        return unzstd_cluster(s, off, in, len, cluster, err);
    z_stream z = {0};
    if (inflateInit2(&z, -15) != Z_OK)
        return wisp_err_set(err, ENOMEM, "%s: inflateInit2 failed", s->name);
    z.next_in = in;
    z.avail_in = (uInt)len;
    z.next_out = cluster;
    z.avail_out = (uInt)s->cluster_size;
    int zr = inflate(&z, Z_FINISH);
    uInt left = z.avail_out;
    inflateEnd(&z);
    /* The descriptor rounds up to sectors, so trailing input is normal; the output must be full. */
    if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR && zr != Z_OK) || left != 0)
        return wisp_err_set(err, EIO,
                            "%s: compressed cluster at host offset 0x%" PRIx64 " is corrupt",
                            s->name, off);
    return 0;
}

/* Compresses one cluster; returns the compressed size, or 0 if it does not get smaller. */
static size_t deflate_cluster(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    z.next_in = (uint8_t *)src;
    z.avail_in = (uInt)len;
    z.next_out = dst;
    z.avail_out = (uInt)cap;
    int zr = deflate(&z, Z_FINISH);
    size_t out = cap - z.avail_out;
    deflateEnd(&z);
    return zr == Z_STREAM_END && out < len ? out : 0;
}

static size_t zstd_cluster(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
    size_t out = ZSTD_compress(dst, cap, src, len, ZSTD_CLEVEL_DEFAULT);
    return !ZSTD_isError(out) && out < len ? out : 0;
}

static int write_one_compressed(struct qcow2_state *s, uint64_t g, const uint8_t *data,
                                uint8_t *tmp, struct wisp_err *err)
{
    uint64_t e, bmp, i;
    int ret = qcow2_get_l2_entry(s, g, &e, &bmp, err);
    if (ret < 0)
        return ret;
    if (e & QCOW2_OFFSET_MASK || e & QCOW2_OFLAG_COMPRESSED)
        return wisp_err_set(err, EEXIST,
                            "%s: compressed write to guest offset 0x%" PRIx64 ", already allocated",
                            s->name, g);
    size_t clen = s->compression_type == QCOW2_COMPRESSION_ZSTD
                      ? zstd_cluster(data, s->cluster_size, tmp, s->cluster_size)
                      : deflate_cluster(data, s->cluster_size, tmp, s->cluster_size);
    if (clen == 0 || s->extended_l2) {
        struct iovec v = {(void *)data,
                          s->size - g < s->cluster_size ? s->size - g : s->cluster_size};
        pthread_mutex_unlock(&s->lock);
        ret = qcow2_do_pwritev(s->bs, g, &v, 1, err);
        pthread_mutex_lock(&s->lock);
        return ret;
    }
    uint64_t host;
    if ((ret = qcow2_alloc_bytes(s, clen, &host, err)) < 0)
        return ret;
    struct iovec v = {tmp, clen};
    if ((ret = qcow2_write_data(s, host, &v, 1, err)) < 0)
        return ret;
    uint8_t *t;
    if ((ret = qcow2_get_l2_for_write(s, g, &t, &i, err)) < 0)
        return ret;
    unsigned x = 62 - (s->cluster_bits - 8);
    uint64_t sectors = ((host & 511) + clen + 511) / 512 - 1;
    qcow2_l2_set(s, t, i, QCOW2_OFLAG_COMPRESSED | host | (sectors << x), 0);
    return 0;
}

int qcow2_write_compressed(struct block_dev *bs, uint64_t offset, const void *buf, size_t len,
                           struct wisp_err *err)
{
    if (bs->drv != &qcow2_driver)
        return wisp_err_set(err, EINVAL, "%s: not a qcow2 node", bs->filename);
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return wisp_err_set(err, EROFS, "%s: image is read-only", s->name);
    if (offset & (s->cluster_size - 1) || offset > s->size || len > s->size - offset ||
        ((len & (s->cluster_size - 1)) && offset + len != s->size))
        return wisp_err_set(err, EINVAL,
                            "%s: compressed write at 0x%" PRIx64 " (+%zu) is not cluster aligned",
                            s->name, offset, len);
    cleanup_free uint8_t *tmp = malloc(s->cluster_size);
    cleanup_free uint8_t *last = calloc(1, s->cluster_size);
    if (!tmp || !last)
        return wisp_err_sys(err, ENOMEM, "%s: compressed write", s->name);
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_mark_dirty(s, err);
    for (size_t done = 0; ret == 0 && done < len; done += s->cluster_size) {
        const uint8_t *src = (const uint8_t *)buf + done;
        if (len - done < s->cluster_size) {
            memcpy(last, src, len - done);
            src = last;
        }
        ret = write_one_compressed(s, offset + done, src, tmp, err);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}
