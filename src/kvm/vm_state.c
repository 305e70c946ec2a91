/* The VM's in-kernel devices for snapshots: PIC pair and IOAPIC (KVM_GET_IRQCHIP), PIT
 * (KVM_GET_PIT2) and kvmclock (KVM_GET_CLOCK), and their bytes. */
#include <errno.h>
#include <string.h>

#include "common/statebuf.h"
#include "kvm/state.h"

int kvm_vm_save_state(const struct vm *vm, struct kvm_vm_state *s, struct wisp_err *err)
{
    memset(s, 0, sizeof(*s));
    s->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    s->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    s->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    int r = KVM_IOCTL(vm->fd, KVM_GET_IRQCHIP, &s->pic_master, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_GET_IRQCHIP, &s->pic_slave, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_GET_IRQCHIP, &s->ioapic, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_GET_PIT2, &s->pit, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_GET_CLOCK, &s->clock, err);
    return r < 0 ? r : 0;
}

int kvm_vm_restore_state(const struct vm *vm, const struct kvm_vm_state *s, bool clock_realtime,
                         struct wisp_err *err)
{
    struct kvm_clock_data clock = {.clock = s->clock.clock}; /* no flags: as it was */
    if (clock_realtime) {
        if (!(s->clock.flags & KVM_CLOCK_REALTIME))
            return wisp_err_set(err, EINVAL,
                                "clock_realtime: the snapshot's clock carries no real time (its "
                                "host's clock source is not the TSC)");
        clock.flags = KVM_CLOCK_REALTIME;
        clock.realtime = s->clock.realtime;
    }
    int r = KVM_IOCTL(vm->fd, KVM_SET_PIT2, &s->pit, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_SET_CLOCK, &clock, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_SET_IRQCHIP, &s->pic_master, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_SET_IRQCHIP, &s->pic_slave, err);
    if (r == 0)
        r = KVM_IOCTL(vm->fd, KVM_SET_IRQCHIP, &s->ioapic, err);
    return r < 0 ? r : 0;
}

/* Layout (version 1): the three chips, the PIT and the clock, each a blob of its size. */
void kvm_vm_state_write(const struct kvm_vm_state *s, struct state_writer *w)
{
    state_put_blob(w, &s->pic_master, sizeof(s->pic_master));
    state_put_blob(w, &s->pic_slave, sizeof(s->pic_slave));
    state_put_blob(w, &s->ioapic, sizeof(s->ioapic));
    state_put_blob(w, &s->pit, sizeof(s->pit));
    state_put_blob(w, &s->clock, sizeof(s->clock));
}

int kvm_vm_state_read(struct kvm_vm_state *s, struct state_reader *r, struct wisp_err *err)
{
    memset(s, 0, sizeof(*s));
    state_get_blob(r, &s->pic_master, sizeof(s->pic_master));
    state_get_blob(r, &s->pic_slave, sizeof(s->pic_slave));
    state_get_blob(r, &s->ioapic, sizeof(s->ioapic));
    state_get_blob(r, &s->pit, sizeof(s->pit));
    state_get_blob(r, &s->clock, sizeof(s->clock));
    if (!r->bad &&
        (s->pic_master.chip_id != KVM_IRQCHIP_PIC_MASTER ||
         s->pic_slave.chip_id != KVM_IRQCHIP_PIC_SLAVE || s->ioapic.chip_id != KVM_IRQCHIP_IOAPIC))
        state_reader_fail(r, "an interrupt controller has the wrong chip id");
    return state_reader_done(r, "VM state", err);
}
