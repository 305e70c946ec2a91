/*
 * A memory-bound ring-3 workload for bench/memory (the seed-002 pair: THP on and off, 1 and 2
 * vCPUs). The array is `mib=` MiB of RAM from 64 MiB up (identity-mapped with the kit's 2 MiB
 * guest pages). First every 4 KiB page is written once (the host backs it: a fault per 4 KiB
 * page, or per 2 MiB with THP), timed; then every CPU does `accesses=` dependent random loads
 * over the whole array (each address depends on the value loaded before, so the loads do not
 * overlap: each costs a TLB walk when the host maps the array with 4 KiB pages, and a cache
 * miss), timed per CPU with the TSC. A line before each phase lets the driver take the vCPU
 * threads' host CPU time at its start and end (TSC cycles include time the host gave the vCPU
 * to others: this machine's cores are shared); the guest waits half a second after its last
 * line, so that its vCPU threads still exist when the driver reads them. Lines:
 *   bench-mem: phase touch
 *   bench-mem: touch MIB MiB in C cycles
 *   bench-mem: phase walk
 *   bench-mem: cpu I: N random loads in C cycles (sum S)
 * (TSC cycles: the driver takes ratios of them.) mib must be a power of two.
 */
#include "guest.h"
#include "layout.h"

#define BASE (64ull << 20)

static uint64_t mib, accesses;
static volatile uint64_t cycles[GUEST_MAX_CPUS], sums[GUEST_MAX_CPUS];

static void walk(unsigned cpu, void *arg)
{
    const volatile uint64_t *a = (const volatile uint64_t *)(uintptr_t)BASE;
    uint64_t words = mib << 17, x = 0x9e3779b97f4a7c15ull * (cpu + 1), sum = 0;
    uint64_t t0 = rdtsc();
    for (uint64_t i = 0; i < accesses; i++) {
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t v = a[(x ^ sum) & (words - 1)];
        sum += v + 1; /* the next address depends on this load */
    }
    cycles[cpu] = rdtsc() - t0;
    sums[cpu] = sum;
}

void guest_main(void)
{
    mib = guest_cmdline_u64("mib", 256);
    accesses = guest_cmdline_u64("accesses", 4000000);
    uint64_t end = BASE + (mib << 20), top = 0;
    for (unsigned i = 0; i < guest_memmap_count(); i++) {
        const struct guest_memmap_entry *e = guest_memmap(i);
        if (e->type == 1 && e->addr <= BASE && e->addr + e->size > top)
            top = e->addr + e->size;
    }
    if (!mib || (mib & (mib - 1)))
        guest_fail(__FILE__, __LINE__, "mib=%lu is not a power of two", (unsigned long)mib);
    if (top < end)
        guest_fail(__FILE__, __LINE__, "mib=%lu needs RAM up to %lu MiB", (unsigned long)mib,
                   (unsigned long)(end >> 20));
    unsigned cpus = guest_cpu_count() > 1 ? guest_smp_boot(10000) : 1;
    volatile uint64_t *a = (volatile uint64_t *)(uintptr_t)BASE;
    guest_printf("bench-mem: phase touch\n");
    uint64_t t0 = rdtsc();
    for (uint64_t p = 0; p < mib << 8; p++)
        a[p << 9] = p;
    guest_printf("bench-mem: touch %lu MiB in %lu cycles\n", (unsigned long)mib,
                 (unsigned long)(rdtsc() - t0));
    guest_printf("bench-mem: phase walk\n");
    if (cpus > 1)
        guest_smp_run(walk, NULL);
    else
        walk(0, NULL);
    for (unsigned c = 0; c < cpus; c++)
        guest_printf("bench-mem: cpu %u: %lu random loads in %lu cycles (sum %lu)\n", c,
                     (unsigned long)accesses, (unsigned long)cycles[c], (unsigned long)sums[c]);
    guest_udelay(500000); /* the vCPU threads live on while the driver reads their CPU time */
}
