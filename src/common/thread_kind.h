/* Every thread wisp starts says what kind it is when it starts, before it does its work: the
 * one place a program hangs per-thread set-up on (wisp-vmm: the thread's seccomp filter,
 * src/vmm/seccomp.h). Without a hook set, nothing happens. */
#ifndef WISP_COMMON_THREAD_KIND_H
#define WISP_COMMON_THREAD_KIND_H

enum wisp_thread_kind {
    WISP_THREAD_MAIN,     /* the main thread: event loop, API, start and stop */
    WISP_THREAD_VCPU,     /* one per vCPU, before its first KVM_RUN */
    WISP_THREAD_IO,       /* a device's I/O thread (iothread_start; its name tells the device) */
    WISP_THREAD_POOL,     /* a block device's worker of the thread-pool engine */
    WISP_THREAD_WRITER,   /* an outbuf's writer (console, log, metrics) */
    WISP_THREAD_SNAPSHOT, /* the worker of PUT /snapshot/create */
    WISP_THREAD_TEARDOWN, /* the --async-teardown helper process (raw syscalls only) */
    WISP_THREAD_KINDS
};

/* Called by each thread at its start (name: the thread's name, or NULL). */
typedef void wisp_thread_enter_fn(enum wisp_thread_kind kind, const char *name);

/* Sets the hook, once, in main() before any thread starts. */
void wisp_thread_set_enter_hook(wisp_thread_enter_fn *fn);

/* Runs the hook for the calling thread, if one is set. */
void wisp_thread_enter(enum wisp_thread_kind kind, const char *name);

#endif
