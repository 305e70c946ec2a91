/* wisp-img: helpers shared by the subcommands (opening, errors, progress, -o options, chain
 * status, image creation). */
#include "img/img.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/parse.h"

void img_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wisp-img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int img_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wisp-img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'wisp-img %s%s--help' for more information\n", cmd ? cmd : "",
            cmd ? " " : "");
    va_end(ap);
    return IMG_EXIT_ERROR;
}

int img_parse_cache(const char *s, enum block_cache_mode *m)
{
    if (block_cache_mode_parse(s, m) < 0) {
        img_error("Invalid cache option: %s", s);
        return -EINVAL;
    }
    return 0;
}

int img_parse_size(const char *s, const char *what, uint64_t *out)
{
    if (parse_size(s, 1, out) < 0) {
        img_error("Invalid %s specified: '%s'. You may use k, M, G, T, P or E suffixes for "
                  "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
                  what, s);
        return -EINVAL;
    }
    return 0;
}

int img_open(struct block_dev **bs, const char *path, const struct img_open_args *a)
{
    struct block_open_opts o = {
        .format = a->format,
        .read_only = a->read_only,
        .no_backing = a->no_backing,
        .repair = a->repair,
        .backing_override = a->backing_override,
        .backing_format_override = a->backing_format_override,
        .throttle = a->throttle,
        .aio_threads = a->aio_threads,
        .aio_queue_depth = a->aio_queue_depth,
        .poll_max_ns = a->poll_max_ns,
        .aio = BLOCK_AIO_THREADS,
    };
    if (a->cache && img_parse_cache(a->cache, &o.cache) < 0)
        return -EINVAL;
    if (a->aio && block_aio_engine_parse(a->aio, &o.aio) < 0) {
        img_error("Invalid aio option: %s", a->aio);
        return -EINVAL;
    }
    struct wisp_err err = {0};
    int r = block_open(bs, path, &o, &err);
    if (r < 0)
        img_error("%s", err.msg);
    if (r == 0 && a->preflight && (r = img_preflight(*bs)) < 0) {
        block_close(*bs);
        *bs = NULL;
    }
    return r;
}

/* Stricter than qemu-img: qemu-img writes into an image whose refcounts are wrong (and so may
 * allocate a cluster that is in use); wisp-img checks first and refuses, leaving it as it is. */
int img_preflight(struct block_dev *bs)
{
    for (struct block_dev *b = bs; b; b = b->backing) {
        if (b->drv != &qcow2_driver)
            continue;
        struct qcow2_check_result r = {0};
        struct wisp_err err = {0};
        if (qcow2_check(b, 0, &r, &err) < 0) {
            img_error("%s", err.msg);
            return -EIO;
        }
        if (r.corruptions) {
            img_error("'%s' is damaged (check finds %" PRIu64 " errors): nothing was written; "
                      "repair it with 'wisp-img check -r all %s'",
                      b->filename, r.corruptions, b->filename);
            return -EIO;
        }
    }
    return 0;
}

int img_status_above(struct block_dev *bs, struct block_dev *base, uint64_t off, uint64_t len,
                     uint64_t *pnum, uint64_t *host_offset, int *depth, struct block_dev **layer,
                     struct wisp_err *err)
{
    *depth = 0;
    for (struct block_dev *cur = bs;; cur = cur->backing, (*depth)++) {
        *layer = cur;
        if (off >= cur->size) { /* past a shorter backing file: zeroes */
            *pnum = len;
            return BLOCK_STATUS_ZERO;
        }
        uint64_t n = len < cur->size - off ? len : cur->size - off;
        int st = block_status(cur, off, n, pnum, host_offset, err);
        if (st < 0)
            return st;
        if (st & BLOCK_STATUS_ALLOCATED)
            return st;
        len = *pnum; /* what follows must hold for the whole run */
        if (!cur->backing || cur->backing == base) {
            /* unallocated down to the base: zeroes unless a base shows through */
            return cur->backing ? st : (st | BLOCK_STATUS_ZERO) & ~BLOCK_STATUS_DATA;
        }
    }
}

void img_progress_update(struct img_progress *p, uint64_t done, uint64_t total)
{
    if (!p->enabled)
        return;
    int now = total ? (int)(done * 10000 / total) : 10000;
    if (now == p->last && done != 0)
        return;
    p->last = now;
    fprintf(stderr, "    (%d.%02d/100%%)\r", now / 100, now % 100);
    fflush(stderr);
}

void img_progress_end(struct img_progress *p)
{
    if (!p->enabled)
        return;
    p->last = -1;
    img_progress_update(p, 1, 1);
    fputc('\n', stderr);
}

static int parse_bool_opt(const char *k, const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
        *out = true;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
        *out = false;
    else {
        img_error("Parameter '%s' expects 'on' or 'off', not '%s'", k, v);
        return -EINVAL;
    }
    return 0;
}

static int parse_one_opt(const char *k, const char *v, struct img_create_opts *o)
{
    uint64_t n;
    if (!strcmp(k, "size"))
        return img_parse_size(v, "image size", &o->size) ?: (o->size_given = true, 0);
    if (!strcmp(k, "cluster_size")) {
        if (img_parse_size(v, "cluster size", &n) < 0)
            return -EINVAL;
        if (n < 512 || n > (2u << 20) || (n & (n - 1))) {
            img_error("Cluster size must be a power of two between 512 and 2048k");
            return -EINVAL;
        }
        o->cluster_size = (uint32_t)n;
        return 0;
    }
    if (!strcmp(k, "compat")) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            o->version = 2;
        else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
            o->version = 3;
        else {
            img_error("Invalid compatibility level: '%s'", v);
            return -EINVAL;
        }
        return 0;
    }
    if (!strcmp(k, "preallocation")) {
        static const char *const names[] = {"off", "metadata", "falloc", "full"};
        for (int i = 0; i < 4; i++)
            if (!strcmp(v, names[i])) {
                o->prealloc = i;
                return 0;
            }
        img_error("Invalid preallocation mode: '%s'", v);
        return -EINVAL;
    }
    if (!strcmp(k, "lazy_refcounts"))
        return parse_bool_opt(k, v, &o->lazy_refcounts);
    if (!strcmp(k, "extended_l2"))
        return parse_bool_opt(k, v, &o->extended_l2);
    if (!strcmp(k, "refcount_bits")) {
        if (parse_u64(v, &n) < 0 || !n || n > 64 || (n & (n - 1))) {
            img_error("Refcount width must be a power of two and may not exceed 64 bits");
            return -EINVAL;
        }
        o->refcount_bits = (unsigned)n;
        return 0;
    }
    if (!strcmp(k, "backing_file"))
        return o->backing_file = v, 0;
    if (!strcmp(k, "backing_fmt"))
        return o->backing_format = v, 0;
    if (!strcmp(k, "compression_type")) {
        if (strcmp(v, "zlib") && strcmp(v, "zstd")) {
            img_error("Unsupported compression type '%s' (zlib or zstd)", v);
            return -EINVAL;
        }
        o->compression_type = v;
        return 0;
    }
    img_error("Invalid parameter '%s'", k);
    return -EINVAL;
}

/* Every copy img_parse_create_opts() made, reachable until exit (options point into them). */
static struct kept_opts {
    struct kept_opts *next;
    char text[];
} * kept_opts;

/* "key=value,key=value"; the string is kept (values point into a private copy). */
int img_parse_create_opts(const char *s, struct img_create_opts *o)
{
    size_t len = strlen(s);
    struct kept_opts *k = malloc(sizeof(*k) + len + 1);
    if (!k)
        return -ENOMEM;
    memcpy(k->text, s, len + 1);
    k->next = kept_opts;
    kept_opts = k;
    char *copy = k->text;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            img_error("Invalid option '%s' (expected key=value)", tok);
            return -EINVAL;
        }
        *eq = '\0';
        int r = parse_one_opt(tok, eq + 1, o);
        if (r < 0)
            return r;
    }
    return 0;
}

static int create_raw(const char *path, const struct img_create_opts *o, struct wisp_err *err)
{
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return wisp_err_sys(err, errno, "could not create '%s'", path);
    if (ftruncate(fd, (off_t)o->size) < 0)
        return wisp_err_sys(err, errno, "%s: could not resize to %" PRIu64 " bytes", path, o->size);
    if (o->prealloc == 2 || o->prealloc == 1) {
        int r = posix_fallocate(fd, 0, (off_t)o->size);
        if (r)
            return wisp_err_sys(err, r, "%s: preallocation", path);
    } else if (o->prealloc == 3) {
        static const uint8_t zero[1 << 16];
        for (uint64_t off = 0; off < o->size; off += sizeof(zero)) {
            size_t n = o->size - off < sizeof(zero) ? (size_t)(o->size - off) : sizeof(zero);
            if (pwrite(fd, zero, n, (off_t)off) != (ssize_t)n)
                return wisp_err_sys(err, errno, "%s: writing zeroes at %" PRIu64, path, off);
        }
    }
    if (fsync(fd) < 0)
        return wisp_err_sys(err, errno, "%s: fsync", path);
    return 0;
}

int img_create_image(const char *path, const struct img_create_opts *o, struct wisp_err *err)
{
    if (!strcmp(o->format, "raw")) {
        if (o->backing_file)
            return wisp_err_set(err, EINVAL, "'raw' does not support backing files");
        return create_raw(path, o, err);
    }
    if (!strcmp(o->format, "qcow2")) {
        struct qcow2_create_opts q = {
            .size = o->size,
            .cluster_size = o->cluster_size,
            .version = o->version,
            .refcount_bits = o->refcount_bits,
            .lazy_refcounts = o->lazy_refcounts,
            .extended_l2 = o->extended_l2,
            .backing_file = o->backing_file,
            .backing_format = o->backing_format,
            .prealloc = (enum qcow2_prealloc)o->prealloc,
            .compression_type = o->compression_type,
        };
        return qcow2_create(path, &q, err);
    }
    return wisp_err_set(err, EINVAL, "Unknown file format '%s'", o->format);
}

bool img_buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    /* check the first 16 bytes, then compare the buffer with itself shifted by 16 */
    for (size_t i = 0; i < len && i < 16; i++)
        if (p[i])
            return false;
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

double img_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int img_parse_output(const char *cmd, const char *arg, bool *json)
{
    if (strcmp(arg, "json") && strcmp(arg, "human"))
        return img_usage_error(cmd, "--output must be used with human or json as argument.");
    *json = !strcmp(arg, "json");
    return 0;
}
