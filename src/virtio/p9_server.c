/* The 9P2000.L session: Tversion, Tattach, Twalk, Tclunk, Tflush, the fid table, and the
 * dispatch of every other message to p9_ops.c. Confinement (docs/9p.md): a fid holds an O_PATH
 * fd of its file; a walk goes one checked component at a time with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW, so a symlink is never followed on the host; ".." is
 * resolved from the share's root by the fid's path, beneath the root, and stays at the root. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "virtio/p9_int.h"

int p9_open_beneath(int dir, const char *name, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? (mode & 07777) : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS,
    };
    long fd = syscall(SYS_openat2, dir, name, &how, sizeof(how));
    return fd < 0 ? -errno : (int)fd;
}

int p9_reopen(struct p9_server *s, const struct p9_fid *f, int flags)
{
    if (S_ISLNK(f->mode))
        return -ELOOP;
    if (!S_ISREG(f->mode) && !S_ISDIR(f->mode))
        return -EINVAL; /* never a device node, FIFO or socket on the host */
    char num[16];
    snprintf(num, sizeof(num), "%d", f->fd);
    int fd = openat(s->proc_fd, num, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

char *p9_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    if (a + b + 2 > 4096)
        return NULL;
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    size_t at = 0;
    if (a) {
        memcpy(p, dir, a);
        p[a] = '/';
        at = a + 1;
    }
    memcpy(p + at, name, b + 1);
    return p;
}

static unsigned bucket(uint32_t num)
{
    return (num * 2654435761u) % P9_FID_BUCKETS;
}

struct p9_fid *p9_fid_get(struct p9_server *s, uint32_t num)
{
    for (struct p9_fid *f = s->fids[bucket(num)]; f; f = f->next)
        if (f->num == num)
            return f;
    return NULL;
}

struct p9_fid *p9_file_fid(struct p9_server *s, uint32_t num)
{
    struct p9_fid *f = p9_fid_get(s, num);
    return f && f->kind == P9_FID_FILE ? f : NULL;
}

int p9_parsed(const struct p9_in *in, int name_r, const struct p9_fid *f)
{
    if (in->bad)
        return -EINVAL;
    return name_r < 0 ? name_r : f ? 0 : -EBADF;
}

int p9_fid_add(struct p9_server *s, uint32_t num, struct p9_fid **out)
{
    if (num == P9_NOFID || p9_fid_get(s, num))
        return -EBADF;
    if (s->nr_fids >= P9_MAX_FIDS)
        return -EMFILE;
    struct p9_fid *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->num = num;
    f->fd = f->open_fd = -1;
    f->next = s->fids[bucket(num)];
    s->fids[bucket(num)] = f;
    s->nr_fids++;
    *out = f;
    return 0;
}

void p9_fid_remove(struct p9_server *s, struct p9_fid *f)
{
    struct p9_fid **pp = &s->fids[bucket(f->num)];
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    s->nr_fids--;
    if (f->fd >= 0)
        close(f->fd);
    if (f->open_fd >= 0)
        close(f->open_fd);
    free(f->path);
    free(f->xattr);
    free(f);
}

void p9_server_reset(struct p9_server *s)
{
    for (unsigned i = 0; i < P9_FID_BUCKETS; i++)
        while (s->fids[i])
            p9_fid_remove(s, s->fids[i]);
    s->msize = P9_MAX_MSIZE;
}

int p9_server_create(struct p9_server **out, const char *path, bool read_only, struct wisp_err *err)
{
    struct p9_server *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_err_set(err, ENOMEM, "9p: out of memory");
    s->read_only = read_only;
    s->msize = P9_MAX_MSIZE;
    s->proc_fd = -1;
    s->root_fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->root_fd < 0) {
        int e = errno;
        free(s);
        return wisp_err_sys(err, e, "%s: cannot open the shared directory", path);
    }
    s->proc_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->proc_fd < 0 || fstat(s->root_fd, &s->root_st) < 0) {
        int e = errno;
        p9_server_destroy(s);
        return wisp_err_sys(err, e, "9p: /proc/self/fd (needed to reopen files by their fd)");
    }
    *out = s;
    return 0;
}

void p9_server_destroy(struct p9_server *s)
{
    if (!s)
        return;
    p9_server_reset(s);
    if (s->root_fd >= 0)
        close(s->root_fd);
    if (s->proc_fd >= 0)
        close(s->proc_fd);
    free(s);
}

uint32_t p9_server_msize(const struct p9_server *s)
{
    return s->msize;
}

unsigned p9_server_nr_fids(const struct p9_server *s)
{
    return s->nr_fids;
}

/* Tversion: msize[4] version[s]. A new session: every fid is forgotten. */
static int op_version(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    uint32_t msize = p9_get32(in);
    uint16_t len;
    const char *v = p9_getstr(in, &len);
    if (in->bad)
        return -EINVAL;
    if (msize < P9_MIN_MSIZE)
        return -EINVAL;
    p9_server_reset(s);
    s->msize = msize < P9_MAX_MSIZE ? msize : P9_MAX_MSIZE;
    p9_put32(o, s->msize);
    if (len == 8 && !memcmp(v, "9P2000.L", 8))
        p9_putstr(o, "9P2000.L", 8);
    else
        p9_putstr(o, "unknown", 7);
    return 0;
}

static int fid_stat(int fd, struct stat *st)
{
    return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* Tattach: fid[4] afid[4] uname[s] aname[s] n_uname[4] -> qid. aname is ignored: the share is
 * the one root there is. */
static int op_attach(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    uint32_t num = p9_get32(in);
    (void)p9_get32(in);
    uint16_t len;
    (void)p9_getstr(in, &len);
    (void)p9_getstr(in, &len);
    uint32_t uid = p9_get32(in);
    if (in->bad)
        return -EINVAL;
    struct stat st;
    cleanup_close int fd = fcntl(s->root_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = fid_stat(fd, &st);
    if (r < 0)
        return r;
    char *path = strdup("");
    if (!path)
        return -ENOMEM;
    struct p9_fid *f;
    r = p9_fid_add(s, num, &f);
    if (r < 0) {
        free(path);
        return r;
    }
    f->fd = steal_fd(&fd);
    f->path = path;
    f->mode = st.st_mode;
    f->uid = uid == P9_NONUNAME ? 65534 : uid;
    p9_putqid(o, &st);
    return 0;
}

/* The parent of `path` from the root, beneath it ("" and "x" give the root). */
static int open_parent(struct p9_server *s, const char *path, char **parent_out)
{
    const char *slash = strrchr(path, '/');
    char *parent = strndup(path, slash ? (size_t)(slash - path) : 0);
    if (!parent)
        return -ENOMEM;
    int fd = *parent ? p9_open_beneath(s->root_fd, parent, O_PATH, 0)
                     : fcntl(s->root_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        int e = *parent ? fd : -errno;
        free(parent);
        return e;
    }
    *parent_out = parent;
    return fd;
}

/* One step of a walk from (*fd, *path): name, or ".." (the root's parent is the root). */
static int walk_one(struct p9_server *s, int *fd, char **path, const char *name, struct stat *st)
{
    int nfd;
    char *npath = NULL;
    if (!strcmp(name, "..")) {
        if (!**path) {
            nfd = fcntl(s->root_fd, F_DUPFD_CLOEXEC, 0);
            npath = strdup("");
            if (nfd < 0 || !npath) {
                free(npath);
                if (nfd >= 0)
                    close(nfd);
                return -ENOMEM;
            }
        } else {
            nfd = open_parent(s, *path, &npath);
            if (nfd < 0)
                return nfd;
        }
    } else {
        npath = p9_join(*path, name);
        if (!npath)
            return -ENAMETOOLONG;
        nfd = p9_open_beneath(*fd, name, O_PATH, 0);
        if (nfd < 0) {
            free(npath);
            return nfd;
        }
    }
    int r = fid_stat(nfd, st);
    if (r < 0) {
        close(nfd);
        free(npath);
        return r;
    }
    close(*fd);
    free(*path);
    *fd = nfd;
    *path = npath;
    return 0;
}

/* Twalk: fid[4] newfid[4] nwname[2] nwname*(wname[s]) -> nwqid[2] nwqid*(qid). A walk that
 * fails after its first name answers the qids it got and creates no newfid (9P's rule). */
static int op_walk(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    uint32_t num = p9_get32(in), newnum = p9_get32(in);
    uint16_t n = p9_get16(in);
    if (in->bad)
        return -EINVAL;
    if (n > P9_MAX_WALK)
        return -E2BIG;
    struct p9_fid *f = p9_fid_get(s, num);
    if (!f || f->kind != P9_FID_FILE)
        return -EBADF;
    if (newnum != num && p9_fid_get(s, newnum))
        return -EBADF;
    if (newnum == num && n && f->open_fd >= 0)
        return -EBUSY;
    char names[P9_MAX_WALK][256];
    for (unsigned i = 0; i < n; i++) {
        uint16_t len;
        const char *nm = p9_getstr(in, &len);
        if (!nm)
            return -EINVAL;
        if (len == 2 && nm[0] == '.' && nm[1] == '.') {
            strcpy(names[i], "..");
            continue;
        }
        int r = p9_check_name(nm, len, names[i]);
        if (r < 0)
            return r;
    }
    cleanup_close int fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
    cleanup_free char *path = strdup(f->path);
    if (fd < 0 || !path)
        return fd < 0 ? -errno : -ENOMEM;
    mode_t mode = f->mode;
    p9_put16(o, 0);
    unsigned done = 0;
    for (; done < n; done++) {
        struct stat st;
        int r = walk_one(s, &fd, &path, names[done], &st);
        if (r < 0) {
            if (done == 0)
                return r;
            break;
        }
        mode = st.st_mode;
        p9_putqid(o, &st);
    }
    uint16_t count = htole16((uint16_t)done);
    memcpy(o->p + P9_HEADER_LEN, &count, sizeof(count));
    if (done < n)
        return 0;
    struct p9_fid *nf = f;
    if (newnum != num) {
        int r = p9_fid_add(s, newnum, &nf);
        if (r < 0)
            return r;
        nf->uid = f->uid;
    } else {
        close(nf->fd);
        free(nf->path);
    }
    nf->fd = steal_fd(&fd);
    nf->path = steal_ptr(&path);
    nf->mode = mode;
    return 0;
}

static int op_clunk(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    struct p9_fid *f = p9_fid_get(s, p9_get32(in));
    if (in->bad)
        return -EINVAL;
    if (!f)
        return -EBADF;
    int r = f->kind == P9_FID_XATTR_WRITE ? p9_xattr_commit(s, f) : 0;
    p9_fid_remove(s, f);
    return r;
}

/* Requests are answered in order, one at a time: the one to flush has been answered. */
static int op_flush(struct p9_server *s, struct p9_in *in, struct p9_out *o)
{
    (void)p9_get16(in);
    return in->bad ? -EINVAL : 0;
}

static p9_op_fn *const ops[128] = {
    [P9_TSTATFS] = p9_op_statfs,
    [P9_TLOPEN] = p9_op_lopen,
    [P9_TLCREATE] = p9_op_lcreate,
    [P9_TSYMLINK] = p9_op_symlink,
    [P9_TMKNOD] = p9_op_mknod,
    [P9_TRENAME] = p9_op_rename,
    [P9_TREADLINK] = p9_op_readlink,
    [P9_TGETATTR] = p9_op_getattr,
    [P9_TSETATTR] = p9_op_setattr,
    [P9_TXATTRWALK] = p9_op_xattrwalk,
    [P9_TXATTRCREATE] = p9_op_xattrcreate,
    [P9_TREADDIR] = p9_op_readdir,
    [P9_TFSYNC] = p9_op_fsync,
    [P9_TLOCK] = p9_op_lock,
    [P9_TGETLOCK] = p9_op_getlock,
    [P9_TLINK] = p9_op_link,
    [P9_TMKDIR] = p9_op_mkdir,
    [P9_TRENAMEAT] = p9_op_renameat,
    [P9_TUNLINKAT] = p9_op_unlinkat,
    [P9_TVERSION] = op_version,
    [P9_TATTACH] = op_attach,
    [P9_TFLUSH] = op_flush,
    [P9_TWALK] = op_walk,
    [P9_TREAD] = p9_op_read,
    [P9_TWRITE] = p9_op_write,
    [P9_TCLUNK] = op_clunk,
    [P9_TREMOVE] = p9_op_remove,
};

static size_t finish(struct p9_out *o, uint8_t type, uint16_t tag)
{
    uint32_t size = htole32((uint32_t)o->len);
    memcpy(o->p, &size, 4);
    o->p[4] = type;
    tag = htole16(tag);
    memcpy(o->p + 5, &tag, 2);
    return o->len;
}

static size_t lerror(struct p9_out *o, uint16_t tag, int e)
{
    o->len = P9_HEADER_LEN;
    o->full = false;
    p9_put32(o, (uint32_t)e);
    return finish(o, P9_RLERROR, tag);
}

size_t p9_server_handle(struct p9_server *s, const uint8_t *req, size_t req_len, uint8_t *out,
                        size_t cap)
{
    struct p9_in in = {.p = req, .left = req_len};
    uint32_t size = p9_get32(&in);
    uint8_t type = p9_get8(&in);
    uint16_t tag = p9_get16(&in);
    if (cap > s->msize)
        cap = s->msize;
    struct p9_out o = {.p = out, .len = P9_HEADER_LEN, .cap = cap};
    if (cap < P9_HEADER_LEN + 4)
        return 0;
    if (in.bad || size < P9_HEADER_LEN || size > req_len || size > s->msize)
        return lerror(&o, tag, EINVAL);
    in.left = size - P9_HEADER_LEN;
    p9_op_fn *fn = type < ARRAY_SIZE(ops) ? ops[type] : NULL;
    if (!fn || (type & 1))
        return lerror(&o, tag, EOPNOTSUPP);
    int r = fn(s, &in, &o);
    if (r < 0)
        return lerror(&o, tag, -r);
    if (o.full) /* cannot happen for a cap >= P9_MIN_MSIZE; said so rather than cut */
        return lerror(&o, tag, EMSGSIZE);
    return finish(&o, (uint8_t)(type + 1), tag);
}
