/* The test guest of tests/api (docs/api.md), one of two modes by "api.mode=" on the command line:
 *   count  prints "count N" (N = 1, 2, ...) every api.us= microseconds (default 20000), forever:
 *          a paused VM prints nothing, a resumed one goes on from the next N
 *   media  reads the first virtio-blk drive's sector 0 and capacity ("media: 0 <text> <sectors>"),
 *          then waits (polling ConfigGeneration) until the device says its configuration
 *          changed (a PATCH /drives/{id} with a new path_on_host), reads them again
 *          ("media: 1 <text> <sectors>") and ends with status 0; the text is the first bytes of
 *          sector 0, up to the first NUL or newline (at most 32)
 * Prints "api-guest: ready <mode>" and "api-guest: cmdline <the kernel command line>" first. */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_BLOCK     2
#define T_IN                0
#define F_RO                5
#define MMIO_CONFIG_GEN     0x0fc
#define CFG_CAPACITY        0
#define MEDIA_TIMEOUT_POLLS 120000 /* one per millisecond: two minutes */

static void count_forever(void)
{
    uint64_t us = guest_cmdline_u64("api.us", 20000);
    for (uint64_t n = 1;; n++) {
        guest_printf("count %lu\n", (unsigned long)n);
        guest_udelay(us);
    }
}

struct blk_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};

static struct blk_hdr hdr;
static uint8_t status;
static uint8_t sector[512] __attribute__((aligned(512)));

static void read_sector0(struct gvirtq *q)
{
    hdr = (struct blk_hdr){.type = T_IN};
    status = 0xee;
    const struct gbuf bufs[] = {{&hdr, sizeof(hdr)}, {sector, sizeof(sector)}, {&status, 1}};
    GUEST_ASSERT(gvirtq_add(q, bufs, 1, 2) >= 0);
    gvirtq_kick(q);
    uint16_t head;
    uint32_t len;
    GUEST_ASSERT(gvirtq_wait_used(q, &head, &len, 20000));
    GUEST_ASSERT_EQ(status, 0);
}

static void print_media(struct gvirtio_dev *d, struct gvirtq *q, unsigned round)
{
    read_sector0(q);
    char text[33];
    unsigned n = 0;
    while (n < 32 && sector[n] && sector[n] != '\n')
        text[n] = (char)sector[n], n++;
    text[n] = '\0';
    guest_printf("media: %u %s %lu\n", round, text,
                 (unsigned long)gvirtio_config64(d, CFG_CAPACITY));
}

static void media(void)
{
    struct gvirtio_dev d;
    struct gvirtq q;
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_BLOCK, 0, &d));
    GUEST_ASSERT(gvirtio_init(&d, 1ull << F_RO));
    GUEST_ASSERT(gvirtq_setup(&d, &q, 0, 16));
    gvirtio_driver_ok(&d);
    uint32_t gen = gvirtio_read32(&d, MMIO_CONFIG_GEN);
    print_media(&d, &q, 0);
    for (unsigned i = 0; gvirtio_read32(&d, MMIO_CONFIG_GEN) == gen; i++) {
        if (i == MEDIA_TIMEOUT_POLLS)
            guest_fail(__FILE__, __LINE__, "no configuration change came");
        guest_udelay(1000);
    }
    print_media(&d, &q, 1);
}

void guest_main(void)
{
    char mode[16] = "count";
    guest_cmdline_get("api.mode", mode, sizeof(mode));
    guest_printf("api-guest: ready %s\n", mode);
    guest_printf("api-guest: cmdline %s\n", guest_cmdline());
    if (!strcmp(mode, "media"))
        media();
    else
        count_forever();
}
