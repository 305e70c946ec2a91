/* vCPU threads: parallel creation and initialisation, the KVM_RUN loop, exit dispatch to the
 * buses, and stopping (signal kick + immediate_exit, KVM API doc 5 "immediate_exit"). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmm/machine.h"

#define VCPU_STACK_SIZE (64 * 1024) /* the run loop needs little; keeps RSS small */
#define SIG_VCPU_KICK   SIGUSR1

static void vcpu_kick_handler(int sig)
{
    (void)sig; /* only interrupts KVM_RUN */
}

static void machine_wake(struct machine *m)
{
    uint64_t one = 1;
    (void)!write(m->wake_fd, &one, sizeof(one));
}

void machine_request_stop(struct machine *m, int status, const char *why)
{
    int none = -1;
    if (atomic_compare_exchange_strong(&m->stop_status, &none, status) && m->args->debug) {
        char line[160];
        int n =
            snprintf(line, sizeof(line), "wisp-vmm: VM ends (%s), exit status %d\n", why, status);
        if (n > 0 && (size_t)n < sizeof(line))
            (void)device_write_all(STDERR_FILENO, line, (size_t)n);
    }
    atomic_store(&m->stopping, true);
    machine_wake(m);
}

/* --debug: each unclaimed port once, the first 32 unclaimed MMIO accesses. */
static void vcpu_log_unclaimed(struct machine *m, const char *what, uint64_t addr, bool write)
{
    if (!m->port_logged)
        return;
    if (addr < 0x10000 && what[0] == 'p') {
        uint8_t bit = (uint8_t)(1u << (addr & 7));
        if (atomic_fetch_or(&m->port_logged[addr >> 3], bit) & bit)
            return;
    } else if (atomic_fetch_add(&m->mmio_logged, 1) >= 32) {
        return;
    }
    char line[128];
    int n = snprintf(line, sizeof(line), "wisp-vmm: unclaimed %s %s 0x%llx\n", what,
                     write ? "write" : "read", (unsigned long long)addr);
    if (n > 0 && (size_t)n < sizeof(line))
        (void)device_write_all(STDERR_FILENO, line, (size_t)n);
}

static void vcpu_handle_io(struct machine *m, struct kvm_run *run)
{
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool write = run->io.direction == KVM_EXIT_IO_OUT;
    /* `rep ins/outs` arrive as `count` accesses in a row */
    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        bool ok = write ? bus_write(&m->pio, run->io.port, data, run->io.size)
                        : bus_read(&m->pio, run->io.port, data, run->io.size);
        if (!ok)
            vcpu_log_unclaimed(m, "port", run->io.port, write);
    }
}

static void vcpu_handle_mmio(struct machine *m, struct kvm_run *run)
{
    unsigned len = run->mmio.len <= 8 ? run->mmio.len : 8;
    bool ok = run->mmio.is_write ? bus_write(&m->mmio, run->mmio.phys_addr, run->mmio.data, len)
                                 : bus_read(&m->mmio, run->mmio.phys_addr, run->mmio.data, len);
    if (!ok)
        vcpu_log_unclaimed(m, "MMIO", run->mmio.phys_addr, run->mmio.is_write);
}

/* Handles one exit; returns false when this vCPU must stop. */
static bool vcpu_handle_exit(struct vcpu_thread *t)
{
    struct machine *m = t->m;
    struct kvm_run *run = t->vcpu.run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        vcpu_handle_io(m, run);
        return true;
    case KVM_EXIT_MMIO:
        vcpu_handle_mmio(m, run);
        return true;
    case KVM_EXIT_INTR:
    case KVM_EXIT_HLT: /* not with the in-kernel LAPIC; harmless */
        return true;
    case KVM_EXIT_SHUTDOWN: /* triple fault: a PC resets */
        machine_request_stop(m, 0, "triple fault (KVM_EXIT_SHUTDOWN)");
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_CRASH)
            break;
        machine_request_stop(m, 0, "KVM_EXIT_SYSTEM_EVENT");
        return false;
    default:
        break;
    }
    static const char msg[] = "wisp-vmm: fatal vCPU exit, register dump follows\n";
    (void)device_write_all(STDERR_FILENO, msg, sizeof(msg) - 1);
    kvm_vcpu_dump(&t->vcpu, STDERR_FILENO);
    machine_request_stop(m, 1, kvm_exit_reason_name(run->exit_reason));
    return false;
}

static void vcpu_run_loop(struct vcpu_thread *t)
{
    struct machine *m = t->m;
    while (!atomic_load(&m->stopping)) {
        int r = kvm_ioctl(t->vcpu.fd, KVM_RUN, 0);
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r < 0) {
            char line[128];
            int n = snprintf(line, sizeof(line), "wisp-vmm: vCPU %u: KVM_RUN: %s\n", t->vcpu.index,
                             strerror(-r));
            if (n > 0 && (size_t)n < sizeof(line))
                (void)device_write_all(STDERR_FILENO, line, (size_t)n);
            machine_request_stop(m, 1, "KVM_RUN failed");
            return;
        }
        if (!vcpu_handle_exit(t))
            return;
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

static int vcpu_init(struct vcpu_thread *t)
{
    struct machine *m = t->m;
    unsigned i = t->vcpu.index;
    int r = 0;
    if (!vcpu_wait_chips(m))
        return -ECANCELED;
    if (r == 0)
        r = kvm_vcpu_create(&t->vcpu, &m->vm, i, &t->err);
    if (r == 0)
        r = kvm_vcpu_init_cpuid(&t->vcpu, &m->kvm, m->nr_vcpus, &t->err);
    if (r == 0)
        r = kvm_vcpu_init_msrs(&t->vcpu, &m->kvm, &t->err);
    if (r == 0)
        r = kvm_vcpu_init_mp_state(&t->vcpu, &t->err);
    return r;
}

static void *vcpu_thread_main(void *opaque)
{
    struct vcpu_thread *t = opaque;
    struct machine *m = t->m;
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, SIG_VCPU_KICK);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);

    t->init_result = vcpu_init(t);
    pthread_mutex_lock(&m->start_lock);
    m->nr_ready++;
    pthread_cond_broadcast(&m->start_cond);
    while (!m->go && !m->abort)
        pthread_cond_wait(&m->start_cond, &m->start_lock);
    bool run = m->go && !m->abort && t->init_result == 0;
    pthread_mutex_unlock(&m->start_lock);
    if (run)
        vcpu_run_loop(t);
    return NULL;
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
        int e = pthread_create(&t->thread, &attr, vcpu_thread_main, t);
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
    pthread_mutex_lock(&m->start_lock);
    bool running = m->go;
    if (!running)
        m->abort = true; /* threads still at the start barrier return without running */
    pthread_cond_broadcast(&m->start_cond);
    pthread_mutex_unlock(&m->start_lock);
    for (unsigned i = 0; running && i < m->nr_vcpus; i++) {
        struct vcpu_thread *t = &m->vcpus[i];
        if (!t->started)
            continue;
        /* immediate_exit covers the window between the loop's check and KVM_RUN; the signal
         * interrupts a KVM_RUN in progress */
        if (t->vcpu.run)
            __atomic_store_n(&t->vcpu.run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        pthread_kill(t->thread, SIG_VCPU_KICK);
    }
    for (unsigned i = 0; m->vcpus && i < m->nr_vcpus; i++) {
        struct vcpu_thread *t = &m->vcpus[i];
        if (t->started)
            pthread_join(t->thread, NULL);
        t->started = false;
        kvm_vcpu_destroy(&t->vcpu);
    }
}
