/* wisp-img bench: qemu-img bench's I/O benchmark (count requests of size bytes, depth in
 * flight, offsets advancing by step and wrapping) through the block layer's async API and a
 * chosen I/O engine, optionally throttled. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/parse.h"
#include "img/img.h"

static const char bench_help[] =
    "Runs a simple I/O benchmark on 'filename'.\n"
    "\n"
    "  -c count        number of requests (default 75000)\n"
    "  -d depth        requests in flight (default 64)\n"
    "  -s size         bytes per request (default 4k)\n"
    "  -S step         offset step between requests (default: size); offsets wrap around\n"
    "  -o offset       first offset (default 0)\n"
    "  -w              write (default read); --pattern=N fills the buffers with byte N\n"
    "  --flush-interval=N  flush after every N writes; --no-drain does not wait before it\n"
    "  -f fmt          image format\n"
    "  -t cache        cache mode (default writeback)\n"
    "  -i aio          I/O engine: sync, threads (default), io_uring; -n = io_uring\n"
    "  --iops-limit=N, --bps-limit=N        throttle (token buckets, total of both directions)\n"
    "  --iops-burst=N, --bps-burst=N        bucket sizes (default a tenth of a second)\n"
    "  --poll-max-ns=N  io_uring: busy-poll completions up to N ns before sleeping (adaptive;\n"
    "                  default 64000, 0 = never)\n"
    "  -q              quiet\n";

struct bench {
    struct block_dev *bs;
    uint64_t count, submitted, completed, offset, step, size, image_size;
    uint64_t flush_interval, writes_since_flush;
    bool write;
    int error;
    struct block_req *reqs;
    struct iovec *iovs;
};

static void bench_done(struct block_req *req, int ret);

static int bench_submit(struct bench *b, struct block_req *req)
{
    struct iovec *iov = (struct iovec *)req->iov;
    iov->iov_len = b->size;
    req->op = b->write ? BLOCK_OP_WRITE : BLOCK_OP_READ;
    req->offset = b->offset;
    req->done = bench_done;
    req->opaque = b;
    /* QEMU 7.2's wrap (modulo the image size), which keeps aligned offsets aligned, except
     * that a request that would run past the end starts over at 0 instead of failing. */
    b->offset += b->step;
    if (b->image_size <= b->size)
        b->offset = 0;
    else if ((b->offset %= b->image_size) > b->image_size - b->size)
        b->offset = 0;
    b->submitted++;
    struct wisp_err err = {0};
    int r = block_aio_submit(b->bs, req, &err);
    if (r < 0) {
        img_error("%s", err.msg);
        b->error = r;
    }
    return r;
}

static void bench_done(struct block_req *req, int ret)
{
    struct bench *b = req->opaque;
    b->completed++;
    if (ret < 0) {
        if (!b->error)
            img_error("%s: request at offset %" PRIu64 " failed: %s", b->bs->filename, req->offset,
                      strerror(-ret));
        b->error = ret;
        return;
    }
    if (b->error || b->submitted >= b->count)
        return;
    if (b->flush_interval && b->write && ++b->writes_since_flush >= b->flush_interval) {
        struct wisp_err err = {0};
        b->writes_since_flush = 0;
        if (block_flush(b->bs, &err) < 0) {
            img_error("%s", err.msg);
            b->error = -EIO;
            return;
        }
    }
    bench_submit(b, req);
}

struct bench_opts {
    uint64_t count, depth, size, step, offset, flush_interval;
    bool write, quiet, step_set;
    int pattern;
    const char *fmt, *cache, *aio;
    struct block_throttle_limits lim;
    bool throttled;
    int64_t poll_max_ns;
};

static int bench_parse_num(const char *s, const char *what, uint64_t *out, bool size)
{
    int r = size ? parse_size(s, 1, out) : parse_u64(s, out);
    if (r < 0)
        img_error("Invalid %s specified: '%s'", what, s);
    return r;
}

static int bench_parse(int argc, char **argv, struct bench_opts *o)
{
    enum {
        OPT_PATTERN = 256,
        OPT_FLUSH,
        OPT_NODRAIN,
        OPT_IOPS,
        OPT_BPS,
        OPT_IOPSB,
        OPT_BPSB,
        OPT_POLL
    };
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {"pattern", required_argument, NULL, OPT_PATTERN},
                                             {"flush-interval", required_argument, NULL, OPT_FLUSH},
                                             {"no-drain", no_argument, NULL, OPT_NODRAIN},
                                             {"iops-limit", required_argument, NULL, OPT_IOPS},
                                             {"bps-limit", required_argument, NULL, OPT_BPS},
                                             {"iops-burst", required_argument, NULL, OPT_IOPSB},
                                             {"bps-burst", required_argument, NULL, OPT_BPSB},
                                             {"poll-max-ns", required_argument, NULL, OPT_POLL},
                                             {0}};
    int c, r = 0;
    uint64_t v;
    while (r == 0 && (c = getopt_long(argc, argv, "hc:d:f:i:no:qs:S:t:wU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            img_print_command_help("bench", bench_help);
            return 1;
        case 'c':
            r = bench_parse_num(optarg, "request count", &o->count, false);
            break;
        case 'd':
            r = bench_parse_num(optarg, "queue depth", &o->depth, false);
            break;
        case 's':
            r = bench_parse_num(optarg, "buffer size", &o->size, true);
            break;
        case 'S':
            r = bench_parse_num(optarg, "step size", &o->step, true), o->step_set = true;
            break;
        case 'o':
            r = bench_parse_num(optarg, "offset", &o->offset, true);
            break;
        case 'f':
            o->fmt = optarg;
            break;
        case 't':
            o->cache = optarg;
            break;
        case 'i':
            o->aio = optarg;
            break;
        case 'n':
            o->aio = "io_uring";
            break;
        case 'w':
            o->write = true;
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'U':
        case OPT_NODRAIN:
            break;
        case OPT_PATTERN:
            r = bench_parse_num(optarg, "pattern byte", &v, false);
            if (r == 0 && v > 255)
                r = -1, img_error("Invalid pattern byte specified");
            o->pattern = (int)v;
            break;
        case OPT_FLUSH:
            r = bench_parse_num(optarg, "flush interval", &o->flush_interval, false);
            break;
        case OPT_IOPS:
            r = bench_parse_num(optarg, "IOPS limit", &o->lim.iops_total, false),
            o->throttled = true;
            break;
        case OPT_BPS:
            r = bench_parse_num(optarg, "bytes/s limit", &o->lim.bps_total, true),
            o->throttled = true;
            break;
        case OPT_IOPSB:
            r = bench_parse_num(optarg, "IOPS burst", &o->lim.iops_total_max, false);
            break;
        case OPT_BPSB:
            r = bench_parse_num(optarg, "bytes/s burst", &o->lim.bps_total_max, true);
            break;
        case OPT_POLL:
            r = bench_parse_num(optarg, "poll time", &v, false);
            if (r == 0 && v > 10000000)
                r = -1, img_error("Invalid poll time specified: at most 10000000 ns");
            o->poll_max_ns = v ? (int64_t)v : -1;
            break;
        default:
            img_usage_error("bench", "invalid option");
            return -1;
        }
    }
    if (r == 0 && (!o->depth || !o->size || o->depth > 4096 || o->size > (64u << 20))) {
        img_error("Invalid queue depth or buffer size (depth 1..4096, size up to 64M)");
        return -1;
    }
    if (r == 0 && optind != argc - 1) {
        img_usage_error("bench", "Expecting one image file name");
        return -1;
    }
    return r;
}

static int bench_run(struct bench *b, uint64_t depth)
{
    if (depth > b->count)
        depth = b->count;
    struct wisp_err err = {0};
    for (uint64_t i = 0; i < depth && !b->error; i++)
        bench_submit(b, &b->reqs[i]);
    while (b->completed < b->submitted) {
        int r = block_aio_poll(b->bs, 1, &err);
        if (r < 0) {
            img_error("%s", err.msg);
            return r;
        }
    }
    if (!b->error && b->write && block_flush(b->bs, &err) < 0) {
        img_error("%s", err.msg);
        return -EIO;
    }
    return b->error;
}

int img_bench_main(int argc, char **argv)
{
    struct bench_opts o = {.count = 75000, .depth = 64, .size = 4096};
    int r = bench_parse(argc, argv, &o);
    if (r)
        return r > 0 ? IMG_EXIT_OK : IMG_EXIT_ERROR;
    if (!o.step_set)
        o.step = o.size;
    struct img_open_args a = {.format = o.fmt,
                              .read_only = !o.write,
                              .cache = o.cache,
                              .aio = o.aio ? o.aio : "threads",
                              .throttle = o.throttled ? &o.lim : NULL,
                              .aio_queue_depth = (unsigned)(o.depth < 4096 ? o.depth : 4096),
                              .poll_max_ns = o.poll_max_ns};
    struct bench b = {.count = o.count,
                      .offset = o.offset,
                      .step = o.step,
                      .size = o.size,
                      .write = o.write,
                      .flush_interval = o.flush_interval};
    if (img_open(&b.bs, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    b.image_size = b.bs->size;
    cleanup_free uint8_t *bufs = NULL;
    cleanup_free struct block_req *reqs = calloc(o.depth, sizeof(*reqs));
    cleanup_free struct iovec *iovs = calloc(o.depth, sizeof(*iovs));
    if (!reqs || !iovs || posix_memalign((void **)&bufs, 4096, o.depth * o.size)) {
        img_error("out of memory");
        block_close(b.bs);
        return IMG_EXIT_ERROR;
    }
    memset(bufs, o.pattern, o.depth * o.size);
    for (uint64_t i = 0; i < o.depth; i++) {
        iovs[i] = (struct iovec){bufs + i * o.size, o.size};
        reqs[i].iov = &iovs[i];
        reqs[i].iovcnt = 1;
    }
    b.reqs = reqs;
    if (!o.quiet)
        printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %" PRIu64
               " in parallel (starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
               o.count, o.write ? "write" : "read", o.size, o.depth, o.offset, o.step);
    fflush(stdout);
    double t0 = img_now();
    r = bench_run(&b, o.depth);
    double t = img_now() - t0;
    block_close(b.bs);
    if (r < 0)
        return IMG_EXIT_ERROR;
    if (!o.quiet)
        printf("Run completed in %3.3f seconds.\n", t);
    return IMG_EXIT_OK;
}
