/* virtio-console from ring 3 (virtio 1.2 §5.3): port 0 without MULTIPORT, receiveq 0 and
 * transmitq 1. The command line picks the case (the host side checks the bytes):
 *   console.case=output console.bytes=N  emergency-write "emerg\n", then N pattern bytes in
 *       transmit chains of many shapes (one buffer, several, an indirect table), each waited
 *       for as a used buffer (len 0), then "console: ok output N"; a line on COM1 too
 *   console.case=input console.bytes=N   waits before posting receive buffers, then collects
 *       N pattern bytes from receive buffers of many sizes (one device-readable chain among
 *       them comes back empty), checks each byte, then "console: ok input N"
 *   console.case=malformed               bad transmit chains: each sets DEVICE_NEEDS_RESET (a
 *       config interrupt), and after a reset the device works again
 *   console.case=flood                   transmits forever (for SIGTERM under back-pressure)
 * console.strict=1 (wisp-vmm) also checks the features offered (EMERG_WRITE, not SIZE or
 * MULTIPORT) and an available index that jumps too far, which QEMU 7.2 does not refuse. Failures
 * are reported through the emergency write as well as on COM1, which wisp-vmm discards with
 * --console virtio. */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_CONSOLE    3
#define F_SIZE               0
#define F_MULTIPORT          1
#define F_EMERG_WRITE        2
#define F_INDIRECT_DESC      28
#define REG_INTERRUPT_STATUS 0x60
#define REG_INTERRUPT_ACK    0x64
#define REG_STATUS           0x70
#define STATUS_NEEDS_RESET   0x40
#define CONFIG_EMERG_WR      8
#define QUEUE_SIZE           64
#define MAX_BYTES            (1u << 20)

static struct gvirtio_dev dev;
static struct gvirtq rxq, txq;
static uint8_t pattern_buf[MAX_BYTES];

/* The byte at position i of the stream both sides compute (every value 0-255 occurs). */
static uint8_t pattern(uint64_t i)
{
    return (uint8_t)(i * 31 + (i >> 8) + (i >> 16));
}

static void emerg_puts(const char *s)
{
    while (*s)
        writel(dev.base + 0x100 + CONFIG_EMERG_WR, (uint8_t)*s++);
}

__attribute__((noreturn)) static void con_fail(int line, const char *what)
{
    char msg[160];
    guest_snprintf(msg, sizeof(msg), "\nconsole: FAIL line %d: %s\n", line, what);
    emerg_puts(msg);
    guest_fail(__FILE__, line, "%s", what);
}
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            con_fail(__LINE__, #cond);                                                             \
    } while (0)

/* Reset, features, both queues, DRIVER_OK. */
static void console_start(uint64_t features)
{
    CHECK(gvirtio_init(&dev, features));
    CHECK(gvirtq_setup(&dev, &rxq, 0, QUEUE_SIZE));
    CHECK(gvirtq_setup(&dev, &txq, 1, QUEUE_SIZE));
    gvirtio_driver_ok(&dev);
}

/* Waits for one used transmit buffer; the device writes nothing into it. */
static void tx_reap(void)
{
    uint16_t head;
    uint32_t len;
    CHECK(gvirtq_wait_used(&txq, &head, &len, 30000));
    CHECK(len == 0);
}

/* One line on the transmitq, waited for. */
static void say(const char *s)
{
    struct gbuf b = {s, (uint32_t)strlen(s)};
    CHECK(gvirtq_add(&txq, &b, 1, 0) >= 0);
    gvirtq_kick(&txq);
    tx_reap();
}

/* ---- output ---------------------------------------------------------------------------- */

static struct gvirtq_desc indirect_tables[QUEUE_SIZE][4] __attribute__((aligned(16)));

/* [p, p+len) as an indirect table of up to four buffers in one descriptor (§2.7.5.3). */
static void tx_add_indirect(const uint8_t *p, uint32_t len)
{
    uint16_t head = txq.free_head;
    txq.free_head = txq.desc[head].next;
    txq.num_free--;
    struct gvirtq_desc *t = indirect_tables[head];
    unsigned n = len >= 4 ? 4 : len;
    for (unsigned i = 0; i < n; i++) {
        uint32_t part = i + 1 < n ? len / n : len - (n - 1) * (len / n);
        t[i] = (struct gvirtq_desc){.addr = (uintptr_t)(p + i * (len / n)),
                                    .len = part,
                                    .flags = (uint16_t)(i + 1 < n ? GVIRTQ_DESC_F_NEXT : 0),
                                    .next = (uint16_t)(i + 1)};
    }
    txq.desc[head].addr = (uintptr_t)t;
    txq.desc[head].len = 16 * n;
    txq.desc[head].flags = GVIRTQ_DESC_F_INDIRECT;
    gvirtq_publish(&txq, head);
}

/* Chain k of the stream: its shape and length vary with k. */
static void tx_add_chain(unsigned k, const uint8_t *p, uint32_t len, bool indirect)
{
    unsigned shape = len < 3 ? 0 : k % 4;
    if (shape == 3 && indirect) {
        tx_add_indirect(p, len);
        return;
    }
    struct gbuf b[3];
    unsigned n = shape == 1 ? 3 : shape == 2 ? 2 : 1;
    for (unsigned i = 0; i < n; i++)
        b[i] = (struct gbuf){p + i * (len / n), i + 1 < n ? len / n : len - (n - 1) * (len / n)};
    CHECK(gvirtq_add(&txq, b, n, 0) >= 0);
}

static void case_output(uint64_t bytes)
{
    emerg_puts("emerg\n"); /* before any negotiation (§5.3.5) */
    guest_printf("com1: this line must not reach the host with --console virtio\n");
    CHECK(bytes <= MAX_BYTES);
    for (uint64_t i = 0; i < bytes; i++)
        pattern_buf[i] = pattern(i);
    console_start(1ull << F_INDIRECT_DESC);
    bool indirect = dev.features & (1ull << F_INDIRECT_DESC);
    uint64_t off = 0;
    unsigned outstanding = 0, most = 0;
    for (unsigned k = 0; off < bytes || outstanding; k++) {
        if (off < bytes && txq.num_free >= 3) {
            uint32_t len = 1 + (uint32_t)((k * 2654435761u) >> 7) % 8192;
            if (len > bytes - off)
                len = (uint32_t)(bytes - off);
            tx_add_chain(k, pattern_buf + off, len, indirect);
            gvirtq_kick(&txq);
            off += len;
            most = ++outstanding > most ? outstanding : most;
            continue;
        }
        tx_reap();
        outstanding--;
    }
    guest_printf("console: %lu bytes sent, at most %u chains waited at once\n",
                 (unsigned long)bytes, most);
    char line[64];
    guest_snprintf(line, sizeof(line), "console: ok output %lu\n", (unsigned long)bytes);
    say(line);
}

/* ---- input ----------------------------------------------------------------------------- */

struct rx_slot {
    uint8_t *a, *b;
    uint32_t alen, blen;
    bool readonly;
};
static struct rx_slot rx_slots[QUEUE_SIZE];
static uint8_t rx_mem[QUEUE_SIZE][4096 + 64];

/* Posts receive buffer number k: sizes 1 to 4096, some chains of two buffers. */
static void rx_post(unsigned k)
{
    static const uint32_t sizes[] = {1, 7, 64, 100, 333, 4096, 13, 1000};
    uint32_t alen = sizes[k % 8], blen = k % 5 == 4 ? 20 : 0;
    uint16_t head = rxq.free_head;
    struct rx_slot *s = &rx_slots[head];
    *s = (struct rx_slot){.a = rx_mem[head], .alen = alen, .b = rx_mem[head] + 4096, .blen = blen};
    struct gbuf b[2] = {{s->a, alen}, {s->b, blen}};
    CHECK(gvirtq_add(&rxq, b, 0, blen ? 2 : 1) == head);
}

static void case_input(uint64_t bytes)
{
    console_start(0);
    /* nothing posted yet: input the host already sent must wait, not be lost */
    guest_udelay(300 * 1000);
    /* a device-readable buffer in the receiveq (§5.3.6.1 forbids it) comes back empty */
    uint16_t ro = rxq.free_head;
    rx_slots[ro] = (struct rx_slot){.a = rx_mem[ro], .alen = 16, .readonly = true};
    struct gbuf rob = {rx_mem[ro], 16};
    CHECK(gvirtq_add(&rxq, &rob, 1, 0) == ro);
    unsigned k = 0;
    while (rxq.num_free >= 2)
        rx_post(k++);
    gvirtq_kick(&rxq);
    uint64_t got = 0;
    unsigned chains = 0;
    bool ro_back = false;
    while (got < bytes) {
        uint16_t head;
        uint32_t len;
        CHECK(gvirtq_wait_used(&rxq, &head, &len, 20000));
        CHECK(head < QUEUE_SIZE);
        struct rx_slot *s = &rx_slots[head];
        if (s->readonly) {
            CHECK(len == 0);
            ro_back = true;
        }
        CHECK(len <= s->alen + s->blen && len <= bytes - got);
        for (uint32_t i = 0; i < len; i++) {
            uint8_t c = i < s->alen ? s->a[i] : s->b[i - s->alen];
            if (c != pattern(got + i)) {
                guest_printf("console: byte %lu is 0x%x, expected 0x%x\n", (unsigned long)(got + i),
                             c, pattern(got + i));
                con_fail(__LINE__, "input byte differs");
            }
        }
        got += len;
        chains++;
        while (rxq.num_free >= 2)
            rx_post(k++);
        gvirtq_kick(&rxq);
    }
    CHECK(ro_back);
    guest_printf("console: %lu bytes received in %u buffers\n", (unsigned long)got, chains);
    char line[64];
    guest_snprintf(line, sizeof(line), "console: ok input %lu\n", (unsigned long)bytes);
    say(line);
}

/* ---- malformed chains ------------------------------------------------------------------- */

/* The device must answer with DEVICE_NEEDS_RESET and a config interrupt; then the driver
 * resets it and starts again (§2.1.1). */
static void expect_needs_reset(const char *after)
{
    gvirtq_kick(&txq);
    unsigned waited = 0;
    while (!(gvirtio_status(&dev) & STATUS_NEEDS_RESET) && waited++ < 50000)
        guest_udelay(100);
    CHECK(gvirtio_status(&dev) & STATUS_NEEDS_RESET);
    /* the configuration interrupt follows (InterruptStatus bit 1 may lag the status bit) */
    uint32_t isr;
    waited = 0;
    while (!((isr = gvirtio_read32(&dev, REG_INTERRUPT_STATUS)) & 2) && waited++ < 50000)
        guest_udelay(100);
    CHECK(isr & 2);
    gvirtio_write32(&dev, REG_INTERRUPT_ACK, isr);
    gvirtio_write32(&dev, REG_STATUS, 0);
    CHECK(gvirtio_status(&dev) == 0);
    console_start(0);
    say(after);
}

/* Takes a free descriptor for a hand-made chain. */
static uint16_t take_desc(void)
{
    uint16_t i = txq.free_head;
    txq.free_head = txq.desc[i].next;
    txq.num_free--;
    return i;
}

static void case_malformed(bool strict)
{
    console_start(0);
    say("console: malformed start\n");

    /* a device-writable buffer in the transmitq: ignored, the readable part goes out */
    static const char part[] = "console: readable part\n";
    static uint8_t junk[16];
    struct gbuf b[2] = {{part, sizeof(part) - 1}, {junk, sizeof(junk)}};
    CHECK(gvirtq_add(&txq, b, 1, 1) >= 0);
    gvirtq_kick(&txq);
    tx_reap();
    CHECK(!(gvirtio_status(&dev) & STATUS_NEEDS_RESET));

    /* a buffer outside guest RAM (longer than a page: QEMU bounces one page of unassigned
     * memory and refuses the rest) */
    uint16_t d = take_desc();
    txq.desc[d] = (struct gvirtq_desc){.addr = 0x4000000000ull, .len = 16384};
    gvirtq_publish(&txq, d);
    expect_needs_reset("console: after out-of-RAM\n");

    /* a chain that loops */
    uint16_t a = take_desc(), c = take_desc();
    static const char loop[] = "loop";
    txq.desc[a] = (struct gvirtq_desc){(uintptr_t)loop, 4, GVIRTQ_DESC_F_NEXT, c};
    txq.desc[c] = (struct gvirtq_desc){(uintptr_t)loop, 4, GVIRTQ_DESC_F_NEXT, a};
    gvirtq_publish(&txq, a);
    expect_needs_reset("console: after loop\n");

    /* a head beyond the queue size */
    gvirtq_publish(&txq, QUEUE_SIZE + 5);
    expect_needs_reset("console: after bad head\n");

    /* an available index that moves further than the queue holds (QEMU 7.2 takes the stale
     * ring entries as chains instead: wisp-vmm only) */
    if (strict) {
        txq.avail[1] = (uint16_t)(txq.avail_idx + QUEUE_SIZE + 1);
        expect_needs_reset("console: after avail jump\n");
    }

    say("console: ok malformed\n");
}

/* ---- flood ------------------------------------------------------------------------------ */

__attribute__((noreturn)) static void case_flood(void)
{
    static uint8_t block[4096];
    memset(block, 'F', sizeof(block));
    console_start(0);
    for (;;) {
        struct gbuf b = {block, sizeof(block)};
        while (gvirtq_add(&txq, &b, 1, 0) >= 0)
            gvirtq_kick(&txq);
        uint16_t head;
        uint32_t len;
        while (!gvirtq_get_used(&txq, &head, &len))
            cpu_relax();
    }
}

void guest_main(void)
{
    CHECK(gvirtio_find(VIRTIO_ID_CONSOLE, 0, &dev));
    char which[16] = "";
    guest_cmdline_get("console.case", which, sizeof(which));
    guest_printf("console: device at 0x%lx irq %u, case '%s'\n", (unsigned long)dev.base, dev.irq,
                 which);
    bool strict = guest_cmdline_u64("console.strict", 0);
    if (strict) {
        gvirtio_write32(&dev, 0x14, 0); /* DeviceFeaturesSel */
        uint32_t offered = gvirtio_read32(&dev, 0x10);
        CHECK(offered & (1u << F_EMERG_WRITE));
        CHECK(!(offered & (1u << F_MULTIPORT)));
        CHECK(!(offered & (1u << F_SIZE)));
    }
    uint64_t bytes = guest_cmdline_u64("console.bytes", 4096);
    if (!strcmp(which, "output"))
        case_output(bytes);
    else if (!strcmp(which, "input"))
        case_input(bytes);
    else if (!strcmp(which, "malformed"))
        case_malformed(strict);
    else if (!strcmp(which, "flood"))
        case_flood();
    else
        con_fail(__LINE__, "console.case= is not output, input, malformed or flood");
    guest_printf("console: ok %s\n", which);
}
