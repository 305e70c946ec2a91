/* Unit tests of src/common/evloop.c and outbuf.c: fd sources and timers, calls from other
 * threads (async, sync, coalescing, cancel, quit), removal inside callbacks, I/O threads; and the
 * output buffer's never-block rule (room, space callback, a reader that is gone, a reader that
 * never reads). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/evloop.h"
#include "common/outbuf.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct counter {
    int n;
    int fd;
    struct evloop_source *src;
    bool remove_self;
};

static void on_fd(void *opaque, uint32_t events)
{
    struct counter *c = opaque;
    uint64_t v;
    (void)!read(c->fd, &v, sizeof(v));
    c->n++;
    if (c->remove_self) {
        evloop_source_remove(c->src);
        c->src = NULL;
    }
}

static void on_timer(void *opaque)
{
    ((struct counter *)opaque)->n++;
}

static void test_fd_and_timer(void **state)
{
    struct evloop *l;
    assert_int_equal(evloop_create(&l, "t", NULL), 0);
    struct counter c = {.fd = eventfd(0, EFD_NONBLOCK), .remove_self = true};
    assert_int_equal(evloop_add_fd(l, c.fd, EPOLLIN, on_fd, &c, &c.src, NULL), 0);
    uint64_t one = 1;
    assert_int_equal(write(c.fd, &one, 8), 8);
    assert_true(evloop_run_once(l, 1000) >= 1);
    assert_int_equal(c.n, 1);
    assert_null(c.src); /* removed itself inside its callback */
    assert_int_equal(write(c.fd, &one, 8), 8);
    assert_int_equal(evloop_run_once(l, 50), 0); /* gone: no more callbacks */
    struct counter t = {0};
    struct evloop_source *timer;
    assert_int_equal(evloop_add_timer(l, on_timer, &t, &timer, NULL), 0);
    assert_int_equal(evloop_timer_arm(timer, 10 * 1000000, 0), 0);
    uint64_t t0 = now_ms();
    while (t.n == 0 && now_ms() - t0 < 2000)
        evloop_run_once(l, 100);
    assert_int_equal(t.n, 1);
    evloop_source_remove(timer);
    close(c.fd);
    evloop_destroy(l);
}

struct post_ctx {
    struct evloop *loop;
    struct evloop_call call;
    int runs;
    pthread_t ran_in; /* the thread of the last run */
};

static void count_call(void *opaque)
{
    struct post_ctx *p = opaque;
    p->runs++;
    p->ran_in = pthread_self();
}

static void *post_twice(void *opaque)
{
    struct post_ctx *p = opaque;
    evloop_call_async(p->loop, &p->call);
    evloop_call_async(p->loop, &p->call); /* coalesces with the first */
    return NULL;
}

static void test_calls_from_other_threads(void **state)
{
    struct iothread *io;
    assert_int_equal(iothread_start(&io, "io-test", NULL), 0);
    struct evloop *l = iothread_loop(io);
    struct post_ctx p = {.loop = l}, probe = {.loop = l};
    assert_int_equal(evloop_call_sync(l, count_call, &probe), 0); /* waits for it */
    assert_int_equal(probe.runs, 1);
    assert_false(pthread_equal(probe.ran_in, pthread_self())); /* ran in the I/O thread */
    assert_false(evloop_in_thread(l));
    p.call = (struct evloop_call){.fn = count_call, .opaque = &p};
    pthread_t th;
    pthread_create(&th, NULL, post_twice, &p);
    pthread_join(th, NULL);
    /* a sync call after the async ones runs after them (one queue, in order) */
    assert_int_equal(evloop_call_sync(l, count_call, &probe), 0);
    assert_true(p.runs == 1 || p.runs == 2); /* coalesced unless the first already ran */
    assert_true(pthread_equal(p.ran_in, probe.ran_in));
    iothread_stop(io);
}

static void test_cancel_and_quit(void **state)
{
    struct evloop *l;
    assert_int_equal(evloop_create(&l, "t", NULL), 0);
    struct post_ctx p = {.loop = l};
    p.call = (struct evloop_call){.fn = count_call, .opaque = &p};
    evloop_call_async(l, &p.call);
    evloop_call_cancel(l, &p.call);
    evloop_run_once(l, 0);
    assert_int_equal(p.runs, 0); /* cancelled before it ran */
    evloop_call_async(l, &p.call);
    evloop_run_once(l, 0);
    assert_int_equal(p.runs, 1);
    assert_true(pthread_equal(p.ran_in, pthread_self()));
    evloop_quit(l);
    assert_true(evloop_quitting(l));
    /* after quit, a sync call from another thread is refused instead of waiting forever */
    assert_int_equal(evloop_call_sync(l, count_call, &p), 0); /* this thread ran the loop */
    evloop_destroy(l);
}

struct sync_from_thread {
    struct evloop *loop;
    int result;
};

static void never(void *opaque)
{
    fail_msg("a cancelled call ran");
}

static void *sync_call_thread(void *opaque)
{
    struct sync_from_thread *s = opaque;
    s->result = evloop_call_sync(s->loop, never, NULL);
    return NULL;
}

/* A thread waiting in evloop_call_sync() on a loop that quits is released (-ECANCELED). */
static void test_quit_releases_sync_waiters(void **state)
{
    struct evloop *l;
    assert_int_equal(evloop_create(&l, "t", NULL), 0);
    evloop_run_once(l, 0); /* this thread is the loop's */
    struct sync_from_thread s = {.loop = l, .result = 1};
    pthread_t th;
    pthread_create(&th, NULL, sync_call_thread, &s);
    usleep(50 * 1000);
    evloop_quit(l);
    pthread_join(th, NULL);
    assert_int_equal(s.result, -ECANCELED);
    evloop_destroy(l);
}

/* ---- outbuf ---- */

struct space_seen {
    int calls;
};

static void on_space(void *opaque)
{
    __atomic_fetch_add(&((struct space_seen *)opaque)->calls, 1, __ATOMIC_SEQ_CST);
}

/* A reader that reads nothing: writes take what fits and return at once; when it reads, the
 * space callback comes. */
static void test_outbuf_never_blocks(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fcntl(fds[1], F_SETPIPE_SZ, 4096);
    struct outbuf *ob;
    assert_int_equal(outbuf_create(&ob, fds[1], 8192, "t", NULL), 0);
    struct space_seen seen = {0};
    outbuf_set_space_fn(ob, on_space, &seen, 1024);
    static char data[65536];
    memset(data, 'x', sizeof(data));
    uint64_t t0 = now_ms();
    size_t taken = 0;
    for (int i = 0; i < 100; i++)
        taken += outbuf_write(ob, data, sizeof(data));
    assert_true(now_ms() - t0 < 1000); /* nothing waited for the reader */
    assert_true(taken <= 8192 + 4096 + 65536);
    assert_false(outbuf_write_whole(ob, data, 2048)); /* no room for a whole line */
    assert_int_equal(outbuf_drain(ob, 50), -ETIMEDOUT);
    char buf[65536];
    size_t got = 0;
    while (got < taken) {
        ssize_t n = read(fds[0], buf, sizeof(buf));
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_int_equal(outbuf_drain(ob, 2000), 0);
    assert_true(__atomic_load_n(&seen.calls, __ATOMIC_SEQ_CST) >= 1);
    outbuf_destroy(ob);
    close(fds[0]);
    close(fds[1]);
}

/* The reader goes away: output is discarded from then on, writes still return at once, and
 * destroy does not hang on a writer blocked in write(). */
static void test_outbuf_reader_gone_and_stuck(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct outbuf *ob;
    assert_int_equal(outbuf_create(&ob, fds[1], 4096, "t", NULL), 0);
    close(fds[0]);
    static char data[4096];
    outbuf_write(ob, data, sizeof(data));
    assert_int_equal(outbuf_drain(ob, 2000), -EPIPE);
    assert_int_equal(outbuf_write(ob, data, sizeof(data)), sizeof(data)); /* taken and dropped */
    assert_true(outbuf_dropped(ob) >= sizeof(data));
    outbuf_destroy(ob);
    close(fds[1]);

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(outbuf_create(&ob, fds[1], 1 << 20, "t", NULL), 0);
    static char big[1 << 20];
    outbuf_write(ob, big, sizeof(big)); /* more than the pipe holds: the writer blocks */
    usleep(50 * 1000);
    uint64_t t0 = now_ms();
    outbuf_destroy(ob); /* cancels the stuck write() */
    assert_true(now_ms() - t0 < 1000);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_and_timer),
        cmocka_unit_test(test_calls_from_other_threads),
        cmocka_unit_test(test_cancel_and_quit),
        cmocka_unit_test(test_quit_releases_sync_waiters),
        cmocka_unit_test(test_outbuf_never_blocks),
        cmocka_unit_test(test_outbuf_reader_gone_and_stuck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
