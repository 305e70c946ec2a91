/* The wisp-vmm process: one VM's lifecycle (configured, running, paused, ended), the main
 * thread's event loop, signals, and the host resources opened before the VM exists. */
#ifndef WISP_VMM_VMM_H
#define WISP_VMM_VMM_H

#include <stdbool.h>
#include <time.h>

#include "common/err.h"
#include "kvm/kvm.h"
#include "vmm/config.h"
#include "vmm/machine.h"

struct chardev;
struct evloop;
struct evloop_source;

/* States (Firecracker's: "Not started", "Running", "Paused"; then the end). */
enum vmm_state {
    VMM_NOT_STARTED, /* configuring: the configuration may change */
    VMM_RUNNING,
    VMM_PAUSED,
    VMM_ENDED, /* the guest or a signal ended the VM; the process exits */
};

const char *vmm_state_name(enum vmm_state s); /* "Not started", "Running", "Paused", "Ended" */

struct vmm {
    struct vm_config *cfg; /* not owned; changes only while VMM_NOT_STARTED */
    struct timespec start; /* the top of main(): boot markers count from it */
    struct evloop *loop;   /* the main thread's loop */
    int signal_fd;
    struct evloop_source *signal_src;
    enum vmm_state state;
    bool pause_pending;
    struct machine m;  /* valid from vmm_start() on */
    bool have_machine; /* m was created (and is destroyed by vmm_destroy) */
    int exit_status;   /* what the process exits with once VMM_ENDED */
    /* snapshots (vmm/snapshot.h): what the snapshot code keeps (owned); during the
     * vmm_start() of vmm_snapshot_load(), the restore and whether the vCPUs start paused */
    struct vmm_snapshot *snap;
    const struct machine_restore *restore;
    bool start_paused;
};

/*
 * Call order (main thread):
 *   vmm_init()        the loop, signals (SIGINT/TERM/HUP/QUIT end the VM in order)
 *   vmm_start()       opens KVM and the console's host side, builds the machine, runs the vCPUs
 *                     (at once from the command line; later on InstanceStart from the API)
 *   vmm_run()         the main loop until the VM ends (or vmm_quit); returns the exit status
 *   vmm_destroy()     tears everything down (async: hands KVM's part to a helper process)
 * vmm_pause()/vmm_resume() in VMM_RUNNING/VMM_PAUSED.
 */
int vmm_init(struct vmm *v, struct vm_config *cfg, const struct timespec *start,
             struct wisp_err *err);
/* Builds and starts the VM from v->cfg. Errors are classified: *usage is set when the
 * configuration names something that cannot be used (a file, a tap), else it is a runtime
 * error. The state stays VMM_NOT_STARTED on failure. */
int vmm_start(struct vmm *v, bool *usage, struct wisp_err *err);
/* Pauses the vCPUs; done(opaque) runs on the main loop when they are all parked (the state is
 * VMM_PAUSED from then on). -EINVAL unless VMM_RUNNING, -EALREADY while a pause is under way. */
int vmm_pause(struct vmm *v, void (*done)(void *opaque), void *opaque, struct wisp_err *err);
/* -EINVAL unless VMM_PAUSED. */
int vmm_resume(struct vmm *v, struct wisp_err *err);
/* Ends the VM from the host (a signal, the API): the process exits with `status`. */
void vmm_end(struct vmm *v, int status, const char *why);
int vmm_run(struct vmm *v);
void vmm_destroy(struct vmm *v);

#endif
