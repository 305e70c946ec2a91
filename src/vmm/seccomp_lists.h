/* The allow-lists of wisp-vmm's threads, one per kind (docs/security.md says why each entry is
 * there). Read by the build-time generator (seccomp_gen.c), which compiles them into BPF with
 * libseccomp; wisp-vmm itself only loads the result (seccomp.c). Only constants may appear: a
 * filter compiled at build time knows no fd. */
#ifndef WISP_VMM_SECCOMP_LISTS_H
#define WISP_VMM_SECCOMP_LISTS_H

#include <stdint.h>

#include "common/thread_kind.h"

/* The kinds of filters: the thread kinds, the I/O threads split into block and the rest. */
enum seccomp_kind {
    SECCOMP_MAIN,
    SECCOMP_VCPU,
    SECCOMP_BLOCK_IO,
    SECCOMP_NET_IO,
    SECCOMP_PMEM_IO,
    SECCOMP_POOL,
    SECCOMP_WRITER,
    SECCOMP_SNAPSHOT,
    SECCOMP_TEARDOWN,
    SECCOMP_SPAWNER,
    SECCOMP_P9_IO, /* after the others: tests/security/seccomp_trace.py numbers them in order */
    SECCOMP_KINDS
};

enum seccomp_cond {
    SC_ANY,        /* any arguments */
    SC_NOEXEC,     /* mmap/mprotect: arg 2 (prot) without PROT_EXEC */
    SC_IOCTL,      /* ioctl: arg 1 == value */
    SC_IOCTL_TYPE, /* ioctl: the request's type byte ((arg 1 >> 8) & 0xff) == value */
    SC_ARG0,       /* arg 0 == value (socket's domain, write's fd) */
};

struct seccomp_rule {
    const char *syscall;
    enum seccomp_cond cond;
    uint64_t value;
    const char *why; /* shown by tests/security/seccomp_coverage.py; "rare:" = may stay unused */
};

struct seccomp_list {
    const char *name; /* the kind's name in messages and docs */
    const struct seccomp_rule *rules;
    unsigned count;
};

/* The lists of the kinds; the spawner's filter also takes every other kind's rules but the
 * main thread's (the threads it creates inherit it: docs/security.md). */
extern const struct seccomp_list seccomp_lists[SECCOMP_KINDS];

#endif
