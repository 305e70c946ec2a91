/* Guest memory in snapshots (docs/snapshot.md, "The memory file"): the memory section (layout,
 * type, a diff's pages) and writing the memory file, a sparse file with each RAM region at its
 * offset: a full one holds every page that is not zero, a diff the pages written since the last
 * snapshot. Written on a worker thread, in chunks, so that a cancel stops it at once. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "vmm/snapshot_int.h"

#define PAGE            4096u
#define CHUNK_PAGES     256u /* 1 MiB between looks at the cancel flag */
#define PAGEMAP_PRESENT (1ull << 63)
#define PAGEMAP_SWAPPED (1ull << 62)

void snapshot_memory_write(const struct guest_mem *mem, enum snapshot_type type,
                           uint64_t *const *dirty, struct state_writer *w)
{
    state_put_u64(w, mem->total);
    state_put_u8(w, (uint8_t)type);
    state_put_u32(w, PAGE);
    state_put_u32(w, mem->nr_regions);
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        state_put_u64(w, mem->regions[i].gpa);
        state_put_u64(w, mem->regions[i].size);
        state_put_u64(w, guest_mem_file_offset(mem, i));
    }
    for (unsigned i = 0; type == SNAPSHOT_DIFF && i < mem->nr_regions; i++) {
        uint64_t words = guest_mem_bitmap_words(mem, i);
        state_put_u32(w, (uint32_t)(words * 8));
        for (uint64_t j = 0; j < words; j++)
            state_put_u64(w, dirty[i][j]);
    }
}

int snapshot_memory_read(const struct snapshot_section *s, struct snapshot_memory_info *m,
                         struct wisp_err *err)
{
    memset(m, 0, sizeof(*m));
    struct state_reader r;
    state_reader_init(&r, s->data, s->len);
    m->total = state_get_u64(&r);
    uint8_t type = state_get_u8(&r);
    uint32_t page = state_get_u32(&r), nr = state_get_u32(&r);
    if (r.bad)
        return state_reader_done(&r, "memory", err);
    if (type > SNAPSHOT_DIFF || page != PAGE)
        return wisp_err_set(err, EINVAL,
                            "memory: type %u, pages of %u bytes: not what wisp "
                            "writes (0 or 1, 4096)",
                            type, page);
    m->type = (enum snapshot_type)type;
    int ret = guest_mem_layout(&m->layout, m->total, err);
    if (ret < 0)
        return wisp_err_wrap(err, "memory");
    if (nr != m->layout.nr_regions)
        return wisp_err_set(err, EINVAL, "memory: %u regions, %llu MiB of RAM has %u", nr,
                            (unsigned long long)(m->total >> 20), m->layout.nr_regions);
    for (unsigned i = 0; i < nr; i++) {
        uint64_t gpa = state_get_u64(&r), size = state_get_u64(&r), off = state_get_u64(&r);
        const struct guest_mem_region *rg = &m->layout.regions[i];
        if (!r.bad &&
            (gpa != rg->gpa || size != rg->size || off != guest_mem_file_offset(&m->layout, i)))
            return wisp_err_set(err, EINVAL,
                                "memory: region %u is [0x%llx, +0x%llx) at file offset 0x%llx, "
                                "not wisp's layout of %llu MiB",
                                i, (unsigned long long)gpa, (unsigned long long)size,
                                (unsigned long long)off, (unsigned long long)(m->total >> 20));
    }
    for (unsigned i = 0; m->type == SNAPSHOT_DIFF && i < nr && !r.bad; i++) {
        size_t n;
        m->bitmap[i] = state_get_blob_ptr(&r, SIZE_MAX, &n);
        if (!r.bad && n != guest_mem_bitmap_words(&m->layout, i) * 8)
            state_reader_fail(&r, "a dirty-page bitmap has the wrong size");
    }
    return state_reader_done(&r, "memory", err);
}

/* Whether page `p` of a diff's bitmap (little-endian 64-bit words) is set. */
bool snapshot_memory_page_dirty(const struct snapshot_memory_info *m, unsigned region, uint64_t p)
{
    const uint8_t *b = m->bitmap[region];
    return b && (b[p / 8] >> (p % 8)) & 1;
}

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *q = (const uint64_t *)p;
    for (unsigned i = 0; i < PAGE / 8; i++)
        if (q[i])
            return false;
    return true;
}

static int write_run(const struct snapshot_mem_job *job, const uint8_t *hva, uint64_t off,
                     uint64_t len, struct wisp_err *err)
{
    while (len) {
        ssize_t n = pwrite(job->fd, hva, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return wisp_err_sys(err, n < 0 ? errno : EIO, "mem_file_path: write at offset 0x%llx",
                                (unsigned long long)off);
        hva += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* Which pages of a chunk to look at: for anonymous RAM, /proc/self/pagemap tells the pages the
 * guest never touched (neither present nor swapped: they read as zero, and reading them would
 * only map the zero page). Everything when that is not known. */
static void chunk_candidates(int pagemap, const uint8_t *hva, unsigned n, bool *want)
{
    uint64_t entries[CHUNK_PAGES];
    off_t at = (off_t)((uintptr_t)hva / PAGE * 8);
    bool known = pagemap >= 0 && pread(pagemap, entries, n * 8, at) == (ssize_t)(n * 8);
    for (unsigned i = 0; i < n; i++)
        want[i] = !known || (entries[i] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED));
}

/* One region: the pages to write (a diff's dirty ones; else those not zero), in runs. */
static int write_region(struct snapshot_mem_job *job, unsigned ri, int pagemap,
                        struct wisp_err *err)
{
    const struct guest_mem_region *rg = &job->mem->regions[ri];
    const uint64_t *dirty = job->dirty[ri];
    uint64_t base = guest_mem_file_offset(job->mem, ri), pages = rg->size / PAGE;
    for (uint64_t first = 0; first < pages; first += CHUNK_PAGES) {
        if (atomic_load(&job->cancel))
            return wisp_err_set(err, ECANCELED, "the snapshot was cancelled");
        unsigned n = pages - first < CHUNK_PAGES ? (unsigned)(pages - first) : CHUNK_PAGES;
        bool want[CHUNK_PAGES];
        if (dirty)
            for (unsigned i = 0; i < n; i++)
                want[i] = (dirty[(first + i) / 64] >> ((first + i) % 64)) & 1;
        else
            chunk_candidates(job->kind == SNAPSHOT_RAM_ANON ? pagemap : -1, rg->hva + first * PAGE,
                             n, want);
        for (unsigned i = 0; i < n;) {
            const uint8_t *p = rg->hva + (first + i) * PAGE;
            if (!want[i] || (!dirty && page_is_zero(p))) {
                i++;
                continue;
            }
            unsigned j = i + 1; /* a run of pages to write */
            while (j < n && want[j] && (dirty || !page_is_zero(rg->hva + (first + j) * PAGE)))
                j++;
            int r = write_run(job, p, base + (first + i) * PAGE, (uint64_t)(j - i) * PAGE, err);
            if (r < 0)
                return r;
            job->bytes_written += (uint64_t)(j - i) * PAGE;
            i = j;
        }
    }
    return 0;
}

int snapshot_mem_write(struct snapshot_mem_job *job, struct wisp_err *err)
{
    if (ftruncate(job->fd, (off_t)job->mem->total) < 0) /* holes read as zero */
        return wisp_err_sys(err, errno, "mem_file_path: cannot size the file to %llu bytes",
                            (unsigned long long)job->mem->total);
    cleanup_close int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    for (unsigned i = 0; i < job->mem->nr_regions; i++) {
        int r = write_region(job, i, pagemap, err);
        if (r < 0)
            return r;
    }
    return 0;
}
