/* /dev/kvm: open, API version and capability checks, the per-process CPUID and MSR caches, and
 * the raw and checked ioctl wrappers. */
#include "kvm/kvm.h"

#include "common/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int kvm_ioctl(int fd, unsigned long req, unsigned long arg)
{
    int r;
    do
        r = ioctl(fd, req, arg);
    while (r < 0 && errno == EINTR && req != KVM_RUN);
    return r < 0 ? -errno : r;
}

int kvm_ioctl_checked(int fd, unsigned long req, unsigned long arg, const char *name,
                      struct wisp_err *err)
{
    int r = kvm_ioctl(fd, req, arg);
    if (r < 0)
        return wisp_err_sys(err, -r, "%s", name);
    return r;
}

/* The capabilities wisp relies on, each with what it is used for. */
static const struct kvm_required_cap {
    int cap;
    const char *name;
    const char *use;
} kvm_required_caps[] = {
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM"},
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel PIC, IOAPIC and LAPIC"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel PIT"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "the VT-x real-mode TSS"},
    {KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR", "the VT-x identity map"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "KVM_GET_SUPPORTED_CPUID"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "APs waiting for INIT/SIPI"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "stopping vCPUs without races"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "virtqueue notifications without exits"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD", "device interrupts from I/O threads"},
};

static int kvm_check_caps(struct kvm *kvm, const char *path, struct wisp_err *err)
{
    for (size_t i = 0; i < ARRAY_SIZE(kvm_required_caps); i++) {
        const struct kvm_required_cap *c = &kvm_required_caps[i];
        if (kvm_ioctl(kvm->fd, KVM_CHECK_EXTENSION, (unsigned long)c->cap) <= 0)
            return wisp_err_set(err, ENOTSUP, "%s: KVM lacks %s (needed for %s)", path, c->name,
                                c->use);
    }
    int n = kvm_ioctl(kvm->fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    kvm->recommended_vcpus = n > 0 ? (unsigned)n : 4; /* API doc: assume 4 if absent */
    n = kvm_ioctl(kvm->fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    kvm->max_vcpus = n > 0 ? (unsigned)n : kvm->recommended_vcpus;
    kvm->vcpu_mmap_size = kvm_ioctl(kvm->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (kvm->vcpu_mmap_size < (int)sizeof(struct kvm_run))
        return wisp_err_set(err, EINVAL, "%s: KVM_GET_VCPU_MMAP_SIZE returned %d", path,
                            kvm->vcpu_mmap_size);
    return 0;
}

/* KVM_GET_SUPPORTED_CPUID with a buffer that grows on E2BIG (API doc 4.46). */
static int kvm_fetch_cpuid(struct kvm *kvm, struct wisp_err *err)
{
    for (unsigned nent = 128; nent <= 4096; nent *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
        if (!c)
            return wisp_err_set(err, ENOMEM, "out of memory for the CPUID table");
        c->nent = nent;
        int r = kvm_ioctl(kvm->fd, KVM_GET_SUPPORTED_CPUID, (unsigned long)c);
        if (r == 0) {
            kvm->cpuid = c;
            return 0;
        }
        free(c);
        if (r != -E2BIG)
            return wisp_err_sys(err, -r, "KVM_GET_SUPPORTED_CPUID");
    }
    return wisp_err_set(err, E2BIG, "KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

/* KVM_GET_MSR_INDEX_LIST: first call learns the count (E2BIG), second fills the list. */
static int kvm_fetch_msr_list(struct kvm *kvm, struct wisp_err *err)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    int r = kvm_ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, (unsigned long)&probe);
    if (r < 0 && r != -E2BIG)
        return wisp_err_sys(err, -r, "KVM_GET_MSR_INDEX_LIST");
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(l->indices[0]));
    if (!l)
        return wisp_err_set(err, ENOMEM, "out of memory for the MSR list");
    l->nmsrs = probe.nmsrs;
    r = kvm_ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, (unsigned long)l);
    if (r < 0) {
        free(l);
        return wisp_err_sys(err, -r, "KVM_GET_MSR_INDEX_LIST");
    }
    kvm->msr_list = l;
    return 0;
}

int kvm_open(struct kvm *kvm, const char *path, struct wisp_err *err)
{
    memset(kvm, 0, sizeof(*kvm));
    kvm->fd = open(path, O_RDWR | O_CLOEXEC);
    if (kvm->fd < 0) {
        int e = errno;
        const char *hint = "cannot use KVM";
        if (e == ENOENT || e == ENODEV || e == ENXIO)
            hint = "KVM is not available on this host";
        else if (e == EACCES || e == EPERM)
            hint = "run as root or as a member of the group owning it (kvm)";
        return wisp_err_set(err, e, "%s: %s: %s", path, strerror(e), hint);
    }
    int r;
    int version = kvm_ioctl(kvm->fd, KVM_GET_API_VERSION, 0);
    if (version < 0) {
        r = wisp_err_set(err, -version, "%s: KVM_GET_API_VERSION: %s: not a KVM device", path,
                         strerror(-version));
        goto fail;
    }
    if (version != KVM_API_VERSION) {
        r = wisp_err_set(err, ENOTSUP, "%s: KVM API version %d, wisp needs %d", path, version,
                         KVM_API_VERSION);
        goto fail;
    }
    if ((r = kvm_check_caps(kvm, path, err)) < 0 || (r = kvm_fetch_cpuid(kvm, err)) < 0 ||
        (r = kvm_fetch_msr_list(kvm, err)) < 0)
        goto fail;
    return 0;
fail:
    kvm_close(kvm);
    return r;
}

void kvm_close(struct kvm *kvm)
{
    if (kvm->fd > 0)
        close(kvm->fd);
    kvm->fd = -1;
    free(kvm->cpuid);
    free(kvm->msr_list);
    kvm->cpuid = NULL;
    kvm->msr_list = NULL;
}

bool kvm_has_msr(const struct kvm *kvm, uint32_t msr)
{
    for (uint32_t i = 0; kvm->msr_list && i < kvm->msr_list->nmsrs; i++)
        if (kvm->msr_list->indices[i] == msr)
            return true;
    return false;
}

const struct kvm_cpuid_entry2 *kvm_find_cpuid(const struct kvm_cpuid2 *cpuid, uint32_t function,
                                              uint32_t index)
{
    for (uint32_t i = 0; i < cpuid->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
        if (e->function == function &&
            (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
            return e;
    }
    return NULL;
}
