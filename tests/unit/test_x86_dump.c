/* x86-boot-dump: runs x86_boot_load() into host memory (no KVM) and prints what a guest would find:
 * the protocol and entry registers, the e820 map, the zero page or hvm_start_info, the ACPI tables
 * and the MP table. A debugging aid; `meson test x86_dump` runs it on Debian's cached kernels. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/x86/boot_int.h"
#include "common/parse.h"

static const char usage[] =
    "usage: x86-boot-dump --kernel PATH [--initrd PATH] [--cmdline STR] [--mem SIZE] [--cpus N]\n"
    "Loads the kernel as wisp-vmm would, into memory of this process, and prints the boot state.\n"
    "--mem is in MiB unless suffixed (default 256); --cpus defaults to 1.\n"
    "Exit status: 0 loaded and all checksums good, 1 load failed or a bad checksum, 2 usage error, "
    "77 kernel file missing "
    "(--skip-missing).\n";

static void dump_entry(const struct x86_boot_entry *e)
{
    static const char *kinds[] = {"linux64 (bzImage, 64-bit boot protocol)", "pvh", "elf64"};
    printf("protocol   %s\n", kinds[e->kind]);
    printf("kernel     [0x%" PRIx64 ", 0x%" PRIx64 ")\n", e->kernel_start, e->kernel_end);
    if (e->initrd_size)
        printf("initrd     0x%" PRIx64 " + %" PRIu64 " bytes\n", e->initrd_start, e->initrd_size);
    printf("rip 0x%" PRIx64 " rsp 0x%" PRIx64 " rsi 0x%" PRIx64 " rbx 0x%" PRIx64
           " rflags 0x%" PRIx64 "\n",
           e->rip, e->rsp, e->rsi, e->rbx, e->rflags);
    printf("cr0 0x%" PRIx64 " cr3 0x%" PRIx64 " cr4 0x%" PRIx64 " efer 0x%" PRIx64 "\n", e->cr0,
           e->cr3, e->cr4, e->efer);
    printf("cs 0x%x (l=%u db=%u) ds 0x%x tr 0x%x gdt 0x%" PRIx64 "/%u\n", e->cs.selector, e->cs.l,
           e->cs.db, e->ds.selector, e->tr.selector, e->gdt_base, e->gdt_limit);
}

static void dump_boot_info(const struct guest_mem *mem, const struct x86_boot_entry *e)
{
    if (e->kind == X86_BOOT_PVH) {
        struct hvm_start_info si;
        guest_mem_read(mem, e->boot_info, &si, sizeof(si));
        printf("start_info magic 0x%x version %u modules %u cmdline 0x%" PRIx64 " rsdp 0x%" PRIx64
               "\n",
               si.magic, si.version, si.nr_modules, si.cmdline_paddr, si.rsdp_paddr);
        for (uint32_t i = 0; i < si.memmap_entries && i < X86_E820_MAX; i++) {
            struct hvm_memmap_table_entry m;
            guest_mem_read(mem, si.memmap_paddr + i * sizeof(m), &m, sizeof(m));
            printf("memmap     [0x%012" PRIx64 ", 0x%012" PRIx64 ") type %u\n", m.addr,
                   m.addr + m.size, m.type);
        }
        return;
    }
    struct boot_params bp;
    guest_mem_read(mem, e->boot_info, &bp, sizeof(bp));
    printf("zero page  version 0x%04x loader 0x%02x cmdline 0x%x ramdisk 0x%x+%u rsdp 0x%" PRIx64
           "\n",
           bp.hdr.version, bp.hdr.type_of_loader, bp.hdr.cmd_line_ptr, bp.hdr.ramdisk_image,
           bp.hdr.ramdisk_size, (uint64_t)bp.acpi_rsdp_addr);
    for (unsigned i = 0; i < bp.e820_entries; i++)
        printf("e820       [0x%012" PRIx64 ", 0x%012" PRIx64 ") type %u\n",
               (uint64_t)bp.e820_table[i].addr,
               (uint64_t)(bp.e820_table[i].addr + bp.e820_table[i].size), bp.e820_table[i].type);
}

/* Returns 1 when the table is missing or its checksum is wrong. */
static int dump_table(const struct guest_mem *mem, uint64_t gpa)
{
    uint8_t h[36];
    if (guest_mem_read(mem, gpa, h, sizeof(h)) < 0) {
        printf("acpi       table at 0x%" PRIx64 " outside RAM\n", gpa);
        return 1;
    }
    uint32_t len;
    memcpy(&len, h + 4, 4);
    const uint8_t *t = gpa_to_hva(mem, gpa, len);
    int bad = !t || x86_checksum(t, len) != 0;
    printf("acpi       %.4s at 0x%" PRIx64 " length %u revision %u checksum %s\n", (char *)h, gpa,
           len, h[8], bad ? "BAD" : "ok");
    return bad;
}

/* Returns the number of tables with a bad checksum. */
static int dump_firmware(const struct guest_mem *mem, const struct x86_boot_entry *e)
{
    uint8_t rsdp[36];
    guest_mem_read(mem, e->rsdp, rsdp, sizeof(rsdp));
    int bad = x86_checksum(rsdp, 20) != 0 || x86_checksum(rsdp, 36) != 0;
    printf("acpi       RSDP at 0x%" PRIx64 " revision %u checksum %s\n", e->rsdp, rsdp[15],
           bad ? "BAD" : "ok");
    uint64_t xsdt, fadt = 0;
    memcpy(&xsdt, rsdp + 24, 8);
    bad += dump_table(mem, xsdt);
    uint32_t xlen = 0;
    guest_mem_read(mem, xsdt + 4, &xlen, 4);
    for (uint32_t off = 36; off + 8 <= xlen; off += 8) {
        uint64_t p;
        guest_mem_read(mem, xsdt + off, &p, 8);
        bad += dump_table(mem, p);
        if (off == 36)
            fadt = p;
    }
    uint64_t dsdt = 0;
    guest_mem_read(mem, fadt + 140, &dsdt, 8);
    bad += dump_table(mem, dsdt);
    uint8_t fp[16];
    guest_mem_read(mem, X86_MPTABLE_ADDR, fp, sizeof(fp));
    uint32_t cfg;
    memcpy(&cfg, fp + 4, 4);
    uint8_t ch[44];
    guest_mem_read(mem, cfg, ch, sizeof(ch));
    uint16_t base_len, count;
    memcpy(&base_len, ch + 4, 2);
    memcpy(&count, ch + 34, 2);
    const uint8_t *c = gpa_to_hva(mem, cfg, base_len);
    int mp_bad = x86_checksum(fp, 16) != 0 || !c || x86_checksum(c, base_len) != 0;
    printf("mptable    %.4s at 0x%x, %.4s at 0x%x: %u entries, %u bytes, checksums %s\n",
           (char *)fp, (unsigned)X86_MPTABLE_ADDR, (char *)ch, cfg, count, base_len,
           mp_bad ? "BAD" : "ok");
    return bad + mp_bad;
}

int main(int argc, char **argv)
{
    struct x86_boot_params p = {.nr_cpus = 1};
    uint64_t mem_bytes = 256ULL << 20, cpus;
    int skip_missing = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--skip-missing")) {
            skip_missing = 1;
            continue;
        } else if (!v) {
            fprintf(stderr, "x86-boot-dump: %s needs a value\n%s", a, usage);
            return 2;
        } else if (!strcmp(a, "--kernel")) {
            p.kernel_path = v;
        } else if (!strcmp(a, "--initrd")) {
            p.initrd_path = v;
        } else if (!strcmp(a, "--cmdline")) {
            p.cmdline = v;
        } else if (!strcmp(a, "--mem") && parse_size(v, 1 << 20, &mem_bytes) == 0) {
        } else if (!strcmp(a, "--cpus") && parse_u64(v, &cpus) == 0 && cpus <= 4096) {
            p.nr_cpus = (unsigned)cpus;
        } else {
            fprintf(stderr, "x86-boot-dump: bad option or value: %s %s\n%s", a, v, usage);
            return 2;
        }
        i++;
    }
    if (!p.kernel_path) {
        fprintf(stderr, "x86-boot-dump: --kernel is required\n%s", usage);
        return 2;
    }
    if (skip_missing && access(p.kernel_path, R_OK) != 0) {
        printf("skipping: %s is not there (scripts/fetch-debian-kernel caches it)\n",
               p.kernel_path);
        return 77;
    }
    struct guest_mem mem;
    struct wisp_err err = {0};
    struct x86_boot_entry e;
    if (guest_mem_create(&mem, mem_bytes, &err) < 0 || x86_boot_load(&mem, &p, &e, &err) < 0) {
        fprintf(stderr, "x86-boot-dump: %s\n", err.msg);
        return 1;
    }
    dump_entry(&e);
    dump_boot_info(&mem, &e);
    int bad = dump_firmware(&mem, &e);
    guest_mem_destroy(&mem);
    if (bad)
        fprintf(stderr, "x86-boot-dump: %d table(s) with a bad checksum\n", bad);
    return bad ? 1 : 0;
}
