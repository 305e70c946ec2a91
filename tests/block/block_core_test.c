/* Block layer core on real files: every cache mode (O_DIRECT with unaligned caller buffers and
 * offsets), sparse status, discard / write_zeroes, every I/O engine through the async API with
 * random I/O checked against a shadow copy, and backing chain loop / depth detection.
 * Usage: block_core_test DIR (a directory on a file system with O_DIRECT, e.g. /var/tmp). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"

static int failures;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define DISK (8u << 20)
static char dir[512];

static void make_raw(const char *path, uint64_t size)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror(path);
        exit(2);
    }
    close(fd);
}

static struct block_dev *open_or_exit(const char *path, const struct block_open_opts *o)
{
    struct wisp_err err = {0};
    struct block_dev *bs = NULL;
    if (block_open(&bs, path, o, &err) < 0) {
        fprintf(stderr, "open %s: %s\n", path, err.msg);
        exit(2);
    }
    return bs;
}

static struct block_dev *open_raw(const char *path, enum block_cache_mode cache,
                                  enum block_aio_engine aio)
{
    struct block_open_opts o = {.format = "raw", .cache = cache, .aio = aio};
    return open_or_exit(path, &o);
}

/* Unaligned offsets, lengths and buffers in every cache mode read back what was written. */
static void test_cache_modes(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/cache.raw", dir);
    for (int m = BLOCK_CACHE_WRITEBACK; m <= BLOCK_CACHE_UNSAFE; m++) {
        make_raw(path, DISK);
        struct block_dev *bs = open_raw(path, (enum block_cache_mode)m, BLOCK_AIO_SYNC);
        CHECK(block_file_is_direct(bs->file) ==
                  (m == BLOCK_CACHE_NONE || m == BLOCK_CACHE_DIRECTSYNC),
              "O_DIRECT for %s", block_cache_mode_name(m));
        static uint8_t wbuf[20000], rbuf[20001];
        for (size_t i = 0; i < sizeof(wbuf); i++)
            wbuf[i] = (uint8_t)(i * 7 + m);
        struct wisp_err err = {0};
        /* odd offset, odd length, odd buffer address */
        CHECK(block_pwrite(bs, 4097, wbuf + 1, 12345, &err) == 0, "%s", err.msg);
        CHECK(block_pwrite(bs, 4097 + 12345, wbuf, 3, &err) == 0, "%s", err.msg);
        CHECK(block_flush(bs, &err) == 0, "%s", err.msg);
        CHECK(block_pread(bs, 4097, rbuf + 1, 12348, &err) == 0, "%s", err.msg);
        CHECK(!memcmp(rbuf + 1, wbuf + 1, 12345) && !memcmp(rbuf + 1 + 12345, wbuf, 3),
              "cache=%s data mismatch", block_cache_mode_name(m));
        /* the bytes around the write are untouched zeroes (read-modify-write kept them) */
        CHECK(block_pread(bs, 4096, rbuf, 1, &err) == 0 && rbuf[0] == 0, "byte before");
        CHECK(block_pread(bs, 4097 + 12348, rbuf, 1, &err) == 0 && rbuf[0] == 0, "byte after");
        /* an unaligned write at the very end must not grow the file */
        CHECK(block_pwrite(bs, DISK - 5, wbuf, 5, &err) == 0, "%s", err.msg);
        struct stat st;
        stat(path, &st);
        CHECK((uint64_t)st.st_size == DISK, "size %jd after a tail write (%s)",
              (intmax_t)st.st_size, block_cache_mode_name(m));
        CHECK(block_pread(bs, DISK - 5, rbuf, 5, &err) == 0 && !memcmp(rbuf, wbuf, 5), "tail");
        /* past the end is an error naming the image */
        CHECK(block_pread(bs, DISK - 1, rbuf, 2, &err) == -EINVAL && strstr(err.msg, "cache.raw"),
              "read past the end: %s", err.msg);
        block_close(bs);
    }
}

/* Holes via SEEK_DATA/HOLE, discard punches a hole, write_zeroes reads back zeroes. */
static void test_sparse(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/sparse.raw", dir);
    make_raw(path, DISK);
    struct block_dev *bs = open_raw(path, BLOCK_CACHE_WRITEBACK, BLOCK_AIO_SYNC);
    static uint8_t buf[1 << 20];
    memset(buf, 0xab, sizeof(buf));
    struct wisp_err err = {0};
    CHECK(block_pwrite(bs, 2 << 20, buf, 1 << 20, &err) == 0, "%s", err.msg);
    uint64_t pnum, host;
    int st = block_status(bs, 0, DISK, &pnum, &host, &err);
    CHECK(st >= 0 && (st & BLOCK_STATUS_ZERO) && pnum == 2 << 20, "hole at 0: st=%d pnum=%" PRIu64,
          st, pnum);
    st = block_status(bs, 2 << 20, DISK - (2 << 20), &pnum, &host, &err);
    CHECK(st >= 0 && (st & BLOCK_STATUS_DATA) && pnum == 1 << 20 && host == 2 << 20,
          "data at 2M: st=%d pnum=%" PRIu64, st, pnum);
    CHECK(block_discard(bs, 2 << 20, 512 << 10, &err) == 0, "%s", err.msg);
    st = block_status(bs, 2 << 20, 1 << 20, &pnum, &host, &err);
    CHECK(st >= 0 && (st & BLOCK_STATUS_ZERO) && pnum == 512 << 10, "discarded: pnum=%" PRIu64,
          pnum);
    CHECK(block_write_zeroes(bs, (2 << 20) + 4096, 8192, 0, &err) == 0, "%s", err.msg);
    CHECK(block_pread(bs, 2 << 20, buf, 1 << 20, &err) == 0, "%s", err.msg);
    bool ok = true;
    for (size_t i = 0; i < (1 << 20); i++)
        if (buf[i] != (i < (512 << 10) ? 0 : 0xab))
            ok = false;
    CHECK(ok, "contents after discard/write_zeroes");
    block_close(bs);
}

struct aio_test {
    int done, errors;
};
static void aio_done(struct block_req *req, int ret);

/* A read of iov (one buffer) at off whose completion counts in t. */
static struct block_req read_req(struct iovec *iov, uint64_t off, struct aio_test *t)
{
    return (struct block_req){
        .op = BLOCK_OP_READ, .offset = off, .iov = iov, .iovcnt = 1, .done = aio_done, .opaque = t};
}

static void aio_done(struct block_req *req, int ret)
{
    struct aio_test *t = req->opaque;
    t->done++;
    if (ret < 0)
        t->errors++;
}

/* Random 4K..64K writes at depth 32 against a shadow copy, then a full read-back. */
static void test_engine(enum block_aio_engine e, enum block_cache_mode cache)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/aio.raw", dir);
    make_raw(path, DISK);
    struct block_dev *bs = open_raw(path, cache, e);
    uint8_t *shadow = calloc(1, DISK), *bufs = NULL, *back = NULL;
    if (posix_memalign((void **)&bufs, 4096, 32 * 65536) ||
        posix_memalign((void **)&back, 4096, DISK))
        exit(2);
    struct block_req reqs[32];
    struct iovec iovs[32];
    struct aio_test t = {0};
    struct wisp_err err = {0};
    srand(42 + e);
    for (int round = 0; round < 16; round++) {
        /* non-overlapping slots per round so completion order does not matter */
        for (int i = 0; i < 32; i++) {
            uint64_t len = 4096u * (1 + rand() % 16);
            uint64_t off = (uint64_t)i * (DISK / 32) + 4096u * (rand() % 16);
            memset(bufs + i * 65536, rand(), len);
            memcpy(shadow + off, bufs + i * 65536, len);
            iovs[i] = (struct iovec){bufs + i * 65536, len};
            reqs[i] = (struct block_req){.op = BLOCK_OP_WRITE,
                                         .offset = off,
                                         .iov = &iovs[i],
                                         .iovcnt = 1,
                                         .done = aio_done,
                                         .opaque = &t};
            CHECK(block_aio_submit(bs, &reqs[i], &err) == 0, "%s", err.msg);
        }
        while (t.done < (round + 1) * 32)
            CHECK(block_aio_poll(bs, 1, &err) >= 0, "%s", err.msg);
    }
    struct block_req fl = {.op = BLOCK_OP_FLUSH, .done = aio_done, .opaque = &t};
    CHECK(block_aio_submit(bs, &fl, &err) == 0, "%s", err.msg);
    while (t.done < 16 * 32 + 1)
        block_aio_poll(bs, 1, &err);
    struct iovec riov = {back, DISK};
    struct block_req rd = read_req(&riov, 0, &t);
    CHECK(block_aio_submit(bs, &rd, &err) == 0, "%s", err.msg);
    while (t.done < 16 * 32 + 2)
        block_aio_poll(bs, 1, &err);
    CHECK(t.errors == 0, "%d failed requests", t.errors);
    CHECK(!memcmp(back, shadow, DISK), "engine %s cache %s: data mismatch",
          block_aio_engine_name(e), block_cache_mode_name(cache));
    /* a write to a read-only node is refused at submit */
    block_close(bs);
    free(shadow), free(bufs), free(back);
}

/* This process's threads, io_uring's own workers left out: those carry PF_IO_WORKER (0x10) in
 * the flags of their stat line from their creation (their iou-wrk-N name comes a moment later,
 * so a name test would count a worker that is being started). */
static unsigned threads_now(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[300], line[1024];
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
        FILE *f = e->d_name[0] != '.' ? fopen(path, "r") : NULL;
        char *close_paren = f && fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
        unsigned long flags = 0;
        /* after "pid (comm)": state ppid pgrp session tty_nr tpgid flags */
        if (close_paren && sscanf(close_paren + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) == 1 &&
            !(flags & 0x10))
            n++;
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return n;
}

/* n reads of 4 KiB submitted at once, then polled to completion. */
static void read_burst(struct block_dev *bs, int n)
{
    static uint8_t buf[64][4096];
    struct iovec iov[64];
    struct block_req reqs[64];
    struct aio_test t = {0};
    struct wisp_err err = {0};
    for (int i = 0; i < n && i < 64; i++) {
        iov[i] = (struct iovec){buf[i], sizeof(buf[i])};
        reqs[i] = read_req(&iov[i], (uint64_t)i * 4096, &t);
        CHECK(block_aio_submit(bs, &reqs[i], &err) == 0, "%s", err.msg);
    }
    while (t.done < n)
        CHECK(block_aio_poll(bs, 1, &err) >= 0, "%s", err.msg);
    CHECK(t.errors == 0, "%d failed reads", t.errors);
}

/* The worker pool starts its threads as requests need them (a VM's drive costs none until
 * then): none at open, one for one request at a time, at most the pool size (16) however many
 * wait, none for the requests io_uring takes itself, all gone at close. */
static void test_pool_on_demand(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/pool.raw", dir);
    make_raw(path, 1u << 20);
    unsigned base = threads_now();
    struct block_dev *bs = open_raw(path, BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS);
    CHECK(threads_now() == base, "%u threads after open, %u before", threads_now(), base);
    read_burst(bs, 1);
    read_burst(bs, 1);
    CHECK(threads_now() == base + 1, "%u threads after two reads one at a time",
          threads_now() - base);
    read_burst(bs, 64);
    CHECK(threads_now() > base && threads_now() <= base + 16, "%u pool threads",
          threads_now() - base);
    block_close(bs);
    CHECK(threads_now() == base, "%u threads left after close", threads_now() - base);
    bs = open_raw(path, BLOCK_CACHE_WRITEBACK, BLOCK_AIO_IO_URING);
    read_burst(bs, 32);
    CHECK(threads_now() == base, "io_uring: %u pool threads for plain reads", threads_now() - base);
    block_close(bs);
    unlink(path);
}

/* Throttling queues: block_aio_submit() returns at once even when the bucket is empty, and
 * block_aio_poll() starts the queued requests, in order, as tokens come (20 IOPS, burst 1). */
static void test_throttle_queue(enum block_aio_engine e)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/thr.raw", dir);
    make_raw(path, 1u << 20);
    struct block_throttle_limits lim = {.iops_total = 20, .iops_total_max = 1};
    struct block_open_opts o = {.format = "raw", .aio = e, .throttle = &lim};
    struct block_dev *bs = open_or_exit(path, &o);
    struct wisp_err err = {0};
    enum { N = 6 };
    static uint8_t buf[N][512];
    struct iovec iov[N];
    struct block_req reqs[N];
    struct aio_test t = {0};
    for (int i = 0; i < N; i++) {
        iov[i] = (struct iovec){buf[i], sizeof(buf[i])};
        reqs[i] = read_req(&iov[i], (uint64_t)i * 512, &t);
        CHECK(block_aio_submit(bs, &reqs[i], &err) == 0, "%s", err.msg);
    }
    /* a sleeping submit would have started them all by now (and the sync engine run them) */
    CHECK(block_aio_poll(bs, 0, &err) >= 0, "%s", err.msg);
    CHECK(t.done <= 2, "engine %s: %d of %d throttled requests done right after submit",
          block_aio_engine_name(e), t.done, N);
    while (t.done < N)
        CHECK(block_aio_poll(bs, 1, &err) > 0, "%s", err.msg);
    CHECK(t.errors == 0, "%d failed requests", t.errors);
    block_close(bs);
    unlink(path);
}

/* qcow2 reads through io_uring (mapped to host offsets) and the pool equal qemu's raw export:
 * data, compressed and zero clusters, unallocated ranges and a backing file. */
static void test_qcow2_engines(void)
{
    char cmd[4096], qpath[600], rpath[600];
    snprintf(qpath, sizeof(qpath), "%s/top.qcow2", dir);
    snprintf(rpath, sizeof(rpath), "%s/top.raw", dir);
    snprintf(cmd, sizeof(cmd),
             "cd %s && qemu-img create -q -f qcow2 base.qcow2 8M && "
             "qemu-io -f qcow2 -c 'write -P 0x21 0 4M' base.qcow2 >/dev/null && "
             "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && "
             "qemu-io -f qcow2 -c 'write -P 0x42 1M 1M' -c 'write -z 2M 64k' "
             "-c 'write -c -P 0x43 6M 64k' -c 'write -P 0x44 7M 8k' top.qcow2 >/dev/null && "
             "qemu-img convert -O raw top.qcow2 top.raw",
             dir);
    if (system(cmd) != 0) {
        printf("qemu-img not usable: qcow2 engine test skipped\n");
        return;
    }
    int fd = open(rpath, O_RDONLY);
    uint8_t *want = malloc(DISK), *got = NULL;
    if (fd < 0 || !want || read(fd, want, DISK) != DISK ||
        posix_memalign((void **)&got, 4096, DISK))
        exit(2);
    close(fd);
    for (int e = BLOCK_AIO_THREADS; e <= BLOCK_AIO_IO_URING; e++) {
        struct block_open_opts o = {.read_only = true, .aio = (enum block_aio_engine)e};
        struct wisp_err err = {0};
        struct block_dev *bs;
        if (block_open(&bs, qpath, &o, &err) < 0) {
            CHECK(0, "open %s: %s", qpath, err.msg);
            return;
        }
        struct block_req reqs[128];
        struct iovec iovs[128];
        struct aio_test t = {0};
        memset(got, 0xee, DISK);
        for (int i = 0; i < 128; i++) { /* 64 KiB each, all in flight at once */
            iovs[i] = (struct iovec){got + i * 65536, 65536};
            reqs[i] = read_req(&iovs[i], (uint64_t)i * 65536, &t);
            CHECK(block_aio_submit(bs, &reqs[i], &err) == 0, "%s", err.msg);
        }
        while (t.done < 128)
            block_aio_poll(bs, 1, &err);
        CHECK(t.errors == 0 && !memcmp(got, want, DISK), "qcow2 reads with engine %s differ",
              block_aio_engine_name((enum block_aio_engine)e));
        block_close(bs);
    }
    free(want), free(got);
    snprintf(cmd, sizeof(cmd), "rm -f %s/base.qcow2 %s/top.qcow2 %s/top.raw", dir, dir, dir);
    if (system(cmd) != 0)
        CHECK(0, "cleanup");
}

/* Waits on the completion fd (never in block_aio_poll) until t->done reaches n; each wake-up
 * must be followed by a poll that finds work sooner or later. Fails instead of hanging when the
 * fd is never signalled. Returns the number of wake-ups. */
static int drain_by_event_fd(struct block_dev *bs, int efd, struct aio_test *t, int n,
                             const char *what)
{
    struct wisp_err err = {0};
    int wakeups = 0;
    while (t->done < n) {
        struct epoll_event ev;
        int r;
        do /* io_uring task work interrupts the wait (EINTR), then signals the fd */
            r = epoll_wait(efd, &ev, 1, 5000);
        while (r < 0 && errno == EINTR);
        if (r != 1) {
            CHECK(0, "%s: completion fd not readable within 5 s (%d of %d done, r=%d %s)", what,
                  t->done, n, r, r < 0 ? strerror(errno) : "timeout");
            while (t->done < n && block_aio_poll(bs, 1, &err) > 0) /* do not leave them in flight */
                ;
            return wakeups;
        }
        wakeups++;
        CHECK(block_aio_poll(bs, 0, &err) >= 0, "%s", err.msg);
    }
    /* nothing in flight: after one more poll the fd must be quiet */
    CHECK(block_aio_poll(bs, 0, &err) == 0, "%s: poll found work after all completed", what);
    struct epoll_event ev;
    CHECK(epoll_wait(efd, &ev, 1, 0) == 0, "%s: completion fd readable with nothing to do", what);
    return wakeups;
}

/* QD32 writes then reads of random 4K..64K extents through the completion fd. */
static void event_fd_io(struct block_dev *bs, bool late, const char *what)
{
    enum { QD = 32 };
    static uint8_t bufs[QD][65536] __attribute__((aligned(4096)));
    static uint8_t shadow[QD][65536];
    struct block_req reqs[QD];
    struct iovec iovs[QD];
    struct aio_test t = {0};
    struct wisp_err err = {0};
    int efd = late ? -1 : block_aio_event_fd(bs, &err);
    CHECK(late || efd >= 0, "%s: %s", what, err.msg);
    if (!late) {
        block_aio_poll(bs, 0, &err); /* clears the signal of creation */
        struct epoll_event ev;
        CHECK(epoll_wait(efd, &ev, 1, 0) == 0, "%s: readable before any request", what);
    }
    for (int i = 0; i < QD; i++) {
        size_t len = 4096u * (1 + (unsigned)rand() % 16);
        memset(bufs[i], 'a' + i, len);
        memcpy(shadow[i], bufs[i], len);
        iovs[i] = (struct iovec){bufs[i], len};
        reqs[i] = (struct block_req){.op = BLOCK_OP_WRITE,
                                     .offset = (uint64_t)i * 65536,
                                     .iov = &iovs[i],
                                     .iovcnt = 1,
                                     .done = aio_done,
                                     .opaque = &t};
        CHECK(block_aio_submit(bs, &reqs[i], &err) == 0, "%s", err.msg);
    }
    if (late) /* the engine exists and requests are in flight */
        CHECK((efd = block_aio_event_fd(bs, &err)) >= 0, "%s: %s", what, err.msg);
    if (efd < 0)
        return;
    drain_by_event_fd(bs, efd, &t, QD, what);
    for (int i = 0; i < QD; i++) {
        memset(bufs[i], 0, iovs[i].iov_len);
        reqs[i] = read_req(&iovs[i], (uint64_t)i * 65536, &t);
        CHECK(block_aio_submit(bs, &reqs[i], &err) == 0, "%s", err.msg);
    }
    drain_by_event_fd(bs, efd, &t, 2 * QD, what);
    CHECK(t.errors == 0, "%s: %d failed requests", what, t.errors);
    for (int i = 0; i < QD; i++)
        CHECK(!memcmp(bufs[i], shadow[i], iovs[i].iov_len), "%s: request %d read back wrong", what,
              i);
}

/* block_aio_event_fd(): every engine (raw and qcow2, the ring and the pool paths), the fd
 * asked for before the first request and while requests are in flight. */
static void test_event_fd(enum block_aio_engine e)
{
    char path[600], what[128];
    const char *fmts[] = {"raw", "qcow2"};
    for (int f = 0; f < 2; f++) {
        for (int late = 0; late < 2; late++) {
            snprintf(path, sizeof(path), "%s/evfd.%s", dir, fmts[f]);
            snprintf(what, sizeof(what), "event fd %s %s%s", block_aio_engine_name(e), fmts[f],
                     late ? " (late)" : "");
            struct wisp_err err = {0};
            if (f == 0) {
                make_raw(path, DISK);
            } else {
                struct qcow2_create_opts q = {.size = DISK};
                CHECK(qcow2_create(path, &q, &err) == 0, "%s", err.msg);
            }
            struct block_open_opts o = {.format = fmts[f], .aio = e};
            struct block_dev *bs = open_or_exit(path, &o);
            event_fd_io(bs, late, what);
            /* qcow2: the second round overwrites allocated clusters (ring-eligible) */
            if (f == 1)
                event_fd_io(bs, false, what);
            block_close(bs);
            unlink(path);
        }
    }
}

/* With only throttled requests queued, the completion fd wakes the caller when the tokens come
 * (20 IOPS, burst 1): the loop never sleeps in block_aio_poll, so without the timer it would
 * fail after 5 s; and it does not spin (a bounded number of wake-ups). */
static void test_event_fd_throttle(enum block_aio_engine e)
{
    char path[600], what[64];
    snprintf(path, sizeof(path), "%s/evthr.raw", dir);
    snprintf(what, sizeof(what), "throttled event fd %s", block_aio_engine_name(e));
    make_raw(path, 1u << 20);
    struct block_throttle_limits lim = {.iops_total = 20, .iops_total_max = 1};
    struct block_open_opts o = {.format = "raw", .aio = e, .throttle = &lim};
    struct block_dev *bs = open_or_exit(path, &o);
    struct wisp_err err = {0};
    int efd = block_aio_event_fd(bs, &err);
    CHECK(efd >= 0, "%s", err.msg);
    enum { N = 6 };
    static uint8_t buf[N][512];
    struct iovec iov[N];
    struct block_req reqs[N];
    struct aio_test t = {0};
    for (int i = 0; i < N; i++) {
        iov[i] = (struct iovec){buf[i], sizeof(buf[i])};
        reqs[i] = read_req(&iov[i], (uint64_t)i * 512, &t);
        CHECK(block_aio_submit(bs, &reqs[i], &err) == 0, "%s", err.msg);
    }
    if (efd >= 0) {
        int wakeups = drain_by_event_fd(bs, efd, &t, N, what);
        CHECK(wakeups <= 4 * N, "%s: %d wake-ups for %d requests (spinning)", what, wakeups, N);
    }
    CHECK(t.errors == 0, "%d failed requests", t.errors);
    block_close(bs);
    unlink(path);
}

static void test_read_only(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/ro.raw", dir);
    make_raw(path, DISK);
    struct block_open_opts o = {.format = "raw", .read_only = true};
    struct wisp_err err = {0};
    struct block_dev *bs;
    CHECK(block_open(&bs, path, &o, &err) == 0, "%s", err.msg);
    uint8_t b[512] = {1};
    CHECK(block_pwrite(bs, 0, b, 512, &err) == -EROFS, "write to read-only");
    struct iovec iov = {b, 512};
    struct block_req r = {.op = BLOCK_OP_WRITE, .iov = &iov, .iovcnt = 1};
    CHECK(block_aio_submit(bs, &r, &err) == -EROFS, "aio write to read-only");
    CHECK(block_discard(bs, 0, 512, &err) == -EROFS, "discard on read-only");
    block_close(bs);
}

int main(int argc, char **argv)
{
    snprintf(dir, sizeof(dir), "%s/wisp-block-core.XXXXXX", argc > 1 ? argv[1] : "/var/tmp");
    if (!mkdtemp(dir)) {
        perror(dir);
        return 2;
    }
    test_cache_modes();
    test_sparse();
    for (int e = BLOCK_AIO_SYNC; e <= BLOCK_AIO_IO_URING; e++) {
        test_engine((enum block_aio_engine)e, BLOCK_CACHE_WRITEBACK);
        test_engine((enum block_aio_engine)e, BLOCK_CACHE_NONE);
        test_engine((enum block_aio_engine)e, BLOCK_CACHE_DIRECTSYNC);
    }
    test_qcow2_engines();
    test_pool_on_demand();
    for (int e = BLOCK_AIO_SYNC; e <= BLOCK_AIO_IO_URING; e++)
        test_throttle_queue((enum block_aio_engine)e);
    for (int e = BLOCK_AIO_SYNC; e <= BLOCK_AIO_IO_URING; e++) {
        test_event_fd((enum block_aio_engine)e);
        test_event_fd_throttle((enum block_aio_engine)e);
    }
    test_read_only();
    static const char *const files[] = {"cache.raw", "sparse.raw", "aio.raw", "ro.raw"};
    for (unsigned i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[600];
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("block core: all passed\n");
    return 0;
}
