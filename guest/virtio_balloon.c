/*
 * virtio-balloon from ring 3 (tests/guest/balloon_test.py drives it through the API): writes
 * 96 MiB from 64 MiB up and 16 MiB from 192 MiB up (so the host backs them), sends two
 * malformed page numbers (beyond RAM, in the MMIO hole: the device must ignore them), then
 * follows the device's num_pages for ever: it inflates with pages of the 96 MiB (in order) up to
 * the target, deflates from the top down, and after its first deflate reports the 16 MiB as
 * free (free page reporting). At the next change of the target it first checks that every
 * deflated and reported page reads as zero. The statistics buffer is sent again each time the
 * device gives it back. Lines: "balloon: touched", "balloon: actual N", "balloon: deflated to
 * N", "balloon: reported 16 MiB", "balloon: deflated pages A..B zero ok", "balloon: reported
 * pages zero ok", "balloon: stats N".
 */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_BALLOON 5
#define F_STATS_VQ        1
#define F_REPORTING       5
#define AREA              (64ull << 20)
#define AREA_PAGES        (96u << 8)
#define REPORT            (192ull << 20)
#define REPORT_BYTES      (16ull << 20)
#define BATCH             256

struct __attribute__((packed)) stat {
    uint16_t tag;
    uint64_t val;
};

static struct gvirtq inflate_q, deflate_q, stats_q, report_q;
static struct stat stats[4];
static uint64_t stats_sent;

static void send_stats(void)
{
    stats_sent++;
    stats[0] = (struct stat){4, 100ull << 20};      /* MEMFREE */
    stats[1] = (struct stat){5, 256ull << 20};      /* MEMTOT */
    stats[2] = (struct stat){6, 120ull << 20};      /* AVAIL */
    stats[3] = (struct stat){3, 1000 + stats_sent}; /* MINFLT: moves each time */
    struct gbuf b = {stats, sizeof(stats)};
    GUEST_ASSERT(gvirtq_add(&stats_q, &b, 1, 0) >= 0);
    gvirtq_kick(&stats_q);
}

/* One buffer of page numbers through q, waited for. */
static void send_pfns(struct gvirtq *q, const uint32_t *pfns, unsigned n)
{
    GUEST_ASSERT(gvirtq_send_wait(q, pfns, n * 4, 10000));
}

static bool page_is_zero(uint64_t pfn)
{
    const uint64_t *p = (const uint64_t *)(uintptr_t)(pfn << 12);
    for (unsigned i = 0; i < 512; i++)
        if (p[i])
            return false;
    return true;
}

void guest_main(void)
{
    struct gvirtio_dev d;
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_BALLOON, 0, &d));
    GUEST_ASSERT(gvirtio_init(&d, (1ull << F_STATS_VQ) | (1ull << F_REPORTING)));
    GUEST_ASSERT(d.features & (1ull << F_REPORTING));
    bool have_stats = d.features & (1ull << F_STATS_VQ);
    unsigned next = 2;
    GUEST_ASSERT(gvirtq_setup(&d, &inflate_q, 0, 64));
    GUEST_ASSERT(gvirtq_setup(&d, &deflate_q, 1, 64));
    if (have_stats)
        GUEST_ASSERT(gvirtq_setup(&d, &stats_q, next++, 16));
    GUEST_ASSERT(gvirtq_setup(&d, &report_q, next++, 16));
    gvirtio_driver_ok(&d);

    memset((void *)(uintptr_t)AREA, 0x5a, (uint64_t)AREA_PAGES << 12);
    memset((void *)(uintptr_t)REPORT, 0xa7, REPORT_BYTES);
    guest_printf("balloon: touched\n");
    static uint32_t bad[2] = {0xffffffffu, 0xfec00000u >> 12};
    send_pfns(&inflate_q, bad, 2);
    if (have_stats)
        send_stats();

    static uint32_t pfns[BATCH];
    uint32_t actual = 0;
    bool reported = false, check_report = false;
    uint32_t check_from = 0, check_to = 0;
    uint64_t printed_stats = 0;
    for (;;) {
        uint16_t head;
        uint32_t len;
        if (have_stats && gvirtq_get_used(&stats_q, &head, &len))
            send_stats();
        if (stats_sent != printed_stats && stats_sent <= 4) {
            printed_stats = stats_sent;
            guest_printf("balloon: stats %lu\n", (unsigned long)stats_sent);
        }
        uint32_t target = gvirtio_config32(&d, 0);
        if (target > AREA_PAGES)
            target = AREA_PAGES;
        if (target == actual) {
            guest_udelay(1000);
            continue;
        }
        /* the pages given back are read only at the next change: reading a hole of a shared
         * (shmem) backend fills it again, and the host measures before that */
        for (uint32_t p = check_from; p < check_to; p++)
            if (!page_is_zero((AREA >> 12) + p)) {
                guest_printf("balloon: deflated page %u is not zero\n", p);
                guest_exit(1);
            }
        if (check_to > check_from)
            guest_printf("balloon: deflated pages %u..%u zero ok\n", check_from, check_to - 1);
        check_from = check_to = 0;
        if (check_report) {
            for (uint64_t p = REPORT >> 12; p < (REPORT + REPORT_BYTES) >> 12; p++)
                if (!page_is_zero(p)) {
                    guest_printf("balloon: reported page 0x%lx is not zero\n", (unsigned long)p);
                    guest_exit(1);
                }
            guest_printf("balloon: reported pages zero ok\n");
            check_report = false;
        }
        if (target > actual) {
            while (actual < target) {
                unsigned n = target - actual < BATCH ? target - actual : BATCH;
                for (unsigned i = 0; i < n; i++)
                    pfns[i] = (uint32_t)(AREA >> 12) + actual + i;
                send_pfns(&inflate_q, pfns, n);
                actual += n;
            }
            gvirtio_write32(&d, 0x100 + 4, actual);
            guest_printf("balloon: actual %u\n", actual);
            continue;
        }
        uint32_t from = actual;
        while (actual > target) {
            unsigned n = actual - target < BATCH ? actual - target : BATCH;
            for (unsigned i = 0; i < n; i++)
                pfns[i] = (uint32_t)(AREA >> 12) + actual - n + i;
            send_pfns(&deflate_q, pfns, n);
            actual -= n;
        }
        gvirtio_write32(&d, 0x100 + 4, actual);
        check_from = target;
        check_to = from;
        guest_printf("balloon: deflated to %u\n", actual);
        if (!reported) {
            reported = true;
            struct gbuf b[8];
            for (unsigned i = 0; i < 8; i++)
                b[i] =
                    (struct gbuf){(const void *)(uintptr_t)(REPORT + i * (2ull << 20)), 2u << 20};
            GUEST_ASSERT(gvirtq_add(&report_q, b, 0, 8) >= 0);
            gvirtq_kick(&report_q);
            GUEST_ASSERT(gvirtq_wait_used(&report_q, &head, &len, 10000));
            check_report = true;
            guest_printf("balloon: reported 16 MiB\n");
        }
    }
}
