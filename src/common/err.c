/* The error convention: set, wrap with context, clear. */
#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int err_vset(struct wisp_err *err, int errnum, int with_strerror, const char *fmt,
                    va_list ap)
{
    if (errnum <= 0)
        errnum = errnum ? -errnum : EIO;
    if (!err)
        return -errnum;
    err->errnum = errnum;
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    if (with_strerror && n >= 0 && (size_t)n < sizeof(err->msg))
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(errnum));
    return -errnum;
}

int wisp_err_set(struct wisp_err *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_vset(err, errnum, 0, fmt, ap);
    va_end(ap);
    return r;
}

int wisp_err_sys(struct wisp_err *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_vset(err, errnum, 1, fmt, ap);
    va_end(ap);
    return r;
}

int wisp_err_wrap(struct wisp_err *err, const char *fmt, ...)
{
    if (!err)
        return -EIO;
    if (err->errnum == 0)
        err->errnum = EIO;
    char prefix[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    size_t plen = strlen(prefix);
    if (plen + 2 >= sizeof(err->msg))
        plen = sizeof(err->msg) - 3;
    /* shift the old message right and put "prefix: " in front, truncating the tail */
    size_t keep = sizeof(err->msg) - plen - 3;
    memmove(err->msg + plen + 2, err->msg, keep);
    err->msg[sizeof(err->msg) - 1] = '\0';
    memcpy(err->msg, prefix, plen);
    err->msg[plen] = ':';
    err->msg[plen + 1] = ' ';
    return -err->errnum;
}

void wisp_err_clear(struct wisp_err *err)
{
    if (err) {
        err->errnum = 0;
        err->msg[0] = '\0';
    }
}
