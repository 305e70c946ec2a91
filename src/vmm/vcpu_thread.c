/* vCPU threads: parallel creation and initialisation, the start barrier, the exit handlers
 * (port and MMIO accesses to the buses), and stopping them. The KVM_RUN loop itself is
 * kvm_vcpu_run() (src/kvm/vcpu_run.c). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/cpuid.h"
#include "common/cleanup.h"
#include "common/cpulist.h"
#include "common/evloop.h"
#include "common/log.h"
#include "common/thread_kind.h"
#include "kvm/state.h"
#include "vmm/machine.h"

#define VCPU_STACK_SIZE (64 * 1024) /* the run loop needs little; keeps RSS small */
#define SIG_VCPU_KICK   SIGUSR1

static void vcpu_kick_handler(int sig)
{
    (void)sig; /* only interrupts KVM_RUN */
}

void machine_request_stop(struct machine *m, int status, const char *why)
{
    int none = -1;
    bool first = atomic_compare_exchange_strong(&m->stop_status, &none, status);
    if (first && m->args->debug)
        wisp_log("VM ends (%s), exit status %d", why, status);
    atomic_store(&m->stopping, true);
    atomic_store(&m->vcpu_exit, true);
    if (first && m->on_end)
        m->on_end(m->end_opaque);
}

/* --debug: each unclaimed port once, the first 32 unclaimed MMIO accesses. */
static void vcpu_log_unclaimed(struct machine *m, bool port, uint64_t addr, bool write)
{
    if (!m->port_logged)
        return;
    if (port) {
        uint8_t bit = (uint8_t)(1u << (addr & 7));
        if (atomic_fetch_or(&m->port_logged[(addr & 0xffff) >> 3], bit) & bit)
            return;
    } else if (atomic_fetch_add(&m->mmio_logged, 1) >= 32) {
        return;
    }
    wisp_log("unclaimed %s %s 0x%llx", port ? "port" : "MMIO", write ? "write" : "read",
             (unsigned long long)addr);
}

static void vcpu_pio(void *opaque, struct vcpu *vcpu, uint16_t port, uint8_t *data, unsigned size,
                     bool write)
{
    struct machine *m = opaque;
    bool ok = write ? bus_write(&m->pio, port, data, size) : bus_read(&m->pio, port, data, size);
    if (!ok)
        vcpu_log_unclaimed(m, true, port, write);
}

static void vcpu_mmio(void *opaque, struct vcpu *vcpu, uint64_t addr, uint8_t *data, unsigned size,
                      bool write)
{
    struct machine *m = opaque;
    bool ok = write ? bus_write(&m->mmio, addr, data, size) : bus_read(&m->mmio, addr, data, size);
    if (!ok)
        vcpu_log_unclaimed(m, false, addr, write);
}

/* The last vCPU to park tells the pauser (on the main loop). start_lock held. */
static void vcpu_parked_locked(struct machine *m)
{
    m->nr_parked++;
    pthread_cond_broadcast(&m->start_cond); /* machine_start_paused waits for it */
    if (m->nr_parked + m->nr_exited == m->nr_started && m->pause_done) {
        m->pause_call = (struct evloop_call){.fn = m->pause_done, .opaque = m->pause_opaque};
        m->pause_done = NULL;
        evloop_call_async(m->loop, &m->pause_call);
    }
}

/* Parked while paused: runs posted work, returns when resumed (true) or stopping (false). */
static bool vcpu_park(struct vcpu_thread *t)
{
    struct machine *m = t->m;
    pthread_mutex_lock(&m->start_lock);
    vcpu_parked_locked(m);
    unsigned seen = m->work_gen;
    while (m->pausing && !atomic_load(&m->stopping)) {
        if (m->work_gen != seen) {
            seen = m->work_gen;
            void (*fn)(struct vcpu *, void *) = m->work;
            void *arg = m->work_arg;
            pthread_mutex_unlock(&m->start_lock);
            fn(&t->vcpu, arg);
            pthread_mutex_lock(&m->start_lock);
            if (--m->work_pending == 0)
                pthread_cond_broadcast(&m->start_cond);
            continue;
        }
        pthread_cond_wait(&m->start_cond, &m->start_lock);
    }
    m->nr_parked--;
    bool go_on = !atomic_load(&m->stopping);
    pthread_mutex_unlock(&m->start_lock);
    return go_on;
}

static void vcpu_run_until_end(struct vcpu_thread *t)
{
    struct machine *m = t->m;
    const struct vcpu_exit_handlers h = {.pio = vcpu_pio, .mmio = vcpu_mmio, .opaque = m};
    int errnum = 0;
    enum vcpu_stop_reason reason;
    while ((reason = kvm_vcpu_run(&t->vcpu, &h, &m->vcpu_exit, &errnum)) == VCPU_STOP_REQUESTED)
        if (atomic_load(&m->stopping) || !vcpu_park(t))
            return;
    switch (reason) {
    case VCPU_STOP_REQUESTED:
        return;
    case VCPU_STOP_SHUTDOWN:
        machine_request_stop(m, 0, "triple fault (KVM_EXIT_SHUTDOWN)");
        return;
    case VCPU_STOP_SYSTEM_EVENT:
        machine_request_stop(m, 0, "KVM_EXIT_SYSTEM_EVENT");
        return;
    case VCPU_STOP_RUN_FAILED:
        wisp_log("vCPU %u: KVM_RUN: %s", t->vcpu.index, strerror(errnum));
        machine_request_stop(m, 1, "KVM_RUN failed");
        return;
    case VCPU_STOP_FATAL_EXIT: {
        static const char head[] = "wisp-vmm: fatal vCPU exit, register dump follows\n";
        char dump[4096];
        size_t n = kvm_vcpu_dump(&t->vcpu, dump, sizeof(dump));
        wisp_log_raw(head, sizeof(head) - 1);
        wisp_log_raw(dump, n);
        machine_request_stop(m, 1, kvm_exit_reason_name(t->vcpu.run->exit_reason));
        return;
    }
    }
}

/* Waits until the main thread made the irqchip (vCPUs must come after it); false on abort. */
static bool vcpu_wait_chips(struct machine *m)
{
    pthread_mutex_lock(&m->start_lock);
    while (!m->chips_ready && !m->abort)
        pthread_cond_wait(&m->start_cond, &m->start_lock);
    bool ok = !m->abort;
    pthread_mutex_unlock(&m->start_lock);
    return ok;
}

static int vcpu_init_cpuid(struct vcpu_thread *t)
{
    const struct kvm *kvm = &t->m->kvm;
    size_t n = kvm->cpuid->nent + X86_CPUID_EXTRA_ENTRIES;
    cleanup_free struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
    if (!c)
        return wisp_err_set(&t->err, ENOMEM, "vCPU %u: out of memory for CPUID", t->vcpu.index);
    int r = x86_cpuid_for_vcpu(kvm->cpuid, t->vcpu.index, t->m->nr_vcpus, c, &t->err);
    return r < 0 ? r : kvm_vcpu_set_cpuid(&t->vcpu, c, &t->err);
}

static int vcpu_init(struct vcpu_thread *t)
{
    struct machine *m = t->m;
    if (!vcpu_wait_chips(m))
        return -ECANCELED;
    int r = kvm_vcpu_create(&t->vcpu, &m->vm, t->vcpu.index, &t->err);
    if (r == 0 && m->restore) /* a snapshot's vCPU: its CPUID, MSRs and registers */
        return kvm_vcpu_restore_state(&t->vcpu, &m->restore->vcpus[t->vcpu.index], &t->err);
    if (r == 0)
        r = vcpu_init_cpuid(t);
    if (r == 0)
        r = kvm_vcpu_init_msrs(&t->vcpu, &m->kvm, &t->err);
    if (r == 0)
        r = kvm_vcpu_init_mp_state(&t->vcpu, &t->err);
    return r;
}

/* --vcpu-affinity: the thread pins itself (its list, or the last one) before its filter is
 * loaded; the VMM's other threads keep the affinity the process was started with. */
static int vcpu_pin(struct vcpu_thread *t)
{
    const char *p = t->m->args->vcpu_affinity;
    if (!p)
        return 0;
    for (unsigned i = 0; i < t->vcpu.index && strchr(p, '/'); i++)
        p = strchr(p, '/') + 1;
    cpu_set_t set;
    if (cpulist_parse(p, strcspn(p, "/"), &set) < 0) /* checked by args.c */
        return wisp_err_set(&t->err, EINVAL, "vcpu%u: --vcpu-affinity: bad list", t->vcpu.index);
    if (sched_setaffinity(0, sizeof(set), &set) < 0)
        return wisp_err_sys(&t->err, errno,
                            "vcpu%u: --vcpu-affinity %.*s (CPUs outside this process's cpuset?)",
                            t->vcpu.index, (int)strcspn(p, "/"), p);
    return 0;
}

static void *vcpu_thread_main(void *opaque)
{
    struct vcpu_thread *t = opaque;
    struct machine *m = t->m;
    char name[16]; /* "vcpuN": tools (and bench/virtio) tell the vCPUs from the VMM's threads */
    snprintf(name, sizeof(name), "vcpu%u", t->vcpu.index);
    pthread_setname_np(pthread_self(), name);
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, SIG_VCPU_KICK);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);

    t->init_result = vcpu_pin(t);
    if (t->init_result == 0)
        t->init_result = vcpu_init(t);
    pthread_mutex_lock(&m->start_lock);
    m->nr_ready++;
    pthread_cond_broadcast(&m->start_cond);
    while (!m->go && !m->abort)
        pthread_cond_wait(&m->start_cond, &m->start_lock);
    bool run = m->go && !m->abort && t->init_result == 0;
    pthread_mutex_unlock(&m->start_lock);
    if (run) /* its filter before its first KVM_RUN (the set-up ioctls came before) */
        wisp_thread_enter(WISP_THREAD_VCPU, name);
    if (run)
        vcpu_run_until_end(t);
    pthread_mutex_lock(&m->start_lock); /* a pause does not wait for a vCPU that is gone */
    m->nr_exited++;
    if (m->pausing && m->nr_parked + m->nr_exited == m->nr_started && m->pause_done) {
        m->nr_parked--; /* vcpu_parked_locked counts one more */
        vcpu_parked_locked(m);
    }
    pthread_cond_broadcast(&m->start_cond);
    pthread_mutex_unlock(&m->start_lock);
    return NULL;
}

static void kick_all(struct machine *m)
{
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        if (m->vcpus[i].started)
            kvm_vcpu_kick(&m->vcpus[i].vcpu, m->vcpus[i].thread, SIG_VCPU_KICK);
}

int machine_pause(struct machine *m, void (*done)(void *opaque), void *opaque)
{
    pthread_mutex_lock(&m->start_lock);
    int r = atomic_load(&m->stopping) ? -ESHUTDOWN : m->pausing ? -EALREADY : 0;
    if (r == 0) {
        m->pausing = true;
        m->pause_done = done;
        m->pause_opaque = opaque;
        atomic_store(&m->vcpu_exit, true);
        if (!m->go || m->nr_parked + m->nr_exited == m->nr_started) {
            m->nr_parked--; /* no vCPU runs: done at once (posted) */
            vcpu_parked_locked(m);
        }
    }
    pthread_mutex_unlock(&m->start_lock);
    if (r == 0 && m->go)
        kick_all(m);
    return r;
}

void machine_start_paused(struct machine *m)
{
    pthread_mutex_lock(&m->start_lock);
    m->pausing = true;
    atomic_store(&m->vcpu_exit, true);
    m->go = true;
    pthread_cond_broadcast(&m->start_cond);
    while (m->nr_parked + m->nr_exited < m->nr_started) /* none runs guest code before it */
        pthread_cond_wait(&m->start_cond, &m->start_lock);
    pthread_mutex_unlock(&m->start_lock);
}

int machine_resume(struct machine *m)
{
    pthread_mutex_lock(&m->start_lock);
    int r = !m->pausing ? -EINVAL : m->pause_done ? -EBUSY : 0; /* not paused / still pausing */
    if (r == 0) {
        m->pausing = false;
        atomic_store(&m->vcpu_exit, atomic_load(&m->stopping));
        pthread_cond_broadcast(&m->start_cond);
    }
    pthread_mutex_unlock(&m->start_lock);
    return r;
}

int machine_on_each_vcpu(struct machine *m, void (*fn)(struct vcpu *vcpu, void *arg), void *arg)
{
    pthread_mutex_lock(&m->start_lock);
    if (!m->pausing || m->pause_done) {
        pthread_mutex_unlock(&m->start_lock);
        return -EINVAL;
    }
    m->work = fn;
    m->work_arg = arg;
    m->work_pending = m->nr_parked;
    m->work_gen++;
    pthread_cond_broadcast(&m->start_cond);
    while (m->work_pending && !atomic_load(&m->stopping))
        pthread_cond_wait(&m->start_cond, &m->start_lock);
    int r = m->work_pending ? -ESHUTDOWN : 0;
    pthread_mutex_unlock(&m->start_lock);
    return r;
}

int vcpu_threads_start(struct machine *m, struct wisp_err *err)
{
    struct sigaction sa = {.sa_handler = vcpu_kick_handler}; /* no SA_RESTART: KVM_RUN -> EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIG_VCPU_KICK, &sa, NULL) < 0)
        return wisp_err_sys(err, errno, "sigaction");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, VCPU_STACK_SIZE);
    /* the threads start with every signal blocked; each unblocks only the kick */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = 0;
    for (unsigned i = 0; i < m->nr_vcpus; i++) {
        struct vcpu_thread *t = &m->vcpus[i];
        t->m = m;
        t->vcpu.index = i;
        t->vcpu.fd = -1;
        int e = wisp_thread_create(&t->thread, &attr, vcpu_thread_main, t);
        if (e) {
            r = wisp_err_sys(err, e, "cannot start the thread of vCPU %u", i);
            break;
        }
        t->started = true;
        m->nr_started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return r;
}

void vcpu_threads_stop(struct machine *m)
{
    atomic_store(&m->stopping, true);
    atomic_store(&m->vcpu_exit, true);
    pthread_mutex_lock(&m->start_lock);
    bool running = m->go;
    if (!running)
        m->abort = true; /* threads still at the start barrier return without running */
    pthread_cond_broadcast(&m->start_cond);
    pthread_mutex_unlock(&m->start_lock);
    if (running)
        kick_all(m);
    for (unsigned i = 0; m->vcpus && i < m->nr_vcpus; i++) {
        struct vcpu_thread *t = &m->vcpus[i];
        if (t->started)
            pthread_join(t->thread, NULL);
        t->started = false;
        kvm_vcpu_destroy(&t->vcpu);
    }
}
