/* Messages of a long-running program (wisp-vmm) on stderr that never block the thread that
 * logs: lines go through an outbuf, and are dropped (and counted) when stderr does not drain. */
#ifndef WISP_COMMON_LOG_H
#define WISP_COMMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

/* Levels, Firecracker's logger's: a line is written when its level is at or below the one set
 * (wisp_log_configure; default Info). wisp_log() lines are Warnings: problems and notices. */
enum wisp_log_level {
    WISP_LOG_OFF,
    WISP_LOG_ERROR,
    WISP_LOG_WARNING,
    WISP_LOG_INFO,
    WISP_LOG_DEBUG,
    WISP_LOG_TRACE,
};

/* Sets the prefix ("wisp-vmm") of every line; call once at start (not thread-safe). */
void wisp_log_init(const char *prog);
/* Formats one line "<prog>: <message>\n" (a trailing newline in fmt is not needed). Any thread;
 * never blocks (the writer thread starts on first use). file and line name where the message
 * comes from (shown with show_origin). */
void wisp_log_at(enum wisp_log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define wisp_log(...)       wisp_log_at(WISP_LOG_WARNING, __FILE__, __LINE__, __VA_ARGS__)
#define wisp_log_error(...) wisp_log_at(WISP_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define wisp_log_info(...)  wisp_log_at(WISP_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
void wisp_vlog(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Text that is already formatted (may hold several lines), as one unit. */
void wisp_log_raw(const char *text, size_t len);
/* Waits at most timeout_ms for logged lines to reach stderr (before exit). */
void wisp_log_flush(int timeout_ms);

/* Which lines are written and how (any thread): up to `level`; with show_level the level's
 * name follows the prefix ("wisp-vmm: [Warning] ..."), with show_origin the source file and
 * line ("wisp-vmm: [virtio/blk.c:210] ..."). */
void wisp_log_configure(enum wisp_log_level level, bool show_level, bool show_origin);
/* "Off", "Error", "Warning", "Info", "Debug", "Trace" (parsing ignores case). */
const char *wisp_log_level_name(enum wisp_log_level level);
int wisp_log_level_parse(const char *s, enum wisp_log_level *out);
/* From now on the lines go to `path` instead of stderr (a file appended to, a FIFO with a
 * reader, a terminal: wisp_open_output), and so does everything else written to stderr:
 * the path replaces fd 2. `what` names the setting in errors. */
int wisp_log_set_path(const char *path, const char *what, struct wisp_err *err);

#endif
