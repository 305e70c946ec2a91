/*
 * The test-guest kit: a freestanding runtime for small guests that wisp-vmm (or QEMU) boots
 * through PVH. A test is one C file defining `void guest_main(void)`; it runs in ring 3 with
 * IOPL=3, so it may use port I/O and MMIO directly. Returning from guest_main passes the test.
 *
 * Call order: guest_main() may call anything here. guest_smp_boot() must run before
 * guest_smp_run(). Printing is serialised across CPUs (one lock, whole lines).
 * Exit statuses (through the test-exit port 0xf4): 0 pass, GUEST_EXIT_FAIL for GUEST_ASSERT,
 * GUEST_EXIT_EXCEPTION when a CPU takes an exception.
 */
#ifndef WISP_GUEST_H
#define WISP_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_EXIT_PASS      0
#define GUEST_EXIT_FAIL      1
#define GUEST_EXIT_EXCEPTION 3

#define GUEST_PORT_COM1        0x3f8
#define GUEST_PORT_I8042_CMD   0x64
#define GUEST_PORT_TEST_EXIT   0xf4
#define GUEST_PORT_BOOT_MARKER 0x440

/* The test body, written by each test guest. Runs on CPU 0 in ring 3. */
void guest_main(void);

/* ---- port I/O and MMIO (ring 3 with IOPL=3; MMIO pages are mapped uncached) ---- */
static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

#define GUEST_MMIO_ACCESSORS(suffix, type)                                                         \
    static inline type read##suffix(uint64_t paddr)                                                \
    {                                                                                              \
        return *(volatile type *)(uintptr_t)paddr;                                                 \
    }                                                                                              \
    static inline void write##suffix(uint64_t paddr, type v)                                       \
    {                                                                                              \
        *(volatile type *)(uintptr_t)paddr = v;                                                    \
    }
GUEST_MMIO_ACCESSORS(b, uint8_t)
GUEST_MMIO_ACCESSORS(w, uint16_t)
GUEST_MMIO_ACCESSORS(l, uint32_t)
GUEST_MMIO_ACCESSORS(q, uint64_t)

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    __asm__ volatile("cpuid"
                     : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(subleaf));
}

/* ---- serial console (COM1) ---- */
void guest_putc(char c);
/* Reads what COM1 has received without waiting, into line[*len] (at most size - 1 bytes kept):
 * true when a line ended (CR or LF), which is then in line, NUL-terminated, and *len is 0 again. */
bool guest_com1_line(char *line, unsigned size, unsigned *len);
void guest_puts(const char *s); /* no newline added */
/* printf subset: %d %i %u %x %X %p %s %c %%, with l/ll/z, width, '0' and '-' flags. */
int guest_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int guest_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
int guest_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int guest_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* ---- ending the test ---- */
/* Writes `code` to the test-exit port (wisp-vmm exits with it; QEMU's isa-debug-exit with
 * 2*code+1). */
__attribute__((noreturn)) void guest_exit(int code);
__attribute__((noreturn)) void guest_pass(void);
/* Prints "guest: FAIL file:line: message" and exits with GUEST_EXIT_FAIL. */
__attribute__((noreturn, format(printf, 3, 4))) void guest_fail(const char *file, int line,
                                                                const char *fmt, ...);
/* Pulses the reset line through the i8042 (wisp-vmm ends the VM with status 0). */
void guest_reset_i8042(void);
/* Writes the boot marker port (wisp-vmm prints the time since it started). */
void guest_boot_marker(uint8_t v);

#define GUEST_ASSERT(cond)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            guest_fail(__FILE__, __LINE__, "assertion failed: %s", #cond);                         \
    } while (0)
#define GUEST_ASSERT_EQ(a, b)                                                                      \
    do {                                                                                           \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                           \
        if (a_ != b_)                                                                              \
            guest_fail(__FILE__, __LINE__, "%s == %s: 0x%lx != 0x%lx", #a, #b, (unsigned long)a_,  \
                       (unsigned long)b_);                                                         \
    } while (0)

/* Points IDT `vector` (below 32) at a ring-0 `handler` (an interrupt gate of privilege `dpl`):
 * for guests that take interrupts or sleep in `hlt` (the kit's IDT is plain memory). */
void guest_set_gate(unsigned vector, const void *handler, unsigned dpl);

/* ---- what the VMM told us (PVH hvm_start_info) ---- */
struct guest_memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type; /* E820 types: 1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable */
    uint32_t reserved;
};
const char *guest_cmdline(void); /* "" if none */
/* The value of "key=value" on the command line into buf; false if absent. */
bool guest_cmdline_get(const char *key, char *buf, size_t size);
/* Same, parsed as a number (decimal or 0x hex); `fallback` if absent or malformed. */
uint64_t guest_cmdline_u64(const char *key, uint64_t fallback);
unsigned guest_memmap_count(void);
const struct guest_memmap_entry *guest_memmap(unsigned i);
uint64_t guest_rsdp_paddr(void); /* 0 if the VMM gave none */
/* Identity-maps [addr, addr + size) for ring 3 when it lies above 4 GiB (a device's region
 * outside the memory map, e.g. virtio-pmem's): whole GiBs, 2 MiB pages, up to 64 GiB; false
 * beyond that. RAM of the memory map is mapped already. */
bool guest_map_phys(uint64_t addr, uint64_t size);
/* The physical address of an ACPI table found through the RSDP/XSDT/RSDT, or 0. */
uint64_t guest_acpi_find(const char signature[4]);

/* ---- CPUs ---- */
uint32_t guest_apic_id(void);       /* this CPU's APIC id, from its LAPIC ID register */
uint32_t guest_cpuid_apic_id(void); /* the initial APIC id CPUID.1:EBX[31:24] reports */
unsigned guest_cpu_index(void);     /* 0 on the BSP, 1.. on APs in boot order */
/* CPUs the firmware tables describe (the MADT's enabled local APICs; else cmdline "cpus=N"). */
unsigned guest_cpu_count(void);
/*
 * Starts every AP (INIT-SIPI through the LAPIC, from ring 3); each runs the kit's ring-0 start-up
 * and checks in from ring 3. Returns the number of CPUs online (BSP included) once all checked in
 * or `timeout_ms` passed for one of them. Idempotent.
 */
unsigned guest_smp_boot(unsigned timeout_ms);
uint32_t guest_cpu_apic_id(unsigned index); /* APIC id that CPU `index` reported at check-in */
/* Runs fn(cpu index, arg) on every online CPU, the BSP included, and waits for all of them. */
void guest_smp_run(void (*fn)(unsigned cpu, void *arg), void *arg);

/* A spin lock for ring-3 code on several CPUs. */
struct guest_lock {
    volatile int locked;
};
void guest_lock(struct guest_lock *l);
void guest_unlock(struct guest_lock *l);

/* Busy-waits about `us` microseconds (TSC-based; rate from CPUID 0x15/0x16, else 1 GHz assumed). */
void guest_udelay(uint64_t us);

/* freestanding helpers the compiler may call */
void *memset(void *s, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

#endif
