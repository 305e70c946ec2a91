/* Snapshots of a virtio-mmio device (docs/snapshot.md, "virtio"): quiescing its queues, the
 * transport's registers and every queue's state, and restoring a running device without a
 * single register access from the driver. */
#include <errno.h>
#include <linux/virtio_config.h>

#include "common/log.h"
#include "common/statebuf.h"
#include "devices/device.h"
#include "virtio/virtio.h"

int virtio_mmio_quiesce(struct device *dev, struct wisp_err *err)
{
    struct virtio_dev *vdev = dev->state;
    pthread_mutex_lock(&vdev->lock);
    int r = 0;
    if (vdev->activated && !vdev->quiesced && vdev->ops->quiesce)
        r = vdev->ops->quiesce(vdev, err);
    if (r < 0 && vdev->ops->resume) /* serving as before */
        (void)vdev->ops->resume(vdev, NULL);
    vdev->quiesced = r == 0;
    pthread_mutex_unlock(&vdev->lock);
    return r < 0 ? wisp_err_wrap(err, "%s", dev->name) : 0;
}

void virtio_mmio_resume(struct device *dev)
{
    struct virtio_dev *vdev = dev->state;
    pthread_mutex_lock(&vdev->lock);
    struct wisp_err err = {0};
    if (vdev->quiesced && vdev->activated && vdev->ops->resume && vdev->ops->resume(vdev, &err) < 0)
        virtio_needs_reset(vdev, &err);
    vdev->quiesced = false;
    pthread_mutex_unlock(&vdev->lock);
}

/* Layout (version 1): status, features, selectors, generation, ISR, flags, then per queue
 * virtq_save(), then the device's own part. */
int virtio_mmio_save(struct device *dev, struct state_writer *w, struct wisp_err *err)
{
    struct virtio_dev *vdev = dev->state;
    pthread_mutex_lock(&vdev->lock);
    state_put_u32(w, vdev->status);
    state_put_u64(w, vdev->guest_features);
    state_put_u32(w, vdev->device_features_sel);
    state_put_u32(w, vdev->driver_features_sel);
    state_put_u32(w, vdev->queue_sel);
    state_put_u32(w, vdev->config_generation);
    state_put_u32(w, atomic_load(&vdev->isr));
    state_put_u8(w, atomic_load(&vdev->needs_reset));
    state_put_u8(w, vdev->activated);
    state_put_u32(w, vdev->nr_queues);
    for (unsigned i = 0; i < vdev->nr_queues; i++)
        virtq_save(&vdev->queues[i].vq, w);
    int r = vdev->ops->save ? vdev->ops->save(vdev, w, err) : 0;
    pthread_mutex_unlock(&vdev->lock);
    return r < 0 ? wisp_err_wrap(err, "%s", dev->name) : 0;
}

/* What a restored transport must agree with: the features this instance offers (a tap without
 * the offloads the guest took, a drive opened read-only now), and a running device's status. */
static int check_transport(const struct virtio_dev *vdev, bool activated, struct wisp_err *err)
{
    uint64_t extra = vdev->guest_features & ~vdev->host_features;
    if (extra)
        return wisp_err_set(err, EINVAL,
                            "the guest's driver uses features 0x%llx that this device does not "
                            "offer (it offers 0x%llx)",
                            (unsigned long long)extra, (unsigned long long)vdev->host_features);
    uint32_t running = VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FEATURES_OK;
    if (activated && (vdev->status & running) != running)
        return wisp_err_set(err, EINVAL, "running without DRIVER_OK and FEATURES_OK (status 0x%x)",
                            vdev->status);
    if (vdev->status & ~0xffu)
        return wisp_err_set(err, EINVAL, "status 0x%x has unknown bits", vdev->status);
    return 0;
}

/* Maps the restored queues and starts the device on them (the DRIVER_OK it saw before). */
static int restart(struct virtio_dev *vdev, struct wisp_err *err)
{
    for (unsigned i = 0; i < vdev->nr_queues; i++) {
        struct virtq *q = &vdev->queues[i].vq;
        if (!q->ready)
            continue;
        q->restored = true;
        int r = virtq_activate(q, vdev->dev->ctx->mem, vdev->guest_features, err);
        if (r < 0)
            return r;
    }
    int r = vdev->ops->activate ? vdev->ops->activate(vdev, err) : 0;
    if (r == 0)
        vdev->activated = true;
    return r;
}

static int load_locked(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err)
{
    vdev->status = state_get_u32(r);
    vdev->guest_features = state_get_u64(r);
    vdev->device_features_sel = state_get_u32(r);
    vdev->driver_features_sel = state_get_u32(r);
    vdev->queue_sel = state_get_u32(r);
    vdev->config_generation = state_get_u32(r);
    uint32_t isr = state_get_u32(r);
    bool needs_reset = state_get_bool(r);
    bool activated = state_get_bool(r);
    uint32_t nr_queues = state_get_u32(r);
    if (!r->bad && nr_queues != vdev->nr_queues)
        state_reader_fail(r, "the number of queues differs from this device's");
    for (unsigned i = 0; i < vdev->nr_queues && !r->bad; i++)
        virtq_load(&vdev->queues[i].vq, vdev->queues[i].max_size, r);
    if (isr & ~3u)
        state_reader_fail(r, "the interrupt status has unknown bits");
    if (r->bad)
        return state_reader_done(r, "virtio transport", err);
    int ret = check_transport(vdev, activated, err);
    if (ret == 0 && vdev->ops->load)
        ret = vdev->ops->load(vdev, r, err);
    if (ret == 0)
        ret = state_reader_done(r, "device state", err);
    if (ret == 0 && activated)
        ret = restart(vdev, err);
    if (ret < 0)
        return ret;
    atomic_store(&vdev->isr, isr);
    atomic_store(&vdev->needs_reset, needs_reset);
    return 0;
}

int virtio_mmio_load(struct device *dev, struct state_reader *r, struct wisp_err *err)
{
    struct virtio_dev *vdev = dev->state;
    pthread_mutex_lock(&vdev->lock);
    int ret = vdev->activated ? wisp_err_set(err, EBUSY, "the device is running already")
                              : load_locked(vdev, r, err);
    if (ret < 0) { /* back to a device the driver has not touched */
        for (unsigned i = 0; i < vdev->nr_queues; i++)
            virtq_reset(&vdev->queues[i].vq);
        vdev->status = 0;
        vdev->guest_features = 0;
    }
    pthread_mutex_unlock(&vdev->lock);
    return ret < 0 ? wisp_err_wrap(err, "%s", dev->name) : 0;
}
