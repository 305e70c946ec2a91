/* Saved state as bytes (snapshots, docs/snapshot.md): a growable little-endian writer and a
 * bounded reader that never reads past its end. */
#ifndef WISP_COMMON_STATEBUF_H
#define WISP_COMMON_STATEBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/*
 * The writer appends; a failed allocation is remembered (`failed`) and later puts do nothing, so
 * a sequence of puts is checked once at the end (state_writer_error). Values are stored
 * little-endian whatever the host, sizes as u32 or u64.
 */
struct state_writer {
    uint8_t *buf;
    size_t len, cap;
    bool failed;
};

void state_writer_init(struct state_writer *w);
void state_writer_free(struct state_writer *w);
void state_put_u8(struct state_writer *w, uint8_t v);
void state_put_u16(struct state_writer *w, uint16_t v);
void state_put_u32(struct state_writer *w, uint32_t v);
void state_put_u64(struct state_writer *w, uint64_t v);
void state_put_bytes(struct state_writer *w, const void *p, size_t n);
/* A u32 length, then the bytes (a KVM structure, a string without its NUL). */
void state_put_blob(struct state_writer *w, const void *p, size_t n);
/* A string as a blob; NULL is written as length 0xffffffff. */
void state_put_str(struct state_writer *w, const char *s);
/* Reserves n bytes and returns where they start (to be filled later), or NULL after a failure.
 * The pointer is valid until the next put. */
uint8_t *state_put_space(struct state_writer *w, size_t n);
/* -ENOMEM with err if an allocation failed. */
int state_writer_error(const struct state_writer *w, const char *what, struct wisp_err *err);

/*
 * The reader takes values from [p, p + len). Reading past the end, or a value a get_* refuses
 * (a bool that is neither 0 nor 1, a blob of the wrong size), marks the reader bad: later gets
 * return zeros and state_reader_done() reports the first problem with its offset.
 */
struct state_reader {
    const uint8_t *p;
    size_t len, off;
    bool bad;
    size_t bad_at;   /* offset of the first problem */
    const char *why; /* what it was */
};

void state_reader_init(struct state_reader *r, const void *p, size_t len);
uint8_t state_get_u8(struct state_reader *r);
uint16_t state_get_u16(struct state_reader *r);
uint32_t state_get_u32(struct state_reader *r);
uint64_t state_get_u64(struct state_reader *r);
bool state_get_bool(struct state_reader *r);
void state_get_bytes(struct state_reader *r, void *dst, size_t n);
/* A blob of exactly n bytes into dst (a fixed-size KVM structure). */
void state_get_blob(struct state_reader *r, void *dst, size_t n);
/* A blob of at most max bytes: returns a pointer into the input and its length in *n, or NULL
 * (and *n = 0) when bad. */
const void *state_get_blob_ptr(struct state_reader *r, size_t max, size_t *n);
/* A string blob of at most max bytes without NUL bytes, copied into malloc'd memory; NULL for
 * a NULL string (*is_null set) or when bad. */
char *state_get_str(struct state_reader *r, size_t max, bool *is_null);
/* Marks the reader bad with `why` (for checks the caller makes on values it read). */
void state_reader_fail(struct state_reader *r, const char *why);
size_t state_reader_left(const struct state_reader *r);
/* 0 when everything was read well and nothing is left over; else -EINVAL with err saying
 * "<what>: <why> at byte N" (or "N bytes left over"). */
int state_reader_done(const struct state_reader *r, const char *what, struct wisp_err *err);

#endif
