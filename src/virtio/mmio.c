/* virtio-mmio, version 2 (virtio 1.2 §4.2.2): the register window, feature negotiation, the
 * status state machine with reset, queue setup, interrupts and notifications. */
#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/device.h"
#include "devices/resources.h"
#include "kvm/kvm.h"
#include "virtio/virtio.h"

#define MMIO_MAGIC   0x74726976 /* "virt" */
#define MMIO_VERSION 2

/* Features wisp's transport offers for every device (the rest come from the device type). */
#define TRANSPORT_FEATURES                                                                         \
    ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |                        \
     (1ull << VIRTIO_RING_F_EVENT_IDX))

static void raise_irq(struct virtio_dev *vdev, unsigned bit)
{
    atomic_fetch_or(&vdev->isr, bit);
    uint64_t one = 1;
    (void)!write(vdev->irq_fd, &one, sizeof(one));
}

void virtio_notify_queue(struct virtio_dev *vdev, struct virtq *vq)
{
    if (virtq_should_notify(vq))
        raise_irq(vdev, VIRTIO_MMIO_INT_VRING);
}

void virtio_notify_config(struct virtio_dev *vdev)
{
    vdev->config_generation++;
    raise_irq(vdev, VIRTIO_MMIO_INT_CONFIG);
}

void virtio_needs_reset(struct virtio_dev *vdev, const struct wisp_err *err)
{
    /* InterruptStatus first: a driver that sees DEVICE_NEEDS_RESET in Status also finds the
     * configuration-change bit it came with */
    atomic_fetch_or(&vdev->isr, VIRTIO_MMIO_INT_CONFIG);
    if (!atomic_exchange(&vdev->needs_reset, true) && err && err->msg[0]) {
        const char *why = err->msg; /* without the device's name when it starts with it */
        size_t n = strlen(vdev->dev->name);
        if (!strncmp(why, vdev->dev->name, n) && !strncmp(why + n, ": ", 2))
            why += n + 2;
        wisp_log("%s: device needs reset: %s", vdev->dev->name, why);
    }
    raise_irq(vdev, VIRTIO_MMIO_INT_CONFIG);
}

void virtio_queue_clear_notify(struct virtio_queue *q)
{
    uint64_t v;
    (void)!read(q->notify_fd, &v, sizeof(v));
}

/* With vdev->lock held: the device goes back to its initial state (§2.4). */
static void transport_reset(struct virtio_dev *vdev)
{
    if (vdev->activated && vdev->ops->reset)
        vdev->ops->reset(vdev);
    vdev->activated = false;
    vdev->quiesced = false;
    vdev->status = 0;
    vdev->guest_features = 0;
    vdev->device_features_sel = vdev->driver_features_sel = vdev->queue_sel = 0;
    atomic_store(&vdev->isr, 0);
    atomic_store(&vdev->needs_reset, false);
    for (unsigned i = 0; i < vdev->nr_queues; i++) {
        virtq_reset(&vdev->queues[i].vq);
        virtio_queue_clear_notify(&vdev->queues[i]);
    }
}

void virtio_dev_reset(struct virtio_dev *vdev)
{
    pthread_mutex_lock(&vdev->lock);
    transport_reset(vdev);
    pthread_mutex_unlock(&vdev->lock);
}

void virtio_mmio_device_reset(struct device *dev)
{
    virtio_dev_reset(dev->state);
}

/* DRIVER_OK: maps every ready queue and starts the device; a failure is DEVICE_NEEDS_RESET. */
static void transport_activate(struct virtio_dev *vdev)
{
    struct wisp_err err = {0};
    int r = 0;
    for (unsigned i = 0; i < vdev->nr_queues && r == 0; i++) {
        struct virtq *q = &vdev->queues[i].vq;
        if (q->ready)
            r = virtq_activate(q, vdev->dev->ctx->mem, vdev->guest_features, &err);
    }
    if (r == 0 && vdev->ops->activate)
        r = vdev->ops->activate(vdev, &err);
    if (r < 0) {
        virtio_needs_reset(vdev, &err);
        return;
    }
    vdev->activated = true;
}

/* FEATURES_OK (§2.2.2): only a subset of what was offered, and VERSION_1 (a modern device). */
static bool features_acceptable(const struct virtio_dev *vdev)
{
    return !(vdev->guest_features & ~vdev->host_features) &&
           (vdev->guest_features & (1ull << VIRTIO_F_VERSION_1));
}

static void write_status(struct virtio_dev *vdev, uint32_t v)
{
    if (v == 0) {
        transport_reset(vdev);
        return;
    }
    uint32_t old = vdev->status;
    if ((v & VIRTIO_CONFIG_S_FEATURES_OK) && !(old & VIRTIO_CONFIG_S_FEATURES_OK) &&
        !features_acceptable(vdev))
        v &= ~(uint32_t)VIRTIO_CONFIG_S_FEATURES_OK; /* the driver reads it back and gives up */
    vdev->status = v & 0xff;
    if ((v & VIRTIO_CONFIG_S_DRIVER_OK) && !(old & VIRTIO_CONFIG_S_DRIVER_OK) &&
        (v & VIRTIO_CONFIG_S_FEATURES_OK) && !vdev->activated && !(v & VIRTIO_CONFIG_S_FAILED))
        transport_activate(vdev);
}

static struct virtio_queue *selected_queue(struct virtio_dev *vdev)
{
    return vdev->queue_sel < vdev->nr_queues ? &vdev->queues[vdev->queue_sel] : NULL;
}

static uint32_t read_register(struct virtio_dev *vdev, uint64_t offset)
{
    struct virtio_queue *q = selected_queue(vdev);
    switch (offset) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        return MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION:
        return MMIO_VERSION;
    case VIRTIO_MMIO_DEVICE_ID:
        return vdev->device_id;
    case VIRTIO_MMIO_VENDOR_ID:
        return WISP_VIRTIO_VENDOR_ID;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        return vdev->device_features_sel < 2
                   ? (uint32_t)(vdev->host_features >> (32 * vdev->device_features_sel))
                   : 0;
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return q ? q->max_size : 0;
    case VIRTIO_MMIO_QUEUE_READY:
        return q ? q->vq.ready : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        return atomic_load(&vdev->isr);
    case VIRTIO_MMIO_STATUS:
        return vdev->status | (atomic_load(&vdev->needs_reset) ? VIRTIO_CONFIG_S_NEEDS_RESET : 0);
    case VIRTIO_MMIO_SHM_LEN_LOW:
    case VIRTIO_MMIO_SHM_LEN_HIGH:
        return 0xffffffff; /* no shared memory regions: "length -1" (§4.2.2) */
    case VIRTIO_MMIO_SHM_BASE_LOW:
    case VIRTIO_MMIO_SHM_BASE_HIGH:
        return 0xffffffff;
    case VIRTIO_MMIO_CONFIG_GENERATION:
        return vdev->config_generation;
    }
    return 0; /* write-only and reserved registers read 0 */
}

/* Queue registers may change only while the queue is not ready (§4.2.2.3), and none once the
 * device runs (DRIVER_OK: the queues were mapped then; without VIRTIO_F_RING_RESET, which wisp
 * does not offer, a queue cannot be enabled or disabled on its own). */
static void write_queue_register(struct virtio_dev *vdev, uint64_t offset, uint32_t v)
{
    struct virtio_queue *q = selected_queue(vdev);
    if (!q || vdev->activated || (q->vq.ready && offset != VIRTIO_MMIO_QUEUE_READY))
        return;
    struct virtq *vq = &q->vq;
    switch (offset) {
    case VIRTIO_MMIO_QUEUE_NUM:
        vq->size = v <= q->max_size ? (uint16_t)v : 0; /* a wrong size fails at activation */
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        vq->ready = v & 1;
        break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
        vq->desc_gpa = (vq->desc_gpa & ~0xffffffffull) | v;
        break;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        vq->desc_gpa = (vq->desc_gpa & 0xffffffffull) | (uint64_t)v << 32;
        break;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        vq->avail_gpa = (vq->avail_gpa & ~0xffffffffull) | v;
        break;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        vq->avail_gpa = (vq->avail_gpa & 0xffffffffull) | (uint64_t)v << 32;
        break;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
        vq->used_gpa = (vq->used_gpa & ~0xffffffffull) | v;
        break;
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
        vq->used_gpa = (vq->used_gpa & 0xffffffffull) | (uint64_t)v << 32;
        break;
    }
}

static void write_register(struct virtio_dev *vdev, uint64_t offset, uint32_t v)
{
    bool negotiating = !(vdev->status & VIRTIO_CONFIG_S_FEATURES_OK);
    switch (offset) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        vdev->device_features_sel = v;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (negotiating && vdev->driver_features_sel < 2) {
            unsigned shift = 32 * vdev->driver_features_sel;
            vdev->guest_features =
                (vdev->guest_features & ~(0xffffffffull << shift)) | (uint64_t)v << shift;
        }
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        vdev->driver_features_sel = v;
        break;
    case VIRTIO_MMIO_QUEUE_SEL:
        vdev->queue_sel = v;
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY: /* only without ioeventfd (the device test protocol) */
        if (v < vdev->nr_queues) {
            uint64_t one = 1;
            (void)!write(vdev->queues[v].notify_fd, &one, sizeof(one));
        }
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        atomic_fetch_and(&vdev->isr, ~v);
        break;
    case VIRTIO_MMIO_STATUS:
        write_status(vdev, v);
        break;
    default:
        write_queue_register(vdev, offset, v);
        break;
    }
}

void virtio_mmio_read(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    struct virtio_dev *vdev = dev->state;
    memset(data, 0, size);
    pthread_mutex_lock(&vdev->lock);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        if (vdev->ops->config_read)
            vdev->ops->config_read(vdev, offset - VIRTIO_MMIO_CONFIG, data, size);
    } else if (size == 4 && !(offset & 3)) { /* registers: 32-bit aligned accesses only */
        uint32_t v = read_register(vdev, offset);
        memcpy(data, &v, 4);
    }
    pthread_mutex_unlock(&vdev->lock);
}

void virtio_mmio_write(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    struct virtio_dev *vdev = dev->state;
    pthread_mutex_lock(&vdev->lock);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        if (vdev->ops->config_write)
            vdev->ops->config_write(vdev, offset - VIRTIO_MMIO_CONFIG, data, size);
    } else if (size == 4 && !(offset & 3)) {
        uint32_t v;
        memcpy(&v, data, 4);
        write_register(vdev, offset, v);
    }
    pthread_mutex_unlock(&vdev->lock);
}

static int setup_queue_notify(struct virtio_dev *vdev, unsigned i, struct wisp_err *err)
{
    const struct device_ctx *ctx = vdev->dev->ctx;
    struct virtio_queue *q = &vdev->queues[i];
    q->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->notify_fd < 0)
        return wisp_err_sys(err, errno, "%s: eventfd", vdev->dev->name);
    struct kvm_ioeventfd_spec spec = {.addr = vdev->mmio_base + VIRTIO_MMIO_QUEUE_NOTIFY,
                                      .len = 4,
                                      .datamatch = true,
                                      .value = i};
    return ctx->attach_ioeventfd
               ? ctx->attach_ioeventfd(ctx->opaque, &spec, q->notify_fd, true, err)
               : 0;
}

int virtio_dev_init(struct virtio_dev *vdev, struct device *dev, const struct virtio_dev_ops *ops,
                    uint32_t device_id, uint64_t features, unsigned nr_queues,
                    const uint16_t *queue_max_sizes, struct wisp_err *err)
{
    vdev->dev = dev;
    vdev->ops = ops;
    vdev->device_id = device_id;
    vdev->host_features = features | TRANSPORT_FEATURES;
    vdev->irq_fd = -1;
    vdev->nr_queues = nr_queues;
    pthread_mutex_init(&vdev->lock, NULL);
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        vdev->queues[i].notify_fd = -1;
        vdev->queues[i].vdev = vdev;
        vdev->queues[i].vq.index = i;
        vdev->queues[i].vq.name = dev->name;
    }
    if (nr_queues == 0 || nr_queues > VIRTIO_MAX_QUEUES)
        return wisp_err_set(err, EINVAL, "%s: %u queues (1 to %u)", dev->name, nr_queues,
                            VIRTIO_MAX_QUEUES);
    const struct device_ctx *ctx = dev->ctx;
    int r = resources_alloc_mmio(ctx->res, VIRTIO_MMIO_WINDOW, dev->name, &vdev->mmio_base, err);
    if (r == 0)
        r = resources_alloc_gsi(ctx->res, dev->name, &vdev->gsi, err);
    if (r == 0)
        r = resources_add_virtio_mmio(ctx->res, dev->name, vdev->mmio_base, VIRTIO_MMIO_WINDOW,
                                      vdev->gsi, err);
    if (r == 0)
        r = device_register_mmio(dev, vdev->mmio_base, VIRTIO_MMIO_WINDOW, err);
    for (unsigned i = 0; r == 0 && i < nr_queues; i++) {
        vdev->queues[i].max_size = queue_max_sizes[i];
        r = setup_queue_notify(vdev, i, err);
    }
    if (r == 0 && (vdev->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        r = wisp_err_sys(err, errno, "%s: eventfd", dev->name);
    if (r == 0 && ctx->attach_irqfd)
        r = ctx->attach_irqfd(ctx->opaque, vdev->gsi, vdev->irq_fd, true, err);
    return r;
}

void virtio_dev_destroy(struct virtio_dev *vdev)
{
    if (!vdev->dev)
        return;
    const struct device_ctx *ctx = vdev->dev->ctx;
    virtio_dev_reset(vdev);
    for (unsigned i = 0; i < vdev->nr_queues && i < VIRTIO_MAX_QUEUES; i++) {
        struct virtio_queue *q = &vdev->queues[i];
        if (q->notify_fd < 0)
            continue;
        struct kvm_ioeventfd_spec spec = {.addr = vdev->mmio_base + VIRTIO_MMIO_QUEUE_NOTIFY,
                                          .len = 4,
                                          .datamatch = true,
                                          .value = i};
        if (ctx->attach_ioeventfd)
            ctx->attach_ioeventfd(ctx->opaque, &spec, q->notify_fd, false, NULL);
        close(q->notify_fd);
        q->notify_fd = -1;
    }
    if (vdev->irq_fd >= 0) {
        if (ctx->attach_irqfd)
            ctx->attach_irqfd(ctx->opaque, vdev->gsi, vdev->irq_fd, false, NULL);
        close(vdev->irq_fd);
        vdev->irq_fd = -1;
    }
    pthread_mutex_destroy(&vdev->lock);
    vdev->dev = NULL;
}
