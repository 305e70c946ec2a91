/* The machine wisp-vmm runs: KVM VM + devices + vCPU threads, and the main thread's loop. */
#ifndef WISP_VMM_MACHINE_H
#define WISP_VMM_MACHINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <termios.h>
#include <time.h>

#include "arch/x86/boot.h"
#include "bus/bus.h"
#include "common/err.h"
#include "devices/device.h"
#include "kvm/kvm.h"
#include "vmm/args.h"

/* COM1's host side: where output goes, where input comes from, the terminal's saved mode. */
struct console {
    int out_fd; /* -1: discard */
    int in_fd;  /* -1: no input */
    bool out_owned;
    bool tty_raw; /* in_fd's terminal mode was changed and must be restored */
    struct termios saved;
};

int console_open(struct console *con, const struct vmm_args *args, struct wisp_err *err);
void console_close(struct console *con); /* restores the terminal; safe on a zeroed console */

struct machine;

struct vcpu_thread {
    struct machine *m;
    struct vcpu vcpu;
    pthread_t thread;
    bool started;
    int init_result; /* 0 or -errno of the vCPU's own initialisation */
    struct wisp_err err;
};

struct machine {
    const struct vmm_args *args;
    struct kvm kvm;
    struct vm vm;
    struct bus pio, mmio;
    struct devices devs;
    struct device_ctx ctx;
    struct console con;
    int wake_fd; /* eventfd: vCPU threads wake the main loop (stop request, serial room) */
    int signal_fd;

    unsigned nr_vcpus;
    struct vcpu_thread *vcpus;

    /* start barrier: vCPU threads initialise in parallel, then wait for `go` */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    unsigned nr_started, nr_ready;
    bool chips_ready; /* irqchip and PIT exist: vCPUs may be created */
    bool go, abort;

    atomic_bool stopping;
    atomic_int stop_status;        /* -1 until the first stop request */
    _Atomic(uint8_t) *port_logged; /* --debug: one bit per port, logged once */
    atomic_uint mmio_logged;       /* --debug: unclaimed MMIO accesses logged so far */
};

/* Called first thing in main(): the reference for boot markers. */
void machine_note_start(struct timespec *start);

/*
 * Builds the machine from args with an already opened kvm (moved into m): VM, RAM, devices,
 * console, vCPU threads (created and initialised in parallel while the kernel is loaded),
 * registers of the boot vCPU. On failure everything is undone (threads joined, fds closed,
 * memory unmapped). Pair with machine_destroy().
 */
int machine_create(struct machine *m, const struct vmm_args *args, struct kvm *kvm,
                   const struct timespec *start, struct wisp_err *err);
/* Starts the vCPUs and serves the console and signals until the VM ends; returns the exit
 * status (0-255) or -errno with err set for a runtime failure. */
int machine_run(struct machine *m, struct wisp_err *err);
void machine_destroy(struct machine *m);
/*
 * Instead of machine_destroy() when the process is about to exit: restores the terminal and
 * hands the slow part of the teardown (KVM destroys the VM, the PIT thread, the memory slots:
 * tens of ms here) to a helper process that shares the address space and finishes after this
 * process has exited, so the exit status reaches the parent at once (QEMU's async-teardown).
 * Returns 0, or -errno (then call machine_destroy()).
 */
int machine_teardown_async(struct machine *m);

/* vcpu_thread.c */
int vcpu_threads_start(struct machine *m, struct wisp_err *err);
void vcpu_threads_stop(struct machine *m); /* kick (signal + immediate_exit) and join all */
void machine_request_stop(struct machine *m, int status, const char *why);

#endif
