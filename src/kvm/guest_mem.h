/* Guest RAM: anonymous host mappings split around the 32-bit MMIO hole, and the one checked
 * accessor through which every guest-physical access goes. */
#ifndef WISP_KVM_GUEST_MEM_H
#define WISP_KVM_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* x86 layout: RAM from 0 up to at most 3 GiB, then the 32-bit MMIO hole (3 GiB .. 4 GiB:
 * virtio-mmio windows, IOAPIC 0xfec00000, LAPIC 0xfee00000), then the rest of RAM from 4 GiB. */
#define GUEST_MMIO_HOLE_START 0xc0000000ULL
#define GUEST_MMIO_HOLE_END   0x100000000ULL
#define GUEST_MEM_MAX_REGIONS 2
#define GUEST_MEM_MAX_BYTES   (1ULL << 40) /* 1 TiB: far above what a host here can back */

struct guest_mem_region {
    uint64_t gpa;  /* guest-physical start */
    uint64_t size; /* bytes */
    uint8_t *hva;  /* host mapping (see enum guest_mem_backend) */
};

/* What backs guest RAM (docs/memory.md says when to pick which). */
enum guest_mem_backend {
    GUEST_MEM_ANON,      /* MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE (the default) */
    GUEST_MEM_MEMFD,     /* a sealed memfd (F_SEAL_SHRINK | F_SEAL_GROW), MAP_SHARED */
    GUEST_MEM_FILE,      /* a file at `path`, truncated and sized, MAP_SHARED */
    GUEST_MEM_HUGETLBFS, /* 2 MiB pages: memfd MFD_HUGETLB, or a file in the mount `path` */
};

/* A three-way setting: leave the host's default, or force it on or off. */
enum guest_mem_switch {
    GUEST_MEM_DEFAULT,
    GUEST_MEM_ON,
    GUEST_MEM_OFF,
};

struct guest_mem_options {
    enum guest_mem_backend backend;
    const char *path;          /* GUEST_MEM_FILE: the file; GUEST_MEM_HUGETLBFS: a mount or NULL */
    enum guest_mem_switch thp; /* madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE); not for hugetlbfs */
    bool ksm;                  /* madvise(MADV_MERGEABLE); private (anon) memory only */
    bool prefault;             /* every page populated before the guest runs */
};

struct guest_mem {
    struct guest_mem_region regions[GUEST_MEM_MAX_REGIONS];
    unsigned nr_regions;
    uint64_t total; /* bytes of RAM, sum of the regions */
    /* Set by guest_mem_create(): the RAM is fresh MAP_ANONYMOUS memory, every byte reads as zero
     * and no page is committed yet, so a loader may skip zeroing (ELF .bss). False for RAM with
     * contents (memfd, file, snapshot backends): those zero what must be zero. */
    bool fresh_zero;
    /* The file behind a shared backend (memfd, file, hugetlbfs; region i at
     * guest_mem_file_offset(i)), -1 for private memory. Freed pages of a shared backend must be
     * punched out of it (guest_mem_discard): MADV_DONTNEED alone would keep the file's page. */
    int fd;
    bool shared;        /* MAP_SHARED of fd */
    uint64_t page_size; /* 4 KiB, or 2 MiB for hugetlbfs */
    /* Pages the VMM itself wrote (devices: used rings, device-writable buffers), one bit per
     * 4 KiB page of each region, while guest_mem_track_dirty() is on: KVM's dirty log sees only
     * the guest's own writes. NULL when not tracked. */
    uint64_t *vmm_dirty[GUEST_MEM_MAX_REGIONS];
};

/*
 * Computes the regions for `bytes` of RAM (a multiple of 4 KiB, > 0) without mapping anything.
 * Used by guest_mem_create() and by the unit tests of the e820/ACPI builders.
 */
int guest_mem_layout(struct guest_mem *mem, uint64_t bytes, struct wisp_err *err);

/* guest_mem_layout() + mmap of each region. Pair with guest_mem_destroy() (safe on partial). */
int guest_mem_create(struct guest_mem *mem, uint64_t bytes, struct wisp_err *err);
/*
 * The same with a backend and policies. Every error is reported here, before the guest runs:
 * hugetlbfs without enough free 2 MiB pages fails with the counts and how to reserve more
 * (the mapping reserves its pages, so a guest never meets a SIGBUS later); --ksm with a shared
 * backend fails (KSM merges private anonymous pages only).
 */
int guest_mem_create_with(struct guest_mem *mem, uint64_t bytes,
                          const struct guest_mem_options *opts, struct wisp_err *err);
/* The policies of o (thp, ksm, prefault) over every region, as guest_mem_create_with() applies
 * them (also to a restored VM's memory file mapping). */
int guest_mem_apply_policies(struct guest_mem *mem, const struct guest_mem_options *o,
                             struct wisp_err *err);
/* The names of the backends and switches, as the flags and the API spell them. */
const char *guest_mem_backend_name(enum guest_mem_backend b);
const char *guest_mem_switch_name(enum guest_mem_switch s);
/*
 * Gives the host pages of [gpa, gpa + len) back (a balloon, free page reporting): page-aligned,
 * inside one region, overflow-checked (-EFAULT otherwise, -EINVAL if not aligned). Private
 * memory: MADV_DONTNEED; shared: fallocate(PUNCH_HOLE) on the file. Either way the range reads
 * as zeroes afterwards, never as anything another VM or an earlier guest left.
 */
int guest_mem_discard(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* The guest-physical address of [hva, hva + len) if it lies in one region (the inverse of
 * gpa_to_hva, for a device holding host addresses of a chain's buffers). */
bool guest_mem_hva_to_gpa(const struct guest_mem *mem, const void *hva, uint64_t len,
                          uint64_t *gpa);
void guest_mem_destroy(struct guest_mem *mem);
/*
 * The file-backed variant (snapshot restore): guest_mem_layout() + each region mapped
 * MAP_PRIVATE from `fd` at the file offset where it lies in a snapshot's memory file (the
 * regions one after the other, in guest-physical order). Pages are read on demand and stay the
 * page cache's, shared by every VM mapping the file, until written (then private). The file
 * must hold all `bytes`: a mapping past its end would fault (SIGBUS) on access. fresh_zero is
 * false. The fd may be closed afterwards.
 */
int guest_mem_create_from_file(struct guest_mem *mem, uint64_t bytes, int fd, struct wisp_err *err);
/* Where region `region` starts in a snapshot's memory file. */
uint64_t guest_mem_file_offset(const struct guest_mem *mem, unsigned region);

/* Dirty tracking of the VMM's own writes: allocates the bitmaps, every page marked dirty when
 * all_dirty (a VM without a snapshot to compare with). */
int guest_mem_track_dirty(struct guest_mem *mem, bool all_dirty, struct wisp_err *err);
/* Marks the pages of [gpa, gpa + len) written (any thread; nothing when not tracked). */
void guest_mem_mark_dirty(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* Moves region i's bitmap into out (ORed: words of 64 pages), clearing it. */
void guest_mem_take_dirty(const struct guest_mem *mem, unsigned region, uint64_t *out);
/* ORs bits (taken earlier, for a snapshot that failed) back into region i's bitmap. */
void guest_mem_put_dirty(const struct guest_mem *mem, unsigned region, const uint64_t *bits);
/* Words of 64 bits in a bitmap of region i (one bit per 4 KiB page). */
uint64_t guest_mem_bitmap_words(const struct guest_mem *mem, unsigned region);

/*
 * The checked accessor: returns the host address of [gpa, gpa + len) if the whole range lies in
 * one RAM region, else NULL. Overflow-safe for any gpa/len a guest can send. len == 0 is valid
 * (returns the address of gpa if gpa lies in or at the end of a region).
 */
void *gpa_to_hva(const struct guest_mem *mem, uint64_t gpa, uint64_t len);

/* Copies to/from guest memory through gpa_to_hva; return 0 or -EFAULT. */
int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *src, uint64_t len);
int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *dst, uint64_t len);

/* End of RAM below 4 GiB (exclusive). */
uint64_t guest_mem_low_end(const struct guest_mem *mem);

#endif
