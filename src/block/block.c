/* The generic block API: format probing over one explicit driver table, backing chains (relative
 * paths, loop and depth checks), range checks and throttling in front of the drivers. */
#include "block/block_int.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"

#include "block/qcow2.h"

/* Every format, in probing order. */
static const struct block_driver *const block_drivers[] = {
    &qcow2_driver,
    &raw_driver,
};

static const char *const cache_names[] = {
    [BLOCK_CACHE_WRITEBACK] = "writeback", [BLOCK_CACHE_WRITETHROUGH] = "writethrough",
    [BLOCK_CACHE_NONE] = "none",           [BLOCK_CACHE_DIRECTSYNC] = "directsync",
    [BLOCK_CACHE_UNSAFE] = "unsafe",
};
static const char *const aio_names[] = {
    [BLOCK_AIO_SYNC] = "sync",
    [BLOCK_AIO_THREADS] = "threads",
    [BLOCK_AIO_IO_URING] = "io_uring",
};

int block_cache_mode_parse(const char *s, enum block_cache_mode *out)
{
    for (unsigned i = 0; i < ARRAY_SIZE(cache_names); i++)
        if (!strcmp(s, cache_names[i])) {
            *out = (enum block_cache_mode)i;
            return 0;
        }
    return -EINVAL;
}

const char *block_cache_mode_name(enum block_cache_mode m)
{
    return (unsigned)m < ARRAY_SIZE(cache_names) ? cache_names[m] : "?";
}

int block_aio_engine_parse(const char *s, enum block_aio_engine *out)
{
    for (unsigned i = 0; i < ARRAY_SIZE(aio_names); i++)
        if (!strcmp(s, aio_names[i])) {
            *out = (enum block_aio_engine)i;
            return 0;
        }
    if (!strcmp(s, "native")) { /* QEMU's Linux AIO: io_uring is our native engine */
        *out = BLOCK_AIO_IO_URING;
        return 0;
    }
    return -EINVAL;
}

const char *block_aio_engine_name(enum block_aio_engine e)
{
    return (unsigned)e < ARRAY_SIZE(aio_names) ? aio_names[e] : "?";
}

const struct block_driver *block_driver_find(const char *name)
{
    for (unsigned i = 0; i < ARRAY_SIZE(block_drivers); i++)
        if (!strcmp(block_drivers[i]->name, name))
            return block_drivers[i];
    return NULL;
}

static int block_probe(struct block_file *f, const struct block_driver **drv, struct wisp_err *err)
{
    uint8_t buf[4096] = {0};
    int r = block_file_pread(f, 0, buf, sizeof(buf), err);
    if (r < 0)
        return r;
    int best = 0;
    for (unsigned i = 0; i < ARRAY_SIZE(block_drivers); i++) {
        int score = block_drivers[i]->probe(buf, sizeof(buf));
        if (score > best) {
            best = score;
            *drv = block_drivers[i];
        }
    }
    return 0;
}

/* Opens one node with a given chain context (NULL for the top image). */
static int block_open_node(struct block_dev **out, const char *filename,
                           const struct block_open_opts *opts, struct wisp_err *err)
{
    const struct block_driver *drv = NULL;
    if (opts->format && !(drv = block_driver_find(opts->format)))
        return wisp_err_set(err, EINVAL, "unknown image format '%s' for '%s'", opts->format,
                            filename);

    struct block_dev *bs = calloc(1, sizeof(*bs));
    if (!bs || !(bs->filename = strdup(filename))) {
        free(bs);
        return wisp_err_set(err, ENOMEM, "%s: out of memory", filename);
    }
    bs->read_only = opts->read_only;
    int r = block_file_open(&bs->file, filename, opts->read_only, opts->cache, opts->aio, err);
    if (r == 0) {
        bs->file->aio_threads = opts->aio_threads;
        bs->file->aio_queue_depth = opts->aio_queue_depth;
        bs->file->poll_max_ns = opts->poll_max_ns;
    }
    if (r == 0 && !drv)
        r = block_probe(bs->file, &drv, err);
    if (r == 0) {
        bs->drv = drv;
        r = drv->open(bs, opts, err);
        if (r < 0) {
            bs->drv = NULL; /* the driver cleaned up after itself */
            if (!strstr(err ? err->msg : "", filename))
                wisp_err_wrap(err, "%s", filename);
        }
    }
    if (r == 0 && opts->throttle)
        r = block_throttle_create(&bs->throttle, opts->throttle, err);
    if (r < 0) {
        block_close(bs);
        return r;
    }
    *out = bs;
    return 0;
}

int block_open(struct block_dev **out, const char *filename, const struct block_open_opts *opts,
               struct wisp_err *err)
{
    struct block_open_opts o = *opts;
    char real[PATH_MAX];
    if (!realpath(filename, real))
        return wisp_err_sys(err, errno, "could not open '%s'", filename);
    struct block_chain link = {.child = NULL, .realpath = real, .name = filename, .depth = 0};
    o.chain = &link;
    return block_open_node(out, filename, &o, err);
}

/* Writes "a -> b -> c" for the chain ending in `link` (top image first). */
static void chain_describe(const struct block_chain *link, char *buf, size_t len)
{
    const struct block_chain *v[BLOCK_MAX_CHAIN_DEPTH + 2];
    unsigned n = 0;
    for (; link && n < ARRAY_SIZE(v); link = link->child)
        v[n++] = link;
    buf[0] = '\0';
    size_t used = 0;
    while (n-- > 0 && used < len) {
        int w = snprintf(buf + used, len - used, "%s%s", v[n]->name, n ? " -> " : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* Backing file names are relative to the directory of the image that names them. */
static int backing_resolve(const char *image, const char *backing, char *out, size_t len)
{
    if (backing[0] == '/') {
        if ((size_t)snprintf(out, len, "%s", backing) >= len)
            return -ENAMETOOLONG;
        return 0;
    }
    cleanup_free char *copy = strdup(image);
    if (!copy)
        return -ENOMEM;
    const char *dir = dirname(copy);
    if ((size_t)snprintf(out, len, "%s/%s", dir, backing) >= len)
        return -ENAMETOOLONG;
    return 0;
}

int block_open_backing(struct block_dev *bs, const char *backing, const char *backing_fmt,
                       const struct block_open_opts *opts, struct wisp_err *err)
{
    char path[PATH_MAX], real[PATH_MAX], chain[2048];
    if (backing_resolve(bs->filename, backing, path, sizeof(path)) < 0)
        return wisp_err_set(err, ENAMETOOLONG, "%s: backing file name '%s' is too long",
                            bs->filename, backing);
    if (!realpath(path, real))
        return wisp_err_sys(err, errno, "%s: could not open backing file '%s'", bs->filename, path);

    const struct block_chain *top = opts->chain;
    struct block_chain link = {
        .child = top, .realpath = real, .name = path, .depth = top ? top->depth + 1 : 1};
    for (const struct block_chain *c = top; c; c = c->child) {
        if (!strcmp(c->realpath, real)) {
            chain_describe(&link, chain, sizeof(chain));
            return wisp_err_set(err, ELOOP, "loop in the backing chain: %s", chain);
        }
    }
    if (link.depth > BLOCK_MAX_CHAIN_DEPTH) {
        chain_describe(&link, chain, sizeof(chain));
        return wisp_err_set(err, ELOOP, "backing chain deeper than %d images: %s",
                            BLOCK_MAX_CHAIN_DEPTH, chain);
    }

    /* Backing nodes are read-only and never inherit the top node's overrides. */
    struct block_open_opts o = *opts;
    o.format = backing_fmt && backing_fmt[0] ? backing_fmt : NULL;
    o.read_only = true;
    o.no_backing = false;
    o.repair = false;
    o.backing_override = NULL;
    o.backing_format_override = NULL;
    o.throttle = NULL;
    o.chain = &link;
    int r = block_open_node(&bs->backing, path, &o, err);
    if (r < 0)
        return wisp_err_wrap(err, "%s: backing file", bs->filename);
    return 0;
}

void block_close(struct block_dev *bs)
{
    if (!bs)
        return;
    block_aio_destroy(bs);
    if (bs->drv && bs->drv->close)
        bs->drv->close(bs);
    block_close(bs->backing);
    block_file_close(bs->file);
    block_throttle_destroy(bs->throttle);
    free(bs->filename);
    free(bs);
}

static size_t iov_len(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

static int check_range(struct block_dev *bs, uint64_t off, uint64_t len, struct wisp_err *err)
{
    if (off > bs->size || len > bs->size - off)
        return wisp_err_set(err, EINVAL,
                            "%s: request at offset %" PRIu64 " length %" PRIu64
                            " is beyond the end of the disk (%" PRIu64 " bytes)",
                            bs->filename, off, len, bs->size);
    return 0;
}

static int check_writable(struct block_dev *bs, struct wisp_err *err)
{
    if (bs->read_only)
        return wisp_err_set(err, EROFS, "%s: image is opened read-only", bs->filename);
    return 0;
}

int block_preadv(struct block_dev *bs, uint64_t off, const struct iovec *iov, int iovcnt,
                 struct wisp_err *err)
{
    size_t len = iov_len(iov, iovcnt);
    int r = check_range(bs, off, len, err);
    if (r < 0)
        return r;
    if (bs->throttle)
        block_throttle_wait(bs->throttle, false, len);
    return bs->drv->preadv(bs, off, iov, iovcnt, err);
}

int block_pwritev(struct block_dev *bs, uint64_t off, const struct iovec *iov, int iovcnt,
                  struct wisp_err *err)
{
    size_t len = iov_len(iov, iovcnt);
    int r = check_writable(bs, err) ?: check_range(bs, off, len, err);
    if (r < 0)
        return r;
    if (bs->throttle)
        block_throttle_wait(bs->throttle, true, len);
    return bs->drv->pwritev(bs, off, iov, iovcnt, err);
}

int block_pread(struct block_dev *bs, uint64_t off, void *buf, size_t len, struct wisp_err *err)
{
    struct iovec iov = {buf, len};
    return block_preadv(bs, off, &iov, 1, err);
}

int block_pwrite(struct block_dev *bs, uint64_t off, const void *buf, size_t len,
                 struct wisp_err *err)
{
    struct iovec iov = {(void *)buf, len};
    return block_pwritev(bs, off, &iov, 1, err);
}

int block_flush(struct block_dev *bs, struct wisp_err *err)
{
    if (bs->read_only)
        return 0;
    return bs->drv->flush(bs, err);
}

int block_discard(struct block_dev *bs, uint64_t off, uint64_t len, struct wisp_err *err)
{
    int r = check_writable(bs, err) ?: check_range(bs, off, len, err);
    if (r < 0)
        return r;
    return bs->drv->discard ? bs->drv->discard(bs, off, len, err) : 0;
}

int block_write_zeroes(struct block_dev *bs, uint64_t off, uint64_t len, int flags,
                       struct wisp_err *err)
{
    int r = check_writable(bs, err) ?: check_range(bs, off, len, err);
    if (r < 0)
        return r;
    if (bs->throttle)
        block_throttle_wait(bs->throttle, true, 0);
    return bs->drv->write_zeroes(bs, off, len, flags, err);
}

int block_get_info(struct block_dev *bs, struct block_info *info, struct wisp_err *err)
{
    return bs->drv->get_info(bs, info, err);
}

int block_status(struct block_dev *bs, uint64_t off, uint64_t len, uint64_t *pnum,
                 uint64_t *host_offset, struct wisp_err *err)
{
    int r = check_range(bs, off, len, err);
    if (r < 0)
        return r;
    if (len == 0)
        return wisp_err_set(err, EINVAL, "%s: block_status of an empty range", bs->filename);
    *host_offset = 0;
    r = bs->drv->block_status(bs, off, len, pnum, host_offset, err);
    if (r >= 0 && (*pnum == 0 || *pnum > len))
        return wisp_err_set(err, EIO, "%s: driver returned a bad status length at %" PRIu64,
                            bs->filename, off);
    return r;
}

int block_set_throttle(struct block_dev *bs, const struct block_throttle_limits *l,
                       struct wisp_err *err)
{
    static const struct block_throttle_limits none;
    int r;
    if (bs->throttle) /* kept even when unlimited: requests waiting on it still look at it */
        r = block_throttle_set(bs->throttle, l, err);
    else
        r = memcmp(l, &none, sizeof(none)) ? block_throttle_create(&bs->throttle, l, err) : 0;
    if (r < 0)
        return wisp_err_wrap(err, "%s", bs->filename);
    block_aio_throttle_changed(bs);
    return 0;
}

int block_truncate(struct block_dev *bs, uint64_t size, bool shrink_ok, struct wisp_err *err)
{
    int r = check_writable(bs, err);
    if (r < 0)
        return r;
    if (!bs->drv->truncate)
        return wisp_err_set(err, ENOTSUP, "%s: format %s cannot be resized", bs->filename,
                            bs->drv->name);
    return bs->drv->truncate(bs, size, shrink_ok, err);
}
