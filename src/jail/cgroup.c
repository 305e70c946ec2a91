/* The VM's cgroups. v1 (--cgroup-version 1): one directory per controller named by --cgroup, at
 * /sys/fs/cgroup/<controller>/<parent>/<id>. v2: one directory <cgroup2 mount>/<parent>/<id>,
 * whose files exist only for the controllers enabled in the parent (docs/wisp-jailer.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <unistd.h>

#include "jail.h"

#define CGROUP_V1_ROOT "/sys/fs/cgroup"

static int write_file(const char *dir, const char *name, const char *value, struct wisp_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return wisp_err_sys(err, errno, "--cgroup %s=%s: %s", name, value, path);
    ssize_t n = write(fd, value, strlen(value));
    int e = errno;
    close(fd);
    if (n != (ssize_t)strlen(value))
        return wisp_err_sys(err, n < 0 ? e : EIO, "--cgroup %s=%s: writing %s", name, value, path);
    return 0;
}

/* cpuset's cgroups start with no CPU and no memory node: a task cannot join until they are
 * copied from the parent (as Firecracker's jailer does). */
static int inherit_cpuset(const char *parent, const char *dir, struct wisp_err *err)
{
    static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
    for (int i = 0; i < 2; i++) {
        char path[4200], value[4096];
        snprintf(path, sizeof(path), "%s/%s", parent, files[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, value, sizeof(value) - 1);
        if (fd >= 0)
            close(fd);
        if (n < 0)
            return wisp_err_sys(err, errno, "reading %s", path);
        value[n] = '\0';
        if (n > 1 && write_file(dir, files[i], value, err) < 0)
            return -EIO;
    }
    return 0;
}

/* <mount>/<parent>/<id>, recorded in j (the parent only if made here). */
static int make_dirs(struct jail *j, const char *mount, const struct jail_options *o, bool cpuset,
                     char *dir, size_t size, struct wisp_err *err)
{
    char parent[4096];
    if (snprintf(parent, sizeof(parent), "%s/%s", mount, o->parent_cgroup) >= (int)sizeof(parent))
        return wisp_err_set(err, ENAMETOOLONG, "%s: too long", mount);
    if (j->nr_cgroups + 2 > JAIL_MAX_CGROUPS)
        return wisp_err_set(err, EINVAL, "--cgroup: too many controllers");
    if (mkdir(parent, 0755) == 0) {
        memcpy(j->cgroups[j->nr_cgroups++], parent, sizeof(parent));
        if (cpuset && inherit_cpuset(mount, parent, err) < 0)
            return -EIO;
    } else if (errno != EEXIST) {
        return wisp_err_sys(err, errno, "--parent-cgroup: mkdir %s", parent);
    }
    if (snprintf(dir, size, "%s/%s", parent, o->id) >= (int)size)
        return wisp_err_set(err, ENAMETOOLONG, "%s: too long", parent);
    if (mkdir(dir, 0755) < 0)
        return wisp_err_sys(err, errno, "cgroup %s", dir);
    snprintf(j->cgroups[j->nr_cgroups++], sizeof(j->cgroups[0]), "%.4095s", dir);
    return cpuset ? inherit_cpuset(parent, dir, err) : 0;
}

/* The VMM joins the cgroup itself, before its exec (it writes "0" into this fd: run.c), so
 * the jailer starts it with no hand-shake. */
static int join(struct jail *j, const char *dir, struct wisp_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return wisp_err_sys(err, errno, "cgroup %s", path);
    j->procs_fd[j->nr_procs++] = fd;
    return 0;
}

static int cgroups_v1(struct jail *j, const struct jail_options *o, struct wisp_err *err)
{
    for (unsigned i = 0; i < o->nr_cgroups; i++) {
        char controller[64], mount[160], dir[4096];
        size_t len = strcspn(o->cgroups[i].file, ".");
        snprintf(controller, sizeof(controller), "%.*s", (int)len, o->cgroups[i].file);
        snprintf(mount, sizeof(mount), CGROUP_V1_ROOT "/%s", controller);
        struct statfs sf;
        if (statfs(mount, &sf) < 0 || sf.f_type != 0x27e0eb /* CGROUP_SUPER_MAGIC */)
            return wisp_err_set(err, EINVAL,
                                "--cgroup %s: no cgroup v1 hierarchy of controller '%s' at %s",
                                o->cgroups[i].file, controller, mount);
        bool seen = false; /* one directory per controller */
        for (unsigned k = 0; k < i; k++)
            seen |= !strncmp(o->cgroups[k].file, controller, len) && o->cgroups[k].file[len] == '.';
        snprintf(dir, sizeof(dir), "%s/%s/%s", mount, o->parent_cgroup, o->id);
        if (!seen &&
            make_dirs(j, mount, o, !strcmp(controller, "cpuset"), dir, sizeof(dir), err) < 0)
            return -EIO;
        if (write_file(dir, o->cgroups[i].file, o->cgroups[i].value, err) < 0 ||
            (!seen && join(j, dir, err) < 0))
            return -EIO;
    }
    return 0;
}

/* Where cgroup2 is mounted (/sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified here). */
static int cgroup2_mount(char *out, size_t size, struct wisp_err *err)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return wisp_err_sys(err, errno, "/proc/self/mountinfo");
    char line[4096];
    int r = wisp_err_set(err, ENOENT, "--cgroup-version 2: no cgroup2 file system is mounted");
    while (fgets(line, sizeof(line), f)) {
        char point[4096];
        const char *sep = strstr(line, " - cgroup2 ");
        if (sep && sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1) {
            snprintf(out, size, "%s", point);
            r = 0;
            break;
        }
    }
    fclose(f);
    return r;
}

static int cgroups_v2(struct jail *j, const struct jail_options *o, struct wisp_err *err)
{
    char mount[4096], dir[4096];
    if (cgroup2_mount(mount, sizeof(mount), err) < 0 ||
        make_dirs(j, mount, o, false, dir, sizeof(dir), err) < 0)
        return -EIO;
    for (unsigned i = 0; i < o->nr_cgroups; i++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, o->cgroups[i].file);
        if (access(path, F_OK) < 0)
            return wisp_err_set(err, EINVAL,
                                "--cgroup %s: %s has no such file (its controller is not enabled "
                                "in the cgroup2 hierarchy at %s; this host may mount it as v1: "
                                "--cgroup-version 1)",
                                o->cgroups[i].file, dir, mount);
        if (write_file(dir, o->cgroups[i].file, o->cgroups[i].value, err) < 0)
            return -EIO;
    }
    return join(j, dir, err);
}

int jail_cgroups_create(struct jail *j, const struct jail_options *o, struct wisp_err *err)
{
    return o->cgroup_version == 2 ? cgroups_v2(j, o, err) : cgroups_v1(j, o, err);
}
