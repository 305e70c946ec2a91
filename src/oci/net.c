/* The container's network namespace given to its VM, as Kata Containers does it: a tap beside
 * the engine's veth, a tc ingress qdisc on each with a mirred redirect to the other, the guest's
 * NIC given the veth's MAC, and the guest configured with the veth's addresses and routes
 * (through the agent). The host stack of the namespace no longer sees the veth's frames. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "host.h"

#define OCI_TAP_NAME "wisp-tap0"

static int ip_json(const char *const *argv, json_t **out, struct wisp_err *err)
{
    cleanup_free char *text = NULL;
    json_error_t jerr;
    int r = oci_run_output(argv, &text, err);

    if (r < 0)
        return r;
    *out = json_loads(text, 0, &jerr);
    if (!*out || !json_is_array(*out)) {
        json_decref(*out);
        return wisp_err_set(err, EINVAL, "%s %s: unexpected output: %s", argv[0], argv[2],
                            jerr.text);
    }
    return 0;
}

static void read_routes(struct oci_netif *nif, const char *family)
{
    const char *argv[] = {"ip", family, "-j", "route", "show", "dev", nif->name, NULL};
    struct wisp_err err;
    json_t *routes, *r;
    size_t i;

    if (ip_json(argv, &routes, &err) < 0)
        return;
    json_array_foreach(routes, i, r)
    {
        const char *dst = json_string_value(json_object_get(r, "dst"));
        const char *gw = json_string_value(json_object_get(r, "gateway"));
        const char *proto = json_string_value(json_object_get(r, "protocol"));
        if (!dst || nif->n_routes == 32)
            continue;
        /* Routes the kernel made for an address come back with the address in the guest. */
        if (proto && strcmp(proto, "kernel") == 0)
            continue;
        if (strcmp(dst, "default") == 0)
            dst = strcmp(family, "-6") == 0 ? "::/0" : "0.0.0.0/0";
        snprintf(nif->route_dst[nif->n_routes], 64, "%s", dst);
        snprintf(nif->route_gw[nif->n_routes], 64, "%s", gw ? gw : "");
        nif->n_routes++;
    }
    json_decref(routes);
}

int oci_net_probe(struct oci_netif *nif, bool *found, struct wisp_err *err)
{
    const char *argv[] = {"ip", "-j", "addr", "show", NULL};
    json_t *links, *l, *a;
    size_t i, k;
    int r;

    memset(nif, 0, sizeof(*nif));
    *found = false;
    if ((r = ip_json(argv, &links, err)) < 0)
        return wisp_err_wrap(err, "the container's network namespace");
    json_array_foreach(links, i, l)
    {
        const char *type = json_string_value(json_object_get(l, "link_type"));
        const char *name = json_string_value(json_object_get(l, "ifname"));
        const char *mac = json_string_value(json_object_get(l, "address"));
        if (!type || strcmp(type, "ether") != 0 || !name || !mac || strlen(name) > 15)
            continue;
        snprintf(nif->name, sizeof(nif->name), "%s", name);
        snprintf(nif->mac, sizeof(nif->mac), "%s", mac);
        nif->mtu = (unsigned)json_integer_value(json_object_get(l, "mtu"));
        json_array_foreach(json_object_get(l, "addr_info"), k, a)
        {
            const char *local = json_string_value(json_object_get(a, "local"));
            const char *scope = json_string_value(json_object_get(a, "scope"));
            json_int_t plen = json_integer_value(json_object_get(a, "prefixlen"));
            if (!local || (scope && strcmp(scope, "global") != 0) || nif->n_addresses == 8)
                continue;
            snprintf(nif->addresses[nif->n_addresses++], 64, "%s/%lld", local, (long long)plen);
        }
        *found = true;
        break;
    }
    json_decref(links);
    if (*found) {
        read_routes(nif, "-4");
        read_routes(nif, "-6");
    }
    return 0;
}

int oci_net_plumb(struct oci_netif *nif, struct wisp_err *err)
{
    char mtu[16], uid[24], gid[24];
    int r;

    snprintf(nif->tap, sizeof(nif->tap), "%s", OCI_TAP_NAME);
    snprintf(mtu, sizeof(mtu), "%u", nif->mtu ? nif->mtu : 1500);
    const char *add[] = {"ip",  "tuntap", "add", "dev",   nif->tap, "mode",
                         "tap", "user",   uid,   "group", gid,      NULL};
    snprintf(uid, sizeof(uid), "%ld", nif->tap_uid);
    snprintf(gid, sizeof(gid), "%ld", nif->tap_gid);
    if (nif->tap_uid < 0)
        add[7] = NULL; /* root's */
    const char *up[] = {"ip", "link", "set", nif->tap, "mtu", mtu, "up", NULL};
    const char *q1[] = {"tc", "qdisc", "add", "dev", nif->name, "ingress", NULL};
    const char *f1[] = {"tc",       "filter", "add",    "dev",      nif->name, "parent", "ffff:",
                        "protocol", "all",    "u32",    "match",    "u32",     "0",      "0",
                        "action",   "mirred", "egress", "redirect", "dev",     nif->tap, NULL};
    const char *q2[] = {"tc", "qdisc", "add", "dev", nif->tap, "ingress", NULL};
    const char *f2[] = {"tc",       "filter", "add",    "dev",      nif->tap, "parent",  "ffff:",
                        "protocol", "all",    "u32",    "match",    "u32",    "0",       "0",
                        "action",   "mirred", "egress", "redirect", "dev",    nif->name, NULL};
    if ((r = oci_run(add, err)) < 0)
        return r;
    if ((r = oci_run(up, err)) < 0 || (r = oci_run(q1, err)) < 0 || (r = oci_run(f1, err)) < 0 ||
        (r = oci_run(q2, err)) < 0 || (r = oci_run(f2, err)) < 0) {
        oci_net_unplumb(nif);
        return r;
    }
    return 0;
}

void oci_net_unplumb(const struct oci_netif *nif)
{
    struct wisp_err err;
    const char *del[] = {"ip", "link", "del", nif->tap, NULL};
    const char *q[] = {"tc", "qdisc", "del", "dev", nif->name, "ingress", NULL};

    if (nif->tap[0])
        oci_run(del, &err);
    if (nif->name[0])
        oci_run(q, &err);
}
