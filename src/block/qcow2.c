/* qcow2 driver: header parsing and validation (qcow2 spec "Header", "Header extensions"), open,
 * close, header rewrite, the dirty bit, and the block_driver table. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

static int qcow2_probe(const uint8_t *buf, size_t len)
{
    if (len < 8 || qcow2_be32(buf) != QCOW2_MAGIC)
        return 0;
    uint32_t v = qcow2_be32(buf + 4);
    return (v == 2 || v == 3) ? 100 : 0;
}

/* Fails unless [off, off+len) is cluster aligned and inside the file (what = "L1 table"). */
int qcow2_check_metadata_range(struct qcow2_state *s, uint64_t off, uint64_t len, const char *what,
                               struct wisp_err *err)
{
    uint64_t fsize;
    int ret = block_file_size(s->file, &fsize, err);
    if (ret < 0)
        return ret;
    if (off & (s->cluster_size - 1))
        return wisp_err_set(err, EINVAL,
                            "%s: %s at offset 0x%" PRIx64 " is not aligned to a cluster (%" PRIu64
                            " bytes)",
                            s->name, what, off, s->cluster_size);
    if (off == 0 || off + len < off || off + len > qcow2_align_up(fsize, s->cluster_size))
        return wisp_err_set(err, EINVAL,
                            "%s: %s at offset 0x%" PRIx64 " (length %" PRIu64
                            ") lies outside the image file (size %" PRIu64 ")",
                            s->name, what, off, len, fsize);
    return 0;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/* The header cluster, L1 table, refcount table and snapshot table must not share bytes
 * (spec: each is its own set of clusters). */
static int check_table_overlaps(struct qcow2_state *s, struct wisp_err *err)
{
    struct {
        const char *what;
        uint64_t off, len;
    } t[] = {
        {"header", 0, s->cluster_size},
        {"L1 table", s->l1_offset, (uint64_t)s->l1_size * 8},
        {"refcount table", s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size},
        {"snapshot table", s->snapshots_offset, s->nb_snapshots ? 1 : 0},
    };
    for (unsigned i = 0; i < ARRAY_SIZE(t); i++)
        for (unsigned j = i + 1; j < ARRAY_SIZE(t); j++)
            if (ranges_overlap(t[i].off, t[i].len, t[j].off, t[j].len))
                return wisp_err_set(err, EINVAL,
                                    "%s: %s at offset 0x%" PRIx64
                                    " overlaps the %s at offset 0x%" PRIx64,
                                    s->name, t[j].what, t[j].off, t[i].what, t[i].off);
    return 0;
}

/* Names of incompatible features we do not know, from the feature name table if present. */
static void describe_unknown_features(const uint8_t *hdr, size_t hlen, size_t ext_start,
                                      uint64_t bits, char *out, size_t outlen)
{
    size_t pos = ext_start, used = 0;
    out[0] = 0;
    while (pos + 8 <= hlen) {
        uint32_t type = qcow2_be32(hdr + pos), len = qcow2_be32(hdr + pos + 4);
        if (type == QCOW2_EXT_END || len > hlen - pos - 8)
            break;
        if (type == QCOW2_EXT_FEATURE_TABLE)
            for (size_t e = 0; e + 48 <= len; e += 48) {
                const uint8_t *f = hdr + pos + 8 + e;
                if (f[0] == 0 && f[1] < 64 && (bits & (1ull << f[1])) && used + 52 < outlen)
                    used += (size_t)snprintf(out + used, outlen - used, " '%.46s'",
                                             (const char *)f + 2);
            }
        pos += 8 + qcow2_align_up(len, 8);
    }
}

static int parse_extensions(struct qcow2_state *s, const uint8_t *hdr, size_t hlen, size_t start,
                            struct wisp_err *err)
{
    size_t pos = start;
    size_t end =
        s->backing_file_offset && s->backing_file_offset < hlen ? s->backing_file_offset : hlen;
    while (pos + 8 <= end) {
        uint32_t type = qcow2_be32(hdr + pos), len = qcow2_be32(hdr + pos + 4);
        if (type == QCOW2_EXT_END)
            return 0;
        if (len > end - pos - 8)
            return wisp_err_set(err, EINVAL,
                                "%s: header extension 0x%08x at offset 0x%zx (length %u) runs past "
                                "the header",
                                s->name, type, pos, len);
        const uint8_t *d = hdr + pos + 8;
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (len >= sizeof(s->backing_format))
                return wisp_err_set(err, EINVAL,
                                    "%s: backing format extension at offset 0x%zx is too long (%u)",
                                    s->name, pos, len);
            memcpy(s->backing_format, d, len);
            s->backing_format[len] = 0;
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            s->has_feature_table = true;
            break;
        case QCOW2_EXT_DATA_FILE:
            return wisp_err_set(err, ENOTSUP,
                                "%s: external data files are not supported (extension at offset "
                                "0x%zx)",
                                s->name, pos);
        case QCOW2_EXT_CRYPTO:
            return wisp_err_set(err, ENOTSUP, "%s: encrypted images are not supported", s->name);
        default: /* bitmaps and unknown extensions are ignored (spec: may be ignored) */
            break;
        }
        pos += 8 + qcow2_align_up(len, 8);
    }
    return 0;
}

static int parse_feature_bits(struct qcow2_state *s, const uint8_t *hdr, size_t hlen, bool ro,
                              struct wisp_err *err)
{
    uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown) {
        char names[256];
        describe_unknown_features(hdr, hlen, s->header_length, unknown, names, sizeof(names));
        return wisp_err_set(err, ENOTSUP,
                            "%s: unsupported incompatible feature bits 0x%" PRIx64 "%s%s (header "
                            "offset 72)",
                            s->name, unknown, names[0] ? ":" : "", names);
    }
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
        return wisp_err_set(err, ENOTSUP, "%s: images with an external data file are not supported",
                            s->name);
    if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && !ro && !s->repair)
        return wisp_err_set(err, EROFS,
                            "%s: the image is marked corrupt; it can only be opened read-only "
                            "(repair with wisp-img check -r all)",
                            s->name);
    if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
        if (s->header_length < QCOW2_HDR_V3_LEN + 1)
            return wisp_err_set(err, EINVAL,
                                "%s: compression type bit set but the header (length %u) has no "
                                "compression_type field",
                                s->name, s->header_length);
        s->compression_type = hdr[104];
    } else if (s->header_length > QCOW2_HDR_V3_LEN && hdr[104] != 0) {
        return wisp_err_set(err, EINVAL,
                            "%s: compression_type %u at offset 104 without the compression type "
                            "feature bit",
                            s->name, hdr[104]);
    }
    if (s->compression_type > QCOW2_COMPRESSION_ZSTD)
        return wisp_err_set(err, ENOTSUP,
                            "%s: compression type %u (offset 104) is not supported (0 = zlib, "
                            "1 = zstd)",
                            s->name, s->compression_type);
    s->extended_l2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    if (s->extended_l2 && s->cluster_bits < 14)
        return wisp_err_set(
            err, EINVAL,
            "%s: extended L2 entries need clusters of at least 16 KiB (cluster_bits "
            "%u)",
            s->name, s->cluster_bits);
    return 0;
}

static int parse_header_fields(struct qcow2_state *s, const uint8_t *h, struct wisp_err *err)
{
    if (qcow2_be32(h) != QCOW2_MAGIC)
        return wisp_err_set(err, EINVAL, "%s: not a qcow2 image (bad magic at offset 0)", s->name);
    s->version = (int)qcow2_be32(h + 4);
    if (s->version != 2 && s->version != 3)
        return wisp_err_set(err, ENOTSUP, "%s: unsupported qcow2 version %d (offset 4)", s->name,
                            s->version);
    s->backing_file_offset = qcow2_be64(h + 8);
    s->backing_file_size = qcow2_be32(h + 16);
    s->cluster_bits = qcow2_be32(h + 20);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS || s->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return wisp_err_set(err, EINVAL, "%s: cluster_bits %u at offset 20 not in 9..21", s->name,
                            s->cluster_bits);
    s->cluster_size = 1ull << s->cluster_bits;
    s->size = qcow2_be64(h + 24);
    if (qcow2_be32(h + 32) != 0)
        return wisp_err_set(err, ENOTSUP, "%s: encrypted images are not supported (offset 32)",
                            s->name);
    s->l1_size = qcow2_be32(h + 36);
    s->l1_offset = qcow2_be64(h + 40);
    s->rt_offset = qcow2_be64(h + 48);
    s->rt_clusters = qcow2_be32(h + 56);
    s->nb_snapshots = qcow2_be32(h + 60);
    s->snapshots_offset = qcow2_be64(h + 64);
    if (s->version == 2) {
        s->header_length = QCOW2_HDR_V2_LEN;
        s->refcount_order = 4;
        return 0;
    }
    s->incompat = qcow2_be64(h + 72);
    s->compat = qcow2_be64(h + 80);
    s->autoclear = qcow2_be64(h + 88);
    s->refcount_order = qcow2_be32(h + 96);
    s->header_length = qcow2_be32(h + 100);
    if (s->refcount_order > 6)
        return wisp_err_set(err, EINVAL, "%s: refcount_order %u at offset 96 is above 6", s->name,
                            s->refcount_order);
    if (s->header_length < QCOW2_HDR_V3_LEN || s->header_length > s->cluster_size ||
        (s->header_length & 7))
        return wisp_err_set(err, EINVAL,
                            "%s: header_length %u at offset 100 is invalid (needs 104.. cluster "
                            "size, multiple of 8)",
                            s->name, s->header_length);
    return 0;
}

static int validate_geometry(struct qcow2_state *s, struct wisp_err *err)
{
    s->l2_entry_bytes = s->extended_l2 ? 16 : 8;
    s->l2_bits = s->cluster_bits - (s->extended_l2 ? 4 : 3);
    s->l2_entries = 1ull << s->l2_bits;
    s->refcount_max = s->refcount_order == 6 ? UINT64_MAX : (1ull << (1u << s->refcount_order)) - 1;
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;

    /* A virtual size whose L1 table would exceed QEMU's limit is refused (also bounds memory). */
    if (s->size > (1ull << 62) ||
        qcow2_l1_entries_for(s->cluster_bits, s->l2_bits, s->size) > QCOW2_MAX_L1_BYTES / 8)
        return wisp_err_set(err, EFBIG, "%s: virtual size %" PRIu64 " (offset 24) is too large",
                            s->name, s->size);
    if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return wisp_err_set(err, EFBIG, "%s: l1_size %u at offset 36 is too large", s->name,
                            s->l1_size);
    if (s->l1_size < qcow2_l1_entries_for(s->cluster_bits, s->l2_bits, s->size))
        return wisp_err_set(
            err, EINVAL, "%s: l1_size %u at offset 36 is too small for the virtual size %" PRIu64,
            s->name, s->l1_size, s->size);
    int ret;
    if (s->l1_size && (ret = qcow2_check_metadata_range(s, s->l1_offset, (uint64_t)s->l1_size * 8,
                                                        "L1 table", err)) < 0)
        return ret;
    if (s->rt_clusters == 0 || (uint64_t)s->rt_clusters * s->cluster_size > QCOW2_MAX_RT_BYTES)
        return wisp_err_set(err, EINVAL, "%s: refcount_table_clusters %u at offset 56 is invalid",
                            s->name, s->rt_clusters);
    if ((ret =
             qcow2_check_metadata_range(s, s->rt_offset, (uint64_t)s->rt_clusters * s->cluster_size,
                                        "refcount table", err)) < 0)
        return ret;
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
        return wisp_err_set(err, EINVAL, "%s: nb_snapshots %u at offset 60 is too large", s->name,
                            s->nb_snapshots);
    if (s->nb_snapshots &&
        (ret = qcow2_check_metadata_range(s, s->snapshots_offset, 40, "snapshot table", err)) < 0)
        return ret;
    if (s->backing_file_offset) {
        if (s->backing_file_size >= sizeof(s->backing_file) ||
            s->backing_file_offset > s->cluster_size ||
            s->backing_file_size > s->cluster_size - s->backing_file_offset)
            return wisp_err_set(err, EINVAL,
                                "%s: backing file name at offset 0x%" PRIx64
                                " (length %u) is not inside the header cluster",
                                s->name, s->backing_file_offset, s->backing_file_size);
    }
    return check_table_overlaps(s, err);
}

/* Loads the L1 table; its entries are validated with the other tables (qcow2_meta_build). */
static int load_l1(struct qcow2_state *s, struct wisp_err *err)
{
    size_t n = s->l1_size ? s->l1_size : 1;
    s->l1 = calloc(n, 8);
    if (!s->l1)
        return wisp_err_sys(err, ENOMEM, "%s: L1 table", s->name);
    if (!s->l1_size)
        return 0;
    int ret = block_file_pread(s->file, s->l1_offset, s->l1, (size_t)s->l1_size * 8, err);
    if (ret < 0)
        return wisp_err_wrap(err, "%s: reading the L1 table", s->name);
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1[i] = be64toh(s->l1[i]);
    return 0;
}

/* Loads the refcount table. Bits 0-8 of an entry are reserved (spec "Refcount table"); the
 * blocks' positions are validated with the other tables (qcow2_meta_build). */
static int load_refcount_table(struct qcow2_state *s, bool strict, struct wisp_err *err)
{
    s->rt_entries = (uint64_t)s->rt_clusters * s->cluster_size / 8;
    s->rt = calloc(s->rt_entries, 8);
    if (!s->rt)
        return wisp_err_sys(err, ENOMEM, "%s: refcount table", s->name);
    int ret = block_file_pread(s->file, s->rt_offset, s->rt, s->rt_entries * 8, err);
    if (ret < 0)
        return wisp_err_wrap(err, "%s: reading the refcount table", s->name);
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t e = be64toh(s->rt[i]);
        if (e & ~QCOW2_RT_OFFSET_MASK)
            s->rt_reserved++;
        if ((e & ~QCOW2_RT_OFFSET_MASK) && strict)
            return wisp_err_set(err, EINVAL,
                                "%s: refcount table entry %" PRIu64 " at offset 0x%" PRIx64
                                " has reserved bits set",
                                s->name, i, s->rt_offset + i * 8);
        s->rt[i] = e & QCOW2_RT_OFFSET_MASK;
    }
    return 0;
}

static int read_header(struct qcow2_state *s, bool ro, struct wisp_err *err)
{
    uint8_t first[QCOW2_HDR_LEN_CTYPE] = {0};
    int ret = block_file_pread(s->file, 0, first, sizeof(first), err);
    if (ret < 0)
        return wisp_err_wrap(err, "%s: reading the qcow2 header", s->name);
    if ((ret = parse_header_fields(s, first, err)) < 0)
        return ret;
    cleanup_free uint8_t *hdr = malloc(s->cluster_size);
    if (!hdr)
        return wisp_err_sys(err, ENOMEM, "%s: header", s->name);
    if ((ret = block_file_pread(s->file, 0, hdr, s->cluster_size, err)) < 0)
        return wisp_err_wrap(err, "%s: reading the qcow2 header", s->name);
    if ((ret = parse_feature_bits(s, hdr, s->cluster_size, ro, err)) < 0)
        return ret;
    if ((ret = validate_geometry(s, err)) < 0)
        return ret;
    if ((ret = parse_extensions(s, hdr, s->cluster_size, s->header_length, err)) < 0)
        return ret;
    if (s->backing_file_offset) {
        memcpy(s->backing_file, hdr + s->backing_file_offset, s->backing_file_size);
        s->backing_file[s->backing_file_size] = 0;
    }
    return 0;
}

/* Appends one extension (spec "Header extensions": type, length, data padded to 8). */
static size_t put_ext(uint8_t *h, size_t pos, uint32_t type, const void *data, uint32_t len)
{
    qcow2_put_be32(h + pos, type);
    qcow2_put_be32(h + pos + 4, len);
    if (len)
        memcpy(h + pos + 8, data, len);
    return pos + 8 + qcow2_align_up(len, 8);
}

/* Feature name table (spec "Feature name table"), so other tools can name our bits. */
static size_t put_feature_table(uint8_t *h, size_t pos)
{
    static const struct {
        uint8_t type, bit;
        const char *name;
    } f[] = {
        {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
        {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
        {2, 0, "bitmaps"},          {2, 1, "raw external data"}};
    uint8_t t[ARRAY_SIZE(f) * 48];
    memset(t, 0, sizeof(t));
    for (unsigned i = 0; i < ARRAY_SIZE(f); i++) {
        t[i * 48] = f[i].type;
        t[i * 48 + 1] = f[i].bit;
        memcpy(t + i * 48 + 2, f[i].name, strlen(f[i].name));
    }
    return put_ext(h, pos, QCOW2_EXT_FEATURE_TABLE, t, sizeof(t));
}

/* Rewrites the header, its extensions and the backing file name in cluster 0. */
int qcow2_write_header(struct qcow2_state *s, struct wisp_err *err)
{
    cleanup_free uint8_t *h = calloc(1, s->cluster_size);
    if (!h)
        return wisp_err_sys(err, ENOMEM, "%s: header", s->name);
    size_t hlen = s->version == 2 ? QCOW2_HDR_V2_LEN
                                  : (s->header_length < QCOW2_HDR_LEN_CTYPE ? QCOW2_HDR_LEN_CTYPE
                                                                            : s->header_length);
    qcow2_put_be32(h, QCOW2_MAGIC);
    qcow2_put_be32(h + 4, (uint32_t)s->version);
    qcow2_put_be32(h + 20, s->cluster_bits);
    qcow2_put_be64(h + 24, s->size);
    qcow2_put_be32(h + 36, s->l1_size);
    qcow2_put_be64(h + 40, s->l1_offset);
    qcow2_put_be64(h + 48, s->rt_offset);
    qcow2_put_be32(h + 56, s->rt_clusters);
    qcow2_put_be32(h + 60, s->nb_snapshots);
    qcow2_put_be64(h + 64, s->snapshots_offset);
    if (s->version >= 3) {
        /* we drop bitmaps, so the bitmaps autoclear bit goes (spec: autoclear semantics) */
        s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
        qcow2_put_be64(h + 72, s->incompat);
        qcow2_put_be64(h + 80, s->compat);
        qcow2_put_be64(h + 88, s->autoclear);
        qcow2_put_be32(h + 96, s->refcount_order);
        qcow2_put_be32(h + 100, (uint32_t)hlen);
        h[104] = (uint8_t)s->compression_type;
    }
    size_t pos = hlen;
    if (s->backing_format[0])
        pos = put_ext(h, pos, QCOW2_EXT_BACKING_FORMAT, s->backing_format,
                      (uint32_t)strlen(s->backing_format));
    size_t blen = strlen(s->backing_file);
    /* The feature name table is optional: left out when a small cluster has no room for it. */
    if (s->version >= 3 && pos + 8 + 8 * 48 + 8 + blen <= s->cluster_size)
        pos = put_feature_table(h, pos);
    pos = put_ext(h, pos, QCOW2_EXT_END, NULL, 0);
    if (pos + blen > s->cluster_size)
        return wisp_err_set(err, ENOSPC, "%s: header and backing file name do not fit in a cluster",
                            s->name);
    if (blen) {
        memcpy(h + pos, s->backing_file, blen);
        qcow2_put_be64(h + 8, pos);
        qcow2_put_be32(h + 16, (uint32_t)blen);
        s->backing_file_offset = pos;
        s->backing_file_size = (uint32_t)blen;
        pos += blen;
    } else {
        s->backing_file_offset = 0;
        s->backing_file_size = 0;
    }
    s->header_length = (uint32_t)hlen;
    int ret = qcow2_write_meta(s, QCOW2_META_HEADER, 0, h, qcow2_align_up(pos, 8), err);
    return ret < 0 ? wisp_err_wrap(err, "%s: writing the header", s->name) : 0;
}

/* Lazy refcounts: the dirty bit must be on disk before the first write that may leave the
 * refcounts behind (spec "incompatible_features" bit 0). */
int qcow2_mark_dirty(struct qcow2_state *s, struct wisp_err *err)
{
    if (s->dirty_by_us || s->version < 3 || !(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS))
        return 0;
    s->incompat |= QCOW2_INCOMPAT_DIRTY;
    int ret = qcow2_write_header(s, err);
    if (ret == 0)
        ret = qcow2_barrier(s, err);
    if (ret == 0)
        s->dirty_by_us = true;
    return ret;
}

int qcow2_make_clean(struct block_dev *bs, struct wisp_err *err)
{
    if (bs->drv != &qcow2_driver)
        return wisp_err_set(err, EINVAL, "%s: not a qcow2 node", bs->filename);
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return 0;
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_flush_metadata(s, err);
    if (ret == 0 && (s->incompat & QCOW2_INCOMPAT_DIRTY)) {
        s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
        ret = qcow2_write_header(s, err);
        if (ret == 0)
            ret = qcow2_barrier(s, err);
        s->dirty_by_us = false;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static void qcow2_state_free(struct qcow2_state *s)
{
    if (!s)
        return;
    qcow2_cache_destroy(&s->l2_cache);
    qcow2_cache_destroy(&s->rb_cache);
    qcow2_free_snapshots(s);
    free(s->l1);
    free(s->rt);
    free(s->deferred);
    free(s->host_io);
    qcow2_meta_free(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->inflight_done);
    free(s);
}

/* L2 cache: enough to map 8 GiB of disk or 32 MiB of tables, whichever is smaller; refcount
 * blocks: 1/4 of that (each covers far more than an L2 table). */
static int init_caches(struct qcow2_state *s, struct wisp_err *err)
{
    uint64_t per_table = s->l2_entries << s->cluster_bits;
    uint64_t n = (8ull << 30) / per_table;
    if (n * s->cluster_size > (32u << 20))
        n = (32u << 20) / s->cluster_size;
    if (n < 16)
        n = 16;
    int ret = qcow2_cache_init(&s->l2_cache, (unsigned)n, s->cluster_size);
    if (ret == 0)
        ret = qcow2_cache_init(&s->rb_cache, (unsigned)(n / 4 < 8 ? 8 : n / 4), s->cluster_size);
    return ret < 0 ? wisp_err_sys(err, -ret, "%s: metadata cache", s->name) : 0;
}

static int open_backing(struct block_dev *bs, struct qcow2_state *s,
                        const struct block_open_opts *opts, struct wisp_err *err)
{
    if (opts->no_backing)
        return 0;
    const char *file = opts->backing_override ? opts->backing_override : s->backing_file;
    const char *fmt = opts->backing_override ? opts->backing_format_override : s->backing_format;
    if (!file || !file[0])
        return 0;
    int ret = block_open_backing(bs, file, fmt && fmt[0] ? fmt : NULL, opts, err);
    return ret < 0 ? wisp_err_wrap(err, "%s: opening backing file", s->name) : 0;
}

/* A writable open of a dirty image (lazy refcounts, not closed cleanly) rebuilds the refcounts
 * first; a bitmaps autoclear bit is cleared (we will not update the bitmaps). */
static int open_writable_fixups(struct block_dev *bs, struct qcow2_state *s, struct wisp_err *err)
{
    int ret = 0;
    if (s->read_only || s->repair) /* repair: qcow2_check does it all */
        return 0;
    if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
        struct qcow2_check_result r = {0};
        ret = qcow2_check(bs, QCOW2_FIX_ALL, &r, err);
        if (ret == 0 && r.corruptions)
            ret =
                wisp_err_set(err, EIO, "%s: repairing the dirty image left %" PRIu64 " corruptions",
                             s->name, r.corruptions);
        if (ret == 0) {
            s->incompat &= ~QCOW2_INCOMPAT_DIRTY;
            ret = qcow2_write_header(s, err);
        }
    }
    if (ret == 0 && (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
        ret = qcow2_write_header(s, err);
    return ret;
}

static int qcow2_open(struct block_dev *bs, const struct block_open_opts *opts,
                      struct wisp_err *err)
{
    struct qcow2_state *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_err_sys(err, ENOMEM, "%s: qcow2 state", bs->filename);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->inflight_done, NULL);
    s->bs = bs;
    s->file = bs->file;
    s->name = bs->filename;
    s->read_only = bs->read_only;
    s->repair = opts->repair;
    s->busy_skip = UINT64_MAX;
    bs->opaque = s;
    int ret = block_file_size(s->file, &s->host_end, err); /* bytes past it read as zeroes */
    if (ret == 0)
        ret = read_header(s, s->read_only, err);
    if (ret == 0 && !s->read_only && block_file_is_direct(s->file) && s->host_end)
        s->prealloc_end = s->host_end; /* reserve ahead of allocation (qcow2_prealloc_ahead) */
    if (ret == 0)
        ret = load_l1(s, err);
    if (ret == 0)
        ret = load_refcount_table(s, !s->repair, err);
    if (ret == 0)
        ret = init_caches(s, err);
    if (ret == 0)
        ret = qcow2_read_snapshots(s, err);
    if (ret == 0)
        ret = qcow2_meta_build(s, !s->repair, err);
    if (ret == 0)
        ret = open_writable_fixups(bs, s, err);
    if (ret == 0)
        ret = open_backing(bs, s, opts, err);
    if (ret < 0) {
        bs->opaque = NULL;
        qcow2_state_free(s);
        return ret;
    }
    bs->size = s->size;
    if (s->repair)
        bs->read_only = true; /* guest writes refused; qcow2_check still writes */
    return 0;
}

static void qcow2_close(struct block_dev *bs)
{
    struct qcow2_state *s = bs->opaque;
    if (!s)
        return;
    if (!s->read_only && !s->corrupt_stop) { /* corrupt: reported, nothing more written */
        struct wisp_err err;
        if (qcow2_make_clean(bs, &err) < 0)
            fprintf(stderr, "wisp: %s\n", err.msg); /* close cannot fail; leaks are allowed */
        uint64_t size;
        if (s->prealloc_end > s->host_end && block_file_size(s->file, &size, NULL) == 0 &&
            size > s->host_end && block_file_truncate(s->file, s->host_end, &err) < 0)
            fprintf(stderr, "wisp: %s\n", err.msg); /* only reserved space stays */
    }
    qcow2_state_free(s);
    bs->opaque = NULL;
}

static int qcow2_flush(struct block_dev *bs, struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    if (s->read_only)
        return 0;
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_flush_metadata(s, err);
    if (ret == 0)
        ret = qcow2_barrier(s, err);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int qcow2_get_info(struct block_dev *bs, struct block_info *info, struct wisp_err *err)
{
    struct qcow2_state *s = bs->opaque;
    info->format = "qcow2";
    info->virtual_size = s->size;
    info->cluster_size = (uint32_t)s->cluster_size;
    info->qcow2_version = s->version;
    info->dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
    info->corrupt = s->incompat & QCOW2_INCOMPAT_CORRUPT;
    info->lazy_refcounts = s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS;
    info->extended_l2 = s->extended_l2;
    info->refcount_bits = 1u << s->refcount_order;
    snprintf(info->compression_type, sizeof(info->compression_type), "%s",
             s->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib");
    snprintf(info->backing_file, sizeof(info->backing_file), "%s", s->backing_file);
    snprintf(info->backing_format, sizeof(info->backing_format), "%s", s->backing_format);
    info->nr_snapshots = s->nb_snapshots;
    int ret = block_file_size(s->file, &info->file_size, err);
    return ret < 0 ? ret : block_file_allocated(s->file, &info->allocated, err);
}

const struct block_driver qcow2_driver = {
    .name = "qcow2",
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .preadv = qcow2_do_preadv,
    .pwritev = qcow2_do_pwritev,
    .flush = qcow2_flush,
    .discard = qcow2_do_discard,
    .write_zeroes = qcow2_do_write_zeroes,
    .get_info = qcow2_get_info,
    .block_status = qcow2_do_block_status,
    .map_for_write = qcow2_do_map_for_write,
    .map_for_read = qcow2_do_map_for_read,
    .map_done = qcow2_do_map_done,
    .truncate = qcow2_do_truncate,
};
