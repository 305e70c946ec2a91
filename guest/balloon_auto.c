/*
 * A guest for wispd's automatic balloon (tests/wispd/reclaim_test.py): a virtio-balloon driver
 * that follows the device's target (inflating with pages of an area it wrote first, so that the
 * host backs them and the VMM's RSS shows what leaves), sends statistics each time the device
 * gives their buffer back, and sleeps in `hlt` in between, woken by the balloon's interrupt (a
 * new target, the statistics request) or COM1's input, so that an idle one costs no CPU.
 * Statistics: MEMTOT the guest's RAM; MEMFREE and AVAIL what is left of it after 8 MiB of its
 * own, the balloon (actual) and what it "uses" (a command sets it: 0 at first, an idle guest).
 * Commands, one per line on COM1:
 *   use N    the guest now uses N MiB (its free and available memory fall: its own pressure)
 *   oom N    the guest takes N MiB back from the balloon on its own, as Linux does with
 *            deflate_on_oom when it runs out of memory (refused without the feature), and
 *            does not inflate to that target again: only to a new one
 * Lines: "auto: ready", "auto: actual N" (pages, after each inflate or deflate), "auto: use N",
 * "auto: oom deflated to N" (pages), "auto: stats N" (the first few statistics sent).
 * The sleep: a `ud2` whose #UD gate (vector 6) runs `sti; hlt; cli` and steps over it, as in
 * snapshot_idle.c; the interrupts' handlers write the LAPIC's EOI.
 */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_BALLOON 5
#define F_STATS_VQ        1
#define F_DEFLATE_ON_OOM  2
#define AREA              (32ull << 20)
#define OWN_MIB           8
#define BATCH             256
#define IOAPIC            0xfec00000ull
#define LAPIC             0xfee00000ull
#define VEC_UART          0x1c
#define VEC_BALLOON       0x1d
#define VEC_SPURIOUS      0x1f
#define VEC_HALT          6
#define UART_IER          1
#define UART_MCR          4

__asm__(".text\n"
        "auto_halt_stub:\n"
        "    sti\n"
        "    hlt\n"
        "    cli\n"
        "    addq $2, (%rsp)\n"
        "    iretq\n"
        "auto_irq_stub:\n"
        "    push %rax\n"
        "    movabs $0xfee000b0, %rax\n"
        "    movl $0, (%rax)\n"
        "    pop %rax\n"
        "    iretq\n"
        "auto_spurious_stub:\n"
        "    iretq\n");
extern const char auto_halt_stub[], auto_irq_stub[], auto_spurious_stub[];

struct __attribute__((packed)) stat {
    uint16_t tag;
    uint64_t val;
};

static struct gvirtio_dev dev;
static struct gvirtq inflate_q, deflate_q, stats_q;
static struct stat stats[4];
static uint64_t stats_sent, use_mib, ram_mib;
static uint32_t actual, area_pages;
static uint32_t oom_target = UINT32_MAX; /* the target it deflated below on OOM: not followed */
static uint32_t pfns[BATCH];

static void ioapic_write(unsigned reg, uint32_t v)
{
    writel(IOAPIC, reg);
    writel(IOAPIC + 0x10, v);
}

static void interrupts_init(unsigned balloon_pin)
{
    guest_set_gate(VEC_HALT, auto_halt_stub, 0);
    guest_set_gate(VEC_UART, auto_irq_stub, 0);
    guest_set_gate(VEC_BALLOON, auto_irq_stub, 0);
    guest_set_gate(VEC_SPURIOUS, auto_spurious_stub, 0);
    outb(0x21, 0xff); /* the PICs masked: only the IOAPIC delivers */
    outb(0xa1, 0xff);
    writel(LAPIC + 0xf0, 0x100 | VEC_SPURIOUS); /* software enable */
    writel(LAPIC + 0x350, 1u << 16);            /* LVT0 masked */
    ioapic_write(0x10 + 2 * 4 + 1, guest_apic_id() << 24);
    ioapic_write(0x10 + 2 * 4, VEC_UART | 1u << 15); /* level */
    ioapic_write(0x10 + 2 * balloon_pin + 1, guest_apic_id() << 24);
    ioapic_write(0x10 + 2 * balloon_pin, VEC_BALLOON); /* edge: each irqfd write is one */
    outb(GUEST_PORT_COM1 + UART_IER, 0x01);
    outb(GUEST_PORT_COM1 + UART_MCR, 0x0b);
}

static uint64_t left_mib(void)
{
    uint64_t taken = OWN_MIB + use_mib + actual / 256;
    return taken < ram_mib ? ram_mib - taken : 0;
}

static void send_stats(void)
{
    stats_sent++;
    stats[0] = (struct stat){4, left_mib() << 20};  /* MEMFREE */
    stats[1] = (struct stat){5, ram_mib << 20};     /* MEMTOT */
    stats[2] = (struct stat){6, left_mib() << 20};  /* AVAIL */
    stats[3] = (struct stat){3, 1000 + stats_sent}; /* MINFLT */
    struct gbuf b = {stats, sizeof(stats)};
    GUEST_ASSERT(gvirtq_add(&stats_q, &b, 1, 0) >= 0);
    gvirtq_kick(&stats_q);
    if (stats_sent <= 3)
        guest_printf("auto: stats %lu\n", (unsigned long)stats_sent);
}

static void send_pfns(struct gvirtq *q, unsigned n)
{
    GUEST_ASSERT(gvirtq_send_wait(q, pfns, n * 4, 10000));
}

/* Moves the balloon to `target` pages: inflating from the area's bottom up, deflating from the
 * top down (virtio 1.2 §5.5.6). */
static void move_to(uint32_t target)
{
    while (actual < target) {
        unsigned n = target - actual < BATCH ? target - actual : BATCH;
        for (unsigned i = 0; i < n; i++)
            pfns[i] = (uint32_t)(AREA >> 12) + actual + i;
        send_pfns(&inflate_q, n);
        actual += n;
    }
    while (actual > target) {
        unsigned n = actual - target < BATCH ? actual - target : BATCH;
        for (unsigned i = 0; i < n; i++)
            pfns[i] = (uint32_t)(AREA >> 12) + actual - n + i;
        send_pfns(&deflate_q, n);
        actual -= n;
    }
    gvirtio_write32(&dev, 0x100 + 4, actual);
}

static uint64_t number(const char *p)
{
    uint64_t v = 0;
    while (*p == ' ')
        p++;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

static void command(const char *line)
{
    if (!strncmp(line, "use ", 4)) {
        use_mib = number(line + 4);
        guest_printf("auto: use %lu\n", (unsigned long)use_mib);
    } else if (!strncmp(line, "oom ", 4)) {
        if (!(dev.features & (1ull << F_DEFLATE_ON_OOM))) {
            guest_printf("auto: oom refused: no DEFLATE_ON_OOM\n");
            return;
        }
        uint64_t pages = number(line + 4) * 256;
        oom_target = gvirtio_config32(&dev, 0);
        move_to(actual > pages ? actual - (uint32_t)pages : 0);
        guest_printf("auto: oom deflated to %u\n", actual);
    } else if (line[0]) {
        guest_printf("auto: unknown command '%s'\n", line);
    }
}

void guest_main(void)
{
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_BALLOON, 0, &dev));
    GUEST_ASSERT(gvirtio_init(&dev, (1ull << F_STATS_VQ) | (1ull << F_DEFLATE_ON_OOM)));
    GUEST_ASSERT(dev.features & (1ull << F_STATS_VQ));
    GUEST_ASSERT(gvirtq_setup(&dev, &inflate_q, 0, 64));
    GUEST_ASSERT(gvirtq_setup(&dev, &deflate_q, 1, 64));
    GUEST_ASSERT(gvirtq_setup(&dev, &stats_q, 2, 16));
    gvirtio_driver_ok(&dev);
    ram_mib = 0;
    for (unsigned i = 0; i < guest_memmap_count(); i++)
        if (guest_memmap(i)->type == 1)
            ram_mib += guest_memmap(i)->size >> 20;
    GUEST_ASSERT(ram_mib > (AREA >> 20) + 8);
    area_pages = (uint32_t)((ram_mib - (AREA >> 20) - 4) << 8); /* up to 4 MiB below the top */
    memset((void *)(uintptr_t)AREA, 0x5a, (uint64_t)area_pages << 12);
    interrupts_init(dev.irq);
    send_stats();
    guest_printf("auto: ready (%lu MiB, %u pages to give)\n", (unsigned long)ram_mib, area_pages);
    char line[64];
    unsigned len = 0;
    for (;;) {
        uint16_t head;
        uint32_t got;
        while (guest_com1_line(line, sizeof(line), &len))
            command(line);
        gvirtio_write32(&dev, 0x064, gvirtio_read32(&dev, 0x060)); /* InterruptACK */
        uint32_t target = gvirtio_config32(&dev, 0);
        if (target > area_pages)
            target = area_pages;
        if (target != oom_target && target != actual) {
            oom_target = UINT32_MAX;
            move_to(target);
            guest_printf("auto: actual %u\n", actual);
        }
        if (gvirtq_get_used(&stats_q, &head, &got))
            send_stats();
        __asm__ volatile("ud2" ::: "memory");
    }
}
