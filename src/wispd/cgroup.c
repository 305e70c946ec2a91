/* A cgroup per VM (docs/wispd.md, "cgroups"). v2 when the unified hierarchy has the
 * controllers, v1 otherwise: under wispd's own cgroup of each hierarchy, a parent made once at
 * start-up ("wisp", or "wisp-HASH" for another state directory than /var/lib/wisp, so that two
 * wispds do not share one), then one directory vm-ID per VM. A VM's cgroup costs a fixed number of
 * mkdir, writes and rmdir, whatever the number of VMs. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/evloop.h"
#include "placement.h"
#include "wispd.h"

/* The controllers wispd uses, bit i of the masks. */
static const char *const cgroup_names[CGROUP_V1_MAX] = {"cpu", "cpuacct", "cpuset", "memory",
                                                        "pids"};
enum { C_CPU = 1, C_CPUACCT = 2, C_CPUSET = 4, C_MEMORY = 8, C_PIDS = 16 };

static int write_str(const char *dir, const char *file, const char *value, struct wisp_err *err)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return wisp_err_sys(err, errno, "cgroup: %s", path);
    ssize_t n = write(fd, value, strlen(value));
    int e = errno;
    close(fd);
    if (n != (ssize_t)strlen(value))
        return wisp_err_sys(err, n < 0 ? e : EIO, "cgroup: writing '%s' to %s", value, path);
    return 0;
}

static int read_str(const char *dir, const char *file, char *buf, size_t size)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -EIO;
    while (n > 0 && buf[n - 1] == '\n')
        n--;
    buf[n] = '\0';
    return (int)n;
}

/* The controllers of a v1 mount's options ("rw,nosuid,cpu,cpuacct"). */
static unsigned v1_mask(const char *opts)
{
    unsigned mask = 0;
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", opts);
    char *save = NULL;
    for (char *o = strtok_r(buf, ",", &save); o; o = strtok_r(NULL, ",", &save))
        for (int i = 0; i < CGROUP_V1_MAX; i++)
            if (!strcmp(o, cgroup_names[i]))
                mask |= 1u << i;
    return mask;
}

/* wispd's own cgroup in the hierarchy of `mask` (v1) or the unified one (mask 0), from
 * /proc/self/cgroup ("4:memory:/a/b", "0::/"). */
static int own_path(unsigned mask, char *out, size_t size)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return -errno;
    char line[PATH_MAX + 128];
    int r = -ENOENT;
    while (r < 0 && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0'; /* line: the hierarchy's number, c1 + 1: its controllers */
        if ((mask == 0 && c1[1] == '\0' && !strcmp(line, "0")) ||
            (mask && (v1_mask(c1 + 1) & mask))) {
            snprintf(out, size, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
            r = 0;
        }
    }
    fclose(f);
    return r;
}

/* cpuset's cgroups start empty: the parent gets its own parent's CPUs and nodes, and
 * clone_children gives them to every VM's cgroup at its mkdir. */
static int cpuset_parent(const char *own, const char *dir, struct wisp_err *err)
{
    char value[4096];
    static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
    for (int i = 0; i < 2; i++)
        if (read_str(own, files[i], value, sizeof(value)) > 0 &&
            write_str(dir, files[i], value, err) < 0)
            return -EIO;
    return write_str(dir, "cgroup.clone_children", "1", err);
}

static int mkdir_parent(const struct wispd_place *p, char *dir, const char *mount, const char *own,
                        struct wisp_err *err)
{
    if (snprintf(dir, PATH_MAX, "%s%s/%s", mount, own, p->cg_name) >= PATH_MAX)
        return wisp_err_set(err, ENAMETOOLONG, "cgroup: %s%s: too long", mount, own);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "cgroup: mkdir %s", dir);
    return 0;
}

static int init_v1(struct wispd_place *p, struct wisp_err *err)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return wisp_err_sys(err, errno, "/proc/self/mountinfo");
    char line[4096];
    unsigned n = 0;
    while (fgets(line, sizeof(line), f) && n < CGROUP_V1_MAX) {
        char point[PATH_MAX], opts[512];
        const char *sep = strstr(line, " - cgroup ");
        if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1 ||
            sscanf(sep + 10, "%*s %511s", opts) != 1)
            continue;
        unsigned mask = v1_mask(opts) & ~p->cg_have;
        char own[PATH_MAX];
        if (!mask || own_path(mask, own, sizeof(own)) < 0)
            continue;
        char mount_own[2 * PATH_MAX + 8];
        snprintf(mount_own, sizeof(mount_own), "%s%s", point, own);
        if (mkdir_parent(p, p->cg_dirs[n], point, own, err) < 0 ||
            ((mask & C_CPUSET) && cpuset_parent(mount_own, p->cg_dirs[n], err) < 0)) {
            fclose(f);
            return -EIO;
        }
        p->cg_mask[n++] = mask;
        p->cg_have |= mask;
    }
    fclose(f);
    return 0;
}

/* Where cgroup2 is mounted, and its controllers. */
static int v2_mount(char *point, size_t size, unsigned *mask)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    char line[4096];
    int r = -ENOENT;
    while (r < 0 && fgets(line, sizeof(line), f))
        if (strstr(line, " - cgroup2 ") && sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1)
            r = 0;
    fclose(f);
    char ctl[512];
    *mask = 0;
    if (r == 0 && read_str(point, "cgroup.controllers", ctl, sizeof(ctl)) >= 0)
        for (char *save = NULL, *c = strtok_r(ctl, " ", &save); c; c = strtok_r(NULL, " ", &save))
            for (int i = 0; i < CGROUP_V1_MAX; i++)
                if (!strcmp(c, cgroup_names[i]))
                    *mask |= 1u << i;
    (void)size;
    return r;
}

/* v2's rule of no processes in a cgroup whose children have controllers: below wispd's own
 * cgroup (not the root), wispd moves itself into a leaf "wispd" and the VMs go under "wisp". */
static int enable_controllers(const char *dir, unsigned mask, struct wisp_err *err)
{
    char ctl[128] = "";
    for (int i = 0; i < CGROUP_V1_MAX; i++)
        if ((mask & (1u << i)) && i != 1) /* cpuacct is part of cpu in v2 */
            snprintf(ctl + strlen(ctl), sizeof(ctl) - strlen(ctl), "%s+%s", ctl[0] ? " " : "",
                     cgroup_names[i]);
    return ctl[0] ? write_str(dir, "cgroup.subtree_control", ctl, err) : 0;
}

static int init_v2(struct wispd_place *p, struct wisp_err *err)
{
    char point[PATH_MAX], own[PATH_MAX], base[2 * PATH_MAX + 8];
    unsigned mask;
    if (v2_mount(point, sizeof(point), &mask) < 0 || own_path(0, own, sizeof(own)) < 0)
        return wisp_err_set(err, ENOENT, "cgroups v2: no cgroup2 file system is mounted");
    mask &= C_CPU | C_CPUSET | C_MEMORY | C_PIDS;
    snprintf(base, sizeof(base), "%s%s", point, own);
    if (own[0]) {
        char leaf[2 * PATH_MAX + 16];
        snprintf(leaf, sizeof(leaf), "%s/wispd", base);
        if ((mkdir(leaf, 0755) < 0 && errno != EEXIST) ||
            write_str(leaf, "cgroup.procs", "0", err) < 0)
            return wisp_err_sys(err, errno, "cgroups v2: moving wispd into %s", leaf);
    }
    if (enable_controllers(base, mask, err) < 0 ||
        mkdir_parent(p, p->cg_dirs[0], point, own, err) < 0 ||
        enable_controllers(p->cg_dirs[0], mask, err) < 0)
        return -EIO;
    p->cg_mask[0] = mask | (mask & C_CPU ? C_CPUACCT : 0);
    p->cg_have = p->cg_mask[0];
    return 0;
}

/* Moving a process into a cgroup takes the kernel's cgroup_threadgroup_rwsem for writing, a
 * per-CPU rwsem whose writer waits for an RCU grace period unless a writer came within the last
 * one: 5-20 ms a VM here (nested virtualization makes grace periods slow), the largest part of a
 * sequential start. The cgroup mount option favordynmods keeps that rwsem in its slow mode for
 * good (forks and exits then take it with an atomic instead of a per-CPU count: the kernel's
 * documented trade-off for hosts that move tasks often), which takes the move to ~0.4 ms. It is
 * global: any hierarchy mounted with it turns it on for all. wispd makes a named v1 hierarchy
 * with it as a detached mount (fsopen/fsmount: in no directory, seen by nobody) and holds its
 * fd: when wispd ends, even by kill -9, the fd closes, the empty hierarchy is destroyed and the
 * kernel leaves the mode again. Not done when a mounted hierarchy already has it. */
static void favor_dynmods(struct wispd_place *p)
{
    p->dynmods_fd = -1;
    p->dynmods = "off (--no-favor-dynmods)";
    if (p->no_dynmods)
        return;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4096];
    bool have = false;
    while (f && !have && fgets(line, sizeof(line), f)) {
        const char *sep = strstr(line, " - cgroup");
        have = sep && strstr(sep, "favordynmods");
    }
    if (f)
        fclose(f);
    if (have) {
        p->dynmods = "on (a mounted hierarchy has favordynmods)";
        return;
    }
    int fs = fsopen("cgroup", FSOPEN_CLOEXEC);
    int m = -1;
    if (fs >= 0 && fsconfig(fs, FSCONFIG_SET_FLAG, "none", NULL, 0) == 0 &&
        fsconfig(fs, FSCONFIG_SET_STRING, "name", "wisp-dynmods", 0) == 0 &&
        fsconfig(fs, FSCONFIG_SET_FLAG, "favordynmods", NULL, 0) == 0 &&
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        m = fsmount(fs, FSMOUNT_CLOEXEC, 0);
    int e = errno;
    if (fs >= 0)
        close(fs);
    if (m < 0) {
        fprintf(stderr,
                "wispd: cgroups: favordynmods not available (%s): each VM's move into its "
                "cgroups waits for an RCU grace period\n",
                strerror(e));
        p->dynmods = "off (the kernel refused it)";
        return;
    }
    p->dynmods_fd = m;
    p->dynmods = "on (held by wispd)";
}

int cgroups_init(struct wispd_place *p, const char *mode, struct wisp_err *err)
{
    char point[PATH_MAX];
    unsigned v2 = 0;
    bool has_v2 = v2_mount(point, sizeof(point), &v2) == 0;
    p->cg_mode = CGROUP_OFF;
    if (!strcmp(mode, "off"))
        return 0;
    bool want_v2 = !strcmp(mode, "v2") ||
                   (!strcmp(mode, "auto") && has_v2 && (v2 & C_MEMORY) && (v2 & C_PIDS));
    if (strcmp(mode, "v1") && strcmp(mode, "v2") && strcmp(mode, "auto"))
        return wisp_err_set(err, EINVAL, "--cgroups '%s': not auto, v1, v2 or off", mode);
    int r = want_v2 ? init_v2(p, err) : init_v1(p, err);
    if (r < 0)
        return r;
    if (!want_v2 && !p->cg_have && strcmp(mode, "auto")) /* asked for v1, none there */
        return wisp_err_set(err, ENOENT, "--cgroups v1: no cgroup v1 controller is mounted");
    p->cg_mode = want_v2 ? CGROUP_V2 : p->cg_have ? CGROUP_V1 : CGROUP_OFF;
    if (p->cg_mode != CGROUP_OFF)
        favor_dynmods(p);
    return 0;
}

static bool remove_dirs(struct wispd_place *p, int64_t id);

void cgroups_fini(struct wispd_place *p)
{
    if (p->dynmods_fd > 0)
        close(p->dynmods_fd);
    p->dynmods_fd = -1;
    for (unsigned i = 0; i < p->nr_busy; i++) /* a last try for the ones still busy */
        remove_dirs(p, p->busy[i].id);
    for (unsigned i = CGROUP_V1_MAX; i-- > 0;)
        if (p->cg_dirs[i][0])
            rmdir(p->cg_dirs[i]); /* only when no VM's cgroup is left in it */
}

/* A VM's directory in parent i. */
static void vm_dir(const struct wispd *d, const struct vm *vm, unsigned i, char *buf, size_t size)
{
    snprintf(buf, size, "%s/vm-%lld", d->place.cg_dirs[i], (long long)vm->id);
}

static unsigned nr_dirs(const struct wispd_place *p)
{
    unsigned n = 0;
    while (n < CGROUP_V1_MAX && p->cg_dirs[n][0])
        n++;
    return n;
}

/* The definition's limits, as files of the mode. */
static int write_limits(struct wispd *d, struct vm *vm, unsigned mask, const char *dir,
                        const char *cpus, const char *mems, struct wisp_err *err)
{
    bool v2 = d->place.cg_mode == CGROUP_V2;
    json_t *l = json_object_get(vm->def, "limits");
    char v[64];
    int r = 0;
    json_int_t mem = json_integer_value(json_object_get(l, "memory_mib"));
    json_int_t pids = json_integer_value(json_object_get(l, "pids"));
    json_int_t pct = json_integer_value(json_object_get(l, "cpu_percent"));
    json_int_t weight = json_integer_value(json_object_get(l, "cpu_weight"));
    if (r == 0 && (mask & C_MEMORY) && mem) {
        snprintf(v, sizeof(v), "%lld", (long long)mem << 20);
        r = write_str(dir, v2 ? "memory.max" : "memory.limit_in_bytes", v, err);
    }
    if (r == 0 && (mask & C_PIDS) && pids) {
        snprintf(v, sizeof(v), "%lld", (long long)pids);
        r = write_str(dir, "pids.max", v, err);
    }
    if (r == 0 && (mask & C_CPU) && pct) { /* a period of 100 ms, the quota pct ms of it */
        snprintf(v, sizeof(v), v2 ? "%lld 100000" : "%lld", (long long)pct * 1000);
        r = v2 ? write_str(dir, "cpu.max", v, err)
               : write_str(dir, "cpu.cfs_period_us", "100000", err) ?: write_str(dir, "cpu.cfs_quota_us", v, err);
    }
    if (r == 0 && (mask & C_CPU) && weight) { /* v2's weight 100 is v1's 1024 shares */
        snprintf(v, sizeof(v), "%lld", v2 ? (long long)weight : (long long)weight * 1024 / 100);
        r = write_str(dir, v2 ? "cpu.weight" : "cpu.shares", v, err);
    }
    if (r == 0 && (mask & C_CPUSET) && cpus)
        r = write_str(dir, "cpuset.cpus", cpus, err);
    if (r == 0 && (mask & C_CPUSET) && mems)
        r = write_str(dir, "cpuset.mems", mems, err);
    return r;
}

int cgroup_vm_create(struct wispd *d, struct vm *vm, const char *cpus, const char *mems,
                     struct wisp_err *err)
{
    struct wispd_place *p = &d->place;
    json_t *l = json_object_get(vm->def, "limits");
    unsigned need =
        (json_object_get(l, "memory_mib") ? C_MEMORY : 0) |
        (json_object_get(l, "pids") ? C_PIDS : 0) |
        (json_object_get(l, "cpu_percent") || json_object_get(l, "cpu_weight") ? C_CPU : 0) |
        (cpus || mems ? C_CPUSET : 0);
    if (p->cg_mode == CGROUP_OFF || (need & ~p->cg_have)) {
        if (!need)
            return 0;
        return wisp_err_set(err, ENOTSUP,
                            "%s: its limits or placement need the %s controller, which this host "
                            "does not give wispd (cgroups %s)",
                            vm->name, cgroup_names[__builtin_ctz(need & ~p->cg_have)],
                            p->cg_mode == CGROUP_V2 ? "v2"
                            : p->cg_mode            ? "v1"
                                                    : "off");
    }
    char dir[PATH_MAX + 32];
    for (unsigned i = 0; i < nr_dirs(p); i++) {
        vm_dir(d, vm, i, dir, sizeof(dir));
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            int r = wisp_err_sys(err, errno, "cgroup: mkdir %s", dir);
            cgroup_vm_remove(d, vm);
            return r;
        }
        if (write_limits(d, vm, p->cg_mask[i], dir, cpus, mems, err) < 0) {
            cgroup_vm_remove(d, vm);
            return -EIO;
        }
    }
    vm->place.cgroup = true;
    return 0;
}

int cgroup_vm_join(struct wispd *d, struct vm *vm, pid_t pid, struct wisp_err *err)
{
    char dir[PATH_MAX + 32], v[16];
    snprintf(v, sizeof(v), "%d", (int)pid);
    for (unsigned i = 0; vm->place.cgroup && i < nr_dirs(&d->place); i++) {
        vm_dir(d, vm, i, dir, sizeof(dir));
        if (write_str(dir, "cgroup.procs", v, err) < 0)
            return -EIO;
    }
    return 0;
}

/* rmdir of the VM id's cgroups; false if one is still busy. */
static bool remove_dirs(struct wispd_place *p, int64_t id)
{
    char dir[PATH_MAX + 32];
    bool done = true;
    for (unsigned i = 0; i < nr_dirs(p); i++) {
        snprintf(dir, sizeof(dir), "%s/vm-%lld", p->cg_dirs[i], (long long)id);
        if (rmdir(dir) < 0 && errno != ENOENT)
            done = false;
    }
    return done;
}

/* The busy ones again (a cgroup with a process is never removed: a VM started again meanwhile
 * keeps its own). */
static void retry_busy(void *opaque)
{
    struct wispd_place *p = opaque;
    unsigned k = 0;
    for (unsigned i = 0; i < p->nr_busy; i++)
        if (!remove_dirs(p, p->busy[i].id) && ++p->busy[i].tries < 50)
            p->busy[k++] = p->busy[i];
    p->nr_busy = k;
    if (!k)
        evloop_timer_arm(p->busy_timer, 0, 0);
}

void cgroup_vm_remove(struct wispd *d, struct vm *vm)
{
    struct wispd_place *p = &d->place;
    vm->place.cgroup = false;
    if (remove_dirs(p, vm->id) || p->nr_busy == ARRAY_SIZE(p->busy))
        return;
    for (unsigned i = 0; i < p->nr_busy; i++)
        if (p->busy[i].id == vm->id)
            return;
    if (!p->busy_timer && evloop_add_timer(d->loop, retry_busy, p, &p->busy_timer, NULL) < 0)
        return;
    p->busy[p->nr_busy].id = vm->id;
    p->busy[p->nr_busy++].tries = 0;
    evloop_timer_arm(p->busy_timer, 100000000, 100000000);
}

int cgroup_vm_dir(const struct wispd *d, const struct vm *vm, const char *file, char *buf,
                  size_t size)
{
    size_t len = strcspn(file, ".");
    for (unsigned i = 0; i < nr_dirs(&d->place); i++)
        for (int c = 0; c < CGROUP_V1_MAX; c++)
            if ((d->place.cg_mask[i] & (1u << c)) && strlen(cgroup_names[c]) == len &&
                !strncmp(file, cgroup_names[c], len)) {
                vm_dir(d, vm, i, buf, size);
                return 0;
            }
    if (d->place.cg_mode == CGROUP_V2 || (nr_dirs(&d->place) && !strncmp(file, "cgroup.", 7))) {
        vm_dir(d, vm, 0, buf, size);
        return 0;
    }
    return -ENOENT;
}

int cgroup_vm_signal(const struct wispd *d, const struct vm *vm, int sig, pid_t except)
{
    char dir[PATH_MAX + 32], procs[4096];
    if (cgroup_vm_dir(d, vm, "cgroup.procs", dir, sizeof(dir)) < 0 ||
        read_str(dir, "cgroup.procs", procs, sizeof(procs)) < 0)
        return 0;
    int n = 0;
    for (char *save = NULL, *s = strtok_r(procs, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        int pid = atoi(s);
        if (pid > 0 && pid != except && kill(pid, sig) == 0)
            n++;
    }
    return n;
}
