/* x86 boot: loads a kernel (bzImage, ELF with a PVH note, plain ELF64) and the firmware tables
 * (e820, ACPI, MP table) into guest memory, and describes the boot vCPU's state at entry. */
#ifndef WISP_ARCH_X86_BOOT_H
#define WISP_ARCH_X86_BOOT_H

#include <stdint.h>

#include "common/err.h"
#include "kvm/guest_mem.h"

/*
 * Call order (see docs/boot.md for the memory layout and the register state per protocol):
 *   guest_mem_create()                         RAM must be mapped
 *   x86_boot_load(mem, params, &entry, err)    writes kernel, initrd, tables; fills entry
 *     (with mem->fresh_zero, ELF .bss is left untouched as the zero it already is: call it
 *     once per guest_mem, or clear fresh_zero first)
 *   for the boot vCPU (id 0) only:
 *   x86_boot_set_vcpu_regs(vcpu_fd, &entry, err)
 * The other vCPUs stay in their reset state (wait-for-SIPI); the guest starts them with INIT/SIPI.
 * x86_boot_load() keeps no pointer to params or mem; entry is plain data (copyable, no cleanup).
 */

#define X86_BOOT_MAX_CPUS 1024 /* MADT holds x2APIC entries for ids >= 255 */

/* A virtio-mmio device to describe in the DSDT (Linux with ACPI finds it by _HID "LNRO0005"). */
struct x86_boot_mmio_device {
    uint64_t base;
    uint64_t size;
    uint32_t gsi; /* IOAPIC input, edge-triggered, active high */
};

struct x86_boot_params {
    const char *kernel_path; /* bzImage, ELF with a PVH note (incl. vmlinux), or plain ELF64 */
    const char *initrd_path; /* may be NULL */
    const char *cmdline;     /* may be NULL or "" */
    unsigned nr_cpus;        /* 1 .. X86_BOOT_MAX_CPUS; APIC ids 0 .. nr_cpus-1 */
    /* Optional: devices for the DSDT (the VMM may also pass them on the command line). */
    const struct x86_boot_mmio_device *mmio_devices;
    unsigned nr_mmio_devices;
};

enum x86_boot_kind {
    X86_BOOT_LINUX64, /* bzImage, Linux x86 boot protocol >= 2.12, 64-bit entry */
    X86_BOOT_PVH,     /* ELF with XEN_ELFNOTE_PHYS32_ENTRY: 32-bit protected mode, paging off */
    X86_BOOT_ELF64,   /* ELF64 without PVH note: 64-bit long mode at e_entry, like LINUX64 */
};

/* A segment register in the form KVM_SET_SREGS takes it (struct kvm_segment). */
struct x86_boot_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type; /* 4-bit type field of the descriptor */
    uint8_t present, dpl, db, s, l, g;
};

/* What the boot vCPU must look like at its first instruction. */
struct x86_boot_entry {
    enum x86_boot_kind kind;
    uint64_t rip, rsp, rsi, rbx, rflags;
    uint64_t cr0, cr3, cr4, efer;
    uint64_t gdt_base;
    uint16_t gdt_limit;
    struct x86_boot_segment cs, ds, tr; /* ds is also loaded into es, fs, gs, ss */
    /* Informational (for logs and tests): where things went. */
    uint64_t kernel_start, kernel_end; /* guest-physical [start, end) the kernel occupies */
    uint64_t initrd_start, initrd_size;
    uint64_t boot_info; /* zero page (LINUX64/ELF64) or hvm_start_info (PVH) address */
    uint64_t rsdp;      /* ACPI RSDP address */
};

/*
 * Loads the kernel named by p->kernel_path (format detected from its contents) and the initrd,
 * writes the command line, the zero page or hvm_start_info, e820, identity page tables and GDT
 * (64-bit kinds), ACPI tables (RSDP/XSDT/FADT/MADT/DSDT) and the MP table, and fills *entry.
 * Every malformed file gives an error naming the path and the offset or field.
 * Writes guest memory only through gpa_to_hva()/guest_mem_write(). Returns 0 or -errno.
 */
int x86_boot_load(const struct guest_mem *mem, const struct x86_boot_params *p,
                  struct x86_boot_entry *entry, struct wisp_err *err);

/*
 * Applies *entry to a vCPU fd: KVM_GET_SREGS + KVM_SET_SREGS (segments, control registers, EFER,
 * GDT), KVM_SET_REGS (rip, rsp, rsi, rbx, rflags), KVM_SET_FPU (x87/SSE reset state).
 * Call once, for the boot vCPU, before its first KVM_RUN.
 */
int x86_boot_set_vcpu_regs(int vcpu_fd, const struct x86_boot_entry *entry, struct wisp_err *err);

#endif
