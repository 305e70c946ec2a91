/* The 9P2000.L server's parts: message decoding and encoding (p9_msg.c), the session and its
 * fids (p9_server.c), the file operations (p9_ops.c). docs/9p.md describes the confinement. */
#ifndef WISP_VIRTIO_P9_INT_H
#define WISP_VIRTIO_P9_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "virtio/p9.h"

/* Message types (9P2000.L, Linux's include/net/9p/9p.h); each R is its T + 1. */
enum {
    P9_TLERROR = 6,
    P9_RLERROR = 7,
    P9_TSTATFS = 8,
    P9_TLOPEN = 12,
    P9_TLCREATE = 14,
    P9_TSYMLINK = 16,
    P9_TMKNOD = 18,
    P9_TRENAME = 20,
    P9_TREADLINK = 22,
    P9_TGETATTR = 24,
    P9_TSETATTR = 26,
    P9_TXATTRWALK = 30,
    P9_TXATTRCREATE = 32,
    P9_TREADDIR = 40,
    P9_TFSYNC = 50,
    P9_TLOCK = 52,
    P9_TGETLOCK = 54,
    P9_TLINK = 70,
    P9_TMKDIR = 72,
    P9_TRENAMEAT = 74,
    P9_TUNLINKAT = 76,
    P9_TVERSION = 100,
    P9_TAUTH = 102,
    P9_TATTACH = 104,
    P9_TFLUSH = 108,
    P9_TWALK = 110,
    P9_TREAD = 116,
    P9_TWRITE = 118,
    P9_TCLUNK = 120,
    P9_TREMOVE = 122,
};

#define P9_QTDIR     0x80
#define P9_QTSYMLINK 0x02
#define P9_QTFILE    0x00
#define P9_QID_LEN   13
#define P9_NOFID     0xffffffffu
#define P9_NONUNAME  0xffffffffu
#define P9_IOHDR_LEN 24 /* Twrite's header: what a read or write moves is msize less this */

/* Tsetattr's valid bits. */
#define P9_SETATTR_MODE      0x001
#define P9_SETATTR_UID       0x002
#define P9_SETATTR_GID       0x004
#define P9_SETATTR_SIZE      0x008
#define P9_SETATTR_ATIME     0x010
#define P9_SETATTR_MTIME     0x020
#define P9_SETATTR_CTIME     0x040
#define P9_SETATTR_ATIME_SET 0x080
#define P9_SETATTR_MTIME_SET 0x100
#define P9_GETATTR_BASIC     0x7ffull

/* Reading a request: every get checks the bytes left; a short message sets `bad`. */
struct p9_in {
    const uint8_t *p;
    size_t left;
    bool bad;
};
uint8_t p9_get8(struct p9_in *in);
uint16_t p9_get16(struct p9_in *in);
uint32_t p9_get32(struct p9_in *in);
uint64_t p9_get64(struct p9_in *in);
/* A string: its bytes (not NUL-terminated) and length; NULL with bad set when short. */
const char *p9_getstr(struct p9_in *in, uint16_t *len);
/* A file name: 1..NAME_MAX bytes, no '/', no NUL, not "." or ".." (-EINVAL, -ENAMETOOLONG);
 * copied NUL-terminated into name[256]. */
int p9_getname(struct p9_in *in, char name[256]);
int p9_check_name(const char *s, size_t len, char name[256]);
/* `n` raw bytes (Twrite's data). */
const uint8_t *p9_getbytes(struct p9_in *in, size_t n);

/* Writing a reply: a put past `cap` sets `full`. */
struct p9_out {
    uint8_t *p;
    size_t len, cap;
    bool full;
};
void p9_put8(struct p9_out *o, uint8_t v);
void p9_put16(struct p9_out *o, uint16_t v);
void p9_put32(struct p9_out *o, uint32_t v);
void p9_put64(struct p9_out *o, uint64_t v);
void p9_putstr(struct p9_out *o, const char *s, size_t len);
void p9_putqid(struct p9_out *o, const struct stat *st);
/* Reserves n bytes and returns where they are (NULL, full set, past cap). */
uint8_t *p9_reserve(struct p9_out *o, size_t n);
uint8_t p9_qid_type(mode_t mode);

enum p9_fid_kind {
    P9_FID_FILE,       /* a file or directory: fd is O_PATH, open_fd after Tlopen/Tlcreate */
    P9_FID_XATTR_READ, /* Txattrwalk: the value (or the name list) to read */
    P9_FID_XATTR_WRITE /* Txattrcreate: the value written, set at Tclunk */
};

struct p9_fid {
    uint32_t num;
    struct p9_fid *next; /* hash chain */
    enum p9_fid_kind kind;
    int fd;       /* O_PATH|O_NOFOLLOW: the file itself (never a path) */
    int open_fd;  /* -1 until opened */
    mode_t mode;  /* the file type (S_IFMT) when walked */
    char *path;   /* from the share's root, "" for the root: for ".." and Tremove/Trename */
    uint32_t uid; /* the attaching user's (n_uname): owner of what it creates */
    bool open_write;
    /* xattr fids */
    uint8_t *xattr;
    uint64_t xattr_len, xattr_written;
    char xattr_name[256];
    int xattr_flags;
};

#define P9_FID_BUCKETS 1024

struct p9_server {
    int root_fd; /* O_PATH|O_DIRECTORY: the shared directory */
    int proc_fd; /* /proc/self/fd, for reopening a fid's file by its fd number */
    bool read_only;
    uint32_t msize;
    struct stat root_st;
    struct p9_fid *fids[P9_FID_BUCKETS];
    unsigned nr_fids;
};

/* p9_server.c */
struct p9_fid *p9_fid_get(struct p9_server *s, uint32_t num);
/* The fid if it is one of a file (P9_FID_FILE), else NULL. */
struct p9_fid *p9_file_fid(struct p9_server *s, uint32_t num);
/* The checks every message with a fid and a name makes, in the order of their errors: a short
 * message (-EINVAL), a bad name (name_r), an unknown fid (f NULL: -EBADF). */
int p9_parsed(const struct p9_in *in, int name_r, const struct p9_fid *f);
/* A new fid numbered num (-EBADF if taken, -EMFILE past P9_MAX_FIDS); fd and path owned. */
int p9_fid_add(struct p9_server *s, uint32_t num, struct p9_fid **out);
void p9_fid_remove(struct p9_server *s, struct p9_fid *f);
/* openat2(dir, name, O_PATH|O_NOFOLLOW, RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS): one
 * component, never a symlink followed. -errno. */
int p9_open_beneath(int dir, const char *name, int flags, mode_t mode);
/* The fid's file reopened with `flags` through /proc/self/fd (regular files and directories
 * only: -EINVAL otherwise, -ELOOP for a symlink). -errno. */
int p9_reopen(struct p9_server *s, const struct p9_fid *f, int flags);
/* "dir/name" (or "name" at the root) into a new string; NULL when too long or out of memory. */
char *p9_join(const char *dir, const char *name);

/* p9_ops.c: each handles one T-message body and writes its R body; returns 0 or -errno (the
 * caller then answers Rlerror). */
typedef int p9_op_fn(struct p9_server *s, struct p9_in *in, struct p9_out *o);
p9_op_fn p9_op_statfs, p9_op_lopen, p9_op_lcreate, p9_op_symlink, p9_op_mknod, p9_op_rename,
    p9_op_readlink, p9_op_getattr, p9_op_setattr, p9_op_xattrwalk, p9_op_xattrcreate, p9_op_readdir,
    p9_op_fsync, p9_op_lock, p9_op_getlock, p9_op_link, p9_op_mkdir, p9_op_renameat, p9_op_unlinkat,
    p9_op_read, p9_op_write, p9_op_remove;
/* Tclunk's xattr part: sets (or removes) what a Txattrcreate fid collected. */
int p9_xattr_commit(struct p9_server *s, struct p9_fid *f);

#endif
