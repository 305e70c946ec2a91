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
    struct vm_config a;
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
    struct vm_config a;
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
    struct vm_config a;
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
    struct vm_config a;
    struct wisp_err err = {0};
    int r = vmm_args_parse(argc, argv, &a, &err);
    vm_config_free(&a);
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
    EXPECT_ERROR("--vcpu-affinity 0/x: 'x' is not a CPU list", "--kernel", "k", "--vcpu-affinity",
                 "0/x");
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
    /* sizes and counts with a leading zero are decimal */
    struct vm_config a;
    assert_int_equal(PARSE(&a, NULL, "--kernel", "k", "--mem", "010", "--cpus", "010"), 0);
    assert_true(a.mem_bytes == 10ULL << 20);
    assert_int_equal(a.cpus, 10);
}

static void test_devices(void **state)
{
    struct vm_config a;
    struct wisp_err err = {0};
    assert_int_equal(
        PARSE(&a, &err, "--kernel", "k", "--drive",
              "path=/img/a,,b.qcow2,format=qcow2,readonly=on,cache=none,aio=threads,serial=S1,"
              "queues=2,iops=100,bps-write=1M,id=root",
              "--drive", "path=d2.img", "--net", "tap=tap0,mac=02:00:00:00:00:09,rx-bps=1M",
              "--net", "tap=tap1,vhost=auto,id=lan", "--rng=bps=1K", "--console", "virtio",
              "--cmdline-devices", "off"),
        0);
    assert_int_equal(a.nr_drives, 2);
    assert_string_equal(a.drives[0].path, "/img/a,b.qcow2");
    assert_string_equal(a.drives[0].format, "qcow2");
    assert_true(a.drives[0].read_only);
    assert_int_equal(a.drives[0].cache, BLOCK_CACHE_NONE);
    assert_int_equal(a.drives[0].aio, BLOCK_AIO_THREADS);
    assert_true(a.drives[0].aio_given);
    assert_string_equal(a.drives[0].serial, "S1");
    assert_int_equal(a.drives[0].queues, 2);
    assert_int_equal(a.drives[0].limits.iops_total, 100);
    assert_int_equal(a.drives[0].limits.bps_write, 1 << 20);
    assert_string_equal(a.drives[0].id, "root");
    assert_string_equal(a.drives[1].path, "d2.img");
    assert_null(a.drives[1].format);
    assert_false(a.drives[1].aio_given);
    assert_int_equal(a.drives[1].queues, 1);
    assert_int_equal(a.nr_nics, 2);
    assert_string_equal(a.nics[0].tap, "tap0");
    assert_true(a.nics[0].mac_given);
    assert_int_equal(a.nics[0].mac[5], 9);
    assert_int_equal(a.nics[0].rx_bps, 1 << 20);
    assert_int_equal(a.nics[1].vhost, VIRTIO_NET_VHOST_AUTO);
    assert_string_equal(a.nics[1].id, "lan");
    assert_true(a.rng);
    assert_int_equal(a.rng_params.bytes_per_sec, 1024);
    assert_int_equal(a.console, VMM_CONSOLE_VIRTIO);
    assert_false(a.cmdline_devices);
    vm_config_free(&a);

    EXPECT_ERROR("--drive: path=FILE is missing", "--kernel", "k", "--drive", "format=raw");
    EXPECT_ERROR("--drive: format: 'vmdk' is not raw or qcow2", "--kernel", "k", "--drive",
                 "path=x,format=vmdk");
    EXPECT_ERROR("--drive: unknown key 'size'", "--kernel", "k", "--drive", "path=x,size=1");
    EXPECT_ERROR("--drive: readonly: 'maybe' is not on or off", "--kernel", "k", "--drive",
                 "path=x,readonly=maybe");
    EXPECT_ERROR("--drive: cache: 'fast'", "--kernel", "k", "--drive", "path=x,cache=fast");
    EXPECT_ERROR("--drive: queues: '9' is not 1 to 8", "--kernel", "k", "--drive",
                 "path=x,queues=9");
    EXPECT_ERROR("--drive: serial: '123456789012345678901' is longer than 20 bytes", "--kernel",
                 "k", "--drive", "path=x,serial=123456789012345678901");
    EXPECT_ERROR("--drive: 'readonly' has no value", "--kernel", "k", "--drive", "path=x,readonly");
    EXPECT_ERROR("--net: tap=NAME is missing", "--kernel", "k", "--net", "mac=02:00:00:00:00:01");
    EXPECT_ERROR("--net: mac: '01:00:00:00:00:01' is not a unicast address", "--kernel", "k",
                 "--net", "tap=t,mac=01:00:00:00:00:01");
    EXPECT_ERROR("--net: tap: 'abcdefghijklmnop' is longer than 15", "--kernel", "k", "--net",
                 "tap=abcdefghijklmnop");
    EXPECT_ERROR("--net: vhost: 'maybe' is not on, off or auto", "--kernel", "k", "--net",
                 "tap=t,vhost=maybe");
    EXPECT_ERROR("id=x: two devices have this id", "--kernel", "k", "--drive", "path=a,id=x",
                 "--net", "tap=t,id=x");
    EXPECT_ERROR("--console: 'vga' is not serial or virtio", "--kernel", "k", "--console", "vga");
    EXPECT_ERROR("--rng: unknown key 'rate'", "--kernel", "k", "--rng=rate=1");
    EXPECT_ERROR("--cmdline-devices: 'maybe' is not on or off", "--kernel", "k",
                 "--cmdline-devices", "maybe");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),     cmocka_unit_test(test_all_flags),
        cmocka_unit_test(test_help_version), cmocka_unit_test(test_bad_values_name_the_flag),
        cmocka_unit_test(test_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
