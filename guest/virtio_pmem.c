/*
 * virtio-pmem from ring 3 (tests/guest/pmem_test.py): finds the device, reads its config space
 * (start, size), maps the region and reads all of it with plain loads, checking the pattern the
 * host wrote into the file (page p: word 0 = p, words 1..511 = pattern(p)); then, as `mode=`
 * says, writes page 1 with plain stores (rw, cow: the stores must read back; ro: a store must be
 * dropped and the page still read as the file's) and sends flush requests (type 0 must succeed,
 * an unknown type must fail). With `hold=1` it then sleeps (sti; hlt from a #UD gate, with no
 * interrupt source armed) until the VMM is stopped, so the host can look at its mappings.
 * Lines: "pmem: region 0x... size N MiB", "pmem: read N MiB ok in C cycles", "pmem: <mode> page 1
 * ...", "pmem: flush ok", "pmem: holding".
 */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_PMEM 27
#define VEC_HALT       6 /* #UD */
#define WORDS          512

__asm__(".text\n"
        ".globl pmem_halt_stub\n"
        "pmem_halt_stub:\n" /* #UD of the ud2 in hold(): sleeps for good */
        "    sti\n"
        "1:  hlt\n"
        "    jmp 1b\n");
extern const char pmem_halt_stub[];

static uint64_t pattern(uint64_t page, uint64_t seed)
{
    return (page + 1) * 0x9e3779b97f4a7c15ull ^ seed;
}

/* Words of [start, start + size) that differ from the file's pattern. */
static uint64_t check(uint64_t start, uint64_t size, uint64_t seed)
{
    const volatile uint64_t *r = (const volatile uint64_t *)(uintptr_t)start;
    uint64_t bad = 0;
    for (uint64_t p = 0; p < size >> 12; p++) {
        const volatile uint64_t *w = r + p * WORDS;
        uint64_t v = pattern(p, seed);
        bad += w[0] != p;
        for (unsigned i = 1; i < WORDS; i++)
            bad += w[i] != v;
    }
    return bad;
}

static struct gvirtq req_q;

/* One request of `type` through the queue: the device's le32 ret. */
static uint32_t request(uint32_t type)
{
    static volatile uint32_t req, resp;
    req = type;
    resp = 0xdeadbeef;
    struct gbuf b[2] = {{(const void *)&req, 4}, {(const void *)&resp, 4}};
    uint16_t head;
    uint32_t len;
    GUEST_ASSERT(gvirtq_add(&req_q, b, 1, 1) >= 0);
    gvirtq_kick(&req_q);
    GUEST_ASSERT(gvirtq_wait_used(&req_q, &head, &len, 10000));
    GUEST_ASSERT_EQ(len, 4);
    return resp;
}

/* A request with no writable buffer for its status cannot be completed: the device must set
 * DEVICE_NEEDS_RESET (and not touch anything); after a reset it works again. */
static void malformed(struct gvirtio_dev *d)
{
    static volatile uint32_t req;
    req = 0;
    struct gbuf b = {(const void *)&req, 4};
    GUEST_ASSERT(gvirtq_add(&req_q, &b, 1, 0) >= 0);
    gvirtq_kick(&req_q);
    uint64_t t0 = rdtsc();
    while (!(gvirtio_status(d) & 0x40) && rdtsc() - t0 < 10000000000ull)
        cpu_relax();
    GUEST_ASSERT(gvirtio_status(d) & 0x40); /* DEVICE_NEEDS_RESET */
    GUEST_ASSERT(gvirtio_init(d, 0));
    GUEST_ASSERT(gvirtq_setup(d, &req_q, 0, 16));
    gvirtio_driver_ok(d);
    GUEST_ASSERT_EQ(request(0), 0);
    guest_printf("pmem: malformed request: needs reset, then flush ok again\n");
}

static void hold(void)
{
    guest_set_gate(VEC_HALT, pmem_halt_stub, 0);
    /* no interrupt can come: the PICs masked, the LAPIC's LINT0 masked, no IOAPIC pin set */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    writel(0xfee00000ull + 0x350, 1u << 16);
    guest_printf("pmem: holding\n");
    __asm__ volatile("ud2" ::: "memory");
    guest_fail(__FILE__, __LINE__, "woke up");
}

void guest_main(void)
{
    char mode[8] = "rw";
    guest_cmdline_get("mode", mode, sizeof(mode));
    uint64_t seed = guest_cmdline_u64("seed", 0), want_mib = guest_cmdline_u64("size_mib", 0);
    struct gvirtio_dev d;
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_PMEM, 0, &d));
    GUEST_ASSERT(gvirtio_init(&d, 0));
    GUEST_ASSERT(gvirtq_setup(&d, &req_q, 0, 16));
    gvirtio_driver_ok(&d);
    uint64_t start = gvirtio_config64(&d, 0), size = gvirtio_config64(&d, 8);
    guest_printf("pmem: region 0x%lx size %lu MiB\n", (unsigned long)start,
                 (unsigned long)(size >> 20));
    GUEST_ASSERT((start & ((128ull << 20) - 1)) == 0); /* a memory section boundary */
    GUEST_ASSERT(start >= 0x100000000ull);             /* above the 32-bit MMIO hole */
    GUEST_ASSERT(size && (size & ((2ull << 20) - 1)) == 0);
    if (want_mib)
        GUEST_ASSERT_EQ(size >> 20, want_mib);
    GUEST_ASSERT(guest_map_phys(start, size));

    /* every byte, with plain loads: the first pass faults the pages in (KVM maps each on
     * the guest's first touch), the second runs at the speed of memory */
    uint64_t cycles[2];
    for (int pass = 0; pass < 2; pass++) {
        uint64_t t0 = rdtsc(), bad = check(start, size, seed);
        cycles[pass] = rdtsc() - t0;
        if (bad)
            guest_fail(__FILE__, __LINE__, "%lu words differ from the file's pattern",
                       (unsigned long)bad);
    }
    guest_printf("pmem: read %lu MiB ok in %lu cycles (first touch), %lu cycles (again)\n",
                 (unsigned long)(size >> 20), (unsigned long)cycles[0], (unsigned long)cycles[1]);

    volatile uint64_t *page1 = (volatile uint64_t *)(uintptr_t)(start + 4096);
    uint64_t v1 = pattern(1, seed);
    if (!strcmp(mode, "ro")) {
        page1[5] = ~v1; /* KVM exits with it as MMIO; the VMM drops it */
        GUEST_ASSERT_EQ(page1[5], v1);
        guest_printf("pmem: ro page 1 write dropped, still the file's\n");
    } else {
        for (unsigned i = 0; i < WORDS; i++)
            page1[i] = ~v1 ^ i;
        for (unsigned i = 0; i < WORDS; i++)
            GUEST_ASSERT_EQ(page1[i], ~v1 ^ i);
        guest_printf("pmem: %s page 1 written and read back\n", mode);
    }
    GUEST_ASSERT_EQ(request(0), 0); /* VIRTIO_PMEM_REQ_TYPE_FLUSH */
    GUEST_ASSERT(request(7) != 0);  /* unknown */
    guest_printf("pmem: flush ok\n");
    malformed(&d);
    if (guest_cmdline_u64("hold", 0))
        hold();
}
