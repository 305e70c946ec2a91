/* Unit tests of the firmware tables (src/arch/x86/acpi.c, aml.c, mptable.c): checksums, lengths,
 * revisions, MADT entries per vCPU count, FADT flags and registers, DSDT AML structure, MP table.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arch/x86/aml.h"
#include "arch/x86/boot_int.h"
#include "common/cleanup.h"
#include "arch/x86/pc.h"
#include "test_x86_util.h"

#define MiB (1ULL << 20)

static uint8_t *table_at(struct guest_mem *mem, uint64_t gpa, const char *sig)
{
    uint8_t *t = gpa_to_hva(mem, gpa, 36);
    assert_non_null(t);
    assert_memory_equal(t, sig, 4);
    uint32_t len;
    memcpy(&len, t + 4, 4);
    assert_non_null(gpa_to_hva(mem, gpa, len));
    assert_true(gpa + len <= X86_MPTABLE_ADDR);
    assert_int_equal(x86_checksum(t, len), 0); /* every table sums to zero */
    return t;
}

static uint32_t le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

struct acpi_view {
    struct guest_mem mem;
    uint8_t *rsdp, *xsdt, *fadt, *madt, *dsdt;
};

static void acpi_build(struct acpi_view *v, unsigned nr_cpus,
                       const struct x86_boot_mmio_device *devs, unsigned nr_devs)
{
    assert_int_equal(guest_mem_create(&v->mem, 64 * MiB, NULL), 0);
    struct x86_acpi_config cfg = {
        .nr_cpus = nr_cpus, .mmio_devices = devs, .nr_mmio_devices = nr_devs};
    uint64_t rsdp = 0;
    struct wisp_err err = {0};
    int r = x86_acpi_write(&v->mem, X86_ACPI_ADDR, X86_MPTABLE_ADDR, &cfg, &rsdp, &err);
    if (r < 0)
        fail_msg("%s", err.msg);
    assert_true(rsdp == X86_ACPI_ADDR);
    v->rsdp = gpa_to_hva(&v->mem, rsdp, 36);
    /* ACPI 6.5 §5.2.5.3: revision 2, checksum over 20 bytes, extended checksum over 36. */
    assert_memory_equal(v->rsdp, "RSD PTR ", 8);
    assert_int_equal(v->rsdp[15], 2);
    assert_int_equal(le32(v->rsdp + 20), 36);
    assert_int_equal(x86_checksum(v->rsdp, 20), 0);
    assert_int_equal(x86_checksum(v->rsdp, 36), 0);
    v->xsdt = table_at(&v->mem, le64(v->rsdp + 24), "XSDT");
    assert_int_equal(le32(v->xsdt + 4), 36 + 2 * 8);
    v->fadt = table_at(&v->mem, le64(v->xsdt + 36), "FACP");
    v->madt = table_at(&v->mem, le64(v->xsdt + 44), "APIC");
    v->dsdt = table_at(&v->mem, le64(v->fadt + 140), "DSDT");
    assert_int_equal(le32(v->fadt + 40), le64(v->fadt + 140)); /* DSDT == X_DSDT */
}

static void test_fadt_hw_reduced_reset_and_sleep_registers(void **state)
{
    struct acpi_view v;
    acpi_build(&v, 1, NULL, 0);
    const uint8_t *f = v.fadt;
    assert_int_equal(le32(f + 4), 276); /* ACPI 6.x FADT length */
    assert_int_equal(f[8], 6);          /* revision */
    uint32_t flags = le32(f + 112);
    assert_true(flags & (1U << 20)); /* HW_REDUCED_ACPI */
    assert_true(flags & (1U << 10)); /* RESET_REG_SUP */
    /* IAPC_BOOT_ARCH: an 8042 (Linux probes the i8042 only then), no VGA, no CMOS RTC */
    assert_int_equal(f[109] | f[110] << 8, (1U << 1) | (1U << 2) | (1U << 5));
    /* RESET_REG: system I/O, 8 bits, byte access, port 0x600; value 0x0f. */
    const uint8_t reset_gas[4] = {1, 8, 0, 1};
    assert_memory_equal(f + 116, reset_gas, 4);
    assert_true(le64(f + 120) == PORT_ACPI_RESET);
    assert_int_equal(f[128], ACPI_RESET_VALUE);
    assert_memory_equal(f + 244, reset_gas, 4);
    assert_true(le64(f + 248) == PORT_ACPI_SLEEP_CTL);
    assert_memory_equal(f + 256, reset_gas, 4);
    assert_true(le64(f + 260) == PORT_ACPI_SLEEP_STS);
    guest_mem_destroy(&v.mem);
}

struct madt_counts {
    unsigned lapic, x2apic, ioapic, iso, nmi;
};

static struct madt_counts walk_madt(const uint8_t *m, unsigned nr_cpus)
{
    struct madt_counts c = {0};
    uint32_t len = le32(m + 4);
    assert_true(le32(m + 36) == X86_LAPIC_ADDR);
    uint8_t seen[X86_BOOT_MAX_CPUS] = {0};
    for (uint32_t off = 44; off < len;) {
        const uint8_t *e = m + off;
        assert_true(e[1] >= 2 && off + e[1] <= len);
        switch (e[0]) {
        case 0: /* Processor Local APIC: uid, id, flags (enabled) */
            assert_int_equal(e[1], 8);
            assert_true(e[3] < nr_cpus && e[3] < 255 && !seen[e[3]]);
            seen[e[3]] = 1;
            assert_int_equal(le32(e + 4) & 1, 1);
            c.lapic++;
            break;
        case 9: /* Processor Local x2APIC: id at 4, flags at 8 */
            assert_int_equal(e[1], 16);
            assert_true(le32(e + 4) >= 255 && le32(e + 4) < nr_cpus && !seen[le32(e + 4)]);
            seen[le32(e + 4)] = 1;
            assert_int_equal(le32(e + 8) & 1, 1);
            c.x2apic++;
            break;
        case 1:
            assert_int_equal(e[1], 12);
            assert_true(le32(e + 4) == X86_IOAPIC_ADDR);
            assert_int_equal(le32(e + 8), 0); /* GSI base */
            c.ioapic++;
            break;
        case 2:
            assert_int_equal(e[1], 10);
            if (e[3] == 0)
                assert_int_equal(le32(e + 4), 2); /* ISA IRQ 0 -> GSI 2 */
            c.iso++;
            break;
        default:
            c.nmi++;
        }
        off += e[1];
    }
    return c;
}

static void test_madt_one_entry_per_cpu(void **state)
{
    const unsigned counts[] = {1, 2, 8, 254, 255, 300};
    for (size_t i = 0; i < ARRAY_SIZE(counts); i++) {
        struct acpi_view v;
        acpi_build(&v, counts[i], NULL, 0);
        assert_int_equal(v.madt[8] >= 4, 1); /* revision */
        struct madt_counts c = walk_madt(v.madt, counts[i]);
        unsigned n = counts[i];
        assert_int_equal(c.lapic, n < 255 ? n : 255);
        assert_int_equal(c.x2apic, n > 255 ? n - 255 : 0);
        assert_int_equal(c.ioapic, 1);
        assert_int_equal(c.iso, 2);
        assert_int_equal(c.nmi, n > 255 ? 2 : 1);
        guest_mem_destroy(&v.mem);
    }
}

static void test_acpi_refuses_bad_cpu_counts(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 64 * MiB, NULL), 0);
    uint64_t rsdp;
    struct wisp_err err = {0};
    struct x86_acpi_config cfg = {.nr_cpus = 0};
    assert_int_equal(x86_acpi_write(&mem, X86_ACPI_ADDR, X86_MPTABLE_ADDR, &cfg, &rsdp, &err),
                     -EINVAL);
    cfg.nr_cpus = X86_BOOT_MAX_CPUS + 1;
    assert_int_equal(x86_acpi_write(&mem, X86_ACPI_ADDR, X86_MPTABLE_ADDR, &cfg, &rsdp, &err),
                     -EINVAL);
    /* The largest machine still fits below the MP table. */
    cfg.nr_cpus = X86_BOOT_MAX_CPUS;
    assert_int_equal(x86_acpi_write(&mem, X86_ACPI_ADDR, X86_MPTABLE_ADDR, &cfg, &rsdp, &err), 0);
    guest_mem_destroy(&mem);
}

/* ---- AML: a small decoder that checks every PkgLength against the bytes it covers ---- */
struct aml_stats {
    unsigned devices, names, hids;
    bool s5;
};

static size_t pkg_length(const uint8_t *p, size_t *len)
{
    unsigned extra = p[0] >> 6;
    if (!extra) {
        *len = p[0] & 0x3f;
        return 1;
    }
    size_t v = p[0] & 0xf;
    for (unsigned i = 0; i < extra; i++)
        v |= (size_t)p[1 + i] << (4 + 8 * i);
    *len = v;
    return 1 + extra;
}

static size_t name_string(const uint8_t *p)
{
    return p[0] == '\\' ? 5 : 4;
}

static size_t data_object(const uint8_t *p)
{
    size_t len;
    switch (p[0]) {
    case 0x00:
    case 0x01:
    case 0xff:
        return 1;
    case 0x0a:
        return 2;
    case 0x0b:
        return 3;
    case 0x0c:
        return 5;
    case 0x0e:
        return 9;
    case 0x0d:
        return 2 + strlen((const char *)p + 1);
    case 0x11:
    case 0x12:
        pkg_length(p + 1, &len);
        return 1 + len;
    }
    fail_msg("unexpected AML data object 0x%02x", p[0]);
    return 0;
}

static void walk_terms(const uint8_t *p, size_t n, struct aml_stats *s)
{
    size_t off = 0;
    while (off < n) {
        const uint8_t *t = p + off;
        size_t len, hdr;
        if (t[0] == 0x08) { /* Name */
            s->names++;
            if (memcmp(t + 1, "_S5_", 4) == 0) {
                assert_int_equal(t[5], 0x12); /* Package */
                s->s5 = true;
            }
            if (memcmp(t + 1, "_HID", 4) == 0 && t[5] == 0x0d &&
                strcmp((const char *)t + 6, "LNRO0005") == 0)
                s->hids++;
            off += 1 + name_string(t + 1) + data_object(t + 1 + name_string(t + 1));
        } else if (t[0] == 0x10 || (t[0] == 0x5b && t[1] == 0x82)) { /* Scope, Device */
            size_t op = t[0] == 0x10 ? 1 : 2;
            hdr = pkg_length(t + op, &len);
            assert_true(off + op + len <= n);
            size_t nm = name_string(t + op + hdr);
            s->devices += op == 2;
            walk_terms(t + op + hdr + nm, len - hdr - nm, s);
            off += op + len;
        } else {
            fail_msg("unexpected AML opcode 0x%02x at %zu", t[0], off);
        }
    }
    assert_int_equal(off, n); /* the lengths add up exactly */
}

static void test_dsdt_aml_structure(void **state)
{
    const struct x86_boot_mmio_device devs[3] = {
        {0xd0000000, 0x1000, 5}, {0xd0001000, 0x1000, 6}, {0xd0002000, 0x1000, 7}};
    for (unsigned nr = 0; nr <= 3; nr++) {
        struct acpi_view v;
        acpi_build(&v, 2, devs, nr);
        assert_int_equal(v.dsdt[8], 2); /* revision 2: 64-bit integers */
        struct aml_stats s = {0};
        walk_terms(v.dsdt + 36, le32(v.dsdt + 4) - 36, &s);
        assert_true(s.s5);
        assert_int_equal(s.devices, nr + 2); /* COM1 and the keyboard are always described */
        assert_int_equal(s.hids, nr);        /* virtio-mmio ids */
        /* COM1: _HID EisaId("PNP0501") and IO (Decode16, 0x3F8, 0x3F8, 0, 8) IRQNoFlags () {4},
         * which Linux needs to route IRQ 4 with a hardware-reduced FADT. */
        const uint8_t hid[] = {'_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01};
        const uint8_t crs[] = {0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00,
                               0x08, 0x22, 0x10, 0x00, 0x79, 0x00};
        size_t dlen = le32(v.dsdt + 4);
        assert_non_null(memmem(v.dsdt, dlen, hid, sizeof(hid)));
        assert_non_null(memmem(v.dsdt, dlen, crs, sizeof(crs)));
        /* the i8042's keyboard: EisaId("PNP0303"), IO 0x60 and 0x64 (1 port each), IRQ 1 */
        const uint8_t kbd_hid[] = {'_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x03, 0x03};
        const uint8_t kbd_crs[] = {0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x00, 0x01, 0x47, 0x01,
                                   0x64, 0x00, 0x64, 0x00, 0x00, 0x01, 0x22, 0x02, 0x00, 0x79};
        assert_non_null(memmem(v.dsdt, dlen, kbd_hid, sizeof(kbd_hid)));
        assert_non_null(memmem(v.dsdt, dlen, kbd_crs, sizeof(kbd_crs)));
        guest_mem_destroy(&v.mem);
    }
}

static void test_aml_encodings(void **state)
{
    struct aml_buf b = AML_BUF_INIT;
    aml_pkg_length(&b, 10);   /* one byte: 11 */
    aml_pkg_length(&b, 100);  /* two bytes: 102 = 0x66 -> 0x46 0x06 */
    aml_pkg_length(&b, 5000); /* three bytes: 5003 = 0x138b -> 0x8b 0x38 0x01 */
    aml_integer(&b, 0);
    aml_integer(&b, 1);
    aml_integer(&b, 0x12);
    aml_integer(&b, 0x1234);
    aml_integer(&b, 0x12345678);
    aml_integer(&b, 0x100000000ULL);
    const uint8_t want[] = {0x0b, 0x46, 0x06, 0x8b, 0x38, 0x01, 0x00, 0x01, 0x0a,
                            0x12, 0x0b, 0x34, 0x12, 0x0c, 0x78, 0x56, 0x34, 0x12,
                            0x0e, 0,    0,    0,    0,    1,    0,    0,    0};
    assert_false(b.failed);
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    aml_buf_free(&b);
    aml_name_string(&b, "TOOLONG"); /* only 4-character NameSegs */
    assert_true(b.failed);
    aml_buf_free(&b);
}

static void test_aml_crs_matches_iasl(void **state)
{
    /* iasl 20200925 compiles Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite,
     * 0xd0000000, 0x1000) Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 5 } })
     * to these bytes. */
    const uint8_t want[] = {0x08, '_',  'C',  'R',  'S',  0x11, 0x1a, 0x0a, 0x17, 0x86, 0x09,
                            0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00, 0x89,
                            0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00, 0x79, 0x00};
    struct aml_buf b = AML_BUF_INIT;
    aml_crs_mmio_irq(&b, 0xd0000000, 0x1000, 5);
    assert_false(b.failed);
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    aml_buf_free(&b);
}

/* Reads a whole small file into a NUL-terminated malloc'd string. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* An independent decoder: ACPICA's disassembler (Debian's acpica-tools) reads every table without
 * a warning, and decodes the DSDT into the ASL wisp means. Skipped when iasl is not installed. */
static void test_tables_disassemble_with_iasl(void **state)
{
    if (system("command -v iasl >/dev/null 2>&1") != 0) {
        print_message("skipping: iasl (acpica-tools) is not installed\n");
        skip();
    }
    const struct x86_boot_mmio_device devs[1] = {{0xd0000000, 0x200, 5}};
    struct acpi_view v;
    acpi_build(&v, 300, devs, 1);
    char dir[] = "/tmp/wisp-acpi-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const struct {
        const char *name;
        const uint8_t *t;
    } tables[] = {{"xsdt", v.xsdt}, {"facp", v.fadt}, {"apic", v.madt}, {"dsdt", v.dsdt}};
    for (size_t i = 0; i < ARRAY_SIZE(tables); i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s.dat", dir, tables[i].name);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(tables[i].t, 1, le32(tables[i].t + 4), f), le32(tables[i].t + 4));
        fclose(f);
    }
    char cmd[512], path[256];
    snprintf(cmd, sizeof(cmd), "cd %s && for t in *.dat; do iasl -d $t; done >log 2>&1", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/log", dir);
    cleanup_free char *log = slurp(path);
    assert_non_null(log);
    if (strstr(log, "Warning") || strstr(log, "Error"))
        fail_msg("iasl complained:\n%s", log);
    snprintf(path, sizeof(path), "%s/dsdt.dsl", dir);
    cleanup_free char *dsl = slurp(path);
    assert_non_null(dsl);
    assert_non_null(strstr(dsl, "Name (_S5, Package (0x04)"));
    assert_non_null(strstr(dsl, "Name (_HID, \"LNRO0005\")"));
    assert_non_null(strstr(dsl, "Name (_HID, EisaId (\"PNP0303\")"));
    assert_non_null(strstr(dsl, "Memory32Fixed (ReadWrite,"));
    assert_non_null(strstr(dsl, "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive"));
    snprintf(path, sizeof(path), "%s/facp.dsl", dir);
    cleanup_free char *fadt = slurp(path);
    assert_non_null(fadt);
    assert_non_null(strstr(fadt, "Hardware Reduced (V5) : 1"));
    assert_non_null(strstr(fadt, "8042 Present on ports 60/64 (V2) : 1"));
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    guest_mem_destroy(&v.mem);
}

/* ---- MP table ---- */
static void test_mptable(void **state)
{
    const unsigned counts[] = {1, 2, 8, 254, 300};
    for (size_t i = 0; i < ARRAY_SIZE(counts); i++) {
        struct guest_mem mem;
        assert_int_equal(guest_mem_create(&mem, 64 * MiB, NULL), 0);
        struct wisp_err err = {0};
        assert_int_equal(
            x86_mptable_write(&mem, X86_MPTABLE_ADDR, X86_TABLES_END, counts[i], NULL, 0, &err), 0);
        const uint8_t *fp = gpa_to_hva(&mem, X86_MPTABLE_ADDR, 16);
        assert_memory_equal(fp, "_MP_", 4);
        assert_int_equal(fp[8], 1); /* length in paragraphs */
        assert_int_equal(fp[9], 4); /* spec 1.4 */
        assert_int_equal(x86_checksum(fp, 16), 0);
        assert_int_equal(fp[11], 0); /* feature byte 1: a configuration table is present */
        const uint8_t *h = gpa_to_hva(&mem, le32(fp + 4), 44);
        assert_memory_equal(h, "PCMP", 4);
        uint16_t base_len, count;
        memcpy(&base_len, h + 4, 2);
        memcpy(&count, h + 34, 2);
        assert_non_null(gpa_to_hva(&mem, le32(fp + 4), base_len));
        assert_true(le32(fp + 4) + base_len <= X86_TABLES_END);
        assert_int_equal(x86_checksum(h, base_len), 0);
        assert_true(le32(h + 36) == X86_LAPIC_ADDR);
        unsigned cpus = 0, bsp = 0, buses = 0, ioapics = 0, ioints = 0, lints = 0;
        bool irq0_to_pin2 = false;
        size_t off = 44;
        for (unsigned e = 0; e < count; e++) {
            const uint8_t *p = h + off;
            switch (p[0]) {
            case 0:
                assert_int_equal(p[1], cpus);
                assert_true(p[3] & 1);
                bsp += (p[3] & 2) != 0;
                cpus++, off += 20;
                break;
            case 1:
                assert_memory_equal(p + 2, "ISA   ", 6);
                buses++, off += 8;
                break;
            case 2:
                assert_true(le32(p + 4) == X86_IOAPIC_ADDR && (p[3] & 1));
                ioapics++, off += 8;
                break;
            case 3:
                if (p[5] == 0)
                    irq0_to_pin2 = p[7] == 2;
                ioints++, off += 8;
                break;
            case 4:
                lints++, off += 8;
                break;
            default:
                fail_msg("bad MP entry type %u", p[0]);
            }
        }
        assert_int_equal(off, base_len);
        assert_int_equal(cpus, counts[i] < 255 ? counts[i] : 255);
        assert_int_equal(bsp, 1);
        assert_int_equal(buses, 1);
        assert_int_equal(ioapics, 1);
        assert_int_equal(ioints, 15); /* ISA IRQs 0-15 but the cascade */
        assert_int_equal(lints, 2);
        assert_true(irq0_to_pin2);
        guest_mem_destroy(&mem);
    }
}

/* The IOAPIC pins above 15 that devices were given appear once each as I/O interrupt entries
 * (pin = source IRQ); pins no device has do not. */
static void test_mptable_device_pins(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 64 * MiB, NULL), 0);
    const struct x86_boot_mmio_device devs[] = {{0xd0000000, 0x1000, 5},
                                                {0xd0001000, 0x1000, 17},
                                                {0xd0002000, 0x1000, 20},
                                                {0xd0003000, 0x1000, 17}};
    struct wisp_err err = {0};
    assert_int_equal(x86_mptable_write(&mem, X86_MPTABLE_ADDR, X86_TABLES_END, 2, devs, 4, &err),
                     0);
    const uint8_t *fp = gpa_to_hva(&mem, X86_MPTABLE_ADDR, 16);
    const uint8_t *h = gpa_to_hva(&mem, le32(fp + 4), 44);
    uint16_t base_len, count;
    memcpy(&base_len, h + 4, 2);
    memcpy(&count, h + 34, 2);
    assert_int_equal(x86_checksum(h, base_len), 0);
    unsigned pins[32] = {0};
    size_t off = 44;
    for (unsigned e = 0; e < count; e++) {
        const uint8_t *p = h + off;
        if (p[0] == 3) {
            assert_int_equal(p[5], p[7] == 2 ? 0 : p[7]); /* source IRQ = pin (0 -> pin 2) */
            pins[p[7]]++;
        }
        off += p[0] == 0 ? 20 : 8;
    }
    assert_int_equal(off, base_len);
    assert_int_equal(pins[17], 1);
    assert_int_equal(pins[20], 1);
    assert_int_equal(pins[18], 0);
    assert_int_equal(pins[5], 1); /* an ISA line, listed with the others */
    guest_mem_destroy(&mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mptable_device_pins),
        cmocka_unit_test(test_fadt_hw_reduced_reset_and_sleep_registers),
        cmocka_unit_test(test_madt_one_entry_per_cpu),
        cmocka_unit_test(test_acpi_refuses_bad_cpu_counts),
        cmocka_unit_test(test_dsdt_aml_structure),
        cmocka_unit_test(test_aml_encodings),
        cmocka_unit_test(test_aml_crs_matches_iasl),
        cmocka_unit_test(test_tables_disassemble_with_iasl),
        cmocka_unit_test(test_mptable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
