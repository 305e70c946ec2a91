/*
 * The guest of the memory benchmark: a PVH ELF that prints "!\n" on COM1 and then idles forever
 * with interrupts off (cli; hlt), so that the VMM's resident memory can be read while a booted
 * guest sits still. Linked like tiny-exit.S.
 */

/* XEN_ELFNOTE_PHYS32_ENTRY (type 18): the 32-bit protected-mode entry point of the PVH boot ABI. */
.section .note.pvh, "a", @note
.align 4
.long 4           /* namesz */
.long 4           /* descsz */
.long 18          /* type */
.asciz "Xen"
.long _start

.text
.code32
.globl _start
_start:
    mov $0x3f8, %dx   /* COM1 THR */
    mov $'!', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
    cli
1:  hlt               /* with IF clear nothing wakes the vCPU: it idles */
    jmp 1b
