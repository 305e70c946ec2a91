/* Applies a struct x86_boot_entry to the boot vCPU through KVM's register ioctls. */
#include "arch/x86/boot.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/kvm.h>

static void segment_to_kvm(const struct x86_boot_segment *s, struct kvm_segment *k)
{
    *k = (struct kvm_segment){
        .base = s->base,
        .limit = s->limit,
        .selector = s->selector,
        .type = s->type,
        .present = s->present,
        .dpl = s->dpl,
        .db = s->db,
        .s = s->s,
        .l = s->l,
        .g = s->g,
        .unusable = !s->present,
    };
}

static int set_sregs(int vcpu_fd, const struct x86_boot_entry *e, struct wisp_err *err)
{
    struct kvm_sregs sregs;
    /* Start from KVM's reset state so the APIC base and the interrupt bitmap stay as KVM set them.
     */
    if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
        return wisp_err_sys(err, errno, "KVM_GET_SREGS on the boot vCPU");
    segment_to_kvm(&e->cs, &sregs.cs);
    segment_to_kvm(&e->ds, &sregs.ds);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    segment_to_kvm(&e->tr, &sregs.tr);
    sregs.ldt = (struct kvm_segment){.type = 2, .present = 1, .limit = 0xffff};
    sregs.gdt.base = e->gdt_base;
    sregs.gdt.limit = e->gdt_limit;
    sregs.idt.base = 0;
    sregs.idt.limit = 0; /* interrupts stay off until the guest loads its own IDT */
    sregs.cr0 = e->cr0;
    sregs.cr3 = e->cr3;
    sregs.cr4 = e->cr4;
    sregs.efer = e->efer;
    if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0)
        return wisp_err_sys(
            err, errno, "KVM_SET_SREGS on the boot vCPU (cr0 0x%llx cr4 0x%llx efer 0x%llx)",
            (unsigned long long)e->cr0, (unsigned long long)e->cr4, (unsigned long long)e->efer);
    return 0;
}

int x86_boot_set_vcpu_regs(int vcpu_fd, const struct x86_boot_entry *e, struct wisp_err *err)
{
    int r = set_sregs(vcpu_fd, e, err);
    if (r < 0)
        return r;

    struct kvm_regs regs;
    memset(&regs, 0, sizeof(regs));
    regs.rip = e->rip;
    regs.rsp = e->rsp;
    regs.rsi = e->rsi;
    regs.rbx = e->rbx;
    regs.rflags = e->rflags | 0x2; /* bit 1 is reserved and always set */
    if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
        return wisp_err_sys(err, errno, "KVM_SET_REGS on the boot vCPU (rip 0x%llx)",
                            (unsigned long long)e->rip);

    /* x87 and SSE in their FNINIT / reset state (Intel SDM Vol. 1 §8.1.5, §10.2.3). */
    struct kvm_fpu fpu;
    memset(&fpu, 0, sizeof(fpu));
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    if (ioctl(vcpu_fd, KVM_SET_FPU, &fpu) < 0)
        return wisp_err_sys(err, errno, "KVM_SET_FPU on the boot vCPU");
    return 0;
}
