/* The host side of a guest console (the UART, later virtio-console): where its output goes
 * (stdout, a file or FIFO, nowhere) and where its input comes from (stdin, a terminal put in raw
 * mode). Output never blocks the guest: it goes through an outbuf; input is read by an event
 * loop only as fast as the guest device takes it. */
#ifndef WISP_COMMON_CHARDEV_H
#define WISP_COMMON_CHARDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct evloop;
struct chardev;

/* The guest device the chardev serves. Input callbacks run in the event loop's thread, the
 * output_space callback in the output thread; all may take the device's own lock. */
struct chardev_frontend {
    size_t (*can_receive)(void *opaque); /* bytes the device takes now */
    void (*receive)(void *opaque, const uint8_t *buf, size_t len);
    void (*output_space)(void *opaque); /* room is back after a write that did not fit */
    void *opaque;
};

enum chardev_kind {
    CHARDEV_NULL,  /* output discarded, no input */
    CHARDEV_STDIO, /* output to stdout, input from stdin */
    CHARDEV_FILE,  /* output appended to a file, FIFO or character device; no input */
};

/* Opens a chardev. For CHARDEV_FILE, `path` is opened without blocking: a regular file is
 * created or appended to, a FIFO must have a reader, a character device (a terminal, /dev/null)
 * is used as it is; a directory, socket, block device or missing directory is an error that
 * names `what` (e.g. "--serial") and the path, with a usage-class errno (EINVAL, ENOENT,
 * EISDIR, ENXIO, EACCES). A terminal on stdin is put in raw mode (no echo, no line editing,
 * output processing and Ctrl-C kept) and restored by chardev_close() and on every signal that
 * ends the process (chardev_restore_terminals()). Pair with chardev_close(). */
int chardev_open(struct chardev **out, enum chardev_kind kind, const char *path, const char *what,
                 struct wisp_err *err);
/* Sets (or, with an all-zero frontend, clears) the device served. Call from the loop's thread
 * (or before input is attached); when it returns, no output_space call of the old frontend is
 * running or will run, so the old one may be freed. */
void chardev_set_frontend(struct chardev *cd, const struct chardev_frontend *fe);
/* Starts reading input on loop (no-op without input). Call from the loop's thread or before it
 * runs. */
int chardev_attach_input(struct chardev *cd, struct evloop *loop, struct wisp_err *err);
/* The frontend has room again (any thread; never blocks). */
void chardev_input_ready(struct chardev *cd);
/* Output: takes what fits, returns the bytes taken; never blocks. With no output (NULL kind or
 * a reader that went away) everything is taken and dropped. */
size_t chardev_write(struct chardev *cd, const void *buf, size_t len);
/* When the output is a regular file, keeps about its last max bytes on disk (outbuf_set_file_cap;
 * --console-log-max). */
int chardev_set_file_cap(struct chardev *cd, uint64_t max, struct wisp_err *err);
/* Bytes chardev_write() would take now. */
size_t chardev_write_room(struct chardev *cd);
/* Waits at most timeout_ms for the output written so far to leave. */
void chardev_flush(struct chardev *cd, int timeout_ms);
/* Stops input, restores the terminal, drops pending output, frees. NULL is fine. */
void chardev_close(struct chardev *cd);

/* Restores every terminal a chardev put in raw mode. Async-signal-safe (tcsetattr only): for
 * handlers of fatal signals. */
void chardev_restore_terminals(void);

#endif
