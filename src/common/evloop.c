/* epoll event loop: fd sources, timerfd timers, and calls posted from other threads through an
 * eventfd. Sources removed during a round are freed after it, so a callback may remove any
 * source, itself included. */
#include "common/evloop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/thread_kind.h"

#define EVLOOP_MAX_EVENTS 64

enum source_kind { SOURCE_FD, SOURCE_TIMER, SOURCE_WAKE };

struct evloop_source {
    struct evloop *loop;
    enum source_kind kind;
    int fd;
    uint32_t events;
    evloop_fd_fn fd_fn;
    evloop_fn timer_fn;
    void *opaque;
    bool dead;
    struct evloop_source *next_dead;
    struct evloop_source *prev, *next; /* every live source of the loop */
};

struct evloop {
    char name[32];
    int epfd;
    int wake_fd;
    struct evloop_source wake_source;
    pthread_t thread;
    bool thread_known;
    atomic_bool quit;
    pthread_mutex_t lock; /* calls, sync waiters */
    pthread_cond_t done_cond;
    struct evloop_call *calls_head, *calls_tail;
    unsigned generation; /* bumped when sync waiters must look again */
    struct evloop_source *dead;
    struct evloop_source *sources; /* live sources (for evloop_destroy) */
    bool dispatching;
};

int evloop_create(struct evloop **out, const char *name, struct wisp_err *err)
{
    struct evloop *l = calloc(1, sizeof(*l));
    if (!l)
        return wisp_err_set(err, ENOMEM, "event loop %s: out of memory", name);
    snprintf(l->name, sizeof(l->name), "%s", name);
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->done_cond, NULL);
    l->wake_fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        int r = wisp_err_sys(err, errno, "event loop %s: epoll_create1", name);
        evloop_destroy(l);
        return r;
    }
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->wake_source = (struct evloop_source){.loop = l, .kind = SOURCE_WAKE};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->wake_source};
    if (l->wake_fd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev) < 0) {
        int r = wisp_err_sys(err, errno, "event loop %s: eventfd", name);
        evloop_destroy(l);
        return r;
    }
    l->wake_source.fd = l->wake_fd;
    *out = l;
    return 0;
}

const char *evloop_name(const struct evloop *l)
{
    return l->name;
}

static void free_dead(struct evloop *l)
{
    while (l->dead) {
        struct evloop_source *s = l->dead;
        l->dead = s->next_dead;
        if (s->kind == SOURCE_TIMER && s->fd >= 0)
            close(s->fd);
        free(s);
    }
}

/* Releases every evloop_call_sync() waiter: the loop will not run their calls. */
static void cancel_calls(struct evloop *l)
{
    pthread_mutex_lock(&l->lock);
    for (struct evloop_call *c = l->calls_head; c; c = c->next) {
        c->queued = false;
        c->cancelled = true;
    }
    l->calls_head = l->calls_tail = NULL;
    l->generation++;
    pthread_cond_broadcast(&l->done_cond);
    pthread_mutex_unlock(&l->lock);
}

void evloop_destroy(struct evloop *l)
{
    if (!l)
        return;
    atomic_store(&l->quit, true);
    cancel_calls(l);
    l->dispatching = false;
    while (l->sources) /* sources their owners did not remove (their fds stay open) */
        evloop_source_remove(l->sources);
    free_dead(l);
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    pthread_cond_destroy(&l->done_cond);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

int evloop_add_fd(struct evloop *l, int fd, uint32_t events, evloop_fd_fn fn, void *opaque,
                  struct evloop_source **out, struct wisp_err *err)
{
    struct evloop_source *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_err_set(err, ENOMEM, "event loop %s: out of memory", l->name);
    *s = (struct evloop_source){
        .loop = l, .kind = SOURCE_FD, .fd = fd, .events = events, .fd_fn = fn, .opaque = opaque};
    struct epoll_event ev = {.events = events, .data.ptr = s};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int r = wisp_err_sys(err, errno, "event loop %s: watching fd %d", l->name, fd);
        free(s);
        return r;
    }
    s->next = l->sources;
    if (l->sources)
        l->sources->prev = s;
    l->sources = s;
    if (out)
        *out = s;
    return 0;
}

int evloop_fd_modify(struct evloop_source *s, uint32_t events)
{
    if (s->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = s};
    if (epoll_ctl(s->loop->epfd, EPOLL_CTL_MOD, s->fd, &ev) < 0)
        return -errno;
    s->events = events;
    return 0;
}

void evloop_source_remove(struct evloop_source *s)
{
    if (!s || s->dead)
        return;
    struct evloop *l = s->loop;
    if (l->epfd >= 0)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    if (s->prev)
        s->prev->next = s->next;
    else
        l->sources = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->dead = true;
    s->next_dead = l->dead;
    l->dead = s;
    if (!l->dispatching)
        free_dead(l);
}

int evloop_add_timer(struct evloop *l, evloop_fn fn, void *opaque, struct evloop_source **out,
                     struct wisp_err *err)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (fd < 0)
        return wisp_err_sys(err, errno, "event loop %s: timerfd_create", l->name);
    struct evloop_source *s = NULL;
    int r = evloop_add_fd(l, fd, EPOLLIN, NULL, NULL, &s, err);
    if (r < 0) {
        close(fd);
        return r;
    }
    s->kind = SOURCE_TIMER;
    s->timer_fn = fn;
    s->opaque = opaque;
    *out = s;
    return 0;
}

int evloop_timer_arm(struct evloop_source *timer, uint64_t delay_ns, uint64_t interval_ns)
{
    struct itimerspec its = {
        .it_value = {(time_t)(delay_ns / 1000000000u), (long)(delay_ns % 1000000000u)},
        .it_interval = {(time_t)(interval_ns / 1000000000u), (long)(interval_ns % 1000000000u)},
    };
    return timerfd_settime(timer->fd, 0, &its, NULL) < 0 ? -errno : 0;
}

void evloop_wake(struct evloop *l)
{
    uint64_t one = 1;
    (void)!write(l->wake_fd, &one, sizeof(one));
}

void evloop_call_async(struct evloop *l, struct evloop_call *c)
{
    pthread_mutex_lock(&l->lock);
    bool post = !c->queued && !atomic_load(&l->quit);
    if (post) {
        c->queued = true;
        c->cancelled = false;
        c->next = NULL;
        if (l->calls_tail)
            l->calls_tail->next = c;
        else
            l->calls_head = c;
        l->calls_tail = c;
    }
    pthread_mutex_unlock(&l->lock);
    if (post)
        evloop_wake(l);
}

void evloop_call_cancel(struct evloop *l, struct evloop_call *c)
{
    pthread_mutex_lock(&l->lock);
    if (c->queued) {
        struct evloop_call **pp = &l->calls_head, *prev = NULL;
        while (*pp && *pp != c) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = c->next;
            if (l->calls_tail == c)
                l->calls_tail = prev;
        }
        c->queued = false;
    }
    pthread_mutex_unlock(&l->lock);
}

bool evloop_in_thread(const struct evloop *l)
{
    return l->thread_known && pthread_equal(l->thread, pthread_self());
}

struct sync_call {
    struct evloop_call call;
    struct evloop *loop;
    evloop_fn fn;
    void *opaque;
    bool done;
};

static void sync_call_run(void *opaque)
{
    struct sync_call *sc = opaque;
    sc->fn(sc->opaque);
    pthread_mutex_lock(&sc->loop->lock);
    sc->done = true;
    pthread_cond_broadcast(&sc->loop->done_cond);
    pthread_mutex_unlock(&sc->loop->lock);
}

int evloop_call_sync(struct evloop *l, evloop_fn fn, void *opaque)
{
    if (evloop_in_thread(l)) {
        fn(opaque);
        return 0;
    }
    struct sync_call sc = {.loop = l, .fn = fn, .opaque = opaque};
    sc.call = (struct evloop_call){.fn = sync_call_run, .opaque = &sc};
    pthread_mutex_lock(&l->lock);
    if (atomic_load(&l->quit)) {
        pthread_mutex_unlock(&l->lock);
        return -ECANCELED;
    }
    sc.call.queued = true;
    sc.call.cancelled = false;
    if (l->calls_tail)
        l->calls_tail->next = &sc.call;
    else
        l->calls_head = &sc.call;
    l->calls_tail = &sc.call;
    evloop_wake(l);
    /* queued turns false when the loop takes the call (then done follows) or cancels it */
    while (!sc.done && !sc.call.cancelled)
        pthread_cond_wait(&l->done_cond, &l->lock);
    bool done = sc.done;
    pthread_mutex_unlock(&l->lock);
    return done ? 0 : -ECANCELED;
}

/* Runs the calls posted so far, one at a time off the head of the queue (so a call may cancel
 * or repost any other); as many as were queued when the round began, so a call that reposts
 * itself waits for the next round instead of starving the loop. */
static int run_calls(struct evloop *l)
{
    pthread_mutex_lock(&l->lock);
    unsigned pending = 0;
    for (struct evloop_call *i = l->calls_head; i; i = i->next)
        pending++;
    int n = 0;
    while (pending-- && l->calls_head) {
        struct evloop_call *c = l->calls_head;
        l->calls_head = c->next;
        if (!l->calls_head)
            l->calls_tail = NULL;
        c->queued = false; /* may be posted again from now on */
        pthread_mutex_unlock(&l->lock);
        c->fn(c->opaque);
        n++;
        pthread_mutex_lock(&l->lock);
    }
    pthread_mutex_unlock(&l->lock);
    return n;
}

static void dispatch(struct evloop_source *s, uint32_t events)
{
    if (s->dead)
        return;
    switch (s->kind) {
    case SOURCE_FD:
        s->fd_fn(s->opaque, events);
        break;
    case SOURCE_TIMER: {
        uint64_t expirations;
        if (read(s->fd, &expirations, sizeof(expirations)) == sizeof(expirations))
            s->timer_fn(s->opaque);
        break;
    }
    case SOURCE_WAKE: {
        uint64_t v;
        (void)!read(s->fd, &v, sizeof(v));
        break;
    }
    }
}

int evloop_run_once(struct evloop *l, int timeout_ms)
{
    if (!l->thread_known) {
        l->thread = pthread_self();
        l->thread_known = true;
    }
    struct epoll_event evs[EVLOOP_MAX_EVENTS];
    int n = epoll_wait(l->epfd, evs, EVLOOP_MAX_EVENTS, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int ran = 0;
    l->dispatching = true;
    for (int i = 0; i < n; i++) {
        struct evloop_source *s = evs[i].data.ptr;
        dispatch(s, evs[i].events);
        ran += s->kind != SOURCE_WAKE;
    }
    ran += run_calls(l);
    l->dispatching = false;
    free_dead(l);
    return ran;
}

void evloop_run(struct evloop *l)
{
    l->thread = pthread_self();
    l->thread_known = true;
    while (!atomic_load(&l->quit))
        if (evloop_run_once(l, -1) < 0)
            break;
}

void evloop_quit(struct evloop *l)
{
    atomic_store(&l->quit, true);
    cancel_calls(l);
    evloop_wake(l);
}

bool evloop_quitting(const struct evloop *l)
{
    return atomic_load(&l->quit);
}

/* ---- I/O threads ------------------------------------------------------------------------ */

struct iothread {
    struct evloop *loop;
    pthread_t thread;
    bool started;
    char name[16];
};

static void *iothread_main(void *opaque)
{
    struct iothread *t = opaque;
    pthread_setname_np(pthread_self(), t->name);
    wisp_thread_enter(WISP_THREAD_IO, t->name);
    evloop_run(t->loop);
    return NULL;
}

int iothread_start(struct iothread **out, const char *name, struct wisp_err *err)
{
    struct iothread *t = calloc(1, sizeof(*t));
    if (!t)
        return wisp_err_set(err, ENOMEM, "I/O thread %s: out of memory", name);
    snprintf(t->name, sizeof(t->name), "%s", name);
    int r = evloop_create(&t->loop, name, err);
    if (r < 0) {
        free(t);
        return r;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int e = wisp_thread_create(&t->thread, &attr, iothread_main, t);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        evloop_destroy(t->loop);
        free(t);
        return wisp_err_sys(err, e, "cannot start I/O thread %s", name);
    }
    /* the loop's thread is known before anyone posts a call from elsewhere */
    t->loop->thread = t->thread;
    t->loop->thread_known = true;
    t->started = true;
    *out = t;
    return 0;
}

struct evloop *iothread_loop(struct iothread *t)
{
    return t->loop;
}

void iothread_stop(struct iothread *t)
{
    if (!t)
        return;
    evloop_quit(t->loop);
    if (t->started)
        pthread_join(t->thread, NULL);
    evloop_destroy(t->loop);
    free(t);
}
