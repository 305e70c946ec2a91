/* Unit tests of src/arch/x86 boot: e820 layouts, the bzImage setup-header checks, the zero page
 * and the 64-bit boot protocol's CPU state (Documentation/x86/boot.rst). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "arch/x86/boot_int.h"
#include "common/cleanup.h"
#include "test_x86_util.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static void expect_e820(const struct x86_e820_entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
    assert_true(e->addr == addr);
    assert_true(e->size == size);
    assert_int_equal(e->type, type);
}

static int e820_for(uint64_t bytes, struct x86_e820_entry *e)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_layout(&mem, bytes, NULL), 0);
    return x86_e820_build(&mem, e, X86_E820_MAX, NULL);
}

static void test_e820_64mib(void **state)
{
    struct x86_e820_entry e[X86_E820_MAX];
    assert_int_equal(e820_for(64 * MiB, e), 3);
    expect_e820(&e[0], 0, 0x9fc00, X86_E820_RAM);
    expect_e820(&e[1], 0x9fc00, 0x100000 - 0x9fc00, X86_E820_RESERVED);
    expect_e820(&e[2], 0x100000, 63 * MiB, X86_E820_RAM);
}

static void test_e820_1gib(void **state)
{
    struct x86_e820_entry e[X86_E820_MAX];
    assert_int_equal(e820_for(GiB, e), 3);
    expect_e820(&e[2], 0x100000, GiB - MiB, X86_E820_RAM);
}

static void test_e820_6gib_splits_around_the_hole(void **state)
{
    struct x86_e820_entry e[X86_E820_MAX];
    assert_int_equal(e820_for(6 * GiB, e), 4);
    expect_e820(&e[2], 0x100000, 3 * GiB - MiB, X86_E820_RAM);
    expect_e820(&e[3], 4 * GiB, 3 * GiB, X86_E820_RAM);
}

static void test_e820_64gib(void **state)
{
    struct x86_e820_entry e[X86_E820_MAX];
    assert_int_equal(e820_for(64 * GiB, e), 4);
    expect_e820(&e[3], 4 * GiB, 61 * GiB, X86_E820_RAM);
    uint64_t ram = 0;
    for (int i = 0; i < 4; i++)
        ram += e[i].type == X86_E820_RAM ? e[i].size : 0;
    assert_true(ram == 64 * GiB - (MiB - 0x9fc00)); /* all RAM but the BIOS area */
}

static void test_e820_rejects_tiny_ram(void **state)
{
    struct x86_e820_entry e[X86_E820_MAX];
    struct wisp_err err = {0};
    struct guest_mem mem;
    assert_int_equal(guest_mem_layout(&mem, MiB, NULL), 0);
    assert_int_equal(x86_e820_build(&mem, e, X86_E820_MAX, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "at least"));
}

/* A minimal bzImage: one setup sector after the boot sector, then `payload` bytes of kernel. */
struct fake_bz {
    uint8_t bytes[1024 + 8192];
    size_t len;
};

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}
static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void fake_bz_init(struct fake_bz *bz, uint16_t version, uint32_t init_size)
{
    memset(bz, 0, sizeof(*bz));
    uint8_t *b = bz->bytes;
    b[0x1f1] = 1;                /* setup_sects */
    put32(b + 0x1f4, 8192 / 16); /* syssize */
    put16(b + 0x1fe, 0xaa55);
    b[0x200] = 0xeb, b[0x201] = 0x6a; /* jmp: header ends at 0x26c */
    memcpy(b + 0x202, "HdrS", 4);
    put16(b + 0x206, version);
    b[0x211] = LOADED_HIGH;
    put32(b + 0x214, 0x100000);   /* code32_start */
    put32(b + 0x22c, 0x7fffffff); /* initrd_addr_max */
    put32(b + 0x230, 0x200000);   /* kernel_alignment */
    b[0x234] = 1;                 /* relocatable_kernel */
    put16(b + 0x236, XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
    put32(b + 0x238, 2047);      /* cmdline_size */
    put64(b + 0x258, 0x1000000); /* pref_address */
    put32(b + 0x260, init_size);
    for (size_t i = 0; i < 8192; i++)
        b[1024 + i] = (uint8_t)(i * 7 + 3);
    bz->len = sizeof(bz->bytes);
}

struct boot_run {
    struct guest_mem mem;
    struct x86_boot_entry entry;
    struct wisp_err err;
    int ret;
};

/* Writes kernel (and an initrd of initrd_len bytes) to files and runs x86_boot_load. */
static void boot_run(struct boot_run *run, uint64_t ram, const void *kernel, size_t len,
                     size_t initrd_len, const char *cmdline)
{
    memset(run, 0, sizeof(*run));
    assert_int_equal(guest_mem_create(&run->mem, ram, NULL), 0);
    char *kpath = x86_test_tmpfile(kernel, len);
    uint8_t *initrd = calloc(1, initrd_len + 1);
    for (size_t i = 0; i < initrd_len; i++)
        initrd[i] = (uint8_t)(i ^ 0x5a);
    char *ipath = initrd_len ? x86_test_tmpfile(initrd, initrd_len) : NULL;
    assert_non_null(kpath);
    struct x86_boot_params p = {
        .kernel_path = kpath, .initrd_path = ipath, .cmdline = cmdline, .nr_cpus = 2};
    run->ret = x86_boot_load(&run->mem, &p, &run->entry, &run->err);
    if (run->ret == 0 && initrd_len) {
        uint8_t *got = gpa_to_hva(&run->mem, run->entry.initrd_start, initrd_len);
        assert_non_null(got);
        assert_memory_equal(got, initrd, initrd_len);
    }
    free(initrd);
    x86_test_rmfile(kpath);
    x86_test_rmfile(ipath);
}

static void test_bzimage_64bit_boot(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 32 * MiB);
    struct boot_run run;
    boot_run(&run, 128 * MiB, bz.bytes, bz.len, 3 * MiB + 5, "console=ttyS0 root=/dev/vda");
    assert_int_equal(run.ret, 0);
    struct x86_boot_entry *e = &run.entry;
    assert_int_equal(e->kind, X86_BOOT_LINUX64);
    /* Protected-mode kernel at 1 MiB, entry at code32_start + 0x200. */
    assert_memory_equal(gpa_to_hva(&run.mem, 0x100000, 8192), bz.bytes + 1024, 8192);
    assert_true(e->rip == 0x100200);
    assert_true(e->rsi == X86_ZERO_PAGE_ADDR);
    /* Decompression room: pref_address 16 MiB + init_size 32 MiB. */
    assert_true(e->kernel_end == 48 * MiB);

    struct boot_params bp;
    assert_int_equal(guest_mem_read(&run.mem, X86_ZERO_PAGE_ADDR, &bp, sizeof(bp)), 0);
    assert_int_equal(bp.hdr.header, 0x53726448);
    assert_int_equal(bp.hdr.version, 0x020f);
    assert_int_equal(bp.hdr.type_of_loader, 0xff);
    assert_int_equal(bp.hdr.loadflags & LOADED_HIGH, LOADED_HIGH);
    assert_int_equal(bp.hdr.cmd_line_ptr, X86_CMDLINE_ADDR);
    assert_string_equal((char *)gpa_to_hva(&run.mem, X86_CMDLINE_ADDR, 1),
                        "console=ttyS0 root=/dev/vda");
    assert_true(bp.acpi_rsdp_addr == X86_ACPI_ADDR);
    /* Initrd page-aligned, as high as possible below min(initrd_addr_max, RAM top). */
    assert_int_equal(bp.hdr.ramdisk_image, (128 * MiB - (3 * MiB + 5)) & ~0xfffULL);
    assert_int_equal(bp.hdr.ramdisk_size, 3 * MiB + 5);
    assert_int_equal(bp.ext_ramdisk_image, 0);
    assert_true(e->initrd_start == bp.hdr.ramdisk_image);
    /* The same e820 as the builder's. */
    struct x86_e820_entry map[X86_E820_MAX];
    int n = x86_e820_build(&run.mem, map, X86_E820_MAX, NULL);
    assert_int_equal(bp.e820_entries, n);
    for (int i = 0; i < n; i++) {
        assert_true(bp.e820_table[i].addr == map[i].addr);
        assert_true(bp.e820_table[i].size == map[i].size);
        assert_int_equal(bp.e820_table[i].type, map[i].type);
    }
    guest_mem_destroy(&run.mem);
}

/* The loader's own fields of the zero page come from wisp, never from the file: a crafted header
 * with a setup_data pointer, another subarchitecture or QUIET_FLAG does not reach the kernel. */
static void test_bzimage_loader_fields_not_from_the_file(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 32 * MiB);
    put64(bz.bytes + 0x250, 0x7000);     /* setup_data: at the zero page itself */
    put32(bz.bytes + 0x23c, 2);          /* hardware_subarch: Xen */
    put64(bz.bytes + 0x240, 0x12345678); /* hardware_subarch_data */
    bz.bytes[0x211] |= 0x20;             /* QUIET_FLAG */
    put16(bz.bytes + 0x224, 0xfe00);     /* heap_end_ptr */
    struct boot_run run;
    boot_run(&run, 128 * MiB, bz.bytes, bz.len, 0, "");
    assert_int_equal(run.ret, 0);
    struct boot_params bp;
    assert_int_equal(guest_mem_read(&run.mem, X86_ZERO_PAGE_ADDR, &bp, sizeof(bp)), 0);
    assert_true(bp.hdr.setup_data == 0);
    assert_int_equal(bp.hdr.hardware_subarch, 0);
    assert_true(bp.hdr.hardware_subarch_data == 0);
    assert_int_equal(bp.hdr.loadflags & 0x20, 0);
    assert_int_equal(bp.hdr.heap_end_ptr, 0);
    assert_int_equal(bp.hdr.loadflags & LOADED_HIGH, LOADED_HIGH); /* the file's own flag stays */
    guest_mem_destroy(&run.mem);
}

static void test_long_mode_cpu_state(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020c, 4 * MiB);
    struct boot_run run;
    boot_run(&run, 64 * MiB, bz.bytes, bz.len, 0, NULL);
    assert_int_equal(run.ret, 0);
    const struct x86_boot_entry *e = &run.entry;
    assert_true(e->cr0 & 0x1);             /* PE */
    assert_true(e->cr0 & 0x80000000);      /* PG */
    assert_true(e->cr4 & 0x20);            /* PAE */
    assert_true(e->efer == 0x500);         /* LME | LMA */
    assert_true((e->rflags & 0x200) == 0); /* interrupts off */
    assert_true(e->cr3 == X86_PML4_ADDR);
    assert_int_equal(e->cs.selector, 0x10);
    assert_int_equal(e->cs.l, 1);
    assert_int_equal(e->cs.db, 0);
    assert_int_equal(e->ds.selector, 0x18);
    assert_int_equal(e->tr.type, 0xb);
    /* GDT per boot.rst: __BOOT_CS 0x10 flat 64-bit code, __BOOT_DS 0x18 flat data. */
    assert_true(e->gdt_base == X86_GDT_ADDR);
    assert_true(x86_test_read64(&run.mem, X86_GDT_ADDR + 0x10) == 0x00af9b000000ffffULL);
    assert_true(x86_test_read64(&run.mem, X86_GDT_ADDR + 0x18) == 0x00cf93000000ffffULL);
    assert_true(e->gdt_limit >= 0x27);
    /* Identity map of [0, 4 GiB) with 2 MiB pages: walk it for a few addresses. */
    const uint64_t probes[] = {0, 0x100000, 0x3fe00000, 0xc0000000, 0xfee00000, 0xffe00000};
    for (size_t i = 0; i < ARRAY_SIZE(probes); i++) {
        uint64_t va = probes[i];
        uint64_t pml4e = x86_test_read64(&run.mem, e->cr3 + ((va >> 39) & 511) * 8);
        assert_true(pml4e & 1);
        uint64_t pdpte = x86_test_read64(&run.mem, (pml4e & ~0xfffULL) + ((va >> 30) & 511) * 8);
        assert_true(pdpte & 1);
        uint64_t pde = x86_test_read64(&run.mem, (pdpte & ~0xfffULL) + ((va >> 21) & 511) * 8);
        assert_true((pde & 0x83) == 0x83); /* present, writable, 2 MiB page */
        assert_true((pde & ~0x1fffffULL) == (va & ~0x1fffffULL));
    }
    /* No initrd: the fields stay zero. */
    struct boot_params bp;
    assert_int_equal(guest_mem_read(&run.mem, X86_ZERO_PAGE_ADDR, &bp, sizeof(bp)), 0);
    assert_int_equal(bp.hdr.ramdisk_image, 0);
    assert_int_equal(bp.hdr.ramdisk_size, 0);
    assert_int_equal(*(char *)gpa_to_hva(&run.mem, X86_CMDLINE_ADDR, 1), 0);
    guest_mem_destroy(&run.mem);
}

static void test_bzimage_initrd_below_addr_max_on_big_guests(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 32 * MiB);
    const uint64_t sizes[] = {6 * GiB, 64 * GiB};
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        struct boot_run run;
        boot_run(&run, sizes[i], bz.bytes, bz.len, 4096 * 3 + 1, "x");
        assert_int_equal(run.ret, 0);
        assert_true(run.entry.initrd_start + run.entry.initrd_size <= 0x80000000ULL);
        assert_true(run.entry.initrd_start == ((0x80000000ULL - (4096 * 3 + 1)) & ~0xfffULL));
        struct boot_params bp;
        assert_int_equal(guest_mem_read(&run.mem, X86_ZERO_PAGE_ADDR, &bp, sizeof(bp)), 0);
        assert_int_equal(bp.e820_entries, 4);
        assert_true(bp.e820_table[3].addr == 4 * GiB);
        assert_true(bp.e820_table[3].size == sizes[i] - 3 * GiB);
        guest_mem_destroy(&run.mem);
    }
}

/* Each case breaks one thing in a valid fake bzImage; the error must say what and where. */
static void test_bzimage_bad_headers(void **state)
{
    static const struct {
        const char *what;
        unsigned off, width;
        uint32_t value;
        int err;
        const char *msg;
    } cases[] = {
        {"too old", 0x206, 2, 0x020b, -ENOEXEC, "2.11 (offset 0x206) is too old"},
        {"ancient", 0x206, 2, 0x0200, -ENOEXEC, "needs 2.12"},
        {"no LOADED_HIGH", 0x211, 1, 0, -ENOEXEC, "LOADED_HIGH"},
        {"no 64-bit entry", 0x236, 2, 0, -ENOEXEC, "XLF_KERNEL_64"},
        {"no boot flag", 0x1fe, 2, 0, -ENOEXEC, "boot_flag at offset 0x1fe"},
        {"setup past end", 0x1f1, 1, 200, -ENOEXEC, "setup_sects 200 (offset 0x1f1)"},
        {"syssize past end", 0x1f4, 4, 0x100000, -ENOEXEC, "syssize (offset 0x1f4)"},
        {"short header", 0x201, 1, 0x10, -ENOEXEC, "before pref_address"},
        {"bad alignment", 0x230, 4, 0x300000, -ENOEXEC, "kernel_alignment"},
        {"init_size beyond RAM", 0x260, 4, 0x7000000, -ENOSPC, "to decompress"},
        {"no HdrS", 0x202, 4, 0, -ENOEXEC, "neither an ELF file"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        static struct fake_bz bz;
        fake_bz_init(&bz, 0x020f, 8 * MiB);
        memcpy(bz.bytes + cases[i].off, &cases[i].value, cases[i].width);
        struct boot_run run;
        boot_run(&run, 64 * MiB, bz.bytes, bz.len, 0, "");
        print_message("case '%s': %s\n", cases[i].what, run.err.msg);
        assert_int_equal(run.ret, cases[i].err);
        assert_non_null(strstr(run.err.msg, cases[i].msg));
        assert_non_null(strstr(run.err.msg, "wisp-x86-test-")); /* names the file */
        guest_mem_destroy(&run.mem);
    }
}

static void test_bzimage_truncated_files(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 8 * MiB);
    const size_t lens[] = {0, 1, 0x1f1, 0x205, 0x230, 0x26b, 1024, 1025, 1024 + 4096};
    for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
        struct boot_run run;
        boot_run(&run, 64 * MiB, bz.bytes, lens[i], 0, "");
        print_message("length %zu: %s\n", lens[i], run.err.msg);
        assert_true(run.ret < 0);
        guest_mem_destroy(&run.mem);
    }
}

static void test_bzimage_cmdline_and_initrd_limits(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 8 * MiB);
    put32(bz.bytes + 0x238, 16); /* cmdline_size */
    struct boot_run run;
    boot_run(&run, 64 * MiB, bz.bytes, bz.len, 0, "0123456789abcdef"); /* 16: fits */
    assert_int_equal(run.ret, 0);
    guest_mem_destroy(&run.mem);
    boot_run(&run, 64 * MiB, bz.bytes, bz.len, 0, "0123456789abcdefg");
    assert_int_equal(run.ret, -E2BIG);
    assert_non_null(strstr(run.err.msg, "command line"));
    guest_mem_destroy(&run.mem);
    /* 64 MiB RAM, kernel reserves up to 24 MiB: a 48 MiB initrd cannot fit above it. */
    boot_run(&run, 64 * MiB, bz.bytes, bz.len, 48 * MiB, "");
    assert_int_equal(run.ret, -ENOSPC);
    assert_non_null(strstr(run.err.msg, "initrd"));
    guest_mem_destroy(&run.mem);
}

/* ---- crafted setup headers (issue 8): a header is untrusted input ---- */

/* The byte at 0x201 says the header runs to 0x301; wisp's struct setup_header ends at 0x26c, and
 * what the file has after that must not land in the fields that follow the copy. */
static void test_bzimage_header_copy_stays_in_struct(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 8 * MiB);
    bz.bytes[0x201] = 0xff;
    memset(bz.bytes + 0x26c, 0xa5, 0x300 - 0x26c);
    struct x86_bzimage parsed;
    struct wisp_err err = {0};
    assert_int_equal(x86_bzimage_parse("crafted", bz.bytes, 1024, bz.len, &parsed, &err), 0);
    assert_int_equal(parsed.hdr_len, sizeof(struct setup_header));
    assert_int_equal(parsed.hdr_len, 0x26c - 0x1f1);
    assert_true(parsed.setup_size == 1024);
    assert_true(parsed.kernel_size == 8192);
    assert_true(parsed.entry == 0x100200);
    assert_memory_equal(&parsed.hdr, bz.bytes + 0x1f1, sizeof(parsed.hdr));
    /* The zero page carries the header and nothing of the file past it. */
    struct boot_run run;
    boot_run(&run, 64 * MiB, bz.bytes, bz.len, 0, "");
    assert_int_equal(run.ret, 0);
    uint8_t *zp = gpa_to_hva(&run.mem, X86_ZERO_PAGE_ADDR, 4096);
    assert_memory_equal(zp + 0x202, "HdrS", 4);
    for (unsigned off = 0x26c; off < 0x290; off++)
        assert_int_equal(zp[off], 0);
    guest_mem_destroy(&run.mem);
}

struct bz_field {
    unsigned off, width; /* width 0 ends the list */
    uint64_t value;
};

/* Each case crafts header fields so that wisp's arithmetic (align_up, pref_address + init_size,
 * initrd_addr_max + 1, ...) would wrap or place something over wisp's own data. Whatever happens,
 * the kernel's area starts at >= 1 MiB and ends inside RAM, and the initrd lies above the kernel
 * and inside RAM: never over the zero page, command line, page tables or ACPI/MP tables. */
static void test_bzimage_crafted_placement(void **state)
{
    static const struct {
        const char *what;
        struct bz_field f[4];
        size_t file_len; /* 0: the whole fake image */
        int err;
        const char *msg[3];
    } cases[] = {
        {"pref_address + init_size wraps",
         {{0x258, 8, 0xffffffffffe00000ULL}, {0x260, 4, 0x800000}},
         0,
         -ENOEXEC,
         {"runs at 0xffffffffffe00000 (pref_address, offset 0x258)",
          "init_size 0x800000 (offset 0x260)", "past the end of the address space"}},
        {"rounding the decompression end to a page wraps (initrd would go on the ACPI tables)",
         {{0x234, 1, 0}, {0x258, 8, 0xfffffffffffff001ULL}, {0x260, 4, 0x10}, {0x22c, 4, 0xeffff}},
         0,
         -ENOEXEC,
         {"runs at 0xfffffffffffff001 (pref_address, offset 0x258)",
          "init_size 0x10 (offset 0x260)", "past the end of the address space"}},
        {"aligning pref_address up to kernel_alignment wraps",
         {{0x258, 8, 0xffffffffffe00001ULL}},
         0,
         -ENOEXEC,
         {"pref_address 0xffffffffffe00001 (offset 0x258)",
          "kernel_alignment 0x200000 (offset 0x230)", "past the end of the address space"}},
        {"non-relocatable kernel running below 1 MiB, over the boot tables",
         {{0x234, 1, 0}, {0x258, 8, X86_CMDLINE_ADDR}},
         0,
         -ENOEXEC,
         {"relocatable_kernel 0, offset 0x234", "pref_address 0x20000 (offset 0x258)",
          "below 1 MiB"}},
        {"initrd_addr_max below the kernel",
         {{0x22c, 4, 0xeffff}},
         0,
         -ENOSPC,
         {"ends at 0x1800000", "initrd_addr_max 0xeffff (offset 0x22c)", "only below 0xf0000"}},
        {"initrd_addr_max inside the decompression area",
         {{0x22c, 4, 0x17fffff}},
         0,
         -ENOSPC,
         {"ends at 0x1800000", "initrd_addr_max 0x17fffff (offset 0x22c)"}},
        {"kernel_alignment far above RAM",
         {{0x230, 4, 0x80000000}},
         0,
         -ENOSPC,
         {"up to 0x80800000", "kernel_alignment 0x80000000", "use --mem 2056M or more"}},
        {"non-relocatable kernel in the MMIO hole",
         {{0x234, 1, 0}, {0x258, 8, 0xfec00000ULL}},
         0,
         -ENOSPC,
         {"runs at 0xfec00000 (pref_address, offset 0x258)", "no --mem holds it"}},
        {"header ends before init_size (read as 0: the initrd would go over the kernel)",
         {{0x201, 1, 0x5e}},
         0,
         -ENOEXEC,
         {"ends at 0x260", "init_size at 0x260"}},
        {"image too short for the 64-bit entry at +0x200",
         {{0x1f4, 4, 0}},
         1024 + 0x200,
         -ENOEXEC,
         {"512 bytes", "64-bit entry"}},
    };
    unsigned failed = 0;
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        static struct fake_bz bz;
        fake_bz_init(&bz, 0x020f, 8 * MiB);
        for (const struct bz_field *f = cases[i].f; f->width; f++)
            memcpy(bz.bytes + f->off, &f->value, f->width);
        struct boot_run run;
        boot_run(&run, 64 * MiB, bz.bytes, cases[i].file_len ? cases[i].file_len : bz.len, 4096,
                 "");
        print_message("case '%s': %d %s\n", cases[i].what, run.ret, run.err.msg);
        const struct x86_boot_entry *e = &run.entry;
        const char *wrong = NULL;
        if (run.ret == 0 &&
            (e->kernel_start < X86_HIMEM_START || e->kernel_end > 64 * MiB ||
             e->initrd_start < e->kernel_end || e->initrd_start + e->initrd_size > 64 * MiB))
            wrong = "places the kernel or initrd over wisp's data or outside RAM";
        else if (run.ret != cases[i].err)
            wrong = "returns the wrong error";
        else if (!strstr(run.err.msg, "wisp-x86-test-"))
            wrong = "does not name the file";
        for (unsigned m = 0; !wrong && m < 3 && cases[i].msg[m]; m++)
            if (!strstr(run.err.msg, cases[i].msg[m]))
                wrong = cases[i].msg[m];
        if (wrong) {
            print_error("case '%s' FAILS: %s (returned %d, initrd at 0x%llx)\n", cases[i].what,
                        wrong, run.ret, (unsigned long long)e->initrd_start);
            failed++;
        }
        guest_mem_destroy(&run.mem);
    }
    assert_int_equal(failed, 0);
}

/* Every value of the header's length byte, of setup_sects and of the alignment and placement
 * fields' extremes: parsing never fails by wrapping, and whatever it accepts lies in RAM. */
static void test_bzimage_header_extremes(void **state)
{
    static const uint64_t prefs[] = {
        0, 0x100000, 0xfffff000ULL, 0xffffffffULL, 1ULL << 32, 0x8000000000000000ULL, UINT64_MAX};
    static const uint32_t sizes[] = {0, 1, 0x1000, 0x7fffffff, 0xffffffff};
    static const uint32_t aligns[] = {0x1000, 0x200000, 0x80000000};
    for (size_t a = 0; a < ARRAY_SIZE(prefs); a++)
        for (size_t b = 0; b < ARRAY_SIZE(sizes); b++)
            for (size_t c = 0; c < ARRAY_SIZE(aligns); c++)
                for (int reloc = 0; reloc < 2; reloc++) {
                    static struct fake_bz bz;
                    fake_bz_init(&bz, 0x020f, sizes[b]);
                    put64(bz.bytes + 0x258, prefs[a]);
                    put32(bz.bytes + 0x230, aligns[c]);
                    bz.bytes[0x234] = (uint8_t)reloc;
                    struct x86_bzimage p;
                    struct wisp_err err = {0};
                    int r = x86_bzimage_parse("x", bz.bytes, 1024, bz.len, &p, &err);
                    if (r < 0) {
                        assert_int_equal(r, -ENOEXEC);
                        assert_non_null(strstr(err.msg, "offset 0x"));
                        continue;
                    }
                    /* Accepted: the reserved area covers the image and the run area. */
                    uint64_t run_end;
                    assert_false(__builtin_add_overflow(prefs[a], (uint64_t)sizes[b], &run_end));
                    assert_true(p.reserve_end >= run_end);
                    assert_true(p.reserve_end >= X86_HIMEM_START + p.kernel_size);
                    assert_true((p.reserve_end & 0xfff) == 0);
                }
    for (unsigned len = 0; len < 256; len++) {
        static struct fake_bz bz;
        fake_bz_init(&bz, 0x020f, 8 * MiB);
        bz.bytes[0x201] = (uint8_t)len;
        memset(bz.bytes + 0x26c, 0x5a, 0x300 - 0x26c);
        struct x86_bzimage p;
        if (x86_bzimage_parse("x", bz.bytes, 1024, bz.len, &p, NULL) == 0)
            assert_true(p.hdr_len <= sizeof(struct setup_header));
    }
}

/* ---- "does not fit" messages: the numbers add up and say what would fix it ---- */

/* A sparse file of `size` bytes whose first `len` bytes are `head`. */
static char *sparse_file(const void *head, size_t len, uint64_t size)
{
    char *path = x86_test_tmpfile(head, len);
    assert_non_null(path);
    assert_int_equal(truncate(path, (off_t)size), 0);
    return path;
}

static void boot_files(struct boot_run *run, uint64_t ram, const char *kpath, const char *ipath)
{
    memset(run, 0, sizeof(*run));
    assert_int_equal(guest_mem_create(&run->mem, ram, NULL), 0);
    struct x86_boot_params p = {.kernel_path = kpath, .initrd_path = ipath, .nr_cpus = 1};
    run->ret = x86_boot_load(&run->mem, &p, &run->entry, &run->err);
    print_message("%s\n", run->err.msg);
}

static void expect_msg(const struct boot_run *run, int err, const char *path, const char *msg)
{
    char want[512];
    snprintf(want, sizeof(want), "%s%s", path, msg);
    assert_int_equal(run->ret, err);
    assert_string_equal(run->err.msg, want);
}

static void test_bzimage_too_big_messages(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 8 * MiB);
    put32(bz.bytes + 0x1f4, 0); /* syssize: no claim, the file decides */
    /* A 70 MiB kernel image: its own bytes, not init_size, need the RAM. */
    char *k = sparse_file(bz.bytes, bz.len, 1024 + 70 * MiB);
    struct boot_run run;
    boot_files(&run, 64 * MiB, k, NULL);
    expect_msg(&run, -ENOSPC, k,
               ": the protected-mode kernel (0x4600000 bytes, 70 MiB, from file offset 0x400) "
               "loads at 0x100000, so it needs guest RAM up to 0x4700000 (71 MiB); the guest has "
               "64 MiB below 4 GiB: use --mem 71M or more");
    guest_mem_destroy(&run.mem);
    x86_test_rmfile(k);

    /* Decompression: pref_address + init_size, with a size that is not a whole MiB. */
    put32(bz.bytes + 0x260, 0x3f98000);
    k = sparse_file(bz.bytes, bz.len, bz.len);
    boot_files(&run, 64 * MiB, k, NULL);
    expect_msg(&run, -ENOSPC, k,
               ": to decompress, the kernel runs at 0x1000000 (pref_address, offset 0x258) and "
               "needs init_size 0x3f98000 (63.6 MiB, offset 0x260) from there, so it needs guest "
               "RAM up to 0x4f98000 (79.6 MiB); the guest has 64 MiB below 4 GiB: use --mem 80M "
               "or more");
    guest_mem_destroy(&run.mem);
    x86_test_rmfile(k);

    /* The run address comes from kernel_alignment. */
    put32(bz.bytes + 0x260, 0x800000);
    put32(bz.bytes + 0x230, 0x4000000);
    k = sparse_file(bz.bytes, bz.len, bz.len);
    boot_files(&run, 64 * MiB, k, NULL);
    expect_msg(&run, -ENOSPC, k,
               ": to decompress, the kernel runs at 0x4000000 (pref_address 0x1000000 aligned up "
               "to kernel_alignment 0x4000000, offsets 0x258 and 0x230) and needs init_size "
               "0x800000 (8 MiB, offset 0x260) from there, so it needs guest RAM up to 0x4800000 "
               "(72 MiB); the guest has 64 MiB below 4 GiB: use --mem 72M or more");
    guest_mem_destroy(&run.mem);
    x86_test_rmfile(k);
}

static void test_initrd_too_big_messages(void **state)
{
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 8 * MiB); /* decompression area [16 MiB, 24 MiB) */
    char *k = sparse_file(bz.bytes, bz.len, bz.len);
    char *initrd = sparse_file("", 0, 70 * MiB);
    struct boot_run run;
    boot_files(&run, 64 * MiB, k, initrd);
    char msg[512];
    snprintf(msg, sizeof(msg),
             "initrd %s (0x4600000 bytes, 70 MiB) does not fit: it goes page-aligned above the "
             "kernel, which ends at 0x1800000, so it needs guest RAM up to 0x5e00000 (94 MiB); "
             "the guest has 64 MiB below 4 GiB: use --mem 94M or more",
             initrd);
    expect_msg(&run, -ENOSPC, "", msg);
    guest_mem_destroy(&run.mem);
    /* With that much RAM it loads. */
    boot_files(&run, 94 * MiB, k, initrd);
    assert_int_equal(run.ret, 0);
    assert_true(run.entry.initrd_start == 0x1800000);
    guest_mem_destroy(&run.mem);
    /* The kernel's initrd_addr_max, not the RAM, is the limit: more RAM would not help. */
    put32(bz.bytes + 0x22c, 0x3ffffff);
    x86_test_rmfile(k);
    k = sparse_file(bz.bytes, bz.len, bz.len);
    boot_files(&run, 256 * MiB, k, initrd);
    snprintf(msg, sizeof(msg),
             "initrd %s (0x4600000 bytes, 70 MiB) does not fit: it goes page-aligned above the "
             "kernel, which ends at 0x1800000, and would end at 0x5e00000, but the kernel takes "
             "an initrd only below 0x4000000: initrd_addr_max 0x3ffffff (offset 0x22c)",
             initrd);
    expect_msg(&run, -ENOSPC, "", msg);
    guest_mem_destroy(&run.mem);
    x86_test_rmfile(k);
    x86_test_rmfile(initrd);
}

static void test_bad_paths_and_params(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 64 * MiB, NULL), 0);
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    struct x86_boot_params p = {.kernel_path = "/nonexistent/vmlinuz", .nr_cpus = 1};
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "cannot open kernel /nonexistent/vmlinuz"));
    p.kernel_path = "/";
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "kernel / is not a regular file"));
    static struct fake_bz bz;
    fake_bz_init(&bz, 0x020f, 8 * MiB);
    char *kpath = x86_test_tmpfile(bz.bytes, bz.len);
    char *empty = x86_test_tmpfile("", 0);
    p.kernel_path = kpath;
    p.initrd_path = empty;
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "is empty"));
    p.initrd_path = NULL;
    p.nr_cpus = 0;
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), -EINVAL);
    p.nr_cpus = X86_BOOT_MAX_CPUS + 1;
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "vCPUs"));
    p.nr_cpus = X86_BOOT_MAX_CPUS;
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), 0);
    x86_test_rmfile(kpath);
    x86_test_rmfile(empty);
    guest_mem_destroy(&mem);
}

static void test_real_debian_bzimage_if_cached(void **state)
{
    /* scripts/fetch-debian-kernel caches Debian's kernel; the header checks must accept it. */
    const char *cache = getenv("WISP_CACHE") ? getenv("WISP_CACHE") : "/var/cache/wisp";
    char path[512];
    snprintf(path, sizeof(path), "%s/debian-kernel/vmlinuz", cache);
    if (access(path, R_OK) != 0) {
        print_message("skipping: %s not cached\n", path);
        return;
    }
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 256 * MiB, NULL), 0);
    struct x86_boot_params p = {.kernel_path = path, .cmdline = "console=ttyS0", .nr_cpus = 1};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    int r = x86_boot_load(&mem, &p, &e, &err);
    if (r < 0)
        print_message("%s\n", err.msg);
    assert_int_equal(r, 0);
    assert_int_equal(e.kind, X86_BOOT_LINUX64);
    assert_true(e.rip == 0x100200);
    guest_mem_destroy(&mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e820_64mib),
        cmocka_unit_test(test_e820_1gib),
        cmocka_unit_test(test_e820_6gib_splits_around_the_hole),
        cmocka_unit_test(test_e820_64gib),
        cmocka_unit_test(test_e820_rejects_tiny_ram),
        cmocka_unit_test(test_bzimage_64bit_boot),
        cmocka_unit_test(test_bzimage_loader_fields_not_from_the_file),
        cmocka_unit_test(test_long_mode_cpu_state),
        cmocka_unit_test(test_bzimage_initrd_below_addr_max_on_big_guests),
        cmocka_unit_test(test_bzimage_bad_headers),
        cmocka_unit_test(test_bzimage_truncated_files),
        cmocka_unit_test(test_bzimage_cmdline_and_initrd_limits),
        cmocka_unit_test(test_bzimage_header_copy_stays_in_struct),
        cmocka_unit_test(test_bzimage_crafted_placement),
        cmocka_unit_test(test_bzimage_header_extremes),
        cmocka_unit_test(test_bzimage_too_big_messages),
        cmocka_unit_test(test_initrd_too_big_messages),
        cmocka_unit_test(test_bad_paths_and_params),
        cmocka_unit_test(test_real_debian_bzimage_if_cached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
