/* Intel MultiProcessor Specification 1.4 tables (§4): the floating pointer and the base
 * configuration table, for guests that boot with ACPI off (Linux CONFIG_X86_MPPARSE). */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"

#define MP_SPEC_REV       4 /* 1.4 */
#define MP_LAPIC_VERSION  0x14
#define MP_IOAPIC_VERSION 0x11
#define MP_MAX_CPUS       255 /* 8-bit APIC ids; 0xff is the broadcast id */
enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IO_INTERRUPT = 3, MP_LOCAL_INTERRUPT = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

struct mp_floating_pointer { /* §4.1 */
    char signature[4];
    uint32_t config_table;
    uint8_t length, spec_rev, checksum, feature[5];
} __attribute__((packed));

struct mp_config_header { /* §4.2 */
    char signature[4];
    uint16_t base_length;
    uint8_t spec_rev, checksum;
    char oem_id[8], product_id[12];
    uint32_t oem_table;
    uint16_t oem_table_size, entry_count;
    uint32_t lapic_addr;
    uint16_t ext_length;
    uint8_t ext_checksum, reserved;
} __attribute__((packed));

struct mp_processor { /* §4.3.1 */
    uint8_t type, lapic_id, lapic_version, flags;
    uint32_t signature, features;
    uint8_t reserved[8];
} __attribute__((packed));

struct mp_interrupt { /* §4.3.4, §4.3.5: I/O and local interrupt assignment entries */
    uint8_t type, irq_type;
    uint16_t flags;
    uint8_t src_bus, src_irq, dst_id, dst_pin;
} __attribute__((packed));

_Static_assert(sizeof(struct mp_floating_pointer) == 16, "MP floating pointer");
_Static_assert(sizeof(struct mp_config_header) == 44, "MP config header");
_Static_assert(sizeof(struct mp_processor) == 20, "MP processor entry");
_Static_assert(sizeof(struct mp_interrupt) == 8, "MP interrupt entry");

static uint8_t *mp_put(uint8_t *p, const void *v, size_t n)
{
    memcpy(p, v, n);
    return p + n;
}

/* Entries after the header; returns the end pointer and counts entries in *count. */
static uint8_t *mp_entries(uint8_t *p, unsigned cpus, const struct x86_boot_mmio_device *devs,
                           unsigned nr_devs, uint16_t *count)
{
    for (unsigned id = 0; id < cpus; id++) {
        struct mp_processor cpu = {
            .type = MP_PROCESSOR,
            .lapic_id = (uint8_t)id,
            .lapic_version = MP_LAPIC_VERSION,
            .flags = 1 /* enabled */ | (id == 0 ? 2 /* bootstrap processor */ : 0),
            .signature = 0x600, /* family 6 */
            .features = 0x201,  /* CPUID.1:EDX FPU | APIC */
        };
        p = mp_put(p, &cpu, sizeof(cpu));
    }
    const uint8_t bus[8] = {MP_BUS, 0, 'I', 'S', 'A', ' ', ' ', ' '};
    p = mp_put(p, bus, sizeof(bus));
    uint8_t ioapic[8] = {MP_IOAPIC, X86_IOAPIC_ID, MP_IOAPIC_VERSION, 1 /* enabled */};
    uint32_t addr = (uint32_t)X86_IOAPIC_ADDR;
    memcpy(ioapic + 4, &addr, 4);
    p = mp_put(p, ioapic, sizeof(ioapic));
    *count = (uint16_t)(cpus + 2);
    /* ISA IRQs 0-15 on IOAPIC pins, IRQ 0 -> pin 2 as KVM's in-kernel irqchip routes it;
     * IRQ 2 (the PIC cascade) is not a device interrupt. Flags 0: conforming to the ISA bus. */
    for (uint8_t irq = 0; irq < 16; irq++) {
        if (irq == 2)
            continue;
        struct mp_interrupt e = {MP_IO_INTERRUPT,   MP_INT, 0, 0, irq, X86_IOAPIC_ID,
                                 irq == 0 ? 2 : irq};
        p = mp_put(p, &e, sizeof(e));
        (*count)++;
    }
    /* The IOAPIC pins above 15 that devices were given (virtio-mmio windows), each once, as ISA
     * interrupts of the same number (edge, active high, as Firecracker describes them), so that
     * a guest with ACPI off routes them. */
    uint32_t high = 0;
    for (unsigned i = 0; i < nr_devs; i++)
        if (devs[i].gsi >= 16 && devs[i].gsi < 32)
            high |= 1u << devs[i].gsi;
    for (uint8_t pin = 16; pin < 32; pin++) {
        if (!(high >> pin & 1))
            continue;
        struct mp_interrupt e = {MP_IO_INTERRUPT, MP_INT, 0, 0, pin, X86_IOAPIC_ID, pin};
        p = mp_put(p, &e, sizeof(e));
        (*count)++;
    }
    /* Every local APIC: LINT0 ExtINT (the PIC), LINT1 NMI. */
    const struct mp_interrupt lint0 = {MP_LOCAL_INTERRUPT, MP_EXTINT, 0, 0, 0, 0xff, 0};
    const struct mp_interrupt lint1 = {MP_LOCAL_INTERRUPT, MP_NMI, 0, 0, 0, 0xff, 1};
    p = mp_put(p, &lint0, sizeof(lint0));
    p = mp_put(p, &lint1, sizeof(lint1));
    *count += 2;
    return p;
}

int x86_mptable_write(const struct guest_mem *mem, uint64_t base, uint64_t limit, unsigned nr_cpus,
                      const struct x86_boot_mmio_device *devs, unsigned nr_devs,
                      struct wisp_err *err)
{
    if (nr_cpus == 0)
        return wisp_err_set(err, EINVAL, "MP table: no vCPUs");
    unsigned cpus = nr_cpus < MP_MAX_CPUS ? nr_cpus : MP_MAX_CPUS;
    uint64_t size = sizeof(struct mp_floating_pointer) + sizeof(struct mp_config_header) +
                    cpus * sizeof(struct mp_processor) + 8 + 8 + (17 + 16) * 8;
    if (limit <= base || size > limit - base || !gpa_to_hva(mem, base, size))
        return wisp_err_set(err, ENOSPC,
                            "MP table (%llu bytes) does not fit in guest RAM at "
                            "[0x%llx, 0x%llx)",
                            (unsigned long long)size, (unsigned long long)base,
                            (unsigned long long)limit);
    cleanup_free uint8_t *t = calloc(1, size);
    if (!t)
        return wisp_err_set(err, ENOMEM, "MP table: out of memory");
    struct mp_floating_pointer *fp = (struct mp_floating_pointer *)t;
    struct mp_config_header *h = (struct mp_config_header *)(fp + 1);
    uint16_t count = 0;
    uint8_t *end = mp_entries((uint8_t *)(h + 1), cpus, devs, nr_devs, &count);
    h->entry_count = count;

    memcpy(h->signature, "PCMP", 4);
    h->base_length = (uint16_t)(end - (uint8_t *)h);
    h->spec_rev = MP_SPEC_REV;
    memcpy(h->oem_id, "WISP    ", 8);
    memcpy(h->product_id, "WISPVMM     ", 12);
    h->lapic_addr = (uint32_t)X86_LAPIC_ADDR;
    h->checksum = (uint8_t)-x86_checksum(h, h->base_length);

    memcpy(fp->signature, "_MP_", 4);
    fp->config_table = (uint32_t)(base + sizeof(*fp));
    fp->length = 1; /* in 16-byte units */
    fp->spec_rev = MP_SPEC_REV;
    fp->checksum = (uint8_t)-x86_checksum(fp, sizeof(*fp));
    guest_mem_write(mem, base, t, (uint64_t)(end - t)); /* checked above */
    return 0;
}
