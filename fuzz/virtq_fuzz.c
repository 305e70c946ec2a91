/* libFuzzer target: the split-virtqueue walker (virtq_pop, virtio 1.2 §2.7) over guest memory
 * made from the input. Every iovec it returns must lie inside one guest RAM region, the counts
 * and lengths must add up, and it must terminate; pushes and notification decisions must stay
 * inside the rings. Between pops the input may change ring memory, as a racing guest would.
 *
 * Input: a 4-byte header, then the image of guest RAM. Header: [0] queue size 2^(b % 9),
 * [1] bit 0 INDIRECT_DESC, bit 1 EVENT_IDX, [2] max iovecs (b % 64) + 1, [3] guest writes
 * between pops (b % 8). Guest RAM is two regions with a hole between them (like the 3-4 GiB
 * hole): [0, 16 KiB) holds the descriptor table at 0, the available ring at 0x1000 and the
 * used ring at 0x2000; [64 KiB, 80 KiB) is more RAM. The image fills region 0 then region 1;
 * its last bytes also serve as the guest's writes (offset, value pairs). */
#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvm/guest_mem.h"
#include "virtio/virtq.h"

#define REGION0_SIZE 0x4000
#define REGION1_GPA  0x10000
#define REGION1_SIZE 0x4000
#define DESC_GPA     0x0
#define AVAIL_GPA    0x1000
#define USED_GPA     0x2000
#define HEADER       4
#define MAX_IOV      64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A guest_mem whose regions are exactly-sized heap blocks, so that ASan sees any access
 * outside them. */
static void make_mem(struct guest_mem *mem, const uint8_t *image, size_t len)
{
    static const uint64_t gpas[2] = {0, REGION1_GPA}, sizes[2] = {REGION0_SIZE, REGION1_SIZE};
    memset(mem, 0, sizeof(*mem));
    for (unsigned i = 0; i < 2; i++) {
        uint8_t *p = calloc(1, sizes[i]);
        if (!p)
            abort();
        size_t n = len < sizes[i] ? len : sizes[i];
        memcpy(p, image, n);
        image += n;
        len -= n;
        mem->regions[i] = (struct guest_mem_region){.gpa = gpas[i], .size = sizes[i], .hva = p};
    }
    mem->nr_regions = 2;
    mem->total = REGION0_SIZE + REGION1_SIZE;
}

static bool inside_ram(const struct guest_mem *mem, const struct iovec *v)
{
    const uint8_t *p = v->iov_base;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        const struct guest_mem_region *r = &mem->regions[i];
        if (p >= r->hva && v->iov_len <= r->size && p - r->hva <= (ptrdiff_t)(r->size - v->iov_len))
            return true;
    }
    return false;
}

/* Checks a popped chain against the walker's promises (virtq.h). */
static void check_chain(const struct guest_mem *mem, const struct virtq *q,
                        const struct virtq_chain *c, unsigned max_iov)
{
    if (c->head >= q->size || c->nr_out + c->nr_in > max_iov)
        abort();
    uint64_t out = 0, in = 0;
    for (unsigned i = 0; i < c->nr_out + c->nr_in; i++) {
        if (c->iov[i].iov_len == 0 || !inside_ram(mem, &c->iov[i]))
            abort();
        if (i < c->nr_out)
            out += c->iov[i].iov_len;
        else
            in += c->iov[i].iov_len;
        volatile const uint8_t *p = c->iov[i].iov_base; /* touch both ends: ASan checks them */
        (void)p[0];
        (void)p[c->iov[i].iov_len - 1];
    }
    if (out != c->out_len || in != c->in_len)
        abort();
}

/* The guest writes one byte of its rings (or buffers) between two pops. */
static void guest_write(const struct guest_mem *mem, const uint8_t *w)
{
    uint16_t off = (uint16_t)(w[0] | w[1] << 8) % REGION0_SIZE;
    mem->regions[0].hva[off] = w[2];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    struct guest_mem mem;
    make_mem(&mem, data + HEADER, size - HEADER);
    uint64_t features = (1ull << VIRTIO_F_VERSION_1) |
                        (data[1] & 1 ? 1ull << VIRTIO_RING_F_INDIRECT_DESC : 0) |
                        (data[1] & 2 ? 1ull << VIRTIO_RING_F_EVENT_IDX : 0);
    unsigned max_iov = data[2] % MAX_IOV + 1, writes = data[3] % 8;
    struct virtq q = {.name = "fuzz", .size = (uint16_t)(1u << (data[0] % 9)), .ready = true};
    q.desc_gpa = DESC_GPA;
    q.avail_gpa = AVAIL_GPA;
    q.used_gpa = USED_GPA;
    struct wisp_err err = {0};
    if (virtq_activate(&q, &mem, features, &err) < 0)
        abort();                         /* the fixed layout is always valid */
    const uint8_t *script = data + size; /* guest writes come from the input's end */
    size_t script_left = size - HEADER;
    struct iovec iov[MAX_IOV];
    /* a walk that never ends, or more pops than the ring can hold, is a bug */
    for (unsigned round = 0; round < 2u * q.size + 2; round++) {
        struct virtq_chain c;
        int r = virtq_pop(&q, &c, iov, max_iov, &err);
        if (r < 0) {
            if (!err.msg[0] || memchr(err.msg, 0, sizeof(err.msg)) == NULL)
                abort();     /* a failure always says what is wrong */
            if (r == -E2BIG) /* not broken: the device fails the request (virtio_needs_reset) */
                break;
            if (virtq_has_avail(&q) || virtq_pop(&q, &c, iov, max_iov, &err) >= 0)
                abort(); /* broken until reset */
            break;
        }
        if (r == 0) {
            if (virtq_enable_notify(&q) != virtq_has_avail(&q))
                abort();
            break;
        }
        check_chain(&mem, &q, &c, max_iov);
        virtq_push(&q, c.head, (uint32_t)c.in_len);
        (void)virtq_should_notify(&q);
        if (round % 2)
            virtq_disable_notify(&q);
        for (unsigned i = 0; i < writes && script_left >= 3; i++, script_left -= 3)
            guest_write(&mem, script -= 3);
    }
    for (unsigned i = 0; i < mem.nr_regions; i++)
        free(mem.regions[i].hva);
    return 0;
}
