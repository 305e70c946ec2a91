/* Unit tests of src/bus: overlap refusal, lookup, dispatch with device-relative offsets. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus/bus.h"

struct recorder {
    uint64_t last_offset;
    unsigned last_size;
    uint32_t last_value;
    int writes, reads;
};

static void rec_in(void *opaque, uint64_t offset, void *data, unsigned size)
{
    struct recorder *r = opaque;
    r->reads++;
    r->last_offset = offset;
    r->last_size = size;
    memset(data, 0x5a, size);
}

static void rec_out(void *opaque, uint64_t offset, const void *data, unsigned size)
{
    struct recorder *r = opaque;
    r->writes++;
    r->last_offset = offset;
    r->last_size = size;
    r->last_value = 0;
    memcpy(&r->last_value, data, size < 4 ? size : 4);
}

static const struct bus_ops rec_ops = {.read = rec_in, .write = rec_out};

static void test_bus_refuses_overlaps(void **state)
{
    struct bus bus;
    struct wisp_err err = {0};
    struct recorder a = {0}, b = {0};
    bus_init(&bus, BUS_PIO);
    assert_int_equal(bus_register(&bus, 0x3f8, 8, "a", &rec_ops, &a, &err), 0);
    /* overlaps at either end, inside, around */
    assert_int_equal(bus_register(&bus, 0x3f0, 9, "b", &rec_ops, &b, &err), -EEXIST);
    assert_non_null(strstr(err.msg, "overlaps"));
    assert_non_null(strstr(err.msg, "b: port range"));
    assert_non_null(strstr(err.msg, "overlaps a at"));
    assert_int_equal(bus_register(&bus, 0x3ff, 1, "b", &rec_ops, &b, &err), -EEXIST);
    assert_int_equal(bus_register(&bus, 0x3fa, 2, "b", &rec_ops, &b, &err), -EEXIST);
    assert_int_equal(bus_register(&bus, 0x300, 0x200, "b", &rec_ops, &b, &err), -EEXIST);
    /* adjacent on both sides is fine */
    assert_int_equal(bus_register(&bus, 0x3f0, 8, "b", &rec_ops, &b, &err), 0);
    assert_int_equal(bus_register(&bus, 0x400, 1, "b", &rec_ops, &b, &err), 0);
    assert_int_equal(bus.nr, 3);
    /* empty and wrapping ranges are invalid */
    assert_int_equal(bus_register(&bus, 0x1000, 0, "b", &rec_ops, &b, &err), -EINVAL);
    assert_int_equal(bus_register(&bus, UINT64_MAX, 2, "b", &rec_ops, &b, &err), -EINVAL);
    assert_int_equal(bus_register(&bus, UINT64_MAX, 1, "b", &rec_ops, &b, &err), 0);
    bus_destroy(&bus);
}

static void test_bus_find_sorted(void **state)
{
    struct bus bus;
    struct recorder devs[20];
    bus_init(&bus, BUS_MMIO);
    /* insert in a scrambled order; lookups must still work */
    for (unsigned i = 0; i < 20; i++) {
        unsigned k = (i * 7) % 20;
        assert_int_equal(
            bus_register(&bus, 0x1000 * (k + 1), 0x100, "rec", &rec_ops, &devs[k], NULL), 0);
    }
    for (unsigned i = 1; i < bus.nr; i++)
        assert_true(bus.ranges[i - 1].base < bus.ranges[i].base);
    for (unsigned k = 0; k < 20; k++) {
        const struct bus_range *r = bus_find(&bus, 0x1000 * (k + 1) + 0xff);
        assert_non_null(r);
        assert_ptr_equal(r->opaque, &devs[k]);
        assert_null(bus_find(&bus, 0x1000 * (k + 1) + 0x100));
    }
    assert_null(bus_find(&bus, 0));
    bus_destroy(&bus);
}

static void test_bus_dispatch_offsets(void **state)
{
    struct bus bus;
    struct recorder rec = {0};
    bus_init(&bus, BUS_PIO);
    assert_int_equal(bus_register(&bus, 0x600, 6, "rec", &rec_ops, &rec, NULL), 0);
    uint32_t v = 0x0f;
    assert_true(bus_write(&bus, 0x604, &v, 1));
    assert_int_equal(rec.last_offset, 4);
    assert_int_equal(rec.last_size, 1);
    assert_int_equal(rec.last_value, 0x0f);
    uint16_t w = 0;
    assert_true(bus_read(&bus, 0x600, &w, 2));
    assert_int_equal(w, 0x5a5a);
    assert_int_equal(rec.last_offset, 0);
    bus_destroy(&bus);
}

static void test_bus_unclaimed_reads_all_ones(void **state)
{
    struct bus bus;
    struct recorder rec = {0};
    bus_init(&bus, BUS_PIO);
    assert_int_equal(bus_register(&bus, 0x600, 6, "rec", &rec_ops, &rec, NULL), 0);
    uint32_t v = 0;
    assert_false(bus_read(&bus, 0x1234, &v, 4));
    assert_int_equal(v, 0xffffffff);
    assert_false(bus_write(&bus, 0x1234, &v, 4));
    /* an access running past the end of a range is not the device's */
    assert_false(bus_read(&bus, 0x604, &v, 4));
    assert_int_equal(rec.reads, 0);
    assert_int_equal(rec.writes, 0);
    bus_destroy(&bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bus_refuses_overlaps),
        cmocka_unit_test(test_bus_find_sorted),
        cmocka_unit_test(test_bus_dispatch_offsets),
        cmocka_unit_test(test_bus_unclaimed_reads_all_ones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
