/* Unit tests of the qcow2 driver's validation: every malformed image (built from qcow2_create
 * output, then poked) is refused with a message naming the image and the offset; a read-only or
 * refused image is never written; dirty images get repaired; refcount overflow is an error. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "block/block.h"
#include "block/qcow2.h"

/* Layout of a fresh 64 KiB-cluster image from qcow2_create: header, refcount table, refcount
 * block, L1 table, one cluster each. */
#define CS      65536ull
#define RT_OFF  (1 * CS)
#define RB_OFF  (2 * CS)
#define L1_OFF  (3 * CS)
#define IMG_END (4 * CS)

static char path[64];

static void make_image(const struct qcow2_create_opts *o)
{
    struct qcow2_create_opts def = {.size = 64ull << 20};
    struct wisp_err e = {0};
    assert_int_equal(qcow2_create(path, o ? o : &def, &e), 0);
}

static void poke(uint64_t off, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void poke64(uint64_t off, uint64_t v)
{
    v = htobe64(v);
    poke(off, &v, 8);
}

static void poke32(uint64_t off, uint32_t v)
{
    v = htobe32(v);
    poke(off, &v, 4);
}

static uint64_t peek64(uint64_t off)
{
    uint64_t v = 0;
    int fd = open(path, O_RDONLY);
    assert_int_equal(pread(fd, &v, 8, (off_t)off), 8);
    close(fd);
    return be64toh(v);
}

/* Opening must fail with a message containing each of the given substrings (and the path). */
static void expect_refused(bool ro, const char *a, const char *b)
{
    struct block_open_opts o = {.format = "qcow2", .read_only = ro};
    struct block_dev *bs = NULL;
    struct wisp_err e = {0};
    int ret = block_open(&bs, path, &o, &e);
    if (ret == 0)
        block_close(bs);
    assert_true(ret < 0);
    if (!strstr(e.msg, path) || (a && !strstr(e.msg, a)) || (b && !strstr(e.msg, b)))
        fail_msg("message '%s' lacks '%s'/'%s'", e.msg, a ? a : "", b ? b : "");
}

static struct block_dev *open_ok(bool ro)
{
    struct block_open_opts o = {.format = "qcow2", .read_only = ro};
    struct block_dev *bs = NULL;
    struct wisp_err e = {0};
    if (block_open(&bs, path, &o, &e) < 0)
        fail_msg("open: %s", e.msg);
    return bs;
}

static int setup(void **state)
{
    snprintf(path, sizeof(path), "/tmp/wisp-test-qcow2-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    unlink(path);
    return 0;
}

static void test_bad_magic(void **state)
{
    make_image(NULL);
    poke32(0, 0x12345678);
    expect_refused(true, "bad magic", "offset 0");
}

static void test_bad_version_and_cluster_bits(void **state)
{
    make_image(NULL);
    poke32(4, 4);
    expect_refused(true, "version 4", "offset 4");
    make_image(NULL);
    poke32(20, 22);
    expect_refused(true, "cluster_bits 22", "offset 20");
    make_image(NULL);
    poke32(20, 8);
    expect_refused(true, "cluster_bits 8", "offset 20");
}

static void test_unknown_incompatible_feature(void **state)
{
    make_image(NULL);
    poke64(72, 1ull << 40);
    expect_refused(true, "0x10000000000", "offset 72");
    make_image(NULL);
    poke64(72, 1ull << 2); /* external data file */
    expect_refused(true, "external data file", NULL);
}

static void test_l1_table_out_of_file_or_unaligned(void **state)
{
    make_image(NULL);
    poke64(40, 100 * CS);
    expect_refused(true, "L1 table at offset 0x640000", "outside the image file");
    make_image(NULL);
    poke64(40, L1_OFF + 512);
    expect_refused(true, "L1 table at offset 0x30200", "not aligned");
}

static void test_huge_l1_size_and_size(void **state)
{
    make_image(NULL);
    poke32(36, 0x10000000);
    expect_refused(true, "l1_size 268435456", "offset 36");
    make_image(NULL);
    poke64(24, 1ull << 61);
    expect_refused(true, "virtual size", "offset 24");
    make_image(NULL);
    poke64(24, 1ull << 40); /* l1_size 1 is too small for 1 TiB */
    expect_refused(true, "too small", "offset 36");
}

static void test_refcount_table_checks(void **state)
{
    make_image(NULL);
    poke64(48, L1_OFF); /* refcount table on top of the L1 table */
    expect_refused(true, "overlaps", "0x30000");
    make_image(NULL);
    poke32(56, 0);
    expect_refused(true, "refcount_table_clusters 0", "offset 56");
    make_image(NULL);
    poke64(RT_OFF, 50 * CS); /* refcount block beyond EOF */
    expect_refused(true, "refcount block 0 at offset 0x320000", "outside");
    make_image(NULL);
    poke64(RT_OFF + 8, L1_OFF); /* refcount block on the L1 table */
    expect_refused(true, "refcount block at offset 0x30000", "overlaps");
}

static void test_l2_table_checks(void **state)
{
    make_image(NULL);
    poke64(L1_OFF, (1ull << 63) | (40 * CS));
    expect_refused(true, "L2 table (L1 entry 0) at offset 0x280000", "outside");
    make_image(NULL);
    poke64(L1_OFF, (1ull << 63) | RT_OFF);
    expect_refused(true, "L2 table at offset 0x10000", "overlaps");
    make_image(NULL);
    poke64(L1_OFF, (1ull << 63) | RB_OFF | 0x100);
    expect_refused(true, "L1 entry 0 at offset 0x30000", "reserved bits");
}

static void test_snapshot_table_and_backing_checks(void **state)
{
    make_image(NULL);
    poke32(60, 1);
    poke64(64, 30 * CS);
    expect_refused(true, "snapshot table at offset 0x1e0000", "outside");
    make_image(NULL);
    poke64(8, CS - 4);
    poke32(16, 100);
    expect_refused(true, "backing file name at offset 0xfffc", "header cluster");
}

static void test_corrupt_bit_read_only_only(void **state)
{
    make_image(NULL);
    poke64(72, 1ull << 1);
    expect_refused(false, "marked corrupt", NULL);
    block_close(open_ok(true));
}

/* An invalid L2 entry is reported with its offset on read; a write to a data cluster that is
 * really metadata is refused. */
static void test_bad_l2_entries(void **state)
{
    make_image(NULL);
    struct block_dev *bs = open_ok(false);
    struct wisp_err e = {0};
    char buf[512] = {1};
    assert_int_equal(block_pwrite(bs, 0, buf, sizeof(buf), &e), 0);
    block_close(bs);
    uint64_t l2 = peek64(L1_OFF) & 0x00fffffffffffe00ull;
    poke64(l2, (1ull << 63) | IMG_END | 0x2); /* reserved bit 1 */
    bs = open_ok(true);
    assert_true(block_pread(bs, 0, buf, sizeof(buf), &e) < 0);
    assert_non_null(strstr(e.msg, "invalid L2 entry"));
    char want[32];
    snprintf(want, sizeof(want), "offset 0x%llx", (unsigned long long)l2);
    assert_non_null(strstr(e.msg, want));
    block_close(bs);
    poke64(l2, (1ull << 63) | L1_OFF); /* "data" cluster = the L1 table */
    bs = open_ok(false);
    assert_true(block_pwrite(bs, 0, buf, sizeof(buf), &e) < 0);
    assert_non_null(strstr(e.msg, "holds metadata"));
    block_close(bs);
}

static void test_read_only_never_written(void **state)
{
    make_image(NULL);
    poke64(72, 1ull << 0); /* dirty: a writable open would repair; read-only must not */
    struct stat a, b;
    assert_int_equal(stat(path, &a), 0);
    uint64_t before = peek64(72);
    struct block_dev *bs = open_ok(true);
    struct wisp_err e = {0};
    char buf[4096];
    assert_int_equal(block_pread(bs, 0, buf, sizeof(buf), &e), 0);
    assert_true(block_pwrite(bs, 0, buf, sizeof(buf), &e) < 0);
    block_close(bs);
    assert_int_equal(stat(path, &b), 0);
    assert_true(peek64(72) == before);
    assert_true(a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec);
}

/* Lazy refcounts: refcounts lost before a crash are rebuilt when a dirty image is opened. */
static void test_dirty_image_is_repaired(void **state)
{
    struct qcow2_create_opts o = {.size = 64ull << 20, .lazy_refcounts = true};
    make_image(&o);
    struct block_dev *bs = open_ok(false);
    struct wisp_err e = {0};
    static char buf[CS];
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(block_pwrite(bs, 0, buf, sizeof(buf), &e), 0);
    block_close(bs);
    poke64(RB_OFF, 0x0001000100010000ull); /* "crash": refcount of cluster 3 lost */
    poke64(72, 1);                         /* dirty bit */
    bs = open_ok(false);                   /* repairs */
    struct qcow2_check_result r = {0};
    assert_int_equal(qcow2_check(bs, 0, &r, &e), 0);
    assert_true(r.corruptions == 0 && r.leaks == 0);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(block_pread(bs, 0, buf, sizeof(buf), &e), 0);
    assert_int_equal(buf[CS - 1], 0x5a);
    block_close(bs);
    assert_true((peek64(72) & 1) == 0);
}

static void test_refcount_overflow_is_an_error(void **state)
{
    struct qcow2_create_opts o = {.size = 1 << 20, .refcount_bits = 1};
    make_image(&o);
    struct block_dev *bs = open_ok(false);
    struct wisp_err e = {0};
    char buf[512] = {7};
    assert_int_equal(block_pwrite(bs, 0, buf, sizeof(buf), &e), 0);
    assert_true(qcow2_snapshot_create(bs, "s1", &e) < 0); /* refcount 2 does not fit in 1 bit */
    assert_non_null(strstr(e.msg, "overflow"));
    block_close(bs);
}

static void test_check_reports_leaks_and_fixes_them(void **state)
{
    make_image(NULL);
    poke64(RB_OFF, 0x0001000100010001ull);
    poke64(RB_OFF + 8, 0x0001000000000000ull); /* cluster 4 (beyond use) has refcount 1 */
    struct block_dev *bs = open_ok(false);
    struct qcow2_check_result r = {0};
    struct wisp_err e = {0};
    assert_int_equal(qcow2_check(bs, 0, &r, &e), 0);
    assert_true(r.leaks == 1 && r.corruptions == 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(qcow2_check(bs, QCOW2_FIX_LEAKS, &r, &e), 0);
    assert_true(r.leaks_fixed == 1);
    memset(&r, 0, sizeof(r));
    assert_int_equal(qcow2_check(bs, 0, &r, &e), 0);
    assert_true(r.leaks == 0);
    block_close(bs);
}

/* A freed cluster that is reused after a reopen must not show its old bytes around a partial
 * write. */
static void test_reused_cluster_reads_zero_around_partial_write(void **state)
{
    make_image(NULL);
    struct block_dev *bs = open_ok(false);
    struct wisp_err e = {0};
    static uint8_t buf[CS];
    memset(buf, 0xee, sizeof(buf));
    assert_int_equal(block_pwrite(bs, 0, buf, CS, &e), 0);
    assert_int_equal(block_pwrite(bs, CS, buf, CS, &e), 0);
    assert_int_equal(block_discard(bs, 0, CS, &e), 0);
    block_close(bs);
    bs = open_ok(false);
    uint8_t small[512];
    memset(small, 0x11, sizeof(small));
    assert_int_equal(block_pwrite(bs, 8 * CS, small, sizeof(small), &e), 0);
    assert_int_equal(block_pread(bs, 8 * CS, buf, CS, &e), 0);
    assert_int_equal(buf[0], 0x11);
    for (size_t i = sizeof(small); i < CS; i++)
        if (buf[i])
            fail_msg("byte %zu of a new cluster reads 0x%x", i, buf[i]);
    block_close(bs);
}

/* Same numbers as `qemu-img measure -O qcow2 --size S [-o cluster_size=C]` (QEMU 7.2). */
static void test_measure_matches_qemu_img(void **state)
{
    static const struct {
        uint64_t size;
        uint32_t cs;
        uint64_t required, full;
    } cases[] = {
        {1ull << 30, 0, 393216, 1074135040},
        {10ull << 30, 4096, 26288128, 10763706368ull},
        {100ull << 20, 512, 2088960, 106946560},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qcow2_create_opts o = {.size = cases[i].size, .cluster_size = cases[i].cs};
        struct qcow2_measure_result r;
        struct wisp_err e = {0};
        assert_int_equal(qcow2_measure(&o, NULL, &r, &e), 0);
        assert_true(r.required == cases[i].required);
        assert_true(r.fully_allocated == cases[i].full);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_version_and_cluster_bits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_incompatible_feature, setup, teardown),
        cmocka_unit_test_setup_teardown(test_l1_table_out_of_file_or_unaligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_l1_size_and_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refcount_table_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_l2_table_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_table_and_backing_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_bit_read_only_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_l2_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_never_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dirty_image_is_repaired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refcount_overflow_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_reports_leaks_and_fixes_them, setup, teardown),
        cmocka_unit_test(test_measure_matches_qemu_img),
        cmocka_unit_test_setup_teardown(test_reused_cluster_reads_zero_around_partial_write, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
