/*
 * Per-vCPU CPUID derived from KVM_GET_SUPPORTED_CPUID: APIC ids and topology (Intel SDM vol. 2A
 * "CPUID", leaves 01H, 04H, 0BH, 1FH; AMD APM vol. 3 appendix E, leaves 8000_0008h,
 * 8000_001Dh, 8000_001Eh) and the KVM hypervisor leaves (Linux Documentation/virt/kvm/x86/
 * cpuid.rst).
 */
#include "arch/x86/cpuid.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define CPUID_1_EDX_HTT        (1u << 28)
#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define LEVEL_TYPE_SMT         1
#define LEVEL_TYPE_CORE        2
#define KVM_SIGNATURE_LEAF     0x40000000
#define KVM_FEATURES_LEAF      0x40000001

/* ceil(log2(n)): the APIC-id bits that number n cores. */
static unsigned cpuid_id_bits(unsigned n)
{
    unsigned bits = 0;
    while ((1u << bits) < n)
        bits++;
    return bits;
}

static bool cpuid_vendor_is_amd(const struct kvm_cpuid2 *c)
{
    for (unsigned i = 0; i < c->nent; i++)
        if (c->entries[i].function == 0)
            /* "AuthenticAMD" / "HygonGenuine": EBX "Auth" / "Hygo" */
            return c->entries[i].ebx == 0x68747541 || c->entries[i].ebx == 0x6f677948;
    return false;
}

static struct kvm_cpuid_entry2 *cpuid_add(struct kvm_cpuid2 *out, unsigned cap, uint32_t fn,
                                          uint32_t index, uint32_t flags)
{
    if (out->nent >= cap)
        return NULL;
    struct kvm_cpuid_entry2 *e = &out->entries[out->nent++];
    memset(e, 0, sizeof(*e));
    e->function = fn;
    e->index = index;
    e->flags = flags;
    return e;
}

static void cpuid_patch_leaf1(struct kvm_cpuid_entry2 *e, unsigned apic_id, unsigned nr)
{
    unsigned logical = 1u << cpuid_id_bits(nr);
    e->ebx &= 0x0000ffff;
    e->ebx |= (apic_id & 0xff) << 24;
    e->ebx |= (logical > 255 ? 255 : logical) << 16;
    if (nr > 1)
        e->edx |= CPUID_1_EDX_HTT;
    else
        e->edx &= ~CPUID_1_EDX_HTT;
    e->ecx |= CPUID_1_ECX_HYPERVISOR;
}

/* Cache leaves: EAX 25:14 = threads sharing the cache - 1 (the last level is shared by the
 * package, lower levels are per core); leaf 4 also has EAX 31:26 = cores per package - 1. */
static void cpuid_patch_cache(struct kvm_cpuid_entry2 *e, unsigned nr, bool leaf4)
{
    unsigned type = e->eax & 0x1f, level = (e->eax >> 5) & 7;
    if (type == 0)
        return;
    unsigned sharing = level >= 3 ? nr : 1;
    e->eax &= ~(0xfffu << 14);
    e->eax |= ((sharing - 1) & 0xfff) << 14;
    if (leaf4) {
        unsigned cores = nr > 64 ? 64 : nr;
        e->eax &= ~(0x3fu << 26);
        e->eax |= (cores - 1) << 26;
    }
}

/* Leaf 0xB / 0x1F subleaves: 0 = SMT level (1 thread), 1 = core level (nr cores), 2 = end. */
static int cpuid_add_topology(struct kvm_cpuid2 *out, unsigned cap, uint32_t fn, unsigned apic_id,
                              unsigned nr)
{
    for (uint32_t sub = 0; sub < 3; sub++) {
        struct kvm_cpuid_entry2 *e = cpuid_add(out, cap, fn, sub, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        if (!e)
            return -ENOSPC;
        e->edx = apic_id;
        e->ecx = sub;
        if (sub == 0) {
            e->eax = 0;
            e->ebx = 1;
            e->ecx |= LEVEL_TYPE_SMT << 8;
        } else if (sub == 1) {
            e->eax = cpuid_id_bits(nr);
            e->ebx = nr;
            e->ecx |= LEVEL_TYPE_CORE << 8;
        }
    }
    return 0;
}

static void cpuid_patch_amd(struct kvm_cpuid_entry2 *e, unsigned apic_id, unsigned nr)
{
    if (e->function == 0x80000008) {
        e->ecx &= ~0xf0ffu;
        e->ecx |= (nr - 1) & 0xff;                 /* NC: cores - 1 */
        e->ecx |= (cpuid_id_bits(nr) & 0xf) << 12; /* ApicIdSize */
    } else if (e->function == 0x8000001e) {
        e->eax = apic_id;        /* extended APIC id */
        e->ebx = apic_id & 0xff; /* compute unit id; threads per unit - 1 = 0 */
        e->ecx = 0;              /* node 0, one node */
    } else if (e->function == 0x8000001d) {
        cpuid_patch_cache(e, nr, false);
    }
}

static int cpuid_add_kvm_leaves(struct kvm_cpuid2 *out, unsigned cap, uint32_t features)
{
    struct kvm_cpuid_entry2 *sig = cpuid_add(out, cap, KVM_SIGNATURE_LEAF, 0, 0);
    struct kvm_cpuid_entry2 *feat = cpuid_add(out, cap, KVM_FEATURES_LEAF, 0, 0);
    if (!sig || !feat)
        return -ENOSPC;
    sig->eax = KVM_FEATURES_LEAF;
    memcpy(&sig->ebx, "KVMK", 4);
    memcpy(&sig->ecx, "VMKV", 4);
    memcpy(&sig->edx, "M\0\0\0", 4);
    feat->eax = features;
    return 0;
}

int x86_cpuid_for_vcpu(const struct kvm_cpuid2 *supported, unsigned apic_id, unsigned nr_vcpus,
                       struct kvm_cpuid2 *out, struct wisp_err *err)
{
    if (nr_vcpus == 0 || apic_id >= nr_vcpus)
        return wisp_err_set(err, EINVAL, "CPUID: APIC id %u is not below the vCPU count %u",
                            apic_id, nr_vcpus);
    unsigned cap = supported->nent + X86_CPUID_EXTRA_ENTRIES;
    bool amd = cpuid_vendor_is_amd(supported), has_1f = false;
    uint32_t kvm_features = 0;
    out->nent = 0;
    for (unsigned i = 0; i < supported->nent; i++) {
        const struct kvm_cpuid_entry2 *s = &supported->entries[i];
        if (s->function == 0x1f)
            has_1f = true;
        if (s->function == KVM_FEATURES_LEAF)
            kvm_features = s->eax;
        /* replaced below */
        if (s->function == 0xb || s->function == 0x1f || s->function == KVM_SIGNATURE_LEAF ||
            s->function == KVM_FEATURES_LEAF)
            continue;
        struct kvm_cpuid_entry2 *e = &out->entries[out->nent++];
        *e = *s;
        if (e->function == 1)
            cpuid_patch_leaf1(e, apic_id, nr_vcpus);
        else if (e->function == 4 && !amd)
            cpuid_patch_cache(e, nr_vcpus, true);
        else if (amd)
            cpuid_patch_amd(e, apic_id, nr_vcpus);
    }
    int r = cpuid_add_topology(out, cap, 0xb, apic_id, nr_vcpus);
    if (r == 0 && has_1f)
        r = cpuid_add_topology(out, cap, 0x1f, apic_id, nr_vcpus);
    if (r == 0)
        r = cpuid_add_kvm_leaves(out, cap, kvm_features);
    if (r < 0)
        return wisp_err_set(err, ENOSPC, "CPUID: table for vCPU %u overflowed", apic_id);
    return 0;
}
