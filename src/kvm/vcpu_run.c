/* The vCPU run loop: KVM_RUN, exit dispatch to the caller's handlers, and stopping without
 * races (KVM API doc 5, "immediate_exit"). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>

#include "kvm/kvm.h"

static void vcpu_handle_io(struct vcpu *vcpu, const struct vcpu_exit_handlers *h)
{
    struct kvm_run *run = vcpu->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool write = run->io.direction == KVM_EXIT_IO_OUT;
    /* `rep ins/outs` arrive as `count` accesses in a row */
    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
        h->pio(h->opaque, vcpu, run->io.port, data, run->io.size, write);
}

static void vcpu_handle_mmio(struct vcpu *vcpu, const struct vcpu_exit_handlers *h)
{
    struct kvm_run *run = vcpu->run;
    unsigned len = run->mmio.len <= 8 ? run->mmio.len : 8;
    h->mmio(h->opaque, vcpu, run->mmio.phys_addr, run->mmio.data, len, run->mmio.is_write);
}

enum vcpu_stop_reason kvm_vcpu_run(struct vcpu *vcpu, const struct vcpu_exit_handlers *h,
                                   const atomic_bool *stop, int *errnum)
{
    /* A kick stores *stop before immediate_exit: clearing immediate_exit first and loading
     * *stop after it cannot miss one. */
    __atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    while (!atomic_load(stop)) {
        int r = kvm_ioctl(vcpu->fd, KVM_RUN, 0);
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r < 0) {
            *errnum = -r;
            return VCPU_STOP_RUN_FAILED;
        }
        switch (vcpu->run->exit_reason) {
        case KVM_EXIT_IO:
            vcpu_handle_io(vcpu, h);
            break;
        case KVM_EXIT_MMIO:
            vcpu_handle_mmio(vcpu, h);
            break;
        case KVM_EXIT_INTR:
        case KVM_EXIT_HLT: /* not with the in-kernel LAPIC; harmless */
            break;
        case KVM_EXIT_SHUTDOWN: /* triple fault: a PC resets */
            return VCPU_STOP_SHUTDOWN;
        case KVM_EXIT_SYSTEM_EVENT:
            if (vcpu->run->system_event.type == KVM_SYSTEM_EVENT_CRASH)
                return VCPU_STOP_FATAL_EXIT;
            return VCPU_STOP_SYSTEM_EVENT;
        default:
            return VCPU_STOP_FATAL_EXIT;
        }
    }
    return VCPU_STOP_REQUESTED;
}

void kvm_vcpu_kick(struct vcpu *vcpu, pthread_t thread, int signo)
{
    if (vcpu->run)
        __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    pthread_kill(thread, signo);
}
