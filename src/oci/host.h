/* The host side of a container's VM: where the guest comes from (guestcfg.c), its network
 * (net.c: a tap in the container's network namespace, Kata's tc redirect), its cgroups
 * (cgroup.c), and small process helpers (run.c). */
#ifndef WISP_OCI_HOST_H
#define WISP_OCI_HOST_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

/* The jailed VMM's default user and group (oci.json's jail_uid, jail_gid). */
#define OCI_JAIL_ID 10200

struct oci_guest {
    char vmm[PATH_MAX]; /* wisp-vmm */
    char kernel[PATH_MAX];
    char initramfs[PATH_MAX]; /* with the guest agent as init */
    char cmdline[1024];       /* extra kernel command-line options */
    unsigned mem_mib;         /* default guest memory without a limit in config.json */
    unsigned vcpus;           /* default vCPUs without a CPU limit */
    unsigned overhead_mib;    /* guest memory added to a container's memory limit */
    bool template_on;
    bool jail;                   /* the VMM jailed (default; "jail": false) */
    bool jailer_exec;            /* "jailer" in oci.json: that program jails it, not wisp-oci */
    char jailer[PATH_MAX];       /* wisp-jailer: its command line is the jail's, in either case */
    unsigned jail_uid, jail_gid; /* the jailed VMM's user and group */
    char cache_dir[PATH_MAX];
    char source[PATH_MAX]; /* where these came from, for messages */
};

/* /etc/wisp/oci.json ($WISP_OCI_CONFIG), else the kit's kernel and agent initramfs found from
 * where wisp-oci lies (its build directory or install prefix). Checks that the files exist. */
int oci_guest_find(struct oci_guest *g, struct wisp_err *err);

/* The network namespace's interface that the guest takes over (its first Ethernet link). */
struct oci_netif {
    char name[16];
    char mac[18];
    unsigned mtu;
    char addresses[8][64]; /* "10.88.0.5/16" */
    unsigned n_addresses;
    char route_dst[32][64];
    char route_gw[32][64];
    unsigned n_routes;
    char tap[16];
    long tap_uid, tap_gid; /* the tap's owner (the jailed VMM's user), -1: root's */
};

/* In the current network namespace: finds the interface; returns 0 with *found false when the
 * namespace has only loopback. */
int oci_net_probe(struct oci_netif *nif, bool *found, struct wisp_err *err);
/* Makes the tap and the two tc mirred redirects between it and the interface. */
int oci_net_plumb(struct oci_netif *nif, struct wisp_err *err);
/* Removes the tap (and with it the redirects' target); the interface's ingress qdisc too. */
void oci_net_unplumb(const struct oci_netif *nif);

/* cgroup v1: makes <ctrl>/<path> for the controllers wisp-oci uses and writes the limits. */
int oci_cgroup_setup(const char *path, uint64_t memory_limit, long long cpu_quota,
                     unsigned long long cpu_period, const char *cpuset, struct wisp_err *err);
/* Moves pid into every controller's cgroup of path. */
int oci_cgroup_enter(const char *path, pid_t pid, struct wisp_err *err);
/* Removes the cgroups (they must be empty: the processes are gone). */
void oci_cgroup_remove(const char *path);
/* The pids in path's cgroup (memory controller's cgroup.procs). */
int oci_cgroup_pids(const char *path, pid_t *pids, int max);

/* Runs argv (PATH lookup), stdio on /dev/null, stderr kept for the message; waits. */
int oci_run(const char *const *argv, struct wisp_err *err);
/* Runs argv and returns its stdout (malloc'ed, NUL-terminated). */
int oci_run_output(const char *const *argv, char **out, struct wisp_err *err);

#endif
