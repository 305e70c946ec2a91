/* Races in the qcow2 driver and the async engines, made to happen on purpose:
 *  - a read (or an in-place write) held in flight by a block_file hook while the cluster it
 *    touches is discarded, freed and would be allocated again: the read must return the old
 *    data, the write must not land on the new owner (a new L2 table);
 *  - queue depth 32 on the pool and io_uring engines with reads, writes and discards on
 *    overlapping ranges of a small image (so that freed clusters are reused at once): every
 *    block a read returns holds zeroes or a version of that very block, never another's;
 *  - io_uring_submit failing (seccomp makes io_uring_enter fail): the request fails cleanly and
 *    block_close returns (it used to wait forever for a request the ring never had).
 * Usage: block_race_test DIR */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"

static int failures;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define CS (64u << 10)
static char dir[512];

static struct block_dev *open_qcow2(const char *path, uint64_t size, enum block_aio_engine e,
                                    bool create)
{
    struct wisp_err err = {0};
    struct qcow2_create_opts q = {.size = size, .cluster_size = CS};
    if (create && qcow2_create(path, &q, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    struct block_open_opts o = {.format = "qcow2", .aio = e};
    struct block_dev *bs = NULL;
    if (block_open(&bs, path, &o, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    return bs;
}

/* Holds the first read (or write) touching host offset `off` until `go`. */
struct hold {
    pthread_mutex_t m;
    pthread_cond_t c;
    uint64_t off;
    bool write, armed, held, go;
};

static void hold_hook(void *opaque, bool write, uint64_t off, uint64_t len)
{
    struct hold *h = opaque;
    pthread_mutex_lock(&h->m);
    if (h->armed && write == h->write && off <= h->off && h->off < off + len) {
        h->armed = false;
        h->held = true;
        pthread_cond_broadcast(&h->c);
        while (!h->go)
            pthread_cond_wait(&h->c, &h->m);
    }
    pthread_mutex_unlock(&h->m);
}

static void hold_wait(struct hold *h)
{
    pthread_mutex_lock(&h->m);
    while (!h->held)
        pthread_cond_wait(&h->c, &h->m);
    pthread_mutex_unlock(&h->m);
}

static void hold_release(struct hold *h)
{
    pthread_mutex_lock(&h->m);
    h->go = true;
    pthread_cond_broadcast(&h->c);
    pthread_mutex_unlock(&h->m);
}

struct io_thread {
    struct block_dev *bs;
    uint64_t off;
    uint8_t *buf;
    bool write;
    int ret;
};

static void *io_thread(void *opaque)
{
    struct io_thread *t = opaque;
    struct wisp_err err = {0};
    t->ret = t->write ? block_pwrite(t->bs, t->off, t->buf, CS, &err)
                      : block_pread(t->bs, t->off, t->buf, CS, &err);
    return NULL;
}

static uint64_t host_of(struct block_dev *bs, uint64_t guest)
{
    uint64_t pnum, host = 0;
    struct wisp_err err = {0};
    int st = block_status(bs, guest, CS, &pnum, &host, &err);
    return st >= 0 && (st & BLOCK_STATUS_OFFSET) ? host : 0;
}

/* A read of cluster A is in flight; A is discarded, its host cluster freed (flush applies the
 * free) and a write elsewhere allocates: it must not get A's host cluster while the read runs,
 * and the read returns A's data (as if it ran before the discard). */
static void test_read_vs_discard_realloc(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/race-read.qcow2", dir);
    struct block_dev *bs = open_qcow2(path, 64u << 20, BLOCK_AIO_SYNC, true);
    static uint8_t a[CS], b[CS], got[CS];
    memset(a, 0xaa, CS);
    memset(b, 0xbb, CS);
    struct wisp_err err = {0};
    CHECK(block_pwrite(bs, 0, a, CS, &err) == 0 && block_flush(bs, &err) == 0, "%s", err.msg);
    uint64_t ha = host_of(bs, 0);
    struct hold h = {
        .m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER, .off = ha, .armed = true};
    block_file_set_io_hook(bs->file, hold_hook, &h);
    struct io_thread t = {bs, 0, got, false, 0};
    pthread_t th;
    pthread_create(&th, NULL, io_thread, &t);
    hold_wait(&h);
    CHECK(block_discard(bs, 0, CS, &err) == 0 && block_flush(bs, &err) == 0, "%s", err.msg);
    CHECK(block_pwrite(bs, 1u << 20, b, CS, &err) == 0, "%s", err.msg);
    uint64_t hb = host_of(bs, 1u << 20);
    hold_release(&h);
    pthread_join(th, NULL);
    CHECK(t.ret == 0, "read failed");
    CHECK(hb != ha, "the cluster being read (host 0x%llx) was allocated again meanwhile",
          (unsigned long long)ha);
    CHECK(!memcmp(got, a, CS), "the read returned another cluster's data (0x%02x)", got[0]);
    block_file_set_io_hook(bs->file, NULL, NULL);
    block_close(bs);
    unlink(path);
}

/* An in-place write of cluster A is in flight; A is discarded and freed, and a write far away
 * needs a new L2 table: the table must not be put on A's host cluster, where the pending write
 * would overwrite it. */
static void test_write_vs_discard_realloc(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/race-write.qcow2", dir);
    struct block_dev *bs = open_qcow2(path, 2ull << 30, BLOCK_AIO_SYNC, true);
    static uint8_t a[CS], b[CS], got[CS];
    memset(a, 0x5a, CS);
    memset(b, 0xbb, CS);
    struct wisp_err err = {0};
    CHECK(block_pwrite(bs, 0, a, CS, &err) == 0 && block_flush(bs, &err) == 0, "%s", err.msg);
    uint64_t ha = host_of(bs, 0);
    struct hold h = {.m = PTHREAD_MUTEX_INITIALIZER,
                     .c = PTHREAD_COND_INITIALIZER,
                     .off = ha,
                     .write = true,
                     .armed = true};
    block_file_set_io_hook(bs->file, hold_hook, &h);
    struct io_thread t = {bs, 0, a, true, 0};
    pthread_t th;
    pthread_create(&th, NULL, io_thread, &t);
    hold_wait(&h);
    CHECK(block_discard(bs, 0, CS, &err) == 0 && block_flush(bs, &err) == 0, "%s", err.msg);
    uint64_t far = 1ull << 30; /* another L2 table (64 KiB clusters: 512 MiB per table) */
    CHECK(block_pwrite(bs, far, b, CS, &err) == 0 && block_flush(bs, &err) == 0, "%s", err.msg);
    hold_release(&h);
    pthread_join(th, NULL);
    block_file_set_io_hook(bs->file, NULL, NULL);
    CHECK(block_flush(bs, &err) == 0, "%s", err.msg);
    block_close(bs);
    bs = open_qcow2(path, 0, BLOCK_AIO_SYNC, false);
    memset(got, 0, CS);
    CHECK(block_pread(bs, far, got, CS, &err) == 0 && !memcmp(got, b, CS),
          "data behind the new L2 table is gone (%s)", err.msg);
    struct qcow2_check_result r = {0};
    CHECK(qcow2_check(bs, 0, &r, &err) == 0 && r.corruptions == 0,
          "%llu corruptions after the race", (unsigned long long)r.corruptions);
    block_close(bs);
    unlink(path);
}

/* Queue depth 32, random reads, writes and discards on overlapping ranges of a 4 MiB image. */
#define BLK     4096u
#define NBLK    1024u
#define QD      32
#define MAXBLKS 4

struct slot {
    struct block_req req;
    struct iovec iov;
    uint64_t *buf;
    uint64_t first, n;
    bool busy;
};

static uint64_t version[NBLK]; /* latest version submitted per block */
static int bad_reads;

/* A read racing a write or discard of the same block may see part of each (reads and writes are
 * not atomic against each other), so each word is checked: zero, or this block's stamp with a
 * version already written. Another block's stamp means a reused cluster was read. */
static bool block_ok(const uint64_t *w, uint64_t blk)
{
    for (unsigned i = 0; i < BLK / 8; i++)
        if (w[i] && (w[i] >> 32 != blk || (w[i] & 0xffffffffu) > version[blk]))
            return false;
    return true;
}

static void stress_done(struct block_req *req, int ret)
{
    struct slot *sl = req->opaque;
    if (ret < 0)
        bad_reads++;
    if (req->op == BLOCK_OP_READ)
        for (uint64_t k = 0; k < sl->n; k++)
            if (!block_ok(sl->buf + k * (BLK / 8), sl->first + k)) {
                if (bad_reads++ < 5)
                    fprintf(stderr, "read of block %llu returned block %llu version %llu\n",
                            (unsigned long long)(sl->first + k),
                            (unsigned long long)(sl->buf[k * (BLK / 8)] >> 32),
                            (unsigned long long)(sl->buf[k * (BLK / 8)] & 0xffffffffu));
            }
    sl->busy = false;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void start_op(struct block_dev *bs, struct slot *sl, uint64_t *seed)
{
    struct wisp_err err = {0};
    uint64_t r = rnd(seed) % 100;
    sl->n = 1 + rnd(seed) % MAXBLKS;
    sl->first = rnd(seed) % (NBLK - sl->n);
    sl->iov = (struct iovec){sl->buf, sl->n * BLK};
    sl->req = (struct block_req){.offset = sl->first * BLK,
                                 .len = sl->n * BLK,
                                 .iov = &sl->iov,
                                 .iovcnt = 1,
                                 .done = stress_done,
                                 .opaque = sl};
    if (r < 45) {
        sl->req.op = BLOCK_OP_READ;
    } else if (r < 85) {
        sl->req.op = BLOCK_OP_WRITE;
        for (uint64_t k = 0; k < sl->n; k++) {
            uint64_t v = ++version[sl->first + k];
            for (unsigned i = 0; i < BLK / 8; i++)
                sl->buf[k * (BLK / 8) + i] = (sl->first + k) << 32 | v;
        }
    } else if (r < 97) {
        sl->req.op = BLOCK_OP_DISCARD;
    } else {
        sl->req.op = BLOCK_OP_FLUSH;
    }
    sl->busy = true;
    CHECK(block_aio_submit(bs, &sl->req, &err) == 0, "%s", err.msg);
}

static void test_qd32_overlapping(enum block_aio_engine e)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/race-qd32.qcow2", dir);
    struct wisp_err err = {0};
    struct qcow2_create_opts q = {.size = NBLK * BLK, .cluster_size = BLK};
    if (qcow2_create(path, &q, &err) < 0)
        exit(2);
    struct block_open_opts o = {.format = "qcow2", .aio = e};
    struct block_dev *bs = NULL;
    if (block_open(&bs, path, &o, &err) < 0)
        exit(2);
    static struct slot sl[QD];
    memset(version, 0, sizeof(version));
    bad_reads = 0;
    uint64_t seed = 0x9e3779b97f4a7c15ull + (uint64_t)e;
    for (int i = 0; i < QD; i++)
        if (posix_memalign((void **)&sl[i].buf, 4096, MAXBLKS * BLK))
            exit(2);
    for (int done = 0; done < 20000;) {
        for (int i = 0; i < QD; i++)
            if (!sl[i].busy) {
                start_op(bs, &sl[i], &seed);
                done++;
            }
        CHECK(block_aio_poll(bs, 1, &err) >= 0, "%s", err.msg);
    }
    for (int i = 0; i < QD; i++)
        while (sl[i].busy)
            block_aio_poll(bs, 1, &err);
    CHECK(bad_reads == 0, "engine %s: %d reads returned another block's data or failed",
          block_aio_engine_name(e), bad_reads);
    struct qcow2_check_result r = {0};
    CHECK(qcow2_check(bs, 0, &r, &err) == 0 && r.corruptions == 0 && r.leaks == 0,
          "engine %s: %llu corruptions, %llu leaks", block_aio_engine_name(e),
          (unsigned long long)r.corruptions, (unsigned long long)r.leaks);
    block_close(bs);
    for (int i = 0; i < QD; i++)
        free(sl[i].buf);
    unlink(path);
}

static void noop_done(struct block_req *req, int ret)
{
    (void)req, (void)ret;
}

/* In a child with io_uring_enter made to fail: submit fails, block_close returns. */
static void submit_fails_child(const char *path)
{
    alarm(10); /* a close that waits forever for the failed request */
    struct block_open_opts o = {.format = "raw", .aio = BLOCK_AIO_IO_URING};
    struct block_dev *bs = NULL;
    struct wisp_err err = {0};
    if (block_open(&bs, path, &o, &err) < 0)
        _exit(2);
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
        _exit(3);
    static uint8_t buf[4096] __attribute__((aligned(4096)));
    struct iovec iov = {buf, sizeof(buf)};
    struct block_req req = {
        .op = BLOCK_OP_READ, .offset = 0, .iov = &iov, .iovcnt = 1, .done = noop_done};
    int r = block_aio_submit(bs, &req, &err);
    block_close(bs);
    _exit(r < 0 ? 0 : 4);
}

static void test_submit_failure(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/submit.raw", dir);
    FILE *f = fopen(path, "w");
    if (!f || ftruncate(fileno(f), 1 << 20) < 0)
        exit(2);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0)
        submit_fails_child(path);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "io_uring_submit failing: %s (status %d)",
          WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? "block_close hung" : "not refused cleanly",
          WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    unlink(path);
}

int main(int argc, char **argv)
{
    snprintf(dir, sizeof(dir), "%s/wisp-block-race.XXXXXX", argc > 1 ? argv[1] : "/var/tmp");
    if (!mkdtemp(dir)) {
        perror(dir);
        return 2;
    }
    test_read_vs_discard_realloc();
    test_write_vs_discard_realloc();
    test_qd32_overlapping(BLOCK_AIO_THREADS);
    test_qd32_overlapping(BLOCK_AIO_IO_URING);
    test_submit_failure();
    rmdir(dir);
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("block races: all passed\n");
    return 0;
}
