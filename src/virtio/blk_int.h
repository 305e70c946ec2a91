/* virtio-blk internals (virtio 1.2 §5.2): the device's limits and the parsing of a request,
 * as pure functions that touch no device state and do no I/O (the device in blk.c and the
 * fuzz target call them). */
#ifndef WISP_VIRTIO_BLK_INT_H
#define WISP_VIRTIO_BLK_INT_H

#include <linux/virtio_blk.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/err.h"
#include "virtio/virtq.h"

#define VBLK_SECTOR_SIZE 512u
#define VBLK_QUEUE_SIZE  256 /* QueueNumMax of every request queue */
/* A chain is at most the queue size (§2.7.5.3.1): the header, the data buffers, the status. */
#define VBLK_MAX_IOV  VBLK_QUEUE_SIZE
#define VBLK_SEG_MAX  (VBLK_QUEUE_SIZE - 2) /* seg_max: data buffers of one request */
#define VBLK_SIZE_MAX (1u << 20)            /* size_max: bytes of one data buffer (advice) */
/* Discard / write-zeroes limits (§5.2.4): segments per request, sectors per segment (QEMU's
 * default, so the same guest sees the same limits under both VMMs). */
#define VBLK_MAX_DWZ_SEG     16
#define VBLK_MAX_DWZ_SECTORS 4194303u

/* What a request is checked against: the drive as its configuration space describes it. */
struct vblk_limits {
    uint64_t capacity; /* in 512-byte sectors */
    bool read_only;    /* VIRTIO_BLK_F_RO offered */
    uint32_t max_discard_sectors, max_discard_seg;
    uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
};

/* One discard / write-zeroes segment, copied out of guest memory. */
struct vblk_segment {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags; /* VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP */
};

/* A request as vblk_parse_request() found it. */
struct vblk_request {
    uint32_t type;      /* VIRTIO_BLK_T_* */
    uint64_t sector;    /* IN / OUT */
    uint8_t *status;    /* the status byte: the last device-writable byte of the chain */
    struct iovec *data; /* the data buffers: device-writable for IN and GET_ID, else readable */
    unsigned nr_data;
    uint64_t data_len; /* bytes in data[] */
    unsigned nr_segments;
    struct vblk_segment segments[VBLK_MAX_DWZ_SEG]; /* DISCARD / WRITE_ZEROES */
};

/*
 * Parses and checks one popped chain (§5.2.6):
 *   - the status byte is the chain's last device-writable byte; a chain without one cannot be
 *     completed: returns -EINVAL (err says why) and the caller sets DEVICE_NEEDS_RESET;
 *   - otherwise returns the status to complete the request with before any I/O:
 *     VIRTIO_BLK_S_OK (valid: carry it out), or VIRTIO_BLK_S_IOERR / VIRTIO_BLK_S_UNSUPP (fail
 *     it; err says why; r->status is valid, the rest of *r may be partial).
 * Checked: a readable 16-byte header; the data direction (IN and GET_ID write, OUT, DISCARD and
 * WRITE_ZEROES read; any other data is IOERR; FLUSH ignores data); IN/OUT lengths a multiple of
 * 512 and sector + length within the capacity (overflow-checked); GET_ID room for 20 bytes;
 * DISCARD/WRITE_ZEROES segments (a whole number, at most the segment limit, else UNSUPP; flags
 * known, no UNMAP on DISCARD, else UNSUPP; within the sector limit and the capacity, else
 * IOERR); writes of any kind to a read-only drive (IOERR); unknown types (UNSUPP).
 * Guest memory is read once: the header and the segments are copied into *r. `data` receives
 * the data buffers and needs room for c->nr_out + c->nr_in entries; it may be c->iov itself
 * (entries only move towards the front, after the header and status are taken).
 */
int vblk_parse_request(const struct virtq_chain *c, const struct vblk_limits *lim,
                       struct iovec *data, struct vblk_request *r, struct wisp_err *err);

/* Copies up to len bytes out of (into) an iovec array, starting `skip` bytes in; returns the
 * bytes copied. */
size_t vblk_iov_to_buf(const struct iovec *iov, unsigned n, uint64_t skip, void *buf, size_t len);
size_t vblk_iov_from_buf(const struct iovec *iov, unsigned n, const void *buf, size_t len);

#endif
