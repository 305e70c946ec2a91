/* Guest RAM layout, mapping and the checked guest-physical accessor. */
#include "kvm/guest_mem.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/memfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HUGE_2M (2ULL << 20)

int guest_mem_layout(struct guest_mem *mem, uint64_t bytes, struct wisp_err *err)
{
    memset(mem, 0, sizeof(*mem));
    if (bytes == 0 || (bytes & 0xfff))
        return wisp_err_set(err, EINVAL,
                            "guest memory size %llu is not a positive multiple of 4 KiB",
                            (unsigned long long)bytes);
    if (bytes > GUEST_MEM_MAX_BYTES)
        return wisp_err_set(
            err, ERANGE, "guest memory size %llu MiB exceeds the maximum of %llu MiB",
            (unsigned long long)(bytes >> 20), (unsigned long long)(GUEST_MEM_MAX_BYTES >> 20));
    uint64_t low = bytes < GUEST_MMIO_HOLE_START ? bytes : GUEST_MMIO_HOLE_START;
    mem->regions[0] = (struct guest_mem_region){.gpa = 0, .size = low};
    mem->nr_regions = 1;
    if (bytes > low) {
        mem->regions[1] =
            (struct guest_mem_region){.gpa = GUEST_MMIO_HOLE_END, .size = bytes - low};
        mem->nr_regions = 2;
    }
    mem->total = bytes;
    mem->fd = -1;
    mem->page_size = 4096;
    return 0;
}

int guest_mem_create(struct guest_mem *mem, uint64_t bytes, struct wisp_err *err)
{
    int r = guest_mem_layout(mem, bytes, err);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        struct guest_mem_region *rg = &mem->regions[i];
        void *p = mmap(NULL, rg->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            r = wisp_err_sys(err, errno, "cannot map %llu MiB of guest memory at 0x%llx",
                             (unsigned long long)(rg->size >> 20), (unsigned long long)rg->gpa);
            guest_mem_destroy(mem);
            return r;
        }
        rg->hva = p;
    }
    mem->fresh_zero = true;
    return 0;
}

uint64_t guest_mem_file_offset(const struct guest_mem *mem, unsigned region)
{
    uint64_t off = 0;
    for (unsigned i = 0; i < region && i < mem->nr_regions; i++)
        off += mem->regions[i].size;
    return off;
}

int guest_mem_create_from_file(struct guest_mem *mem, uint64_t bytes, int fd, struct wisp_err *err)
{
    int r = guest_mem_layout(mem, bytes, err);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        struct guest_mem_region *rg = &mem->regions[i];
        void *p = mmap(NULL, rg->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd,
                       (off_t)guest_mem_file_offset(mem, i));
        if (p == MAP_FAILED) {
            r = wisp_err_sys(err, errno, "cannot map %llu MiB of the memory file at 0x%llx",
                             (unsigned long long)(rg->size >> 20),
                             (unsigned long long)guest_mem_file_offset(mem, i));
            guest_mem_destroy(mem);
            return r;
        }
        rg->hva = p;
    }
    mem->fresh_zero = false; /* the file's contents, not zeroes */
    return 0;
}

const char *guest_mem_backend_name(enum guest_mem_backend b)
{
    switch (b) {
    case GUEST_MEM_ANON:
        return "anon";
    case GUEST_MEM_MEMFD:
        return "memfd";
    case GUEST_MEM_FILE:
        return "file";
    case GUEST_MEM_HUGETLBFS:
        return "hugetlbfs";
    }
    return "?";
}

const char *guest_mem_switch_name(enum guest_mem_switch s)
{
    return s == GUEST_MEM_ON ? "on" : s == GUEST_MEM_OFF ? "off" : "default";
}

/* A number from a sysfs/procfs file, or -1. */
static long long read_count(const char *path)
{
    FILE *f = fopen(path, "re");
    long long v = -1;
    if (f) {
        if (fscanf(f, "%lld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* hugetlbfs: the pages are counted before anything is mapped, so that the error names the
 * numbers (the mapping would fail with a bare ENOMEM). */
static int check_huge_pages(uint64_t bytes, struct wisp_err *err)
{
    if (bytes % HUGE_2M)
        return wisp_err_set(err, EINVAL,
                            "hugetlbfs: guest memory of %llu KiB is not a multiple of 2 MiB",
                            (unsigned long long)(bytes >> 10));
    long long need = (long long)(bytes / HUGE_2M);
    long long nr = read_count("/proc/sys/vm/nr_hugepages");
    long long free_pages = read_count("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    long long resv = read_count("/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages");
    if (free_pages < 0)
        return wisp_err_set(err, ENOTSUP,
                            "hugetlbfs: this host has no 2 MiB huge pages "
                            "(/sys/kernel/mm/hugepages/hugepages-2048kB is missing)");
    long long avail = free_pages - (resv > 0 ? resv : 0);
    if (avail < need)
        return wisp_err_set(err, ENOMEM,
                            "hugetlbfs: %llu MiB of guest memory needs %lld huge pages of 2 MiB, "
                            "but %lld are free and unreserved (/proc/sys/vm/nr_hugepages is %lld; "
                            "reserve more, e.g. echo %lld > /proc/sys/vm/nr_hugepages)",
                            (unsigned long long)(bytes >> 20), need, avail < 0 ? 0 : avail, nr,
                            (nr > 0 ? nr : 0) + need - (avail < 0 ? 0 : avail));
    return 0;
}

/* The file behind a shared backend, sized to `bytes` (and sealed, for a memfd). */
static int open_backing(const struct guest_mem_options *o, uint64_t bytes, struct wisp_err *err)
{
    int fd;
    switch (o->backend) {
    case GUEST_MEM_MEMFD:
        fd = memfd_create("wisp-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
            return wisp_err_sys(err, errno, "memfd: cannot create the guest memory file");
        break;
    case GUEST_MEM_FILE:
        fd = open(o->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return wisp_err_sys(err, errno, "file=%s: cannot open it for guest memory", o->path);
        break;
    case GUEST_MEM_HUGETLBFS:
        if (!o->path) {
            fd = memfd_create("wisp-guest-ram", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
            if (fd < 0)
                return wisp_err_sys(err, errno,
                                    "hugetlbfs: cannot create a memfd of 2 MiB huge pages");
            break;
        }
        char tmpl[4096];
        if (snprintf(tmpl, sizeof(tmpl), "%s/wisp-guest-ram.XXXXXX", o->path) >= (int)sizeof(tmpl))
            return wisp_err_set(err, ENAMETOOLONG, "hugetlbfs=%.64s...: path too long", o->path);
        fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd < 0)
            return wisp_err_sys(err, errno, "hugetlbfs=%s: cannot create a file in the mount",
                                o->path);
        unlink(tmpl); /* the mapping keeps it; nothing is left behind */
        break;
    default:
        return wisp_err_set(err, EINVAL, "guest memory backend %d has no file", o->backend);
    }
    if (ftruncate(fd, (off_t)bytes) < 0) {
        int e = errno;
        close(fd);
        return wisp_err_sys(err, e, "%s: cannot size the guest memory file to %llu MiB",
                            guest_mem_backend_name(o->backend), (unsigned long long)(bytes >> 20));
    }
    if (o->backend == GUEST_MEM_MEMFD &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        int e = errno;
        close(fd);
        return wisp_err_sys(err, e, "memfd: cannot seal the guest memory file's size");
    }
    return fd;
}

int guest_mem_apply_policies(struct guest_mem *mem, const struct guest_mem_options *o,
                             struct wisp_err *err)
{
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        struct guest_mem_region *rg = &mem->regions[i];
        if (o->thp != GUEST_MEM_DEFAULT &&
            madvise(rg->hva, rg->size, o->thp == GUEST_MEM_ON ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
            return wisp_err_sys(err, errno, "--thp %s: madvise", guest_mem_switch_name(o->thp));
        if (o->ksm && madvise(rg->hva, rg->size, MADV_MERGEABLE))
            return wisp_err_sys(err, errno, "--ksm on: madvise(MADV_MERGEABLE)%s",
                                errno == EINVAL ? " (a kernel without CONFIG_KSM?)" : "");
        if (o->prefault && madvise(rg->hva, rg->size, MADV_POPULATE_WRITE))
            return wisp_err_sys(err, errno, "--prefault on: cannot populate %llu MiB at 0x%llx",
                                (unsigned long long)(rg->size >> 20), (unsigned long long)rg->gpa);
    }
    return 0;
}

int guest_mem_create_with(struct guest_mem *mem, uint64_t bytes, const struct guest_mem_options *o,
                          struct wisp_err *err)
{
    bool shared = o->backend != GUEST_MEM_ANON;
    if (o->ksm && shared)
        return wisp_err_set(err, EINVAL,
                            "--ksm on needs --mem-backend anon: KSM merges private anonymous "
                            "pages only, and %s memory is shared",
                            guest_mem_backend_name(o->backend));
    if (o->thp != GUEST_MEM_DEFAULT && o->backend == GUEST_MEM_HUGETLBFS)
        return wisp_err_set(err, EINVAL,
                            "--thp: hugetlbfs memory is huge pages already (THP does not apply)");
    if (o->backend == GUEST_MEM_FILE && (!o->path || !*o->path))
        return wisp_err_set(err, EINVAL, "--mem-backend file= needs a path");
    if (!shared) {
        int r = guest_mem_create(mem, bytes, err);
        if (r == 0)
            r = guest_mem_apply_policies(mem, o, err);
        if (r < 0)
            guest_mem_destroy(mem);
        return r;
    }
    int r = guest_mem_layout(mem, bytes, err);
    if (r == 0 && o->backend == GUEST_MEM_HUGETLBFS)
        r = check_huge_pages(bytes, err);
    if (r < 0)
        return r;
    int fd = open_backing(o, bytes, err);
    if (fd < 0)
        return fd;
    mem->fd = fd;
    mem->shared = true;
    if (o->backend == GUEST_MEM_HUGETLBFS)
        mem->page_size = HUGE_2M;
    /* no MAP_NORESERVE for hugetlbfs: the mapping reserves its huge pages now, or fails */
    int flags = MAP_SHARED | (o->backend == GUEST_MEM_HUGETLBFS ? 0 : MAP_NORESERVE);
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        struct guest_mem_region *rg = &mem->regions[i];
        void *p = mmap(NULL, rg->size, PROT_READ | PROT_WRITE, flags, fd,
                       (off_t)guest_mem_file_offset(mem, i));
        if (p == MAP_FAILED) {
            r = wisp_err_sys(err, errno, "%s: cannot map %llu MiB of guest memory at 0x%llx",
                             guest_mem_backend_name(o->backend),
                             (unsigned long long)(rg->size >> 20), (unsigned long long)rg->gpa);
            guest_mem_destroy(mem);
            return r;
        }
        rg->hva = p;
    }
    mem->fresh_zero = true; /* a new memfd, a truncated file: every byte reads as zero */
    r = guest_mem_apply_policies(mem, o, err);
    if (r < 0)
        guest_mem_destroy(mem);
    return r;
}

int guest_mem_discard(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    uint64_t ps = mem->page_size ? mem->page_size : 4096;
    if ((gpa | len) & (ps - 1))
        return -EINVAL;
    uint8_t *hva = gpa_to_hva(mem, gpa, len);
    if (!hva)
        return -EFAULT;
    if (len == 0)
        return 0;
    if (!mem->shared)
        return madvise(hva, len, MADV_DONTNEED) < 0 ? -errno : 0;
    unsigned i = 0;
    while (i + 1 < mem->nr_regions && gpa >= mem->regions[i + 1].gpa)
        i++;
    uint64_t off = guest_mem_file_offset(mem, i) + (gpa - mem->regions[i].gpa);
    if (fallocate(mem->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
        return -errno;
    return 0;
}

bool guest_mem_hva_to_gpa(const struct guest_mem *mem, const void *hva, uint64_t len, uint64_t *gpa)
{
    uintptr_t a = (uintptr_t)hva;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        const struct guest_mem_region *rg = &mem->regions[i];
        uintptr_t start = (uintptr_t)rg->hva;
        if (rg->hva && a >= start && a - start <= rg->size && len <= rg->size - (a - start)) {
            *gpa = rg->gpa + (a - start);
            return true;
        }
    }
    return false;
}

uint64_t guest_mem_bitmap_words(const struct guest_mem *mem, unsigned region)
{
    uint64_t pages = mem->regions[region].size >> 12;
    return (pages + 63) / 64;
}

int guest_mem_track_dirty(struct guest_mem *mem, bool all_dirty, struct wisp_err *err)
{
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        uint64_t words = guest_mem_bitmap_words(mem, i);
        mem->vmm_dirty[i] = calloc(words, sizeof(uint64_t));
        if (!mem->vmm_dirty[i])
            return wisp_err_set(err, ENOMEM, "out of memory for the dirty-page bitmap");
        if (all_dirty)
            memset(mem->vmm_dirty[i], 0xff, words * sizeof(uint64_t));
    }
    return 0;
}

void guest_mem_mark_dirty(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    if (!mem->vmm_dirty[0] || len == 0)
        return;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        const struct guest_mem_region *rg = &mem->regions[i];
        if (gpa < rg->gpa || gpa - rg->gpa >= rg->size)
            continue;
        uint64_t off = gpa - rg->gpa, room = rg->size - off;
        uint64_t first = off >> 12, last = (off + (len < room ? len : room) - 1) >> 12;
        for (uint64_t p = first; p <= last; p++)
            __atomic_fetch_or(&mem->vmm_dirty[i][p / 64], 1ull << (p % 64), __ATOMIC_RELAXED);
        return;
    }
}

void guest_mem_take_dirty(const struct guest_mem *mem, unsigned region, uint64_t *out)
{
    if (!mem->vmm_dirty[region])
        return;
    for (uint64_t w = 0; w < guest_mem_bitmap_words(mem, region); w++)
        out[w] |= __atomic_exchange_n(&mem->vmm_dirty[region][w], 0, __ATOMIC_RELAXED);
}

void guest_mem_put_dirty(const struct guest_mem *mem, unsigned region, const uint64_t *bits)
{
    if (!mem->vmm_dirty[region])
        return;
    for (uint64_t w = 0; w < guest_mem_bitmap_words(mem, region); w++)
        __atomic_fetch_or(&mem->vmm_dirty[region][w], bits[w], __ATOMIC_RELAXED);
}

void guest_mem_destroy(struct guest_mem *mem)
{
    if (mem->shared && mem->fd >= 0)
        close(mem->fd);
    mem->shared = false;
    mem->fd = -1;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        if (mem->regions[i].hva)
            munmap(mem->regions[i].hva, mem->regions[i].size);
        mem->regions[i].hva = NULL;
        free(mem->vmm_dirty[i]);
        mem->vmm_dirty[i] = NULL;
    }
    mem->nr_regions = 0;
    mem->total = 0;
}

void *gpa_to_hva(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    uint64_t end;
    if (__builtin_add_overflow(gpa, len, &end))
        return NULL;
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        const struct guest_mem_region *rg = &mem->regions[i];
        if (gpa >= rg->gpa && end <= rg->gpa + rg->size && rg->hva)
            return rg->hva + (gpa - rg->gpa);
    }
    return NULL;
}

int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *src, uint64_t len)
{
    void *dst = gpa_to_hva(mem, gpa, len);
    if (!dst)
        return -EFAULT;
    memcpy(dst, src, len);
    return 0;
}

int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *dst, uint64_t len)
{
    const void *src = gpa_to_hva(mem, gpa, len);
    if (!src)
        return -EFAULT;
    memcpy(dst, src, len);
    return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *mem)
{
    return mem->nr_regions ? mem->regions[0].gpa + mem->regions[0].size : 0;
}
