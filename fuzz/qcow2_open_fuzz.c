/* libFuzzer target: open an arbitrary byte string as a qcow2 image (read-only, no backing
 * file), read from it and check it; for a quarter of the inputs also open it writable and write,
 * zero and discard. The driver must refuse or serve it without crashing, hanging or
 * touching memory it should not. The input's last 16 bytes (if any) choose the read offsets. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *tmp_path;

static void remove_tmp(void)
{
    unlink(tmp_path);
}

static void unlink_at_exit(char *path)
{
    tmp_path = path;
    atexit(remove_tmp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A real file (tmpfs when available): block_open resolves the path like any image's. */
    static char path[64];
    static int fd = -1;
    if (fd < 0) {
        snprintf(path, sizeof(path), "%s/qcow2-fuzz-XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        fd = mkstemp(path);
        if (fd < 0)
            abort();
        unlink_at_exit(path);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();

    struct block_open_opts o = {.format = "qcow2", .read_only = true, .no_backing = true};
    struct block_dev *bs = NULL;
    struct wisp_err err = {0};
    if (block_open(&bs, path, &o, &err) < 0)
        return 0;
    static uint8_t buf[1 << 16];
    uint64_t seed = 0;
    if (size >= 16)
        memcpy(&seed, data + size - 16, 8);
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
    block_close(bs);

    /* The same image opened writable: writes, zeroes and discards must fail cleanly or work. */
    o.read_only = false;
    if ((seed & 3) != 0 || block_open(&bs, path, &o, &err) < 0)
        return 0;
    memset(buf, 0xa5, sizeof(buf));
    for (int i = 0; i < 4 && bs->size; i++) {
        uint64_t off = (seed * (40503u + (uint64_t)i * 2654435761u)) % bs->size;
        size_t len = (size_t)(1 + (seed >> (i * 5)) % 8192);
        if (len > bs->size - off)
            len = (size_t)(bs->size - off);
        if (block_pwrite(bs, off, buf, len, &err) < 0)
            break;
        block_write_zeroes(bs, off / 2, len * 4 < bs->size - off / 2 ? len * 4 : 0,
                           BLOCK_WZ_MAY_UNMAP, &err);
        block_discard(bs, off / 3, len, &err);
    }
    block_close(bs);
    return 0;
}
