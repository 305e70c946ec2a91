/* wisp-oci's logging, as runc's: logrus lines (text: time="..." level=error msg="...", or JSON
 * {"level","msg","time"}) appended to --log, or stderr. Engines read the last error from there
 * (containerd's shim reads log.json; podman shows stderr). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"
#include "oci.h"

struct oci_global oci_g = {.root = OCI_DEFAULT_ROOT};

void oci_time_now(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    char base[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%09ldZ", base, ts.tv_nsec);
}

static void log_line(const char *level, const char *msg)
{
    char when[40], line[4096];
    struct timespec ts;
    struct tm tm;
    int fd = STDERR_FILENO, n;
    bool json = oci_g.log_json;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (oci_g.log_path && strcmp(oci_g.log_path, "/dev/stderr") != 0) {
        fd = open(oci_g.log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            fd = STDERR_FILENO;
    }
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "level", level, "msg", msg, "time", when);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        n = snprintf(line, sizeof(line), "%s\n", s ? s : "{}");
        free(s);
        json_decref(o);
    } else {
        json_t *m = json_string(msg);
        char *q = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
        n = snprintf(line, sizeof(line), "time=\"%s\" level=%s msg=%s\n", when, level,
                     q ? q : "\"\"");
        free(q);
        json_decref(m);
    }
    if (n > 0)
        wisp_write_all(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    if (fd != STDERR_FILENO)
        close(fd);
}

void oci_logf(const char *level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_line(level, msg);
}

void oci_debug(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    if (!oci_g.debug)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_line("debug", msg);
}

int oci_fail(int status, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_line("error", msg);
    if (oci_g.log_path && strcmp(oci_g.log_path, "/dev/stderr") != 0)
        dprintf(STDERR_FILENO, "%s\n", msg);
    return status;
}

int oci_usage(const char *cmd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dprintf(STDERR_FILENO, "wisp-oci%s%s: %s\nTry 'wisp-oci %s%s--help'.\n", cmd ? " " : "",
            cmd ? cmd : "", msg, cmd ? cmd : "", cmd ? " " : "");
    return OCI_EXIT_USAGE;
}
