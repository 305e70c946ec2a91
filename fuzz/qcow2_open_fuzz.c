/* libFuzzer target: open an arbitrary byte string as a qcow2 image (read-only, no backing
 * file), read from it and check it; then, chosen by the input's last 16 bytes, one of the write
 * stages on a writable open: guest writes/zeroes/discards, snapshot create/apply/delete, resize,
 * rebase (the image gets a backing file and the data that differs), commit (the image is the
 * base a fresh overlay is committed into), or repair (qcow2_check -r all on a repair open).
 * The driver must refuse or serve every input without crashing, hanging or touching memory it
 * should not; and a repair that reports success must leave an image that opens normally and
 * checks clean (abort() otherwise: a finding). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[64], top_path[80], raw_path[80];

static void remove_tmp(void)
{
    unlink(path);
    unlink(top_path);
    unlink(raw_path);
}

static const char *tmp_dir(void)
{
    return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

static struct block_dev *open_image(const char *p, bool ro, bool repair)
{
    struct block_open_opts o = {
        .format = "qcow2", .read_only = ro, .no_backing = true, .repair = repair};
    struct block_dev *bs = NULL;
    struct wisp_err err = {0};
    return block_open(&bs, p, &o, &err) < 0 ? NULL : bs;
}

static void read_stage(struct block_dev *bs, uint64_t seed)
{
    static uint8_t buf[1 << 16];
    struct wisp_err err = {0};
    for (int i = 0; i < 8 && bs->size; i++) {
        uint64_t off = (seed * (2654435761u + (uint64_t)i * 40503u)) % bs->size;
        size_t len = (size_t)(1 + (seed >> (i * 4)) % sizeof(buf));
        if (len > bs->size - off)
            len = (size_t)(bs->size - off);
        block_pread(bs, off, buf, len, &err);
        uint64_t pnum, host;
        block_status(bs, off, len, &pnum, &host, &err);
    }
    struct qcow2_check_result r = {0};
    qcow2_check(bs, 0, &r, &err);
}

static void guest_writes(struct block_dev *bs, uint64_t seed)
{
    static uint8_t buf[8192];
    struct wisp_err err = {0};
    memset(buf, 0xa5, sizeof(buf));
    for (int i = 0; i < 4 && bs->size; i++) {
        uint64_t off = (seed * (40503u + (uint64_t)i * 2654435761u)) % bs->size;
        size_t len = (size_t)(1 + (seed >> (i * 5)) % sizeof(buf));
        if (len > bs->size - off)
            len = (size_t)(bs->size - off);
        if (block_pwrite(bs, off, buf, len, &err) < 0)
            break;
        block_write_zeroes(bs, off / 2, len * 4 < bs->size - off / 2 ? len * 4 : 0,
                           BLOCK_WZ_MAY_UNMAP, &err);
        block_discard(bs, off / 3, len, &err);
    }
}

static void snapshot_stage(struct block_dev *bs, uint64_t seed)
{
    struct wisp_err err = {0};
    qcow2_snapshot_create(bs, "fuzz", &err);
    guest_writes(bs, seed);
    if (seed & 0x100)
        qcow2_snapshot_apply(bs, "fuzz", &err);
    qcow2_snapshot_delete(bs, (seed & 0x200) ? "fuzz" : "1", &err);
}

/* wisp-img rebase's copy: the image gets a raw backing file; where the image is unallocated
 * and the backing data differs from zeroes, the zeroes are written into the image first. */
static void rebase_stage(struct block_dev *bs)
{
    struct wisp_err err = {0};
    static uint8_t zero[4096];
    for (uint64_t p = 0; p < bs->size && p < (4u << 20);) {
        uint64_t pnum = 0, host;
        int st = block_status(bs, p, bs->size - p, &pnum, &host, &err);
        if (st < 0 || !pnum)
            return;
        if (!(st & BLOCK_STATUS_ALLOCATED)) {
            size_t n = pnum < sizeof(zero) ? (size_t)pnum : sizeof(zero);
            if (block_pwrite(bs, p, zero, n, &err) < 0)
                return;
        }
        p += pnum;
    }
    qcow2_set_backing(bs, raw_path, "raw", &err);
}

/* wisp-img commit's copy: a fresh overlay over the image gets some data, which is then copied
 * into the image (opened writable as the base). */
static void commit_stage(struct block_dev *base, uint64_t seed)
{
    struct wisp_err err = {0};
    struct qcow2_create_opts q = {
        .size = base->size, .cluster_size = 4096, .backing_file = path, .backing_format = "qcow2"};
    if (!base->size || base->size > (1ull << 40) || qcow2_create(top_path, &q, &err) < 0)
        return;
    struct block_open_opts o = {.format = "qcow2"};
    struct block_dev *top = NULL;
    if (block_open(&top, top_path, &o, &err) < 0)
        return;
    static uint8_t buf[8192];
    memset(buf, 0x3c, sizeof(buf));
    for (int i = 0; i < 3; i++) {
        uint64_t off = (seed * (977u + (uint64_t)i * 7919u)) % top->size;
        size_t len = top->size - off < sizeof(buf) ? (size_t)(top->size - off) : sizeof(buf);
        block_pwrite(top, off, buf, len, &err);
    }
    for (uint64_t p = 0; p < top->size && p < (4u << 20);) {
        uint64_t pnum = 0, host, n;
        int st = block_status(top, p, top->size - p, &pnum, &host, &err);
        if (st < 0 || !pnum)
            break;
        n = pnum < sizeof(buf) ? pnum : sizeof(buf);
        if ((st & BLOCK_STATUS_ALLOCATED) &&
            (block_pread(top, p, buf, n, &err) < 0 || block_pwrite(base, p, buf, n, &err) < 0))
            break;
        p += n;
    }
    block_flush(base, &err);
    block_close(top);
    unlink(top_path);
}

/* check -r all; when it reports success the image must open normally and check clean. */
static void repair_stage(void)
{
    struct block_dev *bs = open_image(path, false, true);
    if (!bs)
        return;
    struct qcow2_check_result r = {0};
    struct wisp_err err = {0};
    int ret = qcow2_check(bs, QCOW2_FIX_ALL, &r, &err);
    block_close(bs);
    if (ret < 0 || r.corruptions || r.check_errors)
        return;
    if (!(bs = open_image(path, true, false))) {
        fprintf(stderr, "repaired image does not open\n");
        abort();
    }
    struct qcow2_check_result again = {0};
    if (qcow2_check(bs, 0, &again, &err) < 0 || again.corruptions || again.leaks) {
        fprintf(stderr, "repaired image checks with %llu errors, %llu leaks: %s\n",
                (unsigned long long)again.corruptions, (unsigned long long)again.leaks, err.msg);
        abort();
    }
    block_close(bs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A real file (tmpfs when available): block_open resolves the path like any image's. */
    static int fd = -1;
    if (fd < 0) {
        snprintf(path, sizeof(path), "%s/qcow2-fuzz-XXXXXX", tmp_dir());
        fd = mkstemp(path);
        if (fd < 0)
            abort();
        snprintf(top_path, sizeof(top_path), "%s.top", path);
        snprintf(raw_path, sizeof(raw_path), "%s.raw", path);
        FILE *f = fopen(raw_path, "w");
        if (!f || ftruncate(fileno(f), 1 << 20) < 0)
            abort();
        fclose(f);
        atexit(remove_tmp);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    uint64_t seed = 0;
    if (size >= 16)
        memcpy(&seed, data + size - 16, 8);
    struct block_dev *bs = open_image(path, true, false);
    if (bs) {
        read_stage(bs, seed);
        block_close(bs);
    }
    unsigned stage = (unsigned)(seed >> 56) % 8;
    if (stage == 7) {
        repair_stage();
        return 0;
    }
    if ((seed & 3) != 0 || !(bs = open_image(path, false, false)))
        return 0;
    switch (stage) {
    case 0:
    case 1:
    case 2:
        guest_writes(bs, seed);
        break;
    case 3:
        snapshot_stage(bs, seed);
        break;
    case 4: {
        struct wisp_err err = {0};
        block_truncate(bs, bs->size + (1u << 20), false, &err);
        guest_writes(bs, seed);
        break;
    }
    case 5:
        rebase_stage(bs);
        break;
    case 6:
        commit_stage(bs, seed);
        break;
    }
    block_close(bs);
    return 0;
}
