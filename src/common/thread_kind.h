/* Every thread wisp starts says what kind it is when it starts, before it does its work: the
 * one place a program hangs per-thread set-up on (wisp-vmm: the thread's seccomp filter,
 * src/vmm/seccomp.h). Without a hook set, nothing happens. */
#ifndef WISP_COMMON_THREAD_KIND_H
#define WISP_COMMON_THREAD_KIND_H

#include <pthread.h>

enum wisp_thread_kind {
    WISP_THREAD_MAIN,     /* the main thread: event loop, API, start and stop */
    WISP_THREAD_VCPU,     /* one per vCPU, before its first KVM_RUN */
    WISP_THREAD_IO,       /* a device's I/O thread (iothread_start; its name tells the device) */
    WISP_THREAD_POOL,     /* a block device's worker of the thread-pool engine */
    WISP_THREAD_WRITER,   /* an outbuf's writer (console, log, metrics) */
    WISP_THREAD_SNAPSHOT, /* the worker of PUT /snapshot/create */
    WISP_THREAD_TEARDOWN, /* the --async-teardown helper process (raw syscalls only) */
    WISP_THREAD_SPAWNER,  /* the one thread that creates the others (wisp_thread_set_spawner) */
    WISP_THREAD_KINDS
};

/* Called by each thread at its start (name: the thread's name, or NULL). */
typedef void wisp_thread_enter_fn(enum wisp_thread_kind kind, const char *name);

/* Sets the hook, once, in main() before any thread starts. */
void wisp_thread_set_enter_hook(wisp_thread_enter_fn *fn);

/* Runs the hook for the calling thread, if one is set. */
void wisp_thread_enter(enum wisp_thread_kind kind, const char *name);

/* Runs fn(arg) where threads and processes may be created, and returns its result. */
typedef int wisp_thread_spawner_fn(int (*fn)(void *arg), void *arg);

/* Sets, once before any thread but the spawner starts, where wisp_thread_spawn runs its calls
 * (wisp-vmm: its spawner thread, so that no other thread needs clone: docs/security.md).
 * Without one, they run on the calling thread. */
void wisp_thread_set_spawner(wisp_thread_spawner_fn *fn);

/* Runs fn(arg) through the spawner (a clone of a helper process: vmm/teardown.c). */
int wisp_thread_spawn(int (*fn)(void *arg), void *arg);

/* pthread_create through the spawner: the new thread starts with the caller's signal mask, as
 * pthread_create's own would. Returns 0 or an error number. */
int wisp_thread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                       void *arg);

#endif
