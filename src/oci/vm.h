/* A container's VM: wisp-vmm started by the monitor, in the container's cgroup and network
 * namespace, with the rootfs over virtio-9p and the agent over vsock (vm.c). */
#ifndef WISP_OCI_VM_H
#define WISP_OCI_VM_H

#include <limits.h>
#include <sys/types.h>

#include "host.h"
#include "spec.h"
#include "state.h"
#include "template.h"

struct jail_run;

/* How long a boot may take before the agent answers: Linux boots in 15-50 s on this project's
 * nested machines, under load more. */
#define OCI_BOOT_TIMEOUT_MS (600 * 1000)
/* What the kernel command line gives the agent initramfs's init. */
#define OCI_AGENT_CMDLINE    "wisp.agent=1"
#define OCI_VMM_OVERHEAD_MIB 64 /* the VMM's own memory, added to the cgroup's limit */
/* The jail: wisp-jailer's id, and the VMM's files beneath the state directory. */
#define OCI_JAIL_NAME "vm"
/* The file capabilities a jailed VMM keeps (docs/security.md, "wisp-oci's jail"). */
#define OCI_JAIL_CAPS_RW "chown,dac_override,fowner,fsetid"
#define OCI_JAIL_CAPS_RO "dac_read_search"
/* A template's snapshot in a restoring VMM's jail (read-only binds). */
#define OCI_JAIL_TEMPLATE_STATE "/template.state"
#define OCI_JAIL_TEMPLATE_MEM   "/template.mem"

struct wisp_agent;

struct oci_vm {
    pid_t pid;
    char dir[PATH_MAX];        /* the state directory (the VMM's cwd) */
    char vsock_path[PATH_MAX]; /* the VM's vsock socket, short enough for sun_path */
    char jail_root[300];       /* jailed: the jail's root relative to dir, else "" */
    const struct oci_netif *netif;
    const char *cgroups_path;
    unsigned mem_mib, vcpus;
    int status;    /* wisp-vmm's wait status once it ended (pid < -1 then) */
    bool restored; /* from a template (docs/oci.md "Templates"), not booted */
    /* booted to become the template (its flock held): oci_vm_template_commit() once the agent
     * answered and before the container's root is mounted */
    bool template_pending;
    long long restore_us; /* wisp-vmm started to its PUT /snapshot/load answered */
    struct oci_template tmpl;
    /* jailed in-process (libwisp_jail, from wisp-jailer's command line): what this process
     * made, removed once the VMM has ended */
    struct jail_run *jail;
};

void oci_vm_init(struct oci_vm *vm, const struct oci_container *c, const struct oci_guest *g);
/* Sizes the VM from the spec, makes its cgroups and starts wisp-vmm: restoring the template of
 * its guest configuration when templates are on and it fits (built first if there is none),
 * else booting. */
int oci_vm_start(struct oci_vm *vm, const struct oci_container *c, const struct oci_spec *spec,
                 const struct oci_guest *g, struct wisp_err *err);
/* Ends the VM (the agent's SHUTDOWN when given, then SIGTERM, SIGKILL), removes the tap and
 * the cgroups. */
void oci_vm_stop(struct oci_vm *vm, struct wisp_agent *agent);
/* A VM booted to become the template: paused, snapshotted and resumed now (the agent answered,
 * nothing is mounted on its shares: no connection to the agent may be open). A failure is
 * logged: the container goes on without a template. */
void oci_vm_template_commit(struct oci_vm *vm, const struct oci_container *c);
/* Whether wisp-vmm still runs (reaps it when it ended). */
bool oci_vm_running(struct oci_vm *vm);
/* An agent error while the VM may have ended: says how it ended (wisp-vmm's last line). */
int oci_vm_explain(struct oci_vm *vm, int r, struct wisp_err *err, const char *what);
/* The guest kernel's command line (the same for a template and a cold boot). */
void oci_vm_cmdline(const struct oci_guest *g, char *buf, size_t len);
/* One request on a wisp-vmm API socket, which must answer 204 within timeout_s; else -EIO with
 * wisp-vmm's answer (its fault_message) in err. */
int oci_vmm_api(const char *sock, const char *method, const char *path, const char *body,
                int timeout_s, struct wisp_err *err);
/* The vsock socket's path for a container (short enough for sun_path). */
void oci_vsock_path(const struct oci_container *c, char *buf, size_t len);
/* A file wisp-vmm makes in its working directory (vsock.sock, api.sock): the state directory,
 * or the jail's root (jail_root, relative to it); a path short enough for sun_path. */
void oci_vm_file(const struct oci_container *c, const char *jail_root, const char *name, char *buf,
                 size_t len);
/* state.json's jail root of a jailed container's VM, or NULL. */
const char *oci_vm_jail_root(const struct oci_container *c);

#endif
