/* virtio-blk request parsing (virtio 1.2 §5.2.6): the framing of a chain (header, data,
 * status byte) and every check a request gets before any I/O. Pure: no device state, no I/O,
 * guest memory read once. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "virtio/blk_int.h"

#define HEADER_BYTES  sizeof(struct virtio_blk_outhdr)               /* 16 */
#define SEGMENT_BYTES sizeof(struct virtio_blk_discard_write_zeroes) /* 16 */

size_t vblk_iov_to_buf(const struct iovec *iov, unsigned n, uint64_t skip, void *buf, size_t len)
{
    size_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        size_t part = iov[i].iov_len - skip;
        if (part > len - done)
            part = len - done;
        memcpy((uint8_t *)buf + done, (const uint8_t *)iov[i].iov_base + skip, part);
        done += part;
        skip = 0;
    }
    return done;
}

size_t vblk_iov_from_buf(const struct iovec *iov, unsigned n, const void *buf, size_t len)
{
    size_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        size_t part = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
        memcpy(iov[i].iov_base, (const uint8_t *)buf + done, part);
        done += part;
    }
    return done;
}

/* The device-writable buffers without the status byte (the last one). */
static void take_writable(const struct virtq_chain *c, struct iovec *data, struct vblk_request *r)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->nr_in; i++)
        data[n++] = c->iov[c->nr_out + i];
    if (--data[n - 1].iov_len == 0)
        n--;
    r->data = data;
    r->nr_data = n;
    r->data_len = c->in_len - 1;
}

/* The device-readable buffers after the header. */
static void take_readable(const struct virtq_chain *c, struct iovec *data, struct vblk_request *r)
{
    uint64_t skip = HEADER_BYTES;
    unsigned n = 0;
    for (unsigned i = 0; i < c->nr_out; i++) {
        struct iovec v = c->iov[i];
        if (skip >= v.iov_len) {
            skip -= v.iov_len;
            continue;
        }
        v.iov_base = (uint8_t *)v.iov_base + skip;
        v.iov_len -= skip;
        skip = 0;
        data[n++] = v;
    }
    r->data = data;
    r->nr_data = n;
    r->data_len = c->out_len - HEADER_BYTES;
}

/* sector + count within the capacity, without overflow. */
static bool in_capacity(const struct vblk_limits *lim, uint64_t sector, uint64_t count)
{
    return sector <= lim->capacity && count <= lim->capacity - sector;
}

static int fail(struct wisp_err *err, int status, const char *what)
{
    wisp_err_set(err, EINVAL, "%s", what);
    return status;
}

/* IN / OUT: a whole number of sectors inside the disk. */
static int check_rw(const struct vblk_limits *lim, const struct vblk_request *r,
                    struct wisp_err *err)
{
    if (r->data_len % VBLK_SECTOR_SIZE)
        return fail(err, VIRTIO_BLK_S_IOERR, "data length is not a multiple of 512 bytes");
    if (!in_capacity(lim, r->sector, r->data_len / VBLK_SECTOR_SIZE))
        return fail(err, VIRTIO_BLK_S_IOERR, "request beyond the end of the disk");
    return VIRTIO_BLK_S_OK;
}

/* Copies the segments out of guest memory and checks their count and flags (UNSUPP). */
static int copy_segments(const struct vblk_limits *lim, struct vblk_request *r,
                         struct wisp_err *err)
{
    bool discard = r->type == VIRTIO_BLK_T_DISCARD;
    uint32_t max_seg = discard ? lim->max_discard_seg : lim->max_write_zeroes_seg;
    if (r->data_len == 0 || r->data_len % SEGMENT_BYTES)
        return fail(err, VIRTIO_BLK_S_IOERR, "segment data is not a whole number of segments");
    if (r->data_len / SEGMENT_BYTES > max_seg || r->data_len / SEGMENT_BYTES > VBLK_MAX_DWZ_SEG)
        return fail(err, VIRTIO_BLK_S_UNSUPP, "more segments than the device takes");
    r->nr_segments = (unsigned)(r->data_len / SEGMENT_BYTES);
    for (unsigned i = 0; i < r->nr_segments; i++) {
        struct virtio_blk_discard_write_zeroes s;
        vblk_iov_to_buf(r->data, r->nr_data, (uint64_t)i * SEGMENT_BYTES, &s, sizeof(s));
        r->segments[i] = (struct vblk_segment){.sector = le64toh(s.sector),
                                               .num_sectors = le32toh(s.num_sectors),
                                               .flags = le32toh(s.flags)};
        uint32_t known = discard ? 0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
        if (r->segments[i].flags & ~known) /* §5.2.6.2: unknown flags, UNMAP on a discard */
            return fail(err, VIRTIO_BLK_S_UNSUPP, "segment with an unsupported flag");
    }
    return VIRTIO_BLK_S_OK;
}

/* DISCARD / WRITE_ZEROES: the segments, each within the sector limit and the disk. */
static int check_segments(const struct vblk_limits *lim, struct vblk_request *r,
                          struct wisp_err *err)
{
    int st = copy_segments(lim, r, err);
    if (st != VIRTIO_BLK_S_OK)
        return st;
    uint32_t max =
        r->type == VIRTIO_BLK_T_DISCARD ? lim->max_discard_sectors : lim->max_write_zeroes_sectors;
    for (unsigned i = 0; i < r->nr_segments; i++) {
        const struct vblk_segment *s = &r->segments[i];
        if (s->num_sectors > max)
            return fail(err, VIRTIO_BLK_S_IOERR, "segment longer than the sector limit");
        if (!in_capacity(lim, s->sector, s->num_sectors))
            return fail(err, VIRTIO_BLK_S_IOERR, "segment beyond the end of the disk");
    }
    return VIRTIO_BLK_S_OK;
}

/* The type's data direction and contents, after the header. */
static int check_type(const struct virtq_chain *c, const struct vblk_limits *lim,
                      struct iovec *data, struct vblk_request *r, struct wisp_err *err)
{
    bool extra_readable = c->out_len > HEADER_BYTES, extra_writable = c->in_len > 1;
    switch (r->type) {
    case VIRTIO_BLK_T_IN:
        if (extra_readable)
            return fail(err, VIRTIO_BLK_S_IOERR, "read request with device-readable data");
        take_writable(c, data, r);
        return check_rw(lim, r, err);
    case VIRTIO_BLK_T_GET_ID:
        take_writable(c, data, r);
        if (extra_readable || r->data_len < VIRTIO_BLK_ID_BYTES)
            return fail(err, VIRTIO_BLK_S_IOERR, "GET_ID without 20 device-writable bytes");
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_FLUSH:
        return VIRTIO_BLK_S_OK; /* §5.2.6.1: a driver SHOULD NOT include data; ignored */
    case VIRTIO_BLK_T_OUT:
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        if (lim->read_only) /* §5.2.6.2: IOERR, and nothing is written */
            return fail(err, VIRTIO_BLK_S_IOERR, "write to a read-only drive");
        if (extra_writable)
            return fail(err, VIRTIO_BLK_S_IOERR, "write request with device-writable data");
        take_readable(c, data, r);
        return r->type == VIRTIO_BLK_T_OUT ? check_rw(lim, r, err) : check_segments(lim, r, err);
    }
    return fail(err, VIRTIO_BLK_S_UNSUPP, "unsupported request type");
}

int vblk_parse_request(const struct virtq_chain *c, const struct vblk_limits *lim,
                       struct iovec *data, struct vblk_request *r, struct wisp_err *err)
{
    r->nr_data = 0;
    r->data_len = 0;
    r->nr_segments = 0;
    r->data = data;
    if (c->nr_in == 0) {
        r->status = NULL;
        return wisp_err_set(err, EINVAL, "request without a device-writable status byte");
    }
    const struct iovec *last = &c->iov[c->nr_out + c->nr_in - 1];
    r->status = (uint8_t *)last->iov_base + last->iov_len - 1;
    struct virtio_blk_outhdr h;
    if (c->out_len < HEADER_BYTES ||
        vblk_iov_to_buf(c->iov, c->nr_out, 0, &h, sizeof(h)) != sizeof(h)) {
        r->type = UINT32_MAX;
        return fail(err, VIRTIO_BLK_S_IOERR, "request header shorter than 16 bytes");
    }
    r->type = le32toh(h.type);
    r->sector = le64toh(h.sector);
    return check_type(c, lim, data, r, err);
}
