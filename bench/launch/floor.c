/*
 * wisp-bench-floor: the least a KVM program must do to boot a PVH ELF and run it to its exit
 * port. It is the "raw KVM floor" of bench/launch: a VMM cannot launch a guest faster than this.
 *
 * It opens /dev/kvm, creates one VM with one memory slot and one vCPU, copies the ELF's PT_LOAD
 * segments into guest RAM, starts the vCPU at the PVH entry point in 32-bit protected mode, copies
 * every byte the guest writes to COM1 (0x3f8) to stdout and exits with the value the guest writes
 * to the test-exit port (0xf4), like wisp-vmm. No irqchip, no CPUID, no devices: the floor.
 * A guest that halts (hlt with interrupts off) makes it idle until a signal ends it, so the same
 * program serves as the floor of the memory benchmark.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/parse.h"
#include "wisp-config.h"

#define FLOOR_PORT_COM1      0x3f8
#define FLOOR_PORT_TEST_EXIT 0xf4
#define FLOOR_DEFAULT_MIB    128
#define FLOOR_MAX_MIB        3072 /* one slot below the 32-bit MMIO hole is all the floor needs */

/* PVH boot ABI (xen/include/public/elfnote.h, arch-x86/hvm/start_info.h). */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define PVH_START_INFO_MAGIC     0x336ec578
#define PVH_START_INFO_GPA       0x6000

/* struct hvm_start_info, version 0 (no memory map: the floor passes none). */
struct pvh_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
};

struct floor_vm {
    int kvm_fd;
    int vm_fd;
    int vcpu_fd;
    uint8_t *ram;
    size_t ram_size;
    struct kvm_run *run;
    size_t run_size;
};

/* Outcome of floor_run(): the guest wrote the exit port, or it halted and now idles. */
enum floor_end { FLOOR_END_EXIT, FLOOR_END_HALT };

static void floor_vm_destroy(struct floor_vm *vm)
{
    if (vm->run && vm->run != MAP_FAILED)
        munmap(vm->run, vm->run_size);
    if (vm->ram && vm->ram != MAP_FAILED)
        munmap(vm->ram, vm->ram_size);
    if (vm->vcpu_fd >= 0)
        close(vm->vcpu_fd);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
}

/* /dev/kvm, one VM, `ram_size` bytes of RAM at guest-physical 0, one vCPU and its kvm_run. */
static int floor_vm_create(struct floor_vm *vm, size_t ram_size, bool irqchip, struct wisp_err *err)
{
    *vm = (struct floor_vm){.kvm_fd = -1, .vm_fd = -1, .vcpu_fd = -1, .ram_size = ram_size};

    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0)
        return wisp_err_sys(err, errno, "cannot open /dev/kvm");
    if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        return wisp_err_set(err, ENOTSUP, "/dev/kvm speaks another API than version %d",
                            KVM_API_VERSION);
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0)
        return wisp_err_sys(err, errno, "KVM_CREATE_VM");

    vm->ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (vm->ram == MAP_FAILED)
        return wisp_err_sys(err, errno, "cannot map %zu bytes of guest RAM", ram_size);
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = ram_size,
        .userspace_addr = (uintptr_t)vm->ram,
    };
    if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return wisp_err_sys(err, errno, "KVM_SET_USER_MEMORY_REGION");
    /* --irqchip: wisp-vmm's in-kernel PIC, IOAPIC, LAPIC and PIT (kvm/vm.c), so that the
     * memory floor counts what KVM keeps for them; a halted vCPU then sleeps in KVM_RUN */
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (irqchip && ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return wisp_err_sys(err, errno, "KVM_CREATE_IRQCHIP");
    if (irqchip && ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return wisp_err_sys(err, errno, "KVM_CREATE_PIT2");

    vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0);
    if (vm->vcpu_fd < 0)
        return wisp_err_sys(err, errno, "KVM_CREATE_VCPU");
    int run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        return wisp_err_sys(err, run_size < 0 ? errno : EINVAL, "KVM_GET_VCPU_MMAP_SIZE");
    vm->run_size = (size_t)run_size;
    vm->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
    if (vm->run == MAP_FAILED)
        return wisp_err_sys(err, errno, "cannot map the vCPU's kvm_run");
    return 0;
}

/* True if [start, start + len) lies inside [0, limit). Overflow-safe. */
static int range_fits(uint64_t start, uint64_t len, uint64_t limit)
{
    return start <= limit && len <= limit - start;
}

/* Finds the PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY) in one PT_NOTE segment of the image. */
static int elf_find_pvh_entry(const uint8_t *note, uint64_t len, uint32_t *entry)
{
    uint64_t off = 0;

    while (len - off >= sizeof(Elf64_Nhdr)) {
        Elf64_Nhdr nhdr;
        memcpy(&nhdr, note + off, sizeof(nhdr));
        uint64_t name_off = off + sizeof(nhdr);
        uint64_t desc_off = name_off + (((uint64_t)nhdr.n_namesz + 3) & ~3ULL);
        uint64_t next = desc_off + (((uint64_t)nhdr.n_descsz + 3) & ~3ULL);
        if (next > len)
            return -EINVAL;
        if (nhdr.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nhdr.n_namesz == 4 &&
            memcmp(note + name_off, "Xen", 4) == 0 && nhdr.n_descsz >= 4) {
            memcpy(entry, note + desc_off, sizeof(*entry)); /* little-endian, low 32 bits */
            return 0;
        }
        off = next;
    }
    return -ENOENT;
}

/* Checks the ELF64 header of `image` (`size` bytes): x86-64 executable with program headers. */
static int elf_check_header(const uint8_t *image, size_t size, const char *path,
                            struct wisp_err *err)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;

    if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
        return wisp_err_set(err, ENOEXEC, "%s: not an ELF file", path);
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64)
        return wisp_err_set(err, ENOEXEC, "%s: not an x86-64 ELF64 file", path);
    if (eh->e_phentsize != sizeof(Elf64_Phdr) ||
        !range_fits(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), size))
        return wisp_err_set(err, ENOEXEC, "%s: program headers lie outside the file", path);
    return 0;
}

/* Copies the PT_LOAD segments of an ELF64 image into RAM and returns its PVH entry point. */
static int floor_load_elf(struct floor_vm *vm, const uint8_t *image, size_t size, const char *path,
                          uint32_t *entry, struct wisp_err *err)
{
    int r = elf_check_header(image, size, path, err);
    if (r < 0)
        return r;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;
    int have_entry = 0;

    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, image + eh->e_phoff + i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE)
            continue;
        if (!range_fits(ph.p_offset, ph.p_filesz, size))
            return wisp_err_set(err, ENOEXEC, "%s: segment %u lies outside the file", path, i);
        if (ph.p_type == PT_NOTE) {
            if (elf_find_pvh_entry(image + ph.p_offset, ph.p_filesz, entry) == 0)
                have_entry = 1;
            continue;
        }
        /* Guest RAM is fresh anonymous memory, already zero: the bss needs no clearing. */
        if (ph.p_filesz > ph.p_memsz || !range_fits(ph.p_paddr, ph.p_memsz, vm->ram_size))
            return wisp_err_set(err, ENOEXEC,
                                "%s: segment %u (0x%llx, %llu bytes) lies outside guest RAM", path,
                                i, (unsigned long long)ph.p_paddr, (unsigned long long)ph.p_memsz);
        memcpy(vm->ram + ph.p_paddr, image + ph.p_offset, ph.p_filesz);
    }
    if (!have_entry)
        return wisp_err_set(err, ENOEXEC, "%s: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)", path);
    return 0;
}

/* Reads the whole kernel file and loads it. */
static int floor_load_kernel(struct floor_vm *vm, const char *path, uint32_t *entry,
                             struct wisp_err *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "cannot open kernel %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return wisp_err_sys(err, errno, "cannot stat kernel %s", path);
    if (st.st_size <= 0 || (uint64_t)st.st_size > vm->ram_size)
        return wisp_err_set(err, EFBIG, "kernel %s: size %lld does not fit guest RAM", path,
                            (long long)st.st_size);
    size_t size = (size_t)st.st_size;
    cleanup_free uint8_t *image = malloc(size);
    if (!image)
        return wisp_err_sys(err, ENOMEM, "kernel %s", path);
    for (size_t done = 0; done < size;) {
        ssize_t n = pread(fd, image + done, size - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return wisp_err_sys(err, n < 0 ? errno : EIO, "cannot read kernel %s", path);
        done += (size_t)n;
    }
    return floor_load_elf(vm, image, size, path, entry, err);
}

/* A flat 4 GiB segment; `type` 0xb = code execute/read accessed, 0x3 = data read/write accessed. */
static struct kvm_segment flat_segment(uint16_t selector, uint8_t type)
{
    return (struct kvm_segment){
        .base = 0,
        .limit = 0xffffffff,
        .selector = selector,
        .type = type,
        .present = 1,
        .dpl = 0,
        .db = 1,
        .s = 1,
        .l = 0,
        .g = 1,
    };
}

/*
 * The PVH start state (xen/include/public/arch-x86/hvm/start_info.h): 32-bit protected mode,
 * paging off, flat CS (execute/read) and DS/ES/SS (read/write), TR a busy 32-bit TSS, CR0.PE set,
 * CR4 zero, EFLAGS.IF and VM clear, EBX the guest-physical address of struct hvm_start_info.
 */
static int floor_set_pvh_state(struct floor_vm *vm, uint32_t entry, struct wisp_err *err)
{
    struct pvh_start_info info = {.magic = PVH_START_INFO_MAGIC, .version = 0};
    memcpy(vm->ram + PVH_START_INFO_GPA, &info, sizeof(info));

    struct kvm_sregs sregs;
    if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
        return wisp_err_sys(err, errno, "KVM_GET_SREGS");
    sregs.cs = flat_segment(0x10, 0xb);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat_segment(0x18, 0x3);
    sregs.tr = (struct kvm_segment){.limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1};
    sregs.cr0 = 0x11; /* PE | ET */
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
        return wisp_err_sys(err, errno, "KVM_SET_SREGS");

    struct kvm_regs regs = {.rip = entry, .rbx = PVH_START_INFO_GPA, .rflags = 0x2};
    if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs) < 0)
        return wisp_err_sys(err, errno, "KVM_SET_REGS");
    return 0;
}

/* One port-I/O exit: COM1 writes go to stdout, a test-exit write ends the run. */
static int floor_handle_io(struct floor_vm *vm, int *exit_value)
{
    struct kvm_run *run = vm->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;

    if (run->io.direction == KVM_EXIT_IO_IN) {
        memset(data, 0xff, (size_t)run->io.size * run->io.count); /* nothing decodes: bus float */
        return 0;
    }
    if (run->io.port == FLOOR_PORT_COM1) {
        for (uint32_t i = 0; i < run->io.count; i++) {
            ssize_t n = write(STDOUT_FILENO, data + (size_t)i * run->io.size, 1);
            (void)n; /* a closed stdout must not stop the guest; the byte is lost */
        }
        return 0;
    }
    if (run->io.port == FLOOR_PORT_TEST_EXIT) {
        *exit_value = data[0];
        return 1;
    }
    return 0;
}

/* Runs the vCPU until the guest writes the exit port (FLOOR_END_EXIT) or halts (FLOOR_END_HALT). */
static int floor_run(struct floor_vm *vm, int *exit_value, struct wisp_err *err)
{
    for (;;) {
        if (ioctl(vm->vcpu_fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return wisp_err_sys(err, errno, "KVM_RUN");
        }
        switch (vm->run->exit_reason) {
        case KVM_EXIT_IO:
            if (floor_handle_io(vm, exit_value))
                return FLOOR_END_EXIT;
            break;
        case KVM_EXIT_HLT:
            return FLOOR_END_HALT;
        case KVM_EXIT_FAIL_ENTRY:
            return wisp_err_set(
                err, EIO, "KVM_RUN: entry failed, hardware reason 0x%llx",
                (unsigned long long)vm->run->fail_entry.hardware_entry_failure_reason);
        case KVM_EXIT_INTERNAL_ERROR:
            return wisp_err_set(err, EIO, "KVM_RUN: internal error, suberror %u",
                                vm->run->internal.suberror);
        default:
            return wisp_err_set(err, EIO, "KVM_RUN: unexpected exit reason %u",
                                vm->run->exit_reason);
        }
    }
}

static void usage(FILE *out, const char *argv0)
{
    fprintf(out,
            "Usage: %s [--mem MIB] [--irqchip] KERNEL\n"
            "\n"
            "The raw KVM floor of wisp's launch benchmark: boots KERNEL (an ELF64 with a PVH\n"
            "entry note) in a VM with MIB MiB of RAM (default %d) and one vCPU, with no devices.\n"
            "Bytes the guest writes to COM1 (port 0x3f8) are copied to stdout; a write of V to\n"
            "port 0xf4 ends the program with exit status V. A guest that halts with interrupts\n"
            "off leaves the program idle until a signal ends it.\n"
            "\n"
            "Options:\n"
            "  -m, --mem MIB   guest RAM in MiB (1..%d)\n"
            "  -i, --irqchip   the in-kernel irqchip and PIT wisp-vmm makes (KVM_CREATE_IRQCHIP,\n"
            "                  KVM_CREATE_PIT2): the floor of a VM's memory with the same irqchip\n"
            "  -h, --help      show this help\n"
            "  -V, --version   show the version\n"
            "\n"
            "Exit status: the guest's exit value; 1 on failure; 2 on a usage error.\n",
            argv0, FLOOR_DEFAULT_MIB, FLOOR_MAX_MIB);
}

/* Parses argv into *mib and *kernel; returns 0, 1 when --help/--version was served, or -1. */
static int parse_args(int argc, char **argv, uint64_t *mib, bool *irqchip, const char **kernel)
{
    static const struct option opts[] = {
        {"mem", required_argument, NULL, 'm'},
        {"irqchip", no_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "m:ihV", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            *irqchip = true;
            break;
        case 'm':
            if (parse_u64(optarg, mib) < 0 || *mib == 0 || *mib > FLOOR_MAX_MIB) {
                fprintf(stderr, "%s: --mem %s: expected MiB between 1 and %d\n", argv[0], optarg,
                        FLOOR_MAX_MIB);
                return -1;
            }
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 1;
        case 'V':
            printf("wisp-bench-floor %s\n", WISP_VERSION);
            return 1;
        default:
            usage(stderr, argv[0]);
            return -1;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "%s: expected one KERNEL argument (see --help)\n", argv[0]);
        return -1;
    }
    *kernel = argv[optind];
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t mib = FLOOR_DEFAULT_MIB;
    const char *kernel = NULL;
    bool irqchip = false;
    int r = parse_args(argc, argv, &mib, &irqchip, &kernel);
    if (r != 0)
        return r > 0 ? 0 : 2;

    struct wisp_err err = {0};
    struct floor_vm vm;
    uint32_t entry = 0;
    int exit_value = 0;
    r = floor_vm_create(&vm, (size_t)mib << 20, irqchip, &err);
    if (r == 0)
        r = floor_load_kernel(&vm, kernel, &entry, &err);
    if (r == 0)
        r = floor_set_pvh_state(&vm, entry, &err);
    if (r == 0)
        r = floor_run(&vm, &exit_value, &err);
    if (r == FLOOR_END_HALT) {
        for (;;)
            pause(); /* the idle guest of the memory benchmark: wait for the signal that ends us */
    }
    floor_vm_destroy(&vm);
    if (r < 0) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        return 1;
    }
    return exit_value;
}
