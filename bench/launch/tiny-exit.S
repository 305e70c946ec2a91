/*
 * The guest of the launch benchmark: a PVH ELF whose entry point prints "!\n" on COM1 and writes
 * 0 to the test-exit port 0xf4, so that launch -> first serial byte -> exit measures only the
 * VMM. Same code as /work/shared/probes/tiny-pvh-guest.S (the machine's anchors were taken with it).
 * Linked with `ld -Ttext=0x100000 -e _start` by bench/launch/meson.build.
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
    mov $0x3f8, %dx   /* COM1 THR: the VMM forwards the byte to its stdout */
    mov $'!', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
    mov $0xf4, %dx    /* test-exit port: the VMM exits with the value written */
    xor %al, %al
    out %al, %dx
1:  hlt               /* not reached when the VMM implements the exit port */
    jmp 1b
