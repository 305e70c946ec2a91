/* The 9P2000.L file operations on fids (p9_int.h). Each acts on the fid's own fd, or on a
 * directory fid's fd and one checked name (p9_getname: no '/', not "." or ".."): nothing the
 * guest sends is ever resolved as a path on the host, and no symlink is followed (O_NOFOLLOW,
 * AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH on the fid's O_PATH fd). A read-only share refuses every
 * change with EROFS. Extended attributes and readdir are in p9_xattr.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "virtio/p9_int.h"

/* The Tlopen/Tlcreate flags passed on (9P2000.L's are Linux's): O_CREAT/O_EXCL only from
 * Tlcreate, never O_NOFOLLOW/O_PATH games, O_DIRECT or O_NOATIME. */
#define P9_OPEN_FLAGS                                                                              \
    (O_ACCMODE | O_TRUNC | O_APPEND | O_DSYNC | O_SYNC | O_DIRECTORY | O_LARGEFILE)

static int stat_fd(int fd, struct stat *st)
{
    return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int proc_name(const struct p9_fid *f, char num[16])
{
    snprintf(num, 16, "%d", f->fd);
    return 0;
}

/* What a user creates in dir becomes theirs (uid of the attach, gid as asked) where the server
 * may give files away (root; unprivileged it fails, and the file stays the server's); the name
 * is changed, never what a symlink there points to. */
static void give_away(struct p9_server *s, int dir, const char *name, uint32_t uid, uint32_t gid)
{
    (void)fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW);
}

/* Tstatfs: fid -> type bsize blocks bfree bavail files ffree fsid namelen. */
int p9_op_statfs(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    struct statfs st;
    if (fstatfs(f->fd, &st) < 0)
        return -errno;
    uint64_t fsid;
    memcpy(&fsid, &st.f_fsid, sizeof(fsid));
    p9_put32(o, (uint32_t)st.f_type);
    p9_put32(o, (uint32_t)st.f_bsize);
    p9_put64(o, st.f_blocks);
    p9_put64(o, st.f_bfree);
    p9_put64(o, st.f_bavail);
    p9_put64(o, st.f_files);
    p9_put64(o, st.f_ffree);
    p9_put64(o, fsid);
    p9_put32(o, (uint32_t)st.f_namelen);
    return 0;
}

static bool writes(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* Tlopen: fid flags -> qid iounit. Only regular files and directories are opened. */
int p9_op_lopen(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    int flags = (int)p9_get32(in) & P9_OPEN_FLAGS;
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    if (f->open_fd >= 0)
        return -EBUSY;
    if (s->read_only && writes(flags))
        return -EROFS;
    if (S_ISDIR(f->mode) && (flags & O_ACCMODE) != O_RDONLY)
        return -EISDIR;
    int fd = p9_reopen(s, f, flags);
    if (fd < 0)
        return fd;
    struct stat st;
    int r = stat_fd(fd, &st);
    if (r < 0) {
        close(fd);
        return r;
    }
    f->open_fd = fd;
    f->open_write = (flags & O_ACCMODE) != O_RDONLY;
    p9_putqid(o, &st);
    p9_put32(o, 0); /* iounit: the client uses msize */
    return 0;
}

/* Tlcreate: dfid name flags mode gid -> qid iounit; the fid becomes the new file, open. */
int p9_op_lcreate(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    char name[256];
    int r = p9_getname(in, name);
    int flags = (int)p9_get32(in) & (P9_OPEN_FLAGS | O_EXCL);
    uint32_t mode = p9_get32(in), gid = p9_get32(in);
    r = p9_parsed(in, r, f);
    if (r < 0)
        return r;
    if (f->open_fd >= 0)
        return -EBUSY;
    if (s->read_only)
        return -EROFS;
    cleanup_free char *path = p9_join(f->path, name);
    if (!path)
        return -ENAMETOOLONG;
    /* always a new file (O_EXCL): an existing name, a FIFO or a device node the guest made
     * there, is never opened on the host (EEXIST), and nothing blocks (O_NONBLOCK) */
    cleanup_close int fd =
        p9_open_beneath(f->fd, name, (flags & ~O_DIRECTORY) | O_CREAT | O_EXCL | O_NONBLOCK, mode);
    if (fd < 0)
        return fd;
    struct stat st;
    r = stat_fd(fd, &st);
    if (r < 0)
        return r;
    if (!S_ISREG(st.st_mode))
        return -EEXIST;
    give_away(s, f->fd, name, f->uid, gid);
    char num[16];
    snprintf(num, sizeof(num), "%d", fd);
    int pfd = openat(s->proc_fd, num, O_PATH | O_CLOEXEC);
    if (pfd < 0)
        return -errno;
    close(f->fd);
    free(f->path);
    f->fd = pfd;
    f->path = steal_ptr(&path);
    f->mode = st.st_mode;
    f->open_fd = steal_fd(&fd);
    f->open_write = (flags & O_ACCMODE) != O_RDONLY;
    (void)stat_fd(f->open_fd, &st); /* after the chown */
    p9_putqid(o, &st);
    p9_put32(o, 0);
    return 0;
}

/* The qid of what was just made as dir/name. */
static int put_made(struct p9_out *o, int dir, const char *name)
{
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    p9_putqid(o, &st);
    return 0;
}

/* Tsymlink: dfid name target gid -> qid. The target is the guest's business: stored, never
 * resolved here. */
int p9_op_symlink(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    char name[256];
    int r = p9_getname(in, name);
    uint16_t len;
    const char *target = p9_getstr(in, &len);
    uint32_t gid = p9_get32(in);
    r = p9_parsed(in, r, f);
    if (r < 0)
        return r;
    if (len == 0 || memchr(target, '\0', len))
        return -EINVAL;
    if (len >= PATH_MAX)
        return -ENAMETOOLONG;
    if (s->read_only)
        return -EROFS;
    char t[PATH_MAX];
    memcpy(t, target, len);
    t[len] = '\0';
    if (symlinkat(t, f->fd, name) < 0)
        return -errno;
    give_away(s, f->fd, name, f->uid, gid);
    return put_made(o, f->fd, name);
}

/* Tmknod: dfid name mode major minor gid -> qid. Device nodes may be made (the guest's kernel
 * opens them as its own devices); the server never opens one (p9_reopen). */
int p9_op_mknod(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    char name[256];
    int r = p9_getname(in, name);
    uint32_t mode = p9_get32(in), major = p9_get32(in), minor = p9_get32(in);
    uint32_t gid = p9_get32(in);
    r = p9_parsed(in, r, f);
    if (r < 0)
        return r;
    switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFIFO:
    case S_IFSOCK:
    case S_IFCHR:
    case S_IFBLK:
        break;
    default:
        return -EINVAL;
    }
    if (s->read_only)
        return -EROFS;
    if (mknodat(f->fd, name, mode & (S_IFMT | 07777), makedev(major, minor)) < 0)
        return -errno;
    give_away(s, f->fd, name, f->uid, gid);
    return put_made(o, f->fd, name);
}

/* Tmkdir: dfid name mode gid -> qid. */
int p9_op_mkdir(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    char name[256];
    int r = p9_getname(in, name);
    uint32_t mode = p9_get32(in), gid = p9_get32(in);
    r = p9_parsed(in, r, f);
    if (r < 0)
        return r;
    if (s->read_only)
        return -EROFS;
    if (mkdirat(f->fd, name, mode & 07777) < 0)
        return -errno;
    give_away(s, f->fd, name, f->uid, gid);
    return put_made(o, f->fd, name);
}

/* The directory holding fid f (by its path from the root) and f's name there, checked to be
 * f's file still: for Tremove and Trename, which name no directory. */
static int fid_parent(struct p9_server *s, const struct p9_fid *f, char name[256])
{
    const char *slash = strrchr(f->path, '/');
    const char *base = slash ? slash + 1 : f->path;
    if (!*f->path)
        return -EBUSY; /* the root */
    snprintf(name, 256, "%s", base);
    int dir;
    if (slash) {
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%.*s", (int)(slash - f->path), f->path);
        dir = p9_open_beneath(s->root_fd, parent, O_PATH | O_DIRECTORY, 0);
    } else {
        dir = fcntl(s->root_fd, F_DUPFD_CLOEXEC, 0);
        if (dir < 0)
            dir = -errno;
    }
    if (dir < 0)
        return dir;
    struct stat a, b;
    if (fstatat(dir, name, &a, AT_SYMLINK_NOFOLLOW) < 0 || stat_fd(f->fd, &b) < 0 ||
        a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
        close(dir);
        return -ESTALE;
    }
    return dir;
}

/* Trename: fid dfid name (the older form of Trenameat). */
int p9_op_rename(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    struct p9_fid *d = p9_file_fid(s, p9_get32(in));
    char name[256], old[256];
    int r = p9_getname(in, name);
    if (in->bad)
        return -EINVAL;
    if (r < 0)
        return r;
    if (!f || !d)
        return -EBADF;
    if (s->read_only)
        return -EROFS;
    char *path = p9_join(d->path, name);
    if (!path)
        return -ENAMETOOLONG;
    cleanup_close int dir = fid_parent(s, f, old);
    if (dir < 0) {
        free(path);
        return dir;
    }
    if (renameat(dir, old, d->fd, name) < 0) {
        free(path);
        return -errno;
    }
    free(f->path);
    f->path = path;
    return 0;
}

/* Trenameat: olddirfid oldname newdirfid newname. */
int p9_op_renameat(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *od = p9_file_fid(s, p9_get32(in));
    char oldname[256], newname[256];
    int r1 = p9_getname(in, oldname);
    struct p9_fid *nd = p9_file_fid(s, p9_get32(in));
    int r2 = p9_getname(in, newname);
    if (in->bad)
        return -EINVAL;
    if (r1 < 0 || r2 < 0)
        return r1 < 0 ? r1 : r2;
    if (!od || !nd)
        return -EBADF;
    if (s->read_only)
        return -EROFS;
    return renameat(od->fd, oldname, nd->fd, newname) < 0 ? -errno : 0;
}

/* Tunlinkat: dirfid name flags (AT_REMOVEDIR). */
int p9_op_unlinkat(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *d = p9_file_fid(s, p9_get32(in));
    char name[256];
    int r = p9_getname(in, name);
    uint32_t flags = p9_get32(in);
    if (in->bad)
        return -EINVAL;
    if (r < 0)
        return r;
    if (!d)
        return -EBADF;
    if (flags & ~(uint32_t)AT_REMOVEDIR)
        return -EINVAL;
    if (s->read_only)
        return -EROFS;
    return unlinkat(d->fd, name, (int)flags) < 0 ? -errno : 0;
}

/* Tremove: fid. The fid is clunked whatever the outcome (9P's rule). */
int p9_op_remove(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_fid_get(s, p9_get32(in));
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    int r = f->kind != P9_FID_FILE ? -EINVAL : s->read_only ? -EROFS : 0;
    if (r == 0) {
        char name[256];
        int dir = fid_parent(s, f, name);
        if (dir < 0) {
            r = dir;
        } else {
            if (unlinkat(dir, name, S_ISDIR(f->mode) ? AT_REMOVEDIR : 0) < 0)
                r = -errno;
            close(dir);
        }
    }
    p9_fid_remove(s, f);
    return r;
}

/* Tlink: dfid fid name. */
int p9_op_link(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *d = p9_file_fid(s, p9_get32(in));
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    char name[256];
    int r = p9_getname(in, name);
    if (in->bad)
        return -EINVAL;
    if (r < 0)
        return r;
    if (!d || !f)
        return -EBADF;
    if (S_ISDIR(f->mode))
        return -EPERM;
    if (s->read_only)
        return -EROFS;
    if (S_ISLNK(f->mode)) /* the symlink itself (needs CAP_DAC_READ_SEARCH) */
        return linkat(f->fd, "", d->fd, name, AT_EMPTY_PATH) < 0 ? -errno : 0;
    char num[16];
    proc_name(f, num); /* the file the fd holds, whatever its name is now */
    return linkat(s->proc_fd, num, d->fd, name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
}

/* Treadlink: fid -> target. */
int p9_op_readlink(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    if (!S_ISLNK(f->mode))
        return -EINVAL;
    char buf[PATH_MAX];
    ssize_t n = readlinkat(f->fd, "", buf, sizeof(buf));
    if (n < 0)
        return -errno;
    if ((size_t)n >= sizeof(buf))
        return -ENAMETOOLONG;
    p9_putstr(o, buf, (size_t)n);
    return 0;
}

/* Tgetattr: fid request_mask -> valid qid mode uid gid nlink rdev size blksize blocks atime
 * mtime ctime btime gen data_version (the basic set, always). */
int p9_op_getattr(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    (void)p9_get64(in);
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    struct stat st;
    int r = stat_fd(f->fd, &st);
    if (r < 0)
        return r;
    p9_put64(o, P9_GETATTR_BASIC);
    p9_putqid(o, &st);
    p9_put32(o, st.st_mode);
    p9_put32(o, st.st_uid);
    p9_put32(o, st.st_gid);
    p9_put64(o, st.st_nlink);
    p9_put64(o, st.st_rdev);
    p9_put64(o, (uint64_t)st.st_size);
    p9_put64(o, (uint64_t)st.st_blksize);
    p9_put64(o, (uint64_t)st.st_blocks);
    p9_put64(o, (uint64_t)st.st_atim.tv_sec);
    p9_put64(o, (uint64_t)st.st_atim.tv_nsec);
    p9_put64(o, (uint64_t)st.st_mtim.tv_sec);
    p9_put64(o, (uint64_t)st.st_mtim.tv_nsec);
    p9_put64(o, (uint64_t)st.st_ctim.tv_sec);
    p9_put64(o, (uint64_t)st.st_ctim.tv_nsec);
    for (int i = 0; i < 4; i++) /* btime, gen, data_version */
        p9_put64(o, 0);
    return 0;
}

static int set_size(struct p9_server *s, struct p9_fid *f, uint64_t size)
{
    if (S_ISDIR(f->mode))
        return -EISDIR;
    if (!S_ISREG(f->mode))
        return -EINVAL;
    if (size > INT64_MAX)
        return -EFBIG;
    if (f->open_fd >= 0 && f->open_write)
        return ftruncate(f->open_fd, (off_t)size) < 0 ? -errno : 0;
    int fd = p9_reopen(s, f, O_WRONLY);
    if (fd < 0)
        return fd;
    int r = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static struct timespec set_time(uint32_t valid, uint32_t bit, uint32_t set_bit, uint64_t sec,
                                uint64_t nsec)
{
    if (!(valid & bit))
        return (struct timespec){.tv_nsec = UTIME_OMIT};
    if (!(valid & set_bit))
        return (struct timespec){.tv_nsec = UTIME_NOW};
    return (struct timespec){.tv_sec = (time_t)sec, .tv_nsec = nsec < 1000000000 ? (long)nsec : 0};
}

/* Tsetattr: fid valid mode uid gid size atime_sec atime_nsec mtime_sec mtime_nsec. */
int p9_op_setattr(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    uint32_t valid = p9_get32(in), mode = p9_get32(in), uid = p9_get32(in), gid = p9_get32(in);
    uint64_t size = p9_get64(in), as = p9_get64(in), ans = p9_get64(in), ms = p9_get64(in);
    uint64_t mns = p9_get64(in);
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    if (s->read_only && (valid & ~(uint32_t)P9_SETATTR_CTIME))
        return -EROFS;
    char num[16];
    proc_name(f, num);
    if (valid & P9_SETATTR_MODE) {
        if (S_ISLNK(f->mode))
            return -EOPNOTSUPP;
        /* through the fd's /proc entry: the file the fid holds, not a name */
        if (fchmodat(s->proc_fd, num, mode & 07777, 0) < 0)
            return -errno;
    }
    if (valid & (P9_SETATTR_UID | P9_SETATTR_GID)) {
        uid_t u = (valid & P9_SETATTR_UID) ? uid : (uid_t)-1;
        gid_t g = (valid & P9_SETATTR_GID) ? gid : (gid_t)-1;
        if (fchownat(f->fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
            return -errno;
    }
    if (valid & P9_SETATTR_SIZE) {
        int r = set_size(s, f, size);
        if (r < 0)
            return r;
    }
    if (valid & (P9_SETATTR_ATIME | P9_SETATTR_MTIME)) {
        struct timespec t[2] = {
            set_time(valid, P9_SETATTR_ATIME, P9_SETATTR_ATIME_SET, as, ans),
            set_time(valid, P9_SETATTR_MTIME, P9_SETATTR_MTIME_SET, ms, mns),
        };
        if (utimensat(f->fd, "", t, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
            return -errno;
    }
    return 0;
}

/* Tfsync: fid datasync. */
int p9_op_fsync(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    uint32_t datasync = p9_get32(in);
    if (in->bad)
        return -EINVAL;
    if (!f || f->open_fd < 0)
        return -EBADF;
    return (datasync ? fdatasync(f->open_fd) : fsync(f->open_fd)) < 0 ? -errno : 0;
}

/* Tlock: fid type flags start length proc_id client_id -> status. POSIX locks are the guest
 * kernel's own (as QEMU's server does): always granted here, no host lock taken. */
int p9_op_lock(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    uint8_t type = p9_get8(in);
    (void)p9_get32(in);
    (void)p9_get64(in);
    (void)p9_get64(in);
    (void)p9_get32(in);
    uint16_t len;
    (void)p9_getstr(in, &len);
    if (in->bad || type > 2)
        return -EINVAL;
    if (!f)
        return -EBADF;
    p9_put8(o, 0); /* P9_LOCK_SUCCESS */
    return 0;
}

/* Tgetlock: fid type start length proc_id client_id -> the same with type UNLCK. */
int p9_op_getlock(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    uint8_t type = p9_get8(in);
    uint64_t start = p9_get64(in), length = p9_get64(in);
    uint32_t proc_id = p9_get32(in);
    uint16_t len;
    const char *client = p9_getstr(in, &len);
    if (in->bad || type > 2)
        return -EINVAL;
    if (!f)
        return -EBADF;
    p9_put8(o, 2); /* P9_LOCK_TYPE_UNLCK: nothing on the host holds it */
    p9_put64(o, start);
    p9_put64(o, length);
    p9_put32(o, proc_id);
    p9_putstr(o, client, len);
    return 0;
}

/* Tread: fid offset count -> count data. */
int p9_op_read(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_fid_get(s, p9_get32(in));
    uint64_t offset = p9_get64(in);
    uint32_t count = p9_get32(in);
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    size_t room = o->cap - o->len - 4;
    if (count > room)
        count = (uint32_t)room;
    uint8_t *cnt = p9_reserve(o, 4), *data = o->p + o->len;
    if (f->kind == P9_FID_XATTR_READ) {
        uint64_t n = offset < f->xattr_len ? f->xattr_len - offset : 0;
        if (n > count)
            n = count;
        if (n)
            memcpy(data, f->xattr + offset, n);
        count = (uint32_t)n;
    } else if (f->kind == P9_FID_FILE && f->open_fd >= 0) {
        if (offset > INT64_MAX)
            return -EINVAL;
        ssize_t n = pread(f->open_fd, data, count, (off_t)offset);
        if (n < 0)
            return -errno;
        count = (uint32_t)n;
    } else {
        return -EBADF;
    }
    uint32_t le = htole32(count);
    memcpy(cnt, &le, 4);
    o->len += count;
    return 0;
}

/* Tread straight into the reply's buffers (virtio_9p.c: no copy through the reply buffer):
 * the data lands after the 11-byte header of in[], then the header is written. Returns the
 * reply's length, or 0 when the request is not a well-formed Tread of an open file (the
 * caller then handles it as any other request, which answers it or its error). */
size_t p9_server_read_direct(struct p9_server *s, const uint8_t *req, size_t req_len,
                             const struct iovec *in, unsigned nr_in, size_t cap)
{
    struct p9_in m = {.p = req, .left = req_len};
    uint32_t size = p9_get32(&m);
    uint8_t type = p9_get8(&m);
    uint16_t tag = p9_get16(&m);
    struct p9_fid *f = p9_fid_get(s, p9_get32(&m));
    uint64_t offset = p9_get64(&m);
    uint32_t count = p9_get32(&m);
    if (m.bad || type != P9_TREAD || size != P9_HEADER_LEN + 16 || size > req_len || !f ||
        f->kind != P9_FID_FILE || f->open_fd < 0 || offset > INT64_MAX || nr_in > 1024)
        return 0;
    if (cap > s->msize)
        cap = s->msize;
    if (cap < P9_HEADER_LEN + 4)
        return 0;
    if (count > cap - P9_HEADER_LEN - 4)
        count = (uint32_t)(cap - P9_HEADER_LEN - 4);
    struct iovec v[1024];
    unsigned n = 0;
    size_t skip = P9_HEADER_LEN + 4, want = count;
    for (unsigned i = 0; i < nr_in && want; i++) {
        size_t len = in[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        len -= skip;
        if (len > want)
            len = want;
        v[n++] = (struct iovec){(uint8_t *)in[i].iov_base + skip, len};
        want -= len, skip = 0;
    }
    ssize_t got = n ? preadv(f->open_fd, v, (int)n, (off_t)offset) : 0;
    if (got < 0)
        return 0;
    uint8_t hdr[P9_HEADER_LEN + 4];
    struct p9_out o = {.p = hdr, .len = 0, .cap = sizeof(hdr)};
    p9_put32(&o, (uint32_t)(P9_HEADER_LEN + 4 + got));
    p9_put8(&o, P9_TREAD + 1);
    p9_put16(&o, tag);
    p9_put32(&o, (uint32_t)got);
    size_t left = sizeof(hdr);
    const uint8_t *src = hdr;
    for (unsigned i = 0; i < nr_in && left; i++) {
        size_t k = in[i].iov_len < left ? in[i].iov_len : left;
        memcpy(in[i].iov_base, src, k);
        src += k, left -= k;
    }
    return P9_HEADER_LEN + 4 + (size_t)got;
}

/* Twrite: fid offset count data -> count. */
int p9_op_write(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_fid_get(s, p9_get32(in));
    uint64_t offset = p9_get64(in);
    uint32_t count = p9_get32(in);
    const uint8_t *data = p9_getbytes(in, count);
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    if (f->kind == P9_FID_XATTR_WRITE) {
        if (offset > f->xattr_len || count > f->xattr_len - offset)
            return -ENOSPC;
        if (count)
            memcpy(f->xattr + offset, data, count);
        if (offset + count > f->xattr_written)
            f->xattr_written = offset + count;
    } else if (f->kind == P9_FID_FILE && f->open_fd >= 0 && f->open_write) {
        if (offset > INT64_MAX)
            return -EINVAL;
        ssize_t n = pwrite(f->open_fd, data, count, (off_t)offset);
        if (n < 0)
            return -errno;
        count = (uint32_t)n;
    } else {
        return -EBADF;
    }
    p9_put32(o, count);
    return 0;
}
