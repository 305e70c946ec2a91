/* A small virtio-mmio driver over the test protocol (virtio 1.2 §4.2.3, §2.7): find a device,
 * negotiate, set up split queues in guest RAM, add descriptors (well-formed or deliberately
 * malformed), notify, wait for the interrupt and read the used ring. */
#ifndef WISP_TESTS_VIRTIO_QTEST_H
#define WISP_TESTS_VIRTIO_QTEST_H

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <stdbool.h>
#include <stdint.h>

#include "libqtest.h"

#define VQT_F_VERSION_1 (1ull << VIRTIO_F_VERSION_1)
#define VQT_F_INDIRECT  (1ull << VIRTIO_RING_F_INDIRECT_DESC)
#define VQT_F_EVENT_IDX (1ull << VIRTIO_RING_F_EVENT_IDX)

struct vqt_dev {
    struct qtest *qt;
    struct qtest_device info; /* name, type, base, size, gsi */
    uint64_t features;        /* offered by the device (read by vqt_negotiate) */
};

struct vqt_queue {
    struct vqt_dev *dev;
    unsigned index;
    uint16_t size;
    uint64_t desc, avail, used; /* guest-physical addresses of the rings */
    uint16_t avail_idx;         /* the driver's next available index */
    uint16_t last_used;         /* used elements taken so far */
};

/* The nth device of `type`; fails the test if there is none. */
void vqt_find(struct qtest *qt, const char *type, unsigned nth, struct vqt_dev *dev);
uint32_t vqt_read(const struct vqt_dev *dev, unsigned offset);
void vqt_write(const struct vqt_dev *dev, unsigned offset, uint32_t v);
uint32_t vqt_status(const struct vqt_dev *dev);
uint64_t vqt_device_features(const struct vqt_dev *dev);

/* Reset, ACKNOWLEDGE, DRIVER, DriverFeatures = `features` (as given: no bit is added), then
 * FEATURES_OK; true when the device kept FEATURES_OK set (it accepted them). */
bool vqt_negotiate(struct vqt_dev *dev, uint64_t features);
/* Rings for queue `index` with `size` entries in fresh zeroed guest RAM, registers written,
 * QueueReady set. */
void vqt_queue_setup(struct vqt_dev *dev, struct vqt_queue *q, unsigned index, uint16_t size);
/* The same with the three ring addresses given (they may lie anywhere: malformed setups). */
void vqt_queue_setup_at(struct vqt_dev *dev, struct vqt_queue *q, unsigned index, uint16_t size,
                        uint64_t desc, uint64_t avail, uint64_t used);
void vqt_driver_ok(struct vqt_dev *dev);
/* Status 0: the device resets (§4.2.3.1); true if Status then reads 0. */
bool vqt_reset(struct vqt_dev *dev);

/* Writes descriptor i of a table (the queue's, or an indirect table at `table`). */
void vqt_desc(struct vqt_queue *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
              uint16_t next);
void vqt_desc_at(struct qtest *qt, uint64_t table, uint16_t i, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next);
/* Puts `head` in the available ring and publishes the new index. */
void vqt_avail_push(struct vqt_queue *q, uint16_t head);
/* Writes the available index directly (a driver that jumps). */
void vqt_avail_set_idx(struct vqt_queue *q, uint16_t idx);
/* QueueNotify with the queue's index. */
void vqt_kick(struct vqt_queue *q);
/* The used index as the device published it. */
uint16_t vqt_used_idx(struct vqt_queue *q);
/* Takes the next used element (id, bytes written), waiting up to timeout_ms for the queue's
 * interrupt; false if none came. */
bool vqt_wait_used(struct vqt_queue *q, uint32_t *id, uint32_t *len, unsigned timeout_ms);
/* Reads InterruptStatus and acknowledges what it holds; returns it. */
uint32_t vqt_ack_interrupt(struct vqt_dev *dev);

#endif
