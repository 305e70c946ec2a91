/* Split virtqueue, device side (virtio 1.2 §2.7). Guest memory is shared with a guest that may
 * change it at any moment: ring entries and descriptors are read once (volatile loads) into
 * locals and checked there; the used ring is written with release ordering so the driver never
 * sees an index before its element. */
#include "virtio/virtq.h"

#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <string.h>

#include "common/statebuf.h"
#include "kvm/guest_mem.h"

#define READ_ONCE16(p) __atomic_load_n((const volatile uint16_t *)(p), __ATOMIC_RELAXED)

static uint64_t ring_bytes_avail(uint16_t size)
{
    return 6 + 2ull * size; /* flags, idx, ring[size], used_event */
}

static uint64_t ring_bytes_used(uint16_t size)
{
    return 6 + 8ull * size; /* flags, idx, ring[size], avail_event */
}

static void *map_ring(const struct virtq *q, const char *what, uint64_t gpa, uint64_t len,
                      uint64_t align, struct wisp_err *err)
{
    if (gpa % align) {
        wisp_err_set(err, EINVAL, "%s: queue %u: %s at 0x%llx is not %llu-byte aligned", q->name,
                     q->index, what, (unsigned long long)gpa, (unsigned long long)align);
        return NULL;
    }
    void *p = gpa_to_hva(q->mem, gpa, len);
    if (!p)
        wisp_err_set(err, EINVAL, "%s: queue %u: %s [0x%llx, +%llu) is outside guest RAM", q->name,
                     q->index, what, (unsigned long long)gpa, (unsigned long long)len);
    return p;
}

int virtq_activate(struct virtq *q, const struct guest_mem *mem, uint64_t features,
                   struct wisp_err *err)
{
    q->mem = mem;
    if (q->size == 0 || q->size > VIRTQ_MAX_SIZE || (q->size & (q->size - 1)))
        return wisp_err_set(err, EINVAL, "%s: queue %u: size %u is not a power of two <= %u",
                            q->name, q->index, q->size, VIRTQ_MAX_SIZE);
    q->desc =
        map_ring(q, "descriptor table", q->desc_gpa, 16ull * q->size, VRING_DESC_ALIGN_SIZE, err);
    if (!q->desc)
        return -EINVAL;
    q->avail = map_ring(q, "available ring", q->avail_gpa, ring_bytes_avail(q->size),
                        VRING_AVAIL_ALIGN_SIZE, err);
    if (!q->avail)
        return -EINVAL;
    q->used =
        map_ring(q, "used ring", q->used_gpa, ring_bytes_used(q->size), VRING_USED_ALIGN_SIZE, err);
    if (!q->used)
        return -EINVAL;
    q->event_idx = features & (1ull << VIRTIO_RING_F_EVENT_IDX);
    q->indirect = features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
    if (q->restored) { /* a snapshot's queue goes on where it was (virtq_load) */
        q->restored = false;
        return 0;
    }
    /* the driver zeroed the rings before QueueReady; start from its indices */
    q->last_avail = q->used_idx = READ_ONCE16(&q->used->idx);
    q->signalled_valid = false;
    q->broken = false;
    return 0;
}

void virtq_save(const struct virtq *q, struct state_writer *w)
{
    state_put_u16(w, q->size);
    state_put_u8(w, q->ready);
    state_put_u64(w, q->desc_gpa);
    state_put_u64(w, q->avail_gpa);
    state_put_u64(w, q->used_gpa);
    state_put_u16(w, q->last_avail);
    state_put_u16(w, q->used_idx);
    state_put_u16(w, q->signalled_used);
    state_put_u8(w, q->signalled_valid);
    state_put_u8(w, q->broken);
}

void virtq_load(struct virtq *q, uint16_t max_size, struct state_reader *r)
{
    virtq_reset(q);
    q->size = state_get_u16(r);
    q->ready = state_get_bool(r);
    q->desc_gpa = state_get_u64(r);
    q->avail_gpa = state_get_u64(r);
    q->used_gpa = state_get_u64(r);
    q->last_avail = state_get_u16(r);
    q->used_idx = state_get_u16(r);
    q->signalled_used = state_get_u16(r);
    q->signalled_valid = state_get_bool(r);
    q->broken = state_get_bool(r);
    if (q->size > max_size)
        state_reader_fail(r, "a queue is larger than the device allows");
    /* chains taken and not returned are at most a ring's worth (§2.7.5.3.1) */
    else if ((uint16_t)(q->last_avail - q->used_idx) > q->size)
        state_reader_fail(r, "a queue's indices are further apart than its size");
}

void virtq_reset(struct virtq *q)
{
    unsigned index = q->index;
    const char *name = q->name;
    memset(q, 0, sizeof(*q));
    q->index = index;
    q->name = name;
}

/* The device writes the used ring (elements, index, flags, avail_event): under dirty tracking
 * those pages belong in the next diff snapshot. */
static void mark_used(const struct virtq *q)
{
    guest_mem_mark_dirty(q->mem, q->used_gpa, ring_bytes_used(q->size));
}

static uint16_t avail_idx(const struct virtq *q)
{
    /* acquire: the ring entries and descriptors the driver wrote before the index */
    return __atomic_load_n((const volatile uint16_t *)&q->avail->idx, __ATOMIC_ACQUIRE);
}

bool virtq_has_avail(struct virtq *q)
{
    return !q->broken && avail_idx(q) != q->last_avail;
}

/* One descriptor, read once. Indirect tables need not be 16-byte aligned (Linux allocates them
 * with kmalloc, 8-byte aligned), so the copy makes no assumption about alignment. */
static void read_desc(const struct vring_desc *table, unsigned i, struct vring_desc *out)
{
    memcpy(out, (const uint8_t *)table + 16ul * i, sizeof(*out));
    __asm__ volatile("" ::: "memory"); /* the copy is the one read; checks use *out only */
}

/* The chain walk's state: where descriptors come from (the queue's table or an indirect one). */
struct walk {
    struct virtq *q;
    struct virtq_chain *c;
    struct iovec *iov;
    unsigned max_iov;
    unsigned seen; /* descriptors visited: at most the queue size (§2.7.5.3.1) */
    struct wisp_err *err;
};

static int walk_fail(struct walk *w, int errnum, unsigned desc, const char *what)
{
    return wisp_err_set(w->err, errnum, "%s: queue %u: descriptor %u: %s", w->q->name, w->q->index,
                        desc, what);
}

/* Adds one buffer descriptor to the chain. */
static int walk_buffer(struct walk *w, unsigned idx, const struct vring_desc *d)
{
    bool writable = d->flags & VRING_DESC_F_WRITE;
    if (!writable && w->c->nr_in)
        return walk_fail(w, EINVAL, idx, "device-readable buffer after a device-writable one");
    if (d->len == 0)
        return 0;
    void *p = gpa_to_hva(w->q->mem, d->addr, d->len);
    if (!p) {
        wisp_err_set(w->err, EINVAL,
                     "%s: queue %u: descriptor %u: buffer [0x%llx, +%u) is outside guest RAM",
                     w->q->name, w->q->index, idx, (unsigned long long)d->addr, d->len);
        return -EINVAL;
    }
    unsigned n = w->c->nr_out + w->c->nr_in;
    if (n >= w->max_iov)
        return walk_fail(w, E2BIG, idx, "chain has more buffers than the device takes");
    w->iov[n] = (struct iovec){.iov_base = p, .iov_len = d->len};
    if (writable) {
        guest_mem_mark_dirty(w->q->mem, d->addr, d->len);
        w->c->nr_in++;
        w->c->in_len += d->len;
    } else {
        w->c->nr_out++;
        w->c->out_len += d->len;
    }
    return 0;
}

/* Walks an indirect table (§2.7.5.3): its own index space, no nesting, NEXT within it. */
static int walk_indirect(struct walk *w, unsigned idx, const struct vring_desc *d)
{
    struct virtq *q = w->q;
    if (!q->indirect)
        return walk_fail(w, EINVAL, idx, "indirect descriptor, but INDIRECT_DESC not negotiated");
    if (d->flags & VRING_DESC_F_NEXT)
        return walk_fail(w, EINVAL, idx, "indirect descriptor with NEXT set");
    if (d->len == 0 || d->len % 16 || d->len / 16 > q->size)
        return walk_fail(w, EINVAL, idx,
                         "indirect table length is not a multiple of 16 bytes "
                         "up to the queue size");
    const struct vring_desc *table = gpa_to_hva(q->mem, d->addr, d->len);
    if (!table)
        return walk_fail(w, EINVAL, idx, "indirect table is outside guest RAM");
    unsigned n = d->len / 16, i = 0;
    for (;;) {
        if (++w->seen > q->size)
            return walk_fail(w, EINVAL, idx, "chain longer than the queue (a loop?)");
        struct vring_desc e;
        read_desc(table, i, &e);
        if (e.flags & VRING_DESC_F_INDIRECT)
            return walk_fail(w, EINVAL, idx, "nested indirect table");
        int r = walk_buffer(w, idx, &e);
        if (r < 0)
            return r;
        if (!(e.flags & VRING_DESC_F_NEXT))
            return 0;
        if (e.next >= n)
            return walk_fail(w, EINVAL, idx, "indirect next index beyond the table");
        i = e.next;
    }
}

static int walk_chain(struct walk *w, unsigned head)
{
    struct virtq *q = w->q;
    unsigned i = head;
    for (;;) {
        if (++w->seen > q->size)
            return walk_fail(w, EINVAL, i, "chain longer than the queue (a loop?)");
        struct vring_desc d;
        read_desc(q->desc, i, &d);
        int r = d.flags & VRING_DESC_F_INDIRECT ? walk_indirect(w, i, &d) : walk_buffer(w, i, &d);
        if (r < 0)
            return r;
        if (!(d.flags & VRING_DESC_F_NEXT) || (d.flags & VRING_DESC_F_INDIRECT))
            return 0;
        if (d.next >= q->size)
            return walk_fail(w, EINVAL, i, "next index beyond the queue size");
        i = d.next;
    }
}

int virtq_pop(struct virtq *q, struct virtq_chain *c, struct iovec *iov, unsigned max_iov,
              struct wisp_err *err)
{
    if (q->broken)
        return wisp_err_set(err, EINVAL, "%s: queue %u is broken until the device is reset",
                            q->name, q->index);
    uint16_t avail = avail_idx(q);
    if (avail == q->last_avail && q->event_idx) {
        /* The ring looks empty. The driver decides whether to notify by reading avail_event,
         * which the last pop stored: that store must be visible before this load is trusted,
         * or a chain added meanwhile is neither seen here nor notified (x86 lets a load pass an
         * earlier store; §2.7.10). */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        avail = avail_idx(q);
    }
    if (avail == q->last_avail)
        return 0;
    if ((uint16_t)(avail - q->last_avail) > q->size) {
        q->broken = true;
        return wisp_err_set(err, EINVAL,
                            "%s: queue %u: available index moved from %u to %u, more than the "
                            "queue size %u",
                            q->name, q->index, q->last_avail, avail, q->size);
    }
    uint16_t head = READ_ONCE16(&q->avail->ring[q->last_avail % q->size]);
    if (head >= q->size) {
        q->broken = true;
        return wisp_err_set(err, EINVAL,
                            "%s: queue %u: available ring entry %u names head %u, "
                            "beyond the queue size %u",
                            q->name, q->index, q->last_avail % q->size, head, q->size);
    }
    *c = (struct virtq_chain){.head = head, .iov = iov};
    struct walk w = {.q = q, .c = c, .iov = iov, .max_iov = max_iov, .err = err};
    int r = walk_chain(&w, head);
    if (r == -EINVAL)
        q->broken = true;
    if (r < 0)
        return r;
    q->last_avail++;
    if (q->event_idx) { /* avail_event (§2.7.10): notify us once the driver adds past this */
        __atomic_store_n((volatile uint16_t *)&q->used->ring[q->size], q->last_avail,
                         __ATOMIC_RELAXED);
        mark_used(q);
    }
    return 1;
}

void virtq_unpop(struct virtq *q)
{
    q->last_avail--;
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
    volatile struct vring_used_elem *e = &q->used->ring[q->used_idx % q->size];
    e->id = head;
    e->len = written;
    q->used_idx++;
    /* release: the element before the index (§2.7.8) */
    __atomic_store_n((volatile uint16_t *)&q->used->idx, q->used_idx, __ATOMIC_RELEASE);
    mark_used(q);
}

bool virtq_should_notify(struct virtq *q)
{
    /* the driver's view of used->idx must be visible before we read its used_event/flags */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!q->event_idx)
        return !(READ_ONCE16(&q->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
    uint16_t old = q->signalled_used, now = q->used_idx;
    bool valid = q->signalled_valid;
    q->signalled_used = now;
    q->signalled_valid = true;
    uint16_t event = READ_ONCE16(&q->avail->ring[q->size]); /* used_event */
    return !valid || vring_need_event(event, now, old);
}

void virtq_disable_notify(struct virtq *q)
{
    /* with EVENT_IDX, virtq_pop keeps avail_event just past what it took: the driver notifies
     * only when it adds to a ring the device may have seen empty, which is what is wanted */
    if (!q->event_idx) {
        __atomic_store_n((volatile uint16_t *)&q->used->flags, VRING_USED_F_NO_NOTIFY,
                         __ATOMIC_RELAXED);
        mark_used(q);
    }
}

bool virtq_enable_notify(struct virtq *q)
{
    if (q->event_idx) /* avail_event: notify when the index passes what we took */
        __atomic_store_n((volatile uint16_t *)&q->used->ring[q->size], q->last_avail,
                         __ATOMIC_RELAXED);
    else
        __atomic_store_n((volatile uint16_t *)&q->used->flags, 0, __ATOMIC_RELAXED);
    mark_used(q);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* before looking at avail->idx again */
    return virtq_has_avail(q);
}
