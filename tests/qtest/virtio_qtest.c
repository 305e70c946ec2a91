/* A small virtio-mmio driver over the test protocol: the register sequence of virtio 1.2
 * §4.2.3 and split rings (§2.7) written into guest RAM with memwrite. */
#include "virtio_qtest.h"

#include <time.h>

void vqt_find(struct qtest *qt, const char *type, unsigned nth, struct vqt_dev *dev)
{
    *dev = (struct vqt_dev){.qt = qt};
    if (!qtest_find_device(qt, type, nth, &dev->info))
        qtest_fail(qt, "no %s device number %u in the machine", type, nth);
}

uint32_t vqt_read(const struct vqt_dev *dev, unsigned offset)
{
    return qtest_readl(dev->qt, dev->info.base + offset);
}

void vqt_write(const struct vqt_dev *dev, unsigned offset, uint32_t v)
{
    qtest_writel(dev->qt, dev->info.base + offset, v);
}

uint32_t vqt_status(const struct vqt_dev *dev)
{
    return vqt_read(dev, VIRTIO_MMIO_STATUS);
}

uint64_t vqt_device_features(const struct vqt_dev *dev)
{
    vqt_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    uint64_t hi = vqt_read(dev, VIRTIO_MMIO_DEVICE_FEATURES);
    vqt_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    return hi << 32 | vqt_read(dev, VIRTIO_MMIO_DEVICE_FEATURES);
}

bool vqt_reset(struct vqt_dev *dev)
{
    vqt_write(dev, VIRTIO_MMIO_STATUS, 0);
    return vqt_status(dev) == 0;
}

bool vqt_negotiate(struct vqt_dev *dev, uint64_t features)
{
    vqt_reset(dev);
    vqt_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    vqt_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    dev->features = vqt_device_features(dev);
    vqt_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    vqt_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
    vqt_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    vqt_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
    uint32_t s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    vqt_write(dev, VIRTIO_MMIO_STATUS, s);
    return vqt_status(dev) & VIRTIO_CONFIG_S_FEATURES_OK;
}

void vqt_queue_setup_at(struct vqt_dev *dev, struct vqt_queue *q, unsigned index, uint16_t size,
                        uint64_t desc, uint64_t avail, uint64_t used)
{
    *q = (struct vqt_queue){
        .dev = dev, .index = index, .size = size, .desc = desc, .avail = avail, .used = used};
    vqt_write(dev, VIRTIO_MMIO_QUEUE_SEL, index);
    vqt_write(dev, VIRTIO_MMIO_QUEUE_NUM, size);
    vqt_write(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    vqt_write(dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    vqt_write(dev, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
    vqt_write(dev, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
    vqt_write(dev, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
    vqt_write(dev, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
    vqt_write(dev, VIRTIO_MMIO_QUEUE_READY, 1);
}

void vqt_queue_setup(struct vqt_dev *dev, struct vqt_queue *q, unsigned index, uint16_t size)
{
    struct qtest *qt = dev->qt;
    uint64_t desc = qtest_alloc(qt, 16ull * size, 4096);
    uint64_t avail = qtest_alloc(qt, 6 + 2ull * size, 4096);
    uint64_t used = qtest_alloc(qt, 6 + 8ull * size, 4096);
    vqt_queue_setup_at(dev, q, index, size, desc, avail, used);
}

void vqt_driver_ok(struct vqt_dev *dev)
{
    vqt_write(dev, VIRTIO_MMIO_STATUS,
              VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
                  VIRTIO_CONFIG_S_DRIVER_OK);
}

void vqt_desc_at(struct qtest *qt, uint64_t table, uint16_t i, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next)
{
    uint8_t d[16];
    for (unsigned b = 0; b < 8; b++)
        d[b] = (uint8_t)(addr >> (8 * b));
    for (unsigned b = 0; b < 4; b++)
        d[8 + b] = (uint8_t)(len >> (8 * b));
    d[12] = (uint8_t)flags;
    d[13] = (uint8_t)(flags >> 8);
    d[14] = (uint8_t)next;
    d[15] = (uint8_t)(next >> 8);
    qtest_memwrite(qt, table + 16ull * i, d, sizeof(d));
}

void vqt_desc(struct vqt_queue *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
              uint16_t next)
{
    vqt_desc_at(q->dev->qt, q->desc, i, addr, len, flags, next);
}

void vqt_avail_set_idx(struct vqt_queue *q, uint16_t idx)
{
    qtest_mem_put_u16(q->dev->qt, q->avail + 2, idx);
}

void vqt_avail_push(struct vqt_queue *q, uint16_t head)
{
    qtest_mem_put_u16(q->dev->qt, q->avail + 4 + 2ull * (q->avail_idx % q->size), head);
    vqt_avail_set_idx(q, ++q->avail_idx);
}

void vqt_kick(struct vqt_queue *q)
{
    vqt_write(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

uint16_t vqt_used_idx(struct vqt_queue *q)
{
    return qtest_mem_u16(q->dev->qt, q->used + 2);
}

bool vqt_wait_used(struct vqt_queue *q, uint32_t *id, uint32_t *len, unsigned timeout_ms)
{
    struct qtest *qt = q->dev->qt;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t deadline = (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000 + timeout_ms;
    while (vqt_used_idx(q) == q->last_used) { /* each interrupt: look again */
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t left = deadline - ((int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000);
        if (left <= 0 || !qtest_irq_wait(qt, q->dev->info.gsi, (unsigned)left))
            return false;
    }
    uint64_t e = q->used + 4 + 8ull * (q->last_used % q->size);
    *id = qtest_mem_u32(qt, e);
    *len = qtest_mem_u32(qt, e + 4);
    q->last_used++;
    return true;
}

uint32_t vqt_ack_interrupt(struct vqt_dev *dev)
{
    uint32_t isr = vqt_read(dev, VIRTIO_MMIO_INTERRUPT_STATUS);
    vqt_write(dev, VIRTIO_MMIO_INTERRUPT_ACK, isr);
    return isr;
}
