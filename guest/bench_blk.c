/* The virtio-blk benchmark guest (virtio 1.2 §5.2; bench/virtio, docs/benchmarks.md): phases of
 * reads or writes on the first block device, each between the marker lines of bench.h. The
 * driver polls the used ring and takes no interrupts: VIRTIO_F_EVENT_IDX is negotiated, as Linux
 * does, and used_event stays 0, so the device interrupts once per 65536 completions (§2.7.10);
 * notifications go out only when the device's avail_event asks for them. What is measured is the
 * device path, the same way on every VMM.
 *
 * Command line:
 *   bench.pN=NAME,OP,KIB,DEPTH,COUNT  phase N: OP randread, randwrite, seqread or seqwrite;
 *                    KIB the request size (a multiple of 4, <= 1024); DEPTH requests in flight
 *                    (1..32, DEPTH * KIB <= 8 MiB); COUNT requests measured
 *   bench.seg_kib=N  data buffers of at most N KiB per request (default 64, as a driver would
 *                    split a request into contiguous pieces)
 *   bench.warmup=N   requests before the begin marker of each phase (default 64)
 * The host wrote each 4 KiB block of the disk with its block number in its first 8 bytes (little
 * endian); reads check that, writes keep it, so every request is checked at little cost. Random
 * requests start at a multiple of their size. Prints "bench: ok" at the end. */
#include "bench.h"
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_BLOCK 2
#define T_IN            0
#define T_OUT           1
#define F_SIZE_MAX      1
#define F_SEG_MAX       2
#define F_BLK_SIZE      6
#define F_FLUSH         9
#define F_TOPOLOGY      10
#define F_EVENT_IDX     29
#define CFG_CAPACITY    0
#define CFG_SIZE_MAX    8
#define CFG_SEG_MAX     12
#define QUEUE_SIZE      128
#define MAX_DEPTH       32
#define MAX_REQ_KIB     1024
#define DATA_BYTES      (8u << 20)
#define BLOCK           4096u
#define MAX_SEGS        (MAX_REQ_KIB / 4)

struct blk_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};

/* One request slot: its header, status byte and data area. */
struct slot {
    struct blk_hdr hdr;
    uint8_t status;
    uint8_t *data;
    uint64_t block; /* the first 4 KiB block of the request */
};

struct phase {
    struct bench_spec spec;
    bool write, sequential;
    uint32_t bytes;
    unsigned depth;
    uint64_t count;
};

struct bench {
    struct gvirtio_dev d;
    struct gvirtq q;
    uint64_t blocks; /* 4 KiB blocks of the disk */
    uint32_t seg_bytes;
    uint32_t seg_max; /* data buffers the device takes per request */
    struct slot slots[MAX_DEPTH];
    unsigned free[MAX_DEPTH], nr_free;
    int slot_of_head[QUEUE_SIZE];
    uint64_t rng, next_seq; /* the next random state, the next sequential block */
};

static uint8_t data[DATA_BYTES] __attribute__((aligned(4096)));

static void bench_open(struct bench *b)
{
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_BLOCK, 0, &b->d));
    /* what Linux's driver negotiates for a plain disk; FLUSH matters: without it a writeback
     * cache must make every write stable (§5.2.6.2) */
    uint64_t want = 1ull << F_SIZE_MAX | 1ull << F_SEG_MAX | 1ull << F_BLK_SIZE | 1ull << F_FLUSH |
                    1ull << F_TOPOLOGY | 1ull << F_EVENT_IDX;
    GUEST_ASSERT(gvirtio_init(&b->d, want));
    GUEST_ASSERT(b->d.features & (1ull << F_EVENT_IDX));
    GUEST_ASSERT(gvirtq_setup(&b->d, &b->q, 0, QUEUE_SIZE));
    gvirtio_driver_ok(&b->d);
    b->blocks = gvirtio_config64(&b->d, CFG_CAPACITY) / (BLOCK / 512);
    b->seg_bytes = (uint32_t)guest_cmdline_u64("bench.seg_kib", 64) * 1024;
    GUEST_ASSERT(b->seg_bytes >= BLOCK && b->seg_bytes % BLOCK == 0);
    if (b->d.features & (1ull << F_SIZE_MAX))
        GUEST_ASSERT(b->seg_bytes <= gvirtio_config32(&b->d, CFG_SIZE_MAX));
    b->seg_max = b->d.features & (1ull << F_SEG_MAX) ? gvirtio_config32(&b->d, CFG_SEG_MAX) : 1;
    b->rng = 0x9e3779b97f4a7c15ull;
    memset(data, 0, sizeof(data)); /* every page touched before anything is measured */
    guest_printf("bench: blk capacity %lu blocks of 4 KiB, features 0x%lx\n",
                 (unsigned long)b->blocks, (unsigned long)b->d.features);
}

/* The fields of a phase whose spec was read. */
static void phase_parse(struct phase *p)
{
    static const char *const ops[] = {"randread", "randwrite", "seqread", "seqwrite"};
    unsigned op = 4;
    for (unsigned i = 0; i < 4; i++)
        if (!strcmp(p->spec.field[0], ops[i]))
            op = i;
    if (op == 4)
        guest_fail(__FILE__, __LINE__, "phase %s: unknown operation '%s'", p->spec.name,
                   p->spec.field[0]);
    p->write = op == 1 || op == 3;
    p->sequential = op >= 2;
    uint64_t kib = bench_field_u64(&p->spec, 1, 4, MAX_REQ_KIB);
    GUEST_ASSERT(kib % 4 == 0);
    p->bytes = (uint32_t)kib * 1024;
    p->depth = (unsigned)bench_field_u64(&p->spec, 2, 1, MAX_DEPTH);
    GUEST_ASSERT((uint64_t)p->depth * p->bytes <= DATA_BYTES);
    p->count = bench_field_u64(&p->spec, 3, 1, 1ull << 40);
}

static void slots_init(struct bench *b, const struct phase *p)
{
    b->nr_free = p->depth;
    for (unsigned i = 0; i < p->depth; i++) {
        b->slots[i].data = data + (uint64_t)i * p->bytes;
        b->free[i] = p->depth - 1 - i;
    }
}

/* The first block of the next request of phase p. */
static uint64_t next_block(struct bench *b, const struct phase *p)
{
    uint64_t per = p->bytes / BLOCK, span = b->blocks / per;
    GUEST_ASSERT(span > 0);
    if (!p->sequential)
        return bench_random(&b->rng) % span * per;
    uint64_t block = b->next_seq % (span * per);
    b->next_seq = block + per;
    return block;
}

/* Header, data in pieces of seg_bytes, status byte; not notified yet. */
static void submit(struct bench *b, const struct phase *p)
{
    GUEST_ASSERT(b->nr_free > 0);
    unsigned i = b->free[--b->nr_free];
    struct slot *s = &b->slots[i];
    s->block = next_block(b, p);
    s->hdr = (struct blk_hdr){.type = p->write ? T_OUT : T_IN, .sector = s->block * (BLOCK / 512)};
    s->status = 0xee;
    if (p->write)
        for (uint32_t off = 0; off < p->bytes; off += BLOCK)
            *(uint64_t *)(s->data + off) = s->block + off / BLOCK;
    struct gbuf bufs[MAX_SEGS + 2];
    unsigned n = 0;
    bufs[n++] = (struct gbuf){&s->hdr, sizeof(s->hdr)};
    for (uint32_t off = 0; off < p->bytes; off += b->seg_bytes) {
        uint32_t len = p->bytes - off < b->seg_bytes ? p->bytes - off : b->seg_bytes;
        bufs[n++] = (struct gbuf){s->data + off, len};
    }
    GUEST_ASSERT(n - 1 <= b->seg_max);
    bufs[n++] = (struct gbuf){&s->status, 1};
    unsigned readable = p->write ? n - 1 : 1;
    int head = gvirtq_add(&b->q, bufs, readable, n - readable);
    GUEST_ASSERT(head >= 0 && head < QUEUE_SIZE);
    b->slot_of_head[head] = (int)i;
}

/* Takes every completion there is; returns how many. */
static unsigned reap(struct bench *b, const struct phase *p)
{
    unsigned n = 0;
    uint16_t head;
    uint32_t len;
    while (gvirtq_get_used(&b->q, &head, &len)) {
        GUEST_ASSERT(head < QUEUE_SIZE && b->slot_of_head[head] >= 0);
        unsigned i = (unsigned)b->slot_of_head[head];
        struct slot *s = &b->slots[i];
        b->slot_of_head[head] = -1;
        if (s->status != 0)
            guest_fail(__FILE__, __LINE__, "phase %s: block %lu: status %u", p->spec.name,
                       (unsigned long)s->block, s->status);
        if (!p->write)
            for (uint32_t off = 0; off < p->bytes; off += BLOCK)
                if (*(uint64_t *)(s->data + off) != s->block + off / BLOCK)
                    guest_fail(__FILE__, __LINE__, "phase %s: block %lu holds the tag %lu",
                               p->spec.name, (unsigned long)(s->block + off / BLOCK),
                               (unsigned long)*(uint64_t *)(s->data + off));
        b->free[b->nr_free++] = i;
        n++;
    }
    return n;
}

/* `count` requests with p->depth in flight: refill all free slots, notify once, poll. */
static void run(struct bench *b, const struct phase *p, uint64_t count)
{
    uint64_t issued = 0, done = 0, progress = rdtsc();
    while (done < count) {
        bool added = false;
        while (b->nr_free > 0 && issued < count) {
            submit(b, p);
            issued++;
            added = true;
        }
        if (added)
            gvirtq_kick(&b->q);
        unsigned got = reap(b, p);
        if (got) {
            done += got;
            progress = rdtsc();
        } else {
            cpu_relax();
            bench_check_stall(progress, p->spec.name);
        }
    }
}

void guest_main(void)
{
    static struct bench b;
    for (unsigned i = 0; i < QUEUE_SIZE; i++)
        b.slot_of_head[i] = -1;
    bench_open(&b);
    uint64_t warmup = guest_cmdline_u64("bench.warmup", 64);
    unsigned n = 0;
    struct phase p;
    for (; bench_spec_get(n, &p.spec); n++) {
        phase_parse(&p);
        slots_init(&b, &p);
        run(&b, &p, warmup);
        uint64_t start = bench_begin(p.spec.name);
        run(&b, &p, p.count);
        bench_end(p.spec.name, start);
        guest_printf("bench: result %s requests %lu bytes %lu\n", p.spec.name,
                     (unsigned long)p.count, (unsigned long)(p.count * p.bytes));
    }
    GUEST_ASSERT(n > 0);
    guest_printf("bench: ok %u phases\n", n);
}
