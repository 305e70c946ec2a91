/* GET /v1/events?follow=1[&after=N]: the event stream (docs/wispd.md, "Events"), one JSON object
 * a line as each event is committed, on one long-lived answer. Each stream keeps the number of
 * the last event it sent and reads the next ones from the registry when woken: an event costs
 * one wake per stream, and a slow reader holds nothing but its own few lines. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http.h"
#include "registry.h"
#include "wispd.h"

#define EVENTS_PER_FILL 100

struct event_stream {
    struct wispd *d;
    int64_t after;
    char *pending; /* JSON lines not sent yet */
    size_t len, pos;
    struct api_stream *st;
    struct event_stream *prev, *next;
};

struct lines {
    char *p;
    size_t len, cap;
    int64_t last;
};

static int add_line(int64_t id, int64_t time_ms, const char *vm, const char *kind,
                    const char *detail, void *opaque)
{
    struct lines *l = opaque;
    json_t *e = json_pack("{s:I, s:I, s:s, s:s, s:s}", "id", (json_int_t)id, "time_ms",
                          (json_int_t)time_ms, "vm", vm, "kind", kind, "event", detail);
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    if (l->len + n + 2 > l->cap) {
        size_t cap = (l->len + n + 2) * 2;
        char *p = realloc(l->p, cap);
        if (!p) {
            free(text);
            return -ENOMEM;
        }
        l->p = p;
        l->cap = cap;
    }
    memcpy(l->p + l->len, text, n);
    l->p[l->len + n] = '\n';
    l->len += n + 1;
    l->last = id;
    free(text);
    return 0;
}

static long stream_fill(void *opaque, char *buf, size_t max)
{
    struct event_stream *es = opaque;
    if (es->pos == es->len) {
        free(es->pending);
        es->pending = NULL;
        es->len = es->pos = 0;
        struct lines l = {0};
        struct wisp_err err = {0};
        if (registry_for_each_event(es->d->reg, es->after, EVENTS_PER_FILL, add_line, &l, &err) <
            0) {
            free(l.p);
            return -1; /* the registry failed: the stream ends, the client asks again */
        }
        if (!l.len)
            return 0; /* waits for wispd_events_notify */
        es->pending = l.p;
        es->len = l.len;
        es->after = l.last;
    }
    size_t n = es->len - es->pos < max ? es->len - es->pos : max;
    memcpy(buf, es->pending + es->pos, n);
    es->pos += n;
    return (long)n;
}

static void stream_closed(void *opaque)
{
    struct event_stream *es = opaque;
    struct wispd *d = es->d;
    if (es->prev)
        es->prev->next = es->next;
    else
        d->event_streams = es->next;
    if (es->next)
        es->next->prev = es->prev;
    free(es->pending);
    free(es);
}

void events_h_stream(struct api_request *req, struct wispd *d)
{
    const char *a = api_request_query(req, "after");
    char *end;
    long long after = a ? strtoll(a, &end, 10) : registry_last_event(d->reg);
    if (a && (*end || !*a || after < 0)) {
        api_reply_error(req, 400, "events: after: '%s' is not an event number", a);
        return;
    }
    struct event_stream *es = calloc(1, sizeof(*es));
    if (!es) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    *es = (struct event_stream){.d = d, .after = after, .next = d->event_streams};
    if (es->next)
        es->next->prev = es;
    d->event_streams = es;
    es->st = api_reply_stream(req, 200, "application/x-ndjson", stream_fill, stream_closed, es);
    if (!es->st) {
        d->event_streams = es->next;
        if (es->next)
            es->next->prev = NULL;
        free(es);
    }
}

void events_wake(struct wispd *d)
{
    for (struct event_stream *es = d->event_streams; es; es = es->next)
        api_stream_wake(es->st);
}
