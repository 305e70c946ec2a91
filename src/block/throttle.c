/* Per-drive I/O throttling: token buckets for IOPS and bytes/s (total, read, write) with bursts.
 * A request may start when every bucket it draws from is out of debt (level >= 0); it then takes
 * its cost, possibly going into debt. The long-run rate is therefore exactly the refill rate,
 * whatever the request size, and a full bucket allows a burst of its capacity. */
#include "block/block_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

enum { TB_IOPS_TOTAL, TB_IOPS_READ, TB_IOPS_WRITE, TB_BPS_TOTAL, TB_BPS_READ, TB_BPS_WRITE, TB_N };

struct token_bucket {
    double rate;     /* tokens per second; 0 = unlimited */
    double capacity; /* burst: the most tokens the bucket holds */
    double level;    /* tokens available (negative = debt) */
};

struct block_throttle {
    pthread_mutex_t lock;
    double last; /* seconds, CLOCK_MONOTONIC, of the last refill */
    struct token_bucket b[TB_N];
};

uint64_t block_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double now_seconds(void)
{
    return (double)block_now_ns() * 1e-9;
}

/* Without an explicit burst a bucket holds a tenth of a second of tokens (QEMU's default). */
static void bucket_init(struct token_bucket *b, uint64_t rate, uint64_t burst, double min_cap)
{
    b->rate = (double)rate;
    b->capacity = burst ? (double)burst : (double)rate / 10.0;
    if (b->capacity < min_cap)
        b->capacity = min_cap;
    b->level = b->capacity;
}

static int check_limits(const struct block_throttle_limits *l, struct wisp_err *err)
{
    if ((l->iops_total && (l->iops_read || l->iops_write)) ||
        (l->bps_total && (l->bps_read || l->bps_write)))
        return wisp_err_set(err, EINVAL,
                            "throttling: a total limit cannot be combined with read/write limits");
    return 0;
}

/* The buckets for l, full (plus the one-time burst of the total buckets). Lock held. */
static void buckets_init(struct block_throttle *t, const struct block_throttle_limits *l)
{
    bucket_init(&t->b[TB_IOPS_TOTAL], l->iops_total, l->iops_total_max, 1);
    bucket_init(&t->b[TB_IOPS_READ], l->iops_read, l->iops_read_max, 1);
    bucket_init(&t->b[TB_IOPS_WRITE], l->iops_write, l->iops_write_max, 1);
    bucket_init(&t->b[TB_BPS_TOTAL], l->bps_total, l->bps_total_max, 0);
    bucket_init(&t->b[TB_BPS_READ], l->bps_read, l->bps_read_max, 0);
    bucket_init(&t->b[TB_BPS_WRITE], l->bps_write, l->bps_write_max, 0);
    t->b[TB_IOPS_TOTAL].level += (double)l->iops_total_once;
    t->b[TB_BPS_TOTAL].level += (double)l->bps_total_once;
    t->last = now_seconds();
}

int block_throttle_create(struct block_throttle **out, const struct block_throttle_limits *l,
                          struct wisp_err *err)
{
    int r = check_limits(l, err);
    if (r < 0)
        return r;
    struct block_throttle *t = calloc(1, sizeof(*t));
    if (!t)
        return wisp_err_set(err, ENOMEM, "throttling: out of memory");
    pthread_mutex_init(&t->lock, NULL);
    buckets_init(t, l);
    *out = t;
    return 0;
}

int block_throttle_set(struct block_throttle *t, const struct block_throttle_limits *l,
                       struct wisp_err *err)
{
    int r = check_limits(l, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&t->lock);
    buckets_init(t, l);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void block_throttle_destroy(struct block_throttle *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static void throttle_refill(struct block_throttle *t)
{
    double now = now_seconds();
    double dt = now - t->last;
    t->last = now;
    for (int i = 0; i < TB_N; i++) {
        struct token_bucket *b = &t->b[i];
        if (b->rate == 0 || b->level >= b->capacity) /* a one-time burst is not cut back */
            continue;
        b->level += b->rate * dt;
        if (b->level > b->capacity)
            b->level = b->capacity;
    }
}

/* Seconds until all of the request's buckets are out of debt (0 = may start now). */
static double throttle_delay(struct block_throttle *t, const int *which, int n)
{
    double wait = 0;
    for (int i = 0; i < n; i++) {
        struct token_bucket *b = &t->b[which[i]];
        if (b->rate > 0 && b->level < 0) {
            double w = -b->level / b->rate;
            if (w > wait)
                wait = w;
        }
    }
    return wait;
}

bool block_throttle_try(struct block_throttle *t, bool write, uint64_t bytes, double *wait)
{
    int which[4] = {TB_IOPS_TOTAL, write ? TB_IOPS_WRITE : TB_IOPS_READ, TB_BPS_TOTAL,
                    write ? TB_BPS_WRITE : TB_BPS_READ};
    pthread_mutex_lock(&t->lock);
    throttle_refill(t);
    *wait = throttle_delay(t, which, 4);
    if (*wait <= 0) {
        t->b[which[0]].level -= 1;
        t->b[which[1]].level -= 1;
        t->b[which[2]].level -= (double)bytes;
        t->b[which[3]].level -= (double)bytes;
    }
    pthread_mutex_unlock(&t->lock);
    return *wait <= 0;
}

void block_throttle_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - (double)(time_t)seconds) * 1e9) + 1000};
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    nanosleep(&ts, NULL);
}

void block_throttle_wait(struct block_throttle *t, bool write, uint64_t bytes)
{
    double wait;
    while (!block_throttle_try(t, write, bytes, &wait))
        block_throttle_sleep(wait); /* other threads refill and queue meanwhile */
}
