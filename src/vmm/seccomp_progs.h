/* The BPF programs seccomp-gen compiled from seccomp_lists.c at build time. */
#ifndef WISP_VMM_SECCOMP_PROGS_H
#define WISP_VMM_SECCOMP_PROGS_H

#include <linux/filter.h>

#include "vmm/seccomp_lists.h"

#define SECCOMP_SYSCALL_NAMES 512

/* One program per kind; the default action is SECCOMP_RET_KILL_PROCESS. */
extern const struct sock_fprog seccomp_progs[SECCOMP_KINDS];
/* x86_64 system call names by number (NULL where none), for --seccomp=log's message. */
extern const char *const seccomp_syscall_names[SECCOMP_SYSCALL_NAMES];
extern const char *const seccomp_kind_names[SECCOMP_KINDS];

#endif
