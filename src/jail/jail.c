/* The jail's tree (<base>/<exec-name>/<id>/root with its files and device nodes) and its
 * cgroups: made beneath the base directory without following a symlink, and removed again. */
#include "jail.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Every open below the base directory: no "..", no absolute path, no symlink, no /proc magic. */
static int open_beneath(int dirfd, const char *name, int flags)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
                           .resolve =
                               RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
    return fd < 0 ? -errno : (int)fd;
}

/* A directory `name` (one component) in dirfd, made if missing; its fd (O_PATH). */
static int subdir(int dirfd, const char *name, const char *shown, bool *made, struct wisp_err *err)
{
    int r = mkdirat(dirfd, name, 0755);
    if (made)
        *made = r == 0;
    if (r < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "%s: mkdir", shown);
    int fd = open_beneath(dirfd, name, O_PATH | O_DIRECTORY);
    if (fd == -ELOOP || fd == -ENOTDIR || fd == -EXDEV)
        return wisp_err_set(err, EINVAL,
                            "%s: is a symlink or not a directory (refused: the jail stays "
                            "inside its base directory)",
                            shown);
    if (fd < 0)
        return wisp_err_sys(err, -fd, "%s", shown);
    return fd;
}

/* The directories of a path inside the jail (every component but the last), made beneath
 * root_fd; *last points at the last component. */
static int jail_parent_dir(int root_fd, const char *jail_path, const char **last,
                           struct wisp_err *err)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", jail_path + 1);
    int fd = dup(root_fd);
    if (fd < 0)
        return wisp_err_sys(err, errno, "dup");
    char *save = NULL, *comp = strtok_r(buf, "/", &save), *next;
    for (; comp && (next = strtok_r(NULL, "/", &save)); comp = next) {
        int sub = subdir(fd, comp, jail_path, NULL, err);
        close(fd);
        if (sub < 0)
            return sub;
        fd = sub;
    }
    *last = strrchr(jail_path, '/') + 1;
    return fd;
}

/* A file made available at jail_path: a hard link, or (on another file system, read-only, a
 * directory, or under --keep-caps: a VMM that keeps CAP_DAC_OVERRIDE/CAP_FOWNER could write or
 * chmod a linked inode, the exec file's among them) an empty file or directory the child
 * bind-mounts the host's onto. */
static int place_file(int root_fd, const struct jail_file *f, bool no_links, bool *bind,
                      struct wisp_err *err)
{
    const char *name = NULL;
    int dir = jail_parent_dir(root_fd, f->jail_path, &name, err);
    if (dir < 0)
        return dir;
    int r = f->ro || f->dir || no_links                   ? -EXDEV
            : linkat(AT_FDCWD, f->host, dir, name, 0) < 0 ? -errno
                                                          : 0;
    *bind = r == -EXDEV;
    if (*bind && f->dir) {
        r = mkdirat(dir, name, 0755) < 0 ? -errno : 0;
    } else if (*bind) {
        int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        r = fd < 0 ? -errno : 0;
        if (fd >= 0)
            close(fd);
    }
    close(dir);
    if (r == -EEXIST)
        return wisp_err_set(err, EINVAL, "--file %s: %s is given twice", f->host, f->jail_path);
    if (r < 0)
        return wisp_err_sys(err, -r, "--file %s: placing it at %s", f->host, f->jail_path);
    return 0;
}

/* The host's device numbers, and the jail's empty dev/ (a mount point: the child mounts a tmpfs
 * with the nodes there, cheaper than nodes and directories made and removed on the base's file
 * system, and gone with the mount namespace). */
static int device_dir(struct jail *j, int root_fd, struct wisp_err *err)
{
    struct stat st;
    if (stat("/dev/kvm", &st) < 0 || !S_ISCHR(st.st_mode))
        return wisp_err_set(err, ENODEV, "/dev/kvm: not a character device on this host");
    j->kvm = st.st_rdev;
    j->tun = stat("/dev/net/tun", &st) == 0 && S_ISCHR(st.st_mode) ? st.st_rdev : 0;
    int dev = subdir(root_fd, "dev", "/dev in the jail", NULL, err);
    if (dev < 0)
        return dev;
    close(dev);
    return 0;
}

static bool device_node(const char *path, dev_t rdev, const struct jail_options *o)
{
    return mknod(path, S_IFCHR | 0600, rdev) == 0 && chown(path, o->uid, o->gid) == 0;
}

const char *jail_make_devices(const struct jail *j, const struct jail_options *o)
{
    char dev[4200], path[4300];
    snprintf(dev, sizeof(dev), "%s/dev", j->root);
    /* nothing but the two nodes: 8 inodes, no data block, root's 0755 */
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,nr_inodes=8,size=4k") < 0)
        return "a tmpfs on the jail's /dev";
    snprintf(path, sizeof(path), "%s/kvm", dev);
    if (!device_node(path, j->kvm, o))
        return "the jail's /dev/kvm (mknod, chown)";
    if (!j->tun)
        return NULL;
    snprintf(path, sizeof(path), "%s/net", dev);
    if (mkdir(path, 0755) < 0)
        return "the jail's /dev/net";
    snprintf(path, sizeof(path), "%s/net/tun", dev);
    return device_node(path, j->tun, o) ? NULL : "the jail's /dev/net/tun (mknod, chown)";
}

void jail_init(struct jail *j)
{
    /* Field by field: the path arrays (132 KiB) stay untouched until used, so the reaper that
     * waits outside each VM does not keep them resident (wispd runs one per VM). */
    j->base_fd = j->exec_dir_fd = -1;
    j->made_id_dir = false;
    memset(j->bind, 0, sizeof(j->bind));
    j->root[0] = '\0';
    j->nr_cgroups = j->nr_procs = 0;
    j->kvm = j->tun = 0;
}

void jail_close_procs(struct jail *j)
{
    for (unsigned i = 0; i < j->nr_procs; i++)
        close(j->procs_fd[i]);
    j->nr_procs = 0;
}

int jail_build(struct jail *j, const struct jail_options *o, struct wisp_err *err)
{
    j->base_fd = open(o->base_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (j->base_fd < 0)
        return wisp_err_sys(err, errno, "--chroot-base-dir %s", o->base_dir);
    char shown[4096];
    snprintf(shown, sizeof(shown), "%s/%s", o->base_dir, o->exec_name);
    j->exec_dir_fd = subdir(j->base_fd, o->exec_name, shown, NULL, err);
    if (j->exec_dir_fd < 0)
        return j->exec_dir_fd;
    snprintf(shown, sizeof(shown), "%s/%s/%s", o->base_dir, o->exec_name, o->id);
    if (mkdirat(j->exec_dir_fd, o->id, 0755) < 0)
        return errno == EEXIST ? wisp_err_set(err, EINVAL,
                                              "--id %s: %s exists (a jail of that "
                                              "id is running, or was left behind)",
                                              o->id, shown)
                               : wisp_err_sys(err, errno, "%s: mkdir", shown);
    j->made_id_dir = true;
    int id_fd = subdir(j->exec_dir_fd, o->id, shown, NULL, err);
    if (id_fd < 0)
        return id_fd;
    if (snprintf(j->root, sizeof(j->root), "%s/root", shown) >= (int)sizeof(j->root))
        return wisp_err_set(err, ENAMETOOLONG, "%s: too long", shown);
    int root_fd = subdir(id_fd, "root", j->root, NULL, err);
    close(id_fd);
    if (root_fd < 0)
        return root_fd;
    int r = fchownat(root_fd, "", o->uid, o->gid, AT_EMPTY_PATH) < 0
                ? wisp_err_sys(err, errno, "chown %s", j->root)
                : 0;
    for (unsigned i = 0; r == 0 && i < o->nr_files; i++)
        r = place_file(root_fd, &o->files[i], o->keep_caps != NULL, &j->bind[i], err);
    if (r == 0)
        r = device_dir(j, root_fd, err);
    if (r == 0 && o->mount_proc) { /* the child's mount point */
        int proc = subdir(root_fd, "proc", "/proc in the jail", NULL, err);
        r = proc < 0 ? proc : 0;
        if (proc >= 0)
            close(proc);
    }
    close(root_fd);
    return r;
}

/* Removes name (a directory) in dirfd with everything in it, following no symlink. */
static void remove_tree(int dirfd, const char *name)
{
    int fd = open_beneath(dirfd, name, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            struct stat st;
            if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                remove_tree(fd, e->d_name);
            else
                unlinkat(fd, e->d_name, 0);
        }
        if (d)
            closedir(d);
        else
            close(fd);
    }
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

void jail_remove(struct jail *j, const struct jail_options *o)
{
    jail_close_procs(j);
    for (unsigned i = j->nr_cgroups; i-- > 0;)
        rmdir(j->cgroups[i]); /* the id's, then the parents it made (if empty) */
    j->nr_cgroups = 0;
    if (j->made_id_dir)
        remove_tree(j->exec_dir_fd, o->id);
    j->made_id_dir = false;
    if (j->exec_dir_fd >= 0)
        unlinkat(j->base_fd, o->exec_name, AT_REMOVEDIR); /* only if no other jail is in it */
    if (j->exec_dir_fd >= 0)
        close(j->exec_dir_fd);
    if (j->base_fd >= 0)
        close(j->base_fd);
    j->exec_dir_fd = j->base_fd = -1;
}

void jail_release(struct jail *j)
{
    jail_close_procs(j);
    if (j->exec_dir_fd >= 0)
        close(j->exec_dir_fd);
    if (j->base_fd >= 0)
        close(j->base_fd);
    j->exec_dir_fd = j->base_fd = -1;
    j->made_id_dir = false;
}
