/* Unit tests of src/virtio/net_vhost.c's ring validation (pure: fake host addresses, no
 * memory is touched) and of the /dev/vhost-net probe's refusals. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio/net_vhost.h"

/* Two regions as guest_mem lays them out around the MMIO hole; hva values are never
 * dereferenced. */
static const struct guest_mem_region regions[] = {
    {.gpa = 0, .size = 0x10000, .hva = (uint8_t *)(uintptr_t)0x7f0000000000ULL},
    {.gpa = 0x100000000ULL, .size = 0x10000, .hva = (uint8_t *)(uintptr_t)0x7f1000000000ULL},
};

static int check(uint32_t num, uint64_t desc, uint64_t avail, uint64_t used, int event_idx,
                 struct net_vhost_ring *out, struct wisp_err *err)
{
    return net_vhost_ring_check(regions, 2, num, desc, avail, used, event_idx, out, err);
}

static void test_good(void **state)
{
    (void)state;
    struct net_vhost_ring r;
    struct wisp_err err = {0};
    assert_int_equal(check(256, 0x1000, 0x2000, 0x3000, 1, &r, &err), 0);
    assert_true(r.desc_hva == 0x7f0000001000ULL);
    assert_true(r.avail_hva == 0x7f0000002000ULL);
    assert_true(r.used_hva == 0x7f0000003000ULL);
    /* in the second region, the used ring ending exactly at its end (4 + 8 * 256 + 2 bytes) */
    uint64_t used = 0x100000000ULL + 0x10000 - (4 + 8 * 256 + 2);
    used &= ~3ULL;
    assert_int_equal(check(256, 0x100000000ULL, 0x100001000ULL, used, 1, &r, &err), 0);
    assert_true(r.desc_hva == 0x7f1000000000ULL);
    /* the smallest queue; without EVENT_IDX the rings are 2 bytes shorter */
    assert_int_equal(check(1, 0, 0x10, 0x20, 0, &r, &err), 0);
    used = 0x10000 - (4 + 8 * 256);
    assert_int_equal(check(256, 0, 0x1000, used, 0, &r, &err), 0);
}

static void expect_einval(uint32_t num, uint64_t desc, uint64_t avail, uint64_t used,
                          const char *what)
{
    struct net_vhost_ring r;
    struct wisp_err err = {0};
    assert_int_equal(check(num, desc, avail, used, 1, &r, &err), -EINVAL);
    assert_non_null(strstr(err.msg, what));
}

static void test_hostile(void **state)
{
    (void)state;
    /* sizes */
    expect_einval(0, 0x1000, 0x2000, 0x3000, "queue size");
    expect_einval(3, 0x1000, 0x2000, 0x3000, "queue size");
    expect_einval(65536, 0x1000, 0x2000, 0x3000, "queue size");
    expect_einval(0x80000000U, 0x1000, 0x2000, 0x3000, "queue size");
    /* alignment */
    expect_einval(8, 0x1008, 0x2000, 0x3000, "descriptor table");
    expect_einval(8, 0x1000, 0x2001, 0x3000, "available ring");
    expect_einval(8, 0x1000, 0x2000, 0x3002, "used ring");
    /* outside RAM: in the hole, past the end, straddling a region's end by one byte */
    expect_einval(8, 0x80000000ULL, 0x2000, 0x3000, "descriptor table");
    expect_einval(8, 0x1000, 0x200000000ULL, 0x3000, "available ring");
    expect_einval(256, 0x10000 - 16 * 256 + 16, 0x2000, 0x3000, "descriptor table");
    expect_einval(256, 0x1000, 0x2000, 0x10000 - (4 + 8 * 256 + 2) + 4, "used ring");
    /* addresses near 2^64: gpa + len would wrap */
    expect_einval(256, 0xfffffffffffff000ULL, 0x2000, 0x3000, "descriptor table");
    expect_einval(256, 0x1000, 0x2000, 0xfffffffffffffffcULL, "used ring");
    /* a queue bigger than a region */
    expect_einval(32768, 0, 0x2000, 0x3000, "descriptor table");
}

static void test_open_missing(void **state)
{
    (void)state;
    uint64_t features = 0;
    struct wisp_err err = {0};
    assert_int_equal(net_vhost_open("/nonexistent/vhost-net", &features, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "/nonexistent/vhost-net"));
    /* not a vhost device: VHOST_SET_OWNER fails and the fd is not kept */
    assert_true(net_vhost_open("/dev/null", &features, &err) < 0);
    assert_non_null(strstr(err.msg, "VHOST_SET_OWNER"));
}

static void test_usable(void **state)
{
    (void)state;
    struct virtio_net_params p = {.tap = "t0", .vhost = VIRTIO_NET_VHOST_ON, .rx_bps = 1000};
    struct wisp_err err = {0};
    assert_int_equal(net_vhost_usable("--net", &p, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "rate limits"));
    p.rx_bps = 0;
    p.tx_ops = 10;
    assert_int_equal(net_vhost_usable("--net", &p, &err), -EINVAL);
    p.tx_ops = 0;
    /* without limits: refused either way (absent here, or the data path not built) */
    assert_true(net_vhost_usable("--net", &p, &err) < 0);
    assert_non_null(strstr(err.msg, NET_VHOST_DEV));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_open_missing),
        cmocka_unit_test(test_usable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
