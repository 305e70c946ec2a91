/* The VM's cgroups (v1, as on this project's machines): cgroupsPath under each controller the
 * VM's limits need; the VMM and its threads go in. docs/oci.md, "Resources". */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/io.h"
#include "host.h"

#define CG_ROOT "/sys/fs/cgroup"

/* cpu and cpuacct are one hierarchy "cpu,cpuacct" where systemd mounts them (with "cpu" and
 * "cpuacct" symlinks to it), two elsewhere (this project's machines): each name that is a
 * mount of its own is used, a symlink is skipped (it is one of the others). */
static const char *const controllers[] = {"memory",  "cpu,cpuacct", "cpu",
                                          "cpuacct", "pids",        "cpuset"};

static bool mounted(const char *ctrl)
{
    char p[PATH_MAX];
    struct stat st;

    snprintf(p, sizeof(p), CG_ROOT "/%s", ctrl);
    return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The hierarchy with the cpu controller's files (cpu.cfs_quota_us). */
static const char *cpu_hierarchy(void)
{
    return mounted("cpu,cpuacct") ? "cpu,cpuacct" : "cpu";
}

static int cg_write(const char *ctrl, const char *path, const char *file, const char *value,
                    struct wisp_err *err)
{
    char p[2 * PATH_MAX];
    cleanup_close int fd = -1;

    snprintf(p, sizeof(p), CG_ROOT "/%s%s/%s", ctrl, path, file);
    fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || wisp_write_all(fd, value, strlen(value)) < 0)
        return wisp_err_sys(err, errno, "cgroup %s: write '%s'", p, value);
    return 0;
}

static int cg_copy(const char *ctrl, const char *path, const char *file, struct wisp_err *err)
{
    char p[2 * PATH_MAX], parent[PATH_MAX], buf[256];
    cleanup_close int fd = -1;
    ssize_t n;

    snprintf(parent, sizeof(parent), "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash)
        *slash = 0;
    snprintf(p, sizeof(p), CG_ROOT "/%s%s/%s", ctrl, parent, file);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (n = read(fd, buf, sizeof(buf) - 1)) < 0)
        return wisp_err_sys(err, errno, "cgroup %s", p);
    buf[n] = 0;
    if (n == 0 || buf[0] == '\n')
        return 0;
    return cg_write(ctrl, path, file, buf, err);
}

static bool cg_empty(const char *ctrl, const char *path, const char *file)
{
    char p[2 * PATH_MAX], buf[8];
    cleanup_close int fd = -1;

    snprintf(p, sizeof(p), CG_ROOT "/%s%s/%s", ctrl, path, file);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    return fd < 0 || read(fd, buf, sizeof(buf)) <= 1; /* "" or "\n" */
}

/* mkdir -p of the cgroup (cpuset: each new level gets its parent's cpus and mems). */
static int cg_make(const char *ctrl, const char *path, struct wisp_err *err)
{
    char p[2 * PATH_MAX];
    size_t base;

    snprintf(p, sizeof(p), CG_ROOT "/%s", ctrl);
    if (!mounted(ctrl))
        return -ENOENT; /* the controller is not mounted (or a link to another): skipped */
    base = strlen(p);
    snprintf(p + base, sizeof(p) - base, "%s", path);
    for (char *s = p + base + 1;; s++) {
        char save = *s;
        if (save != '/' && save != 0)
            continue;
        *s = 0;
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return wisp_err_sys(err, errno, "cgroup mkdir %s", p);
        /* cpuset: a level with no cpus or mems (just made, here or by a create running beside
         * this one, which may not have filled it yet) gets its parent's */
        if (strcmp(ctrl, "cpuset") == 0) {
            if (cg_empty(ctrl, p + base, "cpuset.cpus"))
                cg_copy(ctrl, p + base, "cpuset.cpus", err);
            if (cg_empty(ctrl, p + base, "cpuset.mems"))
                cg_copy(ctrl, p + base, "cpuset.mems", err);
        }
        *s = save;
        if (!save)
            break;
    }
    return 0;
}

int oci_cgroup_setup(const char *path, uint64_t memory_limit, long long cpu_quota,
                     unsigned long long cpu_period, const char *cpuset, struct wisp_err *err)
{
    char v[64];
    int r;

    if (!path || path[0] != '/')
        return wisp_err_set(err, EINVAL,
                            "cgroupsPath '%s': wisp-oci takes a cgroupfs path "
                            "(/a/b); systemd's slice:prefix:name is not supported",
                            path ? path : "");
    if (strstr(path, "/..") || strstr(path, "/./"))
        return wisp_err_set(err, EINVAL, "cgroupsPath '%s': no . or .. components", path);
    for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++) {
        r = cg_make(controllers[i], path, err);
        if (r < 0 && r != -ENOENT)
            return r;
    }
    if (memory_limit) {
        snprintf(v, sizeof(v), "%llu", (unsigned long long)memory_limit);
        if ((r = cg_write("memory", path, "memory.limit_in_bytes", v, err)) < 0)
            return r;
    }
    if (cpu_quota > 0) {
        snprintf(v, sizeof(v), "%llu", cpu_period ? cpu_period : 100000ull);
        if ((r = cg_write(cpu_hierarchy(), path, "cpu.cfs_period_us", v, err)) < 0)
            return r;
        snprintf(v, sizeof(v), "%lld", cpu_quota);
        if ((r = cg_write(cpu_hierarchy(), path, "cpu.cfs_quota_us", v, err)) < 0)
            return r;
    }
    if (cpuset && cpuset[0] && (r = cg_write("cpuset", path, "cpuset.cpus", cpuset, err)) < 0)
        return r;
    return 0;
}

int oci_cgroup_enter(const char *path, pid_t pid, struct wisp_err *err)
{
    char v[32], p[PATH_MAX];
    int r;

    snprintf(v, sizeof(v), "%d", (int)pid);
    for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++) {
        snprintf(p, sizeof(p), CG_ROOT "/%s%s", controllers[i], path);
        if (!mounted(controllers[i]) || access(p, F_OK) < 0)
            continue;
        if ((r = cg_write(controllers[i], path, "cgroup.procs", v, err)) < 0)
            return r;
    }
    return 0;
}

void oci_cgroup_remove(const char *path)
{
    char p[2 * PATH_MAX];

    if (!path || path[0] != '/')
        return;
    for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++) {
        if (!mounted(controllers[i]))
            continue;
        snprintf(p, sizeof(p), CG_ROOT "/%s%s", controllers[i], path);
        /* The leaf, then each parent that is empty now (runc's MkdirAll makes them again);
         * one that holds another container's cgroup stays (rmdir fails with EBUSY). */
        size_t base = strlen(CG_ROOT) + 1 + strlen(controllers[i]);
        while (strlen(p) > base && rmdir(p) == 0) {
            char *slash = strrchr(p, '/');
            if (!slash || (size_t)(slash - p) <= base)
                break;
            *slash = 0;
        }
    }
}

int oci_cgroup_pids(const char *path, pid_t *pids, int max)
{
    char p[2 * PATH_MAX];
    FILE *f;
    int n = 0, v;

    snprintf(p, sizeof(p), CG_ROOT "/memory%s/cgroup.procs", path);
    f = fopen(p, "re");
    if (!f)
        return 0;
    while (n < max && fscanf(f, "%d", &v) == 1)
        pids[n++] = v;
    fclose(f);
    return n;
}
