/* The links and addresses wispd's networks need, through rtnetlink (Linux rtnetlink(7)) and
 * /dev/net/tun: bridges with the gateway's address, persistent taps as their ports, and the
 * host's IPv4 routes and addresses (for the subnet overlap check). Each call is a request and
 * its answer on a netlink socket of its own: local to the kernel, microseconds, never a wait on
 * another process. Everything acts in the caller's network namespace. */
#ifndef WISP_WISPD_NETLINK_H
#define WISP_WISPD_NETLINK_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* A new bridge `name` with the MAC `mac` (48 bits), which it keeps whatever ports come and go
 * (else Linux gives it the lowest port's, and the guests' ARP entries for the gateway go stale
 * when that VM stops); -EEXIST when an interface has that name. */
int nl_bridge_add(const char *name, uint64_t mac, struct wisp_err *err);
/* Deletes the interface `name`; one that does not exist is fine (0). */
int nl_link_del(const char *name, struct wisp_err *err);
/* Makes `name` a port of `master` (NULL: leaves its master alone) and sets it up. */
int nl_link_up(const char *name, const char *master, struct wisp_err *err);
/* Adds addr/prefix (host order) to `name`; an address it has already is fine. */
int nl_addr_add(const char *name, uint32_t addr, unsigned prefix, struct wisp_err *err);
/* The interface's ifindex, 0 when there is none. */
unsigned nl_link_index(const char *name);

/* A persistent tap `name` (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR as wisp-vmm opens it), which stays
 * when the fd closes, for wisp-vmm to open by name; owned by uid and gid (TUNSETOWNER,
 * TUNSETGROUP) when they are not -1, so that a wisp-vmm that dropped to them may attach to it;
 * -EEXIST when the name is taken. */
int nl_tap_add(const char *name, long long uid, long long gid, struct wisp_err *err);

/* One IPv4 prefix the host routes or holds: dst/prefix (host order), the interface's name
 * ("" when none), what it is ("route" or "address"), the routing table. */
struct nl_prefix {
    uint32_t addr;
    unsigned prefix;
    char dev[16];
    const char *kind;
    unsigned table;
};
/* Calls fn for every IPv4 route of every table and every IPv4 address; fn returns nonzero to
 * stop (that value is returned). */
int nl_for_each_prefix(int (*fn)(const struct nl_prefix *p, void *opaque), void *opaque,
                       struct wisp_err *err);

#endif
