/* Brings up every vCPU; each checks in from ring 3 with its APIC id; the BSP checks the count. */
#include "guest.h"

static volatile uint32_t seen_apic[64];

static void check_in(unsigned cpu, void *arg)
{
    (void)arg;
    uint32_t apic = guest_apic_id();
    seen_apic[cpu] = apic;
    guest_printf("smp: cpu %u checked in: apic id %u (cpuid says %u)\n", cpu, apic,
                 guest_cpuid_apic_id());
}

void guest_main(void)
{
    unsigned described = guest_cpu_count();
    unsigned online = guest_smp_boot(5000);
    guest_printf("smp: %u cpus described, %u online\n", described, online);
    GUEST_ASSERT_EQ(online, described);
    guest_smp_run(check_in, NULL);
    for (unsigned i = 0; i < online; i++) {
        GUEST_ASSERT_EQ(seen_apic[i], guest_cpu_apic_id(i));
        for (unsigned j = 0; j < i; j++)
            GUEST_ASSERT(seen_apic[i] != seen_apic[j]);
    }
    guest_printf("smp: all %u cpus checked in with distinct apic ids\n", online);
}
