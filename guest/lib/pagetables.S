/*
 * Identity-mapped page tables, built by the assembler so that ring 0 does not spend a single
 * instruction on them (each ring-0 instruction is emulated under PVM). Every entry is
 * user-accessible (U/S=1): test bodies run in ring 3 and touch RAM, ACPI tables and MMIO directly.
 *
 *   0 .. 3 GiB       2 MiB pages, write-back (guest RAM below the hole)
 *   3 .. 4 GiB       2 MiB pages, PCD|PWT (uncached: the MMIO hole, IOAPIC, LAPIC)
 *   4 .. 512 GiB     1 GiB pages (RAM above the hole; needs CPUID.80000001H:EDX.Page1GB)
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

pdpt:
    .quad pd + 0x0000 + PTE_TABLE
    .quad pd + 0x1000 + PTE_TABLE
    .quad pd + 0x2000 + PTE_TABLE
    .quad pd + 0x3000 + PTE_TABLE
    .set gib, 4
    .rept 508
    .quad (gib << 30) + PTE_LARGE
    .set gib, gib + 1
    .endr

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
