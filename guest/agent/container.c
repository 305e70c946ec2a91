/* wisp-agent's containers: the root (a 9p tag or a guest directory), the OCI mounts resolved
 * inside it without following its symlinks out (openat2 RESOLVE_IN_ROOT), files bound over
 * paths, runc's default /dev, the hostname; and their end (docs/agent-protocol.md). */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/random.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "agent.h"
#include "common/cleanup.h"

struct container *container_find(struct agent *ag, const char *id)
{
    for (struct container *c = ag->ctrs; c; c = c->next)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

int container_add_session(struct container *c, pid_t sid)
{
    pid_t *p;

    if (c->nsessions >= 4096)
        return -ENOSPC;
    p = realloc(c->sessions, (c->nsessions + 1) * sizeof(*p));
    if (!p)
        return -ENOMEM;
    c->sessions = p;
    c->sessions[c->nsessions++] = sid;
    return 0;
}

static void kill_one(pid_t pid, void *opaque)
{
    kill(pid, *(int *)opaque);
}

void container_kill_all(struct agent *ag, struct container *c, int signo)
{
    ps_foreach_in_sessions(c, kill_one, &signo);
    for (struct proc *p = ag->procs; p; p = p->next)
        if (p->ctr == c && p->state != PROC_EXITED && p->pid > 0)
            kill(p->pid, signo);
}

/* --- mount options (runc's table: flags, propagation, the rest as data) */

static const struct {
    const char *name;
    bool clear;
    unsigned long flag;
} flag_opts[] = {
    {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},
    {"nosuid", false, MS_NOSUID},
    {"suid", true, MS_NOSUID},
    {"nodev", false, MS_NODEV},
    {"dev", true, MS_NODEV},
    {"noexec", false, MS_NOEXEC},
    {"exec", true, MS_NOEXEC},
    {"sync", false, MS_SYNCHRONOUS},
    {"async", true, MS_SYNCHRONOUS},
    {"dirsync", false, MS_DIRSYNC},
    {"remount", false, MS_REMOUNT},
    {"mand", false, MS_MANDLOCK},
    {"nomand", true, MS_MANDLOCK},
    {"atime", true, MS_NOATIME},
    {"noatime", false, MS_NOATIME},
    {"diratime", true, MS_NODIRATIME},
    {"nodiratime", false, MS_NODIRATIME},
    {"relatime", false, MS_RELATIME},
    {"norelatime", true, MS_RELATIME},
    {"strictatime", false, MS_STRICTATIME},
    {"nostrictatime", true, MS_STRICTATIME},
    {"bind", false, MS_BIND},
    {"rbind", false, MS_BIND | MS_REC},
};

static const struct {
    const char *name;
    unsigned long flag;
} prop_opts[] = {
    {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

int mount_options(const char *const *opts, size_t n, unsigned long *flags, unsigned long *prop,
                  char *data, size_t datalen)
{
    size_t used = strlen(data);

    for (size_t i = 0; i < n; i++) {
        bool known = false;

        for (size_t k = 0; k < ARRAY_SIZE(flag_opts) && !known; k++) {
            if (strcmp(opts[i], flag_opts[k].name) != 0)
                continue;
            known = true;
            if (flag_opts[k].clear)
                *flags &= ~flag_opts[k].flag;
            else
                *flags |= flag_opts[k].flag;
        }
        for (size_t k = 0; k < ARRAY_SIZE(prop_opts) && !known; k++) {
            if (strcmp(opts[i], prop_opts[k].name) == 0) {
                known = true;
                *prop |= prop_opts[k].flag;
            }
        }
        if (known)
            continue;
        if (used + strlen(opts[i]) + 2 > datalen)
            return -E2BIG;
        used += (size_t)snprintf(data + used, datalen - used, "%s%s", used ? "," : "", opts[i]);
    }
    return 0;
}

/* --- paths inside the container's root */

static int open_in_root(int rootfd, const char *path, int flags)
{
    struct open_how how = {.flags = (uint64_t)flags | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};

    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
}

/* Opens (O_PATH) `path` inside the root, creating it and its parents when missing: a
 * directory, or an empty file when `file`. Symlinks resolve as if the root were "/". */
static int make_target(int rootfd, const char *path, bool file, struct wisp_err *err)
{
    char buf[WISP_AGENT_PATH_MAX + 1];
    int fd = open_in_root(rootfd, path, O_PATH);

    if (fd >= 0 || errno != ENOENT)
        return fd >= 0 ? fd : wisp_err_sys(err, errno, "%s", path);
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1;; p++) {
        bool last = *p == '\0';
        cleanup_close int parent = -1;
        char *slash;

        if (*p != '/' && !last)
            continue;
        *p = '\0';
        fd = open_in_root(rootfd, buf, O_PATH);
        if (fd < 0 && errno == ENOENT) {
            slash = strrchr(buf, '/');
            *slash = '\0';
            parent = open_in_root(rootfd, slash == buf ? "/" : buf, O_PATH | O_DIRECTORY);
            *slash = '/';
            if (parent < 0)
                return wisp_err_sys(err, errno, "%s", buf);
            if (last && file) {
                fd = openat(parent, slash + 1, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
                if (fd >= 0)
                    close(fd);
            } else if (mkdirat(parent, slash + 1, 0755) < 0 && errno != EEXIST) {
                return wisp_err_sys(err, errno, "mkdir %s", buf);
            }
            fd = open_in_root(rootfd, buf, O_PATH);
        }
        if (fd < 0)
            return wisp_err_sys(err, errno, "%s", buf);
        if (last)
            return fd;
        close(fd);
        *p = '/';
    }
}

static int mount_one(int rootfd, const struct wisp_agent_mount *mt, struct wisp_err *err)
{
    bool bind = strcmp(mt->type, "bind") == 0;
    unsigned long flags = 0, prop = 0;
    char data[4096] = "", target[64];
    const char *type = mt->type;
    struct stat st;
    cleanup_close int fd = -1;

    if (strcmp(type, "9p") == 0)
        snprintf(data, sizeof(data), "trans=virtio,version=9p2000.L,msize=262144");
    if (mount_options(mt->options, mt->noptions, &flags, &prop, data, sizeof(data)) < 0)
        return wisp_err_set(err, E2BIG, "mount on %s: options too long", mt->destination);
    bind |= (flags & MS_BIND) != 0;
    if (bind && (!mt->source || stat(mt->source, &st) < 0))
        return wisp_err_sys(err, mt->source ? errno : EINVAL, "bind mount source '%s'",
                            mt->source ? mt->source : "");
    if ((fd = make_target(rootfd, mt->destination, bind && !S_ISDIR(st.st_mode), err)) < 0)
        return wisp_err_wrap(err, "mount target");
    snprintf(target, sizeof(target), "/proc/self/fd/%d", fd);
    if (bind) {
        if (mount(mt->source, target, NULL, MS_BIND | (flags & MS_REC), NULL) < 0)
            return wisp_err_sys(err, errno, "bind %s on %s", mt->source, mt->destination);
        flags &= ~(MS_BIND | MS_REC);
    } else if (mount(mt->source ? mt->source : type, target, type, flags, data[0] ? data : NULL) <
               0) {
        return wisp_err_sys(err, errno, "mount %s on %s", type, mt->destination);
    }
    if (!(flags & ~MS_REMOUNT) && !prop)
        return 0;
    /* the fd still names what lies under the new mount: open the mount itself */
    close(fd);
    if ((fd = open_in_root(rootfd, mt->destination, O_PATH)) < 0)
        return wisp_err_sys(err, errno, "%s after mounting", mt->destination);
    snprintf(target, sizeof(target), "/proc/self/fd/%d", fd);
    if (bind && flags && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
        return wisp_err_sys(err, errno, "remount %s", mt->destination);
    if (prop && mount(NULL, target, NULL, prop, NULL) < 0)
        return wisp_err_sys(err, errno, "propagation of %s", mt->destination);
    return 0;
}

/* runc's default devices and links in the container's /dev (when it has one). */
static void default_devices(int rootfd)
{
    static const struct {
        const char *name;
        unsigned major, minor;
    } nodes[] = {{"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
                 {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    static const char *const links[][2] = {
        {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},         {"core", "/proc/kcore"},
    };
    cleanup_close int dev = open_in_root(rootfd, "/dev", O_DIRECTORY);

    if (dev < 0)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(nodes); i++) {
        if (mknodat(dev, nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) ==
            0)
            fchmodat(dev, nodes[i].name, 0666, 0);
    }
    for (size_t i = 0; i < ARRAY_SIZE(links); i++)
        symlinkat(links[i][1], dev, links[i][0]);
}

static int write_files(struct container *c, int rootfd, const struct wisp_agent_container *spec,
                       struct wisp_err *err)
{
    for (size_t i = 0; i < spec->nfiles; i++) {
        const struct wisp_agent_file *f = &spec->files[i];
        struct wisp_agent_mount mt = {.type = "bind", .destination = f->path};
        char src[320];
        cleanup_close int fd = -1;

        snprintf(src, sizeof(src), "%s/file%zu", c->dir, i);
        fd = open(src, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, f->mode);
        if (fd < 0 || (f->len && write(fd, f->data, f->len) != (ssize_t)f->len) ||
            fchmod(fd, f->mode) < 0)
            return wisp_err_sys(err, errno, "file for %s", f->path);
        mt.source = src;
        if (mount_one(rootfd, &mt, err) < 0)
            return -err->errnum;
    }
    return 0;
}

static int mount_root(struct container *c, const struct wisp_agent_container *spec,
                      struct wisp_err *err)
{
    if (mkdir(c->dir, 0700) < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "mkdir %s", c->dir);
    if (mkdir(c->root, 0755) < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "mkdir %s", c->root);
    if (spec->rootfs_tag) {
        if (mount(spec->rootfs_tag, c->root, "9p", 0,
                  "trans=virtio,version=9p2000.L,msize=262144") < 0)
            return wisp_err_sys(err, errno, "mount the 9p tag '%s' as the root", spec->rootfs_tag);
    } else if (mount(spec->rootfs_path, c->root, NULL, MS_BIND | MS_REC, NULL) < 0) {
        return wisp_err_sys(err, errno, "bind %s as the root", spec->rootfs_path);
    }
    return 0;
}

/* The host's seed credited to the kernel's RNG, then a reseed forced: a VM restored from a
 * template has the template's RNG state, which every other restore of it shares. */
static int reseed(const struct wisp_agent_container *spec, struct wisp_err *err)
{
    uint32_t raw[2 + WISP_AGENT_SEED_MAX / 4]; /* a struct rand_pool_info and its buffer */
    struct rand_pool_info *info = (struct rand_pool_info *)raw;
    cleanup_close int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);

    if (fd < 0)
        return wisp_err_sys(err, errno, "the RNG's seed: /dev/urandom");
    info->entropy_count = (int)(spec->seed_len * 8);
    info->buf_size = (int)spec->seed_len;
    memcpy(info->buf, spec->seed, spec->seed_len);
    if (ioctl(fd, RNDADDENTROPY, info) < 0)
        return wisp_err_sys(err, errno, "the RNG's seed: RNDADDENTROPY");
    if (ioctl(fd, RNDRESEEDCRNG) < 0)
        return wisp_err_sys(err, errno, "the RNG's seed: RNDRESEEDCRNG");
    return 0;
}

static int setup(struct container *c, const struct wisp_agent_container *spec, struct wisp_err *err)
{
    cleanup_close int rootfd = -1;
    int r;

    if (spec->seed_len && (r = reseed(spec, err)) < 0)
        return r;
    if ((r = mount_root(c, spec, err)) < 0)
        return r;
    rootfd = open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return wisp_err_sys(err, errno, "%s", c->root);
    for (size_t i = 0; i < spec->nmounts; i++)
        if ((r = mount_one(rootfd, &spec->mounts[i], err)) < 0)
            return wisp_err_wrap(err, "mount %zu", i);
    if (spec->default_devices)
        default_devices(rootfd);
    if ((r = write_files(c, rootfd, spec, err)) < 0)
        return r;
    if (spec->hostname && sethostname(spec->hostname, strlen(spec->hostname)) < 0)
        return wisp_err_sys(err, errno, "sethostname");
    if (spec->rootfs_readonly &&
        mount(NULL, c->root, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
        return wisp_err_sys(err, errno, "remount the root read-only");
    return 0;
}

static void teardown(struct container *c)
{
    char path[320];

    if (umount2(c->root, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        agent_log("umount %s: %s", c->root, strerror(errno));
    rmdir(c->root);
    for (size_t i = 0; i < WISP_AGENT_FILES_MAX; i++) {
        snprintf(path, sizeof(path), "%s/file%zu", c->dir, i);
        unlink(path);
    }
    rmdir(c->dir);
}

int container_create(struct agent *ag, const struct wa_msg *m, struct wisp_err *err)
{
    struct container *c;

    if (container_find(ag, m->container))
        return wisp_err_set(err, EEXIST, "container '%s' exists", m->container);
    if (!(c = calloc(1, sizeof(*c))))
        return wisp_err_set(err, ENOMEM, "container");
    snprintf(c->id, sizeof(c->id), "%s", m->container);
    snprintf(c->dir, sizeof(c->dir), "%s/%s", AGENT_RUN_DIR, c->id);
    snprintf(c->root, sizeof(c->root), "%s/rootfs", c->dir);
    if (setup(c, &m->ctr, err) < 0) {
        teardown(c);
        free(c);
        return wisp_err_wrap(err, "container '%s'", m->container);
    }
    c->next = ag->ctrs;
    ag->ctrs = c;
    return 0;
}

int container_delete(struct agent *ag, struct container *c, struct wisp_err *err)
{
    container_kill_all(ag, c, SIGKILL);
    for (struct proc *p = ag->procs, *next; p; p = next) {
        next = p->next;
        if (p->ctr == c)
            proc_free(ag, p);
    }
    teardown(c);
    for (struct container **pp = &ag->ctrs; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    free(c->sessions);
    free(c);
    (void)err;
    return 0;
}
