/* Network definitions, IPv4 subnets and MAC addresses (netdef.h). */
#include "netdef.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api/json.h"
#include "common/cleanup.h"

int net_parse_ipv4(const char *s, uint32_t *out)
{
    uint32_t a = 0;
    for (int part = 0; part < 4; part++) {
        if (part && *s++ != '.')
            return -EINVAL;
        if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
            return -EINVAL; /* a digit first; no leading zeros (inet_aton would read octal) */
        unsigned v = 0;
        for (int digits = 0; *s >= '0' && *s <= '9'; digits++, s++) {
            if (digits == 3)
                return -EINVAL;
            v = v * 10 + (unsigned)(*s - '0');
        }
        if (v > 255)
            return -EINVAL;
        a = a << 8 | v;
    }
    if (*s)
        return -EINVAL;
    *out = a;
    return 0;
}

int net_parse_cidr(const char *s, uint32_t *addr, unsigned *prefix)
{
    const char *slash = strchr(s, '/');
    char ip[16];
    if (!slash || (size_t)(slash - s) >= sizeof(ip))
        return -EINVAL;
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    const char *p = slash + 1;
    if (!(p[0] >= '0' && p[0] <= '9') || (p[1] && !(p[1] >= '0' && p[1] <= '9')) ||
        (p[1] && p[2]) || (p[0] == '0' && p[1]))
        return -EINVAL;
    unsigned n = (unsigned)(p[0] - '0');
    if (p[1])
        n = n * 10 + (unsigned)(p[1] - '0');
    if (n > 32 || net_parse_ipv4(ip, addr) < 0)
        return -EINVAL;
    *prefix = n;
    return 0;
}

void net_format_ipv4(uint32_t a, char out[16])
{
    snprintf(out, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

bool net_overlap(uint32_t a, unsigned alen, uint32_t b, unsigned blen)
{
    uint32_t m = net_mask(alen < blen ? alen : blen);
    return (a & m) == (b & m);
}

int net_parse_mac(const char *s, uint64_t *out)
{
    uint64_t mac = 0;
    for (int i = 0; i < 6; i++) {
        if (i && *s++ != ':')
            return -EINVAL;
        for (int k = 0; k < 2; k++, s++) {
            int c = *s, v = c >= '0' && c <= '9'   ? c - '0'
                            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                   : -1;
            if (v < 0)
                return -EINVAL;
            mac = mac << 4 | (uint64_t)v;
        }
    }
    if (*s)
        return -EINVAL;
    *out = mac;
    return 0;
}

void net_format_mac(uint64_t mac, char out[18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", (unsigned)(mac >> 40) & 0xff,
             (unsigned)(mac >> 32) & 0xff, (unsigned)(mac >> 24) & 0xff,
             (unsigned)(mac >> 16) & 0xff, (unsigned)(mac >> 8) & 0xff, (unsigned)mac & 0xff);
}

bool net_mac_usable(uint64_t mac)
{
    return mac != 0 && !((mac >> 40) & 1);
}

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > NET_NAME_MAX || n[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", n[i]))
            return false;
    return true;
}

/* Ranges no network may use: not unicast addresses a host can route to a bridge. */
static const struct {
    uint32_t addr;
    unsigned prefix;
    const char *what;
} reserved[] = {
    {0x00000000, 8, "0.0.0.0/8 (this network)"},
    {0x7f000000, 8, "127.0.0.0/8 (loopback)"},
    {0xa9fe0000, 16, "169.254.0.0/16 (link-local)"},
    {0xe0000000, 3, "224.0.0.0/3 (multicast and reserved)"},
};

/* A host address of the subnet: inside it, neither its network nor its broadcast address. */
static bool host_of(const struct netdef *n, uint32_t a)
{
    uint32_t m = net_mask(n->prefix);
    return (a & m) == n->subnet && a != n->subnet && a != (n->subnet | ~m);
}

static int check_addresses(struct netdef *n, const char *subnet, const char *gateway,
                           const char *range, struct wisp_err *err)
{
    char s[16], e[16];
    if (net_parse_cidr(subnet, &n->subnet, &n->prefix) < 0)
        return wisp_err_set(err, EINVAL,
                            "network: subnet: '%.64s' is not an IPv4 subnet a.b.c.d/N (IPv6 "
                            "networks are not supported)",
                            subnet);
    if (n->prefix < 8 || n->prefix > 30)
        return wisp_err_set(err, EINVAL,
                            "network: subnet: '%s': the prefix length must be 8 to 30 (room for "
                            "a gateway and guests)",
                            subnet);
    uint32_t m = net_mask(n->prefix);
    if (n->subnet & ~m) {
        net_format_ipv4(n->subnet & m, s);
        return wisp_err_set(err, EINVAL, "network: subnet: '%s' has host bits set (%s/%u?)", subnet,
                            s, n->prefix);
    }
    for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
        if (net_overlap(n->subnet, n->prefix, reserved[i].addr, reserved[i].prefix))
            return wisp_err_set(err, EINVAL, "network: subnet: '%s' is in %s", subnet,
                                reserved[i].what);
    n->gateway = n->subnet + 1;
    if (gateway && (net_parse_ipv4(gateway, &n->gateway) < 0 || !host_of(n, n->gateway)))
        return wisp_err_set(err, EINVAL, "network: gateway: '%.64s' is not a host address of %s",
                            gateway, subnet);
    uint32_t last = (n->subnet | ~m) - 1;
    /* The default range: the addresses above the gateway, or below it when it is the last. */
    n->range_start = n->gateway < last ? n->gateway + 1 : n->subnet + 1;
    n->range_end = n->gateway < last ? last : n->gateway - 1;
    if (range) {
        const char *dash = strchr(range, '-');
        if (!dash || (size_t)(dash - range) >= sizeof(s)) {
            return wisp_err_set(err, EINVAL, "network: dhcp_range: '%.64s' is not A-B", range);
        }
        memcpy(s, range, (size_t)(dash - range));
        s[dash - range] = '\0';
        if (net_parse_ipv4(s, &n->range_start) < 0 || net_parse_ipv4(dash + 1, &n->range_end) < 0)
            return wisp_err_set(
                err, EINVAL, "network: dhcp_range: '%.64s' is not A-B (two IPv4 addresses)", range);
        if (!host_of(n, n->range_start) || !host_of(n, n->range_end))
            return wisp_err_set(err, EINVAL,
                                "network: dhcp_range: '%s' is not within the host addresses "
                                "of %s",
                                range, subnet);
        if (n->range_start > n->range_end)
            return wisp_err_set(err, EINVAL, "network: dhcp_range: '%s' starts after its end",
                                range);
    }
    if (n->gateway >= n->range_start && n->gateway <= n->range_end) {
        net_format_ipv4(n->range_start, s);
        net_format_ipv4(n->range_end, e);
        return wisp_err_set(err, EINVAL,
                            "network: dhcp_range: %s-%s holds the gateway (give another "
                            "gateway or range)",
                            s, e);
    }
    if (n->range_start > n->range_end)
        return wisp_err_set(err, EINVAL, "network: subnet: '%s' has no address left for guests",
                            subnet);
    return 0;
}

int netdef_check(const json_t *def, struct netdef *out, struct wisp_err *err)
{
    const char *name = NULL, *subnet = NULL, *gateway = NULL, *range = NULL;
    bool nat = false, dns = false;
    const struct api_json_field fields[] = {
        {.name = "name", .type = API_JSON_STRING, .required = true, .out = &name},
        {.name = "subnet", .type = API_JSON_STRING, .required = true, .out = &subnet},
        {.name = "gateway", .type = API_JSON_STRING, .required = false, .out = &gateway},
        {.name = "dhcp_range", .type = API_JSON_STRING, .required = false, .out = &range},
        {.name = "nat", .type = API_JSON_BOOL, .required = false, .out = &nat},
        {.name = "dns", .type = API_JSON_BOOL, .required = false, .out = &dns},
    };
    int ret = api_json_read(def, "network", fields, ARRAY_SIZE(fields), err);
    if (ret < 0)
        return ret;
    memset(out, 0, sizeof(*out));
    if (!name_ok(name))
        return wisp_err_set(err, EINVAL,
                            "network: name: '%.64s' is not 1 to %d of A-Z a-z 0-9 _ - (not "
                            "starting with -)",
                            name, NET_NAME_MAX);
    strcpy(out->name, name);
    snprintf(out->bridge, sizeof(out->bridge), "wb-%s", name);
    out->nat = nat;
    out->dns = dns;
    return check_addresses(out, subnet, gateway, range, err);
}

json_t *netdef_to_json(const struct netdef *n)
{
    char sub[16], gw[16], a[16], b[16], cidr[24], range[40];
    net_format_ipv4(n->subnet, sub);
    net_format_ipv4(n->gateway, gw);
    net_format_ipv4(n->range_start, a);
    net_format_ipv4(n->range_end, b);
    snprintf(cidr, sizeof(cidr), "%s/%u", sub, n->prefix);
    snprintf(range, sizeof(range), "%s-%s", a, b);
    return json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "name", n->name, "subnet", cidr, "gateway",
                     gw, "dhcp_range", range, "nat", n->nat, "dns", n->dns);
}

int netdef_check_nics(const json_t *nics, struct wisp_err *err)
{
    const json_t *nic;
    size_t i;
    json_array_foreach(nics, i, nic)
    {
        const char *tap = json_string_value(json_object_get(nic, "tap"));
        const char *net = json_string_value(json_object_get(nic, "network"));
        const char *mac = json_string_value(json_object_get(nic, "mac"));
        uint64_t m;
        if (!tap == !net)
            return wisp_err_set(err, EINVAL,
                                "definition: nics[%zu]: give either tap (a tap of yours) or "
                                "network (a wispd network: wispd makes the tap)",
                                i);
        if (tap && (!*tap || strlen(tap) > 15))
            return wisp_err_set(err, EINVAL,
                                "definition: nics[%zu]: tap: '%.32s' is not 1 to 15 characters", i,
                                tap);
        if (net && (!*net || strlen(net) > NET_NAME_MAX))
            return wisp_err_set(
                err, EINVAL, "definition: nics[%zu]: network: '%.32s' is no network name", i, net);
        if (mac && (net_parse_mac(mac, &m) < 0 || !net_mac_usable(m)))
            return wisp_err_set(err, EINVAL,
                                "definition: nics[%zu]: mac: '%.32s' is not a unicast MAC "
                                "address such as 0a:77:69:00:00:01",
                                i, mac);
    }
    return 0;
}
