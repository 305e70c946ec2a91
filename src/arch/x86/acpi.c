/* ACPI tables for a hardware-reduced machine (ACPI 6.5): RSDP, XSDT, FADT, MADT, DSDT. */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/aml.h"
#include "common/cleanup.h"
#include "arch/x86/pc.h"

#define OEM_ID       "WISP  "
#define OEM_TABLE_ID "WISPVMM "
#define CREATOR_ID   "WISP"

struct acpi_header { /* §5.2.6 System Description Table Header */
    char signature[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem_id[6], oem_table_id[8];
    uint32_t oem_revision;
    char creator_id[4];
    uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp { /* §5.2.5.3 */
    char signature[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt_address, length;
    uint64_t xsdt_address;
    uint8_t extended_checksum, reserved[3];
} __attribute__((packed));

struct acpi_gas { /* §5.2.3.2 Generic Address Structure */
    uint8_t space_id, bit_width, bit_offset, access_size;
    uint64_t address;
} __attribute__((packed));

struct acpi_fadt { /* §5.2.9, revision 6 */
    struct acpi_header h;
    uint32_t firmware_ctrl, dsdt;
    uint8_t reserved0, preferred_pm_profile;
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
    uint32_t pm_blocks[8]; /* PM1a/b EVT, PM1a/b CNT, PM2 CNT, PM TMR, GPE0, GPE1: unused */
    uint8_t block_lengths[8];
    uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
    uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
    uint16_t iapc_boot_arch;
    uint8_t reserved1;
    uint32_t flags;
    struct acpi_gas reset_reg;
    uint8_t reset_value;
    uint16_t arm_boot_arch;
    uint8_t minor_version;
    uint64_t x_firmware_ctrl, x_dsdt;
    struct acpi_gas x_pm_blocks[8];
    struct acpi_gas sleep_control_reg, sleep_status_reg;
    uint64_t hypervisor_vendor_id;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_header) == 36, "ACPI header");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP");
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT revision 6");
_Static_assert(__builtin_offsetof(struct acpi_fadt, flags) == 112, "FADT flags");
_Static_assert(__builtin_offsetof(struct acpi_fadt, reset_reg) == 116, "FADT RESET_REG");
_Static_assert(__builtin_offsetof(struct acpi_fadt, x_dsdt) == 140, "FADT X_DSDT");
_Static_assert(__builtin_offsetof(struct acpi_fadt, sleep_control_reg) == 244, "SLEEP_CONTROL");

#define FADT_RESET_REG_SUP        (1U << 10)
#define FADT_HW_REDUCED_ACPI      (1U << 20)
#define FADT_PWR_BUTTON           (1U << 4) /* 1: no fixed-feature power button */
#define FADT_SLP_BUTTON           (1U << 5)
#define IAPC_8042                 (1U << 1) /* an i8042 at 0x60/0x64: Linux probes it */
#define IAPC_VGA_NOT_PRESENT      (1U << 2)
#define IAPC_CMOS_RTC_NOT_PRESENT (1U << 5)
#define GAS_SYSTEM_IO             1
#define GAS_ACCESS_BYTE           1

#define MADT_PCAT_COMPAT 1U
enum {
    MADT_LAPIC = 0,
    MADT_IOAPIC = 1,
    MADT_ISO = 2,
    MADT_LAPIC_NMI = 4,
    MADT_X2APIC = 9,
    MADT_X2APIC_NMI = 10
};

uint8_t x86_checksum(const void *data, uint64_t len)
{
    const uint8_t *p = data;
    uint8_t sum = 0;
    for (uint64_t i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

/* A table under construction in the host buffer that mirrors guest [base, limit). */
struct acpi_builder {
    uint8_t *buf;
    uint64_t base, limit, used;
    struct wisp_err *err;
};

static int builder_alloc(struct acpi_builder *b, uint64_t size, uint64_t *gpa, void **host)
{
    uint64_t off = (b->used + 15) & ~15ULL;
    if (size > b->limit - b->base || off > b->limit - b->base - size)
        return wisp_err_set(b->err, ENOSPC, "ACPI tables do not fit in [0x%llx, 0x%llx)",
                            (unsigned long long)b->base, (unsigned long long)b->limit);
    b->used = off + size;
    *gpa = b->base + off;
    *host = b->buf + off;
    return 0;
}

static void header_init(struct acpi_header *h, const char *sig, uint32_t length, uint8_t rev)
{
    memcpy(h->signature, sig, 4);
    h->length = length;
    h->revision = rev;
    memcpy(h->oem_id, OEM_ID, 6);
    memcpy(h->oem_table_id, OEM_TABLE_ID, 8);
    h->oem_revision = 1;
    memcpy(h->creator_id, CREATOR_ID, 4);
    h->creator_revision = 1;
    h->checksum = 0;
    h->checksum = (uint8_t)-x86_checksum(h, length);
}

/* Adds a finished table body (header + payload) to the region. */
static int add_table(struct acpi_builder *b, const char *sig, uint8_t rev, const void *data,
                     uint64_t len, uint64_t *gpa)
{
    void *host = NULL;
    int r = builder_alloc(b, len, gpa, &host);
    if (r < 0)
        return r;
    memcpy(host, data, len);
    header_init(host, sig, (uint32_t)len, rev);
    return 0;
}

static int build_dsdt(struct acpi_builder *b, const struct x86_acpi_config *cfg, uint64_t *gpa)
{
    struct aml_buf aml = AML_BUF_INIT, sb = AML_BUF_INIT;
    aml_bytes(&aml, &(struct acpi_header){0}, sizeof(struct acpi_header));
    /* \_S5_: sleep type for soft-off; with SLP_EN written to SLEEP_CONTROL_REG the VMM ends the VM.
     */
    const uint64_t s5[] = {5, 0, 0, 0};
    aml_name_package(&aml, "_S5_", s5, 4);
    /* COM1. With a hardware-reduced FADT Linux has no legacy PIC and maps no ISA interrupt by
     * itself, so the UART's IRQ must be described here or ttyS0 never gets an interrupt. */
    struct aml_buf com1 = AML_BUF_INIT;
    aml_name_integer(&com1, "_HID", 0x0105d041); /* EisaId ("PNP0501"): 16550A-compatible */
    aml_name_integer(&com1, "_UID", 0);
    aml_crs_io_irq(&com1, PORT_COM1, 8, COM1_IRQ);
    aml_device(&sb, "COM1", &com1);
    sb.failed |= com1.failed;
    aml_buf_free(&com1);
    /* The i8042's keyboard, for the same reason: Linux's i8042 driver takes its ports and IRQ 1
     * from here (without an aux device listed it does not probe the aux port). */
    struct aml_buf kbd = AML_BUF_INIT;
    aml_name_integer(&kbd, "_HID", 0x0303d041); /* EisaId ("PNP0303"): IBM enhanced keyboard */
    aml_name_integer(&kbd, "_UID", 0);
    aml_crs_io2_irq(&kbd, PORT_I8042_DATA, PORT_I8042_CMD, 1, I8042_IRQ);
    aml_device(&sb, "KBD_", &kbd);
    sb.failed |= kbd.failed;
    aml_buf_free(&kbd);
    for (unsigned i = 0; i < cfg->nr_mmio_devices; i++) {
        const struct x86_boot_mmio_device *d = &cfg->mmio_devices[i];
        char name[8];
        snprintf(name, sizeof(name), "V%03X", i & 0xfff);
        struct aml_buf dev = AML_BUF_INIT;
        aml_name_str(&dev, "_HID", "LNRO0005"); /* virtio-mmio (Linux virtio_mmio.c ACPI ids) */
        aml_name_integer(&dev, "_UID", i);
        aml_crs_mmio_irq(&dev, (uint32_t)d->base, (uint32_t)d->size, d->gsi);
        aml_device(&sb, name, &dev);
        aml_buf_free(&dev);
    }
    aml_scope(&aml, "\\_SB_", &sb);
    int r = 0;
    if (aml.failed || sb.failed)
        r = wisp_err_set(b->err, ENOMEM, "DSDT: cannot encode AML");
    else
        r = add_table(b, "DSDT", 2, aml.data, aml.len, gpa);
    aml_buf_free(&sb);
    aml_buf_free(&aml);
    return r;
}

static int build_fadt(struct acpi_builder *b, uint64_t dsdt, uint64_t *gpa)
{
    struct acpi_fadt f;
    memset(&f, 0, sizeof(f));
    f.dsdt = (uint32_t)dsdt;
    f.x_dsdt = dsdt;
    f.sci_int = 9; /* unused on a HW-reduced machine; 9 keeps Linux's SCI override off IRQ 0 */
    f.flags = FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP | FADT_PWR_BUTTON | FADT_SLP_BUTTON;
    f.iapc_boot_arch = IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT;
    f.reset_reg = (struct acpi_gas){GAS_SYSTEM_IO, 8, 0, GAS_ACCESS_BYTE, PORT_ACPI_RESET};
    f.reset_value = ACPI_RESET_VALUE;
    f.minor_version = 5; /* ACPI 6.5 */
    f.sleep_control_reg =
        (struct acpi_gas){GAS_SYSTEM_IO, 8, 0, GAS_ACCESS_BYTE, PORT_ACPI_SLEEP_CTL};
    f.sleep_status_reg =
        (struct acpi_gas){GAS_SYSTEM_IO, 8, 0, GAS_ACCESS_BYTE, PORT_ACPI_SLEEP_STS};
    memcpy(&f.hypervisor_vendor_id, "WISPVMM\0", 8);
    return add_table(b, "FACP", 6, &f, sizeof(f), gpa);
}

static void put(uint8_t **p, const void *v, size_t n)
{
    memcpy(*p, v, n);
    *p += n;
}

/* §5.2.12 MADT: one Local APIC (id < 255) or Local x2APIC entry per vCPU, the IOAPIC, ISA
 * overrides as KVM's in-kernel irqchip routes them, and LINT1 as NMI. */
static int build_madt(struct acpi_builder *b, unsigned nr_cpus, uint64_t *gpa)
{
    uint64_t size = 44 + (uint64_t)nr_cpus * 16 + 12 + 2 * 10 + 6 + 12;
    cleanup_free uint8_t *t = calloc(1, size);
    if (!t)
        return wisp_err_set(b->err, ENOMEM, "MADT: out of memory");
    uint8_t *p = t + 36;
    uint32_t lapic = (uint32_t)X86_LAPIC_ADDR, flags = MADT_PCAT_COMPAT;
    put(&p, &lapic, 4);
    put(&p, &flags, 4);
    bool any_x2apic = false;
    for (uint32_t id = 0; id < nr_cpus; id++) {
        if (id < 255) {
            uint8_t e[8] = {MADT_LAPIC, 8, (uint8_t)id, (uint8_t)id, 1 /* enabled */};
            put(&p, e, sizeof(e));
        } else {
            uint8_t e[16] = {MADT_X2APIC, 16};
            uint32_t en = 1;
            memcpy(e + 4, &id, 4);  /* x2APIC ID */
            memcpy(e + 8, &en, 4);  /* flags: enabled */
            memcpy(e + 12, &id, 4); /* ACPI processor UID */
            put(&p, e, sizeof(e));
            any_x2apic = true;
        }
    }
    uint8_t ioapic[12] = {MADT_IOAPIC, 12, X86_IOAPIC_ID, 0};
    uint32_t ioapic_addr = (uint32_t)X86_IOAPIC_ADDR, gsi_base = 0;
    memcpy(ioapic + 4, &ioapic_addr, 4);
    memcpy(ioapic + 8, &gsi_base, 4);
    put(&p, ioapic, sizeof(ioapic));
    /* ISA IRQ 0 (PIT) -> GSI 2; IRQ 9 (SCI) level, active high (flags 0x000d), as QEMU does. */
    const uint8_t iso0[10] = {MADT_ISO, 10, 0, 0, 2, 0, 0, 0, 0, 0};
    const uint8_t iso9[10] = {MADT_ISO, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0};
    put(&p, iso0, sizeof(iso0));
    put(&p, iso9, sizeof(iso9));
    const uint8_t nmi[6] = {MADT_LAPIC_NMI, 6, 0xff /* all processors */, 0, 0, 1 /* LINT1 */};
    put(&p, nmi, sizeof(nmi));
    if (any_x2apic) {
        uint8_t x2nmi[12] = {MADT_X2APIC_NMI, 12, 0, 0, 0xff, 0xff, 0xff, 0xff, 1 /* LINT1 */};
        put(&p, x2nmi, sizeof(x2nmi));
    }
    return add_table(b, "APIC", 5, t, (uint64_t)(p - t), gpa);
}

static int build_tables(struct acpi_builder *b, const struct x86_acpi_config *cfg)
{
    uint64_t rsdp_gpa, xsdt_gpa, fadt, madt, dsdt;
    void *rsdp_host = NULL, *xsdt_host = NULL;
    const uint64_t xsdt_len = 36 + 2 * 8;
    int r = builder_alloc(b, sizeof(struct acpi_rsdp), &rsdp_gpa, &rsdp_host);
    if (r == 0)
        r = builder_alloc(b, xsdt_len, &xsdt_gpa, &xsdt_host);
    if (r == 0)
        r = build_dsdt(b, cfg, &dsdt);
    if (r == 0)
        r = build_fadt(b, dsdt, &fadt);
    if (r == 0)
        r = build_madt(b, cfg->nr_cpus, &madt);
    if (r < 0)
        return r;
    uint8_t *x = xsdt_host;
    memcpy(x + 36, &fadt, 8);
    memcpy(x + 44, &madt, 8);
    header_init(xsdt_host, "XSDT", (uint32_t)xsdt_len, 1);

    struct acpi_rsdp *rsdp = rsdp_host;
    memcpy(rsdp->signature, "RSD PTR ", 8);
    memcpy(rsdp->oem_id, OEM_ID, 6);
    rsdp->revision = 2; /* ACPI 2.0+: XSDT */
    rsdp->length = sizeof(*rsdp);
    rsdp->xsdt_address = xsdt_gpa;
    rsdp->checksum = (uint8_t)-x86_checksum(rsdp, 20); /* covers the ACPI 1.0 part */
    rsdp->extended_checksum = (uint8_t)-x86_checksum(rsdp, sizeof(*rsdp));
    return 0;
}

int x86_acpi_write(const struct guest_mem *mem, uint64_t base, uint64_t limit,
                   const struct x86_acpi_config *cfg, uint64_t *rsdp, struct wisp_err *err)
{
    if (cfg->nr_cpus == 0 || cfg->nr_cpus > X86_BOOT_MAX_CPUS)
        return wisp_err_set(err, EINVAL, "ACPI: %u vCPUs is not in 1..%u", cfg->nr_cpus,
                            X86_BOOT_MAX_CPUS);
    for (unsigned i = 0; i < cfg->nr_mmio_devices; i++) {
        const struct x86_boot_mmio_device *d = &cfg->mmio_devices[i];
        if (d->base + d->size < d->base || d->base + d->size > (1ULL << 32) || d->size == 0)
            return wisp_err_set(err, EINVAL,
                                "ACPI: MMIO device %u [0x%llx, +0x%llx) is not a "
                                "window below 4 GiB",
                                i, (unsigned long long)d->base, (unsigned long long)d->size);
    }
    if (limit <= base || !gpa_to_hva(mem, base, limit - base))
        return wisp_err_set(err, EFAULT, "ACPI region [0x%llx, 0x%llx) is outside guest RAM",
                            (unsigned long long)base, (unsigned long long)limit);
    cleanup_free uint8_t *buf = calloc(1, limit - base);
    if (!buf)
        return wisp_err_set(err, ENOMEM, "ACPI: out of memory");
    struct acpi_builder b = {.buf = buf, .base = base, .limit = limit, .err = err};
    int r = build_tables(&b, cfg);
    if (r < 0)
        return r;
    guest_mem_write(mem, base, buf, b.used); /* checked above */
    *rsdp = base;
    return 0;
}
