/* Snapshots at the KVM level (docs/snapshot.md): the state of a vCPU and of the VM's in-kernel
 * devices (PIC, IOAPIC, PIT, kvmclock), taken from KVM, written as bytes and given back. */
#ifndef WISP_KVM_STATE_H
#define WISP_KVM_STATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "kvm/kvm.h"

struct state_reader;
struct state_writer;

/* Bounds a saved state must keep (a file saying more is refused, not allocated). */
#define KVM_STATE_MAX_XSAVE (1u << 20)
#define KVM_STATE_MAX_CPUID 512
#define KVM_STATE_MAX_MSRS  4096
#define KVM_STATE_TSC_PPM   250 /* TSC frequencies this close need no scaling (Firecracker's) */

struct kvm_vcpu_state {
    uint32_t tsc_khz; /* 0: KVM could not say */
    struct kvm_mp_state mp_state;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xsave *xsave; /* xsave_size bytes (KVM_GET_XSAVE2's size, at least 4 KiB) */
    uint32_t xsave_size;
    struct kvm_xcrs xcrs;
    struct kvm_debugregs debugregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_cpuid2 *cpuid; /* KVM_GET_CPUID2: what the vCPU was given */
    struct kvm_msrs *msrs;    /* every MSR KVM lists that could be read */
};

/*
 * Takes the state of a vCPU that is not running (paused: its thread is parked), on that vCPU's
 * own thread. It first completes an I/O exit KVM still has in flight (a KVM_RUN with
 * immediate_exit: no guest instruction runs), then reads everything in the order KVM needs
 * (MP state first: it may change the LAPIC; vCPU events last). MSRs: those of
 * KVM_GET_MSR_INDEX_LIST and KVM_GET_MSR_FEATURE_INDEX_LIST that KVM_GET_MSRS reads, with
 * TSC_DEADLINE after TSC. Fills *s (free with kvm_vcpu_state_free) or returns -errno with err
 * naming the vCPU and the ioctl.
 */
int kvm_vcpu_save_state(struct vcpu *vcpu, const struct kvm *kvm, struct kvm_vcpu_state *s,
                        struct wisp_err *err);
/* Restores *s into a vCPU just created, on its own thread: TSC frequency (scaled by KVM when it
 * differs by more than KVM_STATE_TSC_PPM, refused when KVM cannot), CPUID, MP state, registers,
 * XSAVE, XCRs, debug registers, LAPIC, MSRs, vCPU events (Firecracker's order). */
int kvm_vcpu_restore_state(struct vcpu *vcpu, const struct kvm_vcpu_state *s, struct wisp_err *err);
void kvm_vcpu_state_free(struct kvm_vcpu_state *s);
/* Bytes of a vCPU state (docs/snapshot.md, "vcpu"): kvm_vcpu_state_read checks every length
 * and count against the structures and bounds above; -EINVAL with err. */
void kvm_vcpu_state_write(const struct kvm_vcpu_state *s, struct state_writer *w);
int kvm_vcpu_state_read(struct kvm_vcpu_state *s, struct state_reader *r, struct wisp_err *err);

struct kvm_vm_state {
    struct kvm_irqchip pic_master, pic_slave, ioapic; /* KVM_GET_IRQCHIP chips 0, 1, 2 */
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock; /* kvmclock at the snapshot */
};

/* The in-kernel devices, with every vCPU paused. Restore after the vCPUs were restored. The
 * clock is restored as it was (the guest sees no time pass while it was saved), or with
 * clock_realtime advanced by the real time elapsed since (KVM_CLOCK_REALTIME: the snapshot's
 * host must have reported real time with its clock, which needs a TSC-based host clock). */
int kvm_vm_save_state(const struct vm *vm, struct kvm_vm_state *s, struct wisp_err *err);
int kvm_vm_restore_state(const struct vm *vm, const struct kvm_vm_state *s, bool clock_realtime,
                         struct wisp_err *err);
void kvm_vm_state_write(const struct kvm_vm_state *s, struct state_writer *w);
int kvm_vm_state_read(struct kvm_vm_state *s, struct state_reader *r, struct wisp_err *err);

#endif
