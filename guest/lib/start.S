/*
 * The guest kit's ring-0 start-up: PVH entry (32-bit, paging off) -> long mode with the static
 * page tables of pagetables.S -> per-CPU TSS -> iretq to ring 3 with IOPL=3, where all C code runs.
 * Also the AP trampoline (real mode -> 32-bit -> the same path) and the exception stubs.
 *
 * Ring-0 code here is kept to a few dozen instructions per CPU: under PVM every guest ring-0
 * instruction is emulated (~1.3 us each), whereas ring 3 runs natively. Work that only needs
 * memory writes (the IDT, the trampoline copy, INIT/SIPI through the LAPIC) is done in ring 3.
 */
#include "layout.h"

/* PVH boot: XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h), a 32-bit entry point. */
    .section .note.pvh, "a", @note
    .p2align 2
    .long 4                 /* namesz */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_entry

    .section .text.entry, "ax", @progbits
    .code32
    .globl pvh_entry
pvh_entry:
    /* PVH ABI (xen/include/public/arch-x86/hvm/start_info.h): flat 32-bit segments, paging off,
     * EBX = physical address of struct hvm_start_info. */
    cli
    cld
    movl %ebx, guest_start_info_paddr
    lgdt gdt_pointer
    xorl %esi, %esi                 /* CPU index 0: the bootstrap processor */
    movl $(GDT_KERNEL_DATA), %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss

    /* Shared by the BSP and the APs; ESI = this CPU's index. */
enter_long_mode:
    movl %cr4, %eax
    orl $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG | CR0_WP | CR0_PE), %eax
    movl %eax, %cr0
    ljmp $(GDT_KERNEL_CODE64), $long_mode

    .code64
long_mode:
    movl $(GDT_KERNEL_DATA), %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs

    /* Ring-0 stack of this CPU: where exceptions from ring 3 land (TSS.rsp0). */
    leal 1(%esi), %eax
    shlq $RING0_STACK_SHIFT, %rax
    addq $ring0_stacks, %rax
    movq %rax, %rsp

    /* TSS of this CPU (tss_array[idx], TSS_STRIDE bytes apart): rsp0 and the GDT descriptor. */
    movq %rsi, %rdi
    shlq $TSS_STRIDE_SHIFT, %rdi
    addq $tss_array, %rdi
    movq %rsp, 4(%rdi)              /* rsp0 */
    movw $TSS_IOMAP_BASE, 102(%rdi) /* I/O permission bitmap right after the TSS, all zero */
    /* 64-bit TSS descriptor (SDM vol. 3 7.2.3): limit TSS_LIMIT, type 9 (available), present. */
    movq %rdi, %rax
    andq $0xffffff, %rax
    shlq $16, %rax
    orq $TSS_LIMIT, %rax
    movq %rdi, %rdx
    shrq $24, %rdx
    movzbq %dl, %rcx
    shlq $56, %rcx
    orq %rcx, %rax
    movabsq $(0x89 << 40), %rcx
    orq %rcx, %rax
    movq %rsi, %rcx
    shlq $4, %rcx                   /* 16 bytes per descriptor */
    movq %rax, gdt + GDT_TSS_BASE(%rcx)
    shrq $32, %rdi
    movq %rdi, gdt + GDT_TSS_BASE + 8(%rcx)
    leal GDT_TSS_BASE(%rcx), %eax
    ltr %ax
    lidt idt_pointer

    /* iretq to ring 3: SS, RSP, RFLAGS (IOPL=3, IF=0), CS, RIP. */
    leal 1(%esi), %eax
    shlq $USER_STACK_SHIFT, %rax
    addq $user_stacks, %rax
    pushq $(GDT_USER_DATA | 3)
    pushq %rax
    pushq $(RFLAGS_IOPL3 | RFLAGS_FIXED)
    pushq $(GDT_USER_CODE64 | 3)
    pushq $ring3_entry
    movl %esi, %edi
    iretq

/* Entered from the trampoline in 32-bit protected mode with our GDT loaded. */
    .code32
    .globl ap_entry32
ap_entry32:
    movl $(GDT_KERNEL_DATA), %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl guest_ap_boot_index, %esi
    jmp enter_long_mode

/*
 * Exception stubs, EXC_STUB_SIZE bytes apart (the IDT is filled in ring 3 from exc_stubs).
 * Each pushes a zero error code where the CPU pushes none (SDM vol. 3 6.13), then the vector.
 */
    .code64
    .p2align 4
    .globl exc_stubs
exc_stubs:
    .set vec, 0
    .rept 32
    .p2align 4
    .if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    nop
    nop
    .else
    pushq $0
    .endif
    pushq $vec
    jmp exc_common
    .set vec, vec + 1
    .endr

/*
 * Leave ring 0 at once: rebuild the frame as an iretq to guest_exception_entry in ring 3 on this
 * CPU's exception stack, passing vector, error code, RIP, CS and RSP in the C argument registers.
 */
exc_common:
    movq %rsp, %rax
    subq $ring0_stacks, %rax
    shrq $RING0_STACK_SHIFT, %rax   /* CPU index */
    popq %rdi                       /* vector */
    popq %rsi                       /* error code */
    popq %rdx                       /* RIP */
    popq %rcx                       /* CS */
    popq %r8                        /* RFLAGS (dropped) */
    popq %r8                        /* RSP */
    addq $8, %rsp                   /* SS */
    incq %rax
    shlq $EXC_STACK_SHIFT, %rax
    addq $exc_stacks, %rax
    pushq $(GDT_USER_DATA | 3)
    pushq %rax
    pushq $(RFLAGS_IOPL3 | RFLAGS_FIXED)
    pushq $(GDT_USER_CODE64 | 3)
    pushq $guest_exception_entry
    iretq

/* Ring 3 from here on. */
ring3_entry:
    xorl %ebp, %ebp
    call guest_cpu_entry
1:  pause
    jmp 1b

guest_exception_entry:
    xorl %ebp, %ebp
    call guest_exception
1:  pause
    jmp 1b

/*
 * The AP trampoline: copied by the BSP (in ring 3) to TRAMPOLINE_PADDR; a SIPI with vector
 * TRAMPOLINE_PADDR >> 12 starts an AP here in real mode with CS = 0x0800, IP = 0.
 */
    .section .rodata.trampoline, "a", @progbits
    .code16
    .globl trampoline_start, trampoline_end
trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (TRAMPOLINE_PADDR + trampoline_gdt_pointer - trampoline_start)
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $(GDT_KERNEL_CODE32), $ap_entry32
    .p2align 3
trampoline_gdt_pointer:
    .word GDT_SIZE - 1
    .long gdt
trampoline_end:

    .section .data, "aw", @progbits
    .p2align 3
gdt_pointer:
    .word GDT_SIZE - 1
    .quad gdt
    .p2align 3
    .globl idt_pointer
idt_pointer:
    .word IDT_ENTRIES * 16 - 1
    .quad guest_idt

    .p2align 4
    .globl gdt
gdt:
    .quad 0                         /* 0x00 null */
    .quad 0x00af9b000000ffff        /* 0x08 kernel code, 64-bit */
    .quad 0x00cf93000000ffff        /* 0x10 kernel data */
    .quad 0x00cff3000000ffff        /* 0x18 user data (DPL 3) */
    .quad 0x00affb000000ffff        /* 0x20 user code, 64-bit (DPL 3) */
    .quad 0x00cf9b000000ffff        /* 0x28 kernel code, 32-bit (AP trampoline) */
    .fill GUEST_MAX_CPUS * 2, 8, 0  /* 0x30.. one 16-byte TSS descriptor per CPU */
gdt_end:

    .section .bss, "aw", @nobits
    .p2align 12
    .globl ring0_stacks, user_stacks, exc_stacks, tss_array
ring0_stacks:
    .skip GUEST_MAX_CPUS << RING0_STACK_SHIFT
user_stacks:
    .skip GUEST_MAX_CPUS << USER_STACK_SHIFT
exc_stacks:
    .skip GUEST_MAX_CPUS << EXC_STACK_SHIFT
tss_array:
    .skip GUEST_MAX_CPUS << TSS_STRIDE_SHIFT

    .section .note.GNU-stack, "", @progbits
