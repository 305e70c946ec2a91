/* virtio-blk request parsing (src/virtio/blk_int.h) without a VM: chains built from host
 * buffers, every framing and limit check of virtio 1.2 §5.2.6. */
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio/blk_int.h"

#define CAPACITY 2048 /* sectors: 1 MiB */

static const struct vblk_limits limits = {
    .capacity = CAPACITY,
    .max_discard_sectors = 1024,
    .max_discard_seg = 4,
    .max_write_zeroes_sectors = 512,
    .max_write_zeroes_seg = 2,
};

/* A chain under construction: readable buffers first, then writable ones. */
struct chain {
    struct virtq_chain c;
    struct iovec iov[16];
    struct iovec data[16];
    struct vblk_request r;
    struct wisp_err err;
};

static void add(struct chain *ch, void *p, size_t len, bool writable)
{
    unsigned n = ch->c.nr_out + ch->c.nr_in;
    assert_true(n < 16);
    if (!writable)
        assert_int_equal(ch->c.nr_in, 0);
    ch->iov[n] = (struct iovec){.iov_base = p, .iov_len = len};
    ch->c.iov = ch->iov;
    if (writable) {
        ch->c.nr_in++;
        ch->c.in_len += len;
    } else {
        ch->c.nr_out++;
        ch->c.out_len += len;
    }
}

static struct virtio_blk_outhdr header(uint32_t type, uint64_t sector)
{
    return (struct virtio_blk_outhdr){.type = htole32(type), .sector = htole64(sector)};
}

static int parse(struct chain *ch, const struct vblk_limits *lim)
{
    return vblk_parse_request(&ch->c, lim, ch->data, &ch->r, &ch->err);
}

static void test_read(void **state)
{
    struct virtio_blk_outhdr h = header(VIRTIO_BLK_T_IN, 8);
    static uint8_t a[512], b[1024];
    uint8_t status;
    struct chain ch = {0};
    add(&ch, &h, sizeof(h), false);
    add(&ch, a, sizeof(a), true);
    add(&ch, b, sizeof(b), true);
    add(&ch, &status, 1, true);
    assert_int_equal(parse(&ch, &limits), VIRTIO_BLK_S_OK);
    assert_int_equal(ch.r.type, VIRTIO_BLK_T_IN);
    assert_int_equal(ch.r.sector, 8);
    assert_ptr_equal(ch.r.status, &status);
    assert_int_equal(ch.r.nr_data, 2);
    assert_int_equal(ch.r.data_len, 1536);
    assert_ptr_equal(ch.r.data[0].iov_base, a);
    assert_ptr_equal(ch.r.data[1].iov_base, b);
}

/* The status byte may end a data buffer, and the header may be split or share a buffer. */
static void test_framing(void **state)
{
    static uint8_t in[513], out[16 + 512];
    struct virtio_blk_outhdr h = header(VIRTIO_BLK_T_IN, 0);
    struct chain ch = {0};
    add(&ch, &h, 8, false);
    add(&ch, (uint8_t *)&h + 8, 8, false);
    add(&ch, in, sizeof(in), true);
    assert_int_equal(parse(&ch, &limits), VIRTIO_BLK_S_OK);
    assert_ptr_equal(ch.r.status, &in[512]);
    assert_int_equal(ch.r.nr_data, 1);
    assert_int_equal(ch.r.data[0].iov_len, 512);

    struct virtio_blk_outhdr w = header(VIRTIO_BLK_T_OUT, 2047);
    memcpy(out, &w, sizeof(w));
    uint8_t status;
    struct chain ch2 = {0};
    add(&ch2, out, sizeof(out), false);
    add(&ch2, &status, 1, true);
    /* the data array may be the chain's own iovecs */
    assert_int_equal(vblk_parse_request(&ch2.c, &limits, ch2.iov, &ch2.r, &ch2.err),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(ch2.r.nr_data, 1);
    assert_ptr_equal(ch2.r.data[0].iov_base, out + 16);
    assert_int_equal(ch2.r.data_len, 512);
    assert_ptr_equal(ch2.r.status, &status);
}

static void test_malformed_framing(void **state)
{
    struct virtio_blk_outhdr h = header(VIRTIO_BLK_T_IN, 0);
    static uint8_t data[512];
    uint8_t status;
    /* no device-writable byte: the request cannot be completed */
    struct chain ch = {0};
    add(&ch, &h, sizeof(h), false);
    add(&ch, data, sizeof(data), false);
    assert_int_equal(parse(&ch, &limits), -EINVAL);
    assert_null(ch.r.status);
    assert_non_null(strstr(ch.err.msg, "status byte"));
    /* a header shorter than 16 bytes fails the request */
    struct chain ch2 = {0};
    add(&ch2, &h, 8, false);
    add(&ch2, &status, 1, true);
    assert_int_equal(parse(&ch2, &limits), VIRTIO_BLK_S_IOERR);
    assert_ptr_equal(ch2.r.status, &status);
    /* a read whose data buffer is device-readable */
    struct chain ch3 = {0};
    add(&ch3, &h, sizeof(h), false);
    add(&ch3, data, sizeof(data), false);
    add(&ch3, &status, 1, true);
    assert_int_equal(parse(&ch3, &limits), VIRTIO_BLK_S_IOERR);
    /* a write whose data buffer is device-writable */
    struct virtio_blk_outhdr w = header(VIRTIO_BLK_T_OUT, 0);
    struct chain ch4 = {0};
    add(&ch4, &w, sizeof(w), false);
    add(&ch4, data, sizeof(data), true);
    add(&ch4, &status, 1, true);
    assert_int_equal(parse(&ch4, &limits), VIRTIO_BLK_S_IOERR);
}

/* One IN or OUT request of len bytes at sector; returns the status. */
static int rw(uint32_t type, uint64_t sector, size_t len, const struct vblk_limits *lim)
{
    static uint8_t data[4096];
    struct virtio_blk_outhdr h = header(type, sector);
    uint8_t status;
    struct chain ch = {0};
    add(&ch, &h, sizeof(h), false);
    if (len)
        add(&ch, data, len, type == VIRTIO_BLK_T_IN);
    add(&ch, &status, 1, true);
    return parse(&ch, lim);
}

static void test_bounds(void **state)
{
    assert_int_equal(rw(VIRTIO_BLK_T_IN, CAPACITY - 1, 512, &limits), VIRTIO_BLK_S_OK);
    assert_int_equal(rw(VIRTIO_BLK_T_IN, CAPACITY - 1, 1024, &limits), VIRTIO_BLK_S_IOERR);
    assert_int_equal(rw(VIRTIO_BLK_T_IN, CAPACITY, 512, &limits), VIRTIO_BLK_S_IOERR);
    assert_int_equal(rw(VIRTIO_BLK_T_IN, CAPACITY, 0, &limits), VIRTIO_BLK_S_OK);
    assert_int_equal(rw(VIRTIO_BLK_T_OUT, UINT64_MAX, 512, &limits), VIRTIO_BLK_S_IOERR);
    assert_int_equal(rw(VIRTIO_BLK_T_OUT, UINT64_MAX >> 9, 512, &limits), VIRTIO_BLK_S_IOERR);
    assert_int_equal(rw(VIRTIO_BLK_T_IN, 0, 100, &limits), VIRTIO_BLK_S_IOERR);
    assert_int_equal(rw(VIRTIO_BLK_T_OUT, 0, 4095, &limits), VIRTIO_BLK_S_IOERR);
    struct vblk_limits ro = limits;
    ro.read_only = true;
    assert_int_equal(rw(VIRTIO_BLK_T_OUT, 0, 512, &ro), VIRTIO_BLK_S_IOERR);
    assert_int_equal(rw(VIRTIO_BLK_T_IN, 0, 512, &ro), VIRTIO_BLK_S_OK);
    assert_int_equal(rw(VIRTIO_BLK_T_FLUSH, 0, 0, &ro), VIRTIO_BLK_S_OK);
    assert_int_equal(rw(77, 0, 0, &limits), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(rw(VIRTIO_BLK_T_IN | VIRTIO_BLK_T_BARRIER, 0, 512, &limits),
                     VIRTIO_BLK_S_UNSUPP);
}

static void test_get_id(void **state)
{
    struct virtio_blk_outhdr h = header(VIRTIO_BLK_T_GET_ID, 0);
    static uint8_t id[21];
    struct chain ch = {0};
    add(&ch, &h, sizeof(h), false);
    add(&ch, id, sizeof(id), true); /* 20 bytes and the status */
    assert_int_equal(parse(&ch, &limits), VIRTIO_BLK_S_OK);
    assert_int_equal(ch.r.data_len, 20);
    struct chain ch2 = {0};
    add(&ch2, &h, sizeof(h), false);
    add(&ch2, id, 20, true); /* 19 bytes and the status */
    assert_int_equal(parse(&ch2, &limits), VIRTIO_BLK_S_IOERR);
}

/* A discard / write-zeroes request of n segments, the segment data split at byte 5. */
static int segments(uint32_t type, const struct virtio_blk_discard_write_zeroes *s, size_t bytes,
                    const struct vblk_limits *lim, struct vblk_request *out)
{
    static uint8_t copy[1024];
    memcpy(copy, s, bytes);
    struct virtio_blk_outhdr h = header(type, 0);
    uint8_t status;
    struct chain ch = {0};
    add(&ch, &h, sizeof(h), false);
    if (bytes > 5) {
        add(&ch, copy, 5, false);
        add(&ch, copy + 5, bytes - 5, false);
    } else if (bytes) {
        add(&ch, copy, bytes, false);
    }
    add(&ch, &status, 1, true);
    int r = parse(&ch, lim);
    if (out)
        *out = ch.r;
    return r;
}

static struct virtio_blk_discard_write_zeroes seg(uint64_t sector, uint32_t n, uint32_t flags)
{
    return (struct virtio_blk_discard_write_zeroes){
        .sector = htole64(sector), .num_sectors = htole32(n), .flags = htole32(flags)};
}

static void test_discard_write_zeroes(void **state)
{
    const uint32_t D = VIRTIO_BLK_T_DISCARD, Z = VIRTIO_BLK_T_WRITE_ZEROES;
    const uint32_t UNMAP = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
    struct virtio_blk_discard_write_zeroes s[8];
    struct vblk_request r;
    s[0] = seg(10, 100, 0);
    s[1] = seg(2000, 48, 0);
    assert_int_equal(segments(D, s, 2 * sizeof(s[0]), &limits, &r), VIRTIO_BLK_S_OK);
    assert_int_equal(r.nr_segments, 2);
    assert_int_equal(r.segments[1].sector, 2000);
    assert_int_equal(r.segments[1].num_sectors, 48);
    s[0] = seg(0, 8, UNMAP); /* §5.2.6.2: UNMAP on a discard */
    assert_int_equal(segments(D, s, sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(segments(Z, s, sizeof(s[0]), &limits, &r), VIRTIO_BLK_S_OK);
    assert_int_equal(r.segments[0].flags, UNMAP);
    s[0] = seg(0, 8, 2); /* an unknown flag */
    assert_int_equal(segments(Z, s, sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_UNSUPP);
    for (int i = 0; i < 5; i++)
        s[i] = seg((uint64_t)i * 8, 8, 0);
    assert_int_equal(segments(D, s, 4 * sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(segments(D, s, 5 * sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(segments(Z, s, 3 * sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(segments(D, s, 24, &limits, NULL), VIRTIO_BLK_S_IOERR); /* 1.5 segments */
    assert_int_equal(segments(D, s, 0, &limits, NULL), VIRTIO_BLK_S_IOERR);
    s[0] = seg(0, 1025, 0); /* over max_discard_sectors */
    assert_int_equal(segments(D, s, sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_IOERR);
    s[0] = seg(0, 513, 0); /* over max_write_zeroes_sectors */
    assert_int_equal(segments(Z, s, sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_IOERR);
    s[0] = seg(CAPACITY - 4, 8, 0);
    assert_int_equal(segments(D, s, sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_IOERR);
    s[0] = seg(UINT64_MAX - 2, 8, 0);
    assert_int_equal(segments(Z, s, sizeof(s[0]), &limits, NULL), VIRTIO_BLK_S_IOERR);
    struct vblk_limits ro = limits;
    ro.read_only = true;
    s[0] = seg(0, 8, 0);
    assert_int_equal(segments(D, s, sizeof(s[0]), &ro, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(segments(Z, s, sizeof(s[0]), &ro, NULL), VIRTIO_BLK_S_IOERR);
}

static void test_iov_copy(void **state)
{
    char a[3] = "abc", b[4] = "defg", out[8] = {0};
    struct iovec v[2] = {{a, 3}, {b, 4}};
    assert_int_equal(vblk_iov_to_buf(v, 2, 2, out, 4), 4);
    assert_memory_equal(out, "cdef", 4);
    assert_int_equal(vblk_iov_to_buf(v, 2, 6, out, 4), 1);
    assert_int_equal(vblk_iov_from_buf(v, 2, "0123456789", 10), 7);
    assert_memory_equal(a, "012", 3);
    assert_memory_equal(b, "3456", 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_malformed_framing),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_get_id),
        cmocka_unit_test(test_discard_write_zeroes),
        cmocka_unit_test(test_iov_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
