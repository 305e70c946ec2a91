/* KVM: the /dev/kvm handle with its checked capabilities, the VM, and vCPUs. */
#ifndef WISP_KVM_KVM_H
#define WISP_KVM_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "kvm/guest_mem.h"

/*
 * Call order:
 *   kvm_open()              /dev/kvm, API version, every capability wisp relies on
 *   kvm_vm_create()         VM, TSS/identity map, in-kernel irqchip + PIT, guest RAM slots
 *   kvm_vcpu_create()       per vCPU, from any thread (the vCPU threads do it in parallel)
 *   kvm_vcpu_init_cpuid/msrs/mp_state
 *   kvm_vcpu_run()          ... KVM_RUN loop, see vmm/
 *   kvm_vcpu_destroy(), kvm_vm_destroy(), kvm_close()
 * Every destroy copes with a partially created object.
 */

/* Raw wrapper: ioctl() that retries on EINTR only where that is safe (never KVM_RUN). Returns
 * the ioctl's result or -errno. */
int kvm_ioctl(int fd, unsigned long req, unsigned long arg);
/* Checked wrapper: like kvm_ioctl(), and on failure fills err with "<name>: <strerror>". */
int kvm_ioctl_checked(int fd, unsigned long req, unsigned long arg, const char *name,
                      struct wisp_err *err);
#define KVM_IOCTL(fd, req, arg, err)                                                               \
    kvm_ioctl_checked((fd), (req), (unsigned long)(arg), #req, (err))

struct kvm {
    int fd;             /* /dev/kvm */
    int vcpu_mmap_size; /* KVM_GET_VCPU_MMAP_SIZE */
    unsigned max_vcpus; /* KVM_CAP_MAX_VCPUS (or NR_VCPUS on old kernels) */
    unsigned recommended_vcpus;
    struct kvm_cpuid2 *cpuid;      /* KVM_GET_SUPPORTED_CPUID, fetched once per process */
    struct kvm_msr_list *msr_list; /* KVM_GET_MSR_INDEX_LIST, fetched once per process */
};

/* Opens `path` (normally "/dev/kvm") and checks API version 12 and the capabilities.
 * Pair with kvm_close(). */
int kvm_open(struct kvm *kvm, const char *path, struct wisp_err *err);
void kvm_close(struct kvm *kvm);
/* True if KVM_GET_MSR_INDEX_LIST lists msr. */
bool kvm_has_msr(const struct kvm *kvm, uint32_t msr);
/* Finds the supported CPUID entry (function, index), or NULL. */
const struct kvm_cpuid_entry2 *kvm_find_cpuid(const struct kvm_cpuid2 *cpuid, uint32_t function,
                                              uint32_t index);

/* Guest-physical addresses of the pages Intel VT-x needs below the 4 GiB MMIO hole's end
 * (KVM_SET_TSS_ADDR: 3 pages, KVM_SET_IDENTITY_MAP_ADDR: 1 page), in the hole, below the
 * IOAPIC; harmless on AMD. */
#define KVM_TSS_ADDR          0xfeffd000ULL
#define KVM_IDENTITY_MAP_ADDR 0xfeffc000ULL

struct vm {
    const struct kvm *kvm;
    int fd;
    struct guest_mem mem;
};

/*
 * VM creation in steps, so that the slow ones (each waits for an SRCU grace period in KVM)
 * can overlap in different threads:
 *   kvm_vm_create()            VM fd, TSS and identity-map addresses
 *   kvm_vm_map_memory()        mmap of guest RAM (MAP_NORESERVE, nothing touched)
 *   then, concurrently:
 *     kvm_vm_create_irqchip()  in-kernel PIC+IOAPIC+LAPIC and PIT; before any vCPU
 *     kvm_vm_register_memory() one KVM memory slot per RAM region; before the first KVM_RUN
 * kvm_vm_destroy() undoes whatever was done.
 */
int kvm_vm_create(struct vm *vm, const struct kvm *kvm, struct wisp_err *err);
int kvm_vm_map_memory(struct vm *vm, uint64_t mem_bytes, struct wisp_err *err);
int kvm_vm_create_irqchip(struct vm *vm, struct wisp_err *err);
/* For more than 255 vCPUs (before any vCPU): KVM_CAP_X2APIC_API with 32-bit APIC ids and
 * without the xAPIC broadcast quirk, so that x2APIC id 255 is a CPU and not a broadcast. */
int kvm_vm_enable_x2apic_ids(struct vm *vm, struct wisp_err *err);
int kvm_vm_register_memory(struct vm *vm, struct wisp_err *err);
void kvm_vm_destroy(struct vm *vm);
/* Drives GSI `gsi` to `level` (KVM_IRQ_LINE); thread-safe. */
int kvm_vm_irq_line(const struct vm *vm, unsigned gsi, int level);

struct vcpu {
    unsigned index; /* also its APIC id */
    int fd;
    struct kvm_run *run; /* the shared kvm_run area, kvm->vcpu_mmap_size bytes */
    int run_size;
};

/* KVM_CREATE_VCPU + mmap of kvm_run. Pair with kvm_vcpu_destroy(). */
int kvm_vcpu_create(struct vcpu *vcpu, const struct vm *vm, unsigned index, struct wisp_err *err);
void kvm_vcpu_destroy(struct vcpu *vcpu);
/* KVM_SET_CPUID2 with the CPUID of this vCPU (arch/x86/cpuid.h) for a VM of nr_vcpus. */
int kvm_vcpu_init_cpuid(struct vcpu *vcpu, const struct kvm *kvm, unsigned nr_vcpus,
                        struct wisp_err *err);
/* Sets the boot MSRs (only those KVM lists). */
int kvm_vcpu_init_msrs(struct vcpu *vcpu, const struct kvm *kvm, struct wisp_err *err);
/* The boot vCPU runs; the others wait for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED). */
int kvm_vcpu_init_mp_state(struct vcpu *vcpu, struct wisp_err *err);
/* Writes the exit reason, suberror, registers and segment state to fd (for fatal exits). */
void kvm_vcpu_dump(const struct vcpu *vcpu, int fd);
/* Name of a KVM_EXIT_* reason. */
const char *kvm_exit_reason_name(uint32_t reason);

#endif
