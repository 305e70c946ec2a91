/* Per-vCPU CPUID: derived from KVM_GET_SUPPORTED_CPUID (fetched once per process). */
#ifndef WISP_ARCH_X86_CPUID_H
#define WISP_ARCH_X86_CPUID_H

#include <linux/kvm.h>

#include "common/err.h"

/* Entries x86_cpuid_for_vcpu() may add beyond the supported table. */
#define X86_CPUID_EXTRA_ENTRIES 8

/*
 * Writes into `out` (room for supported->nent + X86_CPUID_EXTRA_ENTRIES entries; out->nent is
 * set) the CPUID of the vCPU with APIC id `apic_id` in a VM of `nr_vcpus` vCPUs: one package of
 * nr_vcpus cores with one thread each. Derived from `supported` (never modified):
 *   leaf 1        initial APIC id (EBX 31:24), logical count (EBX 23:16), HTT, hypervisor bit
 *   leaf 4        cores per package (Intel), threads sharing each cache level
 *   leaf 0xB/0x1F x2APIC id and the SMT/core levels (0x1F only if KVM reports it)
 *   0x80000008    AMD core count and APIC id size; 0x8000001E AMD extended APIC id
 *   0x8000001D    AMD threads sharing each cache level
 *   0x40000000    "KVMKVMKVM" signature, max leaf 0x40000001
 *   0x40000001    KVM paravirtual features as KVM reports them
 * Pure: no KVM calls, so unit tests can drive it with a made-up table. Returns 0 or -EINVAL.
 */
int x86_cpuid_for_vcpu(const struct kvm_cpuid2 *supported, unsigned apic_id, unsigned nr_vcpus,
                       struct kvm_cpuid2 *out, struct wisp_err *err);

#endif
