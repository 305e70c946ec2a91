/* virtio-rng from ring 3: the device on the command line, feature negotiation, one request
 * queue; buffers come back full of bytes that differ between requests and from zero, the used
 * length says how many, and the completion raises the device's interrupt line (seen in the
 * LAPIC's IRR). With cmdline "rng.expect=N" the test checks that a 4 KiB request got at most N
 * bytes (a rate limit); "virtio.features=N" asks for those feature bits too (EVENT_IDX: then the
 * device must keep avail_event moving, or the sequential requests below are never notified).
 * Prints "rng: ok" and the first bytes. */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_RNG 4

void guest_main(void)
{
    struct gvirtio_dev d;
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_RNG, 0, &d));
    guest_printf("rng: device at 0x%lx irq %u\n", (unsigned long)d.base, d.irq);
    GUEST_ASSERT(gvirtio_init(&d, guest_cmdline_u64("virtio.features", 0)));
    struct gvirtq q;
    GUEST_ASSERT(gvirtq_setup(&d, &q, 0, 16));
    gvirtio_driver_ok(&d);
    gvirtio_irq_route(&d, 0x40);

    uint64_t expect = guest_cmdline_u64("rng.expect", 0);
    static uint8_t buf[3][64];
    for (unsigned i = 0; i < 3; i++) {
        struct gbuf b = {buf[i], sizeof(buf[i])};
        GUEST_ASSERT(gvirtq_add(&q, &b, 0, 1) >= 0);
    }
    gvirtq_kick(&q);
    for (unsigned i = 0; i < 3; i++) {
        uint16_t head;
        uint32_t len;
        GUEST_ASSERT(gvirtq_wait_used(&q, &head, &len, 10000));
        if (!expect) /* rate-limited requests may be filled in part */
            GUEST_ASSERT_EQ(len, 64);
        GUEST_ASSERT(len > 0 && len <= 64);
    }
    unsigned zero = 0;
    for (unsigned i = 0; i < 16; i++)
        zero += buf[0][i] == 0;
    GUEST_ASSERT(zero < 8);
    GUEST_ASSERT(memcmp(buf[0], buf[1], 16) != 0);
    /* the device publishes the used elements, then writes its irqfd: the line may come a moment
     * after the last element is seen */
    for (unsigned i = 0; i < 100000 && !gvirtio_irq_pending(0x40); i++)
        guest_udelay(100);
    GUEST_ASSERT(gvirtio_irq_pending(0x40));
    /* one request at a time: each must be notified and completed */
    for (unsigned i = 0; i < 8; i++) {
        static uint8_t one[16];
        struct gbuf b = {one, sizeof(one)};
        uint16_t head;
        uint32_t len;
        GUEST_ASSERT(gvirtq_add(&q, &b, 0, 1) >= 0);
        gvirtq_kick(&q);
        GUEST_ASSERT(gvirtq_wait_used(&q, &head, &len, 10000));
    }
    uint32_t isr = gvirtio_read32(&d, 0x60);
    GUEST_ASSERT(isr & 1);
    gvirtio_write32(&d, 0x64, isr);
    GUEST_ASSERT_EQ(gvirtio_read32(&d, 0x60) & 1, 0);

    if (expect) {
        static uint8_t big[4096];
        struct gbuf b = {big, sizeof(big)};
        GUEST_ASSERT(gvirtq_add(&q, &b, 0, 1) >= 0);
        gvirtq_kick(&q);
        uint16_t head;
        uint32_t len;
        GUEST_ASSERT(gvirtq_wait_used(&q, &head, &len, 5000));
        guest_printf("rng: a 4096-byte request got %u bytes\n", len);
        GUEST_ASSERT(len > 0 && len <= expect);
    }
    /* a reset stops the device; status reads 0 */
    gvirtio_write32(&d, 0x70, 0);
    GUEST_ASSERT_EQ(gvirtio_status(&d), 0);
    guest_printf("rng: ok %02x%02x%02x%02x\n", buf[0][0], buf[0][1], buf[0][2], buf[0][3]);
}
