/* x86_boot_load(): detects the kernel format and assembles the boot-time guest memory
 * (layout in boot_int.h and docs/boot.md). */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
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

const char *x86_fmt_size(uint64_t bytes, char *buf, size_t len)
{
    if (bytes < 1024) {
        snprintf(buf, len, "%llu bytes", (ull)bytes);
        return buf;
    }
    uint64_t unit = bytes < (1ULL << 20) ? 1024 : 1ULL << 20;
    const char *name = unit == 1024 ? "KiB" : "MiB";
    uint64_t whole = bytes / unit, rem = bytes % unit;
    if (rem == 0) {
        snprintf(buf, len, "%llu %s", (ull)whole, name);
        return buf;
    }
    uint64_t tenths = (rem * 10 + unit - 1) / unit; /* rounded up: a need is never understated */
    if (tenths == 10)
        whole++, tenths = 0;
    snprintf(buf, len, "%llu.%llu %s", (ull)whole, (ull)tenths, name);
    return buf;
}

static uint64_t mib_rounded_up(uint64_t bytes)
{
    return (bytes >> 20) + ((bytes & ((1ULL << 20) - 1)) != 0);
}

const char *x86_ram_needed(const struct guest_mem *mem, uint64_t start, uint64_t end, char *buf,
                           size_t len)
{
    char need[32], has[32];
    const uint64_t hole = GUEST_MMIO_HOLE_END - GUEST_MMIO_HOLE_START;
    if (start >= GUEST_MMIO_HOLE_END) {
        /* RAM above 4 GiB holds what exceeds the first 3 GiB (guest_mem_layout). */
        uint64_t total = end - hole;
        if (total > GUEST_MEM_MAX_BYTES)
            snprintf(buf, len, "guest RAM up to 0x%llx; that is more than the maximum of %llu MiB",
                     (ull)end, (ull)(GUEST_MEM_MAX_BYTES >> 20));
        else
            snprintf(buf, len,
                     "guest RAM up to 0x%llx; the guest has %s, and RAM above 4 GiB holds what "
                     "exceeds the first 3 GiB: use --mem %lluM or more",
                     (ull)end, x86_fmt_size(mem->total, has, sizeof(has)),
                     (ull)mib_rounded_up(total));
    } else if (end > GUEST_MMIO_HOLE_START) {
        snprintf(buf, len,
                 "guest RAM up to 0x%llx; RAM below 4 GiB ends at 3 GiB (0x%llx) at most, so no "
                 "--mem holds it",
                 (ull)end, GUEST_MMIO_HOLE_START);
    } else {
        snprintf(buf, len,
                 "guest RAM up to 0x%llx (%s); the guest has %s below 4 GiB: use --mem %lluM or "
                 "more",
                 (ull)end, x86_fmt_size(end, need, sizeof(need)),
                 x86_fmt_size(guest_mem_low_end(mem), has, sizeof(has)), (ull)mib_rounded_up(end));
    }
    return buf;
}

/* Where the initrd may go: page-aligned at or above `floor` (the kernel's end), ending at or below
 * `max` (the kernel's limit, why_max says where it comes from; NULL: RAM below 4 GiB is the
 * only limit) and the end of RAM below 4 GiB. */
struct initrd_window {
    uint64_t floor, max;
    const char *why_max;
};

static int initrd_does_not_fit(struct boot_ctx *c, const char *path, uint64_t size,
                               const struct initrd_window *w, uint64_t end, bool overflow)
{
    char sz[32], need[X86_MSG_LEN];
    x86_fmt_size(size, sz, sizeof(sz));
    if (overflow)
        return wisp_err_set(c->err, ENOSPC,
                            "initrd %s (0x%llx bytes, %s) does not fit above the kernel, which "
                            "ends at 0x%llx",
                            path, (ull)size, sz, (ull)w->floor);
    if (w->why_max && end > w->max)
        return wisp_err_set(c->err, ENOSPC,
                            "initrd %s (0x%llx bytes, %s) does not fit: it goes page-aligned above "
                            "the kernel, which ends at 0x%llx, and would end at 0x%llx, but the "
                            "kernel takes an initrd only below 0x%llx: %s",
                            path, (ull)size, sz, (ull)w->floor, (ull)end, (ull)w->max, w->why_max);
    return wisp_err_set(c->err, ENOSPC,
                        "initrd %s (0x%llx bytes, %s) does not fit: it goes page-aligned above the "
                        "kernel, which ends at 0x%llx, so it needs %s",
                        path, (ull)size, sz, (ull)w->floor,
                        x86_ram_needed(c->mem, w->floor, end, need, sizeof(need)));
}

/* Places the initrd page-aligned as high as possible in the window (boot.rst: "as high as
 * possible below initrd_addr_max"), never below 1 MiB, where wisp's own data is. */
static int load_initrd(struct boot_ctx *c, struct initrd_window w)
{
    const char *path = c->p->initrd_path;
    if (!path || !*path)
        return 0;
    uint64_t size;
    cleanup_close int fd = open_file("initrd", path, &size, c->err);
    if (fd < 0)
        return fd;
    if (size == 0)
        return wisp_err_set(c->err, EINVAL, "initrd %s is empty", path);
    if (w.floor < X86_HIMEM_START)
        w.floor = X86_HIMEM_START;
    w.floor = (w.floor + 0xfff) & ~0xfffULL; /* callers' floors lie below 4 GiB */
    uint64_t top = guest_mem_low_end(c->mem), end;
    if (w.max < top)
        top = w.max;
    /* With a page-aligned floor, a start at or above it exists iff floor + size <= top. */
    bool overflow = __builtin_add_overflow(w.floor, size, &end);
    if (overflow || end > top)
        return initrd_does_not_fit(c, path, size, &w, end, overflow);
    uint64_t addr = (top - size) & ~0xfffULL;
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

/* The bzImage's memory [1 MiB, reserve_end) must lie in RAM below 4 GiB: say what needs it. */
static int bzimage_does_not_fit(struct boot_ctx *c, const struct x86_bzimage *bz)
{
    const char *path = c->p->kernel_path;
    char sz[32], need[X86_MSG_LEN], origin[X86_MSG_LEN];
    if (bz->image_end >= bz->run_end)
        return wisp_err_set(
            c->err, ENOSPC,
            "%s: the protected-mode kernel (0x%llx bytes, %s, from file offset "
            "0x%llx) loads at 0x%llx, so it needs %s",
            path, (ull)bz->kernel_size, x86_fmt_size(bz->kernel_size, sz, sizeof(sz)),
            (ull)bz->setup_size, (ull)bz->load_addr,
            x86_ram_needed(c->mem, bz->load_addr, bz->image_end, need, sizeof(need)));
    return wisp_err_set(
        c->err, ENOSPC,
        "%s: to decompress, the kernel runs at 0x%llx (%s) and needs init_size 0x%x "
        "(%s, offset 0x260) from there, so it needs %s",
        path, (ull)bz->run_addr, x86_bzimage_run_origin(bz, origin, sizeof(origin)),
        bz->hdr.init_size, x86_fmt_size(bz->hdr.init_size, sz, sizeof(sz)),
        x86_ram_needed(c->mem, bz->run_addr, bz->run_end, need, sizeof(need)));
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
        return bzimage_does_not_fit(c, &bz);
    void *dst = gpa_to_hva(c->mem, bz.load_addr, bz.kernel_size);
    if (!dst)
        return wisp_err_set(c->err, EFAULT, "%s: kernel at 0x%llx is outside guest RAM", path,
                            (ull)bz.load_addr);
    r = x86_read_at(path, fd, bz.setup_size, dst, bz.kernel_size, c->err);
    if (r == 0)
        r = write_cmdline(c, bz.cmdline_max);
    char why_max[64];
    if (bz.hdr.initrd_addr_max)
        snprintf(why_max, sizeof(why_max), "initrd_addr_max 0x%x (offset 0x22c)",
                 bz.hdr.initrd_addr_max);
    else
        snprintf(why_max, sizeof(why_max), "initrd_addr_max 0 (offset 0x22c) means 0x37ffffff");
    if (r == 0)
        r = load_initrd(c, (struct initrd_window){bz.reserve_end, bz.initrd_max, why_max});
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
        r = load_initrd(c, (struct initrd_window){floor, GUEST_MMIO_HOLE_START, NULL});
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
        r = x86_mptable_write(c->mem, X86_MPTABLE_ADDR, X86_TABLES_END, c->p->nr_cpus,
                              c->p->mmio_devices, c->p->nr_mmio_devices, c->err);
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
