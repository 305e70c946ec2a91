/* The demo guest: says hello, lists the CPUs it brought up and the memory map it was given. */
#include "guest.h"

static const char *e820_type_name(uint32_t type)
{
    switch (type) {
    case 1:
        return "RAM";
    case 2:
        return "reserved";
    case 3:
        return "ACPI tables";
    case 4:
        return "ACPI NVS";
    case 5:
        return "unusable";
    default:
        return "other";
    }
}

void guest_main(void)
{
    guest_printf(
        "\nHello from a wisp guest! This test body runs in ring 3 of a KVM virtual machine.\n");
    const char *cmdline = guest_cmdline();
    guest_printf("command line: \"%s\"\n", cmdline);

    unsigned described = guest_cpu_count();
    unsigned online = guest_smp_boot(2000);
    guest_printf("CPUs: %u described by the firmware tables, %u online:", described, online);
    for (unsigned i = 0; i < online; i++)
        guest_printf(" cpu%u=apic%u", i, guest_cpu_apic_id(i));
    guest_printf("\n");

    uint64_t ram = 0;
    guest_printf("memory map (%u entries):\n", guest_memmap_count());
    for (unsigned i = 0; i < guest_memmap_count(); i++) {
        const struct guest_memmap_entry *e = guest_memmap(i);
        guest_printf("  [0x%012lx - 0x%012lx) %s\n", (unsigned long)e->addr,
                     (unsigned long)(e->addr + e->size), e820_type_name(e->type));
        if (e->type == 1)
            ram += e->size;
    }
    guest_printf("%lu KiB of RAM. Bye!\n", (unsigned long)(ram >> 10));
    guest_pass();
}
