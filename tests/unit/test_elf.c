/* Unit tests of the ELF kernel loader (src/arch/x86/elf.c): PVH note parsing, hvm_start_info,
 * plain ELF64 entry, and a table of truncated and malformed files that must fail cleanly. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "arch/x86/boot_int.h"
#include "common/cleanup.h"
#include "test_x86_util.h"

#define MiB (1ULL << 20)

/* File layout of the test image: headers at 0, notes at 0x200, code at 0x1000, data at 0x1100. */
#define NOTE_OFF  0x200
#define CODE_OFF  0x1000
#define DATA_OFF  0x1100
#define CODE_ADDR 0x200000ULL
#define DATA_ADDR 0x400000ULL
#define PVH_ENTRY (CODE_ADDR + 0x10)

struct elf_img {
    uint8_t b[0x1200];
    size_t len;
    bool is64;
};

static size_t put_note(uint8_t *p, const char *name, uint32_t type, const void *desc,
                       uint32_t descsz)
{
    uint32_t namesz = (uint32_t)strlen(name) + 1;
    Elf64_Nhdr n = {namesz, descsz, type};
    memcpy(p, &n, sizeof(n));
    memcpy(p + 12, name, namesz);
    size_t d = 12 + ((namesz + 3) & ~3U);
    memcpy(p + d, desc, descsz);
    return d + ((descsz + 3) & ~3U);
}

/* Notes: a GNU build-id-like note to skip, then (if pvh) the Xen PHYS32_ENTRY note. */
static size_t put_notes(uint8_t *p, bool pvh)
{
    const uint8_t id[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t n = put_note(p, "GNU", 3, id, sizeof(id));
    uint32_t entry = (uint32_t)PVH_ENTRY;
    if (pvh)
        n += put_note(p + n, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, &entry, 4);
    return n;
}

static void fill_payload(struct elf_img *img)
{
    for (unsigned i = 0; i < 0x100; i++)
        img->b[CODE_OFF + i] = (uint8_t)(0x90 + i);
    for (unsigned i = 0; i < 0x80; i++)
        img->b[DATA_OFF + i] = (uint8_t)(0xd0 ^ i);
    img->len = DATA_OFF + 0x80;
}

static void make_elf64(struct elf_img *img, bool pvh)
{
    memset(img, 0, sizeof(*img));
    img->is64 = true;
    size_t notes = put_notes(img->b + NOTE_OFF, pvh);
    Elf64_Ehdr eh = {
        .e_ident = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB, EV_CURRENT},
        .e_type = ET_EXEC,
        .e_machine = EM_X86_64,
        .e_version = EV_CURRENT,
        .e_entry = CODE_ADDR,
        .e_phoff = sizeof(Elf64_Ehdr),
        .e_ehsize = sizeof(Elf64_Ehdr),
        .e_phentsize = sizeof(Elf64_Phdr),
        .e_phnum = 3};
    Elf64_Phdr ph[3] = {
        {.p_type = PT_LOAD,
         .p_offset = CODE_OFF,
         .p_vaddr = 0xffffffff80200000ULL,
         .p_paddr = CODE_ADDR,
         .p_filesz = 0x100,
         .p_memsz = 0x3000,
         .p_align = 0x1000},
        {.p_type = PT_LOAD,
         .p_offset = DATA_OFF,
         .p_paddr = DATA_ADDR,
         .p_filesz = 0x80,
         .p_memsz = 0x80},
        {.p_type = PT_NOTE, .p_offset = NOTE_OFF, .p_filesz = notes, .p_align = 4},
    };
    memcpy(img->b, &eh, sizeof(eh));
    memcpy(img->b + eh.e_phoff, ph, sizeof(ph));
    fill_payload(img);
}

static void make_elf32(struct elf_img *img, bool pvh)
{
    memset(img, 0, sizeof(*img));
    size_t notes = put_notes(img->b + NOTE_OFF, pvh);
    Elf32_Ehdr eh = {
        .e_ident = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS32, ELFDATA2LSB, EV_CURRENT},
        .e_type = ET_EXEC,
        .e_machine = EM_386,
        .e_version = EV_CURRENT,
        .e_entry = (uint32_t)CODE_ADDR,
        .e_phoff = sizeof(Elf32_Ehdr),
        .e_ehsize = sizeof(Elf32_Ehdr),
        .e_phentsize = sizeof(Elf32_Phdr),
        .e_phnum = 3};
    Elf32_Phdr ph[3] = {
        {.p_type = PT_LOAD,
         .p_offset = CODE_OFF,
         .p_paddr = (uint32_t)CODE_ADDR,
         .p_filesz = 0x100,
         .p_memsz = 0x3000},
        {.p_type = PT_LOAD,
         .p_offset = DATA_OFF,
         .p_paddr = (uint32_t)DATA_ADDR,
         .p_filesz = 0x80,
         .p_memsz = 0x80},
        {.p_type = PT_NOTE, .p_offset = NOTE_OFF, .p_filesz = (uint32_t)notes, .p_align = 4},
    };
    memcpy(img->b, &eh, sizeof(eh));
    memcpy(img->b + eh.e_phoff, ph, sizeof(ph));
    fill_payload(img);
}

static Elf64_Ehdr *eh64(struct elf_img *img)
{
    return (Elf64_Ehdr *)img->b;
}
static Elf64_Phdr *ph64(struct elf_img *img, unsigned i)
{
    return (Elf64_Phdr *)(img->b + sizeof(Elf64_Ehdr)) + i;
}

/* Parses img from a memfd against a fresh guest of `ram` bytes (MAP_NORESERVE: cheap). */
static int parse(const struct elf_img *img, uint64_t ram, struct x86_elf *elf, struct wisp_err *err)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, ram, NULL), 0);
    cleanup_close int fd = memfd_create("test.elf", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, img->b, img->len), (ssize_t)img->len);
    int r = x86_elf_parse("test.elf", fd, img->len, &mem, elf, err);
    guest_mem_destroy(&mem);
    return r;
}

static void test_pvh_note_found_in_elf64_and_elf32(void **state)
{
    struct elf_img img;
    struct x86_elf elf;
    for (int is64 = 0; is64 < 2; is64++) {
        if (is64)
            make_elf64(&img, true);
        else
            make_elf32(&img, true);
        struct wisp_err err = {0};
        assert_int_equal(parse(&img, 64 * MiB, &elf, &err), 0);
        assert_true(elf.has_pvh);
        assert_true(elf.pvh_entry == PVH_ENTRY);
        assert_int_equal(elf.nr_segments, 2);
        assert_true(elf.start == CODE_ADDR);
        assert_true(elf.end == DATA_ADDR + 0x80);
    }
    make_elf64(&img, false);
    assert_int_equal(parse(&img, 64 * MiB, &elf, NULL), 0);
    assert_false(elf.has_pvh);
    assert_true(elf.entry == CODE_ADDR);
}

static void test_pvh_boot_start_info(void **state)
{
    struct elf_img img;
    make_elf32(&img, true);
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 64 * MiB, NULL), 0);
    char *kpath = x86_test_tmpfile(img.b, img.len);
    const char initrd[] = "initrd contents";
    char *ipath = x86_test_tmpfile(initrd, sizeof(initrd));
    struct x86_boot_params p = {
        .kernel_path = kpath, .initrd_path = ipath, .cmdline = "console=hvc0", .nr_cpus = 4};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), 0);
    x86_test_rmfile(kpath);
    x86_test_rmfile(ipath);

    /* Entry state: 32-bit protected mode, paging off, ebx = start_info. */
    assert_int_equal(e.kind, X86_BOOT_PVH);
    assert_true(e.rip == PVH_ENTRY);
    assert_true(e.rbx == X86_PVH_INFO_ADDR);
    assert_true(e.cr0 & 1);
    assert_true((e.cr0 & 0x80000000) == 0);
    assert_true(e.cr4 == 0 && e.efer == 0);
    assert_true((e.rflags & 0x200) == 0);
    assert_int_equal(e.cs.db, 1);
    assert_int_equal(e.cs.l, 0);
    assert_true(e.cs.base == 0 && e.cs.limit == 0xffffffff && e.cs.type == 0xb);
    assert_true(e.ds.base == 0 && e.ds.limit == 0xffffffff && e.ds.db == 1);
    assert_true(e.tr.limit == 0x67 && e.tr.type == 0xb);

    struct hvm_start_info si;
    assert_int_equal(guest_mem_read(&mem, e.rbx, &si, sizeof(si)), 0);
    assert_int_equal(si.magic, 0x336ec578);
    assert_int_equal(si.version, 1);
    assert_string_equal((char *)gpa_to_hva(&mem, si.cmdline_paddr, 1), "console=hvc0");
    assert_true(si.rsdp_paddr == X86_ACPI_ADDR);
    assert_memory_equal(gpa_to_hva(&mem, si.rsdp_paddr, 8), "RSD PTR ", 8);
    assert_int_equal(si.nr_modules, 1);
    struct hvm_modlist_entry mod;
    assert_int_equal(guest_mem_read(&mem, si.modlist_paddr, &mod, sizeof(mod)), 0);
    assert_true(mod.size == sizeof(initrd));
    assert_true((mod.paddr & 0xfff) == 0);
    assert_memory_equal(gpa_to_hva(&mem, mod.paddr, mod.size), initrd, sizeof(initrd));
    /* memmap == the e820 the zero page would carry. */
    struct x86_e820_entry map[X86_E820_MAX];
    int n = x86_e820_build(&mem, map, X86_E820_MAX, NULL);
    assert_int_equal(si.memmap_entries, n);
    for (int i = 0; i < n; i++) {
        struct hvm_memmap_table_entry m;
        assert_int_equal(guest_mem_read(&mem, si.memmap_paddr + i * sizeof(m), &m, sizeof(m)), 0);
        assert_true(m.addr == map[i].addr && m.size == map[i].size);
        assert_int_equal(m.type, map[i].type);
    }
    /* Segments at their physical addresses; the code segment's bss is zero. */
    assert_memory_equal(gpa_to_hva(&mem, CODE_ADDR, 0x100), img.b + CODE_OFF, 0x100);
    assert_memory_equal(gpa_to_hva(&mem, DATA_ADDR, 0x80), img.b + DATA_OFF, 0x80);
    guest_mem_destroy(&mem);
}

static void test_elf64_without_note_boots_in_long_mode(void **state)
{
    struct elf_img img;
    make_elf64(&img, false);
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 64 * MiB, NULL), 0);
    memset(gpa_to_hva(&mem, CODE_ADDR, 0x3000), 0xff, 0x3000); /* bss must be cleared: */
    mem.fresh_zero = false; /* written since guest_mem_create(), so no longer known zero */
    char *kpath = x86_test_tmpfile(img.b, img.len);
    struct x86_boot_params p = {.kernel_path = kpath, .cmdline = "hello", .nr_cpus = 1};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), 0);
    x86_test_rmfile(kpath);
    assert_int_equal(e.kind, X86_BOOT_ELF64);
    assert_true(e.rip == CODE_ADDR);
    assert_true(e.rsi == X86_ZERO_PAGE_ADDR); /* zero page with e820 and cmd_line_ptr */
    assert_true(e.efer == 0x500 && (e.cr0 & 0x80000001) == 0x80000001 && e.cs.l == 1);
    struct boot_params bp;
    assert_int_equal(guest_mem_read(&mem, e.rsi, &bp, sizeof(bp)), 0);
    assert_int_equal(bp.e820_entries, 3);
    assert_string_equal((char *)gpa_to_hva(&mem, bp.hdr.cmd_line_ptr, 1), "hello");
    /* A minimal setup header, as a Linux vmlinux entered at startup_64 expects from a loader. */
    assert_int_equal(bp.hdr.boot_flag, 0xaa55);
    assert_int_equal(bp.hdr.header, 0x53726448);
    assert_int_equal(bp.hdr.type_of_loader, 0xff);
    assert_true(bp.hdr.cmdline_size >= 2047);
    uint8_t zero[0x2f00] = {0};
    assert_memory_equal(gpa_to_hva(&mem, CODE_ADDR + 0x100, sizeof(zero)), zero, sizeof(zero));
    guest_mem_destroy(&mem);
}

/* Host memory the process has resident (VmRSS), from /proc/self/statm. */
static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long long size = 0, resident = 0;
    assert_int_equal(fscanf(f, "%llu %llu", &size, &resident), 2);
    fclose(f);
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A 512 MiB .bss on fresh guest RAM (guest_mem_create: MAP_ANONYMOUS, already zero) must not be
 * memset: that would commit 512 MiB of host memory the guest may never touch. */
static void test_huge_bss_on_fresh_ram_commits_no_host_memory(void **state)
{
    const uint64_t bss = 512 * MiB;
    struct elf_img img;
    make_elf64(&img, false);
    ph64(&img, 0)->p_memsz = bss;       /* [2 MiB, 514 MiB): 0x100 bytes of file, then .bss */
    ph64(&img, 1)->p_paddr = 600 * MiB; /* the data segment out of its way */
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 1024 * MiB, NULL), 0);
    char *kpath = x86_test_tmpfile(img.b, img.len);
    struct x86_boot_params p = {.kernel_path = kpath, .nr_cpus = 1};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    uint64_t before = resident_bytes();
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), 0);
    uint64_t grown = resident_bytes() - before;
    x86_test_rmfile(kpath);
    print_message("resident memory grew by %llu KiB loading a %llu MiB .bss\n",
                  (unsigned long long)(grown >> 10), (unsigned long long)(bss >> 20));
    assert_true(grown < 16 * MiB);
    /* The guest still sees zeros there (reads map the shared zero page: no memory either). */
    const uint64_t probes[] = {CODE_ADDR + 0x100, CODE_ADDR + bss / 2, CODE_ADDR + bss - 8};
    for (size_t i = 0; i < ARRAY_SIZE(probes); i++)
        assert_true(x86_test_read64(&mem, probes[i]) == 0);
    assert_memory_equal(gpa_to_hva(&mem, CODE_ADDR, 0x100), img.b + CODE_OFF, 0x100);
    guest_mem_destroy(&mem);
}

/* RAM with contents (here a memfd full of 0xff, as a file or snapshot backend would map) is not
 * fresh: the loader zeroes the .bss there. */
static void test_bss_zeroed_on_ram_with_contents(void **state)
{
    const uint64_t ram = 64 * MiB, bss = 3 * MiB;
    struct guest_mem mem;
    assert_int_equal(guest_mem_layout(&mem, ram, NULL), 0);
    cleanup_close int memfd = memfd_create("guest-ram", MFD_CLOEXEC);
    assert_true(memfd >= 0);
    assert_int_equal(ftruncate(memfd, (off_t)ram), 0);
    void *hva = mmap(NULL, ram, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    assert_true(hva != MAP_FAILED);
    memset(hva, 0xff, ram);
    mem.regions[0].hva = hva;
    assert_false(mem.fresh_zero);
    struct elf_img img;
    make_elf64(&img, false);
    ph64(&img, 0)->p_memsz = bss;
    ph64(&img, 1)->p_paddr = 32 * MiB;
    char *kpath = x86_test_tmpfile(img.b, img.len);
    struct x86_boot_params p = {.kernel_path = kpath, .nr_cpus = 1};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), 0);
    x86_test_rmfile(kpath);
    const uint8_t *seg = gpa_to_hva(&mem, CODE_ADDR, bss);
    assert_memory_equal(seg, img.b + CODE_OFF, 0x100);
    for (uint64_t i = 0x100; i < bss; i++)
        if (seg[i] != 0)
            fail_msg(".bss byte at 0x%llx is 0x%02x", (unsigned long long)(CODE_ADDR + i), seg[i]);
    assert_int_equal(*(const uint8_t *)gpa_to_hva(&mem, CODE_ADDR + bss, 1), 0xff); /* past it */
    guest_mem_destroy(&mem); /* munmaps the region */
}

/* Segments that do not fit: the message says up to where RAM is needed and which --mem holds it. */
static void test_segment_beyond_ram_messages(void **state)
{
    static const struct {
        uint64_t paddr, memsz, ram;
        const char *msg;
    } cases[] = {
        {128 * MiB, 0x80, 64 * MiB,
         "test.elf: PT_LOAD at offset 0x78: [0x8000000, 0x8000080) needs guest RAM up to "
         "0x8000080 (128.1 MiB); the guest has 64 MiB below 4 GiB: use --mem 129M or more"},
        {60 * MiB, 10 * MiB, 64 * MiB,
         "test.elf: PT_LOAD at offset 0x78: [0x3c00000, 0x4600000) needs guest RAM up to "
         "0x4600000 (70 MiB); the guest has 64 MiB below 4 GiB: use --mem 70M or more"},
        {1ULL << 32, 0x80, 64 * MiB,
         "test.elf: PT_LOAD at offset 0x78: [0x100000000, 0x100000080) needs guest RAM up to "
         "0x100000080; the guest has 64 MiB, and RAM above 4 GiB holds what exceeds the first "
         "3 GiB: use --mem 3073M or more"},
        {(1ULL << 32) + 2048 * MiB, 4 * MiB, 4096 * MiB,
         "test.elf: PT_LOAD at offset 0x78: [0x180000000, 0x180400000) needs guest RAM up to "
         "0x180400000; the guest has 4096 MiB, and RAM above 4 GiB holds what exceeds the first "
         "3 GiB: use --mem 5124M or more"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct elf_img img;
        make_elf64(&img, true);
        ph64(&img, 1)->p_paddr = cases[i].paddr;
        ph64(&img, 1)->p_memsz = cases[i].memsz;
        struct x86_elf elf;
        struct wisp_err err = {0};
        int r = parse(&img, cases[i].ram, &elf, &err);
        print_message("%s\n", err.msg);
        assert_int_equal(r, -ENOSPC);
        assert_string_equal(err.msg, cases[i].msg);
    }
}

static void test_elf_initrd_too_big_message(void **state)
{
    struct elf_img img;
    make_elf64(&img, true); /* highest segment ends at 0x400080: the initrd goes above 0x401000 */
    char *kpath = x86_test_tmpfile(img.b, img.len);
    char *ipath = x86_test_tmpfile("", 0);
    assert_int_equal(truncate(ipath, 70 * MiB), 0);
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 64 * MiB, NULL), 0);
    struct x86_boot_params p = {.kernel_path = kpath, .initrd_path = ipath, .nr_cpus = 1};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    assert_int_equal(x86_boot_load(&mem, &p, &e, &err), -ENOSPC);
    char want[512];
    snprintf(want, sizeof(want),
             "initrd %s (0x4600000 bytes, 70 MiB) does not fit: it goes page-aligned above the "
             "kernel, which ends at 0x401000, so it needs guest RAM up to 0x4a01000 (74.1 MiB); "
             "the guest has 64 MiB below 4 GiB: use --mem 75M or more",
             ipath);
    assert_string_equal(err.msg, want);
    guest_mem_destroy(&mem);
    x86_test_rmfile(kpath);
    x86_test_rmfile(ipath);
}

/* ---- malformed files ---- */
static void m_class(struct elf_img *i)
{
    i->b[EI_CLASS] = 3;
}
static void m_big_endian(struct elf_img *i)
{
    i->b[EI_DATA] = ELFDATA2MSB;
}
static void m_dyn(struct elf_img *i)
{
    eh64(i)->e_type = ET_DYN;
}
static void m_arm(struct elf_img *i)
{
    eh64(i)->e_machine = EM_AARCH64;
}
static void m_phentsize(struct elf_img *i)
{
    eh64(i)->e_phentsize = 32;
}
static void m_phnum0(struct elf_img *i)
{
    eh64(i)->e_phnum = 0;
}
static void m_phnum_huge(struct elf_img *i)
{
    eh64(i)->e_phnum = 0xffff;
}
static void m_phoff_past_end(struct elf_img *i)
{
    eh64(i)->e_phoff = 0x11f0;
}
static void m_phoff_overflow(struct elf_img *i)
{
    eh64(i)->e_phoff = 0xffffffffffffff00ULL;
}
static void m_seg_past_file(struct elf_img *i)
{
    ph64(i, 1)->p_filesz = 0x1000;
    ph64(i, 1)->p_memsz = 0x1000;
}
static void m_seg_offset_overflow(struct elf_img *i)
{
    ph64(i, 1)->p_offset = 0xfffffffffffffff0ULL;
}
static void m_filesz_gt_memsz(struct elf_img *i)
{
    ph64(i, 0)->p_memsz = 0x10;
}
static void m_paddr_overflow(struct elf_img *i)
{
    ph64(i, 1)->p_paddr = 0xffffffffffffff00ULL;
    ph64(i, 1)->p_memsz = 0x1000;
}
static void m_in_mmio_hole(struct elf_img *i)
{
    ph64(i, 1)->p_paddr = 0xfee00000ULL;
}
static void m_straddles_hole(struct elf_img *i)
{
    ph64(i, 1)->p_paddr = 0xbfffff00ULL;
    ph64(i, 1)->p_memsz = 0x200;
}
static void m_huge_memsz(struct elf_img *i)
{
    ph64(i, 0)->p_memsz = 1ULL << 40;
}
static void m_on_boot_tables(struct elf_img *i)
{
    ph64(i, 1)->p_paddr = X86_ZERO_PAGE_ADDR;
}
static void m_on_acpi(struct elf_img *i)
{
    ph64(i, 1)->p_paddr = X86_ACPI_ADDR + 0x100;
}
static void m_overlap(struct elf_img *i)
{
    ph64(i, 1)->p_paddr = CODE_ADDR + 0x2000; /* inside segment 0's bss */
}
static void m_note_past_file(struct elf_img *i)
{
    ph64(i, 2)->p_filesz = 0x10000;
}
static void m_note_namesz(struct elf_img *i)
{
    Elf64_Nhdr *n = (Elf64_Nhdr *)(i->b + NOTE_OFF);
    n->n_namesz = 0xfffffff0;
}
static void m_note_descsz(struct elf_img *i)
{
    Elf64_Nhdr *n = (Elf64_Nhdr *)(i->b + NOTE_OFF);
    n->n_descsz = 0x1000;
}
static void m_pvh_descsz(struct elf_img *i)
{
    uint32_t entry = (uint32_t)PVH_ENTRY;
    size_t n = put_note(i->b + NOTE_OFF, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, &entry, 2);
    ph64(i, 2)->p_filesz = n;
}
static void m_pvh_above_4g(struct elf_img *i)
{
    uint64_t entry = 1ULL << 32;
    size_t n = put_note(i->b + NOTE_OFF, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, &entry, 8);
    ph64(i, 2)->p_filesz = n;
}
static void m_pvh_outside(struct elf_img *i)
{
    uint32_t entry = 0x300000;
    size_t n = put_note(i->b + NOTE_OFF, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, &entry, 4);
    ph64(i, 2)->p_filesz = n;
}
static void m_entry_outside(struct elf_img *i)
{
    eh64(i)->e_entry = 0xffffffff81000000ULL;
}
static void m_no_load(struct elf_img *i)
{
    ph64(i, 0)->p_type = PT_NULL;
    ph64(i, 1)->p_type = PT_NULL;
}
static void m_cut_header(struct elf_img *i)
{
    i->len = 40;
}
static void m_cut_ident(struct elf_img *i)
{
    i->len = 10;
}
static void m_cut_phdrs(struct elf_img *i)
{
    i->len = sizeof(Elf64_Ehdr) + 60;
}

static void test_malformed_elf_table(void **state)
{
    static const struct {
        const char *what;
        void (*mutate)(struct elf_img *);
        const char *msg;
    } cases[] = {
        {"truncated identification", m_cut_ident, "truncated ELF: 10 bytes"},
        {"truncated header", m_cut_header, "truncated ELF header: 40 bytes"},
        {"truncated program headers", m_cut_phdrs, "lie outside the file of 124 bytes"},
        {"bad class", m_class, "ELF class 3 at offset 4"},
        {"big endian", m_big_endian, "at offset 5 is not little-endian"},
        {"shared object", m_dyn, "e_type 3 at offset 16"},
        {"wrong machine", m_arm, "e_machine 183 at offset 18"},
        {"bad phentsize", m_phentsize, "e_phentsize 32 (offset 54)"},
        {"no program headers", m_phnum0, "e_phnum 0 (offset 56)"},
        {"PN_XNUM program headers", m_phnum_huge, "e_phnum 65535"},
        {"phdrs past the end", m_phoff_past_end, "e_phoff 0x11f0"},
        {"phoff overflow", m_phoff_overflow, "e_phoff 0xffffffffffffff00"},
        {"segment past the file", m_seg_past_file,
         "PT_LOAD at offset 0x78: data [0x1100, +0x1000)"},
        {"segment offset overflow", m_seg_offset_overflow, "lies outside the file"},
        {"filesz > memsz", m_filesz_gt_memsz, "p_filesz 0x100 exceeds p_memsz 0x10"},
        {"paddr overflow", m_paddr_overflow, "overflows"},
        {"in the MMIO hole", m_in_mmio_hole, "overlaps the MMIO hole"},
        {"straddles the hole", m_straddles_hole, "overlaps the MMIO hole"},
        {"huge segment", m_huge_memsz, "PT_LOAD at offset 0x40"},
        {"on the zero page", m_on_boot_tables, "overlaps wisp's boot tables"},
        {"on the ACPI tables", m_on_acpi, "overlaps wisp's boot tables"},
        {"overlapping segments", m_overlap, "overlaps segment 0"},
        {"note past the file", m_note_past_file, "PT_NOTE at offset 0xb0"},
        {"note namesz", m_note_namesz, "note at offset 0x200: namesz 4294967280"},
        {"note descsz", m_note_descsz, "descsz 4096 run past the PT_NOTE"},
        {"PVH descsz", m_pvh_descsz, "PVH entry note at offset 0x200 has descsz 2"},
        {"PVH entry above 4 GiB", m_pvh_above_4g, "above 4 GiB"},
        {"PVH entry outside segments", m_pvh_outside, "PVH entry 0x300000 is not inside"},
        {"e_entry outside segments", m_entry_outside, "e_entry (offset 24)"},
        {"no PT_LOAD", m_no_load, "no PT_LOAD segment"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct elf_img img;
        make_elf64(&img, true);
        if (cases[i].mutate == m_entry_outside || cases[i].mutate == m_no_load)
            make_elf64(&img, false);
        cases[i].mutate(&img);
        struct x86_elf elf;
        struct wisp_err err = {0};
        int r = parse(&img, 64 * MiB, &elf, &err);
        print_message("%-28s -> %s\n", cases[i].what, err.msg);
        assert_int_equal(r, -ENOEXEC);
        assert_non_null(strstr(err.msg, "test.elf"));
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("case '%s': message lacks '%s'", cases[i].what, cases[i].msg);
    }
}

static void test_elf32_without_pvh_is_refused(void **state)
{
    struct elf_img img;
    make_elf32(&img, false);
    struct x86_elf elf;
    struct wisp_err err = {0};
    assert_int_equal(parse(&img, 64 * MiB, &elf, &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "32-bit ELF without a PVH note"));
}

static void test_every_truncation_fails_cleanly(void **state)
{
    for (int kind = 0; kind < 2; kind++) {
        struct elf_img full;
        if (kind)
            make_elf64(&full, true);
        else
            make_elf32(&full, true);
        for (size_t len = 0; len < full.len; len++) {
            struct elf_img img = full;
            img.len = len;
            struct x86_elf elf;
            struct wisp_err err = {0};
            int r = parse(&img, 64 * MiB, &elf, &err);
            if (r != -ENOEXEC)
                fail_msg("length %zu: returned %d (%s)", len, r, err.msg);
            assert_non_null(strstr(err.msg, "test.elf"));
        }
    }
}

static void test_real_vmlinux_pvh_if_cached(void **state)
{
    const char *cache = getenv("WISP_CACHE") ? getenv("WISP_CACHE") : "/var/cache/wisp";
    char path[512];
    snprintf(path, sizeof(path), "%s/debian-kernel/vmlinux", cache);
    if (access(path, R_OK) != 0) {
        print_message("skipping: %s not cached\n", path);
        return;
    }
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 256 * MiB, NULL), 0);
    struct x86_boot_params p = {.kernel_path = path, .cmdline = "console=ttyS0", .nr_cpus = 2};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    int r = x86_boot_load(&mem, &p, &e, &err);
    if (r < 0)
        print_message("%s\n", err.msg);
    assert_int_equal(r, 0);
    assert_int_equal(e.kind, X86_BOOT_PVH);
    assert_true(e.rip >= e.kernel_start && e.rip < e.kernel_end);
    guest_mem_destroy(&mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pvh_note_found_in_elf64_and_elf32),
        cmocka_unit_test(test_pvh_boot_start_info),
        cmocka_unit_test(test_elf64_without_note_boots_in_long_mode),
        cmocka_unit_test(test_huge_bss_on_fresh_ram_commits_no_host_memory),
        cmocka_unit_test(test_bss_zeroed_on_ram_with_contents),
        cmocka_unit_test(test_segment_beyond_ram_messages),
        cmocka_unit_test(test_elf_initrd_too_big_message),
        cmocka_unit_test(test_malformed_elf_table),
        cmocka_unit_test(test_elf32_without_pvh_is_refused),
        cmocka_unit_test(test_every_truncation_fails_cleanly),
        cmocka_unit_test(test_real_vmlinux_pvh_if_cached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
