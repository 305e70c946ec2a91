/* Unit tests of the 9P2000.L server (src/virtio/p9_*.c) over a temporary directory, driven
 * with raw messages: decoding and encoding, every message cut short, the confinement (".." at
 * the root, names with '/', symlinks out of the share, a directory swapped for a symlink after
 * the walk), the read-only share, xattrs and readdir across several calls. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "virtio/p9.h"
#include "virtio/p9_int.h"

struct msg {
    uint8_t b[1 << 16];
    size_t len;
};

/* A request: type, tag, then fields by fmt: b u8, w u16, d u32, q u64, s string. */
static size_t build(struct msg *m, uint8_t type, const char *fmt, ...)
{
    struct p9_out o = {.p = m->b, .len = 0, .cap = sizeof(m->b)};
    p9_put32(&o, 0);
    p9_put8(&o, type);
    p9_put16(&o, 0x1234);
    va_list ap;
    va_start(ap, fmt);
    for (const char *f = fmt; *f; f++) {
        switch (*f) {
        case 'b':
            p9_put8(&o, (uint8_t)va_arg(ap, int));
            break;
        case 'w':
            p9_put16(&o, (uint16_t)va_arg(ap, int));
            break;
        case 'd':
            p9_put32(&o, va_arg(ap, uint32_t));
            break;
        case 'q':
            p9_put64(&o, va_arg(ap, uint64_t));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            p9_putstr(&o, s, strlen(s));
            break;
        }
        }
    }
    va_end(ap);
    uint32_t size = htole32((uint32_t)o.len);
    memcpy(m->b, &size, 4);
    return m->len = o.len;
}

struct fixture {
    char dir[64], share[96], outside[96];
    struct p9_server *s;
    struct msg req, rep;
    struct p9_in r; /* the last reply's body */
    uint8_t rtype;
};

static struct fixture fx;

static void path_of(char *out, size_t n, const char *rel)
{
    snprintf(out, n, "%s/%s", fx.share, rel);
}

static int setup(void **state)
{
    snprintf(fx.dir, sizeof(fx.dir), "/var/tmp/wisp-p9-XXXXXX");
    assert_non_null(mkdtemp(fx.dir));
    snprintf(fx.share, sizeof(fx.share), "%s/share", fx.dir);
    snprintf(fx.outside, sizeof(fx.outside), "%s/outside", fx.dir);
    assert_int_equal(mkdir(fx.share, 0755), 0);
    assert_int_equal(mkdir(fx.outside, 0755), 0);
    char p[256];
    snprintf(p, sizeof(p), "%s/secret", fx.outside);
    FILE *f = fopen(p, "w");
    fputs("SECRET", f);
    fclose(f);
    path_of(p, sizeof(p), "hello");
    f = fopen(p, "w");
    fputs("hello world", f);
    fclose(f);
    path_of(p, sizeof(p), "abs");
    assert_int_equal(symlink(fx.outside, p), 0);
    path_of(p, sizeof(p), "rel");
    assert_int_equal(symlink("../outside", p), 0);
    path_of(p, sizeof(p), "d");
    assert_int_equal(mkdir(p, 0755), 0);
    struct wisp_err err = {0};
    assert_int_equal(p9_server_create(&fx.s, fx.share, *state != NULL, &err), 0);
    return 0;
}

static int teardown(void **state)
{
    p9_server_destroy(fx.s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", fx.dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* Sends fx.req; returns the reply's errno for Rlerror, else 0 with fx.r at the body. */
static int send_req(void)
{
    size_t n = p9_server_handle(fx.s, fx.req.b, fx.req.len, fx.rep.b, sizeof(fx.rep.b));
    assert_true(n >= P9_HEADER_LEN);
    uint32_t size;
    memcpy(&size, fx.rep.b, 4);
    assert_int_equal(le32toh(size), n);
    assert_int_equal(fx.rep.b[5] | fx.rep.b[6] << 8, 0x1234);
    fx.rtype = fx.rep.b[4];
    fx.r = (struct p9_in){.p = fx.rep.b + P9_HEADER_LEN, .left = n - P9_HEADER_LEN};
    if (fx.rtype == P9_RLERROR)
        return (int)p9_get32(&fx.r);
    assert_int_equal(fx.rtype, fx.req.b[4] + 1);
    return 0;
}

#define T(type, ...) (build(&fx.req, (type), __VA_ARGS__), send_req())

static void attach(uint32_t fid)
{
    assert_int_equal(T(P9_TVERSION, "ds", (uint32_t)65536, "9P2000.L"), 0);
    assert_int_equal(
        T(P9_TATTACH, "ddssd", (uint32_t)fid, (uint32_t)P9_NOFID, "root", "", (uint32_t)0), 0);
}

static uint64_t qid_path(void)
{
    (void)p9_get8(&fx.r);
    (void)p9_get32(&fx.r);
    return p9_get64(&fx.r);
}

static void test_version(void **state)
{
    assert_int_equal(T(P9_TVERSION, "ds", (uint32_t)1u << 30, "9P2000.L"), 0);
    assert_int_equal(p9_get32(&fx.r), P9_MAX_MSIZE);
    uint16_t len;
    const char *v = p9_getstr(&fx.r, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(v, "9P2000.L", 8);
    assert_int_equal(T(P9_TVERSION, "ds", (uint32_t)8192, "9P2000.u"), 0);
    assert_int_equal(p9_get32(&fx.r), 8192);
    v = p9_getstr(&fx.r, &len);
    assert_memory_equal(v, "unknown", 7);
    assert_int_equal(T(P9_TVERSION, "ds", (uint32_t)100, "9P2000.L"), EINVAL);
    /* a request larger than the negotiated msize */
    assert_int_equal(T(P9_TVERSION, "ds", (uint32_t)8192, "9P2000.L"), 0);
    build(&fx.req, P9_TWRITE, "dqd", (uint32_t)1, (uint64_t)0, (uint32_t)9000);
    fx.req.len = 9100;
    uint32_t size = htole32(9100);
    memcpy(fx.req.b, &size, 4);
    assert_int_equal(send_req(), EINVAL);
}

static void test_malformed(void **state)
{
    attach(1);
    /* unknown types and R-messages */
    assert_int_equal(T(99, ""), EOPNOTSUPP);
    assert_int_equal(T(P9_TWALK + 1, ""), EOPNOTSUPP);
    assert_int_equal(T(200, ""), EOPNOTSUPP);
    /* a size field that lies */
    build(&fx.req, P9_TCLUNK, "d", (uint32_t)1);
    fx.req.b[0] = 200;
    assert_int_equal(send_req(), EINVAL);
    /* every T-message cut at every length answers Rlerror, never reads past its end */
    static const uint8_t types[] = {
        P9_TSTATFS,   P9_TLOPEN,   P9_TLCREATE, P9_TSYMLINK,   P9_TMKNOD,       P9_TRENAME,
        P9_TREADLINK, P9_TGETATTR, P9_TSETATTR, P9_TXATTRWALK, P9_TXATTRCREATE, P9_TREADDIR,
        P9_TFSYNC,    P9_TLOCK,    P9_TGETLOCK, P9_TLINK,      P9_TMKDIR,       P9_TRENAMEAT,
        P9_TUNLINKAT, P9_TATTACH,  P9_TFLUSH,   P9_TWALK,      P9_TREAD,        P9_TWRITE,
        P9_TCLUNK,    P9_TREMOVE};
    for (size_t t = 0; t < sizeof(types); t++) {
        for (size_t cut = 0; cut < 40; cut++) {
            /* fields of fid 1 (the root) and names, enough for any message */
            build(&fx.req, types[t], "ddssdddq", (uint32_t)1, (uint32_t)1, "xyz", "abc",
                  (uint32_t)0, (uint32_t)0, (uint32_t)0, (uint64_t)0);
            size_t full = fx.req.len - P9_HEADER_LEN;
            if (cut >= full)
                break;
            uint8_t *copy = malloc(P9_HEADER_LEN + cut); /* ASan sees any overread */
            memcpy(copy, fx.req.b, P9_HEADER_LEN + cut);
            uint32_t size = htole32((uint32_t)(P9_HEADER_LEN + cut));
            memcpy(copy, &size, 4);
            size_t n = p9_server_handle(fx.s, copy, P9_HEADER_LEN + cut, fx.rep.b, 4096);
            assert_true(n >= P9_HEADER_LEN);
            free(copy);
        }
    }
    /* a cut Tclunk or Tremove may have let fid 1 go: a new session */
    attach(1);
    assert_int_equal(T(P9_TGETATTR, "dq", (uint32_t)1, (uint64_t)P9_GETATTR_BASIC), 0);
    /* a reply buffer too small for even an Rlerror gets nothing */
    build(&fx.req, P9_TCLUNK, "d", (uint32_t)77);
    assert_int_equal(p9_server_handle(fx.s, fx.req.b, fx.req.len, fx.rep.b, 10), 0);
}

static void test_walk_confined(void **state)
{
    attach(1);
    struct stat root;
    assert_int_equal(stat(fx.share, &root), 0);
    /* ".." at the root is the root, however often */
    assert_int_equal(T(P9_TWALK, "ddwsss", (uint32_t)1, (uint32_t)2, 3, "..", "..", ".."), 0);
    assert_int_equal(p9_get16(&fx.r), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(qid_path(), root.st_ino);
    assert_int_equal(T(P9_TGETATTR, "dq", (uint32_t)2, (uint64_t)P9_GETATTR_BASIC), 0);
    (void)p9_get64(&fx.r);
    assert_int_equal(qid_path(), root.st_ino);
    /* d/.. is the root again */
    assert_int_equal(T(P9_TWALK, "ddwss", (uint32_t)1, (uint32_t)3, 2, "d", ".."), 0);
    assert_int_equal(p9_get16(&fx.r), 2);
    (void)qid_path();
    assert_int_equal(qid_path(), root.st_ino);
    /* names with '/', ".", empty, or a NUL are refused */
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)4, 1, "d/../.."), EINVAL);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)4, 1, "/etc"), EINVAL);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)4, 1, "."), EINVAL);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)4, 1, ""), EINVAL);
    assert_int_equal(T(P9_TWALK, "ddw", (uint32_t)1, (uint32_t)4, 17), E2BIG);
    /* symlinks out of the share are walked as symlinks, never through */
    assert_int_equal(T(P9_TWALK, "ddwss", (uint32_t)1, (uint32_t)4, 2, "abs", "secret"), 0);
    assert_int_equal(p9_get16(&fx.r), 1); /* only "abs" itself */
    assert_int_equal(p9_get8(&fx.r), P9_QTSYMLINK);
    assert_int_equal(T(P9_TCLUNK, "d", (uint32_t)4), EBADF); /* no newfid after a partial walk */
    assert_int_equal(T(P9_TWALK, "ddwss", (uint32_t)1, (uint32_t)4, 2, "rel", "secret"), 0);
    assert_int_equal(p9_get16(&fx.r), 1);
    /* a symlink fid cannot be opened, and reads back its target */
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)5, 1, "abs"), 0);
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)5, (uint32_t)O_RDONLY), ELOOP);
    assert_int_equal(T(P9_TREADLINK, "d", (uint32_t)5), 0);
    uint16_t len;
    const char *t = p9_getstr(&fx.r, &len);
    assert_int_equal(len, strlen(fx.outside));
    assert_memory_equal(t, fx.outside, len);
    /* newfid in use */
    assert_int_equal(T(P9_TWALK, "ddw", (uint32_t)1, (uint32_t)5, 0), EBADF);
}

/* A directory the guest walked to is swapped for a symlink to the outside: the fid still
 * names the directory it walked to, and a new walk stops at the symlink. */
static void test_swap_race(void **state)
{
    attach(1);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)2, 1, "d"), 0);
    char d[256], moved[256];
    path_of(d, sizeof(d), "d");
    path_of(moved, sizeof(moved), "d.moved");
    assert_int_equal(rename(d, moved), 0);
    assert_int_equal(symlink(fx.outside, d), 0);
    /* created through fid 2: lands in the moved directory, not beside the secret */
    assert_int_equal(
        T(P9_TLCREATE, "dsddd", (uint32_t)2, "new", (uint32_t)O_RDWR, (uint32_t)0644, (uint32_t)0),
        0);
    char p[300];
    snprintf(p, sizeof(p), "%s/new", moved);
    assert_int_equal(access(p, F_OK), 0);
    snprintf(p, sizeof(p), "%s/new", fx.outside);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(T(P9_TWALK, "ddwss", (uint32_t)1, (uint32_t)3, 2, "d", "secret"), 0);
    assert_int_equal(p9_get16(&fx.r), 1);
    assert_int_equal(T(P9_TUNLINKAT, "dsd", (uint32_t)1, "d", (uint32_t)0),
                     0); /* the symlink, not its target */
    assert_int_equal(access(fx.outside, F_OK), 0);
}

static void test_files(void **state)
{
    attach(1);
    assert_int_equal(T(P9_TWALK, "ddw", (uint32_t)1, (uint32_t)2, 0), 0);
    assert_int_equal(
        T(P9_TLCREATE, "dsddd", (uint32_t)2, "f", (uint32_t)O_RDWR, (uint32_t)0640, (uint32_t)0),
        0);
    assert_int_equal(T(P9_TWRITE, "dqds", (uint32_t)2, (uint64_t)0, (uint32_t)7, "abcde"),
                     0); /* len[2] + 5 bytes */
    assert_int_equal(p9_get32(&fx.r), 7);
    assert_int_equal(T(P9_TREAD, "dqd", (uint32_t)2, (uint64_t)2, (uint32_t)100), 0);
    assert_int_equal(p9_get32(&fx.r), 5);
    assert_memory_equal(fx.r.p, "abcde", 5);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)3, 1, "f"), 0);
    assert_int_equal(T(P9_TSETATTR, "dddddqqqqq", 3u, P9_SETATTR_MODE | P9_SETATTR_SIZE, 0600u, 0u,
                       0u, (uint64_t)3, (uint64_t)0, (uint64_t)0, (uint64_t)0, (uint64_t)0),
                     0);
    char p[256];
    path_of(p, sizeof(p), "f");
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 3);
    assert_int_equal(T(P9_TGETATTR, "dq", (uint32_t)3, (uint64_t)P9_GETATTR_BASIC), 0);
    assert_int_equal(p9_get64(&fx.r), P9_GETATTR_BASIC);
    assert_int_equal(qid_path(), st.st_ino);
    assert_int_equal(p9_get32(&fx.r), st.st_mode);
    /* a write past the message, a read of an unopened fid */
    assert_int_equal(T(P9_TWRITE, "dqd", (uint32_t)2, (uint64_t)0, (uint32_t)100), EINVAL);
    assert_int_equal(T(P9_TREAD, "dqd", (uint32_t)3, (uint64_t)0, (uint32_t)10), EBADF);
    /* mkdir, rename, link, unlink */
    assert_int_equal(T(P9_TMKDIR, "dsdd", (uint32_t)1, "sub", (uint32_t)0755, (uint32_t)0), 0);
    assert_int_equal(T(P9_TRENAMEAT, "dsds", (uint32_t)1, "f", (uint32_t)1, "g"), 0);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)4, 1, "g"), 0);
    assert_int_equal(T(P9_TLINK, "dds", (uint32_t)1, (uint32_t)4, "h"), 0);
    path_of(p, sizeof(p), "h");
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_nlink, 2);
    assert_int_equal(T(P9_TUNLINKAT, "dsd", (uint32_t)1, "h", (uint32_t)0), 0);
    assert_int_equal(T(P9_TUNLINKAT, "dsd", (uint32_t)1, "sub", (uint32_t)0x200), 0);
    assert_int_equal(T(P9_TUNLINKAT, "dsd", (uint32_t)1, "..", (uint32_t)0), EINVAL);
    assert_int_equal(T(P9_TMKDIR, "dsdd", (uint32_t)1, "a/b", (uint32_t)0755, (uint32_t)0), EINVAL);
    assert_int_equal(T(P9_TSYMLINK, "dssd", (uint32_t)1, "l", "/etc/passwd", (uint32_t)0), 0);
    assert_int_equal(T(P9_TMKNOD, "dsdddd", (uint32_t)1, "fifo", (uint32_t)S_IFIFO | 0600,
                       (uint32_t)0, (uint32_t)0, (uint32_t)0),
                     0);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)5, 1, "fifo"), 0);
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)5, (uint32_t)O_RDONLY),
                     EINVAL); /* never opened on the host */
    /* nor by a create of its name (a FIFO without a reader would block the server) */
    assert_int_equal(T(P9_TWALK, "ddw", (uint32_t)1, (uint32_t)6, 0), 0);
    assert_int_equal(T(P9_TLCREATE, "dsddd", (uint32_t)6, "fifo", (uint32_t)O_WRONLY,
                       (uint32_t)0600, (uint32_t)0),
                     EEXIST);
    assert_int_equal(T(P9_TCLUNK, "d", (uint32_t)6), 0);
    assert_int_equal(T(P9_TSTATFS, "d", (uint32_t)1), 0);
    assert_int_equal(T(P9_TFSYNC, "dd", (uint32_t)2, (uint32_t)1), 0);
    assert_int_equal(T(P9_TLOCK, "dbdqqds", (uint32_t)2, 1, (uint32_t)0, (uint64_t)0, (uint64_t)0,
                       (uint32_t)1, "c"),
                     0);
    assert_int_equal(p9_get8(&fx.r), 0);
    assert_int_equal(T(P9_TREMOVE, "d", (uint32_t)4), 0);
    path_of(p, sizeof(p), "g");
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(T(P9_TCLUNK, "d", (uint32_t)4), EBADF); /* Tremove clunked it */
    assert_int_equal(T(P9_TFLUSH, "w", 7), 0);
}

static void test_xattr(void **state)
{
    attach(1);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)2, 1, "hello"), 0);
    assert_int_equal(T(P9_TXATTRCREATE, "dsqd", (uint32_t)2, "user.k", (uint64_t)5, (uint32_t)0),
                     0);
    assert_int_equal(T(P9_TWRITE, "dqds", (uint32_t)2, (uint64_t)0, (uint32_t)5, "val"),
                     0); /* len 3 + "val" */
    assert_int_equal(T(P9_TCLUNK, "d", (uint32_t)2), 0);
    char p[256], v[16];
    path_of(p, sizeof(p), "hello");
    assert_int_equal(getxattr(p, "user.k", v, sizeof(v)), 5);
    assert_int_equal(T(P9_TXATTRWALK, "dds", (uint32_t)1, (uint32_t)3, "user.k"),
                     ENODATA); /* the root has none */
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)2, 1, "hello"), 0);
    assert_int_equal(T(P9_TXATTRWALK, "dds", (uint32_t)2, (uint32_t)3, "user.k"), 0);
    assert_int_equal(p9_get64(&fx.r), 5);
    assert_int_equal(T(P9_TREAD, "dqd", (uint32_t)3, (uint64_t)0, (uint32_t)100), 0);
    assert_int_equal(p9_get32(&fx.r), 5);
    assert_int_equal(T(P9_TXATTRWALK, "dds", (uint32_t)2, (uint32_t)4, ""), 0);
    assert_int_equal(p9_get64(&fx.r), 7);
    assert_int_equal(T(P9_TXATTRWALK, "dds", (uint32_t)2, (uint32_t)5, "trusted.x"), EOPNOTSUPP);
    /* the checks' order: a short message, then the name, then the fid (3 is an xattr's) */
    assert_int_equal(T(P9_TXATTRWALK, "dd", (uint32_t)99, (uint32_t)5), EINVAL);
    assert_int_equal(T(P9_TXATTRWALK, "dds", (uint32_t)99, (uint32_t)5, "trusted.x"), EOPNOTSUPP);
    assert_int_equal(T(P9_TXATTRWALK, "dds", (uint32_t)99, (uint32_t)5, "user.k"), EBADF);
    assert_int_equal(T(P9_TXATTRWALK, "dds", (uint32_t)3, (uint32_t)5, "user.k"), EBADF);
    assert_int_equal(T(P9_TXATTRCREATE, "dsq", (uint32_t)2, "user.k", (uint64_t)1), EINVAL);
    assert_int_equal(T(P9_TXATTRCREATE, "dsqd", (uint32_t)99, "", (uint64_t)1, (uint32_t)0),
                     EINVAL);
    assert_int_equal(T(P9_TXATTRCREATE, "dsqd", (uint32_t)3, "user.k", (uint64_t)1, (uint32_t)0),
                     EBADF);
    assert_int_equal(
        T(P9_TXATTRCREATE, "dsqd", (uint32_t)2, "user.big", (uint64_t)1 << 40, (uint32_t)0), E2BIG);
    /* a value shorter than announced is not set */
    assert_int_equal(T(P9_TWALK, "ddw", (uint32_t)2, (uint32_t)6, 0), 0);
    assert_int_equal(
        T(P9_TXATTRCREATE, "dsqd", (uint32_t)6, "user.short", (uint64_t)10, (uint32_t)0), 0);
    assert_int_equal(T(P9_TWRITE, "dqds", (uint32_t)6, (uint64_t)0, (uint32_t)4, "ab"), 0);
    assert_int_equal(T(P9_TWRITE, "dqds", (uint32_t)6, (uint64_t)8, (uint32_t)4, "ab"), ENOSPC);
    assert_int_equal(T(P9_TCLUNK, "d", (uint32_t)6), EINVAL);
    assert_int_equal(getxattr(p, "user.short", v, sizeof(v)), -1);
}

static void test_readdir(void **state)
{
    char p[256];
    path_of(p, sizeof(p), "many");
    assert_int_equal(mkdir(p, 0755), 0);
    for (int i = 0; i < 300; i++) {
        char f[300];
        snprintf(f, sizeof(f), "%s/file-%03d", p, i);
        close(open(f, O_CREAT | O_WRONLY, 0600));
    }
    attach(1);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)2, 1, "many"), 0);
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)2, (uint32_t)O_RDONLY | O_DIRECTORY), 0);
    static unsigned char seen[300];
    unsigned entries = 0, calls = 0;
    uint64_t offset = 0;
    for (;;) {
        assert_int_equal(T(P9_TREADDIR, "dqd", (uint32_t)2, (uint64_t)offset, (uint32_t)1000), 0);
        uint32_t count = p9_get32(&fx.r);
        assert_true(count <= 1000);
        calls++;
        if (!count)
            break;
        struct p9_in e = {.p = fx.r.p, .left = count};
        while (e.left) {
            (void)p9_get8(&e);
            (void)p9_get32(&e);
            (void)p9_get64(&e);
            offset = p9_get64(&e);
            (void)p9_get8(&e);
            uint16_t len;
            const char *name = p9_getstr(&e, &len);
            assert_false(e.bad);
            unsigned k;
            if (len == 8 && sscanf(name, "file-%3u", &k) == 1 && k < 300 && !seen[k]++)
                entries++;
        }
    }
    assert_int_equal(entries, 300);
    assert_true(calls > 3);
    /* the root's ".." entry is the root */
    assert_int_equal(T(P9_TWALK, "ddw", (uint32_t)1, (uint32_t)3, 0), 0);
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)3, (uint32_t)O_RDONLY), 0);
    assert_int_equal(T(P9_TREADDIR, "dqd", (uint32_t)3, (uint64_t)0, (uint32_t)60000), 0);
    uint32_t count = p9_get32(&fx.r);
    struct p9_in e = {.p = fx.r.p, .left = count};
    struct stat root;
    assert_int_equal(stat(fx.share, &root), 0);
    bool found = false;
    while (e.left && !e.bad) {
        (void)p9_get8(&e);
        (void)p9_get32(&e);
        uint64_t ino = p9_get64(&e);
        (void)p9_get64(&e);
        (void)p9_get8(&e);
        uint16_t len;
        const char *name = p9_getstr(&e, &len);
        if (len == 2 && !memcmp(name, "..", 2)) {
            assert_int_equal(ino, root.st_ino);
            found = true;
        }
    }
    assert_true(found);
}

static void test_read_only(void **state)
{
    attach(1);
    assert_int_equal(T(P9_TWALK, "ddw", (uint32_t)1, (uint32_t)2, 0), 0);
    assert_int_equal(
        T(P9_TLCREATE, "dsddd", (uint32_t)2, "f", (uint32_t)O_RDWR, (uint32_t)0640, (uint32_t)0),
        EROFS);
    assert_int_equal(T(P9_TMKDIR, "dsdd", (uint32_t)1, "sub", (uint32_t)0755, (uint32_t)0), EROFS);
    assert_int_equal(T(P9_TUNLINKAT, "dsd", (uint32_t)1, "hello", (uint32_t)0), EROFS);
    assert_int_equal(T(P9_TRENAMEAT, "dsds", (uint32_t)1, "hello", (uint32_t)1, "x"), EROFS);
    assert_int_equal(T(P9_TSYMLINK, "dssd", (uint32_t)1, "l", "t", (uint32_t)0), EROFS);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)3, 1, "hello"), 0);
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)3, (uint32_t)O_WRONLY), EROFS);
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)3, (uint32_t)O_RDONLY | O_TRUNC), EROFS);
    assert_int_equal(T(P9_TSETATTR, "dddddqqqqq", 3u, P9_SETATTR_MODE, 0600u, 0u, 0u, (uint64_t)0,
                       (uint64_t)0, (uint64_t)0, (uint64_t)0, (uint64_t)0),
                     EROFS);
    assert_int_equal(T(P9_TXATTRCREATE, "dsqd", (uint32_t)3, "user.k", (uint64_t)1, (uint32_t)0),
                     EROFS);
    assert_int_equal(T(P9_TLINK, "dds", (uint32_t)1, (uint32_t)3, "h"), EROFS);
    assert_int_equal(T(P9_TREMOVE, "d", (uint32_t)3), EROFS);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)3, 1, "hello"), 0);
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)3, (uint32_t)O_RDONLY), 0);
    assert_int_equal(T(P9_TREAD, "dqd", (uint32_t)3, (uint64_t)0, (uint32_t)5), 0);
    assert_int_equal(p9_get32(&fx.r), 5);
}

/* A Tread answered straight into split buffers: the header across the first two, the data
 * after it; anything else is left to p9_server_handle. */
static void test_read_direct(void **state)
{
    attach(1);
    assert_int_equal(T(P9_TWALK, "ddws", (uint32_t)1, (uint32_t)2, 1, "hello"), 0);
    static uint8_t a[5], b[7], c[3];
    struct iovec in[3] = {{a, sizeof(a)}, {b, sizeof(b)}, {c, sizeof(c)}};
    build(&fx.req, P9_TREAD, "dqd", (uint32_t)2, (uint64_t)6, (uint32_t)100);
    assert_int_equal(p9_server_read_direct(fx.s, fx.req.b, fx.req.len, in, 3, 15),
                     0); /* unopened */
    assert_int_equal(T(P9_TLOPEN, "dd", (uint32_t)2, (uint32_t)O_RDONLY), 0);
    build(&fx.req, P9_TREAD, "dqd", (uint32_t)2, (uint64_t)6, (uint32_t)100);
    size_t n = p9_server_read_direct(fx.s, fx.req.b, fx.req.len, in, 3, 15);
    assert_int_equal(n, 15); /* 11 of header, 4 of "world" fit */
    uint8_t all[15];
    memcpy(all, a, 5);
    memcpy(all + 5, b, 7);
    memcpy(all + 12, c, 3);
    uint32_t size, count;
    memcpy(&size, all, 4);
    memcpy(&count, all + 7, 4);
    assert_int_equal(le32toh(size), 15);
    assert_int_equal(all[4], P9_TREAD + 1);
    assert_int_equal(le32toh(count), 4);
    assert_memory_equal(all + 11, "worl", 4);
    build(&fx.req, P9_TCLUNK, "d", (uint32_t)2);
    assert_int_equal(p9_server_read_direct(fx.s, fx.req.b, fx.req.len, in, 3, 15), 0);
}

int main(void)
{
    static int ro = 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk_confined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xattr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readdir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_direct, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_read_only, setup, teardown, &ro),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
