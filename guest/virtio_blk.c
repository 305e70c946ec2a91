/* virtio-blk from ring 3 (virtio 1.2 §5.2): one guest, several tests, chosen by "blk.mode=" on
 * the command line; tests/virtio/virtio_test.py prepares the images and checks them on the
 * host after the VM ended. Data follows pattern_word() (the host's copy is in the runner).
 *   rw        config, GET_ID (blk.serial=), reads of the host's pattern (blk.tag=) in many
 *             shapes, writes of the guest's pattern (tag 0x77) at sector 4096, flush, requests
 *             at and beyond the end (blk.sectors= is the expected capacity), the interrupt;
 *             blk.noflush=1 leaves VIRTIO_BLK_F_FLUSH out of the negotiation;
 *             blk.skipflush=1 negotiates it but sends no FLUSH
 *   discard   discard, write-zeroes with and without UNMAP, the segment limits
 *   ro        a read-only drive: reads work; writes, discards, write-zeroes fail with IOERR
 *   two       two drives told apart by serial (blk.serial= and blk.serial2=), each written;
 *             blk.probed=1: the first is a guessed raw image whose sector 0 stays raw
 *   mq        every queue of a multiqueue drive (blk.queues=), requests on all at once
 *   many      blk.count= requests in flight (throttling: the host measures the time)
 *   malformed malformed chains: the request fails or the device needs a reset; after a reset
 *             the drive works again. blk.strict=1 asks for wisp's exact answers.
 * Prints "blk: ok" at the end. */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_BLOCK    2
#define T_IN               0
#define T_OUT              1
#define T_FLUSH            4
#define T_GET_ID           8
#define T_DISCARD          11
#define T_WRITE_ZEROES     13
#define S_OK               0
#define S_IOERR            1
#define S_UNSUPP           2
#define F_SIZE_MAX         1
#define F_SEG_MAX          2
#define F_RO               5
#define F_BLK_SIZE         6
#define F_FLUSH            9
#define F_TOPOLOGY         10
#define F_MQ               12
#define F_DISCARD          13
#define F_WRITE_ZEROES     14
#define STATUS_NEEDS_RESET 0x40

/* configuration space offsets (§5.2.4) */
#define CFG_CAPACITY     0
#define CFG_SEG_MAX      12
#define CFG_BLK_SIZE     20
#define CFG_NUM_QUEUES   34
#define CFG_MAX_DISCARD  36
#define CFG_DISCARD_SEG  40
#define CFG_MAX_WZ       48
#define CFG_WZ_SEG       52
#define CFG_WZ_MAY_UNMAP 56

#define MAX_QUEUES 8
#define QUEUE_SIZE 128
#define MAX_BUFS   32
#define TIMEOUT_MS 20000
#define GUEST_TAG  0x77

struct blk {
    struct gvirtio_dev d;
    struct gvirtq q[MAX_QUEUES];
    unsigned nr_queues;
    uint64_t capacity;
};

struct blk_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};

struct blk_seg {
    uint64_t sector;
    uint32_t num_sectors, flags;
};

/* A request's header and status byte (one per request in flight). */
struct slot {
    struct blk_hdr hdr;
    uint8_t status;
};

static struct slot slots[QUEUE_SIZE * MAX_QUEUES];
static uint8_t buf[1 << 20] __attribute__((aligned(4096)));
static uint8_t buf2[256 << 10] __attribute__((aligned(4096)));

/* ---- the pattern the host and the guest write (keep in step with virtio_test.py) ----- */

static uint64_t pattern_word(uint64_t offset, uint64_t tag)
{
    uint64_t x = (offset ^ (tag << 56)) * 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 29);
}

static void pattern_fill(void *p, uint64_t offset, uint64_t len, uint64_t tag)
{
    uint64_t *w = p;
    for (uint64_t i = 0; i < len / 8; i++)
        w[i] = pattern_word(offset + 8 * i, tag);
}

static void pattern_check(const void *p, uint64_t offset, uint64_t len, uint64_t tag)
{
    const uint64_t *w = p;
    for (uint64_t i = 0; i < len / 8; i++)
        if (w[i] != pattern_word(offset + 8 * i, tag))
            guest_fail(__FILE__, __LINE__, "pattern %lu differs at disk offset %lu",
                       (unsigned long)tag, (unsigned long)(offset + 8 * i));
}

static void zero_check(const void *p, uint64_t len)
{
    const uint8_t *b = p;
    for (uint64_t i = 0; i < len; i++)
        if (b[i])
            guest_fail(__FILE__, __LINE__, "byte %lu is 0x%x, not 0", (unsigned long)i, b[i]);
}

/* ---- the driver ----------------------------------------------------------------------- */

static bool blk_feature(const struct blk *b, unsigned bit)
{
    return (b->d.features >> bit) & 1;
}

/* Finds the nth block device and sets up nr_queues queues (MQ negotiated when > 1). */
static void blk_open(struct blk *b, unsigned nth, unsigned nr_queues)
{
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_BLOCK, nth, &b->d));
    uint64_t want = (1ull << F_SIZE_MAX) | (1ull << F_SEG_MAX) | (1ull << F_RO) |
                    (1ull << F_BLK_SIZE) | (1ull << F_TOPOLOGY) | (1ull << F_DISCARD) |
                    (1ull << F_WRITE_ZEROES);
    if (!guest_cmdline_u64("blk.noflush", 0)) /* without FLUSH every write is stable */
        want |= 1ull << F_FLUSH;
    if (nr_queues > 1)
        want |= 1ull << F_MQ;
    GUEST_ASSERT(gvirtio_init(&b->d, want));
    b->nr_queues = nr_queues;
    for (unsigned i = 0; i < nr_queues; i++)
        GUEST_ASSERT(gvirtq_setup(&b->d, &b->q[i], i, QUEUE_SIZE));
    gvirtio_driver_ok(&b->d);
    b->capacity = gvirtio_config64(&b->d, CFG_CAPACITY);
}

/* Adds one request: the header (readable), the data buffers (writable or readable), the status
 * byte (writable). Does not notify. */
static void blk_add(struct blk *b, unsigned qi, struct slot *s, uint32_t type, uint64_t sector,
                    const struct gbuf *data, unsigned n, bool writable)
{
    struct gbuf bufs[MAX_BUFS + 2];
    GUEST_ASSERT(n <= MAX_BUFS);
    s->hdr = (struct blk_hdr){.type = type, .sector = sector};
    s->status = 0xee;
    bufs[0] = (struct gbuf){&s->hdr, sizeof(s->hdr)};
    for (unsigned i = 0; i < n; i++)
        bufs[1 + i] = data[i];
    bufs[1 + n] = (struct gbuf){&s->status, 1};
    GUEST_ASSERT(gvirtq_add(&b->q[qi], bufs, writable ? 1 : n + 1, writable ? n + 1 : 1) >= 0);
}

static uint32_t blk_wait(struct blk *b, unsigned qi)
{
    uint16_t head;
    uint32_t len;
    if (!gvirtq_wait_used(&b->q[qi], &head, &len, TIMEOUT_MS))
        guest_fail(__FILE__, __LINE__, "queue %u: no completion within %u ms", qi, TIMEOUT_MS);
    return len;
}

/* One request with its data in n buffers; returns the status byte (used length in *used). */
static uint8_t blk_vec(struct blk *b, unsigned qi, uint32_t type, uint64_t sector,
                       const struct gbuf *data, unsigned n, bool writable, uint32_t *used)
{
    struct slot *s = &slots[0];
    blk_add(b, qi, s, type, sector, data, n, writable);
    gvirtq_kick(&b->q[qi]);
    uint32_t len = blk_wait(b, qi);
    if (used)
        *used = len;
    return s->status;
}

static uint8_t blk_io(struct blk *b, uint32_t type, uint64_t sector, void *data, uint32_t len)
{
    struct gbuf g = {data, len};
    bool writable = type == T_IN || type == T_GET_ID;
    return blk_vec(b, 0, type, sector, &g, len ? 1 : 0, writable, NULL);
}

static uint8_t blk_segments(struct blk *b, uint32_t type, const struct blk_seg *segs, unsigned n)
{
    static struct blk_seg copy[64];
    for (unsigned i = 0; i < n; i++)
        copy[i] = segs[i];
    return blk_io(b, type, 0, copy, n * (uint32_t)sizeof(copy[0]));
}

static void expect_status(uint8_t got, uint8_t want, const char *what)
{
    if (got != want)
        guest_fail(__FILE__, __LINE__, "%s: status %u, expected %u", what, got, want);
}

static void check_serial(struct blk *b, const char *key)
{
    char want[24] = {0}, id[21] = {0};
    guest_cmdline_get(key, want, sizeof(want));
    expect_status(blk_io(b, T_GET_ID, 0, id, 20), S_OK, "GET_ID");
    guest_printf("blk: serial '%s'\n", id);
    GUEST_ASSERT(!strncmp(id, want, 20));
}

/* ---- rw -------------------------------------------------------------------------------- */

/* The host's pattern (sectors 0..2047) read in different shapes. */
static void rw_reads(struct blk *b, uint64_t tag)
{
    expect_status(blk_io(b, T_IN, 0, buf, 512), S_OK, "read sector 0");
    pattern_check(buf, 0, 512, tag);
    expect_status(blk_io(b, T_IN, 7, buf, 4096), S_OK, "read 4 KiB at sector 7");
    pattern_check(buf, 7 * 512, 4096, tag);
    /* 64 KiB in 16 buffers of 4 KiB (a chain of 18 descriptors) */
    struct gbuf g[16];
    for (unsigned i = 0; i < 16; i++)
        g[i] = (struct gbuf){buf + i * 4096, 4096};
    uint32_t used;
    expect_status(blk_vec(b, 0, T_IN, 100, g, 16, true, &used), S_OK, "read 64 KiB in 16");
    pattern_check(buf, 100 * 512, 65536, tag);
    GUEST_ASSERT(used >= 65536 + 1);
    /* 1 MiB in buffers of odd sizes (multiples of 512, not of 4096) */
    static const uint32_t sizes[] = {512, 1536, 3584, 4608, 65024, 172032, 801280};
    uint32_t off = 0;
    for (unsigned i = 0; i < 7; i++) {
        g[i] = (struct gbuf){buf + off, sizes[i]};
        off += sizes[i];
    }
    GUEST_ASSERT_EQ(off, 1 << 20);
    expect_status(blk_vec(b, 0, T_IN, 0, g, 7, true, NULL), S_OK, "read 1 MiB");
    pattern_check(buf, 0, 1 << 20, tag);
}

/* The guest's pattern at sectors 4096.. (2 MiB), written in pieces, flushed, read back. */
static void rw_writes(struct blk *b)
{
    const uint64_t base = 4096ull * 512;
    pattern_fill(buf, base, 1 << 20, GUEST_TAG);
    expect_status(blk_io(b, T_OUT, 4096, buf, 512), S_OK, "write 512");
    expect_status(blk_io(b, T_OUT, 4097, buf + 512, 3584), S_OK, "write 3584");
    struct gbuf g[8];
    for (unsigned i = 0; i < 8; i++)
        g[i] = (struct gbuf){buf + 4096 + i * 8192, 8192};
    expect_status(blk_vec(b, 0, T_OUT, 4104, g, 8, false, NULL), S_OK, "write 64 KiB in 8");
    expect_status(blk_io(b, T_OUT, 4232, buf + 69632, (1 << 20) - 69632), S_OK, "write rest");
    pattern_fill(buf2, base + (1 << 20), 256 << 10, GUEST_TAG);
    for (unsigned i = 0; i < 4; i++)
        expect_status(blk_io(b, T_OUT, 6144 + i * 128, buf2 + i * 65536, 65536), S_OK, "write");
    /* blk.skipflush=1: FLUSH negotiated but never sent, as a guest that ends without syncing */
    if (blk_feature(b, F_FLUSH) && !guest_cmdline_u64("blk.skipflush", 0))
        expect_status(blk_io(b, T_FLUSH, 0, NULL, 0), S_OK, "flush");
    memset(buf, 0, 1 << 20);
    expect_status(blk_io(b, T_IN, 4096, buf, 1 << 20), S_OK, "read back");
    pattern_check(buf, base, 1 << 20, GUEST_TAG);
    expect_status(blk_io(b, T_IN, 6144, buf, 256 << 10), S_OK, "read back");
    pattern_check(buf, base + (1 << 20), 256 << 10, GUEST_TAG);
}

/* The last sector reads; one byte of sector beyond it, or an overflowing sector, is IOERR. */
static void rw_bounds(struct blk *b)
{
    uint64_t n = b->capacity;
    expect_status(blk_io(b, T_IN, n - 1, buf, 512), S_OK, "read the last sector");
    expect_status(blk_io(b, T_IN, n - 1, buf, 1024), S_IOERR, "read across the end");
    expect_status(blk_io(b, T_IN, n, buf, 512), S_IOERR, "read at the end");
    expect_status(blk_io(b, T_OUT, n, buf, 512), S_IOERR, "write at the end");
    expect_status(blk_io(b, T_IN, ~0ull >> 9, buf, 4096), S_IOERR, "sector * 512 overflows");
    expect_status(blk_io(b, T_IN, ~0ull, buf, 512), S_IOERR, "sector + 1 overflows");
    expect_status(blk_io(b, T_IN, 0, buf, 100), S_IOERR, "100-byte read");
}

static void mode_rw(struct blk *b)
{
    blk_open(b, 0, 1);
    gvirtio_irq_route(&b->d, 0x41);
    guest_printf("blk: capacity %lu seg_max %u blk_size %u features 0x%lx\n",
                 (unsigned long)b->capacity, gvirtio_config32(&b->d, CFG_SEG_MAX),
                 gvirtio_config32(&b->d, CFG_BLK_SIZE), (unsigned long)b->d.features);
    GUEST_ASSERT_EQ(b->capacity, guest_cmdline_u64("blk.sectors", 0));
    GUEST_ASSERT(blk_feature(b, F_SEG_MAX) && !blk_feature(b, F_RO));
    GUEST_ASSERT(blk_feature(b, F_FLUSH) == !guest_cmdline_u64("blk.noflush", 0));
    GUEST_ASSERT(gvirtio_config32(&b->d, CFG_SEG_MAX) >= 16);
    GUEST_ASSERT_EQ(gvirtio_config32(&b->d, CFG_BLK_SIZE), 512);
    check_serial(b, "blk.serial");
    /* the completion raises the line right after the used element (once per batch) */
    for (unsigned i = 0; i < 10000 && !gvirtio_irq_pending(0x41); i++)
        guest_udelay(100);
    GUEST_ASSERT(gvirtio_irq_pending(0x41));
    rw_reads(b, guest_cmdline_u64("blk.tag", 1));
    rw_writes(b);
    rw_bounds(b);
}

/* ---- discard / write-zeroes ------------------------------------------------------------ */

/* 1 MiB each: D discarded, Z1 write-zeroes with UNMAP, Z2 without, M discarded in 2 segments. */
#define SEC_D  8192
#define SEC_Z1 10240
#define SEC_Z2 12288
#define SEC_M  14336
#define RANGE  2048

static void mode_discard(struct blk *b)
{
    blk_open(b, 0, 1);
    GUEST_ASSERT(blk_feature(b, F_DISCARD) && blk_feature(b, F_WRITE_ZEROES));
    uint32_t max_dseg = gvirtio_config32(&b->d, CFG_DISCARD_SEG);
    uint32_t max_dsec = gvirtio_config32(&b->d, CFG_MAX_DISCARD);
    uint32_t max_zseg = gvirtio_config32(&b->d, CFG_WZ_SEG);
    uint32_t max_zsec = gvirtio_config32(&b->d, CFG_MAX_WZ);
    guest_printf("blk: discard %u x %u sectors, write-zeroes %u x %u, may_unmap %u\n", max_dseg,
                 max_dsec, max_zseg, max_zsec, gvirtio_config8(&b->d, CFG_WZ_MAY_UNMAP));
    GUEST_ASSERT(max_dseg >= 1 && max_zseg >= 1 && max_dsec >= RANGE && max_zsec >= RANGE);
    struct blk_seg s[64];
    s[0] = (struct blk_seg){SEC_D, RANGE, 0};
    expect_status(blk_segments(b, T_DISCARD, s, 1), S_OK, "discard");
    s[0] = (struct blk_seg){SEC_Z1, RANGE, 1};
    expect_status(blk_segments(b, T_WRITE_ZEROES, s, 1), S_OK, "write-zeroes, unmap");
    s[0] = (struct blk_seg){SEC_Z2, RANGE, 0};
    expect_status(blk_segments(b, T_WRITE_ZEROES, s, 1), S_OK, "write-zeroes");
    for (unsigned sec = SEC_Z1; sec < SEC_Z2 + RANGE; sec += 2048) {
        memset(buf, 0xa5, 1 << 20);
        expect_status(blk_io(b, T_IN, sec, buf, 1 << 20), S_OK, "read zeroes");
        zero_check(buf, 1 << 20);
    }
    /* several segments in one request, as the limit allows */
    unsigned n = max_dseg >= 2 ? 2 : 1;
    for (unsigned i = 0; i < n; i++)
        s[i] = (struct blk_seg){SEC_M + i * (RANGE / n), RANGE / n, 0};
    expect_status(blk_segments(b, T_DISCARD, s, n), S_OK, "discard in segments");
    /* the limits (§5.2.6.2) */
    s[0] = (struct blk_seg){SEC_D, 8, 1};
    expect_status(blk_segments(b, T_DISCARD, s, 1), S_UNSUPP, "discard with UNMAP");
    s[0] = (struct blk_seg){SEC_D, 8, 2};
    expect_status(blk_segments(b, T_WRITE_ZEROES, s, 1), S_UNSUPP, "unknown flag");
    for (unsigned i = 0; i <= max_dseg && i < 64; i++)
        s[i] = (struct blk_seg){SEC_D + i, 1, 0};
    if (max_dseg < 64)
        expect_status(blk_segments(b, T_DISCARD, s, max_dseg + 1), S_UNSUPP, "segments");
    s[0] = (struct blk_seg){0, max_zsec + 1, 0};
    expect_status(blk_segments(b, T_WRITE_ZEROES, s, 1), S_IOERR, "too many sectors");
    s[0] = (struct blk_seg){b->capacity - 1, 2, 0};
    expect_status(blk_segments(b, T_DISCARD, s, 1), S_IOERR, "discard across the end");
    expect_status(blk_io(b, T_FLUSH, 0, NULL, 0), S_OK, "flush");
}

/* ---- read-only ------------------------------------------------------------------------- */

static void mode_ro(struct blk *b)
{
    blk_open(b, 0, 1);
    GUEST_ASSERT(blk_feature(b, F_RO));
    check_serial(b, "blk.serial");
    expect_status(blk_io(b, T_IN, 0, buf, 65536), S_OK, "read");
    pattern_check(buf, 0, 65536, guest_cmdline_u64("blk.tag", 1));
    pattern_fill(buf, 0, 65536, GUEST_TAG);
    expect_status(blk_io(b, T_OUT, 0, buf, 65536), S_IOERR, "write");
    expect_status(blk_io(b, T_OUT, 1000, buf, 512), S_IOERR, "write");
    /* the drive offers neither DISCARD nor WRITE_ZEROES; wisp fails them as writes, QEMU
     * (discard=ignore) may complete them doing nothing: the host checks the file */
    bool strict = guest_cmdline_u64("blk.strict", 0);
    struct blk_seg s = {0, 64, 0};
    uint8_t st = blk_segments(b, T_DISCARD, &s, 1);
    GUEST_ASSERT(st == S_IOERR || (!strict && st == S_OK));
    s.flags = 1;
    st = blk_segments(b, T_WRITE_ZEROES, &s, 1);
    GUEST_ASSERT(st == S_IOERR || (!strict && st == S_OK));
    expect_status(blk_io(b, T_FLUSH, 0, NULL, 0), S_OK, "flush");
    expect_status(blk_io(b, T_IN, 0, buf, 65536), S_OK, "read");
    pattern_check(buf, 0, 65536, guest_cmdline_u64("blk.tag", 1));
}

/* ---- two drives ------------------------------------------------------------------------ */

static void mode_two(struct blk *b)
{
    static struct blk second;
    struct blk *drives[2] = {b, &second};
    char want[2][24] = {{0}}, id[21];
    guest_cmdline_get("blk.serial", want[0], sizeof(want[0]));
    guest_cmdline_get("blk.serial2", want[1], sizeof(want[1]));
    GUEST_ASSERT(!gvirtio_find(VIRTIO_ID_BLOCK, 2, &second.d));
    for (unsigned i = 0; i < 2; i++) {
        struct blk *d = drives[i];
        blk_open(d, i, 1);
        memset(id, 0, sizeof(id));
        expect_status(blk_io(d, T_GET_ID, 0, id, 20), S_OK, "GET_ID");
        unsigned which = !strncmp(id, want[0], 20) ? 0 : !strncmp(id, want[1], 20) ? 1 : 2;
        guest_printf("blk: device %u at 0x%lx is '%s'\n", i, (unsigned long)d->d.base, id);
        GUEST_ASSERT(which < 2);
        uint64_t tag = which + 1; /* the host wrote tag 1 on the first image, 2 on the second */
        expect_status(blk_io(d, T_IN, 0, buf, 65536), S_OK, "read");
        pattern_check(buf, 0, 65536, tag);
        pattern_fill(buf, 100 * 512, 4096, GUEST_TAG + tag);
        expect_status(blk_io(d, T_OUT, 100, buf, 4096), S_OK, "write");
        if (which == 0 && guest_cmdline_u64("blk.probed", 0)) {
            /* a guessed raw image: sector 0 may not become a qcow2 header (as QEMU) */
            static const uint8_t qcow2[8] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
            memset(buf, 0, 512);
            memcpy(buf, qcow2, sizeof(qcow2));
            expect_status(blk_io(d, T_OUT, 0, buf, 512), S_IOERR, "qcow2 header to sector 0");
            pattern_fill(buf, 0, 4096, GUEST_TAG + tag);
            expect_status(blk_io(d, T_OUT, 0, buf, 4096), S_OK, "write sector 0");
        }
    }
}

/* ---- multiqueue ------------------------------------------------------------------------ */

/* Queue q writes 64 KiB at sector 4096 + 128 q, all queues at once, then reads back on
 * another queue. */
static void mode_mq(struct blk *b)
{
    unsigned want = (unsigned)guest_cmdline_u64("blk.queues", 2);
    GUEST_ASSERT(want >= 2 && want <= MAX_QUEUES);
    blk_open(b, 0, want);
    GUEST_ASSERT(blk_feature(b, F_MQ));
    GUEST_ASSERT_EQ(gvirtio_config16(&b->d, CFG_NUM_QUEUES), want);
    for (unsigned q = 0; q < want; q++) {
        pattern_fill(buf + q * 65536, (4096 + 128 * q) * 512ull, 65536, GUEST_TAG);
        struct gbuf g = {buf + q * 65536, 65536};
        blk_add(b, q, &slots[q], T_OUT, 4096 + 128 * q, &g, 1, false);
    }
    for (unsigned q = 0; q < want; q++)
        gvirtq_kick(&b->q[q]);
    for (unsigned q = 0; q < want; q++) {
        blk_wait(b, q);
        expect_status(slots[q].status, S_OK, "write on a queue");
    }
    for (unsigned q = 0; q < want; q++) {
        struct gbuf g = {buf2, 65536};
        unsigned other = (q + 1) % want;
        memset(buf2, 0, 65536);
        expect_status(blk_vec(b, other, T_IN, 4096 + 128 * q, &g, 1, true, NULL), S_OK, "read");
        pattern_check(buf2, (4096 + 128 * q) * 512ull, 65536, GUEST_TAG);
    }
    guest_printf("blk: %u queues\n", want);
}

/* ---- many requests in flight ----------------------------------------------------------- */

static void mode_many(struct blk *b)
{
    blk_open(b, 0, 1);
    unsigned count = (unsigned)guest_cmdline_u64("blk.count", 32);
    GUEST_ASSERT(count <= QUEUE_SIZE / 3);
    for (unsigned i = 0; i < count; i++) {
        struct gbuf g = {buf + i * 4096, 4096};
        blk_add(b, 0, &slots[i], T_IN, i * 8, &g, 1, true);
    }
    gvirtq_kick(&b->q[0]);
    for (unsigned i = 0; i < count; i++)
        blk_wait(b, 0);
    for (unsigned i = 0; i < count; i++)
        expect_status(slots[i].status, S_OK, "read");
    pattern_check(buf, 0, count * 4096ull, guest_cmdline_u64("blk.tag", 1));
    guest_printf("blk: %u requests done\n", count);
}

/* ---- malformed requests ---------------------------------------------------------------- */

enum outcome {
    DONE_OK = 1 << S_OK,
    DONE_IOERR = 1 << S_IOERR,
    DONE_UNSUPP = 1 << S_UNSUPP,
    NEEDS_RESET = 1 << 8
};

/* Descriptor i of a fresh queue (whose free list is 0, 1, 2, ...). */
static void put_desc(struct gvirtq *q, unsigned i, const void *addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    q->desc[i] =
        (struct gvirtq_desc){.addr = (uintptr_t)addr, .len = len, .flags = flags, .next = next};
}

/* Publishes the chain at descriptor 0 and waits for it to complete or for NEEDS_RESET. */
static unsigned run_chain(struct blk *b, const struct slot *s)
{
    gvirtq_publish(&b->q[0], 0);
    gvirtq_kick(&b->q[0]);
    for (unsigned i = 0; i < TIMEOUT_MS * 10; i++) {
        uint16_t head;
        uint32_t len;
        if (gvirtq_get_used(&b->q[0], &head, &len))
            return 1u << s->status;
        if (gvirtio_status(&b->d) & STATUS_NEEDS_RESET)
            return NEEDS_RESET;
        guest_udelay(100);
    }
    guest_fail(__FILE__, __LINE__, "neither a completion nor NEEDS_RESET");
}

/* Each case on a freshly reset device: what happened must be one of `accepted` (`strict`
 * with blk.strict=1, wisp's answer). */
static void malformed_case(struct blk *b, const char *what, unsigned accepted, unsigned strict)
{
    static uint8_t ro_data[512] __attribute__((aligned(512)));
    struct gvirtq *q = &b->q[0];
    struct slot *s = &slots[0];
    blk_open(b, 0, 1);
    s->hdr = (struct blk_hdr){.type = T_IN};
    s->status = 0xee;
    memset(ro_data, 0x5a, sizeof(ro_data));
    const uint16_t N = GVIRTQ_DESC_F_NEXT, W = GVIRTQ_DESC_F_WRITE;
    if (!strcmp(what, "short header")) {
        put_desc(q, 0, &s->hdr, 8, N, 1);
        put_desc(q, 1, &s->status, 1, W, 0);
    } else if (!strcmp(what, "no status byte")) {
        put_desc(q, 0, &s->hdr, 16, N, 1);
        put_desc(q, 1, ro_data, 512, 0, 0);
    } else if (!strcmp(what, "buffer outside RAM")) {
        put_desc(q, 0, &s->hdr, 16, N, 1);
        put_desc(q, 1, (const void *)0x100000000000ull, 512, N | W, 2);
        put_desc(q, 2, &s->status, 1, W, 0);
    } else if (!strcmp(what, "read into a read-only buffer")) {
        put_desc(q, 0, &s->hdr, 16, N, 1);
        put_desc(q, 1, ro_data, 512, N, 2);
        put_desc(q, 2, &s->status, 1, W, 0);
    } else if (!strcmp(what, "status byte read-only")) {
        put_desc(q, 0, &s->hdr, 16, N, 1);
        put_desc(q, 1, buf, 512, N | W, 2);
        put_desc(q, 2, &s->status, 1, 0, 0);
    } else if (!strcmp(what, "descriptor loop")) {
        s->hdr.type = T_OUT;
        put_desc(q, 0, &s->hdr, 16, N, 1);
        put_desc(q, 1, buf, 512, N, 0);
    } else if (!strcmp(what, "unknown type")) {
        s->hdr.type = 0x55;
        put_desc(q, 0, &s->hdr, 16, N, 1);
        put_desc(q, 1, &s->status, 1, W, 0);
    } else if (!strcmp(what, "GET_ID into 8 bytes")) {
        s->hdr.type = T_GET_ID;
        put_desc(q, 0, &s->hdr, 16, N, 1);
        put_desc(q, 1, buf, 8, N | W, 2);
        put_desc(q, 2, &s->status, 1, W, 0);
    } else {
        guest_fail(__FILE__, __LINE__, "no case '%s'", what);
    }
    unsigned got = run_chain(b, s);
    unsigned want = guest_cmdline_u64("blk.strict", 0) ? strict : accepted;
    guest_printf("blk: %s: %s\n", what,
                 got == NEEDS_RESET   ? "device needs reset"
                 : got == DONE_OK     ? "OK"
                 : got == DONE_IOERR  ? "IOERR"
                 : got == DONE_UNSUPP ? "UNSUPP"
                                      : "other status");
    if (!(got & want))
        guest_fail(__FILE__, __LINE__, "%s: outcome 0x%x, expected one of 0x%x", what, got, want);
    for (unsigned i = 0; i < sizeof(ro_data); i++) /* never written, whatever happened */
        GUEST_ASSERT_EQ(ro_data[i], 0x5a);
}

static void mode_malformed(struct blk *b)
{
    /* QEMU takes a short header for a broken device; wisp fails the request */
    malformed_case(b, "short header", DONE_IOERR | NEEDS_RESET, DONE_IOERR);
    malformed_case(b, "no status byte", NEEDS_RESET, NEEDS_RESET);
    /* QEMU maps the address to nothing and completes the read */
    malformed_case(b, "buffer outside RAM", NEEDS_RESET | DONE_OK | DONE_IOERR, NEEDS_RESET);
    /* QEMU reads 0 bytes (there is no writable data) and reports OK; wisp says IOERR */
    malformed_case(b, "read into a read-only buffer", DONE_IOERR | DONE_OK, DONE_IOERR);
    malformed_case(b, "status byte read-only", NEEDS_RESET, NEEDS_RESET);
    malformed_case(b, "descriptor loop", NEEDS_RESET, NEEDS_RESET);
    malformed_case(b, "unknown type", DONE_UNSUPP, DONE_UNSUPP);
    /* QEMU writes the first 8 bytes of the id; wisp wants the 20 §5.2.6 asks for */
    malformed_case(b, "GET_ID into 8 bytes", DONE_IOERR | DONE_OK, DONE_IOERR);
    /* after all that, a reset device works */
    blk_open(b, 0, 1);
    pattern_fill(buf, 0, 4096, GUEST_TAG);
    expect_status(blk_io(b, T_OUT, 0, buf, 4096), S_OK, "write after the resets");
    memset(buf, 0, 4096);
    expect_status(blk_io(b, T_IN, 0, buf, 4096), S_OK, "read after the resets");
    pattern_check(buf, 0, 4096, GUEST_TAG);
}

void guest_main(void)
{
    static const struct {
        const char *name;
        void (*fn)(struct blk *b);
    } modes[] = {{"rw", mode_rw},
                 {"discard", mode_discard},
                 {"ro", mode_ro},
                 {"two", mode_two},
                 {"mq", mode_mq},
                 {"many", mode_many},
                 {"malformed", mode_malformed}};
    static struct blk b;
    char mode[16] = "rw";
    guest_cmdline_get("blk.mode", mode, sizeof(mode));
    for (unsigned i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (!strcmp(mode, modes[i].name)) {
            modes[i].fn(&b);
            guest_printf("blk: ok (%s)\n", mode);
            return;
        }
    guest_fail(__FILE__, __LINE__, "unknown blk.mode '%s'", mode);
}
