/* virtio-balloon (balloon.h): the four queues, the config space, statistics on a timer. */
#include "virtio/balloon.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/statebuf.h"
#include "kvm/guest_mem.h"
#include "virtio/virtio.h"

#define VIRTIO_ID_BALLOON  5
#define F_STATS_VQ         (1ull << 1)
#define F_DEFLATE_ON_OOM   (1ull << 2)
#define F_REPORTING        (1ull << 5)
#define BALLOON_QUEUE_SIZE 256
#define BALLOON_MAX_IOV    64
#define BALLOON_PFN_SHIFT  12
#define BALLOON_STAT_ENTRY 10 /* le16 tag, le64 value */
#define NO_QUEUE           (-1)
#define CFG_NUM_PAGES      0
#define CFG_ACTUAL         4

struct virtio_balloon {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_balloon_params *p;
    uint32_t num_pages, actual; /* config space, under vdev.lock */
    uint32_t stats_interval_s;
    /* which queue index has which role, from the negotiated features (§5.5.2: a queue whose
     * feature is not negotiated takes no index) */
    int stats_q, report_q;
    bool stats_held; /* the driver's statistics buffer, kept until the next request */
    uint16_t stats_head;
    struct evloop_source *timer;
    pthread_mutex_t lock; /* stats */
    struct virtio_balloon_stats stats;
    bool logged_bad;
};

static void balloon_config_read(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size)
{
    struct virtio_balloon *b = (struct virtio_balloon *)vdev;
    uint8_t cfg[16] = {0};
    memcpy(cfg + CFG_NUM_PAGES, &b->num_pages, 4); /* little-endian host */
    memcpy(cfg + CFG_ACTUAL, &b->actual, 4);
    memset(data, 0, size);
    if (offset < sizeof(cfg) && size <= sizeof(cfg) - offset)
        memcpy(data, cfg + offset, size);
}

static void balloon_config_write(struct virtio_dev *vdev, uint64_t offset, const void *data,
                                 unsigned size)
{
    struct virtio_balloon *b = (struct virtio_balloon *)vdev;
    if (offset == CFG_ACTUAL && size == 4) { /* the only field the driver writes */
        memcpy(&b->actual, data, 4);
        pthread_mutex_lock(&b->lock);
        b->stats.actual_pages = b->actual;
        pthread_mutex_unlock(&b->lock);
    }
}

static void count_bad(struct virtio_balloon *b, const char *what, uint64_t gpa, uint64_t len)
{
    pthread_mutex_lock(&b->lock);
    b->stats.bad_pfns++;
    pthread_mutex_unlock(&b->lock);
    if (!b->logged_bad) { /* once per device: a guest must not flood the log */
        b->logged_bad = true;
        wisp_log("%s: %s 0x%llx (+0x%llx) is not guest RAM or not page-aligned: ignored",
                 b->vdev.dev->name, what, (unsigned long long)gpa, (unsigned long long)len);
    }
}

/* Takes every chain the driver made available on q, hands it to serve, and gives it back. */
static void serve_queue(struct virtio_balloon *b, struct virtq *q,
                        void (*serve)(struct virtio_balloon *b, const struct virtq_chain *c))
{
    struct iovec iov[BALLOON_MAX_IOV];
    struct virtq_chain c;
    struct wisp_err err = {0};
    bool pushed = false;
    for (;;) {
        int r = virtq_pop(q, &c, iov, BALLOON_MAX_IOV, &err);
        if (r < 0) {
            virtio_needs_reset(&b->vdev, &err);
            break;
        }
        if (r == 0)
            break;
        serve(b, &c);
        virtq_push(q, c.head, 0);
        pushed = true;
    }
    if (pushed)
        virtio_notify_queue(&b->vdev, q);
}

/* An inflate (discard) or deflate chain: an array of le32 page frame numbers. */
static void serve_pfns(struct virtio_balloon *b, const struct virtq_chain *c, bool inflate)
{
    const struct guest_mem *mem = b->vdev.dev->ctx->mem;
    uint64_t pages = 0;
    for (unsigned i = 0; i < c->nr_out; i++) {
        const uint8_t *p = c->iov[i].iov_base;
        for (size_t off = 0; off + 4 <= c->iov[i].iov_len; off += 4, pages++) {
            uint32_t pfn;
            memcpy(&pfn, p + off, 4);
            uint64_t gpa = (uint64_t)pfn << BALLOON_PFN_SHIFT; /* < 2^44: no overflow */
            if (!inflate)
                continue; /* a deflated page reads as zero when next touched */
            int e = mem->page_size > 4096 ? 0 : guest_mem_discard(mem, gpa, 4096);
            if (e < 0)
                count_bad(b, "inflated page", gpa, 4096);
        }
    }
    pthread_mutex_lock(&b->lock);
    if (inflate)
        b->stats.inflated += pages;
    else
        b->stats.deflated += pages;
    pthread_mutex_unlock(&b->lock);
}

static void serve_inflate(struct virtio_balloon *b, const struct virtq_chain *c)
{
    serve_pfns(b, c, true);
}

static void serve_deflate(struct virtio_balloon *b, const struct virtq_chain *c)
{
    serve_pfns(b, c, false);
}

/* Free page reporting (§5.5.6.7): each buffer is a free range of the guest's (writable
 * descriptors, nothing written): discarded, returned. */
static void serve_report(struct virtio_balloon *b, const struct virtq_chain *c)
{
    const struct guest_mem *mem = b->vdev.dev->ctx->mem;
    uint64_t bytes = 0;
    for (unsigned i = 0; i < c->nr_out + c->nr_in; i++) {
        uint64_t gpa;
        if (!guest_mem_hva_to_gpa(mem, c->iov[i].iov_base, c->iov[i].iov_len, &gpa) ||
            guest_mem_discard(mem, gpa, c->iov[i].iov_len) < 0)
            count_bad(b, "reported range", (uint64_t)(uintptr_t)c->iov[i].iov_base,
                      c->iov[i].iov_len);
        else
            bytes += c->iov[i].iov_len;
    }
    pthread_mutex_lock(&b->lock);
    b->stats.reported_bytes += bytes;
    pthread_mutex_unlock(&b->lock);
}

/* The statistics queue: the driver's buffer of tagged values is read and kept; the next request
 * (the timer) gives it back, and the driver sends it again with fresh values. */
static void serve_stats(struct virtio_balloon *b, struct virtq *q)
{
    struct iovec iov[BALLOON_MAX_IOV];
    struct virtq_chain c;
    struct wisp_err err = {0};
    for (;;) {
        int r = virtq_pop(q, &c, iov, BALLOON_MAX_IOV, &err);
        if (r < 0) {
            virtio_needs_reset(&b->vdev, &err);
            return;
        }
        if (r == 0)
            return;
        if (b->stats_held) { /* a second buffer: the older one goes back */
            virtq_push(q, b->stats_head, 0);
            virtio_notify_queue(&b->vdev, q);
        }
        uint8_t entry[BALLOON_STAT_ENTRY];
        size_t have = 0;
        pthread_mutex_lock(&b->lock);
        for (unsigned i = 0; i < c.nr_out; i++)
            for (size_t off = 0; off < c.iov[i].iov_len; off++) {
                entry[have++] = ((const uint8_t *)c.iov[i].iov_base)[off];
                if (have < BALLOON_STAT_ENTRY)
                    continue;
                have = 0;
                uint16_t tag;
                uint64_t val;
                memcpy(&tag, entry, 2);
                memcpy(&val, entry + 2, 8);
                if (tag < BALLOON_STAT_NR) { /* unknown tags are skipped (§5.5.6.3) */
                    b->stats.values[tag] = val;
                    b->stats.valid |= 1u << tag;
                }
            }
        b->stats.stats_updates++;
        pthread_mutex_unlock(&b->lock);
        b->stats_held = true;
        b->stats_head = c.head;
    }
}

/* Gives the held statistics buffer back: the driver answers with new values. */
static void stats_request(struct virtio_balloon *b)
{
    if (!b->stats_held || b->stats_q == NO_QUEUE)
        return;
    struct virtq *q = &b->vdev.queues[b->stats_q].vq;
    b->stats_held = false;
    virtq_push(q, b->stats_head, 0);
    virtio_notify_queue(&b->vdev, q);
}

static void balloon_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_balloon *b = (struct virtio_balloon *)vdev;
    struct virtq *q = &vdev->queues[queue].vq;
    if (queue == 0 || queue == 1)
        serve_queue(b, q, queue == 0 ? serve_inflate : serve_deflate);
    else if ((int)queue == b->stats_q)
        serve_stats(b, q);
    else if ((int)queue == b->report_q)
        serve_queue(b, q, serve_report);
}

static void stats_tick(void *opaque)
{
    struct virtio_balloon *b = opaque;
    if (b->vdev.activated && !b->vdev.quiesced)
        stats_request(b);
}

static void arm_timer(struct virtio_balloon *b)
{
    uint64_t ns = (uint64_t)b->stats_interval_s * 1000000000ull;
    if (b->timer)
        evloop_timer_arm(b->timer, ns, ns);
}

static void timer_add(void *opaque)
{
    struct virtio_balloon *b = opaque;
    if (!b->timer)
        (void)evloop_add_timer(b->vdev.dev->ctx->main_loop, stats_tick, b, &b->timer, NULL);
    arm_timer(b);
}

static void timer_remove(void *opaque)
{
    struct virtio_balloon *b = opaque;
    evloop_source_remove(b->timer);
    b->timer = NULL;
}

static int balloon_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_balloon *b = (struct virtio_balloon *)vdev;
    int next = 2;
    b->stats_q = vdev->guest_features & F_STATS_VQ ? next++ : NO_QUEUE;
    b->report_q = vdev->guest_features & F_REPORTING ? next++ : NO_QUEUE;
    b->stats_held = false;
    struct evloop *loop = vdev->dev->ctx->main_loop;
    if (b->stats_q != NO_QUEUE && (evloop_call_sync(loop, timer_add, b) < 0 || !b->timer))
        return wisp_err_set(err, ENOMEM, "%s: cannot create the statistics timer", vdev->dev->name);
    return virtio_serve_start(vdev, loop, balloon_serve, err);
}

static void balloon_reset(struct virtio_dev *vdev)
{
    struct virtio_balloon *b = (struct virtio_balloon *)vdev;
    virtio_serve_stop(vdev);
    (void)evloop_call_sync(vdev->dev->ctx->main_loop, timer_remove, b);
    b->stats_held = false;
    b->actual = 0;
}

/* Served on the main loop: nothing is in flight between callbacks but the statistics buffer,
 * which is given back (a request for new values) so that no chain is held over a snapshot. */
static int balloon_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    virtio_serve_stop(vdev);
    stats_request((struct virtio_balloon *)vdev);
    return 0;
}

static int balloon_resume(struct virtio_dev *vdev, struct wisp_err *err)
{
    return virtio_serve_start(vdev, vdev->dev->ctx->main_loop, balloon_serve, err);
}

static int balloon_save(struct virtio_dev *vdev, struct state_writer *w, struct wisp_err *err)
{
    struct virtio_balloon *b = (struct virtio_balloon *)vdev;
    state_put_u32(w, b->num_pages);
    state_put_u32(w, b->actual);
    state_put_u32(w, b->stats_interval_s);
    return 0;
}

static int balloon_load(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err)
{
    struct virtio_balloon *b = (struct virtio_balloon *)vdev;
    b->num_pages = state_get_u32(r);
    b->actual = state_get_u32(r);
    uint32_t interval = state_get_u32(r);
    if (b->p->stats_interval_s) /* a queue offered: keep the period it had */
        b->stats_interval_s = interval;
    b->stats.target_pages = b->num_pages;
    b->stats.actual_pages = b->actual;
    return r->bad ? wisp_err_set(err, EINVAL, "%s: truncated balloon state", vdev->dev->name) : 0;
}

static const struct virtio_dev_ops balloon_ops = {
    .config_read = balloon_config_read,
    .config_write = balloon_config_write,
    .activate = balloon_activate,
    .reset = balloon_reset,
    .quiesce = balloon_quiesce,
    .resume = balloon_resume,
    .save = balloon_save,
    .load = balloon_load,
};

void virtio_balloon_set_target(struct device *dev, uint32_t pages)
{
    struct virtio_balloon *b = dev->state;
    pthread_mutex_lock(&b->vdev.lock);
    b->num_pages = pages;
    virtio_notify_config(&b->vdev);
    pthread_mutex_unlock(&b->vdev.lock);
    pthread_mutex_lock(&b->lock);
    b->stats.target_pages = pages;
    pthread_mutex_unlock(&b->lock);
}

int virtio_balloon_set_stats_interval(struct device *dev, uint32_t seconds)
{
    struct virtio_balloon *b = dev->state;
    if (!b->p->stats_interval_s)
        return -EINVAL;
    b->stats_interval_s = seconds;
    arm_timer(b);
    return 0;
}

void virtio_balloon_get_stats(struct device *dev, struct virtio_balloon_stats *out)
{
    struct virtio_balloon *b = dev->state;
    pthread_mutex_lock(&b->lock);
    *out = b->stats;
    pthread_mutex_unlock(&b->lock);
}

static int balloon_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_balloon *b = calloc(1, sizeof(*b));
    if (!b)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = b;
    b->p = dev->params;
    pthread_mutex_init(&b->lock, NULL);
    b->num_pages = b->p->target_pages;
    b->stats.target_pages = b->num_pages;
    b->stats_interval_s = b->p->stats_interval_s;
    b->stats_q = b->report_q = NO_QUEUE;
    uint64_t features = F_REPORTING | (b->p->deflate_on_oom ? F_DEFLATE_ON_OOM : 0) |
                        (b->p->stats_interval_s ? F_STATS_VQ : 0);
    static const uint16_t sizes[] = {BALLOON_QUEUE_SIZE, BALLOON_QUEUE_SIZE, BALLOON_QUEUE_SIZE,
                                     BALLOON_QUEUE_SIZE};
    return virtio_dev_init(&b->vdev, dev, &balloon_ops, VIRTIO_ID_BALLOON, features, 4, sizes, err);
}

static void balloon_teardown(struct device *dev)
{
    struct virtio_balloon *b = dev->state;
    if (!b)
        return;
    virtio_dev_destroy(&b->vdev);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

const struct device_ops virtio_balloon_device_ops = {
    .type = "virtio-balloon",
    .realize = balloon_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = balloon_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
};
