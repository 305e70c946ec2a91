/* A vCPU's state for snapshots: taking it from KVM, giving it back, and its bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/statebuf.h"
#include "kvm/state.h"

#define MSR_IA32_TSC          0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

static int vcpu_fail(const struct vcpu *vcpu, struct wisp_err *err)
{
    return wisp_err_wrap(err, "vCPU %u", vcpu->index);
}

void kvm_vcpu_state_free(struct kvm_vcpu_state *s)
{
    free(s->xsave);
    free(s->cpuid);
    free(s->msrs);
    s->xsave = NULL;
    s->cpuid = NULL;
    s->msrs = NULL;
}

/* KVM_RUN with immediate_exit completes an I/O exit KVM has not finished (KVM API 5, "kvm_run":
 * "the pending state of the operation is not preserved in state which is visible to
 * userspace") and returns -EINTR without running the guest. */
static int complete_pending_io(struct vcpu *vcpu, struct wisp_err *err)
{
    __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    int r = kvm_ioctl(vcpu->fd, KVM_RUN, 0);
    __atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    if (r < 0 && r != -EINTR && r != -EAGAIN)
        return wisp_err_sys(err, -r, "KVM_RUN (completing an I/O exit)");
    return 0;
}

static int save_xsave(struct vcpu *vcpu, const struct kvm *kvm, struct kvm_vcpu_state *s,
                      struct wisp_err *err)
{
    int size = kvm_ioctl(kvm->fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    bool xsave2 = size > (int)sizeof(struct kvm_xsave);
    s->xsave_size = xsave2 ? (uint32_t)size : sizeof(struct kvm_xsave);
    if (s->xsave_size > KVM_STATE_MAX_XSAVE)
        return wisp_err_set(err, E2BIG, "XSAVE area of %u bytes", s->xsave_size);
    s->xsave = calloc(1, s->xsave_size);
    if (!s->xsave)
        return wisp_err_set(err, ENOMEM, "out of memory for the XSAVE area");
    return KVM_IOCTL(vcpu->fd, xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, s->xsave, err);
}

static int save_cpuid(struct vcpu *vcpu, struct kvm_vcpu_state *s, struct wisp_err *err)
{
    for (uint32_t nent = 64; nent <= KVM_STATE_MAX_CPUID; nent *= 2) {
        free(s->cpuid);
        s->cpuid = calloc(1, sizeof(*s->cpuid) + nent * sizeof(struct kvm_cpuid_entry2));
        if (!s->cpuid)
            return wisp_err_set(err, ENOMEM, "out of memory for CPUID");
        s->cpuid->nent = nent;
        int r = kvm_ioctl(vcpu->fd, KVM_GET_CPUID2, (unsigned long)s->cpuid);
        if (r == 0)
            return 0;
        if (r != -E2BIG)
            return wisp_err_sys(err, -r, "KVM_GET_CPUID2");
    }
    return wisp_err_set(err, E2BIG, "KVM_GET_CPUID2: more than %u entries", KVM_STATE_MAX_CPUID);
}

/* The MSR indices to save: the vCPU list and the feature list, each once, TSC_DEADLINE last
 * (KVM computes it from the TSC, which must be restored first). */
static uint32_t msr_indices(const struct kvm *kvm, uint32_t *out, uint32_t max)
{
    struct {
        struct kvm_msr_list l;
        uint32_t idx[256];
    } feat = {.l.nmsrs = 256};
    if (kvm_ioctl(kvm->fd, KVM_GET_MSR_FEATURE_INDEX_LIST, (unsigned long)&feat) < 0)
        feat.l.nmsrs = 0;
    uint32_t n = 0;
    bool deadline = false;
    for (uint32_t pass = 0; pass < 2; pass++) {
        const uint32_t *list = pass ? feat.idx : kvm->msr_list->indices;
        uint32_t count = pass ? feat.l.nmsrs : kvm->msr_list->nmsrs;
        for (uint32_t i = 0; i < count && n < max; i++) {
            if (list[i] == MSR_IA32_TSC_DEADLINE) {
                deadline = true;
                continue;
            }
            bool seen = false;
            for (uint32_t j = 0; j < n && !seen; j++)
                seen = out[j] == list[i];
            if (!seen)
                out[n++] = list[i];
        }
    }
    if (deadline && n < max)
        out[n++] = MSR_IA32_TSC_DEADLINE;
    return n;
}

/* Reads every listed MSR; KVM_GET_MSRS stops at the first it cannot read, which is skipped. */
static int save_msrs(struct vcpu *vcpu, const struct kvm *kvm, struct kvm_vcpu_state *s,
                     struct wisp_err *err)
{
    uint32_t max = kvm->msr_list->nmsrs + 256;
    size_t bytes = sizeof(struct kvm_msrs) + max * sizeof(struct kvm_msr_entry);
    s->msrs = calloc(1, bytes);
    cleanup_free struct kvm_msrs *batch = calloc(1, bytes);
    cleanup_free uint32_t *idx = calloc(max, sizeof(*idx));
    if (!s->msrs || !batch || !idx)
        return wisp_err_set(err, ENOMEM, "out of memory for MSRs");
    uint32_t n = msr_indices(kvm, idx, max);
    for (uint32_t at = 0; at < n;) {
        batch->nmsrs = n - at;
        for (uint32_t i = 0; i < batch->nmsrs; i++)
            batch->entries[i] = (struct kvm_msr_entry){.index = idx[at + i]};
        int r = kvm_ioctl(vcpu->fd, KVM_GET_MSRS, (unsigned long)batch);
        if (r < 0)
            return wisp_err_sys(err, -r, "KVM_GET_MSRS");
        memcpy(&s->msrs->entries[s->msrs->nmsrs], batch->entries,
               (size_t)r * sizeof(batch->entries[0]));
        s->msrs->nmsrs += (uint32_t)r;
        at += (uint32_t)r + 1; /* the one after those read could not be read: skipped */
    }
    return 0;
}

int kvm_vcpu_save_state(struct vcpu *vcpu, const struct kvm *kvm, struct kvm_vcpu_state *s,
                        struct wisp_err *err)
{
    memset(s, 0, sizeof(*s));
    int r = complete_pending_io(vcpu, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_GET_MP_STATE, &s->mp_state, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_GET_REGS, &s->regs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_GET_SREGS, &s->sregs, err);
    if (r == 0)
        r = save_xsave(vcpu, kvm, s, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_GET_XCRS, &s->xcrs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_GET_DEBUGREGS, &s->debugregs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_GET_LAPIC, &s->lapic, err);
    if (r == 0) {
        int khz = kvm_ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);
        s->tsc_khz = khz > 0 ? (uint32_t)khz : 0;
        r = save_cpuid(vcpu, s, err);
    }
    if (r == 0)
        r = save_msrs(vcpu, kvm, s, err);
    if (r == 0) /* last: the other GET ioctls may change what it reports */
        r = KVM_IOCTL(vcpu->fd, KVM_GET_VCPU_EVENTS, &s->events, err);
    if (r < 0) {
        kvm_vcpu_state_free(s);
        return vcpu_fail(vcpu, err);
    }
    return 0;
}

/* The guest's TSC ticks at the snapshot's rate: KVM scales it when this host's differs. */
static int restore_tsc_khz(struct vcpu *vcpu, uint32_t khz, struct wisp_err *err)
{
    int here = kvm_ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);
    if (khz == 0 || here <= 0)
        return 0;
    uint64_t diff = khz > (uint32_t)here ? khz - (uint32_t)here : (uint32_t)here - khz;
    if (diff * 1000000 <= (uint64_t)here * KVM_STATE_TSC_PPM)
        return 0;
    int r = kvm_ioctl(vcpu->fd, KVM_SET_TSC_KHZ, khz);
    if (r < 0)
        return wisp_err_sys(err, -r,
                            "KVM_SET_TSC_KHZ: the snapshot's TSC runs at %u kHz, this host's at "
                            "%d kHz, and KVM cannot scale it",
                            khz, here);
    return 0;
}

static int restore_msrs(struct vcpu *vcpu, const struct kvm_msrs *m, struct wisp_err *err)
{
    if (!m || !m->nmsrs)
        return 0;
    int r = KVM_IOCTL(vcpu->fd, KVM_SET_MSRS, m, err);
    if (r >= 0 && (uint32_t)r < m->nmsrs)
        return wisp_err_set(err, EINVAL, "KVM_SET_MSRS refused MSR 0x%x (value 0x%llx)",
                            m->entries[r].index, (unsigned long long)m->entries[r].data);
    return r < 0 ? r : 0;
}

int kvm_vcpu_restore_state(struct vcpu *vcpu, const struct kvm_vcpu_state *s, struct wisp_err *err)
{
    int r = restore_tsc_khz(vcpu, s->tsc_khz, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_CPUID2, s->cpuid, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_MP_STATE, &s->mp_state, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_REGS, &s->regs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_SREGS, &s->sregs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_XSAVE, s->xsave, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_XCRS, &s->xcrs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_DEBUGREGS, &s->debugregs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_LAPIC, &s->lapic, err);
    if (r == 0)
        r = restore_msrs(vcpu, s->msrs, err);
    if (r == 0)
        r = KVM_IOCTL(vcpu->fd, KVM_SET_VCPU_EVENTS, &s->events, err);
    return r < 0 ? vcpu_fail(vcpu, err) : 0;
}

/* Layout (version 1): tsc_khz, then each structure as a blob of its exact size, the XSAVE area
 * as a blob of its size, CPUID and MSRs as a count and a blob of that many entries. */
void kvm_vcpu_state_write(const struct kvm_vcpu_state *s, struct state_writer *w)
{
    state_put_u32(w, s->tsc_khz);
    state_put_blob(w, &s->mp_state, sizeof(s->mp_state));
    state_put_blob(w, &s->regs, sizeof(s->regs));
    state_put_blob(w, &s->sregs, sizeof(s->sregs));
    state_put_blob(w, s->xsave, s->xsave_size);
    state_put_blob(w, &s->xcrs, sizeof(s->xcrs));
    state_put_blob(w, &s->debugregs, sizeof(s->debugregs));
    state_put_blob(w, &s->lapic, sizeof(s->lapic));
    state_put_blob(w, &s->events, sizeof(s->events));
    state_put_u32(w, s->cpuid->nent);
    state_put_blob(w, s->cpuid->entries, s->cpuid->nent * sizeof(s->cpuid->entries[0]));
    state_put_u32(w, s->msrs->nmsrs);
    state_put_blob(w, s->msrs->entries, s->msrs->nmsrs * sizeof(s->msrs->entries[0]));
}

/* A count, then a blob of exactly count entries of `size` bytes, copied into a new header. */
static void *read_array(struct state_reader *r, size_t hdr, size_t size, uint32_t max,
                        uint32_t *count)
{
    *count = state_get_u32(r);
    if (!r->bad && *count > max)
        state_reader_fail(r, "a count is out of range");
    if (r->bad)
        return NULL;
    uint8_t *p = calloc(1, hdr + (size_t)*count * size);
    if (!p) {
        state_reader_fail(r, "out of memory");
        return NULL;
    }
    state_get_blob(r, p + hdr, (size_t)*count * size);
    return p;
}

int kvm_vcpu_state_read(struct kvm_vcpu_state *s, struct state_reader *r, struct wisp_err *err)
{
    memset(s, 0, sizeof(*s));
    s->tsc_khz = state_get_u32(r);
    state_get_blob(r, &s->mp_state, sizeof(s->mp_state));
    state_get_blob(r, &s->regs, sizeof(s->regs));
    state_get_blob(r, &s->sregs, sizeof(s->sregs));
    size_t n;
    const void *xsave = state_get_blob_ptr(r, KVM_STATE_MAX_XSAVE, &n);
    if (xsave && n < sizeof(struct kvm_xsave))
        state_reader_fail(r, "the XSAVE area is smaller than KVM's");
    if (!r->bad && (s->xsave = malloc(n))) {
        memcpy(s->xsave, xsave, n);
        s->xsave_size = (uint32_t)n;
    } else if (!r->bad) {
        state_reader_fail(r, "out of memory");
    }
    state_get_blob(r, &s->xcrs, sizeof(s->xcrs));
    state_get_blob(r, &s->debugregs, sizeof(s->debugregs));
    state_get_blob(r, &s->lapic, sizeof(s->lapic));
    state_get_blob(r, &s->events, sizeof(s->events));
    uint32_t count;
    s->cpuid = read_array(r, sizeof(*s->cpuid), sizeof(struct kvm_cpuid_entry2),
                          KVM_STATE_MAX_CPUID, &count);
    if (s->cpuid)
        s->cpuid->nent = count;
    s->msrs =
        read_array(r, sizeof(*s->msrs), sizeof(struct kvm_msr_entry), KVM_STATE_MAX_MSRS, &count);
    if (s->msrs)
        s->msrs->nmsrs = count;
    if (!r->bad && s->xcrs.nr_xcrs > KVM_MAX_XCRS)
        state_reader_fail(r, "more XCRs than KVM has");
    if (r->bad) {
        kvm_vcpu_state_free(s);
        return state_reader_done(r, "vCPU state", err);
    }
    return 0;
}
