/* Unit tests of the per-vCPU CPUID derivation (src/arch/x86/cpuid.c) from a made-up
 * KVM_GET_SUPPORTED_CPUID table: APIC ids, topology leaves, KVM signature. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arch/x86/cpuid.h"

#define NENT 8

static struct kvm_cpuid2 *make_supported(int amd)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + NENT * sizeof(struct kvm_cpuid_entry2));
    struct kvm_cpuid_entry2 *e = c->entries;
    e[0] = (struct kvm_cpuid_entry2){.function = 0, .eax = 0x1f};
    memcpy(&e[0].ebx, amd ? "Auth" : "Genu", 4);
    e[1] = (struct kvm_cpuid_entry2){.function = 1, .ebx = 0xff0a0800, .edx = 1u << 28};
    e[2] = (struct kvm_cpuid_entry2){
        .function = 4, .index = 3, .eax = (3 << 5) | 3, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
    e[3] = (struct kvm_cpuid_entry2){
        .function = 0xb, .index = 0, .edx = 77, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
    e[4] = (struct kvm_cpuid_entry2){
        .function = 0x1f, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
    e[5] = (struct kvm_cpuid_entry2){.function = 0x40000001, .eax = 0x01007afb};
    e[6] = (struct kvm_cpuid_entry2){.function = 0x80000008, .ecx = 0x7007};
    e[7] = (struct kvm_cpuid_entry2){.function = 0x8000001e, .eax = 9, .ebx = 0x100};
    c->nent = NENT;
    return c;
}

static struct kvm_cpuid2 *make_out(void)
{
    return calloc(1, sizeof(struct kvm_cpuid2) +
                         (NENT + X86_CPUID_EXTRA_ENTRIES) * sizeof(struct kvm_cpuid_entry2));
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t index)
{
    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn && c->entries[i].index == index)
            return &c->entries[i];
    return NULL;
}

static void test_leaf1_and_topology(void **state)
{
    struct kvm_cpuid2 *sup = make_supported(0), *out = make_out();
    assert_int_equal(x86_cpuid_for_vcpu(sup, 5, 6, out, NULL), 0);
    const struct kvm_cpuid_entry2 *l1 = find(out, 1, 0);
    assert_non_null(l1);
    assert_int_equal(l1->ebx >> 24, 5);          /* initial APIC id */
    assert_int_equal((l1->ebx >> 16) & 0xff, 8); /* 6 cores -> 8 ids (3 bits) */
    assert_int_equal(l1->ebx & 0xffff, 0x0800);  /* CLFLUSH size etc. kept */
    assert_true(l1->edx & (1u << 28));           /* HTT: the count is valid */
    assert_true(l1->ecx & (1u << 31));           /* hypervisor */
    const struct kvm_cpuid_entry2 *smt = find(out, 0xb, 0), *core = find(out, 0xb, 1),
                                  *end = find(out, 0xb, 2);
    assert_non_null(smt);
    assert_non_null(core);
    assert_non_null(end);
    assert_int_equal(smt->edx, 5); /* x2APIC id, not the 77 of the host table */
    assert_int_equal(smt->ebx, 1);
    assert_int_equal((smt->ecx >> 8) & 0xff, 1);
    assert_int_equal(core->eax, 3);
    assert_int_equal(core->ebx, 6);
    assert_int_equal((core->ecx >> 8) & 0xff, 2);
    assert_int_equal((end->ecx >> 8) & 0xff, 0);
    assert_non_null(find(out, 0x1f, 1)); /* 0x1f mirrors 0xb when KVM has it */
    const struct kvm_cpuid_entry2 *l4 = find(out, 4, 3);
    assert_int_equal(l4->eax >> 26, 5);           /* cores per package - 1 */
    assert_int_equal((l4->eax >> 14) & 0xfff, 5); /* L3 shared by 6 */
    free(sup);
    free(out);
}

static void test_kvm_leaves(void **state)
{
    struct kvm_cpuid2 *sup = make_supported(0), *out = make_out();
    assert_int_equal(x86_cpuid_for_vcpu(sup, 0, 1, out, NULL), 0);
    const struct kvm_cpuid_entry2 *sig = find(out, 0x40000000, 0), *f = find(out, 0x40000001, 0);
    assert_non_null(sig);
    assert_non_null(f);
    char name[13] = {0};
    memcpy(name, &sig->ebx, 4);
    memcpy(name + 4, &sig->ecx, 4);
    memcpy(name + 8, &sig->edx, 4);
    assert_string_equal(name, "KVMKVMKVM");
    assert_int_equal(sig->eax, 0x40000001);
    assert_int_equal(f->eax, 0x01007afb);
    const struct kvm_cpuid_entry2 *l1 = find(out, 1, 0);
    assert_false(l1->edx & (1u << 28)); /* one vCPU: no HTT */
    /* the supported table is never modified */
    assert_int_equal(sup->nent, NENT);
    assert_int_equal(sup->entries[3].edx, 77);
    free(sup);
    free(out);
}

static void test_amd_leaves_and_large_ids(void **state)
{
    struct kvm_cpuid2 *sup = make_supported(1), *out = make_out();
    assert_int_equal(x86_cpuid_for_vcpu(sup, 300, 512, out, NULL), 0);
    assert_int_equal(find(out, 1, 0)->ebx >> 24, 300 & 0xff); /* 8-bit field */
    assert_int_equal((find(out, 1, 0)->ebx >> 16) & 0xff, 255);
    assert_int_equal(find(out, 0xb, 0)->edx, 300); /* full x2APIC id */
    assert_int_equal(find(out, 0xb, 1)->eax, 9);
    const struct kvm_cpuid_entry2 *e8 = find(out, 0x80000008, 0);
    assert_int_equal(e8->ecx & 0xff, 511 & 0xff);
    assert_int_equal((e8->ecx >> 12) & 0xf, 9);
    assert_int_equal(find(out, 0x8000001e, 0)->eax, 300);
    free(sup);
    free(out);
}

static void test_rejects_bad_ids(void **state)
{
    struct kvm_cpuid2 *sup = make_supported(0), *out = make_out();
    struct wisp_err err = {0};
    assert_int_equal(x86_cpuid_for_vcpu(sup, 4, 4, out, &err), -EINVAL);
    assert_int_equal(x86_cpuid_for_vcpu(sup, 0, 0, out, &err), -EINVAL);
    free(sup);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leaf1_and_topology),
        cmocka_unit_test(test_kvm_leaves),
        cmocka_unit_test(test_amd_leaves_and_large_ids),
        cmocka_unit_test(test_rejects_bad_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
