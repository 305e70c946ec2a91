/* What the kernel is told about the machine at entry: the e820 memory map, the Linux zero page
 * (Documentation/x86/zero-page.rst) and the PVH hvm_start_info (Xen arch-x86/hvm/start_info.h). */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

_Static_assert(sizeof(struct boot_params) == 4096, "zero page is one page");
_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "setup header at 0x1f1");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820 table at 0x2d0");
_Static_assert(offsetof(struct boot_params, acpi_rsdp_addr) == 0x070, "acpi_rsdp_addr at 0x070");
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info v1 is 56 bytes");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry is 32 bytes");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry is 24 bytes");
_Static_assert(X86_PVH_MODLIST_ADDR >= X86_PVH_INFO_ADDR + sizeof(struct hvm_start_info),
               "modlist after start_info");
_Static_assert(X86_PVH_MEMMAP_ADDR + X86_E820_MAX * sizeof(struct hvm_memmap_table_entry) <=
                   X86_ZERO_PAGE_ADDR,
               "PVH memmap below the zero page");

static int e820_add(struct x86_e820_entry *out, unsigned max, unsigned *n, uint64_t addr,
                    uint64_t size, uint32_t type, struct wisp_err *err)
{
    if (*n >= max)
        return wisp_err_set(err, ENOSPC, "e820: more than %u entries", max);
    out[(*n)++] = (struct x86_e820_entry){.addr = addr, .size = size, .type = type};
    return 0;
}

int x86_e820_build(const struct guest_mem *mem, struct x86_e820_entry *out, unsigned max,
                   struct wisp_err *err)
{
    uint64_t low_end = guest_mem_low_end(mem);
    if (mem->nr_regions == 0 || mem->regions[0].gpa != 0 || low_end < X86_MIN_RAM)
        return wisp_err_set(
            err, EINVAL,
            "e820: guest RAM must start at 0 and hold at least %llu MiB (has %llu KiB "
            "below 4 GiB)",
            X86_MIN_RAM >> 20, (unsigned long long)(low_end >> 10));
    unsigned n = 0;
    int r = e820_add(out, max, &n, 0, X86_EBDA_START, X86_E820_RAM, err);
    /* The BIOS area holds the ACPI tables and the MP table: reserved so Linux keeps it intact. */
    if (r == 0)
        r = e820_add(out, max, &n, X86_EBDA_START, X86_BIOS_END - X86_EBDA_START, X86_E820_RESERVED,
                     err);
    if (r == 0)
        r = e820_add(out, max, &n, X86_HIMEM_START, low_end - X86_HIMEM_START, X86_E820_RAM, err);
    for (unsigned i = 1; r == 0 && i < mem->nr_regions; i++)
        r = e820_add(out, max, &n, mem->regions[i].gpa, mem->regions[i].size, X86_E820_RAM, err);
    return r < 0 ? r : (int)n;
}

void x86_zero_page_init(struct boot_params *bp, const struct setup_header *hdr, unsigned hdr_len,
                        const struct x86_e820_entry *e820, unsigned n, uint64_t cmdline_addr,
                        uint64_t rsdp_addr, uint64_t initrd_addr, uint64_t initrd_size)
{
    memset(bp, 0, sizeof(*bp));
    if (hdr)
        memcpy(&bp->hdr, hdr, hdr_len < sizeof(bp->hdr) ? hdr_len : sizeof(bp->hdr));
    for (unsigned i = 0; i < n && i < E820_MAX_ENTRIES_ZEROPAGE; i++) {
        bp->e820_table[i].addr = e820[i].addr;
        bp->e820_table[i].size = e820[i].size;
        bp->e820_table[i].type = e820[i].type;
    }
    bp->e820_entries = (uint8_t)(n < E820_MAX_ENTRIES_ZEROPAGE ? n : E820_MAX_ENTRIES_ZEROPAGE);
    bp->hdr.cmd_line_ptr = (uint32_t)cmdline_addr;
    bp->ext_cmd_line_ptr = (uint32_t)(cmdline_addr >> 32);
    bp->acpi_rsdp_addr = rsdp_addr; /* zero-page.rst 0x070; Linux also scans 0xe0000-0xfffff */
    bp->hdr.type_of_loader = 0xff;  /* boot.rst: 0xff = undefined/unregistered loader */
    bp->hdr.vid_mode = 0xffff;      /* "normal" */
    bp->hdr.ramdisk_image = (uint32_t)initrd_addr;
    bp->hdr.ramdisk_size = (uint32_t)initrd_size;
    bp->ext_ramdisk_image = (uint32_t)(initrd_addr >> 32);
    bp->ext_ramdisk_size = (uint32_t)(initrd_size >> 32);
    /* Fields the boot loader owns (boot.rst "write" or "modify (obligatory)"), never the file's:
     * a crafted file must not make the kernel follow a setup_data list wisp never wrote or treat
     * the machine as another subarchitecture. */
    bp->hdr.setup_data = 0;
    bp->hdr.hardware_subarch = 0; /* X86_SUBARCH_PC */
    bp->hdr.hardware_subarch_data = 0;
    bp->hdr.loadflags &= (uint8_t)~0x20; /* QUIET_FLAG: the kernel prints as asked */
    bp->hdr.heap_end_ptr = 0;
    bp->hdr.ext_loader_ver = 0;
    bp->hdr.ext_loader_type = 0;
}

int x86_pvh_info_write(const struct guest_mem *mem, const struct x86_e820_entry *e820, unsigned n,
                       uint64_t cmdline_addr, uint64_t rsdp_addr, uint64_t initrd_addr,
                       uint64_t initrd_size, struct wisp_err *err)
{
    if (n > X86_E820_MAX)
        return wisp_err_set(err, ENOSPC, "PVH memmap: %u entries exceed %u", n, X86_E820_MAX);
    struct hvm_memmap_table_entry map[X86_E820_MAX];
    memset(map, 0, sizeof(map));
    for (unsigned i = 0; i < n; i++) /* XEN_HVM_MEMMAP_TYPE_* equal the e820 types */
        map[i] = (struct hvm_memmap_table_entry){
            .addr = e820[i].addr, .size = e820[i].size, .type = e820[i].type};
    struct hvm_start_info info = {
        .magic = XEN_HVM_START_MAGIC_VALUE,
        .version = 1,
        .cmdline_paddr = cmdline_addr,
        .rsdp_paddr = rsdp_addr,
        .memmap_paddr = X86_PVH_MEMMAP_ADDR,
        .memmap_entries = n,
    };
    struct hvm_modlist_entry module = {.paddr = initrd_addr, .size = initrd_size};
    if (initrd_size) {
        info.nr_modules = 1;
        info.modlist_paddr = X86_PVH_MODLIST_ADDR;
    }
    if (guest_mem_write(mem, X86_PVH_INFO_ADDR, &info, sizeof(info)) < 0 ||
        guest_mem_write(mem, X86_PVH_MODLIST_ADDR, &module, sizeof(module)) < 0 ||
        guest_mem_write(mem, X86_PVH_MEMMAP_ADDR, map, n * sizeof(map[0])) < 0)
        return wisp_err_set(err, EFAULT, "PVH start info at 0x%llx is outside guest RAM",
                            X86_PVH_INFO_ADDR);
    return 0;
}
