/* Messages of a long-running program (wisp-vmm) on stderr that never block the thread that
 * logs: lines go through an outbuf, and are dropped (and counted) when stderr does not drain. */
#ifndef WISP_COMMON_LOG_H
#define WISP_COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* Sets the prefix ("wisp-vmm") of every line; call once at start (not thread-safe). */
void wisp_log_init(const char *prog);
/* Formats one line "<prog>: <message>\n" (a trailing newline in fmt is not needed). Any thread;
 * never blocks (the writer thread starts on first use). */
void wisp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void wisp_vlog(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Text that is already formatted (may hold several lines), as one unit. */
void wisp_log_raw(const char *text, size_t len);
/* Waits at most timeout_ms for logged lines to reach stderr (before exit). */
void wisp_log_flush(int timeout_ms);

#endif
