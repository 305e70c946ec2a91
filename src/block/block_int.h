/* Block layer internals shared by block.c, file.c, raw.c, throttle.c and aio.c (not for
 * drivers outside src/block/ nor for callers). */
#ifndef WISP_BLOCK_BLOCK_INT_H
#define WISP_BLOCK_BLOCK_INT_H

#include <pthread.h>

#include "block/block.h"

struct block_file {
    int fd;
    char *path;
    bool read_only;
    bool direct; /* O_DIRECT: cache=none / directsync */
    bool is_blockdev;
    enum block_cache_mode cache;
    enum block_aio_engine aio;
    size_t align;             /* O_DIRECT alignment of offset, length and memory */
    pthread_mutex_t rmw_lock; /* serialises read-modify-write of unaligned direct writes */
    unsigned aio_threads, aio_queue_depth; /* engine sizes from block_open_opts */
    int64_t poll_max_ns;                   /* block_open_opts.poll_max_ns */
    block_file_io_hook io_hook;            /* tests only (block_file_set_io_hook) */
    void *io_hook_opaque;
};

/* After a data write: fdatasync for writethrough/directsync, nothing otherwise. */
int block_file_write_done(struct block_file *f, struct wisp_err *err);

/* One link of the backing chain being opened (for loop detection): the image's real path. */
struct block_chain {
    const struct block_chain *child; /* the image that named this one as its backing file */
    const char *realpath;
    const char *name; /* as given */
    unsigned depth;
};
#define BLOCK_MAX_CHAIN_DEPTH 64

extern const struct block_driver raw_driver;

/* Token buckets (throttle.c). */
struct block_throttle;
int block_throttle_create(struct block_throttle **out, const struct block_throttle_limits *l,
                          struct wisp_err *err);
void block_throttle_destroy(struct block_throttle *t);
/* New limits for a throttle in use (any thread): the buckets start full again. */
int block_throttle_set(struct block_throttle *t, const struct block_throttle_limits *l,
                       struct wisp_err *err);
/* Takes tokens for one request; sleeps until the buckets allow it. */
/* Synchronous API: sleeps until the request may start, then takes its tokens. */
void block_throttle_wait(struct block_throttle *t, bool write, uint64_t bytes);
/* Async API: takes the tokens and returns true when the request may start now; otherwise
 * returns false with *wait = seconds until it may. */
bool block_throttle_try(struct block_throttle *t, bool write, uint64_t bytes, double *wait);
void block_throttle_sleep(double seconds);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t block_now_ns(void);

/* Engines (aio.c). */
/* The limits changed: requests waiting for tokens are looked at again at the next poll. */
void block_aio_throttle_changed(struct block_dev *bs);
void block_aio_destroy(struct block_dev *bs);

#endif
