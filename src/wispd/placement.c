/* A VM's placement and isolation at its start (docs/wispd.md, "Placement and isolation"): the
 * definition's "placement", "limits" and "jail" checked, its cgroup (cgroup.c) and NUMA node
 * (numa.c), CPU affinity and memory policy set in the spawned child, and the command line that
 * runs wisp-vmm, jailed unless the VM or wispd opts out: by libwisp_jail in the spawned child
 * (the default; no process stays outside the VM) or by an external wisp-jailer (--jailer). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <numaif.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api/json.h"
#include "common/cleanup.h"
#include "common/cpulist.h"
#include "jail/jail.h"
#include "placement.h"
#include "wispd.h"

#define JAIL_EXEC_NAME "wisp-vmm" /* the jail's <exec-name>: the VMM's file name */
#define MAX_ARGS       96

static int check_list(const char *where, const char *s, cpu_set_t *out, const cpu_set_t *within,
                      struct wisp_err *err)
{
    if (cpulist_parse(s, (size_t)-1, out) < 0)
        return wisp_err_set(err, EINVAL, "definition: %s: '%s' is not a CPU list (0-3,8)", where,
                            s);
    cpu_set_t both;
    if (within) {
        CPU_AND(&both, out, within);
        if (!CPU_EQUAL(&both, out))
            return wisp_err_set(err, EINVAL, "definition: %s: '%s' is not within placement.cpus",
                                where, s);
    }
    return 0;
}

static int check_placement(json_t *pl, unsigned vcpus, struct wisp_err *err)
{
    const char *cpus = NULL, *vmm_cpus = NULL, *numa = NULL;
    json_t *vcpu_cpus = NULL;
    const struct api_json_field fields[] = {
        {.name = "cpus", .type = API_JSON_STRING, .out = &cpus},
        {.name = "vcpu_cpus", .type = API_JSON_ARRAY, .out = &vcpu_cpus},
        {.name = "vmm_cpus", .type = API_JSON_STRING, .out = &vmm_cpus},
        {.name = "numa", .type = API_JSON_STRING, .out = &numa},
    };
    int r = api_json_read(pl, "definition: placement", fields, ARRAY_SIZE(fields), err);
    cpu_set_t all, one;
    if (r == 0 && cpus)
        r = check_list("placement.cpus", cpus, &all, NULL, err);
    if (r == 0 && vmm_cpus)
        r = check_list("placement.vmm_cpus", vmm_cpus, &one, cpus ? &all : NULL, err);
    if (r == 0 && vcpu_cpus &&
        (json_array_size(vcpu_cpus) == 0 || json_array_size(vcpu_cpus) > vcpus))
        r = wisp_err_set(err, EINVAL,
                         "definition: placement.vcpu_cpus: %zu lists for %u vCPUs (1 to vcpus: "
                         "the last list is for the vCPUs after it)",
                         json_array_size(vcpu_cpus), vcpus);
    size_t i;
    json_t *item;
    json_array_foreach(vcpu_cpus, i, item)
    {
        char where[48];
        snprintf(where, sizeof(where), "placement.vcpu_cpus[%zu]", i);
        if (r == 0 && !json_is_string(item))
            r = wisp_err_set(err, EINVAL, "definition: %s: expected a string, not %s", where,
                             api_json_type_name(item));
        if (r == 0)
            r = check_list(where, json_string_value(item), &one, cpus ? &all : NULL, err);
    }
    char *end = NULL;
    if (r == 0 && numa && strcmp(numa, "auto") && strcmp(numa, "off") &&
        (strtol(numa, &end, 10) < 0 || !numa[0] || *end ||
         strtol(numa, NULL, 10) >= NUMA_MAX_NODES))
        r = wisp_err_set(err, EINVAL,
                         "definition: placement.numa: '%s' is not auto, off or a node number",
                         numa);
    return r;
}

int placement_check(json_t *def, struct wisp_err *err)
{
    unsigned vcpus = (unsigned)json_integer_value(json_object_get(def, "vcpus"));
    uint64_t mem = (uint64_t)json_integer_value(json_object_get(def, "memory_mib"));
    json_t *pl = json_object_get(def, "placement"), *l = json_object_get(def, "limits"),
           *jail = json_object_get(def, "jail");
    if (pl && check_placement(pl, vcpus ? vcpus : 1, err) < 0)
        return -EINVAL;
    if (jail && !json_is_boolean(jail))
        return wisp_err_set(err, EINVAL, "definition: jail: expected true or false, not %s",
                            api_json_type_name(jail));
    if (!l)
        return 0;
    uint64_t lmem = 0, pids = 0, pct = 0, weight = 0;
    const struct api_json_field fields[] = {
        {.name = "memory_mib", .type = API_JSON_UINT, .out = &lmem, .max = 1ull << 40},
        {.name = "pids", .type = API_JSON_UINT, .out = &pids, .max = 1u << 22},
        {.name = "cpu_percent", .type = API_JSON_UINT, .out = &pct, .max = 100 * 1024},
        {.name = "cpu_weight", .type = API_JSON_UINT, .out = &weight, .max = 10000},
    };
    int r = api_json_read(l, "definition: limits", fields, ARRAY_SIZE(fields), err);
    if (r == 0 && json_object_get(l, "memory_mib") && lmem < mem)
        r = wisp_err_set(err, EINVAL,
                         "definition: limits.memory_mib: %llu is below memory_mib %llu (the "
                         "guest's RAM and the VMM's few MiB must fit)",
                         (unsigned long long)lmem, (unsigned long long)mem);
    else if (r == 0 && json_object_get(l, "pids") && pids < 8)
        r = wisp_err_set(err, EINVAL,
                         "definition: limits.pids: at least 8 (the jailer, wisp-vmm and its "
                         "threads)");
    else if (r == 0 && ((json_object_get(l, "cpu_percent") && !pct) ||
                        (json_object_get(l, "cpu_weight") && !weight)))
        r = wisp_err_set(err, EINVAL, "definition: limits: cpu_percent and cpu_weight start at 1");
    return r;
}

int placement_init(struct wispd *d, const char *cgroups, bool jail, const char *jailer,
                   uint32_t uid, uint32_t gid, struct wisp_err *err)
{
    struct wispd_place *p = &d->place;
    unsigned h = 5381;
    for (const char *c = d->state_dir; *c; c++)
        h = h * 33 + (unsigned char)*c;
    if (!strcmp(d->state_dir, "/var/lib/wisp"))
        snprintf(p->cg_name, sizeof(p->cg_name), "wisp");
    else
        snprintf(p->cg_name, sizeof(p->cg_name), "wisp-%08x", h);
    int r = cgroups_init(p, cgroups, err);
    if (r < 0)
        return r;
    if (p->cg_mode == CGROUP_OFF)
        fprintf(stderr, "wispd: cgroups: off%s\n",
                strcmp(cgroups, "off") ? " (no hierarchy with controllers is mounted)" : "");
    else
        fprintf(stderr, "wispd: cgroups: %s, VMs under %s%s\n",
                p->cg_mode == CGROUP_V2 ? "v2" : "v1", p->cg_dirs[0],
                p->cg_mode == CGROUP_V1 ? " and the other controllers' (GET /v1/limits)" : "");
    r = numa_topology_host(&p->numa, err);
    if (r < 0)
        return r;
    if (p->numa.nr_nodes == 1)
        fprintf(stderr, "wispd: NUMA: one node: placement on a node is a no-op here\n");
    else
        fprintf(stderr, "wispd: NUMA: %u nodes: each VM on one (placement.numa \"auto\")\n",
                p->numa.nr_nodes);
    p->jail = jail;
    p->jail_uid = uid;
    p->jail_gid = gid;
    p->jailer = jailer ? strdup(jailer) : NULL;
    snprintf(p->jail_base, sizeof(p->jail_base), "%s/jail", d->state_dir);
    if (jail && geteuid() != 0)
        return wisp_err_set(err, EPERM, "jails need root; run wispd as root or with --no-jail");
    if (jail && p->jailer && access(p->jailer, X_OK) < 0)
        return wisp_err_sys(err, errno, "--jailer %s (or --no-jail)", p->jailer);
    return 0;
}

static bool vm_jailed(const struct wispd *d, const struct vm *vm)
{
    json_t *j = json_object_get(vm->def, "jail");
    return d->place.jail && (!j || json_is_true(j));
}

/* The jail's root on the host: <state>/jail/wisp-vmm/vm-ID/root. */
static void jail_root(const struct wispd *d, const struct vm *vm, char *buf, size_t size)
{
    snprintf(buf, size, "%s/" JAIL_EXEC_NAME "/vm-%lld/root", d->place.jail_base,
             (long long)vm->id);
}

const char *placement_path(const struct vm *vm, const char *what, const char *id, const char *host,
                           char *buf, size_t size)
{
    if (!vm->place.jailed)
        return host;
    if (id)
        snprintf(buf, size, "/%s-%s", what, id);
    else
        snprintf(buf, size, "/%s", what);
    return buf;
}

int placement_take_file(const struct vm *vm, const char *what, const char *id, const char *host,
                        struct wisp_err *err)
{
    if (!vm->place.jailed)
        return 0;
    char root[PATH_MAX + 64], jp[160], from[PATH_MAX + 256];
    jail_root(vm->d, vm, root, sizeof(root));
    snprintf(from, sizeof(from), "%s%s", root, placement_path(vm, what, id, host, jp, sizeof(jp)));
    if (rename(from, host) == 0)
        return 0;
    if (errno != EXDEV)
        return wisp_err_sys(err, errno, "%s: moving %s out of its jail to %s", vm->name, jp, host);
    int in = open(from, O_RDONLY | O_CLOEXEC), out = -1;
    int r = in < 0 ? -errno : 0;
    if (r == 0 && (out = open(host, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
        r = -errno;
    while (r == 0) { /* across file systems: copied, then removed from the jail */
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n < 0)
            r = -errno;
        if (n <= 0)
            break;
    }
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) < 0 && r == 0)
        r = -errno;
    if (r < 0)
        return wisp_err_sys(err, -r, "%s: copying %s out of its jail to %s", vm->name, jp, host);
    unlink(from);
    return 0;
}

/* argv for the run; strings in a copy each (freed with the array). */
struct argv_builder {
    char **v;
    int n;
};

static void arg(struct argv_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(struct argv_builder *b, const char *fmt, ...)
{
    if (b->n >= MAX_ARGS - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&b->v[b->n], fmt, ap) >= 0)
        b->n++;
    va_end(ap);
}

static void jail_file(struct argv_builder *b, const struct vm *vm, const char *host,
                      const char *what, const char *id)
{
    char jp[160];
    arg(b, "--file");
    arg(b, "%s:%s", host, placement_path(vm, what, id, host, jp, sizeof(jp)));
}

static void build_argv(struct wispd *d, struct vm *vm, struct argv_builder *b)
{
    struct wispd_place *p = &d->place;
    json_t *def = vm->def, *item;
    size_t i;
    if (vm->place.jailed) { /* wisp-jailer's arguments, for it or for jail_parse */
        arg(b, "%s", p->jailer ? p->jailer : "wisp-jailer");
        arg(b, "--id");
        arg(b, "vm-%lld", (long long)vm->id);
        arg(b, "--exec-file");
        arg(b, "%s", d->vmm_path);
        arg(b, "--uid");
        arg(b, "%u", p->jail_uid);
        arg(b, "--gid");
        arg(b, "%u", p->jail_gid);
        arg(b, "--chroot-base-dir");
        arg(b, "%s", p->jail_base);
        arg(b, "--new-pid-ns");
        struct rlimit nofile; /* the jailer's default 2048, or less under a lower hard limit */
        if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_max < 2048) {
            arg(b, "--resource-limit");
            arg(b, "no-file=%llu", (unsigned long long)nofile.rlim_max);
        }
        jail_file(b, vm, json_string_value(json_object_get(def, "kernel")), "kernel", NULL);
        if (json_object_get(def, "initrd"))
            jail_file(b, vm, json_string_value(json_object_get(def, "initrd")), "initrd", NULL);
        json_array_foreach(json_object_get(def, "drives"), i, item)
        {
            const char *id = json_string_value(json_object_get(item, "id"));
            jail_file(b, vm, json_string_value(json_object_get(item, "path")), "drive", id);
            if (json_object_get(item, "backing")) /* its header names "backing-ID" */
                jail_file(b, vm, json_string_value(json_object_get(item, "backing")), "backing",
                          id);
        }
        json_array_foreach(json_object_get(def, "pmem"), i, item)
            jail_file(b, vm, json_string_value(json_object_get(item, "path")), "pmem",
                      json_string_value(json_object_get(item, "id")));
        if (vm->restore_state) { /* a restore or a clone (clone.c) loads these */
            jail_file(b, vm, vm->restore_state, "snapshot", "state");
            jail_file(b, vm, vm->restore_mem, "snapshot", "memory");
        }
        arg(b, "--");
        if (!vm->place.jailer_exec) { /* wisp-jailer would close an inherited fd 3 */
            arg(b, "--api-sock-fd");
            arg(b, "3");
        } else {
            arg(b, "--api-sock");
            arg(b, "/api.sock");
        }
    } else {
        arg(b, "%s", d->vmm_path);
        arg(b, "--api-sock-fd");
        arg(b, "3");
        arg(b, "--id");
        arg(b, "%s", vm->name);
    }
    if (json_is_true(json_object_get(def, "ksm"))) { /* a restore too (it has no machine-config) */
        arg(b, "--ksm");
        arg(b, "on");
    }
    arg(b, "--console-log-max"); /* console.c's bound of the console log */
    arg(b, "%llu", (unsigned long long)d->console_log_max);
    json_t *vc = json_object_get(json_object_get(def, "placement"), "vcpu_cpus");
    if (json_array_size(vc)) {
        char list[4096] = "";
        json_array_foreach(vc, i, item) snprintf(list + strlen(list), sizeof(list) - strlen(list),
                                                 "%s%s", i ? "/" : "", json_string_value(item));
        arg(b, "--vcpu-affinity");
        arg(b, "%s", list);
    }
}

/* The NUMA node (placement.numa: auto, off, N) and the CPU list of the VM's cpuset. */
static int choose_node(struct wispd *d, struct vm *vm, struct wisp_err *err)
{
    struct numa_topology *t = &d->place.numa;
    json_t *pl = json_object_get(vm->def, "placement");
    const char *numa = json_string_value(json_object_get(pl, "numa"));
    const char *cpus = json_string_value(json_object_get(pl, "cpus"));
    unsigned vcpus = (unsigned)json_integer_value(json_object_get(vm->def, "vcpus"));
    uint64_t mib = (uint64_t)json_integer_value(json_object_get(vm->def, "memory_mib"));
    vm->place.numa_idx = -1;
    if ((numa && !strcmp(numa, "off")) || (!numa && t->nr_nodes < 2))
        return 0; /* one node: nothing to choose */
    if (numa && strcmp(numa, "auto")) {
        vm->place.numa_idx = numa_find(t, atoi(numa));
        if (vm->place.numa_idx < 0)
            return wisp_err_set(err, EINVAL, "%s: placement.numa: this host has no node %s",
                                vm->name, numa);
    } else if (t->nr_nodes > 1) {
        cpu_set_t allowed;
        if (cpus)
            cpulist_parse(cpus, (size_t)-1, &allowed);
        vm->place.numa_idx = numa_pick(t, vcpus, mib, cpus ? &allowed : NULL);
        if (vm->place.numa_idx < 0) /* spread over the nodes, as without NUMA placement */
            fprintf(stderr, "wispd: %s: no NUMA node holds %llu MiB and its CPUs: not placed\n",
                    vm->name, (unsigned long long)mib);
    }
    if (vm->place.numa_idx >= 0) {
        vm->place.numa_vcpus = vcpus;
        vm->place.numa_mib = mib;
        numa_account(t, vm->place.numa_idx, vcpus, mib, 1);
        int node = t->nodes[vm->place.numa_idx].id;
        vm->place.nodemask = node < (int)(8 * sizeof(unsigned long)) ? 1ul << node : 0;
    }
    return 0;
}

static void remove_jail(struct wispd *d, struct vm *vm);

static void free_jail(struct vm *vm)
{
    jail_run_free(vm->place.jail, false); /* its tree stays: remove_jail at the VM's end */
    vm->place.jail = NULL;
}

/* Jailed in-process: wisp-jailer's arguments (argv, argc) parsed and checked as the jailer
 * does, the jail's tree made (the child enters it), wisp-vmm's command line in it. */
static int jail_prepare(struct vm *vm, int argc, struct wisp_err *err)
{
    struct wisp_err e = {0};
    vm->place.jail = jail_run_prepare(argc, vm->place.argv, &e);
    /* a start that failed, as when wisp-vmm or wisp-jailer says why (a missing kernel is not a
     * missing VM) */
    if (!vm->place.jail)
        return wisp_err_set(err, e.errnum == ENOMEM ? ENOMEM : EIO, "%s: its jail: %s", vm->name,
                            e.msg);
    return 0;
}

int placement_prepare(struct vm *vm, struct wisp_err *err)
{
    struct wispd *d = vm->d;
    json_t *pl = json_object_get(vm->def, "placement");
    const char *cpus = json_string_value(json_object_get(pl, "cpus"));
    const char *vmm_cpus = json_string_value(json_object_get(pl, "vmm_cpus"));
    vm->place.jailed = vm_jailed(d, vm);
    vm->place.jailer_exec = vm->place.jailed && d->place.jailer;
    vm->place.has_vmm_cpus =
        vmm_cpus && cpulist_parse(vmm_cpus, (size_t)-1, &vm->place.vmm_cpus) == 0;
    if (vm->place.jailed) {
        char root[PATH_MAX + 64];
        remove_jail(d, vm); /* one a killed jailer left: nothing runs in it (the VM is stopped) */
        jail_root(d, vm, root, sizeof(root));
        if (snprintf(vm->api_sock, sizeof(vm->api_sock), "%s/api.sock", root) >=
            (int)sizeof(vm->api_sock))
            return wisp_err_set(err, ENAMETOOLONG,
                                "%s: the jail's API socket %s/api.sock is longer than a socket "
                                "address allows (a shorter --state-dir, or \"jail\": false)",
                                vm->name, root);
    } else {
        snprintf(vm->api_sock, sizeof(vm->api_sock), "%s/run/%lld.sock", d->state_dir,
                 (long long)vm->id);
    }
    int r = choose_node(d, vm, err);
    if (r < 0)
        return r;
    char node_cpus[4096] = "", mems[16] = "";
    if (vm->place.numa_idx >= 0) {
        const struct numa_node_info *n = &d->place.numa.nodes[vm->place.numa_idx];
        cpulist_format(&n->cpus, node_cpus, sizeof(node_cpus));
        snprintf(mems, sizeof(mems), "%d", n->id);
    }
    r = cgroup_vm_create(d, vm,
                         cpus           ? cpus
                         : node_cpus[0] ? node_cpus
                                        : NULL,
                         mems[0] ? mems : NULL, err);
    if (r == 0 && vm->place.numa_idx >= 0 && !vm->place.cgroup)
        fprintf(stderr, "wispd: %s: NUMA node %s by memory policy and affinity only (no cpuset)\n",
                vm->name, mems);
    if (r == 0 && vm->place.numa_idx >= 0 && !vm->place.has_vmm_cpus) {
        vm->place.has_vmm_cpus = true; /* without a cpuset, the node's CPUs by affinity */
        cpulist_parse(cpus ? cpus : node_cpus, (size_t)-1, &vm->place.vmm_cpus);
    }
    vm->place.argv = r == 0 ? calloc(MAX_ARGS, sizeof(char *)) : NULL;
    if (r == 0 && !vm->place.argv)
        r = wisp_err_set(err, ENOMEM, "out of memory");
    if (r < 0) {
        numa_account(&d->place.numa, vm->place.numa_idx, vm->place.numa_vcpus, vm->place.numa_mib,
                     -1);
        vm->place.numa_idx = -1;
        return r;
    }
    struct argv_builder b = {vm->place.argv, 0};
    build_argv(d, vm, &b);
    if (vm->place.jailed && !vm->place.jailer_exec && (r = jail_prepare(vm, b.n, err)) < 0) {
        placement_release(vm);
        return r;
    }
    return 0;
}

pid_t placement_fork(struct vm *vm)
{
    /* jailed: no atfork handler runs, so the child makes system calls only until its exec
     * (another of wispd's threads may hold a lock: jail/enter.c) */
    return vm->place.jail ? jail_clone() : fork();
}

static void __attribute__((noreturn)) child_fail(const char *what)
{
    jail_fail("wispd", what);
    _exit(127);
}

void placement_child(struct vm *vm)
{
    /* wispd's blocked SIGTERM/SIGINT (its signalfd) and ignored SIGPIPE would outlive the
     * exec: the VMM (or a jailer) could not take a SIGTERM */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (vm->place.has_vmm_cpus &&
        sched_setaffinity(0, sizeof(vm->place.vmm_cpus), &vm->place.vmm_cpus) < 0)
        jail_fail("wispd", "placement.vmm_cpus: sched_setaffinity");
    if (vm->place.nodemask &&
        set_mempolicy(MPOL_BIND, &vm->place.nodemask, 8 * sizeof(unsigned long)) < 0)
        jail_fail("wispd", "NUMA: set_mempolicy");
    if (!vm->place.jail) {
        execv(vm->place.argv[0], vm->place.argv);
        child_fail(vm->place.argv[0]);
    }
    /* jailed in-process: what wisp-jailer's child does, without the jailer staying outside
     * (wispd removes the jail at the VM's end), and no parent-death signal: the VM outlives
     * a wispd restart */
    child_fail(jail_run_exec(vm->place.jail, 4)); /* fd 3: the API socket (child_exec) */
}

static void free_argv(struct vm *vm)
{
    for (int i = 0; vm->place.argv && vm->place.argv[i]; i++)
        free(vm->place.argv[i]);
    free(vm->place.argv);
    vm->place.argv = NULL;
}

int placement_join(struct vm *vm, pid_t pid, struct wisp_err *err)
{
    free_argv(vm);
    free_jail(vm);
    return cgroup_vm_join(vm->d, vm, pid, err);
}

/* A jail whose jailer was killed: its tree is removed here (hard links and device nodes; the
 * bind mounts were in the VMM's mount namespace, gone with it). Nothing is followed. */
static void remove_tree(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        DIR *dir = fdopendir(fd);
        struct dirent *e;
        while (dir && (e = readdir(dir)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
                unlinkat(fd, e->d_name, 0) < 0 && errno == EISDIR)
                remove_tree(fd, e->d_name);
        if (dir)
            closedir(dir);
        else
            close(fd);
    }
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

static void remove_jail(struct wispd *d, struct vm *vm)
{
    char dir[PATH_MAX + 16], id[32];
    snprintf(dir, sizeof(dir), "%s/" JAIL_EXEC_NAME, d->place.jail_base);
    snprintf(id, sizeof(id), "vm-%lld", (long long)vm->id);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        remove_tree(fd, id);
        close(fd);
    }
}

void placement_release(struct vm *vm)
{
    struct wispd *d = vm->d;
    free_argv(vm);
    free_jail(vm);
    numa_account(&d->place.numa, vm->place.numa_idx, vm->place.numa_vcpus, vm->place.numa_mib, -1);
    vm->place.numa_idx = -1;
    if (vm->place.jailed)
        remove_jail(d, vm);
    /* The VM's process has ended: what is left in its cgroups is a VMM whose jailer was
     * killed. It gets SIGKILL; if it has not gone by the rmdir, the next start reuses the
     * cgroup and rm or the next wispd removes it. */
    if (vm->place.cgroup)
        cgroup_vm_signal(d, vm, SIGKILL, 0);
    cgroup_vm_remove(d, vm);
}

void placement_kill(struct vm *vm)
{
    /* an external jailer stays to reap the VMM and remove the jail; without cgroups, its
     * whole process group (the jailer and the VMM: placement_release removes the jail then).
     * Jailed in-process, the VMM is the pid 1 of its namespace: its end ends the rest. */
    if (vm->place.jailer_exec && vm->place.cgroup &&
        cgroup_vm_signal(vm->d, vm, SIGKILL, vm->pid) > 0)
        return;
    if (vm->place.jailer_exec && vm->pid > 0 && kill(-vm->pid, SIGKILL) == 0)
        return;
    pidfd_send_signal(vm->pidfd, SIGKILL, NULL, 0);
}

void placement_reattach(struct vm *vm)
{
    struct wispd *d = vm->d;
    size_t n = strlen(d->place.jail_base);
    vm->place.jailed = !strncmp(vm->api_sock, d->place.jail_base, n) && vm->api_sock[n] == '/';
    char comm[64] = "", comm_path[64];
    snprintf(comm_path, sizeof(comm_path), "/proc/%d/comm", (int)vm->pid);
    FILE *c = vm->place.jailed ? fopen(comm_path, "re") : NULL;
    if (c && !fgets(comm, sizeof(comm), c))
        comm[0] = '\0';
    if (c)
        fclose(c);
    vm->place.jailer_exec = !strcmp(comm, "wisp-jailer\n"); /* started by a --jailer wispd */
    char dir[PATH_MAX + 32];
    vm->place.cgroup =
        cgroup_vm_dir(d, vm, "cgroup.procs", dir, sizeof(dir)) == 0 && access(dir, F_OK) == 0;
    vm->place.numa_idx = -1;
    if (d->place.numa.nr_nodes > 1 && vm->place.cgroup &&
        cgroup_vm_dir(d, vm, "cpuset.mems", dir, sizeof(dir)) == 0) {
        char path[PATH_MAX + 64], mems[32] = "";
        snprintf(path, sizeof(path), "%s/cpuset.mems", dir);
        FILE *f = fopen(path, "re");
        if (f && fgets(mems, sizeof(mems), f) && !strchr(mems, ',') && !strchr(mems, '-')) {
            vm->place.numa_idx = numa_find(&d->place.numa, atoi(mems));
            vm->place.numa_vcpus = (unsigned)json_integer_value(json_object_get(vm->def, "vcpus"));
            vm->place.numa_mib =
                (uint64_t)json_integer_value(json_object_get(vm->def, "memory_mib"));
            numa_account(&d->place.numa, vm->place.numa_idx, vm->place.numa_vcpus,
                         vm->place.numa_mib, 1);
        }
        if (f)
            fclose(f);
    }
}

void placement_json(const struct vm *vm, json_t *j)
{
    const struct wispd *d = vm->d;
    json_t *p = json_object();
    json_object_set_new(p, "jailed", json_boolean(vm->pid > 0 && vm->place.jailed));
    json_object_set_new(p, "jailer",
                        json_string(vm->pid <= 0 || !vm->place.jailed ? ""
                                    : vm->place.jailer_exec           ? "wisp-jailer"
                                                                      : "in-process"));
    json_object_set_new(p, "numa_node",
                        vm->place.numa_idx >= 0
                            ? json_integer(d->place.numa.nodes[vm->place.numa_idx].id)
                            : json_null());
    json_t *cg = json_array();
    for (unsigned i = 0;
         vm->pid > 0 && vm->place.cgroup && i < CGROUP_V1_MAX && d->place.cg_dirs[i][0]; i++)
        json_array_append_new(cg,
                              json_sprintf("%s/vm-%lld", d->place.cg_dirs[i], (long long)vm->id));
    json_object_set_new(p, "cgroups", cg);
    json_object_set_new(j, "placement", p);
}

json_t *placement_host_json(const struct wispd *d)
{
    const struct wispd_place *p = &d->place;
    json_t *nodes = json_array();
    for (unsigned i = 0; i < p->numa.nr_nodes; i++) {
        char cpus[4096];
        cpulist_format(&p->numa.nodes[i].cpus, cpus, sizeof(cpus));
        json_array_append_new(nodes, json_pack("{s:i, s:s, s:I, s:I, s:i}", "node",
                                               p->numa.nodes[i].id, "cpus", cpus, "mem_mib",
                                               (json_int_t)p->numa.nodes[i].mem_mib, "used_mib",
                                               (json_int_t)p->numa.nodes[i].used_mib, "used_vcpus",
                                               (int)p->numa.nodes[i].used_vcpus));
    }
    json_t *dirs = json_array();
    for (unsigned i = 0; i < CGROUP_V1_MAX && p->cg_dirs[i][0]; i++)
        json_array_append_new(dirs, json_string(p->cg_dirs[i]));
    return json_pack("{s:s, s:s, s:o, s:o, s:s, s:b, s:s}", "cgroups",
                     p->cg_mode == CGROUP_V2   ? "v2"
                     : p->cg_mode == CGROUP_V1 ? "v1"
                                               : "off",
                     "favordynmods", p->cg_mode == CGROUP_OFF ? "off (no cgroups)" : p->dynmods,
                     "cgroup_dirs", dirs, "numa_nodes", nodes, "numa",
                     p->numa.nr_nodes > 1 ? "each VM on one node unless placement.numa says"
                                          : "one node: placement on a node is a no-op",
                     "jail", p->jail, "jailer", p->jailer ? p->jailer : "in-process");
}
