/* The per-thread start hook (thread_kind.h). */
#include "common/thread_kind.h"

#include <signal.h>
#include <stddef.h>

/* Set once before the first thread starts, read-only afterwards. */
static wisp_thread_enter_fn *enter_hook;
static wisp_thread_spawner_fn *spawner;

void wisp_thread_set_enter_hook(wisp_thread_enter_fn *fn)
{
    enter_hook = fn;
}

void wisp_thread_enter(enum wisp_thread_kind kind, const char *name)
{
    if (enter_hook)
        enter_hook(kind, name);
}

void wisp_thread_set_spawner(wisp_thread_spawner_fn *fn)
{
    spawner = fn;
}

int wisp_thread_spawn(int (*fn)(void *arg), void *arg)
{
    return spawner ? spawner(fn, arg) : fn(arg);
}

struct create_call {
    pthread_t *thread;
    const pthread_attr_t *attr;
    void *(*start)(void *);
    void *arg;
    sigset_t mask; /* the caller's */
};

static int create_on_spawner(void *arg)
{
    struct create_call *c = arg;
    sigset_t old;
    pthread_sigmask(SIG_SETMASK, &c->mask, &old);
    int e = pthread_create(c->thread, c->attr, c->start, c->arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return e;
}

int wisp_thread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
                       void *arg)
{
    if (!spawner)
        return pthread_create(thread, attr, start, arg);
    struct create_call c = {.thread = thread, .attr = attr, .start = start, .arg = arg};
    pthread_sigmask(SIG_SETMASK, NULL, &c.mask);
    return spawner(create_on_spawner, &c);
}
