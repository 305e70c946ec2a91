/* virtio-rng (virtio 1.2 §5.4): one request queue; each writable buffer is filled from
 * getrandom(). Served on the main loop (it is cheap); with a rate limit, a request that finds
 * the bucket empty waits on a timer, and a partial fill is allowed (§5.4.6: the device may
 * write fewer bytes than the buffer holds). */
#include <errno.h>
#include <linux/virtio_ids.h>
#include <stdlib.h>
#include <sys/random.h>

#include "common/evloop.h"
#include "common/ratelimit.h"
#include "virtio/rng.h"
#include "virtio/virtio.h"

#define RNG_QUEUE_SIZE 256
#define RNG_MAX_IOV    64

struct virtio_rng {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_rng_params *p;
    struct token_bucket bucket;
    struct evloop_source *timer; /* refill wait */
    uint64_t bytes_served;
};

/* Fills the chain's writable buffers with up to `budget` random bytes; returns the count. */
static uint32_t fill(const struct virtq_chain *c, uint64_t budget)
{
    uint64_t done = 0;
    for (unsigned i = c->nr_out; i < c->nr_out + c->nr_in && done < budget; i++) {
        size_t want = c->iov[i].iov_len;
        if (want > budget - done)
            want = budget - done;
        ssize_t n = getrandom(c->iov[i].iov_base, want, GRND_NONBLOCK);
        if (n <= 0)
            break;
        done += (uint64_t)n;
        if ((size_t)n < want)
            break;
    }
    return (uint32_t)done;
}

static void rng_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_rng *rng = (struct virtio_rng *)vdev;
    struct virtq *q = &vdev->queues[0].vq;
    struct iovec iov[RNG_MAX_IOV];
    struct virtq_chain c;
    struct wisp_err err = {0};
    bool pushed = false;
    for (;;) {
        int r = virtq_pop(q, &c, iov, RNG_MAX_IOV, &err);
        if (r < 0) {
            virtio_needs_reset(vdev, &err);
            break;
        }
        if (r == 0)
            break;
        uint64_t budget = token_bucket_take(&rng->bucket, c.in_len);
        if (budget == 0 && c.in_len) { /* empty bucket: wait for the refill */
            virtq_unpop(q);
            evloop_timer_arm(rng->timer, token_bucket_wait_ns(&rng->bucket, 1), 0);
            break;
        }
        uint32_t n = fill(&c, budget);
        rng->bytes_served += n;
        virtq_push(q, c.head, n);
        pushed = true;
    }
    if (pushed)
        virtio_notify_queue(vdev, q);
}

static void rng_refilled(void *opaque)
{
    struct virtio_rng *rng = opaque;
    if (rng->vdev.activated && !rng->vdev.quiesced)
        rng_serve(&rng->vdev, 0);
}

static void rng_timer_add(void *opaque)
{
    struct virtio_rng *rng = opaque;
    if (!rng->timer)
        (void)evloop_add_timer(rng->vdev.dev->ctx->main_loop, rng_refilled, rng, &rng->timer, NULL);
}

static int rng_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_rng *rng = (struct virtio_rng *)vdev;
    token_bucket_init(&rng->bucket, rng->p->bytes_per_sec, rng->p->burst);
    struct evloop *loop = vdev->dev->ctx->main_loop;
    if (evloop_call_sync(loop, rng_timer_add, rng) < 0 || !rng->timer)
        return wisp_err_set(err, ENOMEM, "%s: cannot create the rate-limit timer", vdev->dev->name);
    return virtio_serve_start(vdev, loop, rng_serve, err);
}

static void rng_timer_remove(void *opaque)
{
    struct virtio_rng *rng = opaque;
    evloop_source_remove(rng->timer);
    rng->timer = NULL;
}

static void rng_reset(struct virtio_dev *vdev)
{
    struct virtio_rng *rng = (struct virtio_rng *)vdev;
    virtio_serve_stop(vdev);
    (void)evloop_call_sync(vdev->dev->ctx->main_loop, rng_timer_remove, rng);
}

/* Served on the main loop, one request at a time: nothing is ever in flight between callbacks,
 * so quiescing only stops the notifications (and the refill timer, through `quiesced`). */
static int rng_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    virtio_serve_stop(vdev);
    return 0;
}

static int rng_resume(struct virtio_dev *vdev, struct wisp_err *err)
{
    return virtio_serve_start(vdev, vdev->dev->ctx->main_loop, rng_serve, err);
}

static const struct virtio_dev_ops rng_ops = {
    .activate = rng_activate,
    .reset = rng_reset,
    .quiesce = rng_quiesce,
    .resume = rng_resume,
};

static int rng_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_rng *rng = calloc(1, sizeof(*rng));
    if (!rng)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = rng;
    rng->p = dev->params;
    static const uint16_t sizes[] = {RNG_QUEUE_SIZE};
    return virtio_dev_init(&rng->vdev, dev, &rng_ops, VIRTIO_ID_RNG, 0, 1, sizes, err);
}

static void rng_teardown(struct device *dev)
{
    struct virtio_rng *rng = dev->state;
    if (!rng)
        return;
    virtio_dev_destroy(&rng->vdev);
    free(rng);
}

const struct device_ops virtio_rng_device_ops = {
    .type = "virtio-rng",
    .realize = rng_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = rng_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
};
