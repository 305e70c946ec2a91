/* The VM: creation, the VT-x helper pages, the in-kernel irqchip and PIT, guest RAM slots. */
#include "kvm/kvm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Order (KVM API doc 4.24, 4.27, 4.48): TSS, identity map and irqchip before any vCPU; the PIT
 * after the irqchip. */
int kvm_vm_create_irqchip(struct vm *vm, struct wisp_err *err)
{
    int r = KVM_IOCTL(vm->fd, KVM_CREATE_IRQCHIP, 0, err);
    if (r < 0)
        return r;
    /* KVM_PIT_SPEAKER_DUMMY: port 0x61 is served in the kernel, so the speaker probe of
     * Linux's PIT calibration does not exit to us */
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    r = KVM_IOCTL(vm->fd, KVM_CREATE_PIT2, &pit, err);
    return r < 0 ? r : 0;
}

int kvm_vm_enable_x2apic_ids(struct vm *vm, struct wisp_err *err)
{
    if (kvm_ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_X2APIC_API) <= 0)
        return wisp_err_set(err, ENOTSUP,
                            "KVM lacks KVM_CAP_X2APIC_API, needed for more than 255 vCPUs");
    struct kvm_enable_cap cap = {
        .cap = KVM_CAP_X2APIC_API,
        .args[0] = KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    };
    int r = KVM_IOCTL(vm->fd, KVM_ENABLE_CAP, &cap, err);
    return r < 0 ? r : 0;
}

int kvm_vm_map_memory(struct vm *vm, uint64_t mem_bytes, const struct guest_mem_options *opts,
                      struct wisp_err *err)
{
    static const struct guest_mem_options anon = {.backend = GUEST_MEM_ANON};
    return guest_mem_create_with(&vm->mem, mem_bytes, opts ? opts : &anon, err);
}

int kvm_vm_register_memory(struct vm *vm, struct wisp_err *err)
{
    for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
        const struct guest_mem_region *rg = &vm->mem.regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i,
            .guest_phys_addr = rg->gpa,
            .memory_size = rg->size,
            .userspace_addr = (uint64_t)(uintptr_t)rg->hva,
            .flags = vm->dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
        };
        if (KVM_IOCTL(vm->fd, KVM_SET_USER_MEMORY_REGION, &slot, err) < 0)
            return wisp_err_wrap(err, "guest RAM at 0x%llx (%llu MiB)", (unsigned long long)rg->gpa,
                                 (unsigned long long)(rg->size >> 20));
    }
    return 0;
}

int kvm_vm_add_slot(struct vm *vm, uint64_t gpa, uint64_t size, void *hva, bool read_only,
                    unsigned *slot, struct wisp_err *err)
{
    if (read_only && kvm_ioctl(vm->kvm->fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) <= 0)
        return wisp_err_set(err, ENOTSUP,
                            "KVM lacks KVM_CAP_READONLY_MEM, needed for a read-only region");
    unsigned n = vm->next_slot < GUEST_MEM_MAX_REGIONS ? GUEST_MEM_MAX_REGIONS : vm->next_slot;
    struct kvm_userspace_memory_region r = {
        .slot = n,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)hva,
        .flags = read_only ? KVM_MEM_READONLY : 0,
    };
    if (KVM_IOCTL(vm->fd, KVM_SET_USER_MEMORY_REGION, &r, err) < 0)
        return wisp_err_wrap(err, "memory slot %u at 0x%llx (%llu MiB)", n, (unsigned long long)gpa,
                             (unsigned long long)(size >> 20));
    vm->next_slot = n + 1;
    *slot = n;
    return 0;
}

int kvm_vm_create(struct vm *vm, const struct kvm *kvm, struct wisp_err *err)
{
    memset(vm, 0, sizeof(*vm));
    vm->kvm = kvm;
    vm->fd = KVM_IOCTL(kvm->fd, KVM_CREATE_VM, 0, err);
    if (vm->fd < 0) {
        int r = vm->fd;
        vm->fd = -1;
        return r;
    }
    int r = KVM_IOCTL(vm->fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR, err);
    uint64_t identity = KVM_IDENTITY_MAP_ADDR;
    if (r >= 0)
        r = KVM_IOCTL(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &identity, err);
    if (r < 0) {
        kvm_vm_destroy(vm);
        return r;
    }
    return 0;
}

int kvm_vm_get_dirty_log(const struct vm *vm, unsigned slot, uint64_t *bitmap, struct wisp_err *err)
{
    uint64_t words = guest_mem_bitmap_words(&vm->mem, slot);
    uint64_t *log = calloc(words, sizeof(uint64_t));
    if (!log)
        return wisp_err_set(err, ENOMEM, "out of memory for the dirty log");
    struct kvm_dirty_log d = {.slot = slot, .dirty_bitmap = log};
    int r = KVM_IOCTL(vm->fd, KVM_GET_DIRTY_LOG, &d, err);
    for (uint64_t w = 0; r == 0 && w < words; w++)
        bitmap[w] |= log[w];
    free(log);
    return r < 0 ? r : 0;
}

void kvm_vm_destroy(struct vm *vm)
{
    /* Closing the VM fd first drops KVM's references to the RAM before it is unmapped. */
    if (vm->fd >= 0)
        close(vm->fd);
    vm->fd = -1;
    guest_mem_destroy(&vm->mem);
}

int kvm_vm_irq_line(const struct vm *vm, unsigned gsi, int level)
{
    struct kvm_irq_level irq = {.irq = gsi, .level = (uint32_t)level};
    return kvm_ioctl(vm->fd, KVM_IRQ_LINE, (unsigned long)&irq);
}

int kvm_vm_ioeventfd(const struct vm *vm, const struct kvm_ioeventfd_spec *spec, int fd,
                     bool assign, struct wisp_err *err)
{
    struct kvm_ioeventfd io = {
        .datamatch = spec->value,
        .addr = spec->addr,
        .len = spec->len,
        .fd = fd,
        .flags = (spec->pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
                 (spec->datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
                 (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
    };
    int r = kvm_ioctl(vm->fd, KVM_IOEVENTFD, (unsigned long)&io);
    if (r < 0)
        return wisp_err_sys(err, -r, "KVM_IOEVENTFD %s %s 0x%llx/%u", assign ? "at" : "off",
                            spec->pio ? "port" : "MMIO", (unsigned long long)spec->addr, spec->len);
    return 0;
}

int kvm_vm_irqfd(const struct vm *vm, unsigned gsi, int fd, int resample_fd, bool assign,
                 struct wisp_err *err)
{
    struct kvm_irqfd irqfd = {
        .fd = (uint32_t)fd,
        .gsi = gsi,
        .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
    };
    if (resample_fd >= 0 && assign) {
        irqfd.flags |= KVM_IRQFD_FLAG_RESAMPLE;
        irqfd.resamplefd = (uint32_t)resample_fd;
    }
    int r = kvm_ioctl(vm->fd, KVM_IRQFD, (unsigned long)&irqfd);
    if (r < 0)
        return wisp_err_sys(err, -r, "KVM_IRQFD %s GSI %u", assign ? "on" : "off", gsi);
    return 0;
}
