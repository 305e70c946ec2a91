/* vCPUs: creation, CPUID/MSR/MP-state initialisation, and the register dump of fatal exits. */
#include "kvm/kvm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/cleanup.h"

int kvm_vcpu_create(struct vcpu *vcpu, const struct vm *vm, unsigned index, struct wisp_err *err)
{
    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->index = index;
    vcpu->fd = KVM_IOCTL(vm->fd, KVM_CREATE_VCPU, index, err);
    if (vcpu->fd < 0) {
        vcpu->fd = -1;
        return wisp_err_wrap(err, "vCPU %u", index);
    }
    vcpu->run_size = vm->kvm->vcpu_mmap_size;
    void *run = mmap(NULL, (size_t)vcpu->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (run == MAP_FAILED) {
        int r = wisp_err_sys(err, errno, "vCPU %u: mmap of kvm_run", index);
        kvm_vcpu_destroy(vcpu);
        return r;
    }
    vcpu->run = run;
    return 0;
}

void kvm_vcpu_destroy(struct vcpu *vcpu)
{
    if (vcpu->run)
        munmap(vcpu->run, (size_t)vcpu->run_size);
    vcpu->run = NULL;
    if (vcpu->fd >= 0)
        close(vcpu->fd);
    vcpu->fd = -1;
}

int kvm_vcpu_set_cpuid(struct vcpu *vcpu, const struct kvm_cpuid2 *cpuid, struct wisp_err *err)
{
    int r = KVM_IOCTL(vcpu->fd, KVM_SET_CPUID2, cpuid, err);
    return r < 0 ? wisp_err_wrap(err, "vCPU %u", vcpu->index) : 0;
}

/* Boot values of the MSRs a PC BIOS leaves behind (the rest are KVM's reset values). */
static const struct {
    uint32_t index;
    uint64_t value;
} vcpu_boot_msrs[] = {
    {0x174, 0},      /* IA32_SYSENTER_CS */
    {0x175, 0},      /* IA32_SYSENTER_ESP */
    {0x176, 0},      /* IA32_SYSENTER_EIP */
    {0xc0000081, 0}, /* STAR */
    {0xc0000082, 0}, /* LSTAR */
    {0xc0000083, 0}, /* CSTAR */
    {0xc0000084, 0}, /* SYSCALL_MASK */
    {0xc0000102, 0}, /* KERNEL_GS_BASE */
    {0x1a0, 1},      /* IA32_MISC_ENABLE: fast strings, as firmware enables them */
};

int kvm_vcpu_init_msrs(struct vcpu *vcpu, const struct kvm *kvm, struct wisp_err *err)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[ARRAY_SIZE(vcpu_boot_msrs)];
    } msrs;
    memset(&msrs, 0, sizeof(msrs));
    /* Only MSRs that KVM_GET_MSR_INDEX_LIST reports: others fail (e.g. 0x10a under PVM). */
    for (size_t i = 0; i < ARRAY_SIZE(vcpu_boot_msrs); i++) {
        if (!kvm_has_msr(kvm, vcpu_boot_msrs[i].index))
            continue;
        msrs.e[msrs.hdr.nmsrs].index = vcpu_boot_msrs[i].index;
        msrs.e[msrs.hdr.nmsrs].data = vcpu_boot_msrs[i].value;
        msrs.hdr.nmsrs++;
    }
    if (!msrs.hdr.nmsrs)
        return 0;
    int r = KVM_IOCTL(vcpu->fd, KVM_SET_MSRS, &msrs, err);
    if (r < 0)
        return wisp_err_wrap(err, "vCPU %u", vcpu->index);
    if ((unsigned)r < msrs.hdr.nmsrs) /* KVM stops at the first MSR it refuses */
        return wisp_err_set(err, EINVAL, "vCPU %u: KVM_SET_MSRS refused MSR 0x%x", vcpu->index,
                            msrs.e[r].index);
    return 0;
}

int kvm_vcpu_init_mp_state(struct vcpu *vcpu, struct wisp_err *err)
{
    struct kvm_mp_state mp = {
        .mp_state = vcpu->index == 0 ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED,
    };
    int r = KVM_IOCTL(vcpu->fd, KVM_SET_MP_STATE, &mp, err);
    return r < 0 ? wisp_err_wrap(err, "vCPU %u", vcpu->index) : 0;
}

const char *kvm_exit_reason_name(uint32_t reason)
{
    static const char *const names[] = {
        [KVM_EXIT_UNKNOWN] = "UNKNOWN",
        [KVM_EXIT_EXCEPTION] = "EXCEPTION",
        [KVM_EXIT_IO] = "IO",
        [KVM_EXIT_HYPERCALL] = "HYPERCALL",
        [KVM_EXIT_DEBUG] = "DEBUG",
        [KVM_EXIT_HLT] = "HLT",
        [KVM_EXIT_MMIO] = "MMIO",
        [KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN",
        [KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
        [KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY",
        [KVM_EXIT_INTR] = "INTR",
        [KVM_EXIT_SET_TPR] = "SET_TPR",
        [KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
        [KVM_EXIT_NMI] = "NMI",
        [KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
        [KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT",
    };
    if (reason < ARRAY_SIZE(names) && names[reason])
        return names[reason];
    return "(other)";
}

/* Appends to buf at *used (bounded; truncation is silent). */
static void put(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
    if (*used >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *used, len - *used, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used = *used + (size_t)n < len ? *used + (size_t)n : len - 1;
}

static void describe_exit(const struct vcpu *vcpu, char *buf, size_t len, size_t *used)
{
    const struct kvm_run *run = vcpu->run;
    put(buf, len, used, "vCPU %u: exit reason %u (%s)", vcpu->index, run->exit_reason,
        kvm_exit_reason_name(run->exit_reason));
    if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
        put(buf, len, used, ", suberror %u%s, data:", run->internal.suberror,
            run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? " (emulation failure)" : "");
        for (uint32_t i = 0; i < run->internal.ndata && i < 16; i++)
            put(buf, len, used, " %llx", (unsigned long long)run->internal.data[i]);
    } else if (run->exit_reason == KVM_EXIT_FAIL_ENTRY) {
        put(buf, len, used, ", hardware entry failure reason 0x%llx",
            (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
    }
    put(buf, len, used, "\n");
}

size_t kvm_vcpu_dump(const struct vcpu *vcpu, char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    describe_exit(vcpu, buf, len, &used);
    struct kvm_regs r;
    if (kvm_ioctl(vcpu->fd, KVM_GET_REGS, (unsigned long)&r) == 0)
        put(buf, len, &used,
            "rip=%016llx rsp=%016llx rflags=%016llx\n"
            "rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n"
            "rsi=%016llx rdi=%016llx rbp=%016llx\n"
            "r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n"
            "r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9,
            r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
    struct kvm_sregs s;
    if (kvm_ioctl(vcpu->fd, KVM_GET_SREGS, (unsigned long)&s) != 0)
        return used;
    put(buf, len, &used,
        "cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx cr8=%016llx\n"
        "efer=%016llx apic_base=%016llx gdt=%016llx/%04x idt=%016llx/%04x\n",
        s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base, s.gdt.base, s.gdt.limit, s.idt.base,
        s.idt.limit);
    const struct kvm_segment *segs[] = {&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt};
    const char *names[] = {"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"};
    for (size_t i = 0; i < ARRAY_SIZE(segs); i++)
        put(buf, len, &used,
            "%-3s sel=%04x base=%016llx limit=%08x type=%x p=%u dpl=%u db=%u s=%u l=%u g=%u"
            " unusable=%u\n",
            names[i], segs[i]->selector, (unsigned long long)segs[i]->base, segs[i]->limit,
            segs[i]->type, segs[i]->present, segs[i]->dpl, segs[i]->db, segs[i]->s, segs[i]->l,
            segs[i]->g, segs[i]->unusable);
    return used;
}
