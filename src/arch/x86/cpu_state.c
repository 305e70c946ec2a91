/* The boot vCPU's state per protocol: GDT, identity-mapping page tables, and the register values
 * of the Linux 64-bit boot protocol (Documentation/x86/boot.rst) and of PVH (Xen
 * docs/misc/pvh.pandoc). */
#include "arch/x86/boot_int.h"

#include <errno.h>
#include <string.h>

#define CR0_PE     0x1ULL
#define CR0_ET     0x10ULL
#define CR0_PG     0x80000000ULL
#define CR4_PAE    0x20ULL
#define EFER_LME   0x100ULL
#define EFER_LMA   0x400ULL
#define PTE_P      0x1ULL
#define PTE_RW     0x2ULL
#define PTE_PS     0x80ULL /* in a page-directory entry: maps a 2 MiB page */
#define X86_PVH_CS 0x30

/* Flat descriptors (Intel SDM Vol. 3A §3.4.5): base 0, limit 0xfffff pages, P=1, DPL 0, S=1. */
#define GDT_CODE64 0x00af9b000000ffffULL /* type 0xb (exec/read, accessed), L=1, G=1 */
#define GDT_DATA   0x00cf93000000ffffULL /* type 0x3 (read/write, accessed), D/B=1, G=1 */
#define GDT_CODE32 0x00cf9b000000ffffULL /* type 0xb, D/B=1 (32-bit), G=1 */
#define GDT_TSS    0x00008b0000000067ULL /* busy TSS (as after LTR), base 0, limit 0x67 */

static const uint64_t boot_gdt[] = {
    0,          /* 0x00 null */
    0,          /* 0x08 unused */
    GDT_CODE64, /* 0x10 __BOOT_CS */
    GDT_DATA,   /* 0x18 __BOOT_DS */
    GDT_TSS,    /* 0x20 TSS, low half */
    0,          /* 0x28 TSS, high half (base bits 63:32) */
    GDT_CODE32, /* 0x30 PVH code segment */
};

int x86_cpu_tables_write(const struct guest_mem *mem, struct wisp_err *err)
{
    if (guest_mem_write(mem, X86_GDT_ADDR, boot_gdt, sizeof(boot_gdt)) < 0)
        return wisp_err_set(err, EFAULT, "GDT at 0x%llx is outside guest RAM", X86_GDT_ADDR);
    uint64_t pml4[512] = {X86_PDPT_ADDR | PTE_P | PTE_RW};
    uint64_t pdpt[512] = {0};
    for (unsigned i = 0; i < 4; i++)
        pdpt[i] = (X86_PD_ADDR + i * 0x1000ULL) | PTE_P | PTE_RW;
    int r = guest_mem_write(mem, X86_PML4_ADDR, pml4, sizeof(pml4));
    if (r == 0)
        r = guest_mem_write(mem, X86_PDPT_ADDR, pdpt, sizeof(pdpt));
    uint64_t pd[512];
    for (unsigned i = 0; r == 0 && i < 4; i++) {
        for (unsigned j = 0; j < 512; j++)
            pd[j] = ((uint64_t)i << 30) + ((uint64_t)j << 21) + (PTE_P | PTE_RW | PTE_PS);
        r = guest_mem_write(mem, X86_PD_ADDR + i * 0x1000ULL, pd, sizeof(pd));
    }
    if (r < 0)
        return wisp_err_set(err, EFAULT, "page tables at 0x%llx are outside guest RAM",
                            X86_PML4_ADDR);
    return 0;
}

static const struct x86_boot_segment data_segment = {.limit = 0xffffffff,
                                                     .selector = X86_BOOT_DS,
                                                     .type = 0x3,
                                                     .present = 1,
                                                     .db = 1,
                                                     .s = 1,
                                                     .g = 1};
static const struct x86_boot_segment tss_segment = {
    .limit = 0x67, .selector = X86_BOOT_TR, .type = 0xb /* busy TSS, as after LTR */, .present = 1};

static void entry_common(struct x86_boot_entry *e, uint64_t rip)
{
    e->rip = rip;
    e->rsp = X86_STACK_TOP;
    e->rflags = 0x2; /* IF clear: interrupts off */
    e->gdt_base = X86_GDT_ADDR;
    e->gdt_limit = sizeof(boot_gdt) - 1;
    e->ds = data_segment;
    e->tr = tss_segment;
}

void x86_entry_long_mode(struct x86_boot_entry *e, uint64_t rip, uint64_t rsi)
{
    entry_common(e, rip);
    e->rsi = rsi;
    e->cs = (struct x86_boot_segment){.limit = 0xffffffff,
                                      .selector = X86_BOOT_CS,
                                      .type = 0xb,
                                      .present = 1,
                                      .s = 1,
                                      .l = 1,
                                      .g = 1};
    e->cr0 = CR0_PE | CR0_ET | CR0_PG;
    e->cr3 = X86_PML4_ADDR;
    e->cr4 = CR4_PAE;
    e->efer = EFER_LME | EFER_LMA;
}

void x86_entry_pvh(struct x86_boot_entry *e, uint64_t rip, uint64_t start_info)
{
    entry_common(e, rip);
    e->rbx = start_info;
    e->cs = (struct x86_boot_segment){.limit = 0xffffffff,
                                      .selector = X86_PVH_CS,
                                      .type = 0xb,
                                      .present = 1,
                                      .db = 1,
                                      .s = 1,
                                      .g = 1};
    e->cr0 = CR0_PE | CR0_ET;
}
