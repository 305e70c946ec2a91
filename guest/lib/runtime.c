/* The ring-3 side of the kit's start-up: per-CPU entry, the IDT, exits, exceptions, libc bits. */
#include "guest.h"
#include "kit.h"
#include "layout.h"

/* 64-bit interrupt gate (SDM vol. 3 6.14.1). */
struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t zero;
};

struct idt_gate guest_idt[IDT_ENTRIES] __attribute__((aligned(16)));

extern const char exc_stubs[];

/*
 * The IDT is plain memory, mapped user-accessible like everything else, so it is filled here at
 * native speed rather than by an emulated ring-0 loop; ring 0 only ran `lidt`.
 */
void guest_set_gate(unsigned vector, const void *handler, unsigned dpl)
{
    uint64_t h = (uintptr_t)handler;
    if (vector >= IDT_ENTRIES)
        guest_fail(__FILE__, __LINE__, "IDT vector %u: the kit's IDT has %u", vector, IDT_ENTRIES);
    guest_idt[vector] = (struct idt_gate){
        .offset_low = (uint16_t)h,
        .selector = GDT_KERNEL_CODE64,
        .type_attr = (uint8_t)(0x8e | (dpl & 3) << 5), /* present, 64-bit interrupt gate */
        .offset_mid = (uint16_t)(h >> 16),
        .offset_high = (uint32_t)(h >> 32),
    };
}

static void idt_init(void)
{
    for (unsigned v = 0; v < IDT_ENTRIES; v++)
        guest_set_gate(v, exc_stubs + v * 16, 0);
}

void guest_cpu_entry(unsigned cpu)
{
    if (cpu != 0) {
        guest_smp_ap_main(cpu);
        return;
    }
    idt_init();
    guest_bootinfo_init();
    guest_paging_init();
    guest_main();
    guest_pass();
}

static const char *const exception_names[32] = {
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
};

/* Reached from exc_common in ring 3 (CR2 is not readable here; the error code tells the access). */
void guest_exception(uint64_t vector, uint64_t error, uint64_t rip, uint64_t cs, uint64_t rsp)
{
    static volatile int reporting;
    if (__atomic_exchange_n(&reporting, 1, __ATOMIC_ACQ_REL))
        guest_exit(GUEST_EXIT_EXCEPTION); /* the reporter itself faulted, or a second CPU did */
    guest_print_lock_break();
    const char *name = vector < 32 && exception_names[vector] ? exception_names[vector] : "?";
    guest_printf("guest: EXCEPTION vector %lu (%s) on cpu %u in ring %lu: rip 0x%lx error 0x%lx "
                 "rsp 0x%lx\n",
                 (unsigned long)vector, name, guest_cpu_index(), (unsigned long)(cs & 3),
                 (unsigned long)rip, (unsigned long)error, (unsigned long)rsp);
    guest_exit(GUEST_EXIT_EXCEPTION);
}

void guest_exit(int code)
{
    outb(GUEST_PORT_TEST_EXIT, (uint8_t)code);
    /* The VMM ends the VM on that write; ring 3 cannot hlt, so wait politely. */
    for (;;)
        cpu_relax();
}

void guest_pass(void)
{
    guest_exit(GUEST_EXIT_PASS);
}

void guest_fail(const char *file, int line, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    guest_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    guest_printf("guest: FAIL %s:%d: %s\n", file, line, msg);
    guest_exit(GUEST_EXIT_FAIL);
}

void guest_reset_i8042(void)
{
    outb(GUEST_PORT_I8042_CMD, 0xfe);
}

void guest_boot_marker(uint8_t v)
{
    outb(GUEST_PORT_BOOT_MARKER, v);
}

void guest_lock(struct guest_lock *l)
{
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED))
            cpu_relax();
}

void guest_unlock(struct guest_lock *l)
{
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

static uint64_t tsc_khz(void)
{
    static uint64_t khz;
    if (khz)
        return khz;
    uint32_t r[4];
    cpuid(0, 0, r);
    uint32_t max_leaf = r[0];
    khz = 1000000; /* 1 GHz if the CPU does not say */
    if (max_leaf >= 0x15) {
        cpuid(0x15, 0, r); /* TSC = crystal * EBX / EAX */
        if (r[0] && r[1] && r[2])
            khz = (uint64_t)r[2] * r[1] / r[0] / 1000;
        else if (max_leaf >= 0x16) {
            cpuid(0x16, 0, r); /* base frequency in MHz */
            if (r[0])
                khz = (uint64_t)r[0] * 1000;
        }
    }
    return khz;
}

void guest_udelay(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_khz() / 1000;
    while ((int64_t)(rdtsc() - end) < 0)
        cpu_relax();
}

void *memset(void *s, int c, size_t n)
{
    unsigned char *p = s;
    while (n--)
        *p++ = (unsigned char)c;
    return s;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp < sp)
        return memcpy(d, s, n);
    while (n--)
        dp[n] = sp[n];
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    for (; *a && *a == *b; a++, b++)
        ;
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n && *a && *a == *b; n--, a++, b++)
        ;
    return n ? (unsigned char)*a - (unsigned char)*b : 0;
}
