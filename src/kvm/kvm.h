/* KVM: the /dev/kvm handle with its checked capabilities, the VM, and vCPUs. */
#ifndef WISP_KVM_KVM_H
#define WISP_KVM_KVM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "kvm/guest_mem.h"

/*
 * Call order:
 *   kvm_open()              /dev/kvm, API version, every capability wisp relies on
 *   kvm_vm_create()         VM, TSS/identity map, in-kernel irqchip + PIT, guest RAM slots
 *   kvm_vcpu_create()       per vCPU, from any thread (the vCPU threads do it in parallel)
 *   kvm_vcpu_set_cpuid(), kvm_vcpu_init_msrs(), kvm_vcpu_init_mp_state()
 *   kvm_vcpu_run()          the KVM_RUN loop of the vCPU's thread (below)
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
    unsigned next_slot; /* kvm_vm_add_slot: the first slot after RAM's */
    bool dirty_log; /* register RAM with KVM_MEM_LOG_DIRTY_PAGES (snapshots' track_dirty_pages) */
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
/* Guest RAM with a backend and its policies (NULL: anonymous memory, the host's defaults). */
int kvm_vm_map_memory(struct vm *vm, uint64_t mem_bytes, const struct guest_mem_options *opts,
                      struct wisp_err *err);
int kvm_vm_create_irqchip(struct vm *vm, struct wisp_err *err);
/* For more than 255 vCPUs (before any vCPU): KVM_CAP_X2APIC_API with 32-bit APIC ids and
 * without the xAPIC broadcast quirk, so that x2APIC id 255 is a CPU and not a broadcast. */
int kvm_vm_enable_x2apic_ids(struct vm *vm, struct wisp_err *err);
int kvm_vm_register_memory(struct vm *vm, struct wisp_err *err);
/* A memory slot beyond RAM's (a virtio-pmem region): [gpa, gpa + size) backed by hva, the next
 * free slot number into *slot. read_only: KVM_MEM_READONLY (needs KVM_CAP_READONLY_MEM; guest
 * writes then exit as KVM_EXIT_MMIO). Main thread, before the vCPUs run. */
int kvm_vm_add_slot(struct vm *vm, uint64_t gpa, uint64_t size, void *hva, bool read_only,
                    unsigned *slot, struct wisp_err *err);
void kvm_vm_destroy(struct vm *vm);
/* With vm->dirty_log: fetches and clears KVM's dirty bitmap of RAM region `slot` (one bit per
 * 4 KiB page the guest wrote since the last call, guest_mem_bitmap_words() words), ORed into
 * bitmap. */
int kvm_vm_get_dirty_log(const struct vm *vm, unsigned slot, uint64_t *bitmap,
                         struct wisp_err *err);
/* Drives GSI `gsi` to `level` (KVM_IRQ_LINE); thread-safe. */
int kvm_vm_irq_line(const struct vm *vm, unsigned gsi, int level);

/*
 * ioeventfd (KVM API 4.59): a guest write of `len` bytes (1, 2, 4 or 8) to MMIO address `addr`
 * (or I/O port, with `pio`) signals `fd` inside KVM: the vCPU does not exit to user space. With
 * `datamatch`, only writes of exactly `value` match, so one address can carry one fd per value
 * (virtio-mmio QueueNotify: one per queue index). deassign removes what assign registered with
 * the same arguments. Thread-safe; returns 0 or -errno with err naming the address.
 */
struct kvm_ioeventfd_spec {
    uint64_t addr;
    unsigned len;
    bool pio;
    bool datamatch;
    uint64_t value;
};
int kvm_vm_ioeventfd(const struct vm *vm, const struct kvm_ioeventfd_spec *spec, int fd,
                     bool assign, struct wisp_err *err);
/*
 * irqfd (KVM API 4.75): writing 1 to the eventfd `fd` pulses GSI `gsi` (an edge on an IOAPIC
 * input in KVM's default routing, GSIs 0-23 = IOAPIC pins, 0-15 also PIC), with no ioctl from
 * the writer. resample_fd >= 0 makes it level-triggered with resampling (KVM_IRQFD_FLAG_RESAMPLE).
 */
int kvm_vm_irqfd(const struct vm *vm, unsigned gsi, int fd, int resample_fd, bool assign,
                 struct wisp_err *err);

struct vcpu {
    unsigned index; /* also its APIC id */
    int fd;
    struct kvm_run *run; /* the shared kvm_run area, kvm->vcpu_mmap_size bytes */
    int run_size;
};

/* KVM_CREATE_VCPU + mmap of kvm_run. Pair with kvm_vcpu_destroy(). */
int kvm_vcpu_create(struct vcpu *vcpu, const struct vm *vm, unsigned index, struct wisp_err *err);
void kvm_vcpu_destroy(struct vcpu *vcpu);
/* KVM_SET_CPUID2 (the caller derives the table, e.g. with arch/x86/cpuid.h). */
int kvm_vcpu_set_cpuid(struct vcpu *vcpu, const struct kvm_cpuid2 *cpuid, struct wisp_err *err);
/* Sets the boot MSRs (only those KVM lists). */
int kvm_vcpu_init_msrs(struct vcpu *vcpu, const struct kvm *kvm, struct wisp_err *err);
/* The boot vCPU runs; the others wait for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED). */
int kvm_vcpu_init_mp_state(struct vcpu *vcpu, struct wisp_err *err);
/* Formats the exit reason, suberror, registers and segment state into buf (for fatal exits);
 * returns the length (truncated to fit len, NUL-terminated). */
size_t kvm_vcpu_dump(const struct vcpu *vcpu, char *buf, size_t len);
/* Name of a KVM_EXIT_* reason. */
const char *kvm_exit_reason_name(uint32_t reason);

/* Where a vCPU's port and MMIO exits go (called on the vCPU's thread). `data` holds the value
 * written, or receives the value read (little-endian, `size` bytes: 1, 2, 4 or 8). */
struct vcpu_exit_handlers {
    void (*pio)(void *opaque, struct vcpu *vcpu, uint16_t port, uint8_t *data, unsigned size,
                bool write);
    void (*mmio)(void *opaque, struct vcpu *vcpu, uint64_t addr, uint8_t *data, unsigned size,
                 bool write);
    void *opaque;
};

enum vcpu_stop_reason {
    VCPU_STOP_REQUESTED,    /* *stop became true (and the vCPU was kicked) */
    VCPU_STOP_SHUTDOWN,     /* triple fault (KVM_EXIT_SHUTDOWN): a PC resets */
    VCPU_STOP_SYSTEM_EVENT, /* KVM_EXIT_SYSTEM_EVENT shutdown or reset */
    VCPU_STOP_FATAL_EXIT,   /* an exit that cannot be handled: kvm_vcpu_dump() tells which */
    VCPU_STOP_RUN_FAILED,   /* KVM_RUN failed; *errnum is the errno */
};

/*
 * The run loop of a vCPU's thread: KVM_RUN until *stop is set (by another thread, which then
 * calls kvm_vcpu_kick) or an exit ends it. May be called again after VCPU_STOP_REQUESTED (to
 * resume after a pause). The thread must have `signo` of kvm_vcpu_kick unblocked with a
 * handler installed without SA_RESTART.
 */
enum vcpu_stop_reason kvm_vcpu_run(struct vcpu *vcpu, const struct vcpu_exit_handlers *h,
                                   const atomic_bool *stop, int *errnum);
/* Makes the KVM_RUN of `vcpu` (running in `thread`) return soon: immediate_exit covers the
 * window before KVM_RUN, the signal interrupts one in progress. Set *stop first. */
void kvm_vcpu_kick(struct vcpu *vcpu, pthread_t thread, int signo);

#endif
