/* The machine wisp-vmm runs: the KVM VM, its devices and resources, the vCPU threads, and the
 * main thread's event loop. */
#ifndef WISP_VMM_MACHINE_H
#define WISP_VMM_MACHINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "arch/x86/boot.h"
#include "bus/bus.h"
#include "common/err.h"
#include "common/evloop.h"
#include "devices/device.h"
#include "devices/legacy.h"
#include "devices/resources.h"
#include "kvm/kvm.h"
#include "virtio/console.h"
#include "vmm/config.h"

struct chardev;
struct evloop;
struct evloop_source;
struct machine;
struct qtest;

/*
 * Threads of a running machine (docs/architecture.md):
 *   main       the event loop (owned by struct vmm, vmm/vmm.h): signals, console input, the
 *              API socket, light devices; it starts, pauses and resumes the vCPUs and, when
 *              the VM ends, stops and joins every other thread
 *   vcpuN      KVM_RUN and the port/MMIO exits of that vCPU (device register accesses)
 *   out-*      one per output buffer (console, log): blocking write()s, nothing else
 *   snapshot   while PUT /snapshot/create runs (vmm/snapshot_create.c): quiesces the
 *              devices, takes the state (vCPUs' on their own threads), writes the files
 * A vCPU thread never waits for another thread's I/O: console output goes through an outbuf,
 * logs through wisp_log().
 */
struct vcpu_thread {
    struct machine *m;
    struct vcpu vcpu;
    pthread_t thread;
    bool started;
    int init_result; /* 0 or -errno of the vCPU's own initialisation */
    struct wisp_err err;
};

/* Parameters of the legacy devices, owned by the machine (devices keep pointers to them). */
struct machine_legacy {
    struct serial_port_params com1;
    struct i8042_params i8042;
    struct port_params test_exit, acpi_pm, cf9, io_delay, io_delay_alt;
    struct boot_marker_params boot_marker;
};

struct machine {
    const struct vm_config *args;
    struct kvm kvm;
    struct vm vm;
    struct bus pio, mmio;
    struct device_resources res;
    struct device_list devices;
    struct device_ctx ctx;
    struct machine_legacy legacy;
    struct virtio_console_params console_params; /* --console virtio */
    struct chardev *console; /* host side of COM1, or with --console virtio of hvc0 */
    struct evloop *loop;     /* the main thread's loop (not owned) */
    struct qtest *qtest;     /* --test-socket: the device test protocol (vmm/qtest.h), no vCPUs */
    /* called (from any thread) once, when the VM ends: the owner quits the loop */
    void (*on_end)(void *opaque);
    void *end_opaque;

    unsigned nr_vcpus;
    struct vcpu_thread *vcpus;
    const struct machine_restore *restore; /* during machine_create() of a restored VM */

    /* start barrier: vCPU threads initialise in parallel, then wait for `go` */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    unsigned nr_started, nr_ready;
    bool chips_ready; /* irqchip and PIT exist: vCPUs may be created */
    bool go, abort;

    /* pause (under start_lock): vCPUs leave KVM_RUN and park; while parked they run posted
     * work (machine_on_each_vcpu) on their own threads */
    bool pausing;
    unsigned nr_parked, nr_exited;
    void (*pause_done)(void *opaque);
    void *pause_opaque;
    struct evloop_call pause_call;
    void (*work)(struct vcpu *vcpu, void *arg);
    void *work_arg;
    unsigned work_gen, work_pending;

    atomic_bool vcpu_exit; /* what kvm_vcpu_run watches: stopping || pausing */
    atomic_bool stopping;
    atomic_int stop_status;        /* -1 until the first stop request */
    _Atomic(uint8_t) *port_logged; /* --debug: one bit per port, logged once */
    atomic_uint mmio_logged;       /* --debug: unclaimed MMIO accesses logged so far */
};

/* Called first thing in main(): the reference for boot markers. */
void machine_note_start(struct timespec *start);

/* What the owner of a machine (struct vmm) gives it. */
struct machine_host {
    struct kvm *kvm;         /* opened; moved into the machine (also on failure) */
    struct chardev *console; /* the console's host side; moved into the machine */
    struct evloop *loop;     /* the main thread's loop; the machine registers sources on it */
    const struct timespec *start;
    void (*on_end)(void *opaque); /* the VM ended (any thread): quit the loop */
    void *opaque;
    const struct machine_restore *restore; /* NULL: boot the kernel */
};

/*
 * Restoring a snapshot instead of booting (vmm/snapshot_load.c): what machine_create() does
 * differently. Guest RAM comes from map_memory (a memory file, a page-fault handler) instead of
 * anonymous memory; no kernel is loaded; each vCPU is given vcpus[index] on its own thread right
 * after it is created (instead of the boot CPUID, MSRs and registers); once every device is
 * realized and every vCPU restored, restore_machine() gives the VM's in-kernel devices and the
 * devices their state. All of it must outlive machine_create().
 */
struct kvm_vcpu_state;
struct machine_restore {
    int (*map_memory)(void *opaque, struct guest_mem *mem, uint64_t bytes, struct wisp_err *err);
    const struct kvm_vcpu_state *vcpus;
    int (*restore_machine)(void *opaque, struct machine *m, struct wisp_err *err);
    void *opaque;
};

/*
 * Builds the machine from cfg: VM, RAM, devices, console, vCPU threads (created and initialised
 * in parallel while the kernel is loaded), registers of the boot vCPU. The vCPUs wait until
 * machine_start(). On failure everything is undone (threads joined, fds closed, memory
 * unmapped). Pair with machine_destroy(). Main thread only.
 */
int machine_create(struct machine *m, const struct vm_config *cfg, const struct machine_host *h,
                   struct wisp_err *err);
/* Lets the vCPUs run (main thread). */
void machine_start(struct machine *m);
/* Instead of machine_start(): the vCPUs start paused (parked before their first KVM_RUN, as
 * after machine_pause() has completed); returns once all are parked. machine_resume() lets them
 * run. (A restored VM without resume_vm.) */
void machine_start_paused(struct machine *m);
/* After the loop saw the end (or to end it now): stops and joins the vCPU threads and gives
 * the console a bounded time to drain (a reader that does not read cannot hold the exit up).
 * Returns the exit status (0-255). */
int machine_stop(struct machine *m);
/*
 * Pause (main thread): every vCPU leaves KVM_RUN and parks on its own thread; done(opaque) runs
 * on the main loop once all are parked (at once, posted, when there is no vCPU). -EALREADY if a
 * pause is under way or the machine is paused, -ESHUTDOWN if it is ending. Devices keep
 * serving (a request in flight completes). machine_resume() lets the vCPUs go on.
 */
int machine_pause(struct machine *m, void (*done)(void *opaque), void *opaque);
int machine_resume(struct machine *m);
/* While paused: runs fn(vcpu, arg) on every vCPU's own thread (KVM wants vCPU state taken
 * there) and waits for all of them. Main thread, or a thread it handed the paused machine to
 * (a snapshot's worker) while nothing pauses or resumes it; -EINVAL when not paused,
 * -ESHUTDOWN when the machine stops meanwhile. */
int machine_on_each_vcpu(struct machine *m, void (*fn)(struct vcpu *vcpu, void *arg), void *arg);
void machine_destroy(struct machine *m);
/* The part of machine_destroy() before the VM itself: vCPU threads, devices (drives flushed
 * and closed), buses, console. Idempotent; machine_destroy() calls it. */
void machine_destroy_devices(struct machine *m);
/*
 * Instead of machine_destroy() when the process is about to exit (--async-teardown): tears the
 * devices down here (drives are flushed and closed, nothing of the guest's data is left to the
 * helper), then hands the slow part (KVM destroying the VM and its irqchip: 15-25 ms here, and
 * the address space) to a helper process that shares the address space and exits right after
 * this process, so the exit status reaches the parent at once (QEMU's async-teardown). The
 * helper is re-parented to init or to the nearest child subreaper, which must reap it.
 * Returns 0, or -errno (then call machine_destroy()).
 */
int machine_teardown_async(struct machine *m);

/* vcpu_thread.c */
int vcpu_threads_start(struct machine *m, struct wisp_err *err);
void vcpu_threads_stop(struct machine *m); /* kick and join all */
void machine_request_stop(struct machine *m, int status, const char *why);

/* machine_devices.c: the machine's devices, from the one table of device types. */
int machine_add_devices(struct machine *m, struct wisp_err *err);
/* The legacy PC devices at the ports of arch/x86/pc.h, with their parameters in *l (which must
 * outlive the devices); COM1's host side is `console` (may be NULL: output dropped). */
int machine_add_legacy_devices(struct device_list *list, const struct device_ctx *ctx,
                               struct machine_legacy *l, struct chardev *console, bool boot_marker,
                               struct wisp_err *err);

#endif
