/* Internal to src/arch/x86: the fixed boot-time memory layout and the pure builders behind
 * x86_boot_load(), exported for the unit tests (tests/unit/test_x86_*.c, test_elf.c, test_acpi.c).
 */
#ifndef WISP_ARCH_X86_BOOT_INT_H
#define WISP_ARCH_X86_BOOT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <asm/bootparam.h> /* struct boot_params, struct setup_header (Linux zero-page.rst) */

#include "arch/x86/boot.h"

/* Guest-physical layout below 1 MiB (docs/boot.md has the table). */
#define X86_GDT_ADDR       0x500ULL  /* 6 descriptors: null, null, code 0x10, data 0x18, TSS 0x20 */
#define X86_PVH_INFO_ADDR  0x6000ULL /* hvm_start_info; modlist at +0x40; memmap at +0x80 */
#define X86_ZERO_PAGE_ADDR 0x7000ULL /* struct boot_params (4 KiB) */
#define X86_STACK_TOP      0x8ff0ULL /* rsp at entry: one page of stack below the page tables */
#define X86_PML4_ADDR      0x9000ULL /* identity map of [0, 4 GiB) with 2 MiB pages */
#define X86_PDPT_ADDR      0xa000ULL
#define X86_PD_ADDR        0xb000ULL  /* 4 page directories: 0xb000 .. 0xefff */
#define X86_CMDLINE_ADDR   0x20000ULL /* command line, NUL-terminated */
#define X86_CMDLINE_MAX    0x10000ULL /* bytes including the NUL */
#define X86_EBDA_START     0x9fc00ULL /* e820: [EBDA, 1 MiB) reserved */
#define X86_ACPI_ADDR      0xe0000ULL /* RSDP, then XSDT, FADT, MADT, DSDT up to X86_MPTABLE_ADDR */
#define X86_MPTABLE_ADDR   0xf0000ULL /* MP floating pointer, then the MP configuration table */
#define X86_BIOS_END       0x100000ULL
#define X86_TABLES_END     0xf8000ULL /* end of the MP table's room */
/* ELF segments may not overlap what wisp writes: [0, X86_LOW_TABLES_END) and
 * [X86_ACPI_ADDR, X86_TABLES_END); the rest of low memory ([0x30000, 0x9fc00), [0xf8000, 1 MiB))
 * is theirs, so an ELF whose first segment (with the ELF headers) starts at 0xff000 loads. */
#define X86_LOW_TABLES_END (X86_CMDLINE_ADDR + X86_CMDLINE_MAX)
#define X86_HIMEM_START    0x100000ULL /* kernels and ELF segments load at or above 1 MiB */
#define X86_IOAPIC_ADDR    0xfec00000ULL
#define X86_LAPIC_ADDR     0xfee00000ULL
#define X86_IOAPIC_ID      0 /* KVM's in-kernel IOAPIC resets its ID register to 0 */
#define X86_MIN_RAM        (2ULL << 20)

/* GDT selectors (Linux boot.rst: __BOOT_CS 0x10, __BOOT_DS 0x18). */
#define X86_BOOT_CS 0x10
#define X86_BOOT_DS 0x18
#define X86_BOOT_TR 0x20

/* ---- e820 (e820.c) ---- */
enum { X86_E820_RAM = 1, X86_E820_RESERVED = 2, X86_E820_ACPI = 3 };
#define X86_E820_MAX 8
struct x86_e820_entry {
    uint64_t addr, size;
    uint32_t type;
};
/* The guest's memory map: RAM [0, EBDA), reserved [EBDA, 1 MiB) (BIOS area: ACPI, MP table),
 * RAM [1 MiB, low end), RAM [4 GiB, ...) when present. Returns the entry count or -errno. */
int x86_e820_build(const struct guest_mem *mem, struct x86_e820_entry *out, unsigned max,
                   struct wisp_err *err);

/* ---- zero page and hvm_start_info (bootinfo.c) ---- */
/* Fills *bp from scratch: e820, cmd_line_ptr, acpi_rsdp_addr, type_of_loader. With hdr (a bzImage's
 * setup header, hdr_len bytes) the header is copied first (boot.rst "64-bit BOOT PROTOCOL"), and
 * the initrd fields (ramdisk_image/size and their ext_ high halves) are set. */
void x86_zero_page_init(struct boot_params *bp, const struct setup_header *hdr, unsigned hdr_len,
                        const struct x86_e820_entry *e820, unsigned n, uint64_t cmdline_addr,
                        uint64_t rsdp_addr, uint64_t initrd_addr, uint64_t initrd_size);

#define XEN_HVM_START_MAGIC_VALUE 0x336ec578
struct hvm_start_info { /* Xen public/arch-x86/hvm/start_info.h, version 1 */
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};
struct hvm_modlist_entry {
    uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_table_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};
#define X86_PVH_MODLIST_ADDR (X86_PVH_INFO_ADDR + 0x40)
#define X86_PVH_MEMMAP_ADDR  (X86_PVH_INFO_ADDR + 0x80)

/* Writes hvm_start_info, the module list (initrd as module 0 when initrd_size > 0) and the memmap
 * at X86_PVH_INFO_ADDR. */
int x86_pvh_info_write(const struct guest_mem *mem, const struct x86_e820_entry *e820, unsigned n,
                       uint64_t cmdline_addr, uint64_t rsdp_addr, uint64_t initrd_addr,
                       uint64_t initrd_size, struct wisp_err *err);

/* ---- Linux bzImage (bzimage.c) ---- */
struct x86_bzimage {
    struct setup_header hdr; /* as found in the file (first hdr_len bytes valid, rest zero) */
    unsigned hdr_len;     /* 0x202 + byte at 0x201 - 0x1f1, at most sizeof(struct setup_header) */
    uint64_t setup_size;  /* (setup_sects + 1) * 512: file offset of the protected-mode kernel */
    uint64_t kernel_size; /* file size - setup_size */
    uint64_t load_addr;   /* where the protected-mode kernel goes (1 MiB) */
    uint64_t entry;       /* load_addr + 0x200: startup_64 */
    uint64_t image_end;   /* load_addr + kernel_size */
    uint64_t run_addr;    /* where the kernel decompresses itself (boot.rst runtime start) */
    uint64_t run_end;     /* run_addr + init_size */
    uint64_t reserve_end; /* max(image_end, run_end) page-aligned: the kernel's memory ends here */
    uint64_t initrd_max;  /* highest address + 1 the initrd may occupy */
    uint64_t cmdline_max; /* bytes of command line the kernel accepts (without NUL) */
};
/* Validates the setup header in the first `len` bytes of a file of `file_size` bytes
 * (Documentation/x86/boot.rst); every value computed from it is overflow-checked, and the
 * kernel's memory [load_addr, reserve_end) starts at 1 MiB, above wisp's tables. It is not
 * checked against the guest's RAM here. `head` must hold at least min(file_size, 1024) bytes. */
int x86_bzimage_parse(const char *path, const uint8_t *head, uint64_t len, uint64_t file_size,
                      struct x86_bzimage *bz, struct wisp_err *err);
/* Says where run_addr comes from ("pref_address, offset 0x258", ...) into buf; returns buf. */
const char *x86_bzimage_run_origin(const struct x86_bzimage *bz, char *buf, size_t len);

/* ---- "does not fit" messages (boot.c) ---- */
#define X86_MSG_LEN 256
/* A size for messages: "70 MiB", "79.6 MiB" (rounded up to a tenth), "4 KiB", "12 bytes". */
const char *x86_fmt_size(uint64_t bytes, char *buf, size_t len);
/* For something at [start, end) that does not fit in the guest's RAM: "guest RAM up to 0x...
 * (N MiB); the guest has M MiB below 4 GiB: use --mem K or more", or why no --mem would help
 * (below 4 GiB, RAM ends at 3 GiB). Into buf; returns buf. */
const char *x86_ram_needed(const struct guest_mem *mem, uint64_t start, uint64_t end, char *buf,
                           size_t len);

/* ---- ELF (elf.c) ---- */
#define X86_ELF_MAX_LOAD         32  /* PT_LOAD segments */
#define X86_ELF_MAX_PHDRS        512 /* program headers */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
struct x86_elf_segment {
    uint64_t offset, paddr, filesz, memsz;
};
struct x86_elf {
    bool is64;
    uint64_t entry; /* e_entry */
    bool has_pvh;
    uint64_t pvh_entry; /* XEN_ELFNOTE_PHYS32_ENTRY */
    unsigned nr_segments;
    struct x86_elf_segment segments[X86_ELF_MAX_LOAD];
    uint64_t start, end; /* lowest paddr, highest paddr + memsz of the PT_LOAD segments */
};
/* Parses and validates an ELF file read from fd (file_size bytes) against the guest's RAM:
 * every PT_LOAD must lie within RAM, outside wisp's tables and the MMIO hole, without overlap.
 * Errors name `path` and the offset or field at fault. */
int x86_elf_parse(const char *path, int fd, uint64_t file_size, const struct guest_mem *mem,
                  struct x86_elf *elf, struct wisp_err *err);
/* pread()s exactly len bytes at off; a short file is an error naming path and offset. */
int x86_read_at(const char *path, int fd, uint64_t off, void *buf, uint64_t len,
                struct wisp_err *err);
/* Copies the PT_LOAD segments of a parsed file into guest memory. The .bss (p_memsz beyond
 * p_filesz) is zeroed unless mem->fresh_zero says it already reads as zero: nothing before this
 * call writes inside a segment (x86_elf_parse keeps them off wisp's tables and each other). */
int x86_elf_load(const char *path, int fd, const struct guest_mem *mem, const struct x86_elf *elf,
                 struct wisp_err *err);

/* ---- CPU state (cpu_state.c) ---- */
/* Writes the GDT and the identity-mapping page tables of [0, 4 GiB). */
int x86_cpu_tables_write(const struct guest_mem *mem, struct wisp_err *err);
/* 64-bit long mode per boot.rst "64-bit boot protocol": paging on, CS 0x10 (L=1), DS 0x18. */
void x86_entry_long_mode(struct x86_boot_entry *e, uint64_t rip, uint64_t rsi);
/* PVH: 32-bit protected mode, paging off, flat CS/DS, ebx = start_info. */
void x86_entry_pvh(struct x86_boot_entry *e, uint64_t rip, uint64_t start_info);

/* ---- MP table (mptable.c), Intel MultiProcessor Specification 1.4 ---- */
/* Writes the floating pointer at `base` and the configuration table right after it; processors
 * with APIC ids 0 .. min(nr_cpus, 255) - 1 (the MP table has 8-bit APIC ids), ISA IRQs 0-15 and
 * the IOAPIC pins above 15 that `devs` use. */
int x86_mptable_write(const struct guest_mem *mem, uint64_t base, uint64_t limit, unsigned nr_cpus,
                      const struct x86_boot_mmio_device *devs, unsigned nr_devs,
                      struct wisp_err *err);

/* ---- ACPI (acpi.c) ---- */
struct x86_acpi_config {
    unsigned nr_cpus;
    const struct x86_boot_mmio_device *mmio_devices;
    unsigned nr_mmio_devices;
};
/* Writes RSDP at `base` and XSDT, FADT, MADT, DSDT after it, all below `limit`; *rsdp = base. */
int x86_acpi_write(const struct guest_mem *mem, uint64_t base, uint64_t limit,
                   const struct x86_acpi_config *cfg, uint64_t *rsdp, struct wisp_err *err);

/* Sum of bytes modulo 256 (a correct ACPI/MP table sums to 0). */
uint8_t x86_checksum(const void *data, uint64_t len);

#endif
