/* Unit tests of src/common: size/number parsing and the error convention. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/cpulist.h"
#include "common/err.h"
#include "common/parse.h"

static void test_parse_u64_accepts_decimal_and_hex(void **state)
{
    uint64_t v;
    assert_int_equal(parse_u64("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_u64("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(parse_u64("0x10", &v), 0);
    assert_int_equal(v, 16);
    assert_int_equal(parse_u64("0XfF", &v), 0);
    assert_int_equal(v, 255);
}

/* A leading zero is decimal: "010" is ten (strtoull's base 0 would make it eight). */
static void test_parse_u64_leading_zero_is_decimal(void **state)
{
    uint64_t v;
    assert_int_equal(parse_u64("010", &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(parse_u64("0008", &v), 0);
    assert_int_equal(v, 8);
    assert_int_equal(parse_u64("09", &v), 0);
    assert_int_equal(v, 9);
    assert_int_equal(parse_size("010M", 1, &v), 0);
    assert_true(v == 10ULL << 20);
    assert_int_equal(parse_size("010", 1 << 20, &v), 0);
    assert_true(v == 10ULL << 20);
    assert_int_equal(parse_u64("0x", &v), -EINVAL);
    assert_int_equal(parse_u64("0x-1", &v), -EINVAL);
    assert_int_equal(parse_u64("0x 1", &v), -EINVAL);
}

static void test_parse_u64_rejects_junk_sign_overflow(void **state)
{
    uint64_t v = 7;
    const char *bad[] = {"", " 1", "-1", "+1", "1x", "abc", "1 ", "0x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse_u64(bad[i], &v), -EINVAL);
    assert_int_equal(parse_u64("18446744073709551616", &v), -ERANGE);
    assert_int_equal(v, 7); /* untouched on failure */
}

static void test_parse_size_suffixes(void **state)
{
    uint64_t v;
    assert_int_equal(parse_size("512", 1, &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(parse_size("128", 1 << 20, &v), 0);
    assert_true(v == 128ULL << 20);
    assert_int_equal(parse_size("64K", 1, &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(parse_size("64KiB", 1, &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(parse_size("2M", 1, &v), 0);
    assert_true(v == 2ULL << 20);
    assert_int_equal(parse_size("6g", 1 << 20, &v), 0);
    assert_true(v == 6ULL << 30);
    assert_int_equal(parse_size("1.5G", 1, &v), 0);
    assert_true(v == 3ULL << 29);
    assert_int_equal(parse_size("100B", 1 << 20, &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(parse_size("1E", 1, &v), 0);
    assert_true(v == 1ULL << 60);
}

static void test_parse_size_rejects_bad(void **state)
{
    uint64_t v;
    const char *bad[] = {"", "G", "-1", "1Q", "1KK", "1.5", "1.G", ".5G", "1 G"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse_size(bad[i], 1, &v), -EINVAL);
    assert_int_equal(parse_size("16E", 1, &v), -ERANGE);
    assert_int_equal(parse_size("99999999999999999999", 1, &v), -ERANGE);
}

static void test_parse_kv_list(void **state)
{
    char buf[128];
    struct kv_item it[4];
    assert_int_equal(parse_kv_list("path=/a,,b.img,readonly=on,x", buf, it, 4), 3);
    assert_string_equal(it[0].key, "path");
    assert_string_equal(it[0].value, "/a,b.img");
    assert_string_equal(it[1].key, "readonly");
    assert_string_equal(it[1].value, "on");
    assert_string_equal(it[2].key, "x");
    assert_null(it[2].value);
    assert_int_equal(parse_kv_list("", buf, it, 4), 0);
    assert_int_equal(parse_kv_list("a=1,=2", buf, it, 4), -EINVAL);
    assert_int_equal(parse_kv_list("a,b,c,d,e", buf, it, 4), -E2BIG);
    assert_int_equal(parse_kv_list("a=x=y", buf, it, 4), 1);
    assert_string_equal(it[0].value, "x=y");
    bool b;
    assert_int_equal(parse_bool("on", &b), 0);
    assert_true(b);
    assert_int_equal(parse_bool("0", &b), 0);
    assert_false(b);
    assert_int_equal(parse_bool("maybe", &b), -EINVAL);
}

static void test_cpulist(void **state)
{
    (void)state;
    cpu_set_t set;
    char buf[64];
    assert_int_equal(cpulist_parse("0-3,8,10-11", (size_t)-1, &set), 0);
    assert_int_equal(CPU_COUNT(&set), 7);
    assert_true(CPU_ISSET(8, &set) && !CPU_ISSET(9, &set));
    assert_int_equal(cpulist_format(&set, buf, sizeof(buf)), 11);
    assert_string_equal(buf, "0-3,8,10-11");
    assert_int_equal(cpulist_parse("5/6", 1, &set), 0); /* only the first byte */
    assert_string_equal((cpulist_format(&set, buf, sizeof(buf)), buf), "5");
    assert_int_equal(cpulist_parse("1023", (size_t)-1, &set), 0);
    assert_int_equal(cpulist_parse("1024", (size_t)-1, &set), -ERANGE);
    static const char *const bad[] = {"", ",", "1,", "1-", "3-1", "a", "1,,2", "-1", "1 2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cpulist_parse(bad[i], (size_t)-1, &set), -EINVAL);
    assert_int_equal(cpulist_parse("0-3,8", (size_t)-1, &set), 0);
    assert_int_equal(cpulist_format(&set, buf, 4), -ENOSPC);
}

static void test_err_set_wrap(void **state)
{
    struct wisp_err err = {0};
    assert_int_equal(wisp_err_set(&err, ENOENT, "file %s", "a.img"), -ENOENT);
    assert_int_equal(err.errnum, ENOENT);
    assert_string_equal(err.msg, "file a.img");
    assert_int_equal(wisp_err_wrap(&err, "opening drive %d", 2), -ENOENT);
    assert_string_equal(err.msg, "opening drive 2: file a.img");
    assert_int_equal(wisp_err_sys(&err, EACCES, "/dev/kvm"), -EACCES);
    assert_string_equal(err.msg, "/dev/kvm: Permission denied");
    /* NULL err is allowed and still returns the code */
    assert_int_equal(wisp_err_set(NULL, EINVAL, "x"), -EINVAL);
}

static void test_err_wrap_truncates_safely(void **state)
{
    struct wisp_err err = {0};
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    wisp_err_set(&err, EIO, "%s", big);
    wisp_err_wrap(&err, "%s", big);
    assert_true(strlen(err.msg) < sizeof(err.msg));
    wisp_err_set(&err, EIO, "inner");
    wisp_err_wrap(&err, "%s", big);
    assert_true(strlen(err.msg) < sizeof(err.msg));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_u64_accepts_decimal_and_hex),
        cmocka_unit_test(test_parse_u64_leading_zero_is_decimal),
        cmocka_unit_test(test_parse_u64_rejects_junk_sign_overflow),
        cmocka_unit_test(test_parse_size_suffixes),
        cmocka_unit_test(test_parse_size_rejects_bad),
        cmocka_unit_test(test_parse_kv_list),
        cmocka_unit_test(test_cpulist),
        cmocka_unit_test(test_err_set_wrap),
        cmocka_unit_test(test_err_wrap_truncates_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
