/* The VMs' NICs on wispd's networks (docs/wispd.md, "Networks"): a MAC for every NIC, unique
 * across the VMs (allocated at define and kept in the definition, so persistent in the
 * registry; the set of MACs in use is rebuilt from the definitions at start-up), and a tap on
 * the network's bridge for each NIC with a network while its VM runs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/cleanup.h"
#include "netlink.h"
#include "network.h"
#include "placement.h"
#include "wispd.h"

#define MAC_TRIES 64

static size_t slot_of(const struct netstate *ns, uint64_t mac)
{
    uint64_t h = mac * 0x9e3779b97f4a7c15ull; /* Fibonacci hashing */
    return (size_t)(h >> 20) & (ns->mac_cap - 1);
}

static struct mac_entry *mac_find(const struct netstate *ns, uint64_t mac)
{
    if (!ns->mac_cap)
        return NULL;
    for (size_t i = slot_of(ns, mac);; i = (i + 1) & (ns->mac_cap - 1)) {
        if (ns->macs[i].mac == mac)
            return &ns->macs[i];
        if (!ns->macs[i].mac)
            return NULL;
    }
}

static int mac_insert(struct netstate *ns, uint64_t mac, const struct vm *vm)
{
    if ((ns->nr_macs + 1) * 2 > ns->mac_cap) { /* at most half full */
        size_t cap = ns->mac_cap ? ns->mac_cap * 2 : 256;
        struct mac_entry *old = ns->macs, *macs = calloc(cap, sizeof(*macs));
        if (!macs)
            return -ENOMEM;
        size_t old_cap = ns->mac_cap;
        ns->macs = macs;
        ns->mac_cap = cap;
        ns->nr_macs = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].mac)
                mac_insert(ns, old[i].mac, old[i].vm);
        free(old);
    }
    size_t i = slot_of(ns, mac);
    while (ns->macs[i].mac)
        i = (i + 1) & (ns->mac_cap - 1);
    ns->macs[i] = (struct mac_entry){mac, vm};
    ns->nr_macs++;
    return 0;
}

/* Deletion with backward shift: no tombstones, so lookups stay short. */
static void mac_delete(struct netstate *ns, struct mac_entry *e)
{
    size_t mask = ns->mac_cap - 1, i = (size_t)(e - ns->macs), j = i;
    ns->macs[i].mac = 0;
    for (;;) {
        j = (j + 1) & mask;
        if (!ns->macs[j].mac)
            break;
        size_t home = slot_of(ns, ns->macs[j].mac);
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            ns->macs[i] = ns->macs[j];
            ns->macs[j].mac = 0;
            i = j;
        }
    }
    ns->nr_macs--;
}

static bool in_def(const json_t *nics, size_t upto, uint64_t mac)
{
    json_t *nic;
    size_t i;
    uint64_t m;
    json_array_foreach(nics, i, nic)
    {
        const char *s = json_string_value(json_object_get(nic, "mac"));
        if (i < upto && s && net_parse_mac(s, &m) == 0 && m == mac)
            return true;
    }
    return false;
}

int net_vm_define(struct wispd *d, json_t *def, struct wisp_err *err)
{
    json_t *nics = json_object_get(def, "nics"), *nic;
    size_t i;
    json_array_foreach(nics, i, nic)
    {
        const char *net = json_string_value(json_object_get(nic, "network"));
        const char *mac_s = json_string_value(json_object_get(nic, "mac"));
        struct network *n = net ? net_find(d, net) : NULL;
        if (net && (!n || n->removing))
            return wisp_err_set(err, EINVAL,
                                "definition: nics[%zu]: network: no network named "
                                "'%s' (wisp net ls)",
                                i, net);
        uint64_t mac;
        struct mac_entry *e;
        if (mac_s) { /* vmdef_parse() checked its form */
            net_parse_mac(mac_s, &mac);
            if ((e = mac_find(d->net, mac)))
                return wisp_err_set(err, EEXIST, "definition: nics[%zu]: mac: %s is VM '%s''s", i,
                                    mac_s, e->vm->name);
            if (in_def(nics, i, mac))
                return wisp_err_set(err, EINVAL,
                                    "definition: nics[%zu]: mac: %s is another NIC's of this VM", i,
                                    mac_s);
            continue;
        }
        int tries = 0;
        do {
            uint32_t r;
            if (getrandom(&r, sizeof(r), 0) != sizeof(r))
                return wisp_err_sys(err, errno, "getrandom");
            mac = NET_MAC_PREFIX | (r & 0xffffff);
        } while ((!net_mac_usable(mac) || mac_find(d->net, mac) || in_def(nics, i, mac)) &&
                 ++tries < MAC_TRIES);
        if (tries == MAC_TRIES)
            return wisp_err_set(err, ENOSPC,
                                "definition: nics[%zu]: no free MAC found in %d tries (%zu in use)",
                                i, MAC_TRIES, d->net->nr_macs);
        char text[18];
        net_format_mac(mac, text);
        json_object_set_new(nic, "mac", json_string(text));
    }
    return 0;
}

void net_vm_added(struct vm *vm)
{
    json_t *nic;
    size_t i;
    uint64_t mac;
    json_array_foreach(json_object_get(vm->def, "nics"), i, nic)
    {
        const char *s = json_string_value(json_object_get(nic, "mac"));
        if (!s || net_parse_mac(s, &mac) < 0)
            continue;
        struct mac_entry *e = mac_find(vm->d->net, mac);
        if (e)
            fprintf(stderr, "wispd: %s: nics[%zu]: mac %s is VM '%s''s too\n", vm->name, i, s,
                    e->vm->name);
        else if (mac_insert(vm->d->net, mac, vm) < 0)
            fprintf(stderr, "wispd: %s: out of memory for its MACs\n", vm->name);
    }
}

void net_vm_removed(struct vm *vm)
{
    json_t *nic;
    size_t i;
    uint64_t mac;
    json_array_foreach(json_object_get(vm->def, "nics"), i, nic)
    {
        const char *s = json_string_value(json_object_get(nic, "mac"));
        struct mac_entry *e;
        if (s && net_parse_mac(s, &mac) == 0 && (e = mac_find(vm->d->net, mac)) && e->vm == vm)
            mac_delete(vm->d->net, e);
    }
}

const char *net_nic_tap(const struct vm *vm, size_t index, const json_t *nic, char buf[16])
{
    const char *tap = json_string_value(json_object_get(nic, "tap"));
    if (tap)
        return tap;
    /* ids and indexes this large do not occur; the name would be cut, not overflow */
    char name[48];
    snprintf(name, sizeof(name), "wt%lldn%zu", (long long)vm->id, index);
    memcpy(buf, name, 15);
    buf[15] = '\0';
    return buf;
}

void net_vm_taps_down(struct vm *vm)
{
    json_t *nic;
    size_t i;
    char tap[16];
    json_array_foreach(json_object_get(vm->def, "nics"), i, nic)
    {
        struct wisp_err err = {0};
        if (json_object_get(nic, "network") && nl_link_del(net_nic_tap(vm, i, nic, tap), &err) < 0)
            fprintf(stderr, "wispd: %s: %s\n", vm->name, err.msg);
    }
}

int net_vm_taps_up(struct vm *vm, struct wisp_err *err)
{
    json_t *nic;
    size_t i;
    char tap[16];
    int ret = 0;
    json_array_foreach(json_object_get(vm->def, "nics"), i, nic)
    {
        const char *name = json_string_value(json_object_get(nic, "network"));
        if (!name)
            continue;
        struct network *n = net_find(vm->d, name);
        if (!n || n->removing) {
            ret = wisp_err_set(err, EINVAL, "%s: nics[%zu]: no network named '%s' (removed?)",
                               vm->name, i, name);
            break;
        }
        net_nic_tap(vm, i, nic, tap);
        nl_link_del(tap, NULL); /* left by this VM's last run if wispd died before its end */
        /* a jailed wisp-vmm runs as the jail's user, without CAP_NET_ADMIN */
        bool jailed = vm->place.jailed;
        ret = nl_tap_add(tap, jailed ? (long long)vm->d->place.jail_uid : -1,
                         jailed ? (long long)vm->d->place.jail_gid : -1, err);
        if (ret == 0)
            ret = nl_link_up(tap, n->def.bridge, err);
        if (ret < 0) {
            wisp_err_wrap(err, "%s: nics[%zu]", vm->name, i);
            break;
        }
    }
    if (ret < 0)
        net_vm_taps_down(vm);
    return ret;
}
