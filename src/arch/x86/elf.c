/* ELF kernel loader: validates an ELF32/ELF64 executable against the guest's RAM, finds the PVH
 * entry note (XEN_ELFNOTE_PHYS32_ENTRY) and copies PT_LOAD segments to their physical addresses. */
#include "arch/x86/boot_int.h"

#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"

#define NOTE_MAX_BYTES (1ULL << 20)

typedef unsigned long long ull;

int x86_read_at(const char *path, int fd, uint64_t off, void *buf, uint64_t len,
                struct wisp_err *err)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len > (1U << 30) ? (1U << 30) : len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return wisp_err_sys(err, errno, "%s: read at offset 0x%llx", path, (ull)off);
        if (n == 0)
            return wisp_err_set(err, EIO, "%s: unexpected end of file at offset 0x%llx", path,
                                (ull)off);
        p += n, off += (uint64_t)n, len -= (uint64_t)n;
    }
    return 0;
}

/* The fields of Elf32_Ehdr / Elf64_Ehdr wisp uses, widened. */
struct elf_header {
    uint64_t entry, phoff;
    unsigned phentsize, phnum;
};

/* ELF gABI "ELF Identification": magic, class, little-endian, version 1. */
static int check_ident(const char *path, const unsigned char *ident, struct wisp_err *err)
{
    if (memcmp(ident, ELFMAG, SELFMAG) != 0)
        return wisp_err_set(err, ENOEXEC, "%s: no ELF magic at offset 0", path);
    if (ident[EI_CLASS] != ELFCLASS32 && ident[EI_CLASS] != ELFCLASS64)
        return wisp_err_set(err, ENOEXEC, "%s: ELF class %u at offset 4 is neither 32- nor 64-bit",
                            path, ident[EI_CLASS]);
    if (ident[EI_DATA] != ELFDATA2LSB)
        return wisp_err_set(err, ENOEXEC,
                            "%s: ELF data encoding %u at offset 5 is not little-endian", path,
                            ident[EI_DATA]);
    if (ident[EI_VERSION] != EV_CURRENT)
        return wisp_err_set(err, ENOEXEC, "%s: ELF version %u at offset 6, expected 1", path,
                            ident[EI_VERSION]);
    return 0;
}

static int parse_ehdr(const char *path, int fd, uint64_t file_size, struct x86_elf *elf,
                      struct elf_header *h, struct wisp_err *err)
{
    union {
        unsigned char ident[EI_NIDENT];
        Elf32_Ehdr e32;
        Elf64_Ehdr e64;
    } u;
    memset(&u, 0, sizeof(u));
    if (file_size < EI_NIDENT)
        return wisp_err_set(err, ENOEXEC,
                            "%s: truncated ELF: %llu bytes, the identification "
                            "needs 16",
                            path, (ull)file_size);
    int r = x86_read_at(path, fd, 0, u.ident, EI_NIDENT, err);
    if (r < 0)
        return r;
    r = check_ident(path, u.ident, err);
    if (r < 0)
        return r;
    elf->is64 = u.ident[EI_CLASS] == ELFCLASS64;
    uint64_t ehsize = elf->is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
    if (file_size < ehsize)
        return wisp_err_set(err, ENOEXEC, "%s: truncated ELF header: %llu bytes, needs %llu", path,
                            (ull)file_size, (ull)ehsize);
    r = x86_read_at(path, fd, 0, &u, ehsize, err);
    if (r < 0)
        return r;
    unsigned type = elf->is64 ? u.e64.e_type : u.e32.e_type;
    unsigned machine = elf->is64 ? u.e64.e_machine : u.e32.e_machine;
    if (type != ET_EXEC)
        return wisp_err_set(err, ENOEXEC, "%s: e_type %u at offset 16 is not ET_EXEC (2)", path,
                            type);
    if (machine != (elf->is64 ? EM_X86_64 : EM_386))
        return wisp_err_set(err, ENOEXEC, "%s: e_machine %u at offset 18 is not %s", path, machine,
                            elf->is64 ? "x86-64 (62)" : "i386 (3)");
    h->entry = elf->is64 ? u.e64.e_entry : u.e32.e_entry;
    h->phoff = elf->is64 ? u.e64.e_phoff : u.e32.e_phoff;
    h->phentsize = elf->is64 ? u.e64.e_phentsize : u.e32.e_phentsize;
    h->phnum = elf->is64 ? u.e64.e_phnum : u.e32.e_phnum;
    elf->entry = h->entry;
    unsigned want = elf->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
    if (h->phentsize != want)
        return wisp_err_set(err, ENOEXEC, "%s: e_phentsize %u (offset %u) is not %u", path,
                            h->phentsize, elf->is64 ? 54 : 42, want);
    if (h->phnum == 0 || h->phnum >= PN_XNUM || h->phnum > X86_ELF_MAX_PHDRS)
        return wisp_err_set(err, ENOEXEC, "%s: e_phnum %u (offset %u) is not in 1..%u", path,
                            h->phnum, elf->is64 ? 56 : 44, X86_ELF_MAX_PHDRS);
    uint64_t end;
    if (__builtin_add_overflow(h->phoff, (uint64_t)h->phnum * h->phentsize, &end) ||
        end > file_size)
        return wisp_err_set(err, ENOEXEC,
                            "%s: program headers at e_phoff 0x%llx (%u x %u bytes) "
                            "lie outside the file of %llu bytes",
                            path, (ull)h->phoff, h->phnum, h->phentsize, (ull)file_size);
    return 0;
}

/* Finds XEN_ELFNOTE_PHYS32_ENTRY in one PT_NOTE segment ("Xen" notes, ELF gABI note format). */
static int parse_notes(const char *path, int fd, const Elf64_Phdr *ph, struct x86_elf *elf,
                       struct wisp_err *err)
{
    if (ph->p_filesz > NOTE_MAX_BYTES)
        return wisp_err_set(err, ENOEXEC, "%s: PT_NOTE at offset 0x%llx is %llu bytes (limit %llu)",
                            path, (ull)ph->p_offset, (ull)ph->p_filesz, NOTE_MAX_BYTES);
    cleanup_free uint8_t *buf = malloc(ph->p_filesz ? ph->p_filesz : 1);
    if (!buf)
        return wisp_err_set(err, ENOMEM, "%s: no memory for PT_NOTE", path);
    int r = x86_read_at(path, fd, ph->p_offset, buf, ph->p_filesz, err);
    if (r < 0)
        return r;
    uint64_t align = ph->p_align == 8 ? 8 : 4, size = ph->p_filesz, pos = 0;
    while (pos + sizeof(Elf64_Nhdr) <= size) {
        Elf64_Nhdr n; /* same layout as Elf32_Nhdr: three 32-bit words */
        memcpy(&n, buf + pos, sizeof(n));
        uint64_t name = pos + sizeof(n);
        uint64_t desc = name + (((uint64_t)n.n_namesz + align - 1) & ~(align - 1));
        uint64_t file_off = ph->p_offset + pos;
        if (desc > size || desc + n.n_descsz > size)
            return wisp_err_set(err, ENOEXEC,
                                "%s: note at offset 0x%llx: namesz %u / descsz %u "
                                "run past the PT_NOTE segment ending at offset 0x%llx",
                                path, (ull)file_off, n.n_namesz, n.n_descsz,
                                (ull)(ph->p_offset + size));
        if (n.n_type == XEN_ELFNOTE_PHYS32_ENTRY && n.n_namesz == 4 &&
            memcmp(buf + name, "Xen", 4) == 0) {
            uint64_t v = 0;
            if (n.n_descsz != 4 && n.n_descsz != 8)
                return wisp_err_set(err, ENOEXEC,
                                    "%s: PVH entry note at offset 0x%llx has descsz "
                                    "%u, expected 4 or 8",
                                    path, (ull)file_off, n.n_descsz);
            memcpy(&v, buf + desc, n.n_descsz);
            if (v >= (1ULL << 32))
                return wisp_err_set(err, ENOEXEC,
                                    "%s: PVH entry 0x%llx (note at offset 0x%llx) is "
                                    "above 4 GiB",
                                    path, (ull)v, (ull)file_off);
            elf->has_pvh = true;
            elf->pvh_entry = v;
        }
        pos = desc + (((uint64_t)n.n_descsz + align - 1) & ~(align - 1));
    }
    return 0;
}

static int check_segment(const char *path, const struct guest_mem *mem, uint64_t file_size,
                         uint64_t ph_off, const Elf64_Phdr *ph, struct wisp_err *err)
{
    uint64_t file_end, mem_end;
    if (ph->p_filesz > ph->p_memsz)
        return wisp_err_set(err, ENOEXEC,
                            "%s: PT_LOAD at offset 0x%llx: p_filesz 0x%llx exceeds "
                            "p_memsz 0x%llx",
                            path, (ull)ph_off, (ull)ph->p_filesz, (ull)ph->p_memsz);
    if (__builtin_add_overflow(ph->p_offset, ph->p_filesz, &file_end) || file_end > file_size)
        return wisp_err_set(err, ENOEXEC,
                            "%s: PT_LOAD at offset 0x%llx: data [0x%llx, +0x%llx) "
                            "lies outside the file of %llu bytes",
                            path, (ull)ph_off, (ull)ph->p_offset, (ull)ph->p_filesz,
                            (ull)file_size);
    if (__builtin_add_overflow(ph->p_paddr, ph->p_memsz, &mem_end))
        return wisp_err_set(err, ENOEXEC,
                            "%s: PT_LOAD at offset 0x%llx: p_paddr 0x%llx + p_memsz "
                            "0x%llx overflows",
                            path, (ull)ph_off, (ull)ph->p_paddr, (ull)ph->p_memsz);
    if (ph->p_paddr < X86_LOW_TABLES_END ||
        (ph->p_paddr < X86_TABLES_END && mem_end > X86_ACPI_ADDR))
        return wisp_err_set(err, ENOEXEC,
                            "%s: PT_LOAD at offset 0x%llx: [0x%llx, 0x%llx) overlaps wisp's boot "
                            "tables at [0, 0x%llx) or [0x%llx, 0x%llx)",
                            path, (ull)ph_off, (ull)ph->p_paddr, (ull)mem_end, X86_LOW_TABLES_END,
                            X86_ACPI_ADDR, X86_TABLES_END);
    if (ph->p_paddr < GUEST_MMIO_HOLE_END && mem_end > GUEST_MMIO_HOLE_START)
        return wisp_err_set(err, ENOEXEC,
                            "%s: PT_LOAD at offset 0x%llx: [0x%llx, 0x%llx) overlaps "
                            "the MMIO hole [3 GiB, 4 GiB)",
                            path, (ull)ph_off, (ull)ph->p_paddr, (ull)mem_end);
    char need[X86_MSG_LEN];
    if (!gpa_to_hva(mem, ph->p_paddr, ph->p_memsz))
        return wisp_err_set(err, ENOSPC, "%s: PT_LOAD at offset 0x%llx: [0x%llx, 0x%llx) needs %s",
                            path, (ull)ph_off, (ull)ph->p_paddr, (ull)mem_end,
                            x86_ram_needed(mem, ph->p_paddr, mem_end, need, sizeof(need)));
    return 0;
}

static int add_segment(const char *path, uint64_t ph_off, const Elf64_Phdr *ph, struct x86_elf *elf,
                       struct wisp_err *err)
{
    if (elf->nr_segments >= X86_ELF_MAX_LOAD)
        return wisp_err_set(err, ENOEXEC, "%s: more than %u PT_LOAD segments (at offset 0x%llx)",
                            path, X86_ELF_MAX_LOAD, (ull)ph_off);
    uint64_t start = ph->p_paddr, end = ph->p_paddr + ph->p_memsz;
    for (unsigned i = 0; i < elf->nr_segments; i++) {
        const struct x86_elf_segment *s = &elf->segments[i];
        if (start < s->paddr + s->memsz && s->paddr < end)
            return wisp_err_set(err, ENOEXEC,
                                "%s: PT_LOAD at offset 0x%llx: [0x%llx, 0x%llx) "
                                "overlaps segment %u at [0x%llx, 0x%llx)",
                                path, (ull)ph_off, (ull)start, (ull)end, i, (ull)s->paddr,
                                (ull)(s->paddr + s->memsz));
    }
    elf->segments[elf->nr_segments++] = (struct x86_elf_segment){
        .offset = ph->p_offset, .paddr = start, .filesz = ph->p_filesz, .memsz = ph->p_memsz};
    if (elf->nr_segments == 1 || start < elf->start)
        elf->start = start;
    if (end > elf->end)
        elf->end = end;
    return 0;
}

static void widen_phdr(bool is64, const uint8_t *raw, Elf64_Phdr *ph)
{
    if (is64) {
        memcpy(ph, raw, sizeof(*ph));
        return;
    }
    Elf32_Phdr p;
    memcpy(&p, raw, sizeof(p));
    *ph = (Elf64_Phdr){.p_type = p.p_type,
                       .p_offset = p.p_offset,
                       .p_paddr = p.p_paddr,
                       .p_vaddr = p.p_vaddr,
                       .p_filesz = p.p_filesz,
                       .p_memsz = p.p_memsz,
                       .p_align = p.p_align,
                       .p_flags = p.p_flags};
}

static int check_entry(const char *path, const struct x86_elf *elf, struct wisp_err *err)
{
    if (elf->nr_segments == 0)
        return wisp_err_set(err, ENOEXEC, "%s: no PT_LOAD segment with p_memsz > 0", path);
    if (!elf->has_pvh && !elf->is64)
        return wisp_err_set(err, ENOEXEC,
                            "%s: a 32-bit ELF without a PVH note (Xen note type 18): "
                            "wisp enters 32-bit kernels only through PVH",
                            path);
    uint64_t entry = elf->has_pvh ? elf->pvh_entry : elf->entry;
    for (unsigned i = 0; i < elf->nr_segments; i++) {
        const struct x86_elf_segment *s = &elf->segments[i];
        if (entry >= s->paddr && entry < s->paddr + s->memsz && entry < (1ULL << 32))
            return 0;
    }
    return wisp_err_set(err, ENOEXEC, "%s: %s 0x%llx is not inside a PT_LOAD segment below 4 GiB",
                        path, elf->has_pvh ? "PVH entry" : "e_entry (offset 24)", (ull)entry);
}

int x86_elf_parse(const char *path, int fd, uint64_t file_size, const struct guest_mem *mem,
                  struct x86_elf *elf, struct wisp_err *err)
{
    memset(elf, 0, sizeof(*elf));
    struct elf_header h = {0};
    int r = parse_ehdr(path, fd, file_size, elf, &h, err);
    if (r < 0)
        return r;
    cleanup_free uint8_t *phdrs = malloc((size_t)h.phnum * h.phentsize);
    if (!phdrs)
        return wisp_err_set(err, ENOMEM, "%s: no memory for program headers", path);
    r = x86_read_at(path, fd, h.phoff, phdrs, (uint64_t)h.phnum * h.phentsize, err);
    for (unsigned i = 0; r == 0 && i < h.phnum; i++) {
        uint64_t ph_off = h.phoff + (uint64_t)i * h.phentsize;
        Elf64_Phdr ph;
        widen_phdr(elf->is64, phdrs + (size_t)i * h.phentsize, &ph);
        if (ph.p_type == PT_LOAD && ph.p_memsz > 0) {
            r = check_segment(path, mem, file_size, ph_off, &ph, err);
            if (r == 0)
                r = add_segment(path, ph_off, &ph, elf, err);
        } else if (ph.p_type == PT_NOTE) {
            uint64_t end;
            if (__builtin_add_overflow(ph.p_offset, ph.p_filesz, &end) || end > file_size)
                return wisp_err_set(err, ENOEXEC,
                                    "%s: PT_NOTE at offset 0x%llx: data [0x%llx, "
                                    "+0x%llx) lies outside the file of %llu bytes",
                                    path, (ull)ph_off, (ull)ph.p_offset, (ull)ph.p_filesz,
                                    (ull)file_size);
            r = parse_notes(path, fd, &ph, elf, err);
        }
    }
    if (r < 0)
        return r;
    return check_entry(path, elf, err);
}

int x86_elf_load(const char *path, int fd, const struct guest_mem *mem, const struct x86_elf *elf,
                 struct wisp_err *err)
{
    for (unsigned i = 0; i < elf->nr_segments; i++) {
        const struct x86_elf_segment *s = &elf->segments[i];
        uint8_t *dst = gpa_to_hva(mem, s->paddr, s->memsz);
        if (!dst || s->filesz > s->memsz)
            return wisp_err_set(err, EFAULT, "%s: segment at 0x%llx is outside guest RAM", path,
                                (ull)s->paddr);
        int r = x86_read_at(path, fd, s->offset, dst, s->filesz, err);
        if (r < 0)
            return r;
        /* .bss: fresh anonymous RAM already reads as zero, and writing zeros there would
         * commit host memory the guest may never touch (1.5 GiB of RSS for a 1.5 GiB .bss). */
        if (!mem->fresh_zero)
            memset(dst + s->filesz, 0, s->memsz - s->filesz);
    }
    return 0;
}
