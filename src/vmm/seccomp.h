/* wisp-vmm's seccomp filters, one per kind of thread (docs/security.md). The programs are
 * compiled at build time (seccomp_gen.c); here they are only loaded. */
#ifndef WISP_VMM_SECCOMP_H
#define WISP_VMM_SECCOMP_H

#include "common/err.h"

enum vmm_seccomp_mode {
    VMM_SECCOMP_ON,  /* a forbidden system call kills the process (SIGSYS) */
    VMM_SECCOMP_LOG, /* it traps: one line naming the thread and the call, exit status 159 */
    VMM_SECCOMP_OFF,
    VMM_SECCOMP_AUDIT, /* loaded, but a forbidden call is allowed (SECCOMP_RET_LOG): tracing */
};

/* Exit status under --seccomp=log after a forbidden call (128 + SIGSYS, as a shell shows a
 * process killed by it under --seccomp=on). */
#define VMM_SECCOMP_LOG_STATUS 159

/* Call once from main() before any thread starts: sets PR_SET_NO_NEW_PRIVS, the SIGSYS handler
 * (log), the hook every thread runs at its start (common/thread_kind.h), and loads the main
 * thread's filter. The test-only trigger WISP_SECCOMP_TEST=KIND (docs/security.md) is read here. */
int vmm_seccomp_setup(enum vmm_seccomp_mode mode, struct wisp_err *err);

#endif
