/*
 * An idle guest for clones (tests/snapshot/, bench/snapshot): it prints "idle: ready", then
 * sleeps in `hlt` until COM1 has input, so that a snapshot taken of it, and every clone restored
 * from it, costs no CPU. Commands, one per line on COM1:
 *   fill B N    writes byte B into N pages (4 KiB) from 32 MiB up, then prints
 *               "idle: filled N pages with B"
 *   sum N       prints "idle: sum N S", S the sum of the bytes of those N pages
 *   exit S      ends the VM with status S
 *   print N     prints N numbered lines "idle: line K of N ....", then "idle: printed N"
 *   flood       prints numbered lines without end (a console nobody reads must not stall it)
 * The same from the command line: "print=N" and "flood=1" run before "idle: ready".
 * To sleep it leaves ring 3 for a few instructions: `ud2`, whose #UD gate (vector 6 of the kit's
 * IDT, replaced here) runs `sti; hlt; cli`, steps over the ud2 and returns (PVM turns `int N` from
 * ring 3 into #UD, so a software-interrupt gate would not do); the UART's interrupt (IRQ 4,
 * IOAPIC pin 4 routed to vector 0x1c, level-triggered) wakes it, and its ring-0 handler writes
 * the LAPIC's EOI. So the interrupt path (UART IER/MCR, IOAPIC, LAPIC) must survive a snapshot
 * and restore.
 */
#include "guest.h"

#define IOAPIC       0xfec00000ull
#define LAPIC        0xfee00000ull
#define LAPIC_SVR    0xf0
#define LAPIC_LVT0   0x350
#define VEC_UART     0x1c
#define VEC_HALT     6 /* #UD */
#define VEC_SPURIOUS 0x1f
#define AREA         (32ull << 20)
#define UART_IER     1
#define UART_MCR     4

__asm__(".text\n"
        ".globl idle_halt_stub\n"
        "idle_halt_stub:\n" /* #UD of the ud2 in sleep_until_irq */
        "    sti\n"
        "    hlt\n"
        "    cli\n"
        "    addq $2, (%rsp)\n" /* the frame's RIP: after the ud2 */
        "    iretq\n"
        ".globl idle_irq_stub\n"
        "idle_irq_stub:\n" /* vector 0x1c: end of interrupt at the LAPIC */
        "    push %rax\n"
        "    movabs $0xfee000b0, %rax\n"
        "    movl $0, (%rax)\n"
        "    pop %rax\n"
        "    iretq\n"
        ".globl idle_spurious_stub\n"
        "idle_spurious_stub:\n"
        "    iretq\n");
extern const char idle_halt_stub[], idle_irq_stub[], idle_spurious_stub[];

static void ioapic_write(unsigned reg, uint32_t v)
{
    writel(IOAPIC, reg);
    writel(IOAPIC + 0x10, v);
}

static void interrupts_init(void)
{
    guest_set_gate(VEC_HALT, idle_halt_stub, 0);
    guest_set_gate(VEC_UART, idle_irq_stub, 0);
    guest_set_gate(VEC_SPURIOUS, idle_spurious_stub, 0);
    /* KVM resets the BSP's LVT0 to ExtINT and the PICs unmasked: without this the PIC would
     * deliver IRQ 4 as vector 4 too */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    writel(LAPIC + LAPIC_SVR, 0x100 | VEC_SPURIOUS); /* software enable */
    writel(LAPIC + LAPIC_LVT0, 1u << 16);            /* masked */
    ioapic_write(0x10 + 2 * 4 + 1, guest_apic_id() << 24);
    ioapic_write(0x10 + 2 * 4, VEC_UART | 1u << 15); /* fixed, physical, level, unmasked */
    outb(GUEST_PORT_COM1 + UART_IER, 0x01);          /* received data */
    outb(GUEST_PORT_COM1 + UART_MCR, 0x0b);          /* DTR, RTS, OUT2 (the IRQ line) */
}

static void sleep_until_irq(void)
{
    __asm__ volatile("ud2" ::: "memory");
}

static uint64_t number(const char **p)
{
    uint64_t v = 0;
    while (**p == ' ')
        (*p)++;
    while (**p >= '0' && **p <= '9')
        v = v * 10 + (uint64_t)(*(*p)++ - '0');
    return v;
}

/* ~100-byte lines; forever when n is 0 (flood) */
static void print_lines(uint64_t n)
{
    for (uint64_t k = 1; !n || k <= n; k++)
        guest_printf("idle: line %lu of %lu .........................................."
                     "...............\n",
                     (unsigned long)k, (unsigned long)n);
    guest_printf("idle: printed %lu\n", (unsigned long)n);
}

static void command(const char *line)
{
    uint8_t *area = (uint8_t *)(uintptr_t)AREA;
    if (!strncmp(line, "fill ", 5)) {
        const char *p = line + 5;
        uint64_t b = number(&p), n = number(&p);
        memset(area, (int)b, n * 4096);
        guest_printf("idle: filled %lu pages with %lu\n", (unsigned long)n, (unsigned long)b);
    } else if (!strncmp(line, "sum ", 4)) {
        const char *p = line + 4;
        uint64_t n = number(&p), s = 0;
        for (uint64_t i = 0; i < n * 4096; i++)
            s += area[i];
        guest_printf("idle: sum %lu %lu\n", (unsigned long)n, (unsigned long)s);
    } else if (!strncmp(line, "exit ", 5)) {
        const char *p = line + 5;
        guest_exit((int)number(&p));
    } else if (!strncmp(line, "print ", 6)) {
        const char *p = line + 6;
        print_lines(number(&p));
    } else if (!strcmp(line, "flood")) {
        print_lines(0);
    } else if (line[0]) {
        guest_printf("idle: unknown command '%s'\n", line);
    }
}

void guest_main(void)
{
    char line[64];
    unsigned len = 0;
    interrupts_init();
    if (guest_cmdline_u64("print", 0))
        print_lines(guest_cmdline_u64("print", 0));
    if (guest_cmdline_u64("flood", 0))
        print_lines(0);
    guest_printf("idle: ready\n");
    for (;;) {
        while (guest_com1_line(line, sizeof(line), &len))
            command(line);
        sleep_until_irq();
    }
}
