/*
 * Identity-mapped page tables, built by the assembler so that ring 0 does not spend a single
 * instruction on them (each ring-0 instruction is emulated under PVM). Every entry is
 * user-accessible (U/S=1): test bodies run in ring 3 and touch RAM, ACPI tables and MMIO directly.
 *
 *   0 .. 3 GiB       2 MiB pages, write-back (guest RAM below the hole)
 *   3 .. 4 GiB       2 MiB pages, PCD|PWT (uncached: the MMIO hole, IOAPIC, LAPIC)
 *   4 .. 64 GiB      mapped from ring 3 at start-up (paging.c) as far as the memory map reaches:
 *                    page directories in .bss, filled at native speed. 1 GiB pages would need
 *                    no directories, but not every (nested) KVM offers them.
 */
#define PTE_P     0x001
#define PTE_RW    0x002
#define PTE_US    0x004
#define PTE_PWT   0x008
#define PTE_PCD   0x010
#define PTE_PS    0x080
#define PTE_TABLE (PTE_P | PTE_RW | PTE_US)
#define PTE_LARGE (PTE_P | PTE_RW | PTE_US | PTE_PS)

    .section .data.pagetables, "aw", @progbits
    .p2align 12
    .globl pml4
pml4:
    .quad pdpt + PTE_TABLE
    .fill 511, 8, 0

    .globl pdpt
pdpt:
    .quad pd + 0x0000 + PTE_TABLE
    .quad pd + 0x1000 + PTE_TABLE
    .quad pd + 0x2000 + PTE_TABLE
    .quad pd + 0x3000 + PTE_TABLE
    .fill 508, 8, 0

pd:
    .set mib2, 0
    .rept 1536
    .quad (mib2 << 21) + PTE_LARGE
    .set mib2, mib2 + 1
    .endr
    .rept 512
    .quad (mib2 << 21) + PTE_LARGE + PTE_PCD + PTE_PWT
    .set mib2, mib2 + 1
    .endr

    .section .note.GNU-stack, "", @progbits
