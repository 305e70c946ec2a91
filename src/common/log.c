/* Non-blocking logging on stderr through one outbuf, created on first use. */
#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/outbuf.h"

#define LOG_BUFFER_BYTES (64 * 1024)

static const char *log_prog = "wisp";
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static struct outbuf *log_out; /* NULL if it could not be created: lines are dropped */

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

void wisp_vlog(const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s: ", log_prog);
    if (n < 0)
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

void wisp_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wisp_vlog(fmt, ap);
    va_end(ap);
}

void wisp_log_flush(int timeout_ms)
{
    if (log_out)
        (void)outbuf_drain(log_out, timeout_ms);
}
