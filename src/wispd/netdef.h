/* wispd's network definitions and the addresses in them (docs/wispd.md, "Networks"): IPv4
 * addresses, subnets and ranges, MAC addresses, and the checks a network definition gets at
 * `net create`. Pure functions of their input (no host state), so that they are unit-tested
 * and fuzzed (fuzz/netdef_fuzz.c) on their own. */
#ifndef WISP_WISPD_NETDEF_H
#define WISP_WISPD_NETDEF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* A network name: 1 to NET_NAME_MAX of A-Z a-z 0-9 _ -, not starting with -; its bridge is
 * "wb-" NAME, an interface name (at most 15 characters). */
#define NET_NAME_MAX 12

/* The prefix of the MACs wispd allocates: locally administered (bit 1 of the first octet),
 * unicast (bit 0 clear), and apart from wisp-vmm's own default MACs (02:...). */
#define NET_MAC_PREFIX 0x0a7769000000ull /* 0a:77:69:xx:xx:xx */
/* A bridge's own MAC: this prefix and the network's number in the registry. */
#define NET_BRIDGE_MAC_PREFIX 0x0a7768000000ull /* 0a:77:68:xx:xx:xx */

/* "a.b.c.d" (each 0-255, no leading zeros, nothing else) into a host-order address. */
int net_parse_ipv4(const char *s, uint32_t *out);
/* "a.b.c.d/N" with N from 0 to 32. */
int net_parse_cidr(const char *s, uint32_t *addr, unsigned *prefix);
void net_format_ipv4(uint32_t a, char out[16]);

/* The mask of a prefix length (0 to 32). */
static inline uint32_t net_mask(unsigned prefix)
{
    return prefix ? ~0u << (32 - prefix) : 0;
}

/* Whether a/alen and b/blen share an address (one contains the other). */
bool net_overlap(uint32_t a, unsigned alen, uint32_t b, unsigned blen);

/* "0a:77:69:00:00:01" (six hex pairs, : separated) into 48 bits (first octet highest). */
int net_parse_mac(const char *s, uint64_t *out);
void net_format_mac(uint64_t mac, char out[18]);
/* A NIC's MAC must be unicast and not all zeros. */
bool net_mac_usable(uint64_t mac);

/* A checked network definition. */
struct netdef {
    char name[NET_NAME_MAX + 1];
    char bridge[16];
    uint32_t subnet, gateway, range_start, range_end;
    unsigned prefix;
    bool nat, dns;
};

/*
 * Checks a definition (JSON object: name, subnet, and optionally gateway, dhcp_range "A-B",
 * nat, dns) and fills *out; the defaults are the subnet's first address as the gateway and
 * every other host address as the range. Refused, with a message naming the field: an unknown
 * field, a name that is no interface name, a subnet that is not IPv4 a.b.c.d/N with N from 8 to
 * 30 or that has host bits set, one in 0/8, 127/8, 169.254/16 or 224/3, a gateway or range outside
 * the subnet's host addresses, a range that holds the gateway or whose start is after its end.
 */
int netdef_check(const json_t *def, struct netdef *out, struct wisp_err *err);
/* A VM definition's nics[] (each an object, already read by field): exactly one of `tap` (at
 * most 15 characters) and `network` per NIC, `mac` usable (unicast, not zero). */
int netdef_check_nics(const json_t *nics, struct wisp_err *err);
/* The definition as stored and shown, defaults filled in (new reference). */
json_t *netdef_to_json(const struct netdef *n);

#endif
