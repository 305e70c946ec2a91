/* Guest RAM layout, mapping and the checked guest-physical accessor. */
#include "kvm/guest_mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
