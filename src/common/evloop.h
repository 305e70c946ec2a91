/* The event loop (epoll) that the main thread and every device I/O thread run, with timers and
 * calls posted from other threads. */
#ifndef WISP_COMMON_EVLOOP_H
#define WISP_COMMON_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "common/err.h"

/*
 * Threading. One thread runs a loop (evloop_run / evloop_run_once): that is the loop's thread,
 * and every callback of its sources, timers and calls runs there, one at a time. Sources are
 * added, changed and removed from the loop's thread, or from any thread before the loop runs.
 * evloop_call_async(), evloop_call_sync(), evloop_wake() and evloop_quit() may be called from
 * any thread. Nothing here blocks except waiting for events inside run/run_once, and
 * evloop_call_sync() waiting for its call (which the loop's thread never does: from there it
 * runs the call at once).
 *
 * Call order: evloop_create() -> add sources -> evloop_run() ... evloop_quit() (from any
 * thread) -> evloop_destroy() (after the loop's thread stopped running it).
 */
struct evloop;
struct evloop_source;

/* Called with the epoll events that occurred (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR). */
typedef void (*evloop_fd_fn)(void *opaque, uint32_t events);
typedef void (*evloop_fn)(void *opaque);

int evloop_create(struct evloop **out, const char *name, struct wisp_err *err);
/* Frees the loop and every source still registered (their fds are not closed). Waiting
 * evloop_call_sync() callers are released with -ECANCELED first. */
void evloop_destroy(struct evloop *l);
const char *evloop_name(const struct evloop *l);

/* Watches fd, level-triggered, for `events` (0 = registered but disarmed). *out (optional)
 * receives the source for evloop_fd_modify / evloop_source_remove. */
int evloop_add_fd(struct evloop *l, int fd, uint32_t events, evloop_fd_fn fn, void *opaque,
                  struct evloop_source **out, struct wisp_err *err);
int evloop_fd_modify(struct evloop_source *s, uint32_t events);
/* Removes and frees a source (fd or timer); safe inside its own callback. NULL is fine. */
void evloop_source_remove(struct evloop_source *s);

/* A timer (timerfd, CLOCK_MONOTONIC). fn runs in the loop's thread when it expires. */
int evloop_add_timer(struct evloop *l, evloop_fn fn, void *opaque, struct evloop_source **out,
                     struct wisp_err *err);
/* Arms the timer to expire after delay_ns (0 disarms) and then every interval_ns (0 = once). */
int evloop_timer_arm(struct evloop_source *timer, uint64_t delay_ns, uint64_t interval_ns);

/* A call posted from any thread, in storage the caller owns. While it is queued, posting it
 * again does nothing (calls coalesce). */
struct evloop_call {
    evloop_fn fn;
    void *opaque;
    /* private to the loop */
    struct evloop_call *next;
    bool queued, cancelled;
};
void evloop_call_async(struct evloop *l, struct evloop_call *c);
/* Takes a posted call off the queue if it has not run yet (any thread). After it returns the
 * call will not run, unless it is running now in the loop's thread: call it from the loop's
 * thread (or after the loop stopped) before freeing the call's storage. */
void evloop_call_cancel(struct evloop *l, struct evloop_call *c);
/* Runs fn(opaque) in the loop's thread and waits for it (at once if called from that thread).
 * Returns 0, or -ECANCELED when the loop quits or is destroyed before running it. */
int evloop_call_sync(struct evloop *l, evloop_fn fn, void *opaque);

/* True in the thread that runs (or last ran) the loop. */
bool evloop_in_thread(const struct evloop *l);
/* Waits up to timeout_ms (-1: no limit) for events and dispatches them and posted calls;
 * returns the number of callbacks run, or -errno. */
int evloop_run_once(struct evloop *l, int timeout_ms);
/* Runs until evloop_quit(). */
void evloop_run(struct evloop *l);
/* Makes evloop_run() return and cancels pending synchronous calls; any thread. */
void evloop_quit(struct evloop *l);
bool evloop_quitting(const struct evloop *l);
/* Interrupts a wait in evloop_run_once() (any thread). */
void evloop_wake(struct evloop *l);

/* A thread that runs its own loop: the I/O thread of a device. */
struct iothread;
/* Creates the loop and starts the thread (named `name`, at most 15 characters shown). The
 * thread starts with every signal blocked. */
int iothread_start(struct iothread **out, const char *name, struct wisp_err *err);
struct evloop *iothread_loop(struct iothread *t);
/* Quits the loop, joins the thread and frees everything; NULL is fine. */
void iothread_stop(struct iothread *t);

#endif
