/* virtio-blk (virtio 1.2 §5.2) on the block layer. One I/O thread per drive ("blk-<name>")
 * serves all of the drive's request queues and its block completions: a queue notification
 * pops and parses chains (blk_parse.c) and submits them with block_aio_submit(); the block
 * layer's completion fd, a source on the same loop, runs block_aio_poll(), whose callbacks
 * write the status byte and push the used element; the interrupt follows once per batch, as
 * EVENT_IDX asks. The vCPU thread only touches registers and the configuration space. */
#include <endian.h>
#include <errno.h>
#include <liburing.h>
#include <linux/virtio_ids.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/statebuf.h"
#include "virtio/blk.h"
#include "virtio/blk_int.h"
#include "virtio/virtio.h"

/* With throttling, at most this many requests are handed to the block layer at once; the rest
 * wait in the available ring. A reset (and the VM's end) waits for the requests the block layer
 * holds, at the throttled rate: this bounds that wait. */
#define VBLK_THROTTLED_INFLIGHT 16

/* Write-zeroes without UNMAP writes zero buffers (the block layer's asynchronous write_zeroes
 * may always deallocate): this many bytes per write, from one shared page-aligned zero area
 * that is only ever read (its pages stay the kernel's zero page). */
#define VBLK_ZERO_BUF   (64u << 10)
#define VBLK_ZERO_IOV   (VBLK_MAX_IOV / VBLK_MAX_DWZ_SEG)
#define VBLK_ZERO_CHUNK ((uint64_t)VBLK_ZERO_BUF * VBLK_ZERO_IOV)
static uint8_t vblk_zeros[VBLK_ZERO_BUF] __attribute__((aligned(4096)));

/* One request from its pop to its completion. */
struct vblk_req {
    struct virtio_blk *blk;
    struct virtq *vq;
    uint16_t head;
    uint32_t in_len;  /* device-writable bytes of the chain: the used length of a read */
    unsigned epoch;   /* blk->epoch when popped: a reset in between drops the completion */
    unsigned pending; /* block requests in flight */
    bool failed;      /* a block request failed */
    bool flush_after; /* a flush follows before completion (FLUSH not negotiated, §5.2.6.2) */
    bool wrote_data;  /* the device-writable buffers were written (reads, GET_ID) */
    struct vblk_req *next_free;
    struct vblk_request r;
    struct block_req breq[VBLK_MAX_DWZ_SEG];
    struct {
        uint64_t next, end; /* bytes: write-zeroes without UNMAP still to write */
    } zero[VBLK_MAX_DWZ_SEG];
    struct iovec iov[VBLK_MAX_IOV];
};

struct vblk_update;

/* A drive. The fields after `serving` belong to the I/O thread (and to block_close() once the
 * thread has stopped). */
struct virtio_blk {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_blk_params *p;
    struct block_dev *bs;
    struct iothread *io;
    struct evloop_source *done_src;  /* the block completion fd on the I/O loop */
    struct virtio_blk_config config; /* little-endian, as the driver reads it */
    struct vblk_limits lim;
    bool volatile_cache;   /* writeback / none: completed writes need a flush to be stable */
    bool throttled;        /* a limit is set */
    bool probed_raw;       /* the format was guessed as raw: sector 0 stays raw */
    bool flush_each_write; /* from activate: FLUSH not negotiated on a volatile cache */
    atomic_bool serving;   /* between activate and reset */
    struct vblk_req *free_reqs;
    unsigned inflight;      /* requests popped and not completed */
    unsigned epoch;         /* counts resets */
    bool stalled;           /* stopped popping at VBLK_THROTTLED_INFLIGHT */
    uint32_t notify_queues; /* queues whose used ring changed since the last interrupt */
    bool poll_error_logged;
    /* changes while the VM runs (virtio_blk_update) */
    enum block_aio_engine engine;        /* the engine the image was opened with */
    struct block_throttle_limits limits; /* the limits in force (I/O thread) */
    struct vblk_update *update;          /* a change under way (main thread) */
    struct virtio_blk_stats stats;       /* written by the I/O thread only */
};

/* ---- requests ------------------------------------------------------------------------- */

static struct vblk_req *req_get(struct virtio_blk *blk)
{
    struct vblk_req *req = blk->free_reqs;
    if (req)
        blk->free_reqs = req->next_free;
    else if (!(req = malloc(sizeof(*req))))
        return NULL;
    req->blk = blk;
    req->epoch = blk->epoch;
    req->pending = 0;
    req->failed = req->flush_after = req->wrote_data = false;
    memset(req->zero, 0, sizeof(req->zero));
    blk->inflight++;
    return req;
}

static void req_put(struct virtio_blk *blk, struct vblk_req *req)
{
    req->next_free = blk->free_reqs;
    blk->free_reqs = req;
    blk->inflight--;
}

static void vblk_free_requests(struct virtio_blk *blk)
{
    while (blk->free_reqs) {
        struct vblk_req *next = blk->free_reqs->next_free;
        free(blk->free_reqs);
        blk->free_reqs = next;
    }
}

/* Writes the status byte and returns the chain (§5.2.6); a completion from before a reset is
 * dropped (its queue is gone). The interrupt follows in vblk_notify(). */
static void req_complete(struct vblk_req *req, uint8_t status)
{
    struct virtio_blk *blk = req->blk;
    if (atomic_load(&blk->serving) && req->epoch == blk->epoch) {
        *req->r.status = status;
        virtq_push(req->vq, req->head, req->wrote_data ? req->in_len : 1);
        blk->notify_queues |= 1u << req->vq->index;
    }
    req_put(blk, req);
}

static void vblk_notify(struct virtio_blk *blk)
{
    uint32_t queues = blk->notify_queues;
    blk->notify_queues = 0;
    for (unsigned i = 0; queues; i++, queues >>= 1)
        if (queues & 1)
            virtio_notify_queue(&blk->vdev, &blk->vdev.queues[i].vq);
}

static void req_block_done(struct block_req *b, int ret);

/* Hands one block request of req to the engine; a failed submission fails req. */
static void req_submit(struct vblk_req *req, struct block_req *b, enum block_op op, uint64_t off,
                       uint64_t len, const struct iovec *iov, unsigned iovcnt)
{
    struct virtio_blk *blk = req->blk;
    *b = (struct block_req){.op = op,
                            .offset = off,
                            .len = len,
                            .iov = iov,
                            .iovcnt = (int)iovcnt,
                            .done = req_block_done,
                            .opaque = req};
    struct wisp_err err = {0};
    if (block_aio_submit(blk->bs, b, &err) < 0) {
        req->failed = true;
        if (blk->vdev.dev->ctx->debug)
            wisp_log("%s: %s", blk->vdev.dev->name, err.msg);
        return;
    }
    req->pending++;
}

/* Submits the next zero write of write-zeroes segment i; false when the segment is done. */
static bool zero_write_next(struct vblk_req *req, unsigned i)
{
    uint64_t next = req->zero[i].next, end = req->zero[i].end;
    if (next >= end)
        return false;
    uint64_t len = end - next < VBLK_ZERO_CHUNK ? end - next : VBLK_ZERO_CHUNK;
    struct iovec *iov = &req->iov[i * VBLK_ZERO_IOV];
    unsigned n = 0;
    for (uint64_t left = len; left; n++) {
        size_t part = left < VBLK_ZERO_BUF ? (size_t)left : VBLK_ZERO_BUF;
        iov[n] = (struct iovec){.iov_base = vblk_zeros, .iov_len = part};
        left -= part;
    }
    req->zero[i].next = next + len;
    req_submit(req, &req->breq[i], BLOCK_OP_WRITE, next, 0, iov, n);
    return true;
}

/* A block request finished (in block_aio_poll, on the I/O thread). */
static void req_block_done(struct block_req *b, int ret)
{
    struct vblk_req *req = b->opaque;
    bool current = req->epoch == req->blk->epoch;
    req->pending--;
    if (ret < 0)
        req->failed = true;
    else if (!req->failed && current)
        zero_write_next(req, (unsigned)(b - req->breq));
    if (req->pending)
        return;
    if (req->flush_after && !req->failed && current) {
        req->flush_after = false;
        req_submit(req, &req->breq[0], BLOCK_OP_FLUSH, 0, 0, NULL, 0);
        if (req->pending)
            return;
    }
    req_complete(req, req->failed ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
}

/* A guessed raw image (as QEMU): a write may not make sector 0 probe as another format, which
 * would change what the image is at the next start (a qcow2 header naming a backing file). */
static bool writes_other_format_header(const struct virtio_blk *blk, const struct vblk_request *r)
{
    static const char *const others[] = {"qcow2"};
    if (!blk->probed_raw || r->sector != 0 || r->data_len == 0)
        return false;
    uint8_t sector0[VBLK_SECTOR_SIZE];
    size_t n = vblk_iov_to_buf(r->data, r->nr_data, 0, sector0, sizeof(sector0));
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        const struct block_driver *drv = block_driver_find(others[i]);
        if (drv && drv->probe && drv->probe(sector0, n) > 0)
            return true;
    }
    return false;
}

/* Discard / write-zeroes: the segments in parallel, one block request each (§5.2.6.2). */
static void req_start_segments(struct vblk_req *req)
{
    const struct vblk_request *r = &req->r;
    for (unsigned i = 0; i < r->nr_segments; i++) {
        uint64_t off = r->segments[i].sector * VBLK_SECTOR_SIZE;
        uint64_t len = (uint64_t)r->segments[i].num_sectors * VBLK_SECTOR_SIZE;
        if (len == 0)
            continue;
        if (r->type == VIRTIO_BLK_T_DISCARD)
            req_submit(req, &req->breq[i], BLOCK_OP_DISCARD, off, len, NULL, 0);
        else if (r->segments[i].flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
            req_submit(req, &req->breq[i], BLOCK_OP_WRITE_ZEROES, off, len, NULL, 0);
        else { /* without UNMAP the range must stay allocated: written with zeroes */
            req->zero[i].next = off;
            req->zero[i].end = off + len;
            zero_write_next(req, i);
        }
    }
}

/* One writer (the I/O thread); readers load the words relaxed (virtio_blk_get_stats). */
static void stat_add(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

static void req_count(struct virtio_blk *blk, const struct vblk_request *r)
{
    if (r->type == VIRTIO_BLK_T_IN) {
        stat_add(&blk->stats.read_count, 1);
        stat_add(&blk->stats.read_bytes, r->data_len);
    } else if (r->type == VIRTIO_BLK_T_OUT) {
        stat_add(&blk->stats.write_count, 1);
        stat_add(&blk->stats.write_bytes, r->data_len);
    } else if (r->type == VIRTIO_BLK_T_FLUSH) {
        stat_add(&blk->stats.flush_count, 1);
    }
}

/* Carries out a request that vblk_parse_request() accepted. */
static void req_start(struct virtio_blk *blk, struct vblk_req *req)
{
    const struct vblk_request *r = &req->r;
    uint64_t off = r->sector * VBLK_SECTOR_SIZE;
    req_count(blk, r);
    switch (r->type) {
    case VIRTIO_BLK_T_IN:
        req->wrote_data = true;
        if (r->data_len)
            req_submit(req, &req->breq[0], BLOCK_OP_READ, off, 0, r->data, r->nr_data);
        break;
    case VIRTIO_BLK_T_OUT:
        req->flush_after = blk->flush_each_write;
        if (r->data_len)
            req_submit(req, &req->breq[0], BLOCK_OP_WRITE, off, 0, r->data, r->nr_data);
        break;
    case VIRTIO_BLK_T_FLUSH:
        req_submit(req, &req->breq[0], BLOCK_OP_FLUSH, 0, 0, NULL, 0);
        break;
    case VIRTIO_BLK_T_GET_ID: { /* §5.2.6: NUL-padded, no terminator at 20 bytes */
        char id[VIRTIO_BLK_ID_BYTES] = {0};
        if (blk->p->serial)
            memcpy(id, blk->p->serial, strnlen(blk->p->serial, sizeof(id)));
        vblk_iov_from_buf(r->data, r->nr_data, id, sizeof(id));
        req->wrote_data = true;
        break;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        req->flush_after = blk->flush_each_write;
        req_start_segments(req);
        break;
    }
    if (req->pending == 0) /* nothing went to the engine (or nothing could) */
        req_complete(req, req->failed ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
}

/* What take_request() found. */
enum take {
    TAKE_STOP = -1, /* stop serving this queue until it is notified again (or reset) */
    TAKE_EMPTY = 0,
    TAKE_ONE = 1,
};

/* Takes one chain off vq and starts it (or completes it at once). */
static enum take take_request(struct virtio_blk *blk, struct virtq *vq)
{
    if (blk->throttled && blk->inflight >= VBLK_THROTTLED_INFLIGHT) {
        blk->stalled = true; /* popping resumes as requests complete */
        return TAKE_STOP;
    }
    struct wisp_err err = {0};
    struct vblk_req *req = req_get(blk);
    if (!req) {
        wisp_err_set(&err, ENOMEM, "out of memory for a request");
        virtio_needs_reset(&blk->vdev, &err);
        return TAKE_STOP;
    }
    struct virtq_chain c;
    int r = virtq_pop(vq, &c, req->iov, VBLK_MAX_IOV, &err);
    if (r <= 0) {
        req_put(blk, req);
        if (r == 0)
            return TAKE_EMPTY;
        /* the queue is broken, or a chain has more buffers than seg_max allows (it stays in
         * the ring: taking it again would fail again) */
        virtio_needs_reset(&blk->vdev, &err);
        return TAKE_STOP;
    }
    req->vq = vq;
    req->head = c.head;
    req->in_len = c.in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)c.in_len;
    int st = vblk_parse_request(&c, &blk->lim, req->iov, &req->r, &err);
    if (st < 0) { /* no status byte: the chain cannot be returned (§2.1.1) */
        wisp_err_wrap(&err, "queue %u: descriptor %u", vq->index, c.head);
        virtio_needs_reset(&blk->vdev, &err);
        req_put(blk, req);
        return TAKE_ONE;
    }
    if (st == VIRTIO_BLK_S_OK && req->r.type == VIRTIO_BLK_T_OUT &&
        writes_other_format_header(blk, &req->r)) {
        st = VIRTIO_BLK_S_IOERR;
        wisp_err_set(&err, EPERM, "write of another format's header to a probed raw image");
    }
    if (st != VIRTIO_BLK_S_OK) {
        if (blk->vdev.dev->ctx->debug)
            wisp_log("%s: queue %u: request failed (status %d): %s", blk->vdev.dev->name, vq->index,
                     st, err.msg);
        req_complete(req, (uint8_t)st);
        return TAKE_ONE;
    }
    req_start(blk, req);
    return TAKE_ONE;
}

/* virtio_serve_start's callback: the queue was notified (I/O thread). Notifications stay off
 * while chains are taken (§2.7.10), then the ring is looked at once more. */
static void vblk_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    struct virtq *vq = &vdev->queues[queue].vq;
    enum take t;
    do {
        virtq_disable_notify(vq);
        while ((t = take_request(blk, vq)) == TAKE_ONE)
            ;
    } while (virtq_enable_notify(vq) && t == TAKE_EMPTY);
    vblk_notify(blk);
}

/* The block completion fd is readable (I/O thread). */
static void vblk_completions(void *opaque, uint32_t events)
{
    struct virtio_blk *blk = opaque;
    struct wisp_err err = {0};
    if (block_aio_poll(blk->bs, 0, &err) < 0 && !blk->poll_error_logged) {
        blk->poll_error_logged = true;
        wisp_log("%s: %s", blk->vdev.dev->name, err.msg);
    }
    vblk_notify(blk);
    if (blk->stalled && blk->inflight < VBLK_THROTTLED_INFLIGHT && atomic_load(&blk->serving)) {
        blk->stalled = false;
        for (unsigned i = 0; i < blk->vdev.nr_queues; i++)
            if (blk->vdev.queues[i].vq.ready)
                vblk_serve(&blk->vdev, i);
    }
}

/* From reset (in the I/O thread): stop taking chains, wait until the block layer holds no
 * request of this device, forget the completions of the rest. */
static void vblk_quiesce(void *opaque)
{
    struct virtio_blk *blk = opaque;
    atomic_store(&blk->serving, false);
    virtio_serve_stop(&blk->vdev);
    blk->epoch++;
    while (blk->inflight) {
        struct wisp_err err = {0};
        if (block_aio_poll(blk->bs, 1, &err) < 0) {
            wisp_log("%s: reset: %s; %u requests left in flight", blk->vdev.dev->name, err.msg,
                     blk->inflight);
            break;
        }
    }
    blk->stalled = false;
    blk->notify_queues = 0;
    vblk_free_requests(blk);
}

/* ---- the device ------------------------------------------------------------------------ */

/* §5.2.4, read by the driver through the transport (vCPU thread, vdev->lock held). */
static void blk_config_read(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    if (offset < sizeof(blk->config)) {
        size_t n = sizeof(blk->config) - offset < size ? sizeof(blk->config) - offset : size;
        memcpy(data, (const uint8_t *)&blk->config + offset, n);
    }
}

static int blk_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    /* §5.2.6.2: with FLUSH offered but not negotiated, a completed write must be stable */
    blk->flush_each_write = blk->volatile_cache && !virtio_has_feature(vdev, VIRTIO_BLK_F_FLUSH);
    atomic_store(&blk->serving, true);
    int r = virtio_serve_start(vdev, iothread_loop(blk->io), vblk_serve, err);
    if (r < 0)
        atomic_store(&blk->serving, false);
    return r;
}

static void blk_reset(struct virtio_dev *vdev)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    (void)evloop_call_sync(iothread_loop(blk->io), vblk_quiesce, blk);
}

struct drain_call {
    struct virtio_blk *blk;
    struct wisp_err *err;
    int result;
};

/* From quiesce (in the I/O thread): no more chains are taken; the requests in flight complete
 * as usual (status written, chain returned, interrupt raised), so that nothing of the guest's
 * is in flight when a snapshot is taken and every write it saw completed is in the image. */
static void vblk_drain(void *opaque)
{
    struct drain_call *c = opaque;
    struct virtio_blk *blk = c->blk;
    virtio_serve_stop(&blk->vdev);
    blk->stalled = false;
    while (blk->inflight) {
        struct wisp_err err = {0};
        if (block_aio_poll(blk->bs, 1, &err) < 0) {
            wisp_log("%s: quiesce: %s; %u requests left in flight", blk->vdev.dev->name, err.msg,
                     blk->inflight);
            break;
        }
    }
    vblk_notify(blk);
    if (blk->inflight)
        c->result = wisp_err_set(c->err, EIO, "%u requests are still in flight", blk->inflight);
    /* the image as another process opens it: qcow2's cached metadata written, data stable */
    else if (!blk->p->read_only)
        c->result = block_flush(blk->bs, c->err);
}

static int blk_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    struct drain_call c = {.blk = blk, .err = err};
    if (evloop_call_sync(iothread_loop(blk->io), vblk_drain, &c) < 0)
        return wisp_err_set(err, ECANCELED, "the I/O thread has stopped");
    return c.result;
}

static int blk_resume(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    return virtio_serve_start(vdev, iothread_loop(blk->io), vblk_serve, err);
}

/* The drive's size: the guest's driver read it, a restored VM must see the same. */
static int blk_save(struct virtio_dev *vdev, struct state_writer *w, struct wisp_err *err)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    state_put_u64(w, blk->lim.capacity);
    return 0;
}

static int blk_load(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err)
{
    struct virtio_blk *blk = (struct virtio_blk *)vdev;
    uint64_t capacity = state_get_u64(r);
    if (!r->bad && capacity != blk->lim.capacity)
        return wisp_err_set(
            err, EINVAL, "the image %s has %llu sectors, the snapshot's drive had %llu",
            blk->p->path, (unsigned long long)blk->lim.capacity, (unsigned long long)capacity);
    return 0;
}

static const struct virtio_dev_ops blk_ops = {
    .config_read = blk_config_read,
    .activate = blk_activate,
    .reset = blk_reset,
    .quiesce = blk_quiesce,
    .resume = blk_resume,
    .save = blk_save,
    .load = blk_load,
};

/* The configuration space and the limits requests are checked against, for an image of
 * `size` bytes. */
static void blk_config_make(const struct virtio_blk *blk, uint64_t size,
                            const struct block_info *info, unsigned queues, struct vblk_limits *lim,
                            struct virtio_blk_config *c)
{
    uint32_t cluster = info->cluster_size > 4096 ? info->cluster_size : 4096;
    *lim = (struct vblk_limits){
        .capacity = size / VBLK_SECTOR_SIZE,
        .read_only = blk->p->read_only,
        .max_discard_sectors = VBLK_MAX_DWZ_SECTORS,
        .max_discard_seg = VBLK_MAX_DWZ_SEG,
        .max_write_zeroes_sectors = VBLK_MAX_DWZ_SECTORS,
        .max_write_zeroes_seg = VBLK_MAX_DWZ_SEG,
    };
    memset(c, 0, sizeof(*c));
    c->capacity = htole64(lim->capacity);
    c->size_max = htole32(VBLK_SIZE_MAX);
    c->seg_max = htole32(VBLK_SEG_MAX);
    c->blk_size = htole32(VBLK_SECTOR_SIZE);
    c->physical_block_exp = 3;   /* 4 KiB physical blocks: host pages, O_DIRECT alignment */
    c->min_io_size = htole16(8); /* in logical blocks */
    c->opt_io_size = htole32(info->cluster_size / VBLK_SECTOR_SIZE); /* qcow2: a cluster */
    c->wce = blk->volatile_cache;
    c->num_queues = htole16((uint16_t)queues);
    if (!blk->p->read_only) {
        c->max_discard_sectors = htole32(VBLK_MAX_DWZ_SECTORS);
        c->max_discard_seg = htole32(VBLK_MAX_DWZ_SEG);
        c->discard_sector_alignment = htole32(cluster / VBLK_SECTOR_SIZE);
        c->max_write_zeroes_sectors = htole32(VBLK_MAX_DWZ_SECTORS);
        c->max_write_zeroes_seg = htole32(VBLK_MAX_DWZ_SEG);
        c->write_zeroes_may_unmap = 1; /* raw punches holes, qcow2 drops clusters */
    }
}

static void blk_config_build(struct virtio_blk *blk, const struct block_info *info, unsigned queues)
{
    blk_config_make(blk, blk->bs->size, info, queues, &blk->lim, &blk->config);
}

static uint64_t blk_features(const struct virtio_blk_params *p, unsigned queues)
{
    uint64_t f = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
                 (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |
                 (1ull << VIRTIO_BLK_F_TOPOLOGY);
    if (p->read_only)
        f |= 1ull << VIRTIO_BLK_F_RO;
    else
        f |= (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
    if (queues > 1)
        f |= 1ull << VIRTIO_BLK_F_MQ;
    return f;
}

/* io_uring where the kernel has it (and allows it: io_uring_disabled, seccomp), else threads. */
static bool io_uring_usable(void)
{
    struct io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) < 0)
        return false;
    io_uring_queue_exit(&ring);
    return true;
}

static bool throttle_set(const struct block_throttle_limits *l)
{
    static const struct block_throttle_limits none;
    return memcmp(l, &none, sizeof(none)) != 0;
}

/* Opens `path` as the drive's image with its parameters and the limits in force; *probed_raw
 * tells whether the format was guessed as raw. */
static int blk_open_path(struct virtio_blk *blk, const struct device *dev, const char *path,
                         const struct block_throttle_limits *limits, struct block_dev **out,
                         bool *probed_raw, struct wisp_err *err)
{
    const struct virtio_blk_params *p = blk->p;
    struct block_open_opts o = {
        .format = p->format,
        .read_only = p->read_only,
        .cache = p->cache,
        .aio = blk->engine,
        .throttle = throttle_set(limits) ? limits : NULL,
    };
    if (block_open(out, path, &o, err) < 0)
        return wisp_err_wrap(err, "%s", dev->name);
    *probed_raw = false;
    if (!p->format) { /* as QEMU: a raw image may hold another format's header */
        *probed_raw = !strcmp((*out)->drv->name, "raw");
        wisp_log("%s: image format was not specified for '%s' and probing guessed %s%s", dev->name,
                 path, (*out)->drv->name,
                 *probed_raw ? "; writes that would make sector 0 another format's header "
                               "are refused (give format=raw to lift this)"
                             : "");
    }
    return 0;
}

static int blk_open_image(struct virtio_blk *blk, const struct device *dev, struct wisp_err *err)
{
    const struct virtio_blk_params *p = blk->p;
    blk->limits = p->limits;
    blk->throttled = throttle_set(&p->limits);
    blk->engine = p->aio_given        ? p->aio
                  : io_uring_usable() ? BLOCK_AIO_IO_URING
                                      : BLOCK_AIO_THREADS;
    int r = blk_open_path(blk, dev, p->path, &p->limits, &blk->bs, &blk->probed_raw, err);
    if (r < 0)
        return r;
    blk->volatile_cache = p->cache == BLOCK_CACHE_WRITEBACK || p->cache == BLOCK_CACHE_NONE;
    return 0;
}

struct attach_call {
    struct virtio_blk *blk;
    struct wisp_err *err;
    int result;
};

/* In the I/O thread: the block completion fd becomes a source of its loop. */
static void blk_attach_in_loop(void *opaque)
{
    struct attach_call *a = opaque;
    struct virtio_blk *blk = a->blk;
    int fd = block_aio_event_fd(blk->bs, a->err);
    a->result = fd < 0 ? fd
                       : evloop_add_fd(iothread_loop(blk->io), fd, EPOLLIN, vblk_completions, blk,
                                       &blk->done_src, a->err);
}

static void blk_detach_in_loop(void *opaque)
{
    struct virtio_blk *blk = opaque;
    evloop_source_remove(blk->done_src);
    blk->done_src = NULL;
}

static int blk_start_iothread(struct virtio_blk *blk, const struct device *dev,
                              struct wisp_err *err)
{
    char name[48]; /* iothread_start shows the first 15 characters */
    const char *suffix = blk->p->id ? blk->p->id : dev->name;
    if (!blk->p->id && !strncmp(suffix, "blk", 3) && suffix[3])
        suffix += 3; /* "blk0" -> "blk-0" */
    snprintf(name, sizeof(name), "blk-%s", suffix);
    int r = iothread_start(&blk->io, name, err);
    if (r < 0)
        return wisp_err_wrap(err, "%s", dev->name);
    struct attach_call a = {.blk = blk, .err = err, .result = -ECANCELED};
    r = evloop_call_sync(iothread_loop(blk->io), blk_attach_in_loop, &a);
    if (r == 0)
        r = a.result;
    return r < 0 ? wisp_err_wrap(err, "%s", dev->name) : 0;
}

static int blk_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_blk *blk = calloc(1, sizeof(*blk));
    if (!blk)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = blk;
    blk->p = dev->params;
    atomic_init(&blk->serving, false);
    unsigned queues = blk->p->queues ? blk->p->queues : 1;
    struct block_info info;
    int r = blk_open_image(blk, dev, err);
    if (r == 0 && (r = block_get_info(blk->bs, &info, err)) < 0)
        wisp_err_wrap(err, "%s", dev->name);
    if (r == 0)
        r = blk_start_iothread(blk, dev, err);
    if (r < 0)
        return r;
    blk_config_build(blk, &info, queues);
    uint16_t sizes[VIRTIO_MAX_QUEUES];
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        sizes[i] = VBLK_QUEUE_SIZE;
    return virtio_dev_init(&blk->vdev, dev, &blk_ops, VIRTIO_ID_BLOCK, blk_features(blk->p, queues),
                           queues, sizes, err);
}

/* ---- changes while the VM runs (the API's PATCH /drives/{id}) -------------------------- */

struct vblk_update {
    struct virtio_blk *blk;
    char *path; /* a new image, or NULL */
    bool has_limits;
    struct block_throttle_limits limits;
    void (*done)(void *opaque, int result, const struct wisp_err *err);
    void *opaque;
    int result;
    struct wisp_err err;
    bool new_config;                 /* config (the new image's) is for the guest */
    struct virtio_blk_config config; /* little-endian */
    struct evloop_call work, reply;
};

/* I/O thread: nothing new is taken while this runs; the requests in flight finish on the old
 * image (their completions are delivered as usual). */
static void vblk_wait_inflight(struct virtio_blk *blk)
{
    while (blk->inflight) {
        struct wisp_err err = {0};
        if (block_aio_poll(blk->bs, 1, &err) < 0) {
            wisp_log("%s: media change: %s; %u requests left in flight", blk->vdev.dev->name,
                     err.msg, blk->inflight);
            break;
        }
    }
    vblk_notify(blk);
}

/* I/O thread: the new image replaces the old one. Opened first, so that a failure leaves the
 * drive as it was. */
static int vblk_swap_image(struct vblk_update *u, const struct block_throttle_limits *limits)
{
    struct virtio_blk *blk = u->blk;
    const struct device *dev = blk->vdev.dev;
    struct block_dev *nbs = NULL;
    struct block_info info;
    bool probed_raw;
    int r = blk_open_path(blk, dev, u->path, limits, &nbs, &probed_raw, &u->err);
    if (r == 0 && (r = block_get_info(nbs, &info, &u->err)) < 0)
        wisp_err_wrap(&u->err, "%s", dev->name);
    int fd = r < 0 ? r : block_aio_event_fd(nbs, &u->err);
    if (fd < 0) {
        block_close(nbs);
        return fd;
    }
    struct evloop_source *src;
    r = evloop_add_fd(iothread_loop(blk->io), fd, EPOLLIN, vblk_completions, blk, &src, &u->err);
    if (r < 0) {
        block_close(nbs);
        return r;
    }
    vblk_wait_inflight(blk);
    evloop_source_remove(blk->done_src);
    block_close(blk->bs);
    blk->bs = nbs;
    blk->done_src = src;
    blk->probed_raw = probed_raw;
    blk_config_make(blk, nbs->size, &info, blk->vdev.nr_queues, &blk->lim, &u->config);
    u->new_config = true;
    return 0;
}

static void vblk_update_reply(void *opaque);

static void vblk_update_work(void *opaque)
{
    struct vblk_update *u = opaque;
    struct virtio_blk *blk = u->blk;
    const struct block_throttle_limits *limits = u->has_limits ? &u->limits : &blk->limits;
    int r = u->path ? vblk_swap_image(u, limits) : block_set_throttle(blk->bs, limits, &u->err);
    if (r == 0 && u->has_limits) {
        blk->limits = u->limits;
        blk->throttled = throttle_set(&u->limits);
        if (blk->stalled && !blk->throttled) { /* the queues may be taken from again */
            blk->stalled = false;
            for (unsigned i = 0; atomic_load(&blk->serving) && i < blk->vdev.nr_queues; i++)
                if (blk->vdev.queues[i].vq.ready)
                    vblk_serve(&blk->vdev, i);
        }
    }
    u->result = r;
    evloop_call_async(blk->vdev.dev->ctx->main_loop, &u->reply);
}

/* Main loop: the guest learns of the new image (§2.5.1: a configuration change). */
static void vblk_update_reply(void *opaque)
{
    struct vblk_update *u = opaque;
    struct virtio_blk *blk = u->blk;
    if (u->new_config) {
        pthread_mutex_lock(&blk->vdev.lock);
        blk->config = u->config;
        virtio_notify_config(&blk->vdev);
        pthread_mutex_unlock(&blk->vdev.lock);
    }
    blk->update = NULL;
    u->done(u->opaque, u->result, &u->err);
    free(u->path);
    free(u);
}

int virtio_blk_update(struct device *dev, const struct virtio_blk_update *change,
                      void (*done)(void *opaque, int result, const struct wisp_err *err),
                      void *opaque, struct wisp_err *err)
{
    struct virtio_blk *blk = dev->state;
    if (blk->update)
        return wisp_err_set(err, EBUSY, "%s: an earlier change of the drive is under way",
                            dev->name);
    struct vblk_update *u = calloc(1, sizeof(*u));
    if (!u || (change->path && !(u->path = strdup(change->path)))) {
        free(u);
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    }
    u->blk = blk;
    u->has_limits = change->limits != NULL;
    if (change->limits)
        u->limits = *change->limits;
    u->done = done;
    u->opaque = opaque;
    u->work = (struct evloop_call){.fn = vblk_update_work, .opaque = u};
    u->reply = (struct evloop_call){.fn = vblk_update_reply, .opaque = u};
    blk->update = u;
    evloop_call_async(iothread_loop(blk->io), &u->work);
    return 0;
}

void virtio_blk_get_stats(const struct device *dev, struct virtio_blk_stats *out)
{
    const struct virtio_blk *blk = dev->state;
    *out = (struct virtio_blk_stats){
        .read_count = __atomic_load_n(&blk->stats.read_count, __ATOMIC_RELAXED),
        .read_bytes = __atomic_load_n(&blk->stats.read_bytes, __ATOMIC_RELAXED),
        .write_count = __atomic_load_n(&blk->stats.write_count, __ATOMIC_RELAXED),
        .write_bytes = __atomic_load_n(&blk->stats.write_bytes, __ATOMIC_RELAXED),
        .flush_count = __atomic_load_n(&blk->stats.flush_count, __ATOMIC_RELAXED),
    };
}

static void blk_teardown(struct device *dev)
{
    struct virtio_blk *blk = dev->state;
    if (!blk)
        return;
    virtio_dev_destroy(&blk->vdev); /* a reset: nothing of the guest's is in flight after it */
    if (blk->io) {
        (void)evloop_call_sync(iothread_loop(blk->io), blk_detach_in_loop, blk);
        iothread_stop(blk->io);
    }
    if (blk->update) { /* a change the VM's end overtook: its answer is not given */
        evloop_call_cancel(dev->ctx->main_loop, &blk->update->reply);
        free(blk->update->path);
        free(blk->update);
        blk->update = NULL;
    }
    block_close(blk->bs); /* waits for anything a failed drain left */
    vblk_free_requests(blk);
    free(blk);
    dev->state = NULL;
}

const struct device_ops virtio_blk_device_ops = {
    .type = "virtio-blk",
    .realize = blk_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = blk_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
};
