/* A bounded output buffer that its own writer thread drains into an fd, so that whoever
 * produces output (a vCPU thread, an event loop) never blocks on a slow or absent reader. */
#ifndef WISP_COMMON_OUTBUF_H
#define WISP_COMMON_OUTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/*
 * outbuf_write() copies what fits and returns at once; the writer thread does the (possibly
 * blocking) write() calls. When a write did not fit, the producer is told through space_fn
 * (called from the writer thread, with no outbuf lock held) once room is back. A reader that
 * is gone (EPIPE, EIO...) makes the buffer discard everything from then on: output is lost,
 * nothing blocks. Thread-safe. The fd is not owned (not closed).
 *
 * Call order: outbuf_create() -> outbuf_write()* -> outbuf_drain() (optional, bounded) ->
 * outbuf_destroy() (cancels a write() that is stuck on a reader that never reads).
 */
struct outbuf;

int outbuf_create(struct outbuf **out, int fd, size_t capacity, const char *name,
                  struct wisp_err *err);
/* Called (from the writer thread) when room for `threshold` bytes is back after a write that
 * did not fit. */
void outbuf_set_space_fn(struct outbuf *ob, void (*space_fn)(void *opaque), void *opaque,
                         size_t threshold);
/* Copies as much of data as fits; returns the bytes taken (never blocks). */
size_t outbuf_write(struct outbuf *ob, const void *data, size_t len);
/* All of data or nothing (for whole log lines); false when it did not fit. */
bool outbuf_write_whole(struct outbuf *ob, const void *data, size_t len);
size_t outbuf_room(struct outbuf *ob);
/* For an fd that is a regular file: keeps about `max` bytes (at least max, at most 1.5 max) of
 * its end on disk. The writer punches older bytes out (fallocate PUNCH_HOLE, KEEP_SIZE): the
 * file's size keeps growing, its blocks do not; a reader finds the kept part with SEEK_DATA.
 * No effect on other fds, or where the file system cannot punch holes (-EOPNOTSUPP: said once
 * on stderr). Call before the first write. 0 turns it off. */
int outbuf_set_file_cap(struct outbuf *ob, uint64_t max, struct wisp_err *err);
/* Bytes refused so far because the buffer was full or the reader gone. */
uint64_t outbuf_dropped(struct outbuf *ob);
/* Waits until everything written so far reached the fd, or timeout_ms passed; returns 0 or
 * -ETIMEDOUT (-EPIPE when the reader is gone). */
int outbuf_drain(struct outbuf *ob, int timeout_ms);
/* Stops the writer (cancelling a blocked write()) and frees; pending output is dropped. */
void outbuf_destroy(struct outbuf *ob);

#endif
