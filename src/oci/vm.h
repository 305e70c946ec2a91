/* A container's VM: wisp-vmm started by the monitor, in the container's cgroup and network
 * namespace, with the rootfs over virtio-9p and the agent over vsock (vm.c). */
#ifndef WISP_OCI_VM_H
#define WISP_OCI_VM_H

#include <limits.h>
#include <sys/types.h>

#include "host.h"
#include "spec.h"
#include "state.h"

/* How long a boot may take before the agent answers: Linux boots in 15-50 s on this project's
 * nested machines, under load more. */
#define OCI_BOOT_TIMEOUT_MS (600 * 1000)
/* What the kernel command line gives the agent initramfs's init. */
#define OCI_AGENT_CMDLINE    "wisp.agent=1"
#define OCI_VMM_OVERHEAD_MIB 64 /* the VMM's own memory, added to the cgroup's limit */

struct wisp_agent;

struct oci_vm {
    pid_t pid;
    char dir[PATH_MAX];        /* the state directory (the VMM's cwd) */
    char vsock_path[PATH_MAX]; /* the VM's vsock socket, short enough for sun_path */
    const struct oci_netif *netif;
    const char *cgroups_path;
    unsigned mem_mib, vcpus;
    int status; /* wisp-vmm's wait status once it ended (pid < -1 then) */
};

void oci_vm_init(struct oci_vm *vm, const struct oci_container *c);
/* Sizes the VM from the spec, makes its cgroups and starts wisp-vmm. */
int oci_vm_start(struct oci_vm *vm, const struct oci_container *c, const struct oci_spec *spec,
                 const struct oci_guest *g, struct wisp_err *err);
/* Ends the VM (the agent's SHUTDOWN when given, then SIGTERM, SIGKILL), removes the tap and
 * the cgroups. */
void oci_vm_stop(struct oci_vm *vm, struct wisp_agent *agent);
/* Whether wisp-vmm still runs (reaps it when it ended). */
bool oci_vm_running(struct oci_vm *vm);
/* An agent error while the VM may have ended: says how it ended (wisp-vmm's last line). */
int oci_vm_explain(struct oci_vm *vm, int r, struct wisp_err *err, const char *what);
/* The vsock socket's path for a container (short enough for sun_path). */
void oci_vsock_path(const struct oci_container *c, char *buf, size_t len);

#endif
