/* wispd's networks (docs/wispd.md, "Networks"): a bridge with the gateway's address, a
 * dnsmasq for DHCP (and DNS) supervised by wispd, NAT with nftables when asked; each NIC of a
 * VM on a network gets a tap on its bridge while the VM runs, and every NIC a MAC unique
 * across the VMs. network.c: the networks and their API; dnsmasq.c: the dnsmasq of each;
 * mac.c: MAC allocation and the VMs' taps. */
#ifndef WISP_WISPD_NETWORK_H
#define WISP_WISPD_NETWORK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "netdef.h"

struct api_request;
struct evloop_source;
struct vm;
struct wispd;

enum dnsmasq_state { DNSMASQ_STOPPED, DNSMASQ_STARTING, DNSMASQ_RUNNING, DNSMASQ_STOPPING };

struct network {
    struct wispd *d;
    int64_t id;
    struct netdef def;
    char dir[192]; /* DIR/net/NAME: dnsmasq.conf, dnsmasq.pid, leases, dnsmasq.log, nat.nft */
    bool removing; /* net rm under way (remove_pending in the registry) */
    /* its dnsmasq */
    enum dnsmasq_state dns_state;
    int pid, pidfd;
    bool child; /* spawned by this wispd (waitid works), not reattached */
    bool start_timed_out;
    uint64_t starttime;
    int64_t started_ms, restarts;
    unsigned backoff_ms, ready_polls;
    char last_exit[160];
    struct evloop_source *pidfd_src, *timer;
    struct api_request *waiter; /* a create waiting for dnsmasq, or an rm waiting for its end */
    struct network *next;
};

struct mac_entry {
    uint64_t mac; /* 0: free */
    const struct vm *vm;
};

struct netstate {
    struct network *list;
    struct mac_entry *macs; /* open addressing, linear probing; a power of two */
    size_t mac_cap, nr_macs;
};

/* --- hooks for the rest of wispd --- */

/* At start-up, after the registry is open and before the VMs are recovered: loads the networks,
 * finishes an rm under way, makes again what is missing (bridge, address, NAT rules) and
 * reattaches to each dnsmasq (or starts it). */
int net_init(struct wispd *d, struct wisp_err *err);
/* /v1/networks... */
int net_add_routes(struct wispd *d, struct wisp_err *err);
/* At define, after vmdef_parse(): each NIC's network must exist; a given MAC must be free,
 * otherwise one is allocated and written into the NIC (def is changed). -EINVAL or -EEXIST. */
int net_vm_define(struct wispd *d, json_t *def, struct wisp_err *err);
/* A VM's MACs join (vm_create) or leave (vm_free) the set of MACs in use. */
void net_vm_added(struct vm *vm);
void net_vm_removed(struct vm *vm);
/* Before a VM's wisp-vmm starts: a tap on its network's bridge for each NIC with a network.
 * All or none: on failure the taps made are deleted. */
int net_vm_taps_up(struct vm *vm, struct wisp_err *err);
/* Once it has ended (or, at start-up, for a VM that is not running): deletes those taps. */
void net_vm_taps_down(struct vm *vm);
/* The tap wisp-vmm gets for NIC `index`: its `tap`, or the one wispd makes (wt<vm id>n<index>). */
const char *net_nic_tap(const struct vm *vm, size_t index, const json_t *nic, char buf[16]);

/* --- between network.c, dnsmasq.c and mac.c --- */

struct network *net_find(struct wispd *d, const char *name);
json_t *net_to_json(const struct network *n);
/* dnsmasq.c: starts (or, with pid, reattaches to) the network's dnsmasq. */
int dnsmasq_start(struct network *n, struct wisp_err *err);
int dnsmasq_reattach(struct network *n, int pid, uint64_t starttime);
/* SIGTERM (SIGKILL 3 s later); net_dnsmasq_ended() follows. */
void dnsmasq_stop(struct network *n);
void dnsmasq_release(struct network *n);
/* network.c: called when a network's dnsmasq is up (its pid file written) or has ended. */
void net_dnsmasq_ready(struct network *n);
void net_dnsmasq_ended(struct network *n, bool during_start);

#endif
