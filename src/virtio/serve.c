/* Serving a virtio device's queues on an event loop: notification eventfds as loop sources. */
#include <errno.h>

#include "common/evloop.h"
#include "devices/device.h"
#include "virtio/virtio.h"

struct serve_call {
    struct virtio_dev *vdev;
    int result;
    struct wisp_err *err;
};

static void notify_fired(void *opaque, uint32_t events)
{
    struct virtio_queue *q = opaque;
    virtio_queue_clear_notify(q);
    q->vdev->serve_fn(q->vdev, q->vq.index);
}

static void serve_stop_in_loop(void *opaque)
{
    struct virtio_dev *vdev = opaque;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        evloop_source_remove(vdev->notify_src[i]);
        vdev->notify_src[i] = NULL;
    }
}

static void serve_start_in_loop(void *opaque)
{
    struct serve_call *c = opaque;
    struct virtio_dev *vdev = c->vdev;
    for (unsigned i = 0; i < vdev->nr_queues && c->result == 0; i++) {
        struct virtio_queue *q = &vdev->queues[i];
        if (q->vq.ready)
            c->result = evloop_add_fd(vdev->serve_loop, q->notify_fd, EPOLLIN, notify_fired, q,
                                      &vdev->notify_src[i], c->err);
    }
    if (c->result < 0) {
        serve_stop_in_loop(vdev);
        return;
    }
    for (unsigned i = 0; i < vdev->nr_queues; i++)
        if (vdev->queues[i].vq.ready)
            vdev->serve_fn(vdev, i);
}

int virtio_serve_start(struct virtio_dev *vdev, struct evloop *loop,
                       void (*fn)(struct virtio_dev *vdev, unsigned queue), struct wisp_err *err)
{
    vdev->serve_loop = loop;
    vdev->serve_fn = fn;
    struct serve_call c = {.vdev = vdev, .err = err};
    int r = evloop_call_sync(loop, serve_start_in_loop, &c);
    if (r < 0)
        return wisp_err_set(err, -r, "%s: the I/O loop %s has stopped", vdev->dev->name,
                            evloop_name(loop));
    return c.result;
}

void virtio_serve_stop(struct virtio_dev *vdev)
{
    if (vdev->serve_loop)
        (void)evloop_call_sync(vdev->serve_loop, serve_stop_in_loop, vdev);
}
