/* x86_boot_load(): detects the kernel format and assembles the boot-time guest memory
 * (layout in boot_int.h and docs/boot.md). */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"

typedef unsigned long long ull;

/* The state shared by the steps of one x86_boot_load() call. */
struct boot_ctx {
    const struct guest_mem *mem;
    const struct x86_boot_params *p;
    struct x86_boot_entry *entry;
    struct wisp_err *err;
    struct x86_e820_entry e820[X86_E820_MAX];
    unsigned nr_e820;
    uint64_t rsdp;
    uint64_t initrd_addr, initrd_size;
};

static int open_file(const char *what, const char *path, uint64_t *size, struct wisp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "cannot open %s %s", what, path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return wisp_err_sys(err, e, "cannot stat %s %s", what, path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return wisp_err_set(err, EINVAL, "%s %s is not a regular file", what, path);
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

static int write_cmdline(struct boot_ctx *c, uint64_t max_len)
{
    const char *cmdline = c->p->cmdline ? c->p->cmdline : "";
    size_t len = strlen(cmdline);
    if (len >= X86_CMDLINE_MAX || len > max_len)
        return wisp_err_set(c->err, E2BIG,
                            "kernel command line of %zu bytes exceeds the %llu "
                            "the kernel accepts",
                            len,
                            (ull)(max_len < X86_CMDLINE_MAX - 1 ? max_len : X86_CMDLINE_MAX - 1));
    if (guest_mem_write(c->mem, X86_CMDLINE_ADDR, cmdline, len + 1) < 0)
        return wisp_err_set(c->err, EFAULT, "command line at 0x%llx is outside guest RAM",
                            X86_CMDLINE_ADDR);
    return 0;
}

/* Places the initrd page-aligned as high as possible below `max`, above `floor`
 * (boot.rst: "as high as possible below initrd_addr_max"). */
static int load_initrd(struct boot_ctx *c, uint64_t floor, uint64_t max)
{
    const char *path = c->p->initrd_path;
    if (!path || !*path)
        return 0;
    uint64_t size;
    cleanup_close int fd = open_file("initrd", path, &size, c->err);
    if (fd < 0)
        return fd;
    uint64_t low_end = guest_mem_low_end(c->mem);
    if (max > low_end)
        max = low_end;
    if (size == 0)
        return wisp_err_set(c->err, EINVAL, "initrd %s is empty", path);
    uint64_t addr = size <= max ? (max - size) & ~0xfffULL : 0;
    if (size > max || addr < floor)
        return wisp_err_set(c->err, ENOSPC,
                            "initrd %s (%llu bytes) does not fit in guest RAM "
                            "between the kernel's end 0x%llx and 0x%llx",
                            path, (ull)size, (ull)floor, (ull)max);
    void *dst = gpa_to_hva(c->mem, addr, size);
    if (!dst)
        return wisp_err_set(c->err, EFAULT, "initrd at 0x%llx is outside guest RAM", (ull)addr);
    int r = x86_read_at(path, fd, 0, dst, size, c->err);
    if (r < 0)
        return r;
    c->initrd_addr = addr;
    c->initrd_size = size;
    return 0;
}

/* For a plain ELF64 (e.g. a Linux vmlinux built without CONFIG_PVH) a minimal setup header says
 * what a bzImage's would: a boot loader filled this page (as Firecracker does for vmlinux). */
static void elf64_setup_header(struct setup_header *h)
{
    memset(h, 0, sizeof(*h));
    h->boot_flag = 0xaa55;
    h->header = 0x53726448; /* "HdrS" */
    h->version = 0x020f;
    h->loadflags = LOADED_HIGH;
    h->kernel_alignment = 0x1000000;
    h->cmdline_size = X86_CMDLINE_MAX - 1;
}

static int write_zero_page(struct boot_ctx *c, const struct x86_bzimage *bz)
{
    struct boot_params bp;
    struct setup_header elf_hdr;
    elf64_setup_header(&elf_hdr);
    x86_zero_page_init(&bp, bz ? &bz->hdr : &elf_hdr, bz ? bz->hdr_len : sizeof(elf_hdr), c->e820,
                       c->nr_e820, X86_CMDLINE_ADDR, c->rsdp, c->initrd_addr, c->initrd_size);
    if (guest_mem_write(c->mem, X86_ZERO_PAGE_ADDR, &bp, sizeof(bp)) < 0)
        return wisp_err_set(c->err, EFAULT, "zero page at 0x%llx is outside guest RAM",
                            X86_ZERO_PAGE_ADDR);
    int r = x86_cpu_tables_write(c->mem, c->err);
    if (r < 0)
        return r;
    c->entry->boot_info = X86_ZERO_PAGE_ADDR;
    return 0;
}

static int boot_bzimage(struct boot_ctx *c, int fd, const uint8_t *head, uint64_t len,
                        uint64_t size)
{
    const char *path = c->p->kernel_path;
    struct x86_bzimage bz;
    int r = x86_bzimage_parse(path, head, len, size, &bz, c->err);
    if (r < 0)
        return r;
    if (bz.reserve_end > guest_mem_low_end(c->mem))
        return wisp_err_set(c->err, ENOSPC,
                            "%s needs guest RAM up to 0x%llx to decompress "
                            "(pref_address 0x%llx + init_size 0x%x); the guest has %llu MiB below "
                            "4 GiB",
                            path, (ull)bz.reserve_end, (ull)bz.hdr.pref_address, bz.hdr.init_size,
                            (ull)(guest_mem_low_end(c->mem) >> 20));
    void *dst = gpa_to_hva(c->mem, bz.load_addr, bz.kernel_size);
    if (!dst)
        return wisp_err_set(c->err, EFAULT, "%s: kernel at 0x%llx is outside guest RAM", path,
                            (ull)bz.load_addr);
    r = x86_read_at(path, fd, bz.setup_size, dst, bz.kernel_size, c->err);
    if (r == 0)
        r = write_cmdline(c, bz.cmdline_max);
    if (r == 0)
        r = load_initrd(c, bz.reserve_end, bz.initrd_max);
    if (r == 0)
        r = write_zero_page(c, &bz);
    if (r < 0)
        return r;
    c->entry->kind = X86_BOOT_LINUX64;
    c->entry->kernel_start = bz.load_addr;
    c->entry->kernel_end = bz.reserve_end;
    x86_entry_long_mode(c->entry, bz.entry, X86_ZERO_PAGE_ADDR);
    return 0;
}

static int boot_elf(struct boot_ctx *c, int fd, uint64_t size)
{
    const char *path = c->p->kernel_path;
    struct x86_elf elf;
    int r = x86_elf_parse(path, fd, size, c->mem, &elf, c->err);
    if (r == 0)
        r = x86_elf_load(path, fd, c->mem, &elf, c->err);
    if (r == 0)
        r = write_cmdline(c, X86_CMDLINE_MAX - 1);
    /* The initrd goes above the kernel's highest segment below 4 GiB. */
    uint64_t floor = X86_BIOS_END;
    for (unsigned i = 0; i < elf.nr_segments; i++) {
        const struct x86_elf_segment *s = &elf.segments[i];
        if (s->paddr < GUEST_MMIO_HOLE_START && s->paddr + s->memsz > floor)
            floor = s->paddr + s->memsz;
    }
    if (r == 0)
        r = load_initrd(c, (floor + 0xfff) & ~0xfffULL, GUEST_MMIO_HOLE_START);
    if (r < 0)
        return r;
    c->entry->kernel_start = elf.start;
    c->entry->kernel_end = elf.end;
    if (elf.has_pvh) {
        r = x86_pvh_info_write(c->mem, c->e820, c->nr_e820, X86_CMDLINE_ADDR, c->rsdp,
                               c->initrd_addr, c->initrd_size, c->err);
        if (r < 0)
            return r;
        c->entry->kind = X86_BOOT_PVH;
        c->entry->boot_info = X86_PVH_INFO_ADDR;
        x86_entry_pvh(c->entry, elf.pvh_entry, X86_PVH_INFO_ADDR);
        /* A GDT is there for a guest that reloads segments before setting up its own. */
        return x86_cpu_tables_write(c->mem, c->err);
    }
    r = write_zero_page(c, NULL);
    if (r < 0)
        return r;
    c->entry->kind = X86_BOOT_ELF64;
    x86_entry_long_mode(c->entry, elf.entry, X86_ZERO_PAGE_ADDR);
    return 0;
}

static int write_firmware_tables(struct boot_ctx *c)
{
    int r = x86_e820_build(c->mem, c->e820, X86_E820_MAX, c->err);
    if (r < 0)
        return r;
    c->nr_e820 = (unsigned)r;
    struct x86_acpi_config acpi = {.nr_cpus = c->p->nr_cpus,
                                   .mmio_devices = c->p->mmio_devices,
                                   .nr_mmio_devices = c->p->nr_mmio_devices};
    r = x86_acpi_write(c->mem, X86_ACPI_ADDR, X86_MPTABLE_ADDR, &acpi, &c->rsdp, c->err);
    if (r == 0)
        r = x86_mptable_write(c->mem, X86_MPTABLE_ADDR, X86_TABLES_END, c->p->nr_cpus, c->err);
    c->entry->rsdp = c->rsdp;
    return r;
}

int x86_boot_load(const struct guest_mem *mem, const struct x86_boot_params *p,
                  struct x86_boot_entry *entry, struct wisp_err *err)
{
    memset(entry, 0, sizeof(*entry));
    if (!p->kernel_path || !*p->kernel_path)
        return wisp_err_set(err, EINVAL, "no kernel given");
    if (p->nr_cpus == 0 || p->nr_cpus > X86_BOOT_MAX_CPUS)
        return wisp_err_set(err, EINVAL, "%u vCPUs is not in 1..%u", p->nr_cpus, X86_BOOT_MAX_CPUS);
    struct boot_ctx c = {.mem = mem, .p = p, .entry = entry, .err = err};
    int r = write_firmware_tables(&c);
    if (r < 0)
        return r;
    uint64_t size;
    cleanup_close int fd = open_file("kernel", p->kernel_path, &size, err);
    if (fd < 0)
        return fd;
    uint8_t head[1024] = {0};
    uint64_t len = size < sizeof(head) ? size : sizeof(head);
    r = x86_read_at(p->kernel_path, fd, 0, head, len, err);
    if (r < 0)
        return r;
    if (len >= 4 && memcmp(head,
                           "\x7f"
                           "ELF",
                           4) == 0)
        r = boot_elf(&c, fd, size);
    else if (len >= 0x206 && memcmp(head + 0x202, "HdrS", 4) == 0)
        r = boot_bzimage(&c, fd, head, len, size);
    else
        r = wisp_err_set(err, ENOEXEC,
                         "%s is neither an ELF file (no magic at offset 0) nor a "
                         "bzImage (no \"HdrS\" at offset 0x202)",
                         p->kernel_path);
    if (r < 0)
        return r;
    entry->initrd_start = c.initrd_addr;
    entry->initrd_size = c.initrd_size;
    return 0;
}
