/* Split virtqueues (virtio 1.2 §2.7): the device side of the descriptor table, the available
 * ring and the used ring, with every guest value checked before it is used. */
#ifndef WISP_VIRTIO_VIRTQ_H
#define WISP_VIRTIO_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/err.h"

struct guest_mem;
struct state_reader;
struct state_writer;
struct vring_desc;
struct vring_avail;
struct vring_used;

#define VIRTQ_MAX_SIZE 32768 /* virtio 1.2 §2.7: Queue Size is at most 32768 */

/*
 * One virtqueue. The transport fills size, ready and the ring addresses from the driver's register
 * writes; from virtq_activate() on, the queue belongs to the thread that serves it (the device's
 * I/O thread): pop, push and notify decisions are made there only. The rings live in guest memory
 * that the guest may change at any time: every field is read once into a local and checked there.
 */
struct virtq {
    unsigned index;   /* queue number, for messages */
    const char *name; /* the device's name, for messages */
    /* from the driver (transport registers) */
    uint16_t size;
    bool ready;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    /* the device side, valid after virtq_activate() */
    const struct guest_mem *mem;
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    bool event_idx;          /* VIRTIO_F_RING_EVENT_IDX negotiated */
    bool indirect;           /* VIRTIO_F_RING_INDIRECT_DESC negotiated */
    uint16_t last_avail;     /* next available-ring entry to take */
    uint16_t used_idx;       /* the used index as the device last published it */
    uint16_t signalled_used; /* used_idx at the last interrupt (EVENT_IDX) */
    bool signalled_valid;
    bool broken;   /* a malformed ring or chain was seen: nothing more is taken */
    bool restored; /* virtq_load() set the device-side indices: virtq_activate() keeps them */
};

/* A popped descriptor chain: its buffers as host iovecs, device-readable ones first. */
struct virtq_chain {
    uint16_t head; /* for virtq_push */
    unsigned nr_out, nr_in;
    uint64_t out_len, in_len; /* bytes the device may read / write */
    struct iovec *iov;        /* nr_out readable, then nr_in writable */
};

/* Maps the three rings (each must lie in one RAM region, aligned as §2.7 requires) and resets
 * the device-side state. `features` are the negotiated ones. Returns 0 or -EINVAL with err
 * naming the ring and address. */
int virtq_activate(struct virtq *q, const struct guest_mem *mem, uint64_t features,
                   struct wisp_err *err);
/* Back to the state after a device reset (driver fields cleared too). */
void virtq_reset(struct virtq *q);

/* Snapshots: virtq_save() appends the driver's registers (size, ready, ring addresses) and the
 * device side's indices; virtq_load() reads them back into q (checked against max_size; a bad
 * value marks r bad). With q->restored set (by the transport, for a queue that was running),
 * the next virtq_activate() maps the rings and keeps those indices instead of starting from the
 * used ring's. */
void virtq_save(const struct virtq *q, struct state_writer *w);
void virtq_load(struct virtq *q, uint16_t max_size, struct state_reader *r);

/*
 * Takes the next available chain. Returns 1 with *c filled (iov[] has room for max_iov
 * entries), 0 when the ring is empty, or -EINVAL (-E2BIG when the chain has more than max_iov
 * buffers) with err naming queue, descriptor and what is wrong; after -EINVAL the queue is
 * broken. Checked: the ring index (at most `size` ahead), the head and every next index (below
 * size), loops and chains longer than the queue (§2.7.5.3.1), indirect tables (feature
 * negotiated, not with NEXT, not nested, length a multiple of 16 and at most the queue size),
 * device-writable buffers after all readable ones (§2.7.4.2), and every buffer inside one RAM
 * region (gpa_to_hva). A zero-length buffer adds no iovec. With EVENT_IDX each pop moves
 * avail_event to the new last index, so the driver notifies again when it adds more (§2.7.10).
 */
int virtq_pop(struct virtq *q, struct virtq_chain *c, struct iovec *iov, unsigned max_iov,
              struct wisp_err *err);
/* Gives a chain back unused (it is taken again by the next pop). Only for the last popped. */
void virtq_unpop(struct virtq *q);
/* Returns a chain to the driver with `written` bytes written into its writable buffers.
 * Publishes the used index (release): call virtq_should_notify() after a batch. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t written);
/* After pushes: does the driver want an interrupt now (VRING_AVAIL_F_NO_INTERRUPT, or the
 * used_event index with EVENT_IDX, §2.7.7.2/§2.7.10)? Updates the signalled state. */
bool virtq_should_notify(struct virtq *q);
/* Asks the driver not to notify (used->flags / avail_event) while the device is busy taking
 * chains; virtq_enable_notify asks again and returns true when chains arrived meanwhile (take
 * them before sleeping). */
void virtq_disable_notify(struct virtq *q);
bool virtq_enable_notify(struct virtq *q);
/* True when the available ring holds chains not taken yet. */
bool virtq_has_avail(struct virtq *q);

#endif
