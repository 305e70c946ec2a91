/* qcow2 host writes: every write of metadata and of guest data the driver makes goes through
 * here and is checked against the metadata map (qcow2_meta.c) first; a write that would land on
 * metadata of another kind is refused and the image marked corrupt. Also: corruption found at
 * use (QEMU's qcow2_signal_corruption), the host ranges with I/O in flight, and the fault
 * injection hook the error-path tests use.
 *
 * Fault injection (tests only; nothing happens unless the variables are set):
 *   WISP_QCOW2_FAULT=N       the Nth metadata write or barrier of the process fails with EIO
 *   WISP_QCOW2_FAULT_LOG=F   appends "N kind offset length" to F for each of them
 * The count is process-wide (a wisp-img command may write two images), so a test runs a command
 * once with the log to learn how many there are, then once per N. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"

static struct {
    pthread_once_t once;
    unsigned long fail_at; /* 0 = never */
    const char *log;
    atomic_ulong count;
} fault = {.once = PTHREAD_ONCE_INIT};

static void fault_init(void)
{
    const char *n = getenv("WISP_QCOW2_FAULT");
    fault.fail_at = n ? strtoul(n, NULL, 10) : 0;
    fault.log = getenv("WISP_QCOW2_FAULT_LOG");
}

/* Counts one metadata write or barrier; fails it when it is the one asked for. */
static int fault_point(struct qcow2_state *s, const char *what, uint64_t off, uint64_t len,
                       struct wisp_err *err)
{
    pthread_once(&fault.once, fault_init);
    if (!fault.fail_at && !fault.log)
        return 0;
    unsigned long n = atomic_fetch_add(&fault.count, 1) + 1;
    if (fault.log) {
        FILE *f = fopen(fault.log, "a");
        if (f) {
            fprintf(f, "%lu %s 0x%" PRIx64 " %" PRIu64 "\n", n, what, off, len);
            fclose(f);
        }
    }
    if (n == fault.fail_at)
        return wisp_err_set(err, EIO,
                            "%s: injected fault (WISP_QCOW2_FAULT=%lu): %s at offset 0x%" PRIx64,
                            s->name, n, what, off);
    return 0;
}

int qcow2_corrupt(struct qcow2_state *s, struct wisp_err *err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    bool mark = !s->read_only && !s->repair && !s->corrupt_stop;
    if (mark) {
        /* as QEMU: the corrupt bit, then nothing more is written to the image */
        struct wisp_err ignored = {0};
        s->incompat |= QCOW2_INCOMPAT_CORRUPT;
        if (qcow2_write_header(s, &ignored) == 0)
            block_file_flush(s->file, &ignored);
        s->corrupt_stop = true;
    }
    return wisp_err_set(err, EIO, "%s: %s%s", s->name, msg,
                        mark ? "; the image is now marked corrupt (repair it with wisp-img "
                               "check -r all)"
                             : "");
}

static int refuse_stopped(struct qcow2_state *s, const char *what, uint64_t off,
                          struct wisp_err *err)
{
    return wisp_err_set(err, EIO,
                        "%s: not writing %s at offset 0x%" PRIx64
                        ": the image was marked corrupt (repair it with wisp-img check -r all)",
                        s->name, what, off);
}

int qcow2_write_meta(struct qcow2_state *s, unsigned kind, uint64_t off, const void *buf,
                     size_t len, struct wisp_err *err)
{
    const char *what = qcow2_meta_name(kind);
    if (s->corrupt_stop)
        return refuse_stopped(s, what, off, err);
    if (!qcow2_meta_is(s, off, len, kind)) {
        unsigned have = qcow2_meta_kinds(s, off, len);
        return qcow2_corrupt(s, err,
                             "refusing to write %s at host offset 0x%" PRIx64 " (+%zu): it would "
                             "overwrite %s",
                             what, off, len,
                             have & ~kind ? qcow2_meta_name(have & ~kind)
                                          : "clusters not known to hold it");
    }
    int ret = fault_point(s, what, off, len, err);
    if (ret == 0)
        ret = block_file_pwrite(s->file, off, buf, len, err);
    return ret;
}

int qcow2_guard_data(struct qcow2_state *s, uint64_t off, uint64_t len, struct wisp_err *err)
{
    if (s->corrupt_stop)
        return refuse_stopped(s, "guest data", off, err);
    unsigned have = qcow2_meta_kinds(s, off, len);
    if (have)
        return qcow2_corrupt(s, err,
                             "refusing to write guest data to host offset 0x%" PRIx64 " (+%" PRIu64
                             "), which holds metadata (%s)",
                             off, len, qcow2_meta_name(have));
    return 0;
}

int qcow2_write_data(struct qcow2_state *s, uint64_t off, const struct iovec *iov, int cnt,
                     struct wisp_err *err)
{
    size_t len = 0;
    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len;
    int ret = qcow2_guard_data(s, off, len, err);
    return ret < 0 ? ret : block_file_pwritev(s->file, off, iov, cnt, err);
}

int qcow2_barrier(struct qcow2_state *s, struct wisp_err *err)
{
    int ret = fault_point(s, "barrier", 0, 0, err);
    return ret < 0 ? ret : block_file_flush(s->file, err);
}

int qcow2_host_io_begin(struct qcow2_state *s, uint64_t off, uint64_t len, struct wisp_err *err)
{
    if (s->nr_host_io == s->cap_host_io) {
        unsigned cap = s->cap_host_io ? s->cap_host_io * 2 : 64;
        void *p = realloc(s->host_io, cap * sizeof(*s->host_io));
        if (!p)
            return wisp_err_sys(err, ENOMEM, "%s: I/O in flight", s->name);
        s->host_io = p;
        s->cap_host_io = cap;
    }
    s->host_io[s->nr_host_io++] = (struct qcow2_host_io){off, off + len};
    return 0;
}

void qcow2_host_io_end(struct qcow2_state *s, uint64_t off, uint64_t len)
{
    for (unsigned i = 0; i < s->nr_host_io; i++) {
        if (s->host_io[i].start == off && s->host_io[i].end == off + len) {
            s->host_io[i] = s->host_io[--s->nr_host_io];
            break;
        }
    }
    /* a cluster skipped while this I/O was in flight may be free now: search from there */
    if (s->busy_skip < s->free_hint)
        s->free_hint = s->busy_skip;
    s->busy_skip = UINT64_MAX;
}

bool qcow2_clusters_reusable(const struct qcow2_state *s, uint64_t c, uint64_t n)
{
    uint64_t a = c << s->cluster_bits, b = (c + n) << s->cluster_bits;
    if (qcow2_meta_kinds(s, a, b - a))
        return false;
    for (unsigned i = 0; i < s->nr_host_io; i++)
        if (s->host_io[i].start < b && a < s->host_io[i].end)
            return false;
    return true;
}
