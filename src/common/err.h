/* wisp's error convention: functions return 0 or a negative errno and fill a struct wisp_err. */
#ifndef WISP_COMMON_ERR_H
#define WISP_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>

/*
 * A function that can fail returns int: 0 on success or a negative errno. Where a person will read
 * the message it also fills *err (which may be NULL) with the errno and one sentence naming the
 * thing that failed (a path, a device, an offset). Callers add context on the way up with
 * wisp_err_wrap(). Nothing below main() calls exit().
 */
struct wisp_err {
    int errnum;    /* positive errno, 0 when no error has been set */
    char msg[512]; /* human-readable, without trailing newline */
};

/* Sets *err and returns -errnum, so a failing path reads `return wisp_err_set(err, EINVAL, ...)`.
 */
int wisp_err_set(struct wisp_err *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like wisp_err_set, but appends ": strerror(errnum)" to the message. */
int wisp_err_sys(struct wisp_err *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to the existing message; returns -err->errnum (or -EIO if unset). */
int wisp_err_wrap(struct wisp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears *err. */
void wisp_err_clear(struct wisp_err *err);

#endif
