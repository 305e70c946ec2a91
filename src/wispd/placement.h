/* wispd's placement and isolation of VMs (docs/wispd.md, "Placement and isolation"): the
 * definition's "placement", "limits" and "jail" (placement.c), a cgroup per VM (cgroup.c), NUMA
 * nodes (numa.c), and the jail each VM starts in (libwisp_jail in-process, or wisp-jailer).
 *
 * Call order for a start: placement_prepare() before the fork (cgroup made, limits written,
 * NUMA node chosen, argv built), placement_child() in the child before its exec,
 * placement_join() in the parent with the child's pid (the child is in its cgroups before it
 * execs), placement_release() when the VM's process has ended (cgroups and a left-over jail
 * removed). Each costs the same at N = 1 and N = 1000: nothing walks the other VMs. */
#ifndef WISP_WISPD_PLACEMENT_H
#define WISP_WISPD_PLACEMENT_H

#include <jansson.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct evloop_source;
struct vm;
struct wispd;

#define NUMA_MAX_NODES 64

struct numa_node_info {
    int id; /* the node's number */
    cpu_set_t cpus;
    unsigned nr_cpus;
    uint64_t mem_mib;    /* the node's memory */
    uint64_t used_mib;   /* the guest memory of the running VMs placed on it */
    unsigned used_vcpus; /* their vCPUs */
};

struct numa_topology {
    unsigned nr_nodes;
    struct numa_node_info nodes[NUMA_MAX_NODES];
};

/* numa.c. A topology from a description "NODE:CPUS:MIB NODE:CPUS:MIB..." ("0:0-3:8192
 * 1:4-7:8192"), for tests and simulations. -EINVAL with err. */
int numa_topology_parse(const char *desc, struct numa_topology *t, struct wisp_err *err);
/* The host's nodes (libnuma); one node when the host has no NUMA. */
int numa_topology_host(struct numa_topology *t, struct wisp_err *err);
/* The index of the node for a VM of `vcpus` and `mem_mib` (its CPUs within `allowed` unless
 * NULL): the least loaded in vCPUs per CPU among the nodes whose free memory holds the VM's,
 * then the one with most free memory, then the lowest number. -1: no node holds it. */
int numa_pick(const struct numa_topology *t, unsigned vcpus, uint64_t mem_mib,
              const cpu_set_t *allowed);
/* The index of node number `node`, or -1. */
int numa_find(const struct numa_topology *t, int node);
/* Adds (sign 1) or removes (-1) a VM's vCPUs and memory on node index `idx`. */
void numa_account(struct numa_topology *t, int idx, unsigned vcpus, uint64_t mem_mib, int sign);

enum cgroup_mode { CGROUP_OFF, CGROUP_V1, CGROUP_V2 };

#define CGROUP_V1_MAX 5 /* cpu, cpuacct, cpuset, memory, pids */

struct wispd_place {
    enum cgroup_mode cg_mode;
    char cg_name[32]; /* the parent's name: "wisp", or "wisp-HASH" of the state directory */
    /* The parent of the VMs' cgroups: v1 one per controller (a co-mounted one once, ""
     * when the controller is not mounted), v2 dirs[0]. */
    char cg_dirs[CGROUP_V1_MAX][PATH_MAX];
    unsigned cg_mask[CGROUP_V1_MAX]; /* the controllers (bit i of cgroup_names[]) each dir has */
    unsigned cg_have;                /* every controller available */
    /* favordynmods (cgroup.c): off by --no-favor-dynmods; the detached mount that holds it
     * (-1: none); what it is, for GET /v1/limits */
    bool no_dynmods;
    int dynmods_fd;
    const char *dynmods;
    struct numa_topology numa;
    bool jail;    /* VMs start jailed unless their definition says "jail": false */
    char *jailer; /* --jailer: an external wisp-jailer execs each VM; NULL: jailed in-process */
    uint32_t jail_uid, jail_gid;
    char jail_base[PATH_MAX];
    /* VMs' cgroups still busy at their removal (a killed jailer's VMM still exiting): retried
     * every 100 ms, each up to 50 times (cgroup.c) */
    struct {
        int64_t id;
        unsigned tries;
    } busy[64];
    unsigned nr_busy;
    struct evloop_source *busy_timer;
};

struct jail_run;

struct vm_place {
    bool jailed;      /* this run is jailed */
    bool jailer_exec; /* by an external wisp-jailer (--jailer): vm->pid is the jailer's; else
                         wispd binds the VM's API socket and the VMM gets it as fd 3 */
    bool cgroup;      /* this run has cgroups (made and joined) */
    int numa_idx;     /* index into numa.nodes, or -1 */
    unsigned numa_vcpus;
    uint64_t numa_mib;
    char **argv; /* built by placement_prepare, freed by placement_join */
    /* jailed in-process: the jail made by placement_prepare (libwisp_jail, from the same
     * arguments wisp-jailer takes), which the child enters; freed by placement_join */
    struct jail_run *jail;
    bool has_vmm_cpus;
    cpu_set_t vmm_cpus;
    unsigned long nodemask; /* for set_mempolicy(MPOL_BIND) in the child; 0: none */
};

/* main.c's options: cgroups "auto", "v1", "v2" or "off"; jailer NULL: VMs jailed in-process. */
int placement_init(struct wispd *d, const char *cgroups, bool jail, const char *jailer,
                   uint32_t uid, uint32_t gid, struct wisp_err *err);
/* vmdef.c: checks a definition's placement, limits and jail. -EINVAL with err. */
int placement_check(json_t *def, struct wisp_err *err);
int placement_prepare(struct vm *vm, struct wisp_err *err);
/* fork(), or jailed in-process a fork-like clone into new mount, ipc, uts and pid namespaces
 * (the child is its VMM's pid 1); the child calls placement_child. */
pid_t placement_fork(struct vm *vm);
void placement_child(struct vm *vm) __attribute__((noreturn));
int placement_join(struct vm *vm, pid_t pid, struct wisp_err *err);
void placement_release(struct vm *vm);
/* The path the VMM opens for a host path of the definition: in a jail, "/kernel", "/initrd",
 * "/drive-ID" (what="drive", id given); else host itself. */
const char *placement_path(const struct vm *vm, const char *what, const char *id, const char *host,
                           char *buf, size_t size);
/* A jailed VM's snapshot file (what="snapshot", id "state" or "memory", written at its jail
 * path) moved to `host` (renamed, or copied across file systems). Unjailed: nothing to do. */
int placement_take_file(const struct vm *vm, const char *what, const char *id, const char *host,
                        struct wisp_err *err);
/* SIGKILL to the VM: under a jail to the VMM's processes (the jailer then removes the jail and
 * exits), else to the process. */
void placement_kill(struct vm *vm);
/* A reattached VM (recover_row): what its run uses, from its API socket's path. */
void placement_reattach(struct vm *vm);
/* Adds "placement" (cgroup paths, NUMA node, jail) to a VM's JSON. */
void placement_json(const struct vm *vm, json_t *j);
json_t *placement_host_json(const struct wispd *d);

/* cgroup.c */
int cgroups_init(struct wispd_place *p, const char *mode, struct wisp_err *err);
/* At wispd's end: removes the parents if no VM's cgroup is in them. */
void cgroups_fini(struct wispd_place *p);
/* The VM's cgroups (made if missing; EEXIST is a left-over of a run whose removal failed) with
 * its limits and cpuset written. */
int cgroup_vm_create(struct wispd *d, struct vm *vm, const char *cpus, const char *mems,
                     struct wisp_err *err);
int cgroup_vm_join(struct wispd *d, struct vm *vm, pid_t pid, struct wisp_err *err);
void cgroup_vm_remove(struct wispd *d, struct vm *vm);
/* The VM's cgroup directory holding `file` ("memory.usage_in_bytes"): for stats. -ENOENT. */
int cgroup_vm_dir(const struct wispd *d, const struct vm *vm, const char *file, char *buf,
                  size_t size);
/* Sends sig to every process of the VM's cgroups but `except`; how many. */
int cgroup_vm_signal(const struct wispd *d, const struct vm *vm, int sig, pid_t except);

#endif
