/* The host file layer: one open file or block device with its cache mode (O_DIRECT and bounce
 * buffers for none/directsync, per-write syncs for writethrough/directsync), sparse queries and
 * hole punching. Every call is thread-safe (positional I/O; unaligned direct writes serialise). */
#include "block/block_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"

/* O_DIRECT alignment of offsets, lengths and memory. 4096 works on every Linux file system and
 * on 512e/4Kn disks; block devices report their logical block size, which may be smaller. */
#define FILE_DIRECT_ALIGN 4096

int block_file_open(struct block_file **out, const char *path, bool read_only,
                    enum block_cache_mode cache, enum block_aio_engine aio, struct wisp_err *err)
{
    bool direct = cache == BLOCK_CACHE_NONE || cache == BLOCK_CACHE_DIRECTSYNC;
    int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct ? O_DIRECT : 0);
    cleanup_close int fd = open(path, flags);
    if (fd < 0 && errno == EINVAL && direct)
        return wisp_err_set(err, EINVAL,
                            "%s: the file system does not support O_DIRECT (cache=%s); use "
                            "cache=writeback",
                            path, block_cache_mode_name(cache));
    if (fd < 0)
        return wisp_err_sys(err, errno, "could not open '%s'", path);

    struct stat st;
    if (fstat(fd, &st) < 0)
        return wisp_err_sys(err, errno, "%s: fstat", path);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return wisp_err_set(err, EINVAL, "'%s' is neither a regular file nor a block device", path);

    struct block_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return wisp_err_set(err, ENOMEM, "%s: out of memory", path);
    }
    f->fd = steal_fd(&fd);
    f->read_only = read_only;
    f->cache = cache;
    f->aio = aio;
    f->direct = direct;
    f->is_blockdev = S_ISBLK(st.st_mode);
    f->align = FILE_DIRECT_ALIGN;
    if (f->is_blockdev) {
        int lbs = 0;
        if (ioctl(f->fd, BLKSSZGET, &lbs) == 0 && lbs >= 512 && lbs <= FILE_DIRECT_ALIGN)
            f->align = FILE_DIRECT_ALIGN; /* memory alignment stays 4K; see above */
    }
    pthread_mutex_init(&f->rmw_lock, NULL);
    *out = f;
    return 0;
}

void block_file_close(struct block_file *f)
{
    if (!f)
        return;
    close(f->fd);
    pthread_mutex_destroy(&f->rmw_lock);
    free(f->path);
    free(f);
}

const char *block_file_path(const struct block_file *f)
{
    return f->path;
}

int block_file_fd(const struct block_file *f)
{
    return f->fd;
}

bool block_file_is_direct(const struct block_file *f)
{
    return f->direct;
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* Does this request satisfy O_DIRECT's alignment rules? */
static bool iov_aligned(const struct block_file *f, uint64_t off, const struct iovec *iov,
                        int iovcnt)
{
    if (off % f->align)
        return false;
    for (int i = 0; i < iovcnt; i++)
        if ((uintptr_t)iov[i].iov_base % f->align || iov[i].iov_len % f->align)
            return false;
    return true;
}

/*
 * After a short transfer of `done` bytes (less than the vector holds): skips the iovecs it
 * consumed (advancing *cur, *cnt) and copies up to `nlocal` of the rest into `local`, the first
 * trimmed by what was transferred of it, so the caller's vector stays const. Returns how many
 * were copied; when fewer than *cnt, the caller finishes the vector in two parts.
 */
static int iov_skip(const struct iovec **cur, int *cnt, size_t done, struct iovec *local,
                    int nlocal)
{
    while (*cnt > 0 && done >= (*cur)->iov_len) {
        done -= (*cur)->iov_len;
        (*cur)++, (*cnt)--;
    }
    int m = *cnt > nlocal ? nlocal : *cnt;
    memcpy(local, *cur, (size_t)m * sizeof(**cur));
    local[0].iov_base = (char *)local[0].iov_base + done;
    local[0].iov_len -= done;
    return m;
}

/* Reads fully; bytes past the end of the file read as zeroes. */
static int file_readv_full(struct block_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                           struct wisp_err *err)
{
    struct iovec local[64];
    const struct iovec *cur = iov;
    int cnt = iovcnt;
    size_t left = iov_total(iov, iovcnt);
    while (left > 0) {
        ssize_t n = preadv(f->fd, cur, cnt > IOV_MAX ? IOV_MAX : cnt, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return wisp_err_sys(err, errno, "%s: read of %zu bytes at offset %" PRIu64, f->path,
                                left, off);
        if (n == 0) { /* EOF: the rest reads as zeroes */
            for (int i = 0; i < cnt; i++)
                memset(cur[i].iov_base, 0, cur[i].iov_len);
            return 0;
        }
        off += (uint64_t)n;
        left -= (size_t)n;
        if (left == 0)
            break;
        int m = iov_skip(&cur, &cnt, (size_t)n, local, (int)ARRAY_SIZE(local));
        if (f->direct && off % f->align) { /* O_DIRECT short read: EOF inside a block */
            for (int i = 0; i < m; i++)
                memset(local[i].iov_base, 0, local[i].iov_len);
            for (int i = m; i < cnt; i++)
                memset(cur[i].iov_base, 0, cur[i].iov_len);
            return 0;
        }
        if (m < cnt) /* rare: very long vectors; finish them one buffer at a time */
            return file_readv_full(f, off, local, m, err)
                       ?: file_readv_full(f, off + iov_total(local, m), cur + m, cnt - m, err);
        cur = local, cnt = m;
    }
    return 0;
}

static int file_writev_full(struct block_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                            struct wisp_err *err)
{
    struct iovec local[64];
    const struct iovec *cur = iov;
    int cnt = iovcnt;
    size_t left = iov_total(iov, iovcnt);
    while (left > 0) {
        ssize_t n = pwritev(f->fd, cur, cnt > IOV_MAX ? IOV_MAX : cnt, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return wisp_err_sys(err, errno, "%s: write of %zu bytes at offset %" PRIu64, f->path,
                                left, off);
        if (n == 0)
            return wisp_err_set(err, ENOSPC, "%s: write at offset %" PRIu64 " made no progress",
                                f->path, off);
        off += (uint64_t)n;
        left -= (size_t)n;
        if (left == 0)
            break;
        int m = iov_skip(&cur, &cnt, (size_t)n, local, (int)ARRAY_SIZE(local));
        if (m < cnt)
            return file_writev_full(f, off, local, m, err)
                       ?: file_writev_full(f, off + iov_total(local, m), cur + m, cnt - m, err);
        cur = local, cnt = m;
    }
    return 0;
}

/* Copies between an iovec and a flat buffer. */
static void iov_to_buf(const struct iovec *iov, int iovcnt, uint8_t *buf)
{
    for (int i = 0; i < iovcnt; i++) {
        memcpy(buf, iov[i].iov_base, iov[i].iov_len);
        buf += iov[i].iov_len;
    }
}

static void buf_to_iov(const uint8_t *buf, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        memcpy(iov[i].iov_base, buf, iov[i].iov_len);
        buf += iov[i].iov_len;
    }
}

static void *bounce_alloc(struct block_file *f, size_t len)
{
    void *p = NULL;
    if (posix_memalign(&p, f->align, len ? len : f->align))
        return NULL;
    return p;
}

/* O_DIRECT with a caller's unaligned request: read the covering aligned range. */
static int file_read_bounce(struct block_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                            struct wisp_err *err)
{
    size_t len = iov_total(iov, iovcnt);
    uint64_t start = off / f->align * f->align;
    uint64_t end = (off + len + f->align - 1) / f->align * f->align;
    cleanup_free uint8_t *b = bounce_alloc(f, end - start);
    if (!b)
        return wisp_err_set(err, ENOMEM, "%s: no memory for a bounce buffer", f->path);
    struct iovec biov = {b, end - start};
    int r = file_readv_full(f, start, &biov, 1, err);
    if (r < 0)
        return r;
    buf_to_iov(b + (off - start), iov, iovcnt);
    return 0;
}

/* O_DIRECT with an unaligned write: read-modify-write of the covering aligned blocks. Two such
 * writes into one block would lose each other's bytes, so they take rmw_lock. */
static int file_write_bounce(struct block_file *f, uint64_t off, const struct iovec *iov,
                             int iovcnt, struct wisp_err *err)
{
    size_t len = iov_total(iov, iovcnt);
    uint64_t start = off / f->align * f->align;
    uint64_t end = (off + len + f->align - 1) / f->align * f->align;
    bool rmw = start != off || end != off + len;
    cleanup_free uint8_t *b = bounce_alloc(f, end - start);
    if (!b)
        return wisp_err_set(err, ENOMEM, "%s: no memory for a bounce buffer", f->path);
    struct iovec biov = {b, end - start};
    if (rmw)
        pthread_mutex_lock(&f->rmw_lock);
    int r = 0;
    if (rmw) {
        /* only the first and last block hold bytes we must keep */
        struct iovec head = {b, f->align};
        r = file_readv_full(f, start, &head, 1, err);
        if (r == 0 && end - start > f->align) {
            struct iovec tail = {b + (end - start - f->align), f->align};
            r = file_readv_full(f, end - f->align, &tail, 1, err);
        }
    }
    if (r == 0) {
        iov_to_buf(iov, iovcnt, b + (off - start));
        r = file_writev_full(f, start, &biov, 1, err);
    }
    if (rmw) {
        /* a write that ended past EOF must not grow the file by the padding */
        uint64_t size;
        if (r == 0 && !f->is_blockdev && block_file_size(f, &size, NULL) == 0 && size == end &&
            off + len < end)
            r = block_file_truncate(f, off + len, err);
        pthread_mutex_unlock(&f->rmw_lock);
    }
    return r;
}

void block_file_set_io_hook(struct block_file *f, block_file_io_hook hook, void *opaque)
{
    f->io_hook_opaque = opaque;
    f->io_hook = hook;
}

int block_file_preadv(struct block_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                      struct wisp_err *err)
{
    if (f->io_hook)
        f->io_hook(f->io_hook_opaque, false, off, iov_total(iov, iovcnt));
    if (f->direct && !iov_aligned(f, off, iov, iovcnt))
        return file_read_bounce(f, off, iov, iovcnt, err);
    return file_readv_full(f, off, iov, iovcnt, err);
}

/* writethrough / directsync: the data is on stable storage before the write completes. */
int block_file_write_done(struct block_file *f, struct wisp_err *err)
{
    if (f->cache != BLOCK_CACHE_WRITETHROUGH && f->cache != BLOCK_CACHE_DIRECTSYNC)
        return 0;
    if (fdatasync(f->fd) < 0)
        return wisp_err_sys(err, errno, "%s: fdatasync", f->path);
    return 0;
}

int block_file_pwritev(struct block_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct wisp_err *err)
{
    if (f->read_only)
        return wisp_err_set(err, EROFS, "%s: image is opened read-only", f->path);
    if (f->io_hook)
        f->io_hook(f->io_hook_opaque, true, off, iov_total(iov, iovcnt));
    int r;
    if (f->direct && !iov_aligned(f, off, iov, iovcnt))
        r = file_write_bounce(f, off, iov, iovcnt, err);
    else
        r = file_writev_full(f, off, iov, iovcnt, err);
    return r < 0 ? r : block_file_write_done(f, err);
}

int block_file_pread(struct block_file *f, uint64_t off, void *buf, size_t len,
                     struct wisp_err *err)
{
    struct iovec iov = {buf, len};
    return block_file_preadv(f, off, &iov, 1, err);
}

int block_file_pwrite(struct block_file *f, uint64_t off, const void *buf, size_t len,
                      struct wisp_err *err)
{
    struct iovec iov = {(void *)buf, len};
    return block_file_pwritev(f, off, &iov, 1, err);
}

/* Flush semantics per cache mode (docs/block.md): unsafe ignores flushes; every other mode
 * makes completed writes durable with fdatasync (O_DIRECT bypasses the page cache but not the
 * disk's volatile write cache, so none needs it too). */
int block_file_flush(struct block_file *f, struct wisp_err *err)
{
    if (f->cache == BLOCK_CACHE_UNSAFE || f->read_only)
        return 0;
    if (fdatasync(f->fd) < 0)
        return wisp_err_sys(err, errno, "%s: fdatasync", f->path);
    return 0;
}

int block_file_size(struct block_file *f, uint64_t *size, struct wisp_err *err)
{
    if (f->is_blockdev) {
        uint64_t s;
        if (ioctl(f->fd, BLKGETSIZE64, &s) < 0)
            return wisp_err_sys(err, errno, "%s: BLKGETSIZE64", f->path);
        *size = s;
        return 0;
    }
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return wisp_err_sys(err, errno, "%s: fstat", f->path);
    *size = (uint64_t)st.st_size;
    return 0;
}

int block_file_allocated(struct block_file *f, uint64_t *bytes, struct wisp_err *err)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return wisp_err_sys(err, errno, "%s: fstat", f->path);
    *bytes = f->is_blockdev ? 0 : (uint64_t)st.st_blocks * 512;
    return 0;
}

int block_file_preallocate(struct block_file *f, uint64_t off, uint64_t len)
{
    if (f->read_only || f->is_blockdev)
        return -EOPNOTSUPP;
    return fallocate(f->fd, 0, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

int block_file_truncate(struct block_file *f, uint64_t size, struct wisp_err *err)
{
    if (f->read_only)
        return wisp_err_set(err, EROFS, "%s: image is opened read-only", f->path);
    if (f->is_blockdev) {
        uint64_t cur;
        int r = block_file_size(f, &cur, err);
        if (r < 0)
            return r;
        if (size > cur)
            return wisp_err_set(err, ENOSPC,
                                "%s: block device has %" PRIu64 " bytes, %" PRIu64 " needed",
                                f->path, cur, size);
        return 0;
    }
    if (ftruncate(f->fd, (off_t)size) < 0)
        return wisp_err_sys(err, errno, "%s: truncate to %" PRIu64 " bytes", f->path, size);
    return 0;
}

int block_file_discard(struct block_file *f, uint64_t off, uint64_t len, struct wisp_err *err)
{
    if (f->read_only)
        return wisp_err_set(err, EROFS, "%s: image is opened read-only", f->path);
    if (len == 0)
        return 0;
    if (f->is_blockdev) {
        uint64_t range[2] = {off, len};
        if (ioctl(f->fd, BLKDISCARD, range) < 0)
            return wisp_err_sys(err, errno, "%s: BLKDISCARD at %" PRIu64, f->path, off);
        return 0;
    }
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
        return wisp_err_sys(err, errno, "%s: punching a hole at %" PRIu64, f->path, off);
    return 0;
}

static int file_write_zero_buffers(struct block_file *f, uint64_t off, uint64_t len,
                                   struct wisp_err *err)
{
    size_t chunk = len < (1u << 20) ? (size_t)len : (1u << 20);
    cleanup_free uint8_t *z = bounce_alloc(f, chunk);
    if (!z)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", f->path);
    memset(z, 0, chunk);
    while (len > 0) {
        size_t n = len < chunk ? (size_t)len : chunk;
        struct iovec iov = {z, n};
        int r = f->direct && !iov_aligned(f, off, &iov, 1) ? file_write_bounce(f, off, &iov, 1, err)
                                                           : file_writev_full(f, off, &iov, 1, err);
        if (r < 0)
            return r;
        off += n, len -= n;
    }
    return 0;
}

/* Makes [off, off+len) read as zeroes: ZERO_RANGE keeps the blocks allocated; with may_unmap a
 * hole is punched instead; both fall back to writing zeroes. */
int block_file_write_zeroes(struct block_file *f, uint64_t off, uint64_t len, bool may_unmap,
                            struct wisp_err *err)
{
    if (f->read_only)
        return wisp_err_set(err, EROFS, "%s: image is opened read-only", f->path);
    if (len == 0)
        return 0;
    int r = -1;
    if (f->is_blockdev) {
        uint64_t range[2] = {off, len};
        if (off % 512 == 0 && len % 512 == 0)
            r = ioctl(f->fd, BLKZEROOUT, range);
    } else {
        uint64_t size = 0;
        block_file_size(f, &size, NULL);
        int mode = may_unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
        r = fallocate(f->fd, mode, (off_t)off, (off_t)len);
        if (r < 0 && !may_unmap)
            r = fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                          (off_t)len);
        /* a punched hole past EOF does not extend the file; zeroes there must still exist */
        if (r == 0 && off + len > size && may_unmap)
            r = ftruncate(f->fd, (off_t)(off + len));
    }
    if (r < 0)
        r = file_write_zero_buffers(f, off, len, err);
    return r < 0 ? r : block_file_write_done(f, err);
}

/* SEEK_DATA / SEEK_HOLE; a file system or device that cannot answer reports data. */
int block_file_status(struct block_file *f, uint64_t off, uint64_t len, bool *data, uint64_t *pnum,
                      struct wisp_err *err)
{
    *data = true;
    *pnum = len;
    if (f->is_blockdev || len == 0)
        return 0;
    off_t d = lseek(f->fd, (off_t)off, SEEK_DATA);
    if (d < 0 && errno == ENXIO) { /* no data from here to EOF */
        *data = false;
        return 0;
    }
    if (d < 0)
        return 0;
    if ((uint64_t)d > off) {
        *data = false;
        *pnum = (uint64_t)d - off < len ? (uint64_t)d - off : len;
        return 0;
    }
    off_t h = lseek(f->fd, (off_t)off, SEEK_HOLE);
    if (h < 0)
        return errno == ENXIO ? 0 : wisp_err_sys(err, errno, "%s: SEEK_HOLE", f->path);
    if ((uint64_t)h > off && (uint64_t)h - off < len)
        *pnum = (uint64_t)h - off;
    return 0;
}
