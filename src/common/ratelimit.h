/* A token bucket (bytes or operations per second with a burst), as Firecracker's rate limiters
 * and QEMU's throttling use: a request may start when the bucket is out of debt. */
#ifndef WISP_COMMON_RATELIMIT_H
#define WISP_COMMON_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* rate 0 = unlimited. Not thread-safe: one owner (the thread that serves the device). */
struct token_bucket {
    uint64_t rate;     /* tokens per second */
    uint64_t capacity; /* burst: the most tokens it holds (default: a tenth of a second) */
    double level;
    uint64_t last_ns;
};

void token_bucket_init(struct token_bucket *tb, uint64_t rate, uint64_t burst);
/* Adds tokens beyond the capacity that are not refilled once spent (Firecracker's
 * one_time_burst); call after token_bucket_init. */
void token_bucket_add_once(struct token_bucket *tb, uint64_t tokens);
/* How many of `want` tokens may be taken now (all when unlimited); takes them. */
uint64_t token_bucket_take(struct token_bucket *tb, uint64_t want);
/* Takes `cost` tokens if the bucket is out of debt (it may go into debt); false otherwise. */
bool token_bucket_try(struct token_bucket *tb, uint64_t cost);
/* Nanoseconds until at least `want` tokens (or being out of debt, want 0) are there. */
uint64_t token_bucket_wait_ns(struct token_bucket *tb, uint64_t want);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t monotonic_ns(void);

#endif
