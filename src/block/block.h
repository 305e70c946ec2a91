/* The block layer's public API: one driver interface (raw, qcow2) under every disk, wisp-img,
 * and later the NBD server and block jobs. */
#ifndef WISP_BLOCK_BLOCK_H
#define WISP_BLOCK_BLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common/err.h"

/*
 * Layers. A `struct block_dev` is one open image node: a format driver (raw, qcow2) over a
 * `struct block_file` (the host file, with its cache mode and I/O engine), optionally over a
 * backing block_dev (a chain). Callers use block_open() and the block_* calls below; drivers
 * implement struct block_driver. The calls are synchronous and thread-safe for one block_dev
 * (a driver serialises its metadata internally); concurrency (queue depth > 1) comes from
 * several callers or from the asynchronous block_aio_* API, which runs requests on the
 * device's I/O engine (which thread may call what: above block_aio_submit()).
 */

/* Cache modes, with QEMU's meaning (docs/block.md states the flush semantics):
 *   writeback    host page cache; guest flush -> fdatasync          (default)
 *   writethrough host page cache; every write is followed by fdatasync before completion
 *   none         O_DIRECT; guest flush -> fdatasync
 *   directsync   O_DIRECT + fdatasync after every write
 *   unsafe       host page cache; flushes are ignored                                      */
enum block_cache_mode {
    BLOCK_CACHE_WRITEBACK = 0,
    BLOCK_CACHE_WRITETHROUGH,
    BLOCK_CACHE_NONE,
    BLOCK_CACHE_DIRECTSYNC,
    BLOCK_CACHE_UNSAFE,
};

/* I/O engines: how data requests reach the host file. */
enum block_aio_engine {
    BLOCK_AIO_SYNC = 0, /* preadv/pwritev in the caller's thread */
    BLOCK_AIO_THREADS,  /* a pool of worker threads */
    BLOCK_AIO_IO_URING, /* liburing */
};

/* Parses "writeback|writethrough|none|directsync|unsafe" / "sync|threads|io_uring". */
int block_cache_mode_parse(const char *s, enum block_cache_mode *out);
const char *block_cache_mode_name(enum block_cache_mode m);
int block_aio_engine_parse(const char *s, enum block_aio_engine *out);
const char *block_aio_engine_name(enum block_aio_engine e);

/* Token-bucket limits (0 = unlimited); bursts are extra tokens a bucket can hold. */
struct block_throttle_limits {
    uint64_t iops_total, iops_read, iops_write;
    uint64_t bps_total, bps_read, bps_write;
    uint64_t iops_total_max, iops_read_max, iops_write_max; /* burst sizes (ops) */
    uint64_t bps_total_max, bps_read_max, bps_write_max;    /* burst sizes (bytes) */
    /* tokens the total buckets hold once at the start, beyond their burst, that do not come
     * back (Firecracker's one_time_burst) */
    uint64_t iops_total_once, bps_total_once;
};

#define BLOCK_POLL_MAX_NS_DEFAULT 64000

struct block_open_opts {
    const char *format; /* "raw", "qcow2", or NULL to probe the header */
    bool read_only;     /* nothing is ever written to the image, not even the dirty bit */
    enum block_cache_mode cache;
    enum block_aio_engine aio;
    unsigned aio_threads;     /* pool size for BLOCK_AIO_THREADS (0 = default) */
    unsigned aio_queue_depth; /* ring size for io_uring (0 = default) */
    /* io_uring: how long block_aio_poll() may busy-poll the completion ring before sleeping
     * (adaptive, up to this many ns; 0 = default BLOCK_POLL_MAX_NS_DEFAULT, < 0 = never). */
    int64_t poll_max_ns;
    bool no_backing; /* open only this node (qemu-img -u / info without chain) */
    /* Open for checking and repair only (wisp-img check): damaged tables and the corrupt bit
     * do not refuse the open; the node takes no guest writes (qcow2_check may repair). */
    bool repair;
    const char *backing_override; /* use this backing file instead of the header's */
    const char *backing_format_override;
    const struct block_throttle_limits *throttle; /* NULL = none */
    /* Set by the block layer for drivers; callers leave it NULL. Drivers pass `opts` on to
     * block_open_backing() unchanged so the chain can be checked for loops and depth. */
    const struct block_chain *chain;
};

struct block_info {
    const char *format;    /* static string: "raw", "qcow2" */
    uint64_t virtual_size; /* bytes the guest sees */
    uint64_t file_size;    /* bytes of the host file (st_size) */
    uint64_t allocated;    /* host bytes actually allocated (st_blocks * 512) */
    uint32_t cluster_size; /* 0 for raw */
    int qcow2_version;     /* 2 or 3; 0 for raw */
    bool dirty;            /* qcow2 dirty bit set */
    bool lazy_refcounts, extended_l2, corrupt;
    unsigned refcount_bits;
    char compression_type[16];
    char backing_file[4096]; /* as written in the header, "" if none */
    char backing_format[32];
    unsigned nr_snapshots;
};

/* Results of block_status(): what [offset, offset + *pnum) is. */
#define BLOCK_STATUS_DATA      0x1 /* reads return data (may be from a backing file) */
#define BLOCK_STATUS_ZERO      0x2 /* reads return zeroes */
#define BLOCK_STATUS_ALLOCATED 0x4 /* allocated in this node (not inherited from backing) */
#define BLOCK_STATUS_OFFSET    0x8 /* *host_offset is valid: data sits there in the node's file */

/* Flags for write_zeroes. */
#define BLOCK_WZ_MAY_UNMAP 0x1 /* the driver may deallocate instead of writing zeroes */

struct block_file;
struct block_dev;
struct block_chain;

/* Describes one format. Drivers live in one explicit table in block.c. */
struct block_driver {
    const char *name;
    /* Scores a header (0 = not this format, higher = surer). */
    int (*probe)(const uint8_t *buf, size_t len);
    /* Fills bs->opaque; the file is open (bs->file); opens the backing chain through
     * block_open_backing() unless opts->no_backing. Must validate every header field and table
     * and fail with an error naming the image and offset. */
    int (*open)(struct block_dev *bs, const struct block_open_opts *opts, struct wisp_err *err);
    void (*close)(struct block_dev *bs);
    int (*preadv)(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                  struct wisp_err *err);
    int (*pwritev)(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                   struct wisp_err *err);
    int (*flush)(struct block_dev *bs, struct wisp_err *err);
    int (*discard)(struct block_dev *bs, uint64_t offset, uint64_t len, struct wisp_err *err);
    int (*write_zeroes)(struct block_dev *bs, uint64_t offset, uint64_t len, int flags,
                        struct wisp_err *err);
    int (*get_info)(struct block_dev *bs, struct block_info *info, struct wisp_err *err);
    /* Returns BLOCK_STATUS_* flags (>= 0) for the run starting at offset, its length in *pnum
     * (> 0, <= len) and, with BLOCK_STATUS_OFFSET, the host offset in *host_offset. */
    int (*block_status)(struct block_dev *bs, uint64_t offset, uint64_t len, uint64_t *pnum,
                        uint64_t *host_offset, struct wisp_err *err);
    int (*truncate)(struct block_dev *bs, uint64_t size, bool shrink_ok, struct wisp_err *err);
    /* Optional (NULL = not supported), for the io_uring engine: can [offset, offset+len) be
     * overwritten in place, i.e. is it one contiguous run of allocated, unshared (refcount 1 /
     * COPIED), uncompressed, non-zero data? Then returns 0 with the host offset in *host_offset
     * and the engine writes the host file directly; otherwise -EAGAIN and the request runs in
     * the worker pool through pwritev. Must not block on I/O other than metadata cache reads. */
    int (*map_for_write)(struct block_dev *bs, uint64_t offset, uint64_t len,
                         uint64_t *host_offset);
    /* Optional, likewise for reads: is [offset, offset+len) one contiguous run of plain data
     * clusters? Then 0 with the host offset (else -EAGAIN: the pool reads it). */
    int (*map_for_read)(struct block_dev *bs, uint64_t offset, uint64_t len, uint64_t *host_offset);
    /* Required with map_for_*: the engine's transfer at a range they returned has finished.
     * Until then the driver keeps those host clusters from being reused (freed and handed out
     * again while the transfer could still read or write them). */
    void (*map_done)(struct block_dev *bs, uint64_t host_offset, uint64_t len);
};

struct block_dev {
    const struct block_driver *drv;
    struct block_file *file;   /* host file (owned) */
    struct block_dev *backing; /* backing node (owned), NULL if none */
    char *filename;            /* as given to block_open (owned) */
    bool read_only;
    uint64_t size;                   /* virtual size, kept up to date by the driver */
    void *opaque;                    /* driver state */
    struct block_throttle *throttle; /* NULL if unthrottled */
    struct block_aio_ctx *aio;       /* engine state for block_aio_* (lazily created) */
};

/* --- the host file layer, used by drivers --- */
int block_file_open(struct block_file **out, const char *path, bool read_only,
                    enum block_cache_mode cache, enum block_aio_engine aio, struct wisp_err *err);
void block_file_close(struct block_file *f);
/* Whole-range I/O at host offsets (short reads past EOF read as zeroes). */
int block_file_preadv(struct block_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                      struct wisp_err *err);
int block_file_pwritev(struct block_file *f, uint64_t off, const struct iovec *iov, int iovcnt,
                       struct wisp_err *err);
int block_file_pread(struct block_file *f, uint64_t off, void *buf, size_t len,
                     struct wisp_err *err);
int block_file_pwrite(struct block_file *f, uint64_t off, const void *buf, size_t len,
                      struct wisp_err *err);
int block_file_flush(struct block_file *f, struct wisp_err *err); /* honours the cache mode */
int block_file_truncate(struct block_file *f, uint64_t size, struct wisp_err *err);
/* Reserves blocks for [off, off + len) and grows the file to cover it (fallocate mode 0);
 * returns -errno (-EOPNOTSUPP where the file system cannot) and reports nothing. */
int block_file_preallocate(struct block_file *f, uint64_t off, uint64_t len);
int block_file_size(struct block_file *f, uint64_t *size, struct wisp_err *err);
int block_file_discard(struct block_file *f, uint64_t off, uint64_t len, struct wisp_err *err);
/* Makes the range read as zeroes without writing data where the file system can
 * (FALLOC_FL_ZERO_RANGE, or PUNCH_HOLE with may_unmap; BLKZEROOUT on devices). */
int block_file_write_zeroes(struct block_file *f, uint64_t off, uint64_t len, bool may_unmap,
                            struct wisp_err *err);
/* Host bytes allocated to the file (st_blocks * 512; 0 for block devices). */
int block_file_allocated(struct block_file *f, uint64_t *bytes, struct wisp_err *err);
/* True when the file is opened with O_DIRECT (cache=none/directsync). */
bool block_file_is_direct(const struct block_file *f);
/* SEEK_DATA/SEEK_HOLE: is `off` in data? *pnum = length of that run (bounded by len). */
int block_file_status(struct block_file *f, uint64_t off, uint64_t len, bool *data, uint64_t *pnum,
                      struct wisp_err *err);
const char *block_file_path(const struct block_file *f);
int block_file_fd(const struct block_file *f);
/* Tests only: `hook` runs before every read and write of the host file, in the thread doing
 * it (tests use it to hold an I/O in flight and make races happen on purpose). */
typedef void (*block_file_io_hook)(void *opaque, bool write, uint64_t off, uint64_t len);
void block_file_set_io_hook(struct block_file *f, block_file_io_hook hook, void *opaque);

/* --- the generic API, used by devices and tools --- */

/* The driver named `name` ("raw", "qcow2"), or NULL. */
const struct block_driver *block_driver_find(const char *name);

/* Opens `filename` (probing the format unless opts->format) and its backing chain. Backing
 * paths are relative to the image's directory; a loop in the chain is an error naming it. */
int block_open(struct block_dev **out, const char *filename, const struct block_open_opts *opts,
               struct wisp_err *err);
/* For drivers: opens `backing` relative to bs->filename's directory as bs->backing. */
int block_open_backing(struct block_dev *bs, const char *backing, const char *backing_fmt,
                       const struct block_open_opts *opts, struct wisp_err *err);
void block_close(struct block_dev *bs); /* closes the whole chain; NULL is fine */

int block_preadv(struct block_dev *bs, uint64_t off, const struct iovec *iov, int iovcnt,
                 struct wisp_err *err);
int block_pwritev(struct block_dev *bs, uint64_t off, const struct iovec *iov, int iovcnt,
                  struct wisp_err *err);
int block_pread(struct block_dev *bs, uint64_t off, void *buf, size_t len, struct wisp_err *err);
int block_pwrite(struct block_dev *bs, uint64_t off, const void *buf, size_t len,
                 struct wisp_err *err);
int block_flush(struct block_dev *bs, struct wisp_err *err);
int block_discard(struct block_dev *bs, uint64_t off, uint64_t len, struct wisp_err *err);
int block_write_zeroes(struct block_dev *bs, uint64_t off, uint64_t len, int flags,
                       struct wisp_err *err);
int block_get_info(struct block_dev *bs, struct block_info *info, struct wisp_err *err);
int block_status(struct block_dev *bs, uint64_t off, uint64_t len, uint64_t *pnum,
                 uint64_t *host_offset, struct wisp_err *err);
int block_truncate(struct block_dev *bs, uint64_t size, bool shrink_ok, struct wisp_err *err);
/* Replaces bs's throttling limits (all zero: no limit) while requests may be in flight;
 * requests waiting for tokens go on under the new limits. Call it from the thread that calls
 * block_aio_submit() / block_aio_poll() for bs (a device's I/O thread). */
int block_set_throttle(struct block_dev *bs, const struct block_throttle_limits *l,
                       struct wisp_err *err);

/* --- asynchronous requests (devices, wisp-img bench/convert) --- */
enum block_op {
    BLOCK_OP_READ,
    BLOCK_OP_WRITE,
    BLOCK_OP_FLUSH,
    BLOCK_OP_DISCARD,
    BLOCK_OP_WRITE_ZEROES
};
struct block_req {
    enum block_op op;
    uint64_t offset, len; /* len for discard/write_zeroes; read/write use iov */
    const struct iovec *iov;
    int iovcnt;
    void (*done)(struct block_req *req, int ret); /* called from the completion context */
    void *opaque;
};
/*
 * Threads. For one block_dev:
 *  - the synchronous calls above (block_preadv ... block_truncate, and the qcow2_* entry
 *    points) are thread-safe: any number of threads may call them at once, also while the
 *    asynchronous API is in use from another thread;
 *  - block_aio_submit(), block_aio_poll() and block_aio_event_fd() are called from one thread
 *    at a time (the device's I/O thread); they share unlocked engine state;
 *  - completion callbacks (req->done) run in the thread that calls block_aio_poll(), inside
 *    that call, never inside block_aio_submit(); a callback may submit new requests;
 *  - block_close() runs alone: it waits for every request in flight (their callbacks run) and
 *    stops the engine's threads. Pool workers only call the thread-safe driver functions.
 * A request (struct block_req, its iovec and buffers) belongs to the block layer from a
 * successful block_aio_submit() until its callback runs; a failed submit leaves it unused.
 */
/* Queues a request on bs's engine (throttled if limits are set). Completions run from
 * block_aio_poll(), which waits for at least min_done completions (0 = do not wait). */
int block_aio_submit(struct block_dev *bs, struct block_req *req, struct wisp_err *err);
int block_aio_poll(struct block_dev *bs, unsigned min_done, struct wisp_err *err);
/* An fd that becomes readable when block_aio_poll(bs, 0, err) has work to do: a finished request
 * whose callback has not run, or a throttled request whose tokens are there. Use it with
 * epoll/poll (level-triggered): when it is readable, call block_aio_poll(bs, 0, err), which also
 * clears it. Owned by bs (closed by block_close); creates the engine context if needed.
 * (With io_uring, epoll_wait() may fail with EINTR while the kernel posts a completion: retry.)
 * Readiness can be spurious (the poll then finds nothing); it is never missed. */
int block_aio_event_fd(struct block_dev *bs, struct wisp_err *err);

#endif
