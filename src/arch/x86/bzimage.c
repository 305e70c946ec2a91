/* Linux bzImage setup header checks for the 64-bit boot protocol (Documentation/x86/boot.rst). */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define SETUP_HDR_OFFSET  0x1f1 /* boot.rst "THE REAL-MODE KERNEL HEADER" */
#define BOOT_FLAG         0xaa55
#define HDRS_MAGIC        0x53726448 /* "HdrS" */
#define MIN_VERSION       0x020c     /* 2.12: xloadflags, XLF_KERNEL_64 */
#define LEGACY_INITRD_MAX 0x37ffffffULL

typedef unsigned long long ull;

/* Rounds v up to a multiple of a (a power of two, or 0 for none); false if that wraps. */
static bool align_up(uint64_t v, uint64_t a, uint64_t *out)
{
    if (a == 0) {
        *out = v;
        return true;
    }
    if (__builtin_add_overflow(v, a - 1, out))
        return false;
    *out &= ~(a - 1);
    return true;
}

static int check_header(const char *path, const struct setup_header *h, unsigned hdr_len,
                        struct wisp_err *err)
{
    if (h->boot_flag != BOOT_FLAG)
        return wisp_err_set(err, ENOEXEC,
                            "%s: not a bzImage: boot_flag at offset 0x1fe is 0x%04x, "
                            "expected 0xaa55",
                            path, h->boot_flag);
    if (h->header != HDRS_MAGIC)
        return wisp_err_set(err, ENOEXEC, "%s: not a bzImage: no \"HdrS\" magic at offset 0x202",
                            path);
    if (h->version < MIN_VERSION)
        return wisp_err_set(
            err, ENOEXEC,
            "%s: boot protocol version %u.%02u (offset 0x206) is too old: the 64-bit "
            "entry needs 2.12 or newer (Linux 3.8+)",
            path, h->version >> 8, h->version & 0xff);
    /* pref_address and init_size (2.10+) say where the kernel decompresses: both must be there. */
    if (hdr_len < offsetof(struct setup_header, init_size) + 4)
        return wisp_err_set(err, ENOEXEC,
                            "%s: setup header (jump at offset 0x200) ends at 0x%x, "
                            "before pref_address at 0x258 and init_size at 0x260 end (0x264)",
                            path, SETUP_HDR_OFFSET + hdr_len);
    if (!(h->loadflags & LOADED_HIGH))
        return wisp_err_set(err, ENOEXEC,
                            "%s: loadflags (offset 0x211) lack LOADED_HIGH: a zImage "
                            "loaded at 0x10000 is not supported",
                            path);
    if (!(h->xloadflags & XLF_KERNEL_64))
        return wisp_err_set(err, ENOEXEC,
                            "%s: xloadflags (offset 0x236) lack XLF_KERNEL_64: the "
                            "kernel has no 64-bit entry point",
                            path);
    if (h->relocatable_kernel &&
        (h->kernel_alignment == 0 || (h->kernel_alignment & (h->kernel_alignment - 1))))
        return wisp_err_set(err, ENOEXEC,
                            "%s: kernel_alignment 0x%x (offset 0x230) is not a power "
                            "of two",
                            path, h->kernel_alignment);
    return 0;
}

/* Header length: boot.rst "the end of the setup header can be calculated as 0x0202 + the byte
 * value at offset 0x0201". wisp copies no more than its struct setup_header holds (up to 0x26c,
 * kernel_info_offset): what a longer header adds is not known here, and what the file has past
 * the struct must not reach the fields that follow it. */
static int copy_header(const char *path, const uint8_t *head, uint64_t len, uint64_t file_size,
                       struct x86_bzimage *bz, struct wisp_err *err)
{
    uint64_t hdr_end = 0x202 + (uint64_t)head[0x201];
    if (hdr_end > SETUP_HDR_OFFSET + sizeof(struct setup_header))
        hdr_end = SETUP_HDR_OFFSET + sizeof(struct setup_header);
    if (hdr_end > len)
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated: setup header ends at offset 0x%llx, file "
                            "has %llu bytes",
                            path, (ull)hdr_end, (ull)file_size);
    bz->hdr_len = (unsigned)(hdr_end - SETUP_HDR_OFFSET);
    memcpy(&bz->hdr, head + SETUP_HDR_OFFSET, bz->hdr_len);
    return 0;
}

/* Where the protected-mode kernel goes in the file and in memory (boot.rst "LOADING THE REST OF
 * THE KERNEL": it starts at (setup_sects + 1) * 512, setup_sects 0 meaning 4). */
static int place_image(const char *path, uint64_t file_size, struct x86_bzimage *bz,
                       struct wisp_err *err)
{
    const struct setup_header *h = &bz->hdr;
    uint64_t sectors = h->setup_sects ? h->setup_sects : 4, claimed;
    if (__builtin_mul_overflow(sectors + 1, 512, &bz->setup_size) || bz->setup_size >= file_size)
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated: setup_sects %u (offset 0x1f1) puts the "
                            "kernel at offset 0x%llx, file has %llu bytes",
                            path, h->setup_sects, (ull)bz->setup_size, (ull)file_size);
    bz->kernel_size = file_size - bz->setup_size;
    if (__builtin_mul_overflow((uint64_t)h->syssize, 16, &claimed) ||
        (h->syssize && claimed > bz->kernel_size))
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated: syssize (offset 0x1f4) says %llu bytes of "
                            "kernel, file holds %llu after the setup",
                            path, (ull)claimed, (ull)bz->kernel_size);
    bz->load_addr = X86_HIMEM_START;
    bz->entry = bz->load_addr + 0x200; /* "64-bit BOOT PROTOCOL": startup_64 */
    if (bz->kernel_size <= 0x200)
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated: the protected-mode kernel has %llu bytes (from file "
                            "offset 0x%llx), too few for its 64-bit entry at +0x200",
                            path, (ull)bz->kernel_size, (ull)bz->setup_size);
    if (__builtin_add_overflow(bz->load_addr, bz->kernel_size, &bz->image_end))
        return wisp_err_set(err, ENOEXEC, "%s: %llu bytes of kernel do not fit at 0x%llx", path,
                            (ull)bz->kernel_size, (ull)bz->load_addr);
    return 0;
}

/* boot.rst "The kernel runtime start address is determined by the following algorithm":
 *   relocatable: align_up(max(load address, pref_address), kernel_alignment)
 *   otherwise:   pref_address
 * and init_size bytes from there are what the kernel needs to decompress itself. */
static int place_run_area(const char *path, struct x86_bzimage *bz, struct wisp_err *err)
{
    const struct setup_header *h = &bz->hdr;
    uint64_t base = h->pref_address > bz->load_addr ? h->pref_address : bz->load_addr;
    if (!h->relocatable_kernel) {
        if (h->pref_address < X86_HIMEM_START)
            return wisp_err_set(err, ENOEXEC,
                                "%s: the kernel is not relocatable (relocatable_kernel 0, offset "
                                "0x234) and runs at pref_address 0x%llx (offset 0x258), below "
                                "1 MiB where wisp's boot tables are",
                                path, (ull)h->pref_address);
        bz->run_addr = h->pref_address;
    } else if (!align_up(base, h->kernel_alignment, &bz->run_addr)) {
        return wisp_err_set(err, ENOEXEC,
                            "%s: pref_address 0x%llx (offset 0x258) aligned up to "
                            "kernel_alignment 0x%x (offset 0x230) runs past the end of the "
                            "address space",
                            path, (ull)h->pref_address, h->kernel_alignment);
    }
    char origin[X86_MSG_LEN];
    if (__builtin_add_overflow(bz->run_addr, (uint64_t)h->init_size, &bz->run_end) ||
        !align_up(bz->run_end > bz->image_end ? bz->run_end : bz->image_end, 4096,
                  &bz->reserve_end))
        return wisp_err_set(err, ENOEXEC,
                            "%s: the kernel runs at 0x%llx (%s) and needs init_size 0x%x (offset "
                            "0x260) from there: past the end of the address space",
                            path, (ull)bz->run_addr,
                            x86_bzimage_run_origin(bz, origin, sizeof(origin)), h->init_size);
    return 0;
}

const char *x86_bzimage_run_origin(const struct x86_bzimage *bz, char *buf, size_t len)
{
    const struct setup_header *h = &bz->hdr;
    if (bz->run_addr == h->pref_address)
        snprintf(buf, len, "pref_address, offset 0x258");
    else if (h->pref_address > bz->load_addr)
        snprintf(buf, len,
                 "pref_address 0x%llx aligned up to kernel_alignment 0x%x, offsets 0x258 "
                 "and 0x230",
                 (ull)h->pref_address, h->kernel_alignment);
    else if (bz->run_addr != bz->load_addr)
        snprintf(buf, len, "0x%llx aligned up to kernel_alignment 0x%x, offset 0x230",
                 (ull)bz->load_addr, h->kernel_alignment);
    else
        snprintf(buf, len, "where it is loaded");
    return buf;
}

int x86_bzimage_parse(const char *path, const uint8_t *head, uint64_t len, uint64_t file_size,
                      struct x86_bzimage *bz, struct wisp_err *err)
{
    memset(bz, 0, sizeof(*bz));
    if (len > file_size)
        len = file_size;
    if (len < 0x202 + 4)
        return wisp_err_set(err, ENOEXEC,
                            "%s: %llu bytes are too short for a bzImage setup header "
                            "(ends past offset 0x206)",
                            path, (ull)file_size);
    int r = copy_header(path, head, len, file_size, bz, err);
    if (r == 0)
        r = check_header(path, &bz->hdr, bz->hdr_len, err);
    if (r == 0)
        r = place_image(path, file_size, bz, err);
    if (r == 0)
        r = place_run_area(path, bz, err);
    if (r < 0)
        return r;
    const struct setup_header *h = &bz->hdr;
    /* boot.rst: initrd_addr_max is the highest address the initrd may occupy (0: 0x37ffffff). */
    uint64_t initrd_addr_max = h->initrd_addr_max ? h->initrd_addr_max : LEGACY_INITRD_MAX;
    if (__builtin_add_overflow(initrd_addr_max, 1, &bz->initrd_max))
        return wisp_err_set(err, ENOEXEC, "%s: initrd_addr_max (offset 0x22c) overflows", path);
    bz->cmdline_max = h->version >= 0x0206 ? h->cmdline_size : 255;
    return 0;
}
