/* virtio-blk at register level (virtio 1.2 §5.2) on a real raw image: well-formed reads,
 * writes, flushes and GET_ID checked against the file's bytes, then every malformed request
 * the device must fail with IOERR or UNSUPP (and leave the file alone) while the next request
 * works, and the one it cannot complete (no status byte) setting DEVICE_NEEDS_RESET. */
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "virtio_qtest.h"

#define DISK_BYTES (1u << 20)
#define SECTORS    (DISK_BYTES / 512)
#define QSIZE      16
#define WAIT_MS    5000
#define R          0
#define W          VRING_DESC_F_WRITE

struct fixture {
    char dir[64], image[96];
    struct qtest *qt;
    struct vqt_dev dev;
    struct vqt_queue q;
    uint64_t hdr, data, status; /* guest RAM for requests */
};

/* One buffer of a request chain. */
struct seg {
    uint64_t gpa;
    uint32_t len;
    uint16_t flags; /* R or W; NEXT is added */
};

static void cmocka_fail(const char *msg)
{
    fail_msg("%s", msg);
}

static uint8_t disk_byte(uint64_t off)
{
    return (uint8_t)(off * 131 + (off >> 9) * 7 + 1);
}

static void make_image(struct fixture *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/wisp-qtest-blk-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->image, sizeof(f->image), "%s/disk.raw", f->dir);
    uint8_t *buf = malloc(DISK_BYTES);
    assert_non_null(buf);
    for (uint64_t i = 0; i < DISK_BYTES; i++)
        buf[i] = disk_byte(i);
    int fd = open(f->image, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, DISK_BYTES), DISK_BYTES);
    close(fd);
    free(buf);
}

static void read_image(const struct fixture *f, uint64_t off, void *buf, size_t len)
{
    int fd = open(f->image, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
}

static void start(struct fixture *f, bool read_only)
{
    char drive[160];
    make_image(f);
    snprintf(drive, sizeof(drive), "path=%s,format=raw%s", f->image,
             read_only ? ",readonly=on" : "");
    f->qt = qtest_start(qtest_vmm(), "--drive", drive, "--debug", NULL);
    vqt_find(f->qt, "virtio-blk", 0, &f->dev);
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1 | (1ull << VIRTIO_BLK_F_FLUSH)));
    vqt_queue_setup(&f->dev, &f->q, 0, QSIZE);
    f->hdr = qtest_alloc(f->qt, 4096, 4096);
    f->data = qtest_alloc(f->qt, 65536, 4096);
    f->status = qtest_alloc(f->qt, 4096, 4096);
    vqt_driver_ok(&f->dev);
}

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    start(&f, false);
    *state = &f;
    return 0;
}

static int setup_read_only(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    start(&f, true);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    qtest_kill(f->qt);
    unlink(f->image);
    rmdir(f->dir);
    return 0;
}

static void put_hdr(struct fixture *f, uint32_t type, uint64_t sector)
{
    uint8_t h[16] = {0};
    memcpy(h, &type, 4); /* x86: little-endian */
    memcpy(h + 8, &sector, 8);
    qtest_memwrite(f->qt, f->hdr, h, sizeof(h));
}

/* Submits one chain of n buffers (descriptors 0..n-1) and returns the used length. */
static uint32_t submit(struct fixture *f, const struct seg *s, unsigned n)
{
    struct vqt_queue *q = &f->q;
    qtest_memset(f->qt, f->status, 1, 0xee); /* a status the device must overwrite */
    uint16_t base = (uint16_t)(q->avail_idx * 4 % QSIZE);
    for (unsigned i = 0; i < n; i++)
        vqt_desc(q, (uint16_t)(base + i), s[i].gpa, s[i].len,
                 (uint16_t)(s[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
                 (uint16_t)(base + i + 1));
    vqt_avail_push(q, base);
    vqt_kick(q);
    uint32_t id, len;
    assert_true(vqt_wait_used(q, &id, &len, WAIT_MS));
    assert_int_equal(id, base);
    return len;
}

static uint8_t status(struct fixture *f)
{
    uint8_t s;
    qtest_memread(f->qt, f->status, &s, 1);
    return s;
}

/* header, data, status: the usual three-buffer request */
static uint8_t request(struct fixture *f, uint32_t type, uint64_t sector, uint32_t len,
                       uint16_t data_flags, uint32_t *used)
{
    put_hdr(f, type, sector);
    struct seg s[3] = {{f->hdr, 16, R}, {f->data, len, data_flags}, {f->status, 1, W}};
    uint32_t u = len ? submit(f, s, 3) : submit(f, (struct seg[]){s[0], s[2]}, 2);
    if (used)
        *used = u;
    return status(f);
}

/* A read of the first 8 sectors returns the file's bytes: the device works. */
static void expect_read_works(struct fixture *f)
{
    uint32_t used;
    qtest_memset(f->qt, f->data, 4096, 0);
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 8, 4096, W, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 4097);
    uint8_t got[4096], want[4096];
    qtest_memread(f->qt, f->data, got, sizeof(got));
    read_image(f, 8 * 512, want, sizeof(want));
    assert_memory_equal(got, want, sizeof(got));
}

static void expect_file_intact(struct fixture *f)
{
    uint8_t *buf = malloc(DISK_BYTES);
    assert_non_null(buf);
    read_image(f, 0, buf, DISK_BYTES);
    for (uint64_t i = 0; i < DISK_BYTES; i++)
        if (buf[i] != disk_byte(i))
            fail_msg("the image changed at byte %llu", (unsigned long long)i);
    free(buf);
}

static void test_well_formed(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(qtest_readl(f->qt, f->dev.info.base + 0x100), SECTORS); /* capacity */
    expect_read_works(f);
    /* a write lands in the file, a read returns it */
    uint8_t pattern[1024];
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(0xa5 ^ i);
    qtest_memwrite(f->qt, f->data, pattern, sizeof(pattern));
    uint32_t used;
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 100, 1024, R, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 1);
    assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, R, NULL), VIRTIO_BLK_S_OK);
    uint8_t file[1024];
    read_image(f, 100 * 512, file, sizeof(file));
    assert_memory_equal(file, pattern, sizeof(pattern));
    /* the last sector of the disk is readable */
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, SECTORS - 1, 512, W, NULL), VIRTIO_BLK_S_OK);
    /* GET_ID without a serial: 20 NUL bytes */
    qtest_memset(f->qt, f->data, 20, 0xff);
    assert_int_equal(request(f, VIRTIO_BLK_T_GET_ID, 0, 20, W, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(qtest_readl(f->qt, f->data), 0);
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

/* Malformed requests with a status byte: each fails with the status below, nothing reaches
 * the file, the log names the reason (--debug), and the next request is served. */
struct bad_request {
    const char *why;
    uint8_t status;
    uint32_t type;
    uint64_t sector;
    uint32_t len;
    uint16_t data_flags;
    const void *data; /* written to the data buffer first, if not NULL */
};

static void run_bad_requests(struct fixture *f, const struct bad_request *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i].data)
            qtest_memwrite(f->qt, f->data, b[i].data, b[i].len);
        uint32_t used;
        uint8_t st = request(f, b[i].type, b[i].sector, b[i].len, b[i].data_flags, &used);
        if (st != b[i].status)
            fail_msg("'%s': status %u, expected %u", b[i].why, st, b[i].status);
        assert_int_equal(used, 1); /* only the status byte was written */
        if (!qtest_log_wait(f->qt, b[i].why, WAIT_MS))
            qtest_fail(f->qt, "wisp-vmm's log does not say '%s'", b[i].why);
        assert_int_equal(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        expect_read_works(f);
    }
    expect_file_intact(f);
}

static void test_malformed_requests(void **state)
{
    struct fixture *f = *state;
    static const uint8_t seg_too_long[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t seg_beyond[16] = {0x00, 0x08, 0, 0, 0, 0, 0, 0, 1};      /* 2048 */
    static const uint8_t seg_unmap[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1}; /* flags 1 */
    static const uint8_t seg_flags[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x80};
    const struct bad_request bad[] = {
        {"read request with device-readable data", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_IN, 0, 512, R,
         NULL},
        {"data length is not a multiple of 512 bytes", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_IN, 0, 513,
         W, NULL},
        {"request beyond the end of the disk", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_IN, SECTORS - 1,
         1024, W, NULL},
        {"request beyond the end of the disk", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_IN, SECTORS, 512, W,
         NULL},
        {"request beyond the end of the disk", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_OUT,
         0xffffffffffffffffull, 512, R, NULL},
        {"request beyond the end of the disk", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_OUT,
         0x8000000000000000ull, 512, R, NULL},
        {"write request with device-writable data", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_OUT, 0, 512, W,
         NULL},
        {"data length is not a multiple of 512 bytes", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_OUT, 0, 100,
         R, NULL},
        {"GET_ID without 20 device-writable bytes", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_GET_ID, 0, 8,
         W, NULL},
        {"unsupported request type", VIRTIO_BLK_S_UNSUPP, 99, 0, 512, W, NULL},
        {"segment data is not a whole number of segments", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_DISCARD,
         0, 24, R, NULL},
        {"more segments than the device takes", VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, 0,
         17 * 16, R, NULL},
        {"segment with an unsupported flag", VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, 0, 16, R,
         seg_unmap},
        {"segment with an unsupported flag", VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16,
         R, seg_flags},
        {"segment longer than the sector limit", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_WRITE_ZEROES, 0,
         16, R, seg_too_long},
        {"segment beyond the end of the disk", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_DISCARD, 0, 16, R,
         seg_beyond},
    };
    qtest_memset(f->qt, f->data, 17 * 16, 0);
    run_bad_requests(f, bad, sizeof(bad) / sizeof(bad[0]));
    /* a header shorter than 16 bytes, in one buffer or two */
    struct seg shorth[2] = {{f->hdr, 8, R}, {f->status, 1, W}};
    assert_int_equal(submit(f, shorth, 2), 1);
    assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
    qtest_expect_log(f->qt, "request header shorter than 16 bytes", WAIT_MS);
    expect_read_works(f);
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
    expect_file_intact(f);
}

/* A read-only drive refuses every kind of write with IOERR and the file stays as it was. */
static void test_read_only(void **state)
{
    struct fixture *f = *state;
    static const uint8_t seg[16] = {0, 0, 0, 0, 0, 0, 0, 0, 8};
    assert_true(vqt_device_features(&f->dev) & (1ull << VIRTIO_BLK_F_RO));
    const struct bad_request bad[] = {
        {"write to a read-only drive", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_OUT, 0, 4096, R, NULL},
        {"write to a read-only drive", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_DISCARD, 0, 16, R, seg},
        {"write to a read-only drive", VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, R,
         seg},
    };
    qtest_memset(f->qt, f->data, 4096, 0x77);
    run_bad_requests(f, bad, sizeof(bad) / sizeof(bad[0]));
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

/* A chain without a device-writable byte cannot be completed: DEVICE_NEEDS_RESET with a config
 * interrupt; after a reset the device serves requests again. */
static void test_no_status_byte(void **state)
{
    struct fixture *f = *state;
    expect_read_works(f);
    (void)qtest_irq_wait(f->qt, f->dev.info.gsi, 0);
    put_hdr(f, VIRTIO_BLK_T_OUT, 0);
    vqt_desc(&f->q, 0, f->hdr, 16, VRING_DESC_F_NEXT, 1);
    vqt_desc(&f->q, 1, f->data, 512, 0, 0);
    vqt_avail_push(&f->q, 0);
    vqt_kick(&f->q);
    assert_true(qtest_irq_wait(f->qt, f->dev.info.gsi, WAIT_MS));
    assert_true(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET);
    qtest_expect_log(f->qt, "request without a device-writable status byte", WAIT_MS);
    assert_true(vqt_reset(&f->dev));
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    vqt_queue_setup(&f->dev, &f->q, 0, QSIZE);
    vqt_driver_ok(&f->dev);
    expect_read_works(f);
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
    expect_file_intact(f);
}

/* A malformed ring on a drive (a loop) sets DEVICE_NEEDS_RESET the same way as on rng. */
static void test_ring_loop(void **state)
{
    struct fixture *f = *state;
    put_hdr(f, VIRTIO_BLK_T_OUT, 0);
    vqt_desc(&f->q, 0, f->hdr, 16, VRING_DESC_F_NEXT, 1);
    vqt_desc(&f->q, 1, f->data, 512, VRING_DESC_F_NEXT, 2);
    vqt_desc(&f->q, 2, f->data + 512, 512, VRING_DESC_F_NEXT, 1); /* back to 1 */
    vqt_avail_push(&f->q, 0);
    vqt_kick(&f->q);
    assert_true(qtest_irq_wait(f->qt, f->dev.info.gsi, WAIT_MS));
    assert_true(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET);
    qtest_expect_log(f->qt, "chain longer than the queue", WAIT_MS);
    assert_true(vqt_reset(&f->dev));
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
    expect_file_intact(f);
}

int main(void)
{
    qtest_set_fail_handler(cmocka_fail);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_well_formed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only, setup_read_only, teardown),
        cmocka_unit_test_setup_teardown(test_no_status_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_loop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
