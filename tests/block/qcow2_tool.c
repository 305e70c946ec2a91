/* Test helper for the qcow2 driver: drives it from shell tests (interop with qemu-img, crash
 * consistency). Not a user tool; wisp-img is.
 *   qcow2_tool create IMG SIZE [CLUSTER [VERSION [BACKING [BACKING_FMT]]]]
 *   qcow2_tool to-raw IMG OUT           whole disk through block_pread
 *   qcow2_tool write IMG OFF LEN BYTE   pattern write (then flush)
 *   qcow2_tool zero IMG OFF LEN [unmap] | discard IMG OFF LEN | resize IMG SIZE SHRINK_OK
 *   qcow2_tool from-raw RAW IMG [compress]   copy a raw file's bytes into IMG
 *   qcow2_tool check IMG [leaks|all]    prints counts, exit 0 if clean, 3 if corrupt
 *   qcow2_tool snap IMG create|apply|delete NAME
 *   qcow2_tool crash-writer IMG LOG SEED   random writes + flushes forever, logging flush points
 *   qcow2_tool verify IMG LOG           checks every write before the last logged flush
 *   qcow2_tool open-read FILE           open as qcow2 + reads + check: 0 served, 1 refused
 *   qcow2_tool aio-stress IMG COUNT     QD32 random writes on the threads engine, then verify
 *   qcow2_tool open-write FILE          open writable + writes/zeroes/discards: 0 done, 1 refused
 *   qcow2_tool bench IMG write|read COUNT   random 4 KiB I/O at queue depth 1, prints IOPS */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"
#include "common/cleanup.h"

static int die(const struct wisp_err *e)
{
    fprintf(stderr, "qcow2_tool: %s\n", e->msg);
    return 1;
}

static int open_img(struct block_dev **bs, const char *path, bool ro, struct wisp_err *e)
{
    struct block_open_opts o = {.read_only = ro};
    const char *cache = getenv("QCOW2_CACHE"), *aio = getenv("QCOW2_AIO");
    if (cache && block_cache_mode_parse(cache, &o.cache) < 0)
        return wisp_err_set(e, EINVAL, "bad QCOW2_CACHE '%s'", cache);
    if (aio && block_aio_engine_parse(aio, &o.aio) < 0)
        return wisp_err_set(e, EINVAL, "bad QCOW2_AIO '%s'", aio);
    return block_open(bs, path, &o, e);
}

static int cmd_to_raw(const char *img, const char *out)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    if (open_img(&bs, img, true, &e) < 0)
        return die(&e);
    FILE *f = fopen(out, "wb");
    static uint8_t buf[1 << 20];
    for (uint64_t off = 0; f && off < bs->size; off += sizeof(buf)) {
        size_t n = bs->size - off < sizeof(buf) ? bs->size - off : sizeof(buf);
        if (block_pread(bs, off, buf, n, &e) < 0)
            return die(&e);
        fwrite(buf, 1, n, f);
    }
    if (f)
        fclose(f);
    block_close(bs);
    return f ? 0 : 1;
}

static int cmd_from_raw(const char *raw, const char *img, bool compress)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    if (open_img(&bs, img, false, &e) < 0)
        return die(&e);
    struct block_info info;
    block_get_info(bs, &info, &e);
    size_t cs = info.cluster_size;
    FILE *f = fopen(raw, "rb");
    uint8_t *buf = calloc(1, cs), *zero = calloc(1, cs);
    for (uint64_t off = 0; f && off < bs->size; off += cs) {
        size_t n = bs->size - off < cs ? bs->size - off : cs;
        memset(buf, 0, cs);
        if (fread(buf, 1, n, f) == 0 || !memcmp(buf, zero, n))
            continue;
        int r = compress ? qcow2_write_compressed(bs, off, buf, n, &e)
                         : block_pwrite(bs, off, buf, n, &e);
        if (r < 0)
            return die(&e);
    }
    if (f)
        fclose(f);
    free(buf);
    free(zero);
    block_close(bs);
    return 0;
}

static void print_msg(void *opaque, const char *msg)
{
    fprintf(stderr, "%s\n", msg);
}

static int cmd_check(const char *img, const char *mode)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    int fix = !mode ? 0 : !strcmp(mode, "all") ? QCOW2_FIX_ALL : QCOW2_FIX_LEAKS;
    if (open_img(&bs, img, fix == 0, &e) < 0)
        return die(&e);
    struct qcow2_check_result r = {.report = print_msg};
    if (qcow2_check(bs, fix, &r, &e) < 0)
        return die(&e);
    printf("corruptions=%" PRIu64 " leaks=%" PRIu64 " corruptions_fixed=%" PRIu64
           " leaks_fixed=%" PRIu64 " allocated=%" PRIu64 " compressed=%" PRIu64 "\n",
           r.corruptions, r.leaks, r.corruptions_fixed, r.leaks_fixed, r.allocated_clusters,
           r.compressed_clusters);
    block_close(bs);
    return r.corruptions ? 3 : 0;
}

static uint64_t rnd(uint64_t *st)
{
    *st ^= *st << 13;
    *st ^= *st >> 7;
    *st ^= *st << 17;
    return *st;
}

/* Each write stores its sequence number in every 8 bytes; after a crash, the block written
 * last (as of the last logged flush) must hold that sequence number. */
static int cmd_crash_writer(const char *img, const char *log, uint64_t seed)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    if (open_img(&bs, img, false, &e) < 0)
        return die(&e);
    FILE *lf = fopen(log, "w");
    uint64_t blocks = bs->size / 4096, seq = 0, *buf = malloc(65536);
    for (;;) {
        uint64_t b = rnd(&seed) % blocks, n = 1 + rnd(&seed) % 16;
        if (b + n > blocks)
            n = blocks - b;
        seq++;
        for (size_t i = 0; i < n * 512; i++)
            buf[i] = seq;
        if (block_pwrite(bs, b * 4096, buf, n * 4096, &e) < 0)
            return die(&e);
        fprintf(lf, "w %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", seq, b, n);
        if (seq % 8 == 0) {
            if (block_flush(bs, &e) < 0)
                return die(&e);
            fprintf(lf, "f %" PRIu64 "\n", seq);
        }
        fflush(lf);
    }
}

static int cmd_verify(const char *img, const char *log)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    if (open_img(&bs, img, true, &e) < 0)
        return die(&e);
    uint64_t blocks = bs->size / 4096;
    cleanup_free uint64_t *owner = calloc(blocks ? blocks : 1, 8);
    cleanup_free uint64_t *flushed = calloc(blocks ? blocks : 1, 8);
    if (!owner || !flushed) {
        block_close(bs);
        fprintf(stderr, "qcow2_tool: out of memory for %" PRIu64 " blocks\n", blocks);
        return 1;
    }
    FILE *lf = fopen(log, "r");
    char line[128];
    while (lf && fgets(line, sizeof(line), lf)) {
        uint64_t seq, b, n;
        if (sscanf(line, "w %" SCNu64 " %" SCNu64 " %" SCNu64, &seq, &b, &n) == 3)
            for (uint64_t i = b; i < b + n && i < blocks; i++)
                owner[i] = seq;
        else if (line[0] == 'f')
            memcpy(flushed, owner, blocks * 8);
    }
    if (lf)
        fclose(lf);
    uint64_t buf[512], bad = 0;
    for (uint64_t i = 0; i < blocks; i++) {
        if (!flushed[i])
            continue;
        if (block_pread(bs, i * 4096, buf, 4096, &e) < 0)
            return die(&e);
        /* a later unflushed write may have landed too: accept any sequence >= the flushed one
         * that was logged for this block, but never older data */
        if (buf[0] < flushed[i] || buf[0] != buf[511]) {
            fprintf(stderr, "block %" PRIu64 ": seq %" PRIu64 ", expected >= %" PRIu64 "\n", i,
                    buf[0], flushed[i]);
            bad++;
        }
    }
    block_close(bs);
    printf("verified, %" PRIu64 " bad blocks\n", bad);
    return bad ? 3 : 0;
}

/* Random 4 KiB writes (or reads) at queue depth 1; prints IOPS. */
static int cmd_bench(const char *img, const char *mode, uint64_t count)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    bool rd = !strcmp(mode, "read");
    if (open_img(&bs, img, rd, &e) < 0)
        return die(&e);
    static uint8_t buf[4096];
    memset(buf, 0x3c, sizeof(buf));
    uint64_t seed = 12345, blocks = bs->size / 4096;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t off = (rnd(&seed) % blocks) * 4096;
        int r = rd ? block_pread(bs, off, buf, 4096, &e) : block_pwrite(bs, off, buf, 4096, &e);
        if (r < 0)
            return die(&e);
    }
    if (!rd && block_flush(bs, &e) < 0)
        return die(&e);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("%s: %.0f IOPS (%" PRIu64 " ops in %.2f s)\n", mode, (double)count / s, count, s);
    block_close(bs);
    return 0;
}

/* Opens any file as qcow2 (read-only, no backing), reads a few places and checks it: exit 0 if
 * it was served, 1 if it was refused with a message; anything else (a signal) is a bug. */
static int cmd_open_read(const char *img)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    struct block_open_opts o = {.format = "qcow2", .read_only = true, .no_backing = true};
    if (block_open(&bs, img, &o, &e) < 0)
        return die(&e);
    static uint8_t buf[1 << 16];
    int bad = 0;
    for (uint64_t i = 0; i < 16 && bs->size; i++) {
        uint64_t off = (i * 0x9e3779b97f4a7c15ull) % bs->size, pnum, host;
        size_t len = bs->size - off < sizeof(buf) ? (size_t)(bs->size - off) : sizeof(buf);
        bad |= block_pread(bs, off, buf, len, &e) < 0;
        bad |= block_status(bs, off, len, &pnum, &host, &e) < 0;
    }
    struct qcow2_check_result r = {0};
    bad |= qcow2_check(bs, 0, &r, &e) < 0;
    block_close(bs);
    return bad ? die(&e) : 0;
}

/* Queue depth 32 on the threads engine: 32 lanes (block index mod 32) so that concurrent
 * requests never overlap but often share a cluster (allocation races); then every block must
 * read back the last sequence number written to it. */
struct stress_slot {
    struct block_req req;
    struct iovec iov;
    uint64_t buf[512];
    uint64_t block, seq;
    uint64_t *owner;
    int ret;
    bool busy;
};

static void stress_done(struct block_req *req, int ret)
{
    struct stress_slot *sl = req->opaque;
    sl->owner[sl->block] = sl->seq;
    sl->ret = ret;
    sl->busy = false;
}

static int cmd_aio_stress(const char *img, uint64_t count)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    struct block_open_opts o = {.aio = BLOCK_AIO_THREADS, .aio_threads = 8};
    if (block_open(&bs, img, &o, &e) < 0)
        return die(&e);
    uint64_t blocks = bs->size / 4096 / 32 * 32, seed = 99, seq = 0;
    uint64_t *owner = calloc(blocks, 8);
    static struct stress_slot sl[32];
    for (uint64_t done = 0; done < count;) {
        for (unsigned i = 0; i < 32; i++) {
            if (sl[i].busy)
                continue;
            if (sl[i].ret < 0)
                return fprintf(stderr, "aio write failed: %d\n", sl[i].ret), 1;
            sl[i].block = (rnd(&seed) % (blocks / 32)) * 32 + i;
            sl[i].seq = ++seq;
            for (int k = 0; k < 512; k++)
                sl[i].buf[k] = seq;
            sl[i].iov = (struct iovec){sl[i].buf, 4096};
            sl[i].owner = owner;
            sl[i].busy = true;
            sl[i].req = (struct block_req){.op = BLOCK_OP_WRITE,
                                           .offset = sl[i].block * 4096,
                                           .iov = &sl[i].iov,
                                           .iovcnt = 1,
                                           .done = stress_done,
                                           .opaque = &sl[i]};
            if (block_aio_submit(bs, &sl[i].req, &e) < 0)
                return die(&e);
            done++;
        }
        if (block_aio_poll(bs, 1, &e) < 0)
            return die(&e);
    }
    for (unsigned i = 0; i < 32; i++)
        while (sl[i].busy)
            if (block_aio_poll(bs, 1, &e) < 0)
                return die(&e);
    uint64_t buf[512], bad = 0;
    for (uint64_t b = 0; b < blocks; b++) {
        if (block_pread(bs, b * 4096, buf, 4096, &e) < 0)
            return die(&e);
        if (owner[b] && (buf[0] != owner[b] || buf[511] != owner[b]))
            bad++;
    }
    block_close(bs);
    printf("aio-stress: %" PRIu64 " writes, %" PRIu64 " bad blocks\n", count, bad);
    return bad ? 3 : 0;
}

/* Opens FILE writable (no backing) and writes, zeroes and discards a few ranges: exit 0 if that
 * worked, 1 if it was refused with a message (the fuzzer's write stage, for regressions). */
static int cmd_open_write(const char *img)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    struct block_open_opts o = {.format = "qcow2", .no_backing = true};
    if (block_open(&bs, img, &o, &e) < 0)
        return die(&e);
    static uint8_t buf[8192];
    memset(buf, 0xa5, sizeof(buf));
    int ret = 0;
    for (uint64_t i = 0; i < 8 && bs->size && ret == 0; i++) {
        uint64_t off = (i * 0x9e3779b97f4a7c15ull) % bs->size;
        size_t len = bs->size - off < sizeof(buf) ? (size_t)(bs->size - off) : sizeof(buf);
        ret = block_pwrite(bs, off, buf, len, &e);
        if (ret == 0)
            ret = block_write_zeroes(bs, off / 2, len, BLOCK_WZ_MAY_UNMAP, &e);
        if (ret == 0)
            ret = block_discard(bs, off / 3, len, &e);
    }
    if (ret == 0)
        ret = block_flush(bs, &e);
    block_close(bs);
    return ret < 0 ? die(&e) : 0;
}

static int cmd_create(int argc, char **argv)
{
    struct qcow2_create_opts o = {0};
    struct wisp_err e = {0};
    o.size = strtoull(argv[3], NULL, 0);
    o.cluster_size = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 0) : 0;
    o.version = argc > 5 ? atoi(argv[5]) : 3;
    o.backing_file = argc > 6 ? argv[6] : NULL;
    o.backing_format = argc > 7 ? argv[7] : NULL;
    const char *pre = getenv("QCOW2_PREALLOC");
    if (pre && !strcmp(pre, "metadata"))
        o.prealloc = QCOW2_PREALLOC_METADATA;
    const char *rb = getenv("QCOW2_REFCOUNT_BITS");
    if (rb)
        o.refcount_bits = (unsigned)atoi(rb);
    o.lazy_refcounts = getenv("QCOW2_LAZY") != NULL;
    o.extended_l2 = getenv("QCOW2_EXTL2") != NULL;
    return qcow2_create(argv[2], &o, &e) < 0 ? die(&e) : 0;
}

static int cmd_io(int argc, char **argv)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    if (open_img(&bs, argv[2], false, &e) < 0)
        return die(&e);
    uint64_t off = strtoull(argv[3], NULL, 0), len = strtoull(argv[4], NULL, 0);
    int r;
    if (!strcmp(argv[1], "write")) {
        uint8_t *buf = malloc(len);
        memset(buf, (int)strtol(argv[5], NULL, 0), len);
        r = block_pwrite(bs, off, buf, len, &e);
        free(buf);
    } else if (!strcmp(argv[1], "resize")) {
        r = block_truncate(bs, off, len != 0, &e);
    } else if (!strcmp(argv[1], "zero")) {
        r = block_write_zeroes(bs, off, len, argc > 5 ? BLOCK_WZ_MAY_UNMAP : 0, &e);
    } else {
        r = block_discard(bs, off, len, &e);
    }
    if (r == 0)
        r = block_flush(bs, &e);
    block_close(bs);
    return r < 0 ? die(&e) : 0;
}

static int cmd_snap(char **argv)
{
    struct wisp_err e = {0};
    struct block_dev *bs;
    if (open_img(&bs, argv[2], false, &e) < 0)
        return die(&e);
    int r = !strcmp(argv[3], "create")  ? qcow2_snapshot_create(bs, argv[4], &e)
            : !strcmp(argv[3], "apply") ? qcow2_snapshot_apply(bs, argv[4], &e)
                                        : qcow2_snapshot_delete(bs, argv[4], &e);
    block_close(bs);
    return r < 0 ? die(&e) : 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *c = argv[1];
    if (!strcmp(c, "create") && argc >= 4)
        return cmd_create(argc, argv);
    if (!strcmp(c, "to-raw") && argc == 4)
        return cmd_to_raw(argv[2], argv[3]);
    if (!strcmp(c, "from-raw") && argc >= 4)
        return cmd_from_raw(argv[2], argv[3], argc > 4);
    if ((!strcmp(c, "write") && argc == 6) ||
        ((!strcmp(c, "zero") || !strcmp(c, "discard") || !strcmp(c, "resize")) && argc >= 5))
        return cmd_io(argc, argv);
    if (!strcmp(c, "check"))
        return cmd_check(argv[2], argc > 3 ? argv[3] : NULL);
    if (!strcmp(c, "snap") && argc == 5)
        return cmd_snap(argv);
    if (!strcmp(c, "crash-writer") && argc == 5)
        return cmd_crash_writer(argv[2], argv[3], strtoull(argv[4], NULL, 0) | 1);
    if (!strcmp(c, "open-read") && argc == 3)
        return cmd_open_read(argv[2]);
    if (!strcmp(c, "aio-stress") && argc == 4)
        return cmd_aio_stress(argv[2], strtoull(argv[3], NULL, 0));
    if (!strcmp(c, "open-write") && argc == 3)
        return cmd_open_write(argv[2]);
    if (!strcmp(c, "bench") && argc == 5)
        return cmd_bench(argv[2], argv[3], strtoull(argv[4], NULL, 0));
    if (!strcmp(c, "verify") && argc == 4)
        return cmd_verify(argv[2], argv[3]);
    fprintf(stderr, "qcow2_tool: bad command line\n");
    return 2;
}
