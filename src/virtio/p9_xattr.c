/* 9P2000.L's extended attributes (Txattrwalk, Txattrcreate, and the Tclunk that sets them) and
 * Treaddir. Attributes are read and set on the fid's file reopened through /proc/self/fd
 * (regular files and directories; other files have none here), so no name is resolved; the
 * trusted.* namespace is the host's and is refused. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "virtio/p9_int.h"

static bool name_allowed(const char *name)
{
    return strncmp(name, "trusted.", 8) != 0;
}

/* An attribute's name: 1..255 bytes, no NUL, not trusted.*. */
static int get_xattr_name(struct p9_in *in, char name[256], bool may_be_empty)
{
    uint16_t len;
    const char *s = p9_getstr(in, &len);
    if (!s)
        return -EINVAL;
    if (len > 255)
        return -ERANGE;
    if ((!len && !may_be_empty) || memchr(s, '\0', len))
        return -EINVAL;
    memcpy(name, s, len);
    name[len] = '\0';
    return len && !name_allowed(name) ? -EOPNOTSUPP : 0;
}

/* The names of fd's attributes, trusted.* left out. */
static int list_names(int fd, uint8_t **out, uint64_t *out_len)
{
    cleanup_free char *buf = malloc(P9_XATTR_MAX);
    if (!buf)
        return -ENOMEM;
    ssize_t n = flistxattr(fd, buf, P9_XATTR_MAX);
    if (n < 0)
        return -errno;
    size_t w = 0;
    for (ssize_t i = 0; i < n;) {
        size_t l = strnlen(buf + i, (size_t)(n - i));
        if (name_allowed(buf + i)) {
            memmove(buf + w, buf + i, l);
            buf[w + l] = '\0';
            w += l + 1;
        }
        i += (ssize_t)l + 1;
    }
    *out = (uint8_t *)steal_ptr(&buf);
    *out_len = w;
    return 0;
}

static int get_value(int fd, const char *name, uint8_t **out, uint64_t *out_len)
{
    cleanup_free uint8_t *buf = malloc(P9_XATTR_MAX);
    if (!buf)
        return -ENOMEM;
    ssize_t n = fgetxattr(fd, name, buf, P9_XATTR_MAX);
    if (n < 0)
        return -errno;
    *out = steal_ptr(&buf);
    *out_len = (uint64_t)n;
    return 0;
}

/* Txattrwalk: fid newfid name -> size. newfid then reads the value (or, for an empty name, the
 * list of names) with Tread. */
int p9_op_xattrwalk(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    uint32_t newnum = p9_get32(in);
    char name[256];
    int r = p9_parsed(in, get_xattr_name(in, name, true), f);
    if (r < 0)
        return r;
    uint8_t *buf = NULL;
    uint64_t len = 0;
    if (S_ISREG(f->mode) || S_ISDIR(f->mode)) {
        cleanup_close int fd = p9_reopen(s, f, O_RDONLY);
        if (fd < 0)
            return fd;
        r = *name ? get_value(fd, name, &buf, &len) : list_names(fd, &buf, &len);
        if (r < 0)
            return r;
    } else if (*name) {
        return -ENODATA;
    }
    struct p9_fid *nf;
    r = p9_fid_add(s, newnum, &nf);
    if (r < 0) {
        free(buf);
        return r;
    }
    nf->kind = P9_FID_XATTR_READ;
    nf->xattr = buf;
    nf->xattr_len = len;
    p9_put64(o, len);
    return 0;
}

/* Txattrcreate: fid name attr_size flags. The fid becomes one that takes the value with
 * Twrite; Tclunk sets it (size 0: removes the attribute, as QEMU's server does). */
int p9_op_xattrcreate(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_file_fid(s, p9_get32(in));
    char name[256];
    int r = get_xattr_name(in, name, false);
    uint64_t size = p9_get64(in);
    uint32_t flags = p9_get32(in);
    r = p9_parsed(in, r, f);
    if (r < 0)
        return r;
    if (f->open_fd >= 0)
        return -EBUSY;
    if (flags & ~(uint32_t)(XATTR_CREATE | XATTR_REPLACE))
        return -EINVAL;
    if (size > P9_XATTR_MAX)
        return -E2BIG;
    if (s->read_only)
        return -EROFS;
    if (!S_ISREG(f->mode) && !S_ISDIR(f->mode))
        return -EPERM;
    uint8_t *buf = calloc(1, size ? size : 1);
    if (!buf)
        return -ENOMEM;
    f->kind = P9_FID_XATTR_WRITE;
    f->xattr = buf;
    f->xattr_len = size;
    f->xattr_written = 0;
    f->xattr_flags = (int)flags;
    memcpy(f->xattr_name, name, sizeof(name));
    return 0;
}

int p9_xattr_commit(struct p9_server *s, struct p9_fid *f)
{
    if (f->xattr_written != f->xattr_len)
        return -EINVAL;
    cleanup_close int fd = p9_reopen(s, f, O_RDONLY);
    if (fd < 0)
        return fd;
    int r = f->xattr_len ? fsetxattr(fd, f->xattr_name, f->xattr, f->xattr_len, f->xattr_flags)
                         : fremovexattr(fd, f->xattr_name);
    return r < 0 ? -errno : 0;
}

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static uint8_t dtype_qid(unsigned char t)
{
    return t == DT_DIR ? P9_QTDIR : t == DT_LNK ? P9_QTSYMLINK : P9_QTFILE;
}

/* Treaddir: fid offset count -> count data, entries qid offset type name. offset is the
 * host's directory cookie (d_off); the root's ".." is shown as the root itself. */
int p9_op_readdir(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_fid_get(s, p9_get32(in));
    uint64_t offset = p9_get64(in);
    uint32_t count = p9_get32(in);
    if (in->bad)
        return -EINVAL;
    if (!f || f->kind != P9_FID_FILE || f->open_fd < 0 || !S_ISDIR(f->mode))
        return -EBADF;
    if (offset > INT64_MAX)
        return -EINVAL;
    size_t room = o->cap - o->len - 4;
    if (count > room)
        count = (uint32_t)room;
    size_t bufsize = count < 65536 ? (count < 512 ? 512 : count) : 65536;
    cleanup_free uint8_t *buf = malloc(bufsize);
    if (!buf)
        return -ENOMEM;
    if (lseek(f->open_fd, (off_t)offset, SEEK_SET) < 0)
        return -errno;
    long n = syscall(SYS_getdents64, f->open_fd, buf, bufsize);
    if (n < 0)
        return -errno;
    uint8_t *cnt = p9_reserve(o, 4);
    size_t start = o->len, limit = start + count;
    bool root = !*f->path;
    for (long i = 0; i < n;) {
        const struct linux_dirent64 *d = (const void *)(buf + i);
        size_t name_at = offsetof(struct linux_dirent64, d_name);
        if (d->d_reclen <= name_at || d->d_reclen > n - i)
            break;
        size_t nl = strnlen(d->d_name, d->d_reclen - name_at);
        if (o->len + P9_QID_LEN + 8 + 1 + 2 + nl > limit)
            break;
        uint64_t ino = d->d_ino;
        if (root && nl == 2 && !memcmp(d->d_name, "..", 2))
            ino = s->root_st.st_ino;
        p9_put8(o, dtype_qid(d->d_type));
        p9_put32(o, 0);
        p9_put64(o, ino);
        p9_put64(o, (uint64_t)d->d_off);
        p9_put8(o, d->d_type);
        p9_putstr(o, d->d_name, nl);
        i += d->d_reclen;
    }
    uint32_t le = htole32((uint32_t)(o->len - start));
    memcpy(cnt, &le, 4);
    return 0;
}
