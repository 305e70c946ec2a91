/* libFuzzer target: the kernel loaders (x86_boot_load: bzImage, ELF with a PVH note, plain
 * ELF64; src/arch/x86/bzimage.c, elf.c, boot.c) on an arbitrary kernel file, into a real guest
 * RAM of 32 MiB (guest_mem_create, made once). Whatever the file says (segment addresses and
 * sizes, setup_sects, the header's version, cmdline_size, the PVH note), the loader must refuse
 * it with an error or load it inside guest RAM, without a crash, a hang or a report.
 *
 * Input: 1 byte of options, then the kernel file. Options: bits 0-2 the vCPU count - 1, bit 3
 * a command line of 300 bytes (else none), bit 4 an initrd (the file itself again). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arch/x86/boot.h"
#include "kvm/guest_mem.h"

#define GUEST_RAM (32u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct guest_mem mem;
static int kernel_fd = -1;
static char kernel_path[64];

static void setup(void)
{
    struct wisp_err err = {0};
    if (guest_mem_create(&mem, GUEST_RAM, &err) < 0) {
        fprintf(stderr, "boot_fuzz: %s\n", err.msg);
        abort();
    }
    mem.fresh_zero = false; /* reused: every load zeroes its .bss itself */
    kernel_fd = memfd_create("boot_fuzz.kernel", MFD_CLOEXEC);
    if (kernel_fd < 0)
        abort();
    snprintf(kernel_path, sizeof(kernel_path), "/proc/self/fd/%d", kernel_fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (kernel_fd < 0)
        setup();
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    if (ftruncate(kernel_fd, 0) < 0 ||
        pwrite(kernel_fd, data + 1, size - 1, 0) != (ssize_t)(size - 1))
        abort();
    char cmdline[301];
    memset(cmdline, 'c', 300);
    cmdline[300] = '\0';
    struct x86_boot_params p = {
        .kernel_path = kernel_path,
        .initrd_path = (opt & 0x10) ? kernel_path : NULL,
        .cmdline = (opt & 0x08) ? cmdline : NULL,
        .nr_cpus = (opt & 7u) + 1,
    };
    struct x86_boot_entry entry;
    struct wisp_err err = {0};
    if (x86_boot_load(&mem, &p, &entry, &err) == 0) {
        /* what was loaded lies in guest RAM */
        if (entry.kernel_end < entry.kernel_start || entry.kernel_end > GUEST_RAM)
            abort();
    } else if (!err.msg[0]) {
        abort(); /* an error must say what is wrong */
    }
    return 0;
}
