/* wisp-img convert: copies an image (through its backing chain) into a new or existing image of
 * any format, skipping holes and zero blocks, optionally compressed, with N parallel workers.
 * Workers claim chunks in order and read them concurrently; without -W they write in order. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "img/img.h"

#define CONVERT_CHUNK       (2u << 20)
#define CONVERT_MAX_WORKERS 16

static const char convert_help[] =
    "Converts 'filename' (with its backing chain) into 'output_filename'.\n"
    "\n"
    "  -f fmt          source format (probed when omitted)\n"
    "  -O output_fmt   target format: raw (default) or qcow2\n"
    "  -o options      creation options of the target (see wisp-img create --help)\n"
    "  -B backing_file the target gets this backing file; only data allocated in the source's\n"
    "                  top image is copied\n"
    "  -F backing_fmt  format of -B\n"
    "  -c              compress the target's clusters (qcow2 only)\n"
    "  -S size         consecutive zero bytes (default 4k) that become holes; 0 = allocate all\n"
    "  -n              do not create the target (it must exist and be large enough)\n"
    "  -m N            N parallel workers (1..16, default 8)\n"
    "  -W              workers may write out of order (faster, target is consistent at the end)\n"
    "  -t cache        target cache mode (default unsafe: flushes are skipped)\n"
    "  -T src_cache    source cache mode (default writeback)\n"
    "  -p              progress bar on stderr\n"
    "  -q              quiet\n";

struct convert {
    struct block_dev *src, *dst;
    uint64_t size, sparse;
    uint32_t cluster; /* target cluster size for -c */
    bool compress, zero_ok_skip, top_only, in_order;
    pthread_mutex_t lock;
    pthread_cond_t turn;
    uint64_t next_off, next_idx, write_idx, done;
    int error;
    struct wisp_err err;
    struct img_progress progress;
};

enum run_kind { RUN_SKIP, RUN_ZERO, RUN_DATA };
struct run {
    uint64_t off, len;
    enum run_kind kind;
};

static void convert_fail(struct convert *cv, int r, const struct wisp_err *err)
{
    pthread_mutex_lock(&cv->lock);
    if (!cv->error) {
        cv->error = r;
        cv->err = *err;
    }
    pthread_cond_broadcast(&cv->turn);
    pthread_mutex_unlock(&cv->lock);
}

/* Splits one data run at zero granules of cv->sparse bytes. */
static int add_data_runs(struct convert *cv, const uint8_t *buf, uint64_t base, uint64_t off,
                         uint64_t len, struct run *runs, int n, int max)
{
    uint64_t g = cv->sparse;
    if (!g)
        g = len;
    for (uint64_t p = off; p < off + len;) {
        uint64_t end = (p / g + 1) * g;
        if (end > off + len)
            end = off + len;
        enum run_kind k = cv->sparse && img_buffer_is_zero(buf + (p - base), end - p)
                              ? (cv->zero_ok_skip ? RUN_SKIP : RUN_ZERO)
                              : RUN_DATA;
        if (n > 0 && runs[n - 1].kind == k && runs[n - 1].off + runs[n - 1].len == p)
            runs[n - 1].len += end - p;
        else if (n < max)
            runs[n++] = (struct run){p, end - p, k};
        else
            return -1;
        p = end;
    }
    return n;
}

/* Reads one chunk: classifies it into runs and reads the data runs into buf. */
static int convert_read(struct convert *cv, uint64_t off, uint64_t len, uint8_t *buf,
                        struct run *runs, int max, struct wisp_err *err)
{
    int n = 0;
    if (cv->compress) { /* whole clusters: zero ones are skipped in write_compressed */
        runs[0] = (struct run){off, len, RUN_DATA};
        return block_pread(cv->src, off, buf, len, err) ?: 1;
    }
    for (uint64_t p = off; p < off + len;) {
        uint64_t pnum, host;
        int depth, st;
        struct block_dev *layer;
        if (cv->top_only) {
            st = block_status(cv->src, p, off + len - p, &pnum, &host, err);
            if (st >= 0 && !(st & BLOCK_STATUS_ALLOCATED))
                st = -1000; /* left to the target's backing file */
        } else {
            st = img_status_above(cv->src, NULL, p, off + len - p, &pnum, &host, &depth, &layer,
                                  err);
        }
        if (st < 0 && st != -1000)
            return st;
        enum run_kind k = st == -1000 ? RUN_SKIP
                          : cv->sparse && (st & BLOCK_STATUS_ZERO)
                              ? (cv->zero_ok_skip ? RUN_SKIP : RUN_ZERO)
                              : RUN_DATA;
        if (k == RUN_DATA) {
            int r = block_pread(cv->src, p, buf + (p - off), pnum, err);
            if (r < 0)
                return r;
            n = add_data_runs(cv, buf, off, p, pnum, runs, n, max);
        } else if (n > 0 && runs[n - 1].kind == k) {
            runs[n - 1].len += pnum;
        } else if (n < max) {
            runs[n++] = (struct run){p, pnum, k};
        } else {
            n = -1;
        }
        if (n < 0) { /* too fragmented for the run table: copy the chunk as data */
            int r = block_pread(cv->src, off, buf, len, err);
            runs[0] = (struct run){off, len, RUN_DATA};
            return r < 0 ? r : 1;
        }
        p += pnum;
    }
    return n;
}

static int write_compressed(struct convert *cv, const struct run *r, const uint8_t *buf,
                            uint64_t base, struct wisp_err *err)
{
    /* runs are cluster aligned: chunks are, and sparse granules divide clusters */
    for (uint64_t p = r->off; p < r->off + r->len; p += cv->cluster) {
        uint64_t n = r->off + r->len - p < cv->cluster ? r->off + r->len - p : cv->cluster;
        if (img_buffer_is_zero(buf + (p - base), n) && cv->zero_ok_skip)
            continue;
        int ret = qcow2_write_compressed(cv->dst, p, buf + (p - base), n, err);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int convert_write(struct convert *cv, const struct run *runs, int n, const uint8_t *buf,
                         uint64_t base, struct wisp_err *err)
{
    for (int i = 0; i < n; i++) {
        const struct run *r = &runs[i];
        int ret = 0;
        if (r->kind == RUN_ZERO)
            ret = block_write_zeroes(cv->dst, r->off, r->len, BLOCK_WZ_MAY_UNMAP, err);
        else if (r->kind == RUN_DATA && cv->compress)
            ret = write_compressed(cv, r, buf, base, err);
        else if (r->kind == RUN_DATA)
            ret = block_pwrite(cv->dst, r->off, buf + (r->off - base), r->len, err);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int convert_chunk(struct convert *cv, uint64_t off, uint64_t len, uint64_t idx, uint8_t *buf,
                         struct run *runs, int max, struct wisp_err *err)
{
    int n = convert_read(cv, off, len, buf, runs, max, err);
    if (n < 0)
        return n;
    if (cv->in_order) {
        pthread_mutex_lock(&cv->lock);
        while (cv->write_idx != idx && !cv->error)
            pthread_cond_wait(&cv->turn, &cv->lock);
        pthread_mutex_unlock(&cv->lock);
    }
    int r = cv->error ? 0 : convert_write(cv, runs, n, buf, off, err);
    pthread_mutex_lock(&cv->lock);
    cv->write_idx++;
    cv->done += len;
    img_progress_update(&cv->progress, cv->done, cv->size);
    pthread_cond_broadcast(&cv->turn);
    pthread_mutex_unlock(&cv->lock);
    return r;
}

static void *convert_worker(void *opaque)
{
    struct convert *cv = opaque;
    enum { MAX_RUNS = 256 };
    cleanup_free uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, CONVERT_CHUNK)) {
        struct wisp_err e = {ENOMEM, "out of memory"};
        convert_fail(cv, -ENOMEM, &e);
        return NULL;
    }
    struct run runs[MAX_RUNS];
    for (;;) {
        pthread_mutex_lock(&cv->lock);
        if (cv->error || cv->next_off >= cv->size) {
            pthread_mutex_unlock(&cv->lock);
            return NULL;
        }
        uint64_t off = cv->next_off, idx = cv->next_idx++;
        uint64_t len = cv->size - off < CONVERT_CHUNK ? cv->size - off : CONVERT_CHUNK;
        cv->next_off += len;
        pthread_mutex_unlock(&cv->lock);
        struct wisp_err err = {0};
        int r = convert_chunk(cv, off, len, idx, buf, runs, MAX_RUNS, &err);
        if (r < 0) {
            convert_fail(cv, r, &err);
            return NULL;
        }
    }
}

static int convert_run(struct convert *cv, unsigned workers)
{
    pthread_t t[CONVERT_MAX_WORKERS];
    unsigned started = 0;
    pthread_mutex_init(&cv->lock, NULL);
    pthread_cond_init(&cv->turn, NULL);
    img_progress_update(&cv->progress, 0, cv->size);
    for (; started < workers; started++)
        if (pthread_create(&t[started], NULL, convert_worker, cv))
            break;
    if (!started)
        convert_worker(cv);
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    if (!cv->error) {
        struct wisp_err err = {0};
        int r = block_flush(cv->dst, &err);
        if (r < 0)
            convert_fail(cv, r, &err);
    }
    if (!cv->error)
        img_progress_end(&cv->progress);
    pthread_cond_destroy(&cv->turn);
    pthread_mutex_destroy(&cv->lock);
    if (cv->error)
        img_error("error while converting: %s", cv->err.msg);
    return cv->error;
}

struct convert_args {
    const char *src_fmt, *out_fmt, *backing, *backing_fmt, *cache, *src_cache, *opts;
    bool compress, no_create, quiet, progress, out_of_order;
    uint64_t sparse;
    unsigned workers;
};

static int convert_parse(int argc, char **argv, struct convert_args *a)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    int c;
    while ((c = getopt_long(argc, argv, "hf:O:o:B:F:cS:nm:Wt:T:pqU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("convert", convert_help), 1;
        case 'f':
            a->src_fmt = optarg;
            break;
        case 'O':
            a->out_fmt = optarg;
            break;
        case 'o':
            a->opts = optarg;
            break;
        case 'B':
            a->backing = optarg;
            break;
        case 'F':
            a->backing_fmt = optarg;
            break;
        case 'c':
            a->compress = true;
            break;
        case 'n':
            a->no_create = true;
            break;
        case 'W':
            a->out_of_order = true;
            break;
        case 't':
            a->cache = optarg;
            break;
        case 'T':
            a->src_cache = optarg;
            break;
        case 'p':
            a->progress = true;
            break;
        case 'q':
            a->quiet = true;
            break;
        case 'U':
            break;
        case 'S':
            if (img_parse_size(optarg, "buffer size for sparse output", &a->sparse) < 0)
                return -1;
            break;
        case 'm': {
            char *end;
            unsigned long m = strtoul(optarg, &end, 10);
            if (*end || m < 1 || m > CONVERT_MAX_WORKERS) {
                img_error("Invalid number of coroutines. Allowed number of coroutines is "
                          "between 1 and %d",
                          CONVERT_MAX_WORKERS);
                return -1;
            }
            a->workers = (unsigned)m;
            break;
        }
        default:
            img_usage_error("convert", "invalid option");
            return -1;
        }
    }
    return 0;
}

/* Creates the target (unless -n) and opens it. */
static int convert_target(struct convert *cv, const struct convert_args *a, const char *out)
{
    struct img_create_opts o = {.format = a->out_fmt, .size = cv->size, .size_given = true};
    if (a->opts && img_parse_create_opts(a->opts, &o) < 0)
        return -1;
    o.size = cv->size;
    if (a->backing) {
        o.backing_file = a->backing;
        o.backing_format = a->backing_fmt;
    }
    struct wisp_err err = {0};
    if (!a->no_create && img_create_image(out, &o, &err) < 0) {
        img_error("%s: %s", out, err.msg);
        return -1;
    }
    struct img_open_args oa = {
        .format = a->out_fmt, .cache = a->cache ? a->cache : "unsafe", .preflight = a->no_create};
    if (img_open(&cv->dst, out, &oa) < 0)
        return -1;
    if (cv->dst->size < cv->size) {
        img_error("%s: target is smaller than the source (%" PRIu64 " < %" PRIu64 " bytes)", out,
                  cv->dst->size, cv->size);
        return -1;
    }
    struct block_info in;
    if (block_get_info(cv->dst, &in, &err) == 0 && in.cluster_size)
        cv->cluster = in.cluster_size;
    cv->zero_ok_skip = !a->no_create && !cv->dst->backing && o.prealloc == 0;
    return 0;
}

int img_convert_main(int argc, char **argv)
{
    struct convert_args a = {.out_fmt = "raw", .sparse = 4096, .workers = 8};
    int r = convert_parse(argc, argv, &a);
    if (r)
        return r > 0 ? IMG_EXIT_OK : IMG_EXIT_ERROR;
    if (argc - optind < 2)
        return img_usage_error("convert", "Expecting a source and a target file name");
    if (argc - optind > 2) {
        img_error("converting several source images into one is not supported");
        return IMG_EXIT_ERROR;
    }
    if (a.compress && strcmp(a.out_fmt, "qcow2")) {
        img_error("Compression not supported for this file format");
        return IMG_EXIT_ERROR;
    }
    if (a.sparse && a.sparse % 512) {
        img_error("Invalid buffer size for sparse output specified: must be a multiple of 512");
        return IMG_EXIT_ERROR;
    }
    struct convert cv = {.compress = a.compress, .sparse = a.sparse, .in_order = !a.out_of_order};
    cv.progress.enabled = a.progress && !a.quiet;
    cv.progress.last = -1;
    cv.top_only = a.backing != NULL;
    struct img_open_args sa = {
        .format = a.src_fmt, .read_only = true, .cache = a.src_cache, .preflight = a.no_create};
    if (img_open(&cv.src, argv[optind], &sa) < 0)
        return IMG_EXIT_ERROR;
    cv.size = cv.src->size;
    r = convert_target(&cv, &a, argv[optind + 1]);
    if (r == 0 && cv.compress && (!cv.cluster || CONVERT_CHUNK % cv.cluster)) {
        img_error("compression needs a cluster size that divides %u", CONVERT_CHUNK);
        r = -1;
    }
    if (r == 0)
        r = convert_run(&cv, a.workers);
    block_close(cv.dst);
    block_close(cv.src);
    return r ? IMG_EXIT_ERROR : IMG_EXIT_OK;
}
