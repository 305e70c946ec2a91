/* libFuzzer target: the split-virtqueue walker (virtq_pop, virtio 1.2 §2.7) over guest memory
 * made from the input. Every iovec it returns must lie inside one guest RAM region, the counts
 * and lengths must add up, and it must terminate; pushes and notification decisions must stay
 * inside the rings. Between pops the input may change ring memory, as a racing guest would.
 *
 * Each chain also goes through a device's request parser, as the device would hand it on:
 * virtio-blk (vblk_parse_request, §5.2.6), virtio-net transmit (net_tx_parse, §5.1.6.2) or the
 * receive-header fixup (net_rx_hdr_fixup, §5.1.6.4) on the chain's bytes: what they accept must
 * lie inside the chain and the disk, and whatever they write must stay in the buffers.
 *
 * Input: a 4-byte header, then the image of guest RAM. Header: [0] queue size 2^(b % 9),
 * [1] bit 0 INDIRECT_DESC, bit 1 EVENT_IDX, bits 2-7 device flags (read-only drive, huge disk;
 * the net offload features), [2] max iovecs (b % 64) + 1, [3] bits 0-2 guest writes between
 * pops, bits 3-4 the parser (none, blk, net tx, net rx). Guest RAM is two regions with a hole
 * between them (like the 3-4 GiB hole): [0, 16 KiB) holds the descriptor table at 0, the available
 * ring at 0x1000 and the used ring at 0x2000; [64 KiB, 80 KiB) is more RAM. The image fills region
 * 0 then region 1; its last bytes also serve as the guest's writes (offset, value pairs). */
#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvm/guest_mem.h"
#include "virtio/blk_int.h"
#include "virtio/net_int.h"
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

/* A sub-range of one of the chain's iovecs (writable ones if `writable`). */
static bool inside_chain(const struct virtq_chain *c, const void *p, size_t len, bool writable)
{
    const uint8_t *b = p;
    unsigned first = writable ? c->nr_out : 0, end = writable ? c->nr_out + c->nr_in : c->nr_out;
    for (unsigned i = first; i < end; i++) {
        const uint8_t *v = c->iov[i].iov_base;
        if (b >= v && len <= c->iov[i].iov_len && b - v <= (ptrdiff_t)(c->iov[i].iov_len - len))
            return true;
    }
    return false;
}

static void fuzz_blk(const struct virtq_chain *c, uint8_t flags)
{
    struct vblk_limits lim = {
        .capacity = flags & 8 ? UINT64_MAX >> 9 : 2048,
        .read_only = flags & 4,
        .max_discard_sectors = VBLK_MAX_DWZ_SECTORS,
        .max_discard_seg = VBLK_MAX_DWZ_SEG,
        .max_write_zeroes_sectors = VBLK_MAX_DWZ_SECTORS,
        .max_write_zeroes_seg = VBLK_MAX_DWZ_SEG,
    };
    struct iovec data[MAX_IOV];
    struct vblk_request r;
    struct wisp_err err = {0};
    int st = vblk_parse_request(c, &lim, data, &r, &err);
    if (st < 0) { /* no status byte: the device needs a reset */
        if (c->nr_in || !err.msg[0])
            abort();
        return;
    }
    if (!r.status || !inside_chain(c, r.status, 1, true))
        abort();
    if (st != VIRTIO_BLK_S_OK) {
        *r.status = (uint8_t)st;
        return;
    }
    bool in = r.type == VIRTIO_BLK_T_IN || r.type == VIRTIO_BLK_T_GET_ID;
    uint64_t sum = 0;
    for (unsigned i = 0; i < r.nr_data; i++) {
        /* inside the chain (a guest may make buffers overlap: that stays in its RAM) */
        if (!inside_chain(c, r.data[i].iov_base, r.data[i].iov_len, in))
            abort();
        sum += r.data[i].iov_len;
        if (in) /* the device writes the data */
            memset(r.data[i].iov_base, 0, r.data[i].iov_len);
    }
    /* the data is the chain without the header and the status byte */
    if (r.type != VIRTIO_BLK_T_FLUSH &&
        (sum != r.data_len || r.data_len != (in ? c->in_len - 1 : c->out_len - 16)))
        abort();
    if (r.type == VIRTIO_BLK_T_IN || r.type == VIRTIO_BLK_T_OUT) {
        if (r.data_len % VBLK_SECTOR_SIZE || r.sector > lim.capacity ||
            r.data_len / VBLK_SECTOR_SIZE > lim.capacity - r.sector ||
            (lim.read_only && r.type == VIRTIO_BLK_T_OUT))
            abort();
    }
    for (unsigned i = 0; i < r.nr_segments; i++)
        if (r.nr_segments > VBLK_MAX_DWZ_SEG || r.segments[i].sector > lim.capacity ||
            r.segments[i].num_sectors > lim.capacity - r.segments[i].sector || lim.read_only)
            abort();
    *r.status = VIRTIO_BLK_S_OK;
}

static uint64_t net_features(uint8_t flags)
{
    return (flags & 4 ? 1ull << VIRTIO_NET_F_CSUM : 0) |
           (flags & 8 ? 1ull << VIRTIO_NET_F_GUEST_CSUM : 0) |
           (flags & 16 ? 1ull << VIRTIO_NET_F_HOST_TSO4 | 1ull << VIRTIO_NET_F_HOST_TSO6 : 0) |
           (flags & 32 ? 1ull << VIRTIO_NET_F_HOST_UFO : 0) |
           (flags & 64 ? 1ull << VIRTIO_NET_F_GUEST_TSO4 | 1ull << VIRTIO_NET_F_GUEST_UFO : 0) |
           (flags & 128 ? 1ull << VIRTIO_NET_F_GUEST_ECN | 1ull << VIRTIO_NET_F_MRG_RXBUF : 0);
}

/* A transmit chain: what is accepted is a frame inside the chain, copied out as for the tap. */
static void fuzz_net_tx(const struct virtq_chain *c, uint8_t flags, unsigned max_iov)
{
    struct net_tx_frame f;
    struct iovec data[MAX_IOV];
    const char *why = NULL;
    int n = net_tx_parse(c->iov, c->nr_out, c->nr_in, net_features(flags), &f, data, max_iov, &why);
    if (n < 0) {
        if (!why)
            abort();
        return;
    }
    size_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (!inside_chain(c, data[i].iov_base, data[i].iov_len, false))
            abort();
        sum += data[i].iov_len;
    }
    if ((unsigned)n > max_iov || sum != f.len || f.len < NET_ETH_HLEN ||
        f.len + NET_HDR_LEN > NET_MAX_LEN || f.hdr.num_buffers)
        abort();
    uint8_t *frame = malloc(f.len);
    if (!frame || net_iov_to_buf(data, (unsigned)n, 0, frame, f.len) != f.len)
        abort();
    free(frame);
}

/* A frame as the tap would deliver it (header + frame, here the chain's readable bytes, in a
 * buffer of exactly that size): the fixup may change the header and the frame, nothing else. */
static void fuzz_net_rx(const struct virtq_chain *c, uint8_t flags)
{
    if (c->out_len < NET_HDR_LEN || c->out_len > NET_MAX_LEN)
        return;
    size_t len = (size_t)c->out_len - NET_HDR_LEN;
    struct virtio_net_hdr_v1 h;
    uint8_t *frame = malloc(len ? len : 1);
    if (!frame)
        abort();
    net_iov_to_buf(c->iov, c->nr_out, 0, &h, NET_HDR_LEN);
    net_iov_to_buf(c->iov, c->nr_out, NET_HDR_LEN, frame, len);
    const char *why = NULL;
    if (net_rx_hdr_fixup(&h, frame, len, net_features(flags), &why) < 0 && !why)
        abort();
    free(frame);
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
    unsigned max_iov = data[2] % MAX_IOV + 1, writes = data[3] % 8, parser = data[3] >> 3 & 3;
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
        if (parser == 1)
            fuzz_blk(&c, data[1]);
        else if (parser == 2)
            fuzz_net_tx(&c, data[1], max_iov);
        else if (parser == 3)
            fuzz_net_rx(&c, data[1]);
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
