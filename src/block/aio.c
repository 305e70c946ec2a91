/* Asynchronous requests on a block_dev's I/O engine.
 *   sync     : the request runs inside block_aio_submit(); its completion waits for poll.
 *   threads  : a pool of workers calls the (thread-safe, synchronous) driver functions. The
 *              workers start as requests need them (one more whenever a request is queued
 *              and no worker waits), up to the pool size: a drive that never needs the pool
 *              (raw on io_uring) costs no thread, and launching a VM creates none.
 *   io_uring : raw data I/O and flushes go straight to the ring; requests the ring cannot
 *              take as they are (other formats, which map under their lock; unaligned O_DIRECT;
 *              discard / write_zeroes) fall back to the worker pool.
 * Completion callbacks always run in the thread that calls block_aio_poll().
 * Throttling (block_open_opts.throttle) never blocks block_aio_submit(): a read or write that
 * has no tokens yet, or that arrives while others wait, joins a FIFO that block_aio_poll()
 * starts as the buckets refill (it sleeps until then when nothing else is in flight).
 *
 * Before it sleeps, block_aio_poll() busy-polls the completion ring for a while: QEMU's
 * adaptive polling (iothread poll-max-ns). The window grows (4 us, doubling) while completions
 * arrive within poll_max_ns and shrinks to nothing when they take longer. On a fast device this
 * saves a sleep and a wake-up per request (on this project's nested-KVM machines, ~20 us of a
 * ~60 us 4 KiB read); on a slow one it costs nothing. The ring runs with cooperative task
 * work, so a polling thread is told by a flag, not an interrupt, that completions are waiting.
 * The thread pool is not polled: its completions need a worker thread to run, and spinning
 * would take the CPU it needs. Submissions are not batched: measured here, one io_uring_enter
 * per request kept the device busier than batches of a poll round's worth. */
#include "block/block_int.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/thread_kind.h"

#define AIO_DEFAULT_THREADS 16
#define AIO_DEFAULT_RING    128

struct aio_item {
    struct block_req *req;
    int ret;
    bool mapped; /* the driver mapped [host, host + len) for the ring: map_done() at the end */
    uint64_t host, len;
    struct aio_item *next;
};

/* A FIFO of items (pool work, finished requests, throttled requests). */
struct aio_queue {
    struct aio_item *head, *tail;
    unsigned len;
};

static void queue_push(struct aio_queue *q, struct aio_item *it)
{
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->len++;
}

static struct aio_item *queue_pop(struct aio_queue *q)
{
    struct aio_item *it = q->head;
    if (it && !(q->head = it->next))
        q->tail = NULL;
    if (it)
        q->len--;
    return it;
}

struct block_aio_ctx {
    enum block_aio_engine engine;
    pthread_mutex_t lock;
    pthread_cond_t work_cond, done_cond;
    unsigned done_waiting;  /* the poller sleeps on done_cond (under lock) */
    struct aio_queue work;  /* pool queue */
    struct aio_queue done;  /* finished, callbacks not yet run */
    struct aio_queue thr;   /* throttled: waiting for tokens, in order */
    unsigned pool_inflight; /* queued or running in the pool */
    pthread_t *threads;
    unsigned nthreads, max_threads; /* started so far, at most */
    unsigned idle_threads;          /* waiting for work */
    bool stop;
    struct io_uring ring;
    bool ring_ok;
    unsigned ring_inflight, ring_size;
    bool fixed_file;               /* bs->file->fd is registered with the ring as file 0 */
    bool ring_coop;                /* set up with IORING_SETUP_COOP_TASKRUN */
    uint64_t poll_ns, poll_max_ns; /* adaptive busy-poll window (0 = sleep at once) */
    /* block_aio_event_fd(): an eventfd (pool and sync completions write it; the ring signals
     * it for each CQE) and a timerfd (the next throttled start), both in epoll_fd; -1 = none */
    int event_fd, timer_fd, epoll_fd;
};

/* Makes the completion fd readable (pool workers, sync completions, failed starts). */
static void event_signal(struct block_aio_ctx *c)
{
    uint64_t one = 1;
    if (c->event_fd >= 0 && write(c->event_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, so the fd is readable anyway */
    }
}

/* Clears the completion fd; called by block_aio_poll() before it looks at anything. */
static void event_clear(struct block_aio_ctx *c)
{
    uint64_t v;
    if (c->event_fd < 0)
        return;
    if (read(c->event_fd, &v, sizeof(v)) < 0 || read(c->timer_fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing was pending */
    }
}

/* Arms the timerfd for the next throttled start in `seconds` (<= 0: now), or disarms it. */
static void event_arm_throttle(struct block_aio_ctx *c, bool waiting, double seconds)
{
    if (c->timer_fd < 0)
        return;
    struct itimerspec its = {0};
    if (waiting) {
        uint64_t ns = seconds > 0 ? (uint64_t)(seconds * 1e9) + 1000 : 1;
        its.it_value.tv_sec = (time_t)(ns / 1000000000u);
        its.it_value.tv_nsec = (long)(ns % 1000000000u);
    }
    timerfd_settime(c->timer_fd, 0, &its, NULL);
}

void block_aio_throttle_changed(struct block_dev *bs)
{
    struct block_aio_ctx *c = bs->aio;
    if (c && c->thr.head)
        event_arm_throttle(c, true, 0);
}

static size_t req_bytes(const struct block_req *req)
{
    size_t n = 0;
    for (int i = 0; i < req->iovcnt; i++)
        n += req->iov[i].iov_len;
    return n;
}

/* Runs one request synchronously on the driver (no throttling: done at submit). */
static int aio_execute(struct block_dev *bs, struct block_req *req)
{
    struct wisp_err err = {0};
    switch (req->op) {
    case BLOCK_OP_READ:
        return bs->drv->preadv(bs, req->offset, req->iov, req->iovcnt, &err);
    case BLOCK_OP_WRITE:
        return bs->drv->pwritev(bs, req->offset, req->iov, req->iovcnt, &err);
    case BLOCK_OP_FLUSH:
        return bs->drv->flush(bs, &err);
    case BLOCK_OP_DISCARD:
        return bs->drv->discard ? bs->drv->discard(bs, req->offset, req->len, &err) : 0;
    case BLOCK_OP_WRITE_ZEROES:
        return bs->drv->write_zeroes(bs, req->offset, req->len, BLOCK_WZ_MAY_UNMAP, &err);
    }
    return -EINVAL;
}

static void *pool_worker(void *opaque)
{
    struct block_dev *bs = opaque;
    struct block_aio_ctx *c = bs->aio;
    wisp_thread_enter(WISP_THREAD_POOL, NULL);
    pthread_mutex_lock(&c->lock);
    c->idle_threads++;
    for (;;) {
        while (!c->work.head && !c->stop)
            pthread_cond_wait(&c->work_cond, &c->lock);
        if (c->stop)
            break;
        c->idle_threads--;
        struct aio_item *it = queue_pop(&c->work);
        pthread_mutex_unlock(&c->lock);
        it->ret = aio_execute(bs, it->req);
        pthread_mutex_lock(&c->lock);
        c->pool_inflight--;
        queue_push(&c->done, it);
        /* idle again from here: pool_grow() must not start a thread for the next request while
         * this one drops the lock below to wake the poller */
        c->idle_threads++;
        event_signal(c); /* under the lock: block_aio_event_fd() sets event_fd under it */
        /* Only a poller asleep is woken (a busy one finds the item), and with the lock dropped,
         * or it wakes only to wait for the lock: one more futex round trip and context switch
         * per request (depth 1 on tmpfs: 0.29 -> 0.25 s for 50000 writes). */
        if (c->done_waiting) {
            pthread_mutex_unlock(&c->lock);
            pthread_cond_broadcast(&c->done_cond);
            pthread_mutex_lock(&c->lock);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* The pool's bookkeeping; its workers start in pool_grow(). */
static int pool_init(struct block_dev *bs, struct wisp_err *err)
{
    struct block_aio_ctx *c = bs->aio;
    c->max_threads = bs->file->aio_threads ? bs->file->aio_threads : AIO_DEFAULT_THREADS;
    c->threads = calloc(c->max_threads, sizeof(*c->threads));
    if (!c->threads)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", bs->filename);
    return 0;
}

/* Before one more item joins the work queue (c->lock held): a new worker unless a waiting one
 * will take it. Fails only when the pool has no worker at all (the item could never run); a
 * pool that has some keeps going with those. */
static int pool_grow(struct block_dev *bs, struct block_aio_ctx *c, struct wisp_err *err)
{
    if (c->idle_threads > c->work.len || c->nthreads == c->max_threads)
        return 0;
    int r = wisp_thread_create(&c->threads[c->nthreads], NULL, pool_worker, bs);
    if (r == 0)
        c->nthreads++;
    else if (c->nthreads == 0)
        return wisp_err_sys(err, r, "%s: starting an I/O worker thread", bs->filename);
    return 0;
}

/* Sets up the ring. With coop, completions wait for this thread to enter the kernel (it does,
 * to poll or sleep) and raise IORING_SQ_TASKRUN instead of interrupting it; without (when a
 * completion fd is used), a thread sleeping in epoll_wait() is woken by each completion. */
static int ring_init(struct block_dev *bs, struct block_aio_ctx *c, bool coop, struct wisp_err *err)
{
    int r = -EINVAL;
    if (coop)
        r = io_uring_queue_init(c->ring_size, &c->ring,
                                IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    c->ring_coop = r == 0;
    if (r == -EINVAL) /* no completion fd, or kernels before 5.19 */
        r = io_uring_queue_init(c->ring_size, &c->ring, 0);
    if (r < 0)
        return wisp_err_sys(err, -r, "%s: io_uring_queue_init", bs->filename);
    c->ring_ok = true;
    c->fixed_file = io_uring_register_files(&c->ring, &bs->file->fd, 1) == 0;
    if (c->event_fd >= 0 && (r = io_uring_register_eventfd(&c->ring, c->event_fd)) < 0)
        return wisp_err_sys(err, -r, "%s: io_uring_register_eventfd", bs->filename);
    return 0;
}

static int aio_ctx_create(struct block_dev *bs, struct wisp_err *err)
{
    struct block_aio_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", bs->filename);
    c->engine = bs->file->aio;
    c->event_fd = c->timer_fd = c->epoll_fd = -1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->work_cond, NULL);
    pthread_cond_init(&c->done_cond, NULL);
    bs->aio = c;
    if (c->engine == BLOCK_AIO_IO_URING) {
        c->ring_size = bs->file->aio_queue_depth ? bs->file->aio_queue_depth : AIO_DEFAULT_RING;
        int r = ring_init(bs, c, true, err);
        if (r < 0)
            return r;
        /* Poll only where the device completes requests by itself (O_DIRECT). Buffered
         * requests either complete inside io_uring_enter (page cache hits) or in io-wq kernel
         * threads, and on a 2-core host a spinning poller takes the CPU those need (measured on
         * tmpfs: 20% of the CPU in the spin loop, depth-32 reads no faster than qemu-img). */
        int64_t max = bs->file->direct ? bs->file->poll_max_ns : -1;
        c->poll_max_ns = max < 0 ? 0 : max ? (uint64_t)max : BLOCK_POLL_MAX_NS_DEFAULT;
    }
    if (c->engine != BLOCK_AIO_SYNC)
        return pool_init(bs, err);
    return 0;
}

void block_aio_destroy(struct block_dev *bs)
{
    struct block_aio_ctx *c = bs->aio;
    if (!c)
        return;
    /* finish what is in flight or queued so no worker touches a freed node */
    while (c->ring_inflight || c->pool_inflight || c->thr.len)
        if (block_aio_poll(bs, c->ring_inflight + c->pool_inflight + c->thr.len, NULL) <= 0)
            break;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_broadcast(&c->work_cond);
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    free(c->threads);
    if (c->ring_ok)
        io_uring_queue_exit(&c->ring);
    const int fds[] = {c->epoll_fd, c->event_fd, c->timer_fd};
    for (unsigned i = 0; i < ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    for (struct aio_item *it = c->done.head, *next; it; it = next) {
        next = it->next;
        free(it);
    }
    pthread_cond_destroy(&c->work_cond);
    pthread_cond_destroy(&c->done_cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
    bs->aio = NULL;
}

static bool iov_direct_ok(const struct block_file *f, uint64_t off, const struct block_req *req)
{
    if (!f->direct)
        return true;
    if (off % f->align)
        return false;
    for (int i = 0; i < req->iovcnt; i++)
        if ((uintptr_t)req->iov[i].iov_base % f->align || req->iov[i].iov_len % f->align)
            return false;
    return true;
}

/* Ends the driver's mapping of a ring request (its host clusters may be reused again). */
static void ring_unmap(struct block_dev *bs, struct aio_item *it)
{
    if (it->mapped) {
        bs->drv->map_done(bs, it->host, it->len);
        it->mapped = false;
    }
}

/* Can the ring take this request directly, and at which host offset? Raw data I/O and flushes
 * go as they are. For other formats the driver maps the range (map_for_read / map_for_write,
 * under its lock) when it is one contiguous run of plain data clusters that can be read or
 * overwritten in place; the ring then transfers it and the mapping ends at completion.
 * Everything else (allocation, COW, compression, zero clusters, backing files) runs in the
 * pool on the synchronous driver. */
static bool ring_eligible(struct block_dev *bs, struct aio_item *it, uint64_t *host)
{
    const struct block_req *req = it->req;
    *host = req->offset;
    if (req->op == BLOCK_OP_FLUSH)
        return bs->drv == &raw_driver;
    if ((req->op != BLOCK_OP_READ && req->op != BLOCK_OP_WRITE) || req->iovcnt > IOV_MAX)
        return false;
    if (bs->drv == &raw_driver)
        return iov_direct_ok(bs->file, *host, req);
    size_t len = req_bytes(req);
    int (*map)(struct block_dev *, uint64_t, uint64_t, uint64_t *) =
        req->op == BLOCK_OP_WRITE ? bs->drv->map_for_write : bs->drv->map_for_read;
    if (len == 0 || !map || !bs->drv->map_done || map(bs, req->offset, len, host) < 0)
        return false;
    it->mapped = true;
    it->host = *host;
    it->len = len;
    if (!iov_direct_ok(bs->file, *host, req)) {
        ring_unmap(bs, it);
        return false;
    }
    return true;
}

static void ring_reap(struct block_aio_ctx *c, struct block_dev *bs);

/* Hands the kernel what the submission ring holds. Transient failures are retried: EINTR at
 * once, EBUSY / EAGAIN (completions to reap first, or kernel memory short) after reaping.
 * Returns 0, or the hard error that left SQEs in the ring. */
static int ring_flush_sq(struct block_aio_ctx *c, struct block_dev *bs)
{
    int r = 0;
    for (unsigned tries = 0; io_uring_sq_ready(&c->ring) && tries < 1000; tries++) {
        r = io_uring_submit(&c->ring);
        if (r >= 0 || r == -EINTR)
            continue;
        if (r != -EAGAIN && r != -EBUSY)
            return r;
        ring_reap(c, bs);
        if (r == -EAGAIN)
            block_throttle_sleep(0.0001);
    }
    return r < 0 ? r : 0;
}

static int ring_submit(struct block_aio_ctx *c, struct block_dev *bs, struct aio_item *it,
                       uint64_t host)
{
    struct block_req *req = it->req;
    /* fewer than ring_size requests are in flight (aio_dispatch), so an SQE is free */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
    if (!sqe)
        return -EAGAIN;
    /* the registered file (index 0) spares the kernel a file-table lookup per request */
    int fd = c->fixed_file ? 0 : bs->file->fd;
    bool sync_write =
        bs->file->cache == BLOCK_CACHE_WRITETHROUGH || bs->file->cache == BLOCK_CACHE_DIRECTSYNC;
    const struct iovec *v = req->iov;
    if (req->op == BLOCK_OP_READ && req->iovcnt == 1) /* no iovec to import */
        io_uring_prep_read(sqe, fd, v->iov_base, (unsigned)v->iov_len, host);
    else if (req->op == BLOCK_OP_READ)
        io_uring_prep_readv(sqe, fd, v, (unsigned)req->iovcnt, host);
    else if (req->op == BLOCK_OP_WRITE && req->iovcnt == 1)
        io_uring_prep_write(sqe, fd, v->iov_base, (unsigned)v->iov_len, host);
    else if (req->op == BLOCK_OP_WRITE)
        io_uring_prep_writev(sqe, fd, v, (unsigned)req->iovcnt, host);
    else if (bs->file->cache == BLOCK_CACHE_UNSAFE)
        io_uring_prep_nop(sqe); /* unsafe: flushes are ignored */
    else
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    if (req->op == BLOCK_OP_WRITE && sync_write)
        sqe->rw_flags = RWF_DSYNC;
    if (c->fixed_file)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(sqe, it);
    c->ring_inflight++;
    int r = ring_flush_sq(c, bs);
    if (r < 0) {
        /* The kernel has not taken the SQE: it becomes a no-op naming no request (completed
         * and dropped whenever the ring takes it, still counted in ring_inflight until then),
         * so the caller can fail and free the request. */
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data(sqe, NULL);
    }
    return r;
}

static int aio_check(struct block_dev *bs, const struct block_req *req, struct wisp_err *err)
{
    uint64_t len =
        req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE ? req_bytes(req) : req->len;
    if (req->op != BLOCK_OP_READ && req->op != BLOCK_OP_FLUSH && bs->read_only)
        return wisp_err_set(err, EROFS, "%s: image is opened read-only", bs->filename);
    if (req->op != BLOCK_OP_FLUSH && (req->offset > bs->size || len > bs->size - req->offset))
        return wisp_err_set(err, EINVAL,
                            "%s: request at offset %" PRIu64 " length %" PRIu64
                            " is beyond the end of the disk",
                            bs->filename, req->offset, len);
    return 0;
}

static bool throttled(const struct block_dev *bs, const struct block_req *req)
{
    return bs->throttle && (req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE);
}

/* Takes the request's tokens if it may start now; else *wait = seconds until it may. */
static bool throttle_take(struct block_dev *bs, const struct block_req *req, double *wait)
{
    return block_throttle_try(bs->throttle, req->op == BLOCK_OP_WRITE, req_bytes(req), wait);
}

/* Starts one request on the engine (the tokens, if throttled, are taken). */
static int aio_dispatch(struct block_dev *bs, struct block_aio_ctx *c, struct aio_item *it,
                        struct wisp_err *err)
{
    struct block_req *req = it->req;
    if (c->engine == BLOCK_AIO_SYNC) {
        it->ret = aio_execute(bs, req);
        queue_push(&c->done, it);
        event_signal(c);
        return 0;
    }
    uint64_t host;
    /* at most ring_size on the ring, so its completion queue (twice as big) cannot overflow;
     * beyond that the pool takes requests */
    if (c->ring_ok && c->ring_inflight < c->ring_size && ring_eligible(bs, it, &host)) {
        int r = ring_submit(c, bs, it, host);
        if (r < 0)
            ring_unmap(bs, it);
        return r < 0 ? wisp_err_sys(err, -r, "%s: io_uring submit", bs->filename) : 0;
    }
    pthread_mutex_lock(&c->lock);
    int r = pool_grow(bs, c, err);
    if (r == 0) {
        queue_push(&c->work, it);
        c->pool_inflight++;
    }
    pthread_mutex_unlock(&c->lock);
    if (r == 0) /* after the unlock, so that the worker does not wake into a held lock */
        pthread_cond_signal(&c->work_cond);
    return r;
}

/* Starts the throttled requests whose tokens are there; returns the seconds until the next
 * one may start (0: none waits). A request that fails to start completes with the error. */
static double throttle_dispatch(struct block_dev *bs, struct block_aio_ctx *c)
{
    while (c->thr.head) {
        struct aio_item *it = c->thr.head;
        double wait;
        if (!throttle_take(bs, it->req, &wait))
            return wait;
        queue_pop(&c->thr);
        struct wisp_err err = {0};
        int r = aio_dispatch(bs, c, it, &err);
        if (r < 0) {
            it->ret = r;
            pthread_mutex_lock(&c->lock);
            queue_push(&c->done, it);
            pthread_mutex_unlock(&c->lock);
        }
    }
    return 0;
}

int block_aio_submit(struct block_dev *bs, struct block_req *req, struct wisp_err *err)
{
    int r = aio_check(bs, req, err);
    if (r < 0)
        return r;
    if (!bs->aio && (r = aio_ctx_create(bs, err)) < 0) {
        block_aio_destroy(bs);
        return r;
    }
    struct block_aio_ctx *c = bs->aio;
    struct aio_item *it = calloc(1, sizeof(*it));
    if (!it)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", bs->filename);
    it->req = req;
    double wait;
    if (throttled(bs, req) && (c->thr.head || !throttle_take(bs, req, &wait))) {
        if (!c->thr.head) /* the completion fd wakes the caller when the tokens are there */
            event_arm_throttle(c, true, wait);
        queue_push(&c->thr, it);
        return 0;
    }
    if ((r = aio_dispatch(bs, c, it, err)) < 0)
        free(it);
    return r;
}

/* A short ring transfer (EOF, or a partial write) is redone synchronously as a whole. */
static void ring_complete(struct block_aio_ctx *c, struct block_dev *bs, struct io_uring_cqe *cqe)
{
    struct aio_item *it = io_uring_cqe_get_data(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&c->ring, cqe);
    c->ring_inflight--;
    if (!it)
        return; /* the no-op left by a failed submission (ring_submit) */
    struct block_req *req = it->req;
    if (res >= 0 && (req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE) &&
        (size_t)res != req_bytes(req)) {
        ring_unmap(bs, it); /* the driver maps the range again */
        it->ret = aio_execute(bs, req);
    } else {
        it->ret = res < 0 ? res : 0;
    }
    ring_unmap(bs, it);
    pthread_mutex_lock(&c->lock);
    queue_push(&c->done, it);
    pthread_mutex_unlock(&c->lock);
}

/* Runs the callbacks of finished requests; returns how many ran. */
static unsigned run_callbacks(struct block_aio_ctx *c)
{
    pthread_mutex_lock(&c->lock);
    struct aio_item *it = c->done.head;
    c->done = (struct aio_queue){0};
    pthread_mutex_unlock(&c->lock);
    unsigned n = 0;
    while (it) {
        struct aio_item *next = it->next;
        it->req->done(it->req, it->ret);
        free(it);
        it = next;
        n++;
    }
    return n;
}

/* Busy-polls the completion ring for up to c->poll_ns; true when a completion is there. */
static bool ring_spin(struct block_aio_ctx *c)
{
    if (!c->poll_ns)
        return false;
    uint64_t end = block_now_ns() + c->poll_ns;
    do {
        for (int i = 0; i < 32; i++) {
            if (io_uring_cq_ready(&c->ring))
                return true;
            if (IO_URING_READ_ONCE(*c->ring.sq.kflags) & IORING_SQ_TASKRUN) {
                io_uring_get_events(&c->ring); /* runs the task work that posts completions */
                continue;
            }
            __builtin_ia32_pause();
        }
    } while (block_now_ns() < end);
    return false;
}

/* QEMU's rule: waits that end within the window leave it; waits longer than poll_max_ns
 * halve it (then drop it); waits that polling could have caught grow it. */
static void poll_adjust(struct block_aio_ctx *c, uint64_t waited_ns)
{
    if (waited_ns <= c->poll_ns)
        return;
    if (waited_ns > c->poll_max_ns)
        c->poll_ns = c->poll_ns > 4000 ? c->poll_ns / 2 : 0;
    else if (c->poll_ns < c->poll_max_ns)
        c->poll_ns = c->poll_ns ? c->poll_ns * 2 : 4000;
    if (c->poll_ns > c->poll_max_ns)
        c->poll_ns = c->poll_max_ns;
}

static void ring_reap(struct block_aio_ctx *c, struct block_dev *bs)
{
    struct io_uring_cqe *cqe;
    if (IO_URING_READ_ONCE(*c->ring.sq.kflags) & IORING_SQ_TASKRUN)
        io_uring_get_events(&c->ring);
    while (c->ring_inflight && io_uring_peek_cqe(&c->ring, &cqe) == 0)
        ring_complete(c, bs, cqe);
}

/* Waits for at least one ring completion: polls, then sleeps (at most 200 us when the pool
 * may also finish work meanwhile). Returns 0 or the ring's hard error. */
static int ring_wait(struct block_aio_ctx *c, struct block_dev *bs, bool short_wait)
{
    int r = ring_flush_sq(c, bs); /* SQEs left by a failed submission produce the completions */
    if (r < 0)
        return r;
    uint64_t t0 = c->poll_max_ns ? block_now_ns() : 0;
    struct io_uring_cqe *cqe;
    bool got = ring_spin(c);
    if (!got && !short_wait) {
        r = io_uring_wait_cqe(&c->ring, &cqe);
        got = r == 0;
    } else if (!got) {
        struct __kernel_timespec ts = {0, 200000};
        r = io_uring_wait_cqe_timeout(&c->ring, &cqe, &ts);
        got = r == 0;
    }
    if (c->poll_max_ns && got)
        poll_adjust(c, block_now_ns() - t0);
    ring_reap(c, bs);
    return r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN ? r : 0;
}

int block_aio_poll(struct block_dev *bs, unsigned min_done, struct wisp_err *err)
{
    struct block_aio_ctx *c = bs->aio;
    if (!c)
        return 0;
    unsigned done = 0;
    double thr_wait = 0;
    for (;;) {
        event_clear(c); /* before looking: what finishes from now on signals it again */
        thr_wait = c->thr.head ? throttle_dispatch(bs, c) : 0;
        if (c->ring_ok && c->ring_inflight)
            ring_reap(c, bs);
        done += run_callbacks(c);
        if (done >= min_done)
            break;
        pthread_mutex_lock(&c->lock);
        bool have_done = c->done.head != NULL;
        unsigned pool = c->pool_inflight;
        pthread_mutex_unlock(&c->lock);
        if (have_done || (c->thr.head && thr_wait <= 0))
            continue; /* callbacks ran or queued requests: start those first */
        if (!pool && !c->ring_inflight && !c->thr.head)
            break; /* nothing left that could complete */
        if (!pool && !c->ring_inflight) {
            block_throttle_sleep(thr_wait); /* only throttled requests left */
            continue;
        }
        if (c->ring_inflight) {
            /* short waits while requests queue */
            int r = ring_wait(c, bs, pool > 0 || c->thr.head);
            if (r < 0)
                return wisp_err_sys(err, -r, "%s: waiting for io_uring completions", bs->filename);
            continue;
        }
        pthread_mutex_lock(&c->lock);
        if (c->thr.head) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)(thr_wait * 1e9) + 1000;
            ts.tv_sec += (time_t)(ns / 1000000000u);
            ts.tv_nsec = (long)(ns % 1000000000u);
            c->done_waiting++;
            if (!c->done.head && c->pool_inflight)
                pthread_cond_timedwait(&c->done_cond, &c->lock, &ts);
            c->done_waiting--;
        } else {
            c->done_waiting++;
            while (!c->done.head && c->pool_inflight)
                pthread_cond_wait(&c->done_cond, &c->lock);
            c->done_waiting--;
        }
        pthread_mutex_unlock(&c->lock);
    }
    /* throttled requests left: the completion fd fires when the first may start (at once if
     * a callback queued it after the wait was computed) */
    event_arm_throttle(c, c->thr.head != NULL, thr_wait);
    return (int)done;
}

/* Switches the ring to plain task work (so completions wake epoll waiters) once nothing is in
 * flight on it, and registers the eventfd with it. */
static int event_attach_ring(struct block_dev *bs, struct block_aio_ctx *c, struct wisp_err *err)
{
    if (!c->ring_ok)
        return 0;
    if (!c->ring_coop) {
        int r = io_uring_register_eventfd(&c->ring, c->event_fd);
        return r < 0 ? wisp_err_sys(err, -r, "%s: io_uring_register_eventfd", bs->filename) : 0;
    }
    while (c->ring_inflight) {
        int r = ring_wait(c, bs, false);
        if (r < 0)
            return wisp_err_sys(err, -r, "%s: waiting for io_uring completions", bs->filename);
    }
    io_uring_queue_exit(&c->ring);
    c->ring_ok = c->fixed_file = false;
    return ring_init(bs, c, false, err);
}

int block_aio_event_fd(struct block_dev *bs, struct wisp_err *err)
{
    int r;
    if (!bs->aio && (r = aio_ctx_create(bs, err)) < 0) {
        block_aio_destroy(bs);
        return r;
    }
    struct block_aio_ctx *c = bs->aio;
    if (c->epoll_fd >= 0)
        return c->epoll_fd;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    r = efd < 0 || tfd < 0 || epfd < 0 ? -errno : 0;
    if (r == 0 && (epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev) < 0 ||
                   epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev) < 0))
        r = -errno;
    if (r < 0) {
        const int fds[] = {efd, tfd, epfd};
        for (unsigned i = 0; i < ARRAY_SIZE(fds); i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return wisp_err_sys(err, -r, "%s: creating the completion fd", bs->filename);
    }
    pthread_mutex_lock(&c->lock); /* pool workers read event_fd under the lock */
    c->event_fd = efd;
    pthread_mutex_unlock(&c->lock);
    c->timer_fd = tfd;
    c->epoll_fd = epfd;
    if ((r = event_attach_ring(bs, c, err)) < 0)
        return r;    /* the fds stay with c (closed by block_close); the pool serves requests */
    event_signal(c); /* requests already done or queued get looked at */
    if (c->thr.head)
        event_arm_throttle(c, true, 0);
    return c->epoll_fd;
}
