/* Bounded output buffer with a writer thread (see outbuf.h). The writer holds no lock while it
 * is in write(), and it is the only place cancellation is enabled, so outbuf_destroy() can
 * cancel a write() that a reader never lets finish. */
#include "common/outbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/thread_kind.h"

struct outbuf {
    int fd;
    char name[32];
    pthread_mutex_t lock;
    pthread_cond_t data_cond;    /* writer waits for data */
    pthread_cond_t drained_cond; /* outbuf_drain waits for an empty buffer */
    uint8_t *buf;
    size_t cap, head, len;
    size_t in_write; /* bytes the writer is writing now (still counted in len) */
    bool stop, broken;
    uint64_t dropped;
    void (*space_fn)(void *opaque);
    void *space_opaque;
    size_t space_threshold;
    bool space_wanted;
    pthread_t thread;
    bool started;
    /* outbuf_set_file_cap: the file's end (the writer's offset), and where its data starts */
    uint64_t cap_max, file_end, file_kept;
};

/* write() with cancellation enabled only here (no lock held). */
static ssize_t writer_write(struct outbuf *ob, const uint8_t *p, size_t n)
{
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
    ssize_t r = write(ob->fd, p, n);
    int e = errno;
    if (r < 0 && e == EAGAIN) { /* an fd someone made non-blocking: wait for room */
        struct pollfd pfd = {.fd = ob->fd, .events = POLLOUT};
        (void)poll(&pfd, 1, -1);
    }
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    errno = e;
    return r;
}

/* The file passed 1.5 x cap_max: punches its start out, keeping the last cap_max bytes (from a
 * 4 KiB boundary). Writer thread, no lock held. */
static void writer_punch(struct outbuf *ob)
{
    uint64_t from = ob->file_kept, to = (ob->file_end - ob->cap_max) & ~4095ull;
    if (to <= from)
        return;
    if (fallocate(ob->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from,
                  (off_t)(to - from)) < 0) {
        ob->cap_max = 0; /* the file system cannot: the file grows (said at the set) */
        return;
    }
    ob->file_kept = to;
}

/* After bytes left the buffer: wake drain waiters, and the producer if it asked for room. */
static void writer_consumed(struct outbuf *ob, bool *call_space)
{
    if (!ob->len)
        pthread_cond_broadcast(&ob->drained_cond);
    if (ob->space_wanted && ob->cap - ob->len >= ob->space_threshold) {
        ob->space_wanted = false;
        *call_space = ob->space_fn != NULL;
    }
}

static void *writer_main(void *opaque)
{
    struct outbuf *ob = opaque;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    wisp_thread_enter(WISP_THREAD_WRITER, ob->name);
    pthread_mutex_lock(&ob->lock);
    for (;;) {
        while (!ob->len && !ob->stop)
            pthread_cond_wait(&ob->data_cond, &ob->lock);
        if (ob->stop)
            break;
        size_t n = ob->len < ob->cap - ob->head ? ob->len : ob->cap - ob->head;
        const uint8_t *p = ob->buf + ob->head;
        ob->in_write = n;
        pthread_mutex_unlock(&ob->lock);
        ssize_t w = writer_write(ob, p, n);
        int e = errno;
        pthread_mutex_lock(&ob->lock);
        ob->in_write = 0;
        if (w > 0) {
            ob->head = (ob->head + (size_t)w) % ob->cap;
            ob->len -= (size_t)w;
            ob->file_end += (uint64_t)w;
            if (ob->cap_max && ob->file_end - ob->file_kept > ob->cap_max + ob->cap_max / 2) {
                pthread_mutex_unlock(&ob->lock);
                writer_punch(ob); /* only the writer touches the file fields */
                pthread_mutex_lock(&ob->lock);
            }
        } else if (w == 0 || (e != EINTR && e != EAGAIN)) {
            ob->broken = true; /* the reader is gone: discard from now on */
            ob->dropped += ob->len;
            ob->len = ob->head = 0;
        }
        bool call_space = false;
        writer_consumed(ob, &call_space);
        if (call_space) {
            pthread_mutex_unlock(&ob->lock);
            ob->space_fn(ob->space_opaque);
            pthread_mutex_lock(&ob->lock);
        }
    }
    pthread_mutex_unlock(&ob->lock);
    return NULL;
}

int outbuf_create(struct outbuf **out, int fd, size_t capacity, const char *name,
                  struct wisp_err *err)
{
    struct outbuf *ob = calloc(1, sizeof(*ob));
    if (ob)
        ob->buf = malloc(capacity);
    if (!ob || !ob->buf) {
        free(ob);
        return wisp_err_set(err, ENOMEM, "%s: out of memory for the output buffer", name);
    }
    ob->fd = fd;
    ob->cap = capacity;
    snprintf(ob->name, sizeof(ob->name), "%s", name);
    pthread_mutex_init(&ob->lock, NULL);
    pthread_cond_init(&ob->data_cond, NULL);
    pthread_cond_init(&ob->drained_cond, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the writer takes no signal */
    int e = wisp_thread_create(&ob->thread, &attr, writer_main, ob);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (e) {
        free(ob->buf);
        free(ob);
        return wisp_err_sys(err, e, "%s: cannot start the output thread", name);
    }
    char tname[16];
    snprintf(tname, sizeof(tname), "out-%s", name);
    pthread_setname_np(ob->thread, tname);
    ob->started = true;
    *out = ob;
    return 0;
}

void outbuf_set_space_fn(struct outbuf *ob, void (*space_fn)(void *opaque), void *opaque,
                         size_t threshold)
{
    pthread_mutex_lock(&ob->lock);
    ob->space_fn = space_fn;
    ob->space_opaque = opaque;
    ob->space_threshold = threshold < ob->cap ? threshold : ob->cap;
    pthread_mutex_unlock(&ob->lock);
}

/* Appends n bytes (the caller checked they fit). */
static void outbuf_append(struct outbuf *ob, const uint8_t *p, size_t n)
{
    size_t tail = (ob->head + ob->len) % ob->cap;
    size_t first = n < ob->cap - tail ? n : ob->cap - tail;
    memcpy(ob->buf + tail, p, first);
    memcpy(ob->buf, p + first, n - first);
    if (!ob->len)
        pthread_cond_signal(&ob->data_cond);
    ob->len += n;
}

size_t outbuf_write(struct outbuf *ob, const void *data, size_t len)
{
    pthread_mutex_lock(&ob->lock);
    size_t n = 0;
    if (ob->broken) {
        ob->dropped += len;
        n = len; /* nobody will read it: taking it keeps producers from waiting for room */
    } else {
        size_t room = ob->cap - ob->len;
        n = len < room ? len : room;
        outbuf_append(ob, data, n);
        if (n < len)
            ob->space_wanted = true;
    }
    pthread_mutex_unlock(&ob->lock);
    return n;
}

bool outbuf_write_whole(struct outbuf *ob, const void *data, size_t len)
{
    pthread_mutex_lock(&ob->lock);
    bool ok = !ob->broken && ob->cap - ob->len >= len;
    if (ok)
        outbuf_append(ob, data, len);
    else
        ob->dropped += len;
    pthread_mutex_unlock(&ob->lock);
    return ok;
}

int outbuf_set_file_cap(struct outbuf *ob, uint64_t max, struct wisp_err *err)
{
    struct stat st;
    if (max && (fstat(ob->fd, &st) < 0 || !S_ISREG(st.st_mode)))
        return 0; /* a pipe, a terminal: nothing is kept */
    off_t pos = max ? lseek(ob->fd, 0, SEEK_CUR) : 0;
    /* A hole at the end, where nothing is yet: can this file system punch at all? (tmpfs,
     * ext4, xfs, btrfs can) */
    if (max && pos >= 0 &&
        fallocate(ob->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pos, 1) < 0 &&
        errno == EOPNOTSUPP)
        return wisp_err_set(err, EOPNOTSUPP,
                            "%s: the file system cannot punch holes: the output is not bounded",
                            ob->name);
    pthread_mutex_lock(&ob->lock);
    ob->cap_max = max < 8192 && max ? 8192 : max;
    ob->file_end = pos > 0 ? (uint64_t)pos : 0;
    ob->file_kept = 0;
    pthread_mutex_unlock(&ob->lock);
    return 0;
}

size_t outbuf_room(struct outbuf *ob)
{
    pthread_mutex_lock(&ob->lock);
    size_t room = ob->broken ? ob->cap : ob->cap - ob->len;
    pthread_mutex_unlock(&ob->lock);
    return room;
}

uint64_t outbuf_dropped(struct outbuf *ob)
{
    pthread_mutex_lock(&ob->lock);
    uint64_t d = ob->dropped;
    pthread_mutex_unlock(&ob->lock);
    return d;
}

int outbuf_drain(struct outbuf *ob, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ob->lock);
    int r = 0;
    while (ob->len && !ob->broken && r == 0)
        r = pthread_cond_timedwait(&ob->drained_cond, &ob->lock, &deadline);
    int ret = ob->broken ? -EPIPE : ob->len ? -ETIMEDOUT : 0;
    pthread_mutex_unlock(&ob->lock);
    return ret;
}

void outbuf_destroy(struct outbuf *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->lock);
    ob->stop = true;
    pthread_cond_signal(&ob->data_cond);
    pthread_mutex_unlock(&ob->lock);
    if (ob->started) {
        pthread_cancel(ob->thread); /* takes effect only inside write()/poll() */
        pthread_join(ob->thread, NULL);
    }
    pthread_cond_destroy(&ob->data_cond);
    pthread_cond_destroy(&ob->drained_cond);
    pthread_mutex_destroy(&ob->lock);
    free(ob->buf);
    free(ob);
}
