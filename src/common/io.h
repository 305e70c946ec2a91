/* Small fd helpers: whole writes, and opening files given by people without blocking. */
#ifndef WISP_COMMON_IO_H
#define WISP_COMMON_IO_H

#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

/* Writes all of buf to fd, retrying on EINTR and short writes; returns 0 or -errno. It blocks
 * when fd does: never call it on a path that must not block (use an outbuf there). */
int wisp_write_all(int fd, const void *buf, size_t len);

/* What a file type is called in messages ("a FIFO", "a directory", ...). */
const char *wisp_file_type_name(mode_t mode);

/*
 * Opens `path` read-only for `what` (e.g. "--kernel") without ever blocking: O_NONBLOCK, so a
 * FIFO or a device cannot hang the open, then fstat. Only a regular file is accepted; anything
 * else fails with -EINVAL and a message naming what it is. On success returns the fd
 * (O_CLOEXEC, O_NONBLOCK cleared) and the size in *size.
 */
int wisp_open_regular(const char *what, const char *path, off_t *size, struct wisp_err *err);

/*
 * Opens `path` for output for `what` (e.g. "--serial") without ever blocking: a regular file is
 * created (0644) or appended to, a FIFO must have a reader (O_NONBLOCK: ENXIO instead of
 * waiting for one), a character device is used as it is; anything else is -EINVAL with a
 * message naming what it is. Returns the fd (O_CLOEXEC, O_NONBLOCK cleared: the caller writes
 * through an outbuf, whose thread may block).
 */
int wisp_open_output(const char *what, const char *path, struct wisp_err *err);

/* Makes sure fds 0, 1 and 2 are open (on /dev/null when they are not), so that no file the
 * program opens later becomes stdin/stdout/stderr by accident. Returns 0 or -errno. */
int wisp_ensure_std_fds(void);

#endif
