/*
 * Bringing up the other vCPUs from ring 3: the BSP copies the real-mode trampoline to low memory
 * and sends INIT + SIPI through the LAPIC's ICR (MMIO, mapped user-accessible). Each AP runs the
 * kit's ring-0 start-up (start.S), drops to ring 3 and checks in with its APIC id.
 * APs are started one at a time so that each knows its index without ring-0 atomics.
 */
#include "guest.h"
#include "kit.h"
#include "layout.h"

#define LAPIC_DEFAULT_PADDR 0xfee00000u
#define LAPIC_ID            0x020
#define LAPIC_SVR           0x0f0
#define LAPIC_ICR_LOW       0x300
#define LAPIC_ICR_HIGH      0x310
#define ICR_DELIVERY_BUSY   (1u << 12)
#define ICR_LEVEL_ASSERT    (1u << 14)
#define ICR_INIT            (5u << 8)
#define ICR_STARTUP         (6u << 8)

extern const char trampoline_start[], trampoline_end[];

volatile uint32_t guest_ap_boot_index;
static volatile uint32_t cpu_apic[GUEST_MAX_CPUS];
static volatile uint32_t cpu_checked_in[GUEST_MAX_CPUS];
static unsigned cpus_online = 1;
static bool smp_booted;

static void (*volatile work_fn)(unsigned cpu, void *arg);
static void *volatile work_arg;
static volatile uint32_t work_generation;
static volatile uint32_t work_done;

static uint64_t lapic_paddr = LAPIC_DEFAULT_PADDR;

/*
 * The LAPIC ID register, not CPUID: the VMM virtualises the LAPIC on every KVM, whereas CPUID
 * executed in ring 3 is not intercepted by every nested hypervisor (PVM returns the host CPU's).
 */
uint32_t guest_apic_id(void)
{
    return readl(lapic_paddr + LAPIC_ID) >> 24;
}

uint32_t guest_cpuid_apic_id(void)
{
    uint32_t r[4];
    cpuid(1, 0, r);
    return r[1] >> 24;
}

unsigned guest_cpu_index(void)
{
    if (!smp_booted)
        return 0;
    uint32_t id = guest_apic_id();
    for (unsigned i = 0; i < cpus_online; i++)
        if (cpu_apic[i] == id)
            return i;
    return 0;
}

uint32_t guest_cpu_apic_id(unsigned index)
{
    return index < GUEST_MAX_CPUS ? cpu_apic[index] : 0;
}

/* APIC ids of the CPUs to run: the MADT's, else "cpus=N" meaning ids 0..N-1. */
static unsigned cpu_apic_ids(uint32_t *ids, uint64_t *lapic)
{
    *lapic = LAPIC_DEFAULT_PADDR;
    unsigned n = guest_madt_apic_ids(ids, GUEST_MAX_CPUS, lapic);
    if (n)
        return n;
    n = (unsigned)guest_cmdline_u64("cpus", 1);
    if (n == 0 || n > GUEST_MAX_CPUS)
        n = 1;
    for (unsigned i = 0; i < n; i++)
        ids[i] = i;
    return n;
}

unsigned guest_cpu_count(void)
{
    uint32_t ids[GUEST_MAX_CPUS];
    uint64_t lapic;
    return cpu_apic_ids(ids, &lapic);
}

static void lapic_send_ipi(uint64_t lapic, uint32_t apic_id, uint32_t command)
{
    writel(lapic + LAPIC_ICR_HIGH, apic_id << 24);
    writel(lapic + LAPIC_ICR_LOW, command);
    for (int i = 0; i < 100000 && (readl(lapic + LAPIC_ICR_LOW) & ICR_DELIVERY_BUSY); i++)
        cpu_relax();
}

static bool wait_check_in(unsigned index, uint64_t timeout_ms)
{
    for (uint64_t waited = 0; waited < timeout_ms * 10; waited++) {
        if (__atomic_load_n(&cpu_checked_in[index], __ATOMIC_ACQUIRE))
            return true;
        guest_udelay(100);
    }
    return __atomic_load_n(&cpu_checked_in[index], __ATOMIC_ACQUIRE);
}

/* INIT, then SIPI (Intel SDM vol. 3 8.4.4.1); a second SIPI if the first was not taken. */
static bool start_ap(uint64_t lapic, uint32_t apic_id, unsigned index, unsigned timeout_ms)
{
    uint32_t vector = TRAMPOLINE_PADDR >> 12;
    guest_ap_boot_index = index;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    lapic_send_ipi(lapic, apic_id, ICR_INIT | ICR_LEVEL_ASSERT);
    lapic_send_ipi(lapic, apic_id, ICR_STARTUP | ICR_LEVEL_ASSERT | vector);
    unsigned first = timeout_ms < 200 ? timeout_ms : 200;
    if (wait_check_in(index, first))
        return true;
    lapic_send_ipi(lapic, apic_id, ICR_STARTUP | ICR_LEVEL_ASSERT | vector);
    return wait_check_in(index, timeout_ms - first);
}

unsigned guest_smp_boot(unsigned timeout_ms)
{
    if (smp_booted)
        return cpus_online;
    uint32_t ids[GUEST_MAX_CPUS];
    uint64_t lapic;
    unsigned n = cpu_apic_ids(ids, &lapic);
    lapic_paddr = lapic;
    uint32_t self = guest_apic_id();
    cpu_apic[0] = self;
    cpu_checked_in[0] = 1;
    smp_booted = true;
    memcpy((void *)(uintptr_t)TRAMPOLINE_PADDR, trampoline_start,
           (size_t)(trampoline_end - trampoline_start));
    /* Software-enable the LAPIC (SVR bit 8, spurious vector 0xff) as an OS would. */
    writel(lapic + LAPIC_SVR, readl(lapic + LAPIC_SVR) | 0x1ff);
    for (unsigned i = 0; i < n && cpus_online < GUEST_MAX_CPUS; i++) {
        if (ids[i] == self)
            continue;
        if (!start_ap(lapic, ids[i], cpus_online, timeout_ms)) {
            guest_printf("guest: smp: the CPU with APIC id %u did not check in within %u ms\n",
                         ids[i], timeout_ms);
            break; /* a late AP would take the next index: start no more */
        }
        cpus_online++;
    }
    return cpus_online;
}

void guest_smp_ap_main(unsigned cpu)
{
    cpu_apic[cpu] = guest_apic_id();
    __atomic_store_n(&cpu_checked_in[cpu], 1, __ATOMIC_RELEASE);
    uint32_t seen = 0;
    for (;;) {
        uint32_t generation = __atomic_load_n(&work_generation, __ATOMIC_ACQUIRE);
        if (generation == seen) {
            cpu_relax();
            continue;
        }
        seen = generation;
        work_fn(cpu, work_arg);
        __atomic_fetch_add(&work_done, 1, __ATOMIC_ACQ_REL);
    }
}

void guest_smp_run(void (*fn)(unsigned cpu, void *arg), void *arg)
{
    work_fn = fn;
    work_arg = arg;
    __atomic_store_n(&work_done, 0, __ATOMIC_RELEASE);
    __atomic_fetch_add(&work_generation, 1, __ATOMIC_ACQ_REL);
    fn(0, arg);
    while (__atomic_load_n(&work_done, __ATOMIC_ACQUIRE) < cpus_online - 1)
        cpu_relax();
}
