/* virtio-blk under a snapshot (tests/snapshot/): writes blocks of 4 KiB one after another with
 * several requests in flight, printing "blk wrote N" when block N's write completed, so a VM can
 * be snapshotted in the middle of its I/O. Once `blk.blocks` (default 2048) are written it
 * reads every one back, prints "blk verified N" if each holds its pattern, and exits 0.
 * Block N holds words pattern(N, i); `blk.delay_us` (default 200) spaces the submissions. */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_BLOCK 2
#define T_IN            0
#define T_OUT           1
#define F_FLUSH         9
#define INFLIGHT        8
#define BLOCK           4096
#define SECTORS         (BLOCK / 512)

struct req {
    struct {
        uint32_t type, reserved;
        uint64_t sector;
    } hdr;
    uint8_t status;
    uint64_t block;
    bool busy;
};

static struct gvirtio_dev dev;
static struct gvirtq q;
static struct req reqs[INFLIGHT];
static uint8_t data[INFLIGHT][BLOCK] __attribute__((aligned(4096)));

static uint64_t pattern(uint64_t block, uint64_t i)
{
    uint64_t x = (block * 512 + i) * 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 31);
}

static void submit(unsigned slot, uint32_t type, uint64_t block)
{
    struct req *r = &reqs[slot];
    r->hdr.type = type;
    r->hdr.reserved = 0;
    r->hdr.sector = block * SECTORS;
    r->status = 0xee;
    r->block = block;
    r->busy = true;
    if (type == T_OUT)
        for (unsigned i = 0; i < BLOCK / 8; i++)
            ((uint64_t *)data[slot])[i] = pattern(block, i);
    struct gbuf b[3] = {{&r->hdr, sizeof(r->hdr)}, {data[slot], BLOCK}, {&r->status, 1}};
    int head = type == T_OUT ? gvirtq_add(&q, b, 2, 1) : gvirtq_add(&q, b, 1, 2);
    GUEST_ASSERT(head >= 0);
    gvirtq_kick(&q);
}

/* Waits for one completion; returns its slot (found by the data buffer's descriptor). */
static unsigned complete_one(void)
{
    uint16_t head;
    uint32_t len;
    if (!gvirtq_wait_used(&q, &head, &len, 30000))
        guest_fail(__FILE__, __LINE__, "no completion within 30 s");
    uint64_t addr = q.desc[q.desc[head].next].addr;
    for (unsigned s = 0; s < INFLIGHT; s++)
        if (reqs[s].busy && addr == (uintptr_t)data[s]) {
            reqs[s].busy = false;
            if (reqs[s].status != 0)
                guest_fail(__FILE__, __LINE__, "block %lu: status %u", (unsigned long)reqs[s].block,
                           reqs[s].status);
            return s;
        }
    guest_fail(__FILE__, __LINE__, "a completion for no request in flight (head %u)", head);
}

static void write_all(uint64_t blocks, uint64_t delay)
{
    uint64_t next = 0, done = 0;
    for (unsigned s = 0; s < INFLIGHT && next < blocks; s++)
        submit(s, T_OUT, next++);
    while (done < blocks) {
        unsigned s = complete_one();
        guest_printf("blk wrote %lu\n", (unsigned long)reqs[s].block);
        done++;
        guest_udelay(delay);
        if (next < blocks)
            submit(s, T_OUT, next++);
    }
}

static void verify_all(uint64_t blocks)
{
    for (uint64_t b = 0; b < blocks; b++) {
        submit(0, T_IN, b);
        complete_one();
        for (unsigned i = 0; i < BLOCK / 8; i++)
            if (((uint64_t *)data[0])[i] != pattern(b, i))
                guest_fail(__FILE__, __LINE__, "block %lu word %u differs", (unsigned long)b, i);
    }
    guest_printf("blk verified %lu\n", (unsigned long)blocks);
}

void guest_main(void)
{
    uint64_t blocks = guest_cmdline_u64("blk.blocks", 2048);
    uint64_t delay = guest_cmdline_u64("blk.delay_us", 200);
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_BLOCK, 0, &dev));
    GUEST_ASSERT(gvirtio_init(&dev, 1ull << F_FLUSH));
    GUEST_ASSERT(gvirtq_setup(&dev, &q, 0, 64));
    gvirtio_driver_ok(&dev);
    guest_printf("blk: start, %lu blocks\n", (unsigned long)blocks);
    write_all(blocks, delay);
    verify_all(blocks);
}
