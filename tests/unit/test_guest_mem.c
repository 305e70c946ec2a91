/* Unit tests of src/kvm/guest_mem: the layout around the MMIO hole and the checked accessor
 * gpa_to_hva() at every edge a guest can reach (region ends, the hole, 64-bit overflow). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kvm/guest_mem.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static void test_layout_small_and_split(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_layout(&mem, 128 * MiB, NULL), 0);
    assert_int_equal(mem.nr_regions, 1);
    assert_true(guest_mem_low_end(&mem) == 128 * MiB);
    assert_int_equal(guest_mem_layout(&mem, 5 * GiB, NULL), 0);
    assert_int_equal(mem.nr_regions, 2);
    assert_true(mem.regions[0].size == GUEST_MMIO_HOLE_START);
    assert_true(mem.regions[1].gpa == GUEST_MMIO_HOLE_END);
    assert_true(mem.regions[1].size == 5 * GiB - GUEST_MMIO_HOLE_START);
    assert_true(mem.total == 5 * GiB);
    /* exactly the hole start: no second region */
    assert_int_equal(guest_mem_layout(&mem, GUEST_MMIO_HOLE_START, NULL), 0);
    assert_int_equal(mem.nr_regions, 1);
}

static void test_layout_rejects(void **state)
{
    struct guest_mem mem;
    struct wisp_err err = {0};
    assert_int_equal(guest_mem_layout(&mem, 0, &err), -EINVAL);
    assert_int_equal(guest_mem_layout(&mem, 4096 + 1, &err), -EINVAL);
    assert_int_equal(guest_mem_layout(&mem, GUEST_MEM_MAX_BYTES + 4096, &err), -ERANGE);
    assert_non_null(strstr(err.msg, "exceeds"));
}

static void test_gpa_to_hva_single_region(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 128 * MiB, NULL), 0);
    uint8_t *base = mem.regions[0].hva;
    assert_ptr_equal(gpa_to_hva(&mem, 0, 128 * MiB), base);
    assert_ptr_equal(gpa_to_hva(&mem, 128 * MiB - 1, 1), base + 128 * MiB - 1);
    assert_null(gpa_to_hva(&mem, 128 * MiB - 1, 2));
    assert_null(gpa_to_hva(&mem, 128 * MiB, 1));
    assert_null(gpa_to_hva(&mem, 0, 128 * MiB + 1));
    /* len 0 at the very end is valid (an empty range), beyond it is not */
    assert_ptr_equal(gpa_to_hva(&mem, 128 * MiB, 0), base + 128 * MiB);
    assert_null(gpa_to_hva(&mem, 128 * MiB + 1, 0));
    /* 64-bit overflow of gpa + len must not wrap into RAM */
    assert_null(gpa_to_hva(&mem, UINT64_MAX, 1));
    assert_null(gpa_to_hva(&mem, 1, UINT64_MAX));
    assert_null(gpa_to_hva(&mem, UINT64_MAX, UINT64_MAX));
    assert_null(gpa_to_hva(&mem, 0x1000, UINT64_MAX - 0xfff));
    assert_null(gpa_to_hva(&mem, UINT64_MAX - 0xfff, 0x1000));
    guest_mem_destroy(&mem);
    assert_null(gpa_to_hva(&mem, 0, 1)); /* destroyed: nothing is reachable */
}

static void test_gpa_to_hva_hole(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_create(&mem, 5 * GiB, NULL), 0); /* MAP_NORESERVE: no RSS */
    uint64_t hole = GUEST_MMIO_HOLE_START, high = GUEST_MMIO_HOLE_END;
    assert_non_null(gpa_to_hva(&mem, hole - 4, 4));
    assert_null(gpa_to_hva(&mem, hole - 4, 8));               /* runs into the hole */
    assert_null(gpa_to_hva(&mem, hole, 1));                   /* the hole itself */
    assert_null(gpa_to_hva(&mem, 0xfee00000, 4));             /* LAPIC page */
    assert_null(gpa_to_hva(&mem, hole - 1, high - hole + 2)); /* spans the hole */
    assert_ptr_equal(gpa_to_hva(&mem, high, 1), mem.regions[1].hva);
    uint64_t end = high + mem.regions[1].size;
    assert_non_null(gpa_to_hva(&mem, end - 8, 8));
    assert_null(gpa_to_hva(&mem, end - 8, 9));
    assert_null(gpa_to_hva(&mem, end, 1));
    /* copies go through the same check */
    uint64_t v = 0x1122334455667788ULL, r = 0;
    assert_int_equal(guest_mem_write(&mem, high + 0x1000, &v, sizeof(v)), 0);
    assert_int_equal(guest_mem_read(&mem, high + 0x1000, &r, sizeof(r)), 0);
    assert_true(r == v);
    assert_int_equal(guest_mem_write(&mem, hole - 4, &v, sizeof(v)), -EFAULT);
    assert_int_equal(guest_mem_read(&mem, UINT64_MAX - 3, &r, sizeof(r)), -EFAULT);
    guest_mem_destroy(&mem);
}

static void test_create_64g_unfaulted(void **state)
{
    struct guest_mem mem;
    struct wisp_err err = {0};
    /* 64 GiB must map on a host with less free memory: MAP_NORESERVE, nothing touched */
    assert_int_equal(guest_mem_create(&mem, 64 * GiB, &err), 0);
    assert_true(mem.total == 64 * GiB);
    assert_non_null(gpa_to_hva(&mem, 64 * GiB + GiB - 1, 1)); /* last byte: 1 GiB shifted */
    assert_null(gpa_to_hva(&mem, 65 * GiB, 1));
    guest_mem_destroy(&mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_small_and_split),   cmocka_unit_test(test_layout_rejects),
        cmocka_unit_test(test_gpa_to_hva_single_region), cmocka_unit_test(test_gpa_to_hva_hole),
        cmocka_unit_test(test_create_64g_unfaulted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
