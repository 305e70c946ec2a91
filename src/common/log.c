/* Non-blocking logging on stderr through one outbuf, created on first use. */
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/io.h"
#include "common/outbuf.h"

#define LOG_BUFFER_BYTES (64 * 1024)

static const char *log_prog = "wisp";
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static struct outbuf *log_out; /* NULL if it could not be created: lines are dropped */
static atomic_int log_level = WISP_LOG_INFO;
static atomic_bool log_show_level, log_show_origin;

void wisp_log_init(const char *prog)
{
    log_prog = prog;
}

static void log_create(void)
{
    if (outbuf_create(&log_out, STDERR_FILENO, LOG_BUFFER_BYTES, "log", NULL) < 0)
        log_out = NULL;
}

void wisp_log_raw(const char *text, size_t len)
{
    pthread_once(&log_once, log_create);
    if (log_out)
        (void)outbuf_write_whole(log_out, text, len);
}

static const char *const level_names[] = {"Off", "Error", "Warning", "Info", "Debug", "Trace"};

const char *wisp_log_level_name(enum wisp_log_level level)
{
    return (unsigned)level <= WISP_LOG_TRACE ? level_names[level] : "?";
}

int wisp_log_level_parse(const char *s, enum wisp_log_level *out)
{
    for (int i = 0; i <= WISP_LOG_TRACE; i++)
        if (!strcasecmp(s, level_names[i])) {
            *out = (enum wisp_log_level)i;
            return 0;
        }
    return -EINVAL;
}

void wisp_log_configure(enum wisp_log_level level, bool show_level, bool show_origin)
{
    atomic_store(&log_level, (int)level);
    atomic_store(&log_show_level, show_level);
    atomic_store(&log_show_origin, show_origin);
}

/* "../src/virtio/blk.c" -> "virtio/blk.c" */
static const char *short_origin(const char *file)
{
    const char *s = strstr(file, "src/");
    return s ? s + 4 : file;
}

static void log_line(enum wisp_log_level level, const char *file, int lineno, const char *fmt,
                     va_list ap)
{
    if ((int)level > atomic_load(&log_level) || level == WISP_LOG_OFF)
        return;
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s: ", log_prog);
    if (n >= 0 && atomic_load(&log_show_level))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "[%s] ", wisp_log_level_name(level));
    if (n >= 0 && file && atomic_load(&log_show_origin))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "[%s:%d] ", short_origin(file), lineno);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len >= sizeof(line) - 1)
        len = sizeof(line) - 2; /* truncated */
    if (len && line[len - 1] == '\n')
        len--;
    line[len++] = '\n';
    wisp_log_raw(line, len);
}

void wisp_vlog(const char *fmt, va_list ap)
{
    log_line(WISP_LOG_WARNING, NULL, 0, fmt, ap);
}

void wisp_log_at(enum wisp_log_level level, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, file, line, fmt, ap);
    va_end(ap);
}

int wisp_log_set_path(const char *path, const char *what, struct wisp_err *err)
{
    int fd = wisp_open_output(what, path, err);
    if (fd < 0)
        return fd;
    /* the writer thread keeps writing to fd 2, which now is the new file (a write under way
     * finishes on the old one) */
    int r = dup2(fd, STDERR_FILENO) < 0 ? wisp_err_sys(err, errno, "%s: %s: dup2", what, path) : 0;
    close(fd);
    return r;
}

void wisp_log_flush(int timeout_ms)
{
    if (log_out)
        (void)outbuf_drain(log_out, timeout_ms);
}
