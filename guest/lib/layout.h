/* Constants shared by the kit's assembly and C: segment selectors, stack sizes, low-memory use. */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#define GUEST_MAX_CPUS 32

#define GDT_KERNEL_CODE64 0x08
#define GDT_KERNEL_DATA   0x10
#define GDT_USER_DATA     0x18
#define GDT_USER_CODE64   0x20
#define GDT_KERNEL_CODE32 0x28
#define GDT_TSS_BASE      0x30
#define GDT_SIZE          (GDT_TSS_BASE + GUEST_MAX_CPUS * 16)

#define IDT_ENTRIES 32

#define RING0_STACK_SHIFT 12 /* 4 KiB per CPU: exception frames only */
#define USER_STACK_SHIFT  16 /* 64 KiB per CPU: the test bodies */
#define EXC_STACK_SHIFT   12 /* 4 KiB per CPU: the ring-3 exception reporter */
/*
 * 16 KiB per TSS: 104 bytes of TSS, then an all-zero I/O permission bitmap (8 KiB + 1 byte) that
 * allows every port from ring 3. IOPL=3 alone would do, but some nested hypervisors (PVM) do not
 * let the guest's user mode run with IOPL=3 and consult the bitmap instead.
 */
#define TSS_STRIDE_SHIFT 14
#define TSS_IOMAP_BASE   104
#define TSS_LIMIT        (TSS_IOMAP_BASE + 8192)

/* The AP trampoline lives in conventional memory below the EBDA; SIPI vector = paddr >> 12. */
#define TRAMPOLINE_PADDR 0x8000

#define CR0_PE         (1 << 0)
#define CR0_WP         (1 << 16)
#define CR0_PG         0x80000000
#define CR4_PAE        (1 << 5)
#define CR4_OSFXSR     (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)
#define MSR_EFER       0xc0000080
#define EFER_LME       (1 << 8)
#define RFLAGS_FIXED   (1 << 1)
#define RFLAGS_IOPL3   (3 << 12)

#endif
