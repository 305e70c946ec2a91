/* virtio-blk (virtio 1.2 §5.2) on the block layer: a drive of the machine. */
#ifndef WISP_VIRTIO_BLK_H
#define WISP_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"
#include "common/err.h"
#include "devices/device.h"

/* One drive, as --drive (and later the API's PUT /drives/{id}) describes it. Strings are not
 * owned (they point into argv or the configuration). */
struct virtio_blk_params {
    const char *id;     /* the device name; NULL: "blkN" */
    const char *path;   /* the image (required) */
    const char *format; /* "raw", "qcow2", or NULL: probed, with a warning as QEMU does */
    bool read_only;
    enum block_cache_mode cache;
    enum block_aio_engine aio;
    bool aio_given;     /* false: io_uring where the kernel has it, else threads */
    const char *serial; /* VIRTIO_BLK_T_GET_ID (at most 20 bytes), NULL: none */
    unsigned queues;    /* request queues (VIRTIO_BLK_F_MQ when > 1); 0: 1 */
    struct block_throttle_limits limits;
};

/*
 * Parses a --drive value: "path=FILE[,format=raw|qcow2][,readonly=on][,cache=..][,aio=..]
 * [,serial=..][,queues=N][,iops=..][,bps=..][,id=..]..." into *p (pointers into buf, a copy the
 * caller keeps alive; strlen(spec) + 1 bytes). Returns 0 or -EINVAL with err naming the key.
 */
int virtio_blk_params_parse(const char *spec, char *buf, struct virtio_blk_params *p,
                            struct wisp_err *err);

/* A change of a realized drive while the VM runs (the API's PATCH /drives/{id}). */
struct virtio_blk_update {
    const char *path;                           /* a new image (media change), or NULL */
    const struct block_throttle_limits *limits; /* new limits (all zero: none), or NULL */
};
/*
 * Main thread. The work runs on the drive's I/O thread (opening an image may block), then
 * done(opaque, result, err) runs on the main loop. A new image is opened first, with the drive's
 * format (or probed), read-only flag, cache mode and engine: a failure leaves the old one in
 * place. The requests in flight finish on the old image; the guest then sees a configuration
 * change (virtio 1.2 §2.5.1) with the new capacity. -EBUSY while an earlier change is under
 * way. If the VM ends first, done is not called.
 */
int virtio_blk_update(struct device *dev, const struct virtio_blk_update *change,
                      void (*done)(void *opaque, int result, const struct wisp_err *err),
                      void *opaque, struct wisp_err *err);

/* Requests carried out so far (any thread; for metrics). */
struct virtio_blk_stats {
    uint64_t read_count, read_bytes, write_count, write_bytes, flush_count;
};
void virtio_blk_get_stats(const struct device *dev, struct virtio_blk_stats *out);

extern const struct device_ops virtio_blk_device_ops;

#endif
