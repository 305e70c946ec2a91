/* Unit tests of wisp-vmm's command-line parser: defaults, every flag, and a message naming the
 * flag for every wrong value (main() turns a failure into exit status 2). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/args.h"

#define ARGV(...)        ((char *const[]){"wisp-vmm", __VA_ARGS__, NULL})
#define ARGC(...)        ((int)(sizeof((char *[]){"wisp-vmm", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(a, e, ...) vmm_args_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (a), (e))

static void test_defaults(void **state)
{
    struct vmm_args a;
    assert_int_equal(PARSE(&a, NULL, "--kernel", "k"), 0);
    assert_int_equal(a.action, VMM_RUN);
    assert_string_equal(a.kernel, "k");
    assert_null(a.initrd);
    assert_null(a.cmdline);
    assert_true(a.mem_bytes == 128ULL << 20);
    assert_int_equal(a.cpus, 1);
    assert_int_equal(a.serial, VMM_SERIAL_STDIO);
    assert_false(a.boot_marker);
    assert_false(a.debug);
}

static void test_all_flags(void **state)
{
    struct vmm_args a;
    assert_int_equal(PARSE(&a, NULL, "--kernel=vmlinux", "--initrd", "ird", "--cmdline",
                           "console=ttyS0 quiet", "--mem", "1G", "--cpus=4",
                           "--serial=file:/tmp/x.log", "--boot-marker", "--debug"),
                     0);
    assert_string_equal(a.kernel, "vmlinux");
    assert_string_equal(a.initrd, "ird");
    assert_string_equal(a.cmdline, "console=ttyS0 quiet");
    assert_true(a.mem_bytes == 1ULL << 30);
    assert_int_equal(a.cpus, 4);
    assert_int_equal(a.serial, VMM_SERIAL_FILE);
    assert_string_equal(a.serial_path, "/tmp/x.log");
    assert_true(a.boot_marker);
    assert_true(a.debug);
    assert_int_equal(PARSE(&a, NULL, "--kernel", "k", "--serial", "none", "--mem", "512"), 0);
    assert_int_equal(a.serial, VMM_SERIAL_NONE);
    assert_true(a.mem_bytes == 512ULL << 20); /* bare numbers are MiB */
    assert_int_equal(PARSE(&a, NULL, "--kernel", "k", "--mem", "64GiB", "--cpus", "1024"), 0);
    assert_true(a.mem_bytes == 64ULL << 30);
    assert_int_equal(PARSE(&a, NULL, "--kernel", "k", "--cmdline", ""), 0); /* empty is fine */
    assert_string_equal(a.cmdline, "");
}

static void test_help_version(void **state)
{
    struct vmm_args a;
    assert_int_equal(PARSE(&a, NULL, "--help"), 0); /* no --kernel needed */
    assert_int_equal(a.action, VMM_HELP);
    assert_int_equal(PARSE(&a, NULL, "-h"), 0);
    assert_int_equal(a.action, VMM_HELP);
    assert_int_equal(PARSE(&a, NULL, "--version"), 0);
    assert_int_equal(a.action, VMM_VERSION);
    assert_non_null(strstr(vmm_usage_text, "EXIT STATUS"));
    assert_non_null(strstr(vmm_usage_text, "0x3f8"));
}

/* Each bad command line fails with -EINVAL and a message containing `needle`. */
static void expect_error(int argc, char *const argv[], const char *needle)
{
    struct vmm_args a;
    struct wisp_err err = {0};
    int r = vmm_args_parse(argc, argv, &a, &err);
    if (r != -EINVAL || !strstr(err.msg, needle))
        fail_msg("argv[1]=%s: got %d '%s', wanted -EINVAL and '%s'", argv[1], r, err.msg, needle);
}
#define EXPECT_ERROR(needle, ...) expect_error(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), needle)

static void test_bad_values_name_the_flag(void **state)
{
    EXPECT_ERROR("--kernel: missing", "--mem", "64");
    EXPECT_ERROR("--kernel: missing value", "--kernel");
    EXPECT_ERROR("--kernel: the path is empty", "--kernel", "");
    EXPECT_ERROR("--initrd: the path is empty", "--kernel", "k", "--initrd=");
    EXPECT_ERROR("--mem: 'junk' is not a size", "--kernel", "k", "--mem", "junk");
    EXPECT_ERROR("--mem: '-1' is not a size", "--kernel", "k", "--mem", "-1");
    EXPECT_ERROR("--mem: '0' is below", "--kernel", "k", "--mem", "0");
    EXPECT_ERROR("--mem: '1K' is below", "--kernel", "k", "--mem", "1K");
    EXPECT_ERROR("--mem: '2T' is above", "--kernel", "k", "--mem", "2T");
    EXPECT_ERROR("--mem: '99999999999999999999' is too large", "--kernel", "k", "--mem",
                 "99999999999999999999");
    EXPECT_ERROR("--mem: '3000001B' is not a multiple of 4 KiB", "--kernel", "k", "--mem",
                 "3000001B");
    EXPECT_ERROR("--mem: missing value", "--kernel", "k", "--mem");
    EXPECT_ERROR("--cpus: '0' is out of range", "--kernel", "k", "--cpus", "0");
    EXPECT_ERROR("--cpus: '1025' is out of range", "--kernel", "k", "--cpus", "1025");
    EXPECT_ERROR("--cpus: 'two' is not a number", "--kernel", "k", "--cpus", "two");
    EXPECT_ERROR("--cpus: '-1' is not a number", "--kernel", "k", "--cpus=-1");
    EXPECT_ERROR("--cpus: '' is not a number", "--kernel", "k", "--cpus=");
    EXPECT_ERROR("--serial: 'tty' is not", "--kernel", "k", "--serial", "tty");
    EXPECT_ERROR("--serial: 'file:' is not", "--kernel", "k", "--serial", "file:");
    EXPECT_ERROR("--frobnicate: unknown option", "--kernel", "k", "--frobnicate");
    EXPECT_ERROR("-x: unknown option", "-x", "--kernel", "k");
    EXPECT_ERROR("'stray': unexpected argument", "--kernel", "k", "stray");
    EXPECT_ERROR("--boot-marker: takes no value", "--kernel", "k", "--boot-marker=1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_flags),
        cmocka_unit_test(test_help_version),
        cmocka_unit_test(test_bad_values_name_the_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
