/* What the benchmark guests (bench_blk.c, bench_net.c) share with each other and with their
 * host side, bench/virtio/virtio_bench.py: phases given on the command line as
 * "bench.pN=NAME,FIELD,FIELD,..." (N = 0, 1, ... without gaps), and the marker lines around each
 * measured phase:
 *   "bench: begin NAME TSC"  the host samples the VMM's threads (CPU time); the guest idles a
 *                        while (BENCH_PAUSE_US: no device work), so the sample is the phase's
 *                        start
 *   "bench: go NAME"     the phase starts once this line is out (the host's fallback clock)
 *   "bench: end NAME START END"  the guest's TSC when the phase started and ended; the guest
 *                        idles again while the host samples
 *   "bench: result NAME ..." the counts, printed after the pause, outside the measurement.
 * TSC values are read just before their line is printed: the host maps them to its own clock
 * (the rate from the lines' arrival times over the whole run), so a late read of one line by
 * the host does not change a phase's time. */
#ifndef WISP_GUEST_BENCH_H
#define WISP_GUEST_BENCH_H

#include "guest.h"

#define BENCH_MAX_PHASES 16
#define BENCH_MAX_FIELDS 5
#define BENCH_FIELD_LEN  24
/* About 100-250 ms (guest_udelay assumes 1 GHz where CPUID gives no TSC rate; real TSCs run at
 * 1-2.5x that): long enough for the host to read its samples, short beside a phase. */
#define BENCH_PAUSE_US 250000
/* A poll without progress for this many TSC ticks fails the guest (20-60 s at 1-3 GHz). */
#define BENCH_STALL_TICKS 60000000000ull

struct bench_spec {
    char name[BENCH_FIELD_LEN];
    char field[BENCH_MAX_FIELDS][BENCH_FIELD_LEN];
    unsigned nr_fields;
};

/* Phase n from "bench.pN=NAME,F1,F2,..."; false if the command line has none. */
static inline bool bench_spec_get(unsigned n, struct bench_spec *s)
{
    char key[16], val[(BENCH_MAX_FIELDS + 1) * BENCH_FIELD_LEN];
    guest_snprintf(key, sizeof(key), "bench.p%u", n);
    if (n >= BENCH_MAX_PHASES || !guest_cmdline_get(key, val, sizeof(val)))
        return false;
    memset(s, 0, sizeof(*s));
    const char *p = val;
    for (unsigned i = 0; i <= BENCH_MAX_FIELDS; i++) {
        char *out = i == 0 ? s->name : s->field[i - 1];
        size_t len = 0;
        while (*p && *p != ',') {
            if (len + 1 >= BENCH_FIELD_LEN)
                guest_fail(__FILE__, __LINE__, "%s: a field is too long", key);
            out[len++] = *p++;
        }
        if (i > 0)
            s->nr_fields = i;
        if (*p++ != ',')
            return true;
    }
    guest_fail(__FILE__, __LINE__, "%s: more than %u fields", key, BENCH_MAX_FIELDS);
}

/* Field i (0 = the first after the name) as a decimal number in [min, max]. */
static inline uint64_t bench_field_u64(const struct bench_spec *s, unsigned i, uint64_t min,
                                       uint64_t max)
{
    uint64_t v = 0;
    const char *p = i < s->nr_fields ? s->field[i] : "";
    if (!*p)
        guest_fail(__FILE__, __LINE__, "phase %s: field %u is missing", s->name, i + 1);
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > (max - (uint64_t)(*p - '0')) / 10)
            guest_fail(__FILE__, __LINE__, "phase %s: field %u is not a number <= %lu", s->name,
                       i + 1, (unsigned long)max);
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v < min)
        guest_fail(__FILE__, __LINE__, "phase %s: field %u is below %lu", s->name, i + 1,
                   (unsigned long)min);
    return v;
}

/* A 64-bit xorshift generator: the same sequence in every VMM. */
static inline uint64_t bench_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Fails the guest when `since` (a TSC value of the last progress) is too long ago. */
static inline void bench_check_stall(uint64_t since, const char *what)
{
    if (rdtsc() - since > BENCH_STALL_TICKS)
        guest_fail(__FILE__, __LINE__, "%s: no progress for %lu TSC ticks", what,
                   (unsigned long)BENCH_STALL_TICKS);
}

/* The lines around a measured phase (see the top of this file); returns the start TSC. */
static inline uint64_t bench_begin(const char *name)
{
    guest_printf("bench: begin %s %lu\n", name, (unsigned long)rdtsc());
    guest_udelay(BENCH_PAUSE_US);
    guest_printf("bench: go %s\n", name);
    return rdtsc();
}

static inline void bench_end(const char *name, uint64_t start)
{
    uint64_t end = rdtsc();
    guest_printf("bench: end %s %lu %lu\n", name, (unsigned long)start, (unsigned long)end);
    guest_udelay(BENCH_PAUSE_US);
}

#endif
