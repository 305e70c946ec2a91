/* Token buckets refilled from CLOCK_MONOTONIC. */
#include "common/ratelimit.h"

#include <time.h>

uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void token_bucket_init(struct token_bucket *tb, uint64_t rate, uint64_t burst)
{
    tb->rate = rate;
    tb->capacity = burst ? burst : rate / 10 ? rate / 10 : 1;
    tb->level = (double)tb->capacity;
    tb->last_ns = monotonic_ns();
}

void token_bucket_add_once(struct token_bucket *tb, uint64_t tokens)
{
    tb->level += (double)tokens;
}

static void refill(struct token_bucket *tb)
{
    uint64_t now = monotonic_ns();
    if (tb->level < (double)tb->capacity) { /* a one-time burst above it is not cut back */
        tb->level += (double)tb->rate * (double)(now - tb->last_ns) * 1e-9;
        if (tb->level > (double)tb->capacity)
            tb->level = (double)tb->capacity;
    }
    tb->last_ns = now;
}

uint64_t token_bucket_take(struct token_bucket *tb, uint64_t want)
{
    if (!tb->rate)
        return want;
    refill(tb);
    uint64_t n = tb->level <= 0 ? 0 : (uint64_t)tb->level;
    if (n > want)
        n = want;
    tb->level -= (double)n;
    return n;
}

bool token_bucket_try(struct token_bucket *tb, uint64_t cost)
{
    if (!tb->rate)
        return true;
    refill(tb);
    if (tb->level < 0)
        return false;
    tb->level -= (double)cost;
    return true;
}

uint64_t token_bucket_wait_ns(struct token_bucket *tb, uint64_t want)
{
    if (!tb->rate)
        return 0;
    refill(tb);
    double missing = (double)want - tb->level;
    if (missing <= 0)
        return 0;
    return (uint64_t)(missing / (double)tb->rate * 1e9) + 1000;
}
