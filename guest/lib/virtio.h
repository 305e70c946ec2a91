/* A minimal virtio-mmio driver for test guests (virtio 1.2 §4.2, §2.7): finds devices on the
 * command line (virtio_mmio.device=SIZE@BASE:IRQ, as wisp-vmm and QEMU microvm with acpi=off
 * write it), negotiates features, sets up split virtqueues in guest memory, adds buffers,
 * notifies and polls the used ring. Ring 3, no interrupts: completion is polled; the interrupt
 * line can be checked through the LAPIC's IRR (gvirtio_irq_pending). */
#ifndef WISP_GUEST_VIRTIO_H
#define WISP_GUEST_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>

#define GVIRTIO_MAX_DEVICES 32

struct gvirtio_dev {
    uint64_t base;
    uint64_t size;
    unsigned irq;
    uint32_t device_id;
    uint64_t features; /* negotiated */
};

struct gvirtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
#define GVIRTQ_DESC_F_NEXT     1
#define GVIRTQ_DESC_F_WRITE    2
#define GVIRTQ_DESC_F_INDIRECT 4

struct gvirtq {
    struct gvirtio_dev *dev;
    unsigned index;
    uint16_t size;
    volatile struct gvirtq_desc *desc;
    volatile uint16_t *avail; /* flags, idx, ring[size], used_event */
    volatile uint8_t *used;   /* flags, idx, ring[size] of {u32 id, u32 len}, avail_event */
    uint16_t avail_idx, last_used;
    uint16_t free_head, num_free;
    bool event_idx;      /* VIRTIO_F_RING_EVENT_IDX negotiated: kick only when the device asks */
    uint16_t kicked_idx; /* avail_idx at the last kick */
};
#define GVIRTIO_F_INDIRECT_DESC 28
#define GVIRTIO_F_EVENT_IDX     29

/* A buffer to add: guest-physical address (= virtual in the kit) and length. */
struct gbuf {
    const void *addr;
    uint32_t len;
};

/* Devices on the command line, in order; returns how many (at most max). */
unsigned gvirtio_find_all(struct gvirtio_dev *out, unsigned max);
/* The nth device (0-based) of type device_id; false if there is none. */
bool gvirtio_find(uint32_t device_id, unsigned nth, struct gvirtio_dev *d);

uint32_t gvirtio_read32(const struct gvirtio_dev *d, unsigned offset);
void gvirtio_write32(const struct gvirtio_dev *d, unsigned offset, uint32_t v);
uint8_t gvirtio_config8(const struct gvirtio_dev *d, unsigned offset);
uint16_t gvirtio_config16(const struct gvirtio_dev *d, unsigned offset);
uint32_t gvirtio_config32(const struct gvirtio_dev *d, unsigned offset);
uint64_t gvirtio_config64(const struct gvirtio_dev *d, unsigned offset);

/* Reset, ACKNOWLEDGE, DRIVER, features (what the device offers of `want`, VERSION_1 always),
 * FEATURES_OK checked. Returns false (after printing why) if the device refuses. */
bool gvirtio_init(struct gvirtio_dev *d, uint64_t want);
/* Queue `index` with `size` entries (at most QueueNumMax) in memory from the kit's pool. */
bool gvirtq_setup(struct gvirtio_dev *d, struct gvirtq *q, unsigned index, uint16_t size);
void gvirtio_driver_ok(struct gvirtio_dev *d);
uint32_t gvirtio_status(const struct gvirtio_dev *d);

/* Adds a chain of n_out device-readable then n_in device-writable buffers; returns the head
 * (or -1 when the queue has no free descriptors). Does not notify. */
int gvirtq_add(struct gvirtq *q, const struct gbuf *bufs, unsigned n_out, unsigned n_in);
/* Publishes a raw chain head the caller built in q->desc itself (malformed-chain tests). */
void gvirtq_publish(struct gvirtq *q, uint16_t head);
/* Notifies the device; with EVENT_IDX only when its avail_event says it wants it (as Linux
 * does), so a device that forgets to move avail_event stops getting notified. */
void gvirtq_kick(struct gvirtq *q);
/* Takes one used element if there is one (head, bytes written); recycles its descriptors. */
bool gvirtq_get_used(struct gvirtq *q, uint16_t *head, uint32_t *len);
/* Polls for a used element for up to timeout_ms; false on timeout. */
bool gvirtq_wait_used(struct gvirtq *q, uint16_t *head, uint32_t *len, unsigned timeout_ms);

/* One device-readable buffer added, the device notified and its use waited for (up to
 * timeout_ms); false on a full queue or a timeout. */
bool gvirtq_send_wait(struct gvirtq *q, const void *addr, uint32_t len, unsigned timeout_ms);

/* Zeroed memory from the kit's pool (page-aligned when align is 4096); never freed. */
void *gvirtio_alloc(uint64_t size, uint64_t align);

/* Routes the device's IOAPIC pin to `vector` (unmasked, edge, physical to the BSP) so that an
 * interrupt shows as pending in the LAPIC's IRR; gvirtio_irq_pending() tells whether it came.
 * Interrupts stay off in ring 3, so a pending vector is never delivered and stays pending: a
 * test that checks for a second interrupt routes the pin to a fresh vector first. */
void gvirtio_irq_route(const struct gvirtio_dev *d, uint8_t vector);
bool gvirtio_irq_pending(uint8_t vector);

#endif
