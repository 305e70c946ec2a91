/* Saved state as bytes: the little-endian writer and the bounded reader of statebuf.h. */
#include "common/statebuf.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NULL_STR_LEN 0xffffffffu

void state_writer_init(struct state_writer *w)
{
    *w = (struct state_writer){0};
}

void state_writer_free(struct state_writer *w)
{
    free(w->buf);
    *w = (struct state_writer){0};
}

uint8_t *state_put_space(struct state_writer *w, size_t n)
{
    if (w->failed)
        return NULL;
    if (n > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->failed = true;
                return NULL;
            }
            cap *= 2;
        }
        uint8_t *buf = realloc(w->buf, cap);
        if (!buf) {
            w->failed = true;
            return NULL;
        }
        w->buf = buf;
        w->cap = cap;
    }
    uint8_t *at = w->buf + w->len;
    w->len += n;
    return at;
}

void state_put_bytes(struct state_writer *w, const void *p, size_t n)
{
    uint8_t *at = state_put_space(w, n);
    if (at && n)
        memcpy(at, p, n);
}

void state_put_u8(struct state_writer *w, uint8_t v)
{
    state_put_bytes(w, &v, 1);
}

void state_put_u16(struct state_writer *w, uint16_t v)
{
    v = htole16(v);
    state_put_bytes(w, &v, sizeof(v));
}

void state_put_u32(struct state_writer *w, uint32_t v)
{
    v = htole32(v);
    state_put_bytes(w, &v, sizeof(v));
}

void state_put_u64(struct state_writer *w, uint64_t v)
{
    v = htole64(v);
    state_put_bytes(w, &v, sizeof(v));
}

void state_put_blob(struct state_writer *w, const void *p, size_t n)
{
    if (n >= NULL_STR_LEN) {
        w->failed = true;
        return;
    }
    state_put_u32(w, (uint32_t)n);
    state_put_bytes(w, p, n);
}

void state_put_str(struct state_writer *w, const char *s)
{
    if (!s)
        state_put_u32(w, NULL_STR_LEN);
    else
        state_put_blob(w, s, strlen(s));
}

int state_writer_error(const struct state_writer *w, const char *what, struct wisp_err *err)
{
    return w->failed ? wisp_err_set(err, ENOMEM, "%s: out of memory for the saved state", what) : 0;
}

void state_reader_init(struct state_reader *r, const void *p, size_t len)
{
    *r = (struct state_reader){.p = p, .len = len};
}

void state_reader_fail(struct state_reader *r, const char *why)
{
    if (r->bad)
        return;
    r->bad = true;
    r->bad_at = r->off;
    r->why = why;
}

size_t state_reader_left(const struct state_reader *r)
{
    return r->bad ? 0 : r->len - r->off;
}

/* The next n bytes, or NULL (the reader marked bad) when fewer are left. */
static const uint8_t *take(struct state_reader *r, size_t n)
{
    if (r->bad)
        return NULL;
    if (n > r->len - r->off) {
        state_reader_fail(r, "the data ends early");
        return NULL;
    }
    const uint8_t *at = r->p + r->off;
    r->off += n;
    return at;
}

void state_get_bytes(struct state_reader *r, void *dst, size_t n)
{
    const uint8_t *at = take(r, n);
    if (at)
        memcpy(dst, at, n);
    else
        memset(dst, 0, n);
}

uint8_t state_get_u8(struct state_reader *r)
{
    uint8_t v;
    state_get_bytes(r, &v, 1);
    return v;
}

uint16_t state_get_u16(struct state_reader *r)
{
    uint16_t v;
    state_get_bytes(r, &v, sizeof(v));
    return le16toh(v);
}

uint32_t state_get_u32(struct state_reader *r)
{
    uint32_t v;
    state_get_bytes(r, &v, sizeof(v));
    return le32toh(v);
}

uint64_t state_get_u64(struct state_reader *r)
{
    uint64_t v;
    state_get_bytes(r, &v, sizeof(v));
    return le64toh(v);
}

bool state_get_bool(struct state_reader *r)
{
    uint8_t v = state_get_u8(r);
    if (v > 1)
        state_reader_fail(r, "a flag is neither 0 nor 1");
    return v == 1;
}

void state_get_blob(struct state_reader *r, void *dst, size_t n)
{
    size_t at = r->off;
    uint32_t len = state_get_u32(r);
    if (!r->bad && len != n) {
        state_reader_fail(r, "a structure has the wrong size");
        r->bad_at = at;
    }
    state_get_bytes(r, dst, r->bad ? 0 : n);
    if (r->bad)
        memset(dst, 0, n);
}

const void *state_get_blob_ptr(struct state_reader *r, size_t max, size_t *n)
{
    size_t at = r->off;
    uint32_t len = state_get_u32(r);
    *n = 0;
    if (!r->bad && len > max) {
        state_reader_fail(r, "a length is out of range");
        r->bad_at = at;
    }
    const uint8_t *p = take(r, r->bad ? 0 : len);
    if (!p || r->bad)
        return NULL;
    *n = len;
    return p;
}

char *state_get_str(struct state_reader *r, size_t max, bool *is_null)
{
    size_t at = r->off;
    *is_null = false;
    uint32_t len = state_get_u32(r);
    if (r->bad)
        return NULL;
    if (len == NULL_STR_LEN) {
        *is_null = true;
        return NULL;
    }
    r->off = at;
    size_t n;
    const char *p = state_get_blob_ptr(r, max, &n);
    if (!p)
        return NULL;
    if (memchr(p, 0, n)) {
        state_reader_fail(r, "a string holds a NUL byte");
        r->bad_at = at;
        return NULL;
    }
    char *s = malloc(n + 1);
    if (!s) {
        state_reader_fail(r, "out of memory");
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

int state_reader_done(const struct state_reader *r, const char *what, struct wisp_err *err)
{
    if (r->bad)
        return wisp_err_set(err, EINVAL, "%s: %s at byte %zu", what, r->why, r->bad_at);
    if (r->off != r->len)
        return wisp_err_set(err, EINVAL, "%s: %zu bytes left over after byte %zu", what,
                            r->len - r->off, r->off);
    return 0;
}
