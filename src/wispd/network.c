/* wispd's networks (network.h; docs/wispd.md, "Networks"): `net create` checks the subnet
 * against the host's routes and addresses and the other networks, commits the network, makes
 * its bridge with the gateway's address (and the NAT rules when asked) and answers once its
 * dnsmasq is up; `net rm` refuses while VMs use it (unless forced), then undoes all of it. At
 * start-up every network is made whole again and its dnsmasq reattached. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/http.h"
#include "api/json.h"
#include "common/cleanup.h"
#include "netlink.h"
#include "network.h"
#include "registry.h"
#include "wispd.h"

extern char **environ;

struct network *net_find(struct wispd *d, const char *name)
{
    for (struct network *n = d->net ? d->net->list : NULL; n; n = n->next)
        if (!strcmp(n->def.name, name))
            return n;
    return NULL;
}

/* The VMs with a NIC on the network (a pass over the VMs: net ls and net rm only). */
static json_t *vms_on(const struct network *n)
{
    json_t *a = json_array(), *nic;
    size_t i;
    for (unsigned h = 0; h < VM_HASH_SIZE; h++)
        for (struct vm *vm = n->d->hash[h]; vm; vm = vm->hash_next)
            json_array_foreach(json_object_get(vm->def, "nics"), i, nic)
            {
                const char *net = json_string_value(json_object_get(nic, "network"));
                if (net && !strcmp(net, n->def.name)) {
                    json_array_append_new(a, json_string(vm->name));
                    break;
                }
            }
    return a;
}

static const char *const dns_states[] = {"stopped", "starting", "running", "stopping"};

json_t *net_to_json(const struct network *n)
{
    json_t *j = netdef_to_json(&n->def);
    char leases[256];
    snprintf(leases, sizeof(leases), "%s/leases", n->dir);
    json_object_set_new(j, "bridge", json_string(n->def.bridge));
    json_object_set_new(j, "state",
                        json_string(n->removing                        ? "removing"
                                    : n->dns_state == DNSMASQ_RUNNING  ? "active"
                                    : n->dns_state == DNSMASQ_STARTING ? "starting"
                                                                       : "restarting"));
    json_object_set_new(j, "dnsmasq",
                        json_pack("{s:s, s:I, s:I, s:s}", "state", dns_states[n->dns_state], "pid",
                                  (json_int_t)n->pid, "restarts", (json_int_t)n->restarts,
                                  "last_exit", n->last_exit));
    json_object_set_new(j, "lease_file", json_string(leases));
    json_object_set_new(j, "vms", vms_on(n));
    return j;
}

/* Runs nft with `args` (a ruleset file with -f, or a command), its messages into the network's
 * nft.log; local and quick (no peer to wait for), so waited for. */
static int run_nft(struct network *n, char *const argv[], bool quiet, struct wisp_err *err)
{
    static const char *const paths[] = {"/usr/sbin/nft", "/usr/bin/nft", "/sbin/nft"};
    const char *nft = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(paths) && !nft; i++)
        if (access(paths[i], X_OK) == 0)
            nft = paths[i];
    if (!nft)
        return wisp_err_set(err, ENOENT,
                            "network %s: --nat needs nft (Debian: apt-get install nftables)",
                            n->def.name);
    char log[256];
    snprintf(log, sizeof(log), "%s/nft.log", n->dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int status = 0, e = posix_spawn(&pid, nft, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e)
        return wisp_err_sys(err, e, "network %s: %s", n->def.name, nft);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    char msg[200] = "";
    FILE *f = fopen(log, "re");
    if (f) {
        if (!fgets(msg, sizeof(msg), f))
            msg[0] = '\0';
        fclose(f);
    }
    msg[strcspn(msg, "\n")] = '\0';
    if (quiet)
        return -EIO;
    return wisp_err_set(err, EIO, "network %s: nft %s failed: %s", n->def.name, argv[1], msg);
}

/* Masquerade the subnet's traffic to elsewhere; forward what the guests send and the answers
 * to it, nothing new towards them. One table per network, replaced whole. */
static int nat_apply(struct network *n, struct wisp_err *err)
{
    char path[256], sub[16];
    net_format_ipv4(n->def.subnet, sub);
    snprintf(path, sizeof(path), "%s/nat.nft", n->dir);
    FILE *f = fopen(path, "we");
    if (!f)
        return wisp_err_sys(err, errno, "%s", path);
    fprintf(f,
            "# wispd's network '%s' (--nat): written by wispd\n"
            "table ip wisp_net_%lld {}\ndelete table ip wisp_net_%lld\n"
            "table ip wisp_net_%lld {\n"
            "\tchain postrouting {\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            "\t\tip saddr %s/%u ip daddr != %s/%u masquerade\n\t}\n"
            "\tchain forward {\n"
            "\t\ttype filter hook forward priority filter; policy accept;\n"
            "\t\tiifname \"%s\" accept\n"
            "\t\toifname \"%s\" ct state established,related accept\n"
            "\t\toifname \"%s\" drop\n\t}\n}\n",
            n->def.name, (long long)n->id, (long long)n->id, (long long)n->id, sub, n->def.prefix,
            sub, n->def.prefix, n->def.bridge, n->def.bridge, n->def.bridge);
    if (fclose(f) != 0)
        return wisp_err_sys(err, errno, "%s", path);
    char *argv[] = {"nft", "-f", path, NULL};
    int ret = run_nft(n, argv, false, err);
    if (ret < 0)
        return ret;
    /* Forwarding is this namespace's setting: on for NAT (it stays on after net rm). */
    int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "1", 1) != 1) {
        ret = wisp_err_sys(err, errno, "network %s: net.ipv4.ip_forward", n->def.name);
    }
    if (fd >= 0)
        close(fd);
    return ret;
}

static void nat_remove(struct network *n)
{
    char table[40];
    snprintf(table, sizeof(table), "wisp_net_%lld", (long long)n->id);
    char *argv[] = {"nft", "delete", "table", "ip", table, NULL};
    run_nft(n, argv, true, NULL);
}

/* The bridge with the gateway's address, up; the NAT rules. Idempotent: also repairs. */
static int net_apply(struct network *n, struct wisp_err *err)
{
    int ret = 0;
    if (!nl_link_index(n->def.bridge))
        ret =
            nl_bridge_add(n->def.bridge, NET_BRIDGE_MAC_PREFIX | ((uint64_t)n->id & 0xffffff), err);
    if (ret == 0)
        ret = nl_addr_add(n->def.bridge, n->def.gateway, n->def.prefix, err);
    if (ret == 0)
        ret = nl_link_up(n->def.bridge, NULL, err);
    if (ret == 0 && n->def.nat)
        ret = nat_apply(n, err);
    return ret;
}

static void remove_files(struct network *n)
{
    static const char *const files[] = {"dnsmasq.conf", "dnsmasq.pid", "leases",
                                        "dnsmasq.log",  "nat.nft",     "nft.log"};
    char path[256];
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", n->dir, files[i]);
        unlink(path);
    }
    rmdir(n->dir);
}

static void net_free(struct network *n)
{
    for (struct network **p = &n->d->net->list; *p; p = &(*p)->next)
        if (*p == n) {
            *p = n->next;
            break;
        }
    dnsmasq_release(n);
    free(n);
}

/* Bridge and NAT rules gone; the dnsmasq is stopped, and once it has ended the files and the
 * row go (net_dnsmasq_ended). */
static void teardown(struct network *n)
{
    struct wisp_err err = {0};
    if (nl_link_del(n->def.bridge, &err) < 0)
        fprintf(stderr, "wispd: network %s: %s\n", n->def.name, err.msg);
    if (n->def.nat)
        nat_remove(n);
    dnsmasq_stop(n);
}

static void finish_remove(struct network *n)
{
    struct wisp_err err = {0};
    remove_files(n);
    if (registry_net_remove(n->d->reg, n->id, &err) < 0)
        fprintf(stderr, "wispd: %s\n", err.msg);
    if (n->waiter)
        api_reply_empty(n->waiter);
    n->waiter = NULL;
    net_free(n);
}

void net_dnsmasq_ready(struct network *n)
{
    if (n->waiter && !n->removing)
        api_reply_json(n->waiter, 201, net_to_json(n));
    n->waiter = NULL;
}

void net_dnsmasq_ended(struct network *n, bool during_start)
{
    if (n->removing) {
        finish_remove(n);
        return;
    }
    /* A create whose dnsmasq did not come up: undone, and the reason is the answer. */
    struct api_request *req = n->waiter;
    n->waiter = NULL;
    api_reply_error(req, 500, "network %s: dnsmasq %s (log: %s/dnsmasq.log)", n->def.name,
                    n->last_exit, n->dir);
    n->removing = true;
    teardown(n);
    finish_remove(n);
}

static struct network *net_new(struct wispd *d, int64_t id, const struct netdef *def)
{
    struct network *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->d = d;
    n->id = id;
    n->def = *def;
    n->pidfd = -1;
    snprintf(n->dir, sizeof(n->dir), "%s/net/%s", d->state_dir, def->name);
    n->next = d->net->list;
    d->net->list = n;
    return n;
}

struct overlap_check {
    const struct netdef *def;
    struct wisp_err *err;
};

static int check_prefix(const struct nl_prefix *p, void *opaque)
{
    struct overlap_check *c = opaque;
    char a[16], s[16];
    if (p->prefix == 0) /* a default route: every subnet is under it */
        return 0;
    if (!net_overlap(p->addr, p->prefix, c->def->subnet, c->def->prefix))
        return 0;
    net_format_ipv4(p->addr, a);
    net_format_ipv4(c->def->subnet, s);
    return wisp_err_set(c->err, EADDRINUSE,
                        "network %s: subnet %s/%u overlaps the host's %s %s/%u%s%s (table %u): "
                        "choose a subnet the host does not use",
                        c->def->name, s, c->def->prefix, p->kind, a, p->prefix,
                        p->dev[0] ? " dev " : "", p->dev, p->table);
}

static int check_overlaps(struct wispd *d, const struct netdef *def, struct wisp_err *err)
{
    char a[16];
    for (struct network *n = d->net->list; n; n = n->next)
        if (net_overlap(n->def.subnet, n->def.prefix, def->subnet, def->prefix)) {
            net_format_ipv4(n->def.subnet, a);
            return wisp_err_set(err, EADDRINUSE, "network %s: subnet overlaps network '%s' (%s/%u)",
                                def->name, n->def.name, a, n->def.prefix);
        }
    if (nl_link_index(def->bridge))
        return wisp_err_set(err, EEXIST,
                            "network %s: an interface named '%s' (its bridge) exists already",
                            def->name, def->bridge);
    struct overlap_check c = {def, err};
    return nl_for_each_prefix(check_prefix, &c, err);
}

static unsigned status_of(int e)
{
    return e == EINVAL ? 400 : e == EEXIST || e == EADDRINUSE || e == EBUSY ? 409 : 500;
}

static void h_create(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    struct wisp_err err = {0};
    size_t len;
    const char *body = api_request_body(req, &len);
    json_t *j = NULL;
    struct netdef def;
    int ret = api_json_parse_object(body, len, "network", &j, &err);
    if (ret == 0)
        ret = netdef_check(j, &def, &err);
    json_decref(j);
    if (ret == 0 && net_find(d, def.name))
        ret = wisp_err_set(&err, EEXIST, "a network named '%s' exists", def.name);
    if (ret == 0)
        ret = check_overlaps(d, &def, &err);
    if (ret < 0) {
        api_reply_error(req, status_of(err.errnum), "%s", err.msg);
        return;
    }
    json_t *stored = netdef_to_json(&def);
    cleanup_free char *text = json_dumps(stored, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(stored);
    int64_t id;
    struct network *n = NULL;
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/net", d->state_dir);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        ret = wisp_err_sys(&err, errno, "%s", dir);
    if (ret == 0)
        ret = registry_net_define(d->reg, def.name, text, &id, &err);
    if (ret == 0 && !(n = net_new(d, id, &def))) {
        registry_net_remove(d->reg, id, NULL);
        ret = wisp_err_set(&err, ENOMEM, "out of memory");
    }
    /* 0755: dnsmasq, which drops to user nobody, reads nothing after its start, but its pid
     * file is chowned to it */
    if (ret == 0 && mkdir(n->dir, 0755) < 0 && errno != EEXIST)
        ret = wisp_err_sys(&err, errno, "%s", n->dir);
    if (ret == 0)
        ret = net_apply(n, &err);
    if (ret == 0)
        ret = dnsmasq_start(n, &err);
    if (ret < 0) {
        api_reply_error(req, status_of(err.errnum), "%s", err.msg);
        if (n) {
            n->removing = true;
            teardown(n);
            if (n->pidfd < 0)
                finish_remove(n);
        }
        return;
    }
    api_request_suspend(req); /* answered once dnsmasq is up (net_dnsmasq_ready) */
    n->waiter = req;
}

static void h_list(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    json_t *a = json_array();
    for (struct network *n = d->net->list; n; n = n->next)
        json_array_insert_new(a, 0, net_to_json(n)); /* the list is newest first */
    api_reply_json(req, 200, a);
}

static struct network *find_or_404(struct wispd *d, struct api_request *req)
{
    const char *name = api_request_param(req, "name");
    struct network *n = net_find(d, name);
    if (!n || n->removing) {
        api_reply_error(req, 404, "no network named '%s'", name);
        return NULL;
    }
    return n;
}

static void h_show(struct api_request *req, void *opaque)
{
    struct network *n = find_or_404(opaque, req);
    if (n)
        api_reply_json(req, 200, net_to_json(n));
}

static void h_remove(struct api_request *req, void *opaque)
{
    struct network *n = find_or_404(opaque, req);
    if (!n)
        return;
    const char *path = api_request_path(req);
    bool force = strlen(path) > 6 && !strcmp(path + strlen(path) - 6, "/force");
    json_t *vms = vms_on(n);
    size_t nr = json_array_size(vms);
    if (nr && !force) {
        char names[200] = "";
        size_t i;
        json_t *v;
        json_array_foreach(vms, i, v)
        {
            size_t used = strlen(names);
            if (i == 5) {
                snprintf(names + used, sizeof(names) - used, ", ...");
                break;
            }
            snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                     json_string_value(v));
        }
        json_decref(vms);
        api_reply_error(req, 409,
                        "network %s is in use by %zu VM%s (%s): remove them, or net rm "
                        "--force",
                        n->def.name, nr, nr == 1 ? "" : "s", names);
        return;
    }
    json_decref(vms);
    if (n->waiter) {
        api_reply_error(req, 409, "network %s: a create is under way", n->def.name);
        return;
    }
    struct wisp_err err = {0};
    if (registry_net_set_remove_pending(n->d->reg, n->id, &err) < 0) {
        api_reply_error(req, 500, "%s", err.msg);
        return;
    }
    n->removing = true;
    teardown(n);
    if (n->pidfd < 0) {
        n->waiter = NULL;
        finish_remove(n);
        api_reply_empty(req);
        return;
    }
    api_request_suspend(req); /* answered once its dnsmasq has ended */
    n->waiter = req;
}

static const struct api_route routes[] = {
    {"GET", "/v1/networks", h_list},
    {"POST", "/v1/networks", h_create},
    {"GET", "/v1/networks/{name}", h_show},
    {"DELETE", "/v1/networks/{name}", h_remove},
    {"DELETE", "/v1/networks/{name}/force", h_remove},
};

int net_add_routes(struct wispd *d, struct wisp_err *err)
{
    return api_server_add_routes(d->server, routes, ARRAY_SIZE(routes), d, err);
}

/* One row at start-up: an rm under way is finished; otherwise the bridge, address and NAT
 * rules are made again where missing, and the dnsmasq reattached or started. */
static int recover_row(const struct registry_net_row *row, void *opaque)
{
    struct wispd *d = opaque;
    struct wisp_err err = {0};
    struct netdef def;
    json_t *j = json_loads(row->definition, 0, NULL);
    int ret = j ? netdef_check(j, &def, &err) : -EINVAL;
    json_decref(j);
    struct network *n = ret == 0 ? net_new(d, row->id, &def) : NULL;
    if (!n) {
        fprintf(stderr, "wispd: network %s: the definition does not load: skipped\n", row->name);
        return 0;
    }
    bool attached = row->dnsmasq_pid > 0 &&
                    dnsmasq_reattach(n, (int)row->dnsmasq_pid, row->dnsmasq_starttime) == 0;
    if (row->remove_pending) {
        n->removing = true;
        teardown(n);
        if (!attached)
            finish_remove(n);
        return 0;
    }
    mkdir(n->dir, 0755);
    if (net_apply(n, &err) < 0)
        fprintf(stderr, "wispd: network %s: %s\n", n->def.name, err.msg);
    if (!attached && dnsmasq_start(n, &err) < 0)
        fprintf(stderr, "wispd: network %s: %s\n", n->def.name, err.msg);
    return 0;
}

int net_init(struct wispd *d, struct wisp_err *err)
{
    d->net = calloc(1, sizeof(*d->net));
    if (!d->net)
        return wisp_err_set(err, ENOMEM, "out of memory");
    return registry_net_for_each(d->reg, recover_row, d, err);
}
