/* Linux bzImage setup header checks for the 64-bit boot protocol (Documentation/x86/boot.rst). */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#define SETUP_HDR_OFFSET  0x1f1 /* boot.rst "THE REAL-MODE KERNEL HEADER" */
#define SETUP_HDR_END_MAX 0x290 /* the zero page's setup header ends here */
#define BOOT_FLAG         0xaa55
#define HDRS_MAGIC        0x53726448 /* "HdrS" */
#define MIN_VERSION       0x020c     /* 2.12: xloadflags, XLF_KERNEL_64 */
#define LEGACY_INITRD_MAX 0x37ffffffULL

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return a ? (v + a - 1) / a * a : v;
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
    if (hdr_len < offsetof(struct setup_header, pref_address) + 8)
        return wisp_err_set(err, ENOEXEC,
                            "%s: setup header (jump at offset 0x200) ends at 0x%x, "
                            "before pref_address at 0x258",
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
                            path, (unsigned long long)file_size);
    /* The header ends at 0x202 + the byte at 0x201 (the jump's 8-bit displacement). */
    uint64_t hdr_end = 0x202 + (uint64_t)head[0x201];
    if (hdr_end > SETUP_HDR_END_MAX)
        hdr_end = SETUP_HDR_END_MAX;
    if (hdr_end > len)
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated: setup header ends at offset 0x%llx, file "
                            "has %llu bytes",
                            path, (unsigned long long)hdr_end, (unsigned long long)file_size);
    bz->hdr_len = (unsigned)(hdr_end - SETUP_HDR_OFFSET);
    memcpy(&bz->hdr, head + SETUP_HDR_OFFSET, bz->hdr_len);
    const struct setup_header *h = &bz->hdr;
    int r = check_header(path, h, bz->hdr_len, err);
    if (r < 0)
        return r;

    unsigned setup_sects = h->setup_sects ? h->setup_sects : 4; /* boot.rst: 0 means 4 */
    bz->setup_size = (setup_sects + 1ULL) * 512;
    if (bz->setup_size >= file_size)
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated: setup_sects %u (offset 0x1f1) puts the "
                            "kernel at offset 0x%llx, file has %llu bytes",
                            path, h->setup_sects, (unsigned long long)bz->setup_size,
                            (unsigned long long)file_size);
    bz->kernel_size = file_size - bz->setup_size;
    if (h->syssize && (uint64_t)h->syssize * 16 > bz->kernel_size)
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated: syssize (offset 0x1f4) says %llu bytes of "
                            "kernel, file holds %llu after the setup",
                            path, (unsigned long long)h->syssize * 16,
                            (unsigned long long)bz->kernel_size);

    /* boot.rst: load the protected-mode kernel at 0x100000; a relocatable kernel moves itself to
     * max(align_up(load, kernel_alignment), pref_address) and needs init_size bytes there. */
    bz->load_addr = X86_HIMEM_START;
    bz->entry = bz->load_addr + 0x200; /* "64-bit BOOT PROTOCOL": startup_64 */
    uint64_t run_addr =
        h->relocatable_kernel ? align_up(bz->load_addr, h->kernel_alignment) : bz->load_addr;
    if (h->pref_address > run_addr)
        run_addr = h->pref_address;
    uint64_t end = run_addr + h->init_size;
    if (bz->load_addr + bz->kernel_size > end)
        end = bz->load_addr + bz->kernel_size;
    bz->reserve_end = align_up(end, 4096);
    bz->initrd_max = (h->initrd_addr_max ? h->initrd_addr_max : LEGACY_INITRD_MAX) + 1ULL;
    bz->cmdline_max = h->version >= 0x0206 ? h->cmdline_size : 255;
    return 0;
}
