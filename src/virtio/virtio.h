/* The virtio device core and its virtio-mmio transport (virtio 1.2 §2, §4.2): what every
 * virtio device (blk, net, console, rng) is built on. */
#ifndef WISP_VIRTIO_VIRTIO_H
#define WISP_VIRTIO_VIRTIO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "virtio/virtq.h"

struct device;
struct evloop;
struct evloop_source;
struct state_reader;
struct state_writer;

#define VIRTIO_MMIO_WINDOW    0x1000 /* one 4 KiB window per device */
#define VIRTIO_MMIO_CONFIG    0x100  /* device-specific configuration space offset */
#define VIRTIO_MAX_QUEUES     16
#define WISP_VIRTIO_VENDOR_ID 0x50534957 /* "WISP" */

struct virtio_dev;

/*
 * What a device type implements. The transport calls these with vdev->lock held, on the thread
 * of the register access (a vCPU thread, or the test protocol's main thread):
 *   config_read/config_write  the device-specific configuration space (offset from 0x100);
 *                             `size` 1, 2, 4 (or 8); reads past the config read 0
 *   activate                  DRIVER_OK: the queues are set up and mapped (virtq_activate was
 *                             done for every ready queue). The device starts serving them on its
 *                             own thread. A failure sets DEVICE_NEEDS_RESET.
 *   reset                     the driver wrote 0 to Status (or the machine resets): stop serving,
 *                             wait until no request is in flight, forget every queue. Returns
 *                             only when the device touches guest memory no more.
 * The device's serving thread never takes vdev->lock: it uses the queues, virtio_notify_queue(),
 * virtio_notify_config() and virtio_needs_reset(), which are lock-free.
 */
struct virtio_dev_ops {
    void (*config_read)(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size);
    void (*config_write)(struct virtio_dev *vdev, uint64_t offset, const void *data, unsigned size);
    int (*activate)(struct virtio_dev *vdev, struct wisp_err *err);
    void (*reset)(struct virtio_dev *vdev);
    /*
     * Snapshots (optional; docs/snapshot.md), main thread, vdev->lock held:
     *   quiesce  (activated devices only) stop taking chains and wait until none is in
     *            flight: each completes and is returned as usual, a chain the device holds
     *            is given back or recorded, so the queues and guest memory stay still; a
     *            failure (a drive that cannot flush) is undone by the transport with resume
     *   resume   serve again, taking what came meanwhile; a failure sets DEVICE_NEEDS_RESET
     *   save     append the device's state beyond the transport's (after quiesce)
     *   load     restore it, before the transport activates the restored queues
     */
    int (*quiesce)(struct virtio_dev *vdev, struct wisp_err *err);
    int (*resume)(struct virtio_dev *vdev, struct wisp_err *err);
    int (*save)(struct virtio_dev *vdev, struct state_writer *w, struct wisp_err *err);
    int (*load)(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err);
};

struct virtio_queue {
    struct virtq vq;
    struct virtio_dev *vdev;
    uint16_t max_size; /* QueueNumMax */
    int notify_fd;     /* eventfd signalled by a QueueNotify write of this index */
};

/*
 * A virtio device on the virtio-mmio transport. Each device type embeds it as the first member
 * of its state (dev->state points to it), so the generic mmio handlers find it.
 */
struct virtio_dev {
    struct device *dev;
    const struct virtio_dev_ops *ops;
    uint32_t device_id;
    uint64_t host_features; /* offered; VIRTIO_F_VERSION_1 is always added */
    uint64_t guest_features;
    uint64_t mmio_base;
    unsigned gsi;
    int irq_fd; /* eventfd: each write pulses the interrupt line (irqfd) */
    unsigned nr_queues;
    struct virtio_queue queues[VIRTIO_MAX_QUEUES];

    pthread_mutex_t lock; /* the registers below, config space, activate/reset */
    uint32_t status;
    uint32_t device_features_sel, driver_features_sel, queue_sel;
    uint32_t config_generation;
    bool activated;
    bool quiesced;           /* between ops->quiesce and ops->resume (snapshots) */
    atomic_uint isr;         /* InterruptStatus: VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG */
    atomic_bool needs_reset; /* DEVICE_NEEDS_RESET, set from any thread */

    /* virtio_serve_start(): where the queues are served */
    struct evloop *serve_loop;
    struct evloop_source *notify_src[VIRTIO_MAX_QUEUES];
    void (*serve_fn)(struct virtio_dev *vdev, unsigned queue);
};

/*
 * Sets up the transport for dev (call from the device type's realize, after dev->state points
 * to the struct embedding vdev): an MMIO window and an interrupt line from the machine's
 * allocator (recorded for the firmware tables and the command line), the window on the MMIO bus,
 * one eventfd per queue as ioeventfd on QueueNotify with the queue index as datamatch (no exit
 * to user space), and an eventfd as irqfd on the line. queue_max_sizes has nr_queues entries.
 * Pair with virtio_dev_destroy() (safe on a partial init).
 */
int virtio_dev_init(struct virtio_dev *vdev, struct device *dev, const struct virtio_dev_ops *ops,
                    uint32_t device_id, uint64_t features, unsigned nr_queues,
                    const uint16_t *queue_max_sizes, struct wisp_err *err);
/* Resets the device (ops->reset if activated), unregisters and closes what init made. */
void virtio_dev_destroy(struct virtio_dev *vdev);
/* Device reset from the machine (as a 0 write to Status). */
void virtio_dev_reset(struct virtio_dev *vdev);

/* The generic handlers every virtio device type puts in its device_ops (mmio_read/mmio_write,
 * and reset: a machine reset resets the device as a 0 written to Status does). */
void virtio_mmio_read(struct device *dev, uint64_t offset, void *data, unsigned size);
void virtio_mmio_write(struct device *dev, uint64_t offset, const void *data, unsigned size);
void virtio_mmio_device_reset(struct device *dev);
/* The snapshot operations every virtio device type puts in its device_ops (mmio_state.c): the
 * transport's registers and queues, and the device's own part through virtio_dev_ops. Loading
 * a device that was running maps its queues again and starts it without any register access:
 * the driver goes on as if nothing happened. */
int virtio_mmio_quiesce(struct device *dev, struct wisp_err *err);
void virtio_mmio_resume(struct device *dev);
int virtio_mmio_save(struct device *dev, struct state_writer *w, struct wisp_err *err);
int virtio_mmio_load(struct device *dev, struct state_reader *r, struct wisp_err *err);

/* Serving thread: the used ring of `queue` changed; raises the interrupt when the driver wants
 * one (virtq_should_notify). */
void virtio_notify_queue(struct virtio_dev *vdev, struct virtq *vq);
/* The configuration changed (any thread, e.g. a new capacity): bumps ConfigGeneration (the
 * caller holds vdev->lock) and raises the config interrupt. */
void virtio_notify_config(struct virtio_dev *vdev);
/* A malformed request the device cannot go on from (§2.1.1): DEVICE_NEEDS_RESET, a config
 * interrupt, and one log line per device naming the problem (err). Any thread. */
void virtio_needs_reset(struct virtio_dev *vdev, const struct wisp_err *err);
/* Clears a queue's notification eventfd (the serving thread, when it fired). */
void virtio_queue_clear_notify(struct virtio_queue *q);
/*
 * Serving the queues on an event loop (the device's I/O thread, or the main loop): from
 * activate, virtio_serve_start() watches every ready queue's notification eventfd on `loop` and
 * calls fn(vdev, queue) there when it fires (the eventfd already cleared), and once for every
 * ready queue right away (drivers may add buffers before DRIVER_OK). From reset,
 * virtio_serve_stop() stops watching; after it returns fn is not running and will not run.
 * Both wait for the loop's thread (evloop_call_sync) unless called in it.
 */
int virtio_serve_start(struct virtio_dev *vdev, struct evloop *loop,
                       void (*fn)(struct virtio_dev *vdev, unsigned queue), struct wisp_err *err);
void virtio_serve_stop(struct virtio_dev *vdev);

/* Negotiated feature test. */
static inline bool virtio_has_feature(const struct virtio_dev *vdev, unsigned bit)
{
    return (vdev->guest_features >> bit) & 1;
}

#endif
