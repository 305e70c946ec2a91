/* The API's pure parts (src/api/json.h, src/vmm/api.h): reading fields by a table, the
 * resources applied to a configuration, Firecracker's rate limiters, the root drive on the
 * kernel command line, and --config-file's errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/json.h"
#include "vmm/api.h"
#include "vmm/config.h"

static json_t *parse(const char *text)
{
    json_t *j = NULL;
    struct wisp_err err = {0};
    assert_int_equal(api_json_parse_object(text, strlen(text), "t", &j, &err), 0);
    return j;
}

static void parse_fails(const char *text, const char *want)
{
    json_t *j = NULL;
    struct wisp_err err = {0};
    assert_int_equal(api_json_parse_object(text, strlen(text), "body", &j, &err), -EINVAL);
    assert_null(j);
    if (!strstr(err.msg, want))
        fail_msg("'%s': message '%s' lacks '%s'", text, err.msg, want);
}

static void test_parse_object(void **state)
{
    json_decref(parse("{\"a\": 1}"));
    parse_fails("{\"a\": 1", "malformed JSON at line 1");
    parse_fails("[1]", "expected a JSON object, got an array");
    parse_fails("\"s\"", "got a string");
    parse_fails("{\"a\": 1, \"a\": 2}", "duplicate");
    parse_fails("{} {}", "malformed JSON");
    parse_fails("{\"a\": \"x\\u0000y\"}", "malformed JSON");
}

static int read_fields(const char *text, uint64_t *n, const char **s, bool *b, bool *present,
                       struct wisp_err *err)
{
    json_t *j = parse(text);
    const struct api_json_field f[] = {
        {"n", API_JSON_UINT, true, n, NULL, 100},
        {"s", API_JSON_STRING, false, s, present, 0},
        {"b", API_JSON_BOOL, false, b, NULL, 0},
    };
    int r = api_json_read(j, "where", f, 3, err);
    json_decref(j);
    return r;
}

static void read_fails(const char *text, const char *want)
{
    uint64_t n = 0;
    const char *s = NULL;
    bool b = false, present = false;
    struct wisp_err err = {0};
    assert_int_equal(read_fields(text, &n, &s, &b, &present, &err), -EINVAL);
    if (!strstr(err.msg, want))
        fail_msg("'%s': message '%s' lacks '%s'", text, err.msg, want);
}

static void test_read_fields(void **state)
{
    uint64_t n = 0;
    const char *s = "kept";
    bool b = false, present = true;
    struct wisp_err err = {0};
    assert_int_equal(read_fields("{\"n\": 7, \"s\": null}", &n, &s, &b, &present, &err), 0);
    assert_int_equal(n, 7);
    assert_string_equal(s, "kept"); /* null is absent: the output is left alone */
    assert_false(present);
    read_fails("{\"s\": \"x\"}", "where: n: missing (required)");
    read_fails("{\"n\": \"7\"}", "where: n: expected an integer, got a string");
    read_fails("{\"n\": 1.5}", "got a number with a fraction");
    read_fails("{\"n\": -1}", "n: -1 is out of range (0 to 100)");
    read_fails("{\"n\": 101}", "out of range");
    read_fails("{\"n\": 1, \"b\": 1}", "b: expected a boolean, got an integer");
    read_fails("{\"n\": 1, \"zz\": 1}", "unknown field 'zz' (known: n, s, b)");
}

static void test_machine_config(void **state)
{
    struct vm_config cfg;
    struct wisp_err err = {0};
    vm_config_init(&cfg);
    json_t *j = parse("{\"vcpu_count\": 4, \"mem_size_mib\": 512, \"track_dirty_pages\": true}");
    assert_int_equal(vm_resource_machine_config(&cfg, j, false, "PUT", &err), 0);
    json_decref(j);
    assert_int_equal(cfg.cpus, 4);
    assert_int_equal(cfg.mem_bytes, 512ull << 20);
    assert_true(cfg.track_dirty_pages);
    j = parse("{\"mem_size_mib\": 64}"); /* PATCH: only what it names */
    assert_int_equal(vm_resource_machine_config(&cfg, j, true, "PATCH", &err), 0);
    json_decref(j);
    assert_int_equal(cfg.cpus, 4);
    assert_true(cfg.track_dirty_pages);
    j = parse("{\"vcpu_count\": 1, \"mem_size_mib\": 64}"); /* PUT: defaults for the rest */
    assert_int_equal(vm_resource_machine_config(&cfg, j, false, "PUT", &err), 0);
    json_decref(j);
    assert_false(cfg.track_dirty_pages);
    j = parse("{\"vcpu_count\": 2, \"mem_size_mib\": 64, \"smt\": true}");
    assert_int_equal(vm_resource_machine_config(&cfg, j, false, "PUT", &err), -EINVAL);
    json_decref(j);
    assert_non_null(strstr(err.msg, "smt"));
    assert_int_equal(cfg.cpus, 1); /* a refused request changes nothing */
    vm_config_free(&cfg);
}

static void test_bucket_rate(void **state)
{
    struct fc_token_bucket b = {.size = 1000, .refill_time_ms = 100};
    assert_int_equal(fc_bucket_rate(&b), 10000);
    b = (struct fc_token_bucket){.size = 0, .refill_time_ms = 100};
    assert_int_equal(fc_bucket_rate(&b), 0); /* Firecracker: no limit */
    b = (struct fc_token_bucket){.size = 5, .refill_time_ms = 0};
    assert_int_equal(fc_bucket_rate(&b), 0);
    b = (struct fc_token_bucket){.size = 1, .refill_time_ms = 1000000};
    assert_int_equal(fc_bucket_rate(&b), 1); /* never rounded down to "no limit" */
    b = (struct fc_token_bucket){.size = INT64_MAX, .refill_time_ms = 1};
    assert_int_equal(fc_bucket_rate(&b), UINT64_MAX); /* no overflow */
    struct fc_rate_limiter rl = {
        .has_bandwidth = true,
        .bandwidth = {.size = 4096, .one_time_burst = 100, .refill_time_ms = 1000}};
    struct block_throttle_limits l;
    fc_rate_limiter_to_block(&rl, &l);
    assert_int_equal(l.bps_total, 4096);
    assert_int_equal(l.bps_total_max, 4096);
    assert_int_equal(l.bps_total_once, 100);
    assert_int_equal(l.iops_total, 0);
}

/* cmdline for boot_args with one drive, root or not */
static void root_case(const char *args, bool root, bool ro, const char *partuuid, const char *want)
{
    struct vm_config cfg;
    struct wisp_err err = {0};
    vm_config_init(&cfg);
    assert_int_equal(vm_config_set_string(&cfg, &cfg.api.boot_args, args, &err), 0);
    assert_int_equal(vm_config_set_string(&cfg, &cfg.cmdline, args, &err), 0);
    cfg.nr_drives = 1;
    cfg.drives[0] = (struct virtio_blk_params){.path = "/x", .read_only = ro};
    cfg.api.drives[0] = (struct vm_drive_api){.is_root_device = root, .partuuid = partuuid};
    assert_int_equal(vm_config_prepare_start(&cfg, &err), 0);
    assert_string_equal(cfg.cmdline, want);
    assert_int_equal(vm_config_prepare_start(&cfg, &err), 0); /* a second start: the same */
    assert_string_equal(cfg.cmdline, want);
    vm_config_free(&cfg);
}

static void test_root_cmdline(void **state)
{
    root_case("console=ttyS0", true, false, NULL, "console=ttyS0 root=/dev/vda rw");
    root_case("console=ttyS0", true, true, NULL, "console=ttyS0 root=/dev/vda ro");
    root_case("console=ttyS0", false, false, NULL, "console=ttyS0");
    root_case("a -- /bin/sh x", true, false, NULL, "a root=/dev/vda rw -- /bin/sh x");
    root_case("-- /bin/sh", true, false, NULL, "root=/dev/vda rw -- /bin/sh");
    root_case("", true, false, NULL, "root=/dev/vda rw");
    root_case("root=/dev/vdb ro", true, false, NULL, "root=/dev/vdb ro");
    root_case("noroot=1", true, false, NULL, "noroot=1 root=/dev/vda rw");
    root_case("a -- root=x", true, false, NULL, "a root=/dev/vda rw -- root=x"); /* init's */
    root_case("q", true, false, "1234-ab", "q root=PARTUUID=1234-ab rw");
}

static void test_set_string(void **state)
{
    struct vm_config cfg;
    struct wisp_err err = {0};
    const char *slot = NULL;
    vm_config_init(&cfg);
    for (int i = 0; i < 1000; i++) /* the API sets values again and again: nothing piles up */
        assert_int_equal(vm_config_set_string(&cfg, &slot, "value", &err), 0);
    assert_string_equal(slot, "value");
    assert_int_equal(cfg.nr_owned, 1);
    assert_int_equal(vm_config_set_string(&cfg, &slot, NULL, &err), 0);
    assert_null(slot);
    assert_int_equal(cfg.nr_owned, 0);
    vm_config_free(&cfg);
}

static void config_file_fails(const char *text, const char *want)
{
    char path[] = "/tmp/wisp-test-cfg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct vm_config cfg;
    struct wisp_err err = {0};
    vm_config_init(&cfg);
    assert_true(vm_config_load_file(&cfg, path, &err) < 0);
    unlink(path);
    vm_config_free(&cfg);
    if (!strstr(err.msg, want) || !strstr(err.msg, path))
        fail_msg("'%s': message '%s' lacks '%s' or the path", text, err.msg, want);
}

static void test_config_file_errors(void **state)
{
    config_file_fails("{\"vsock\": {\"guest_cid\": 3}}", "vsock: uds_path: missing (required)");
    config_file_fails("{\"balloon\": {}}", "balloon: amount_mib: missing");
    config_file_fails("{\"drive\": []}", "unknown member 'drive'");
    config_file_fails("{\"drives\": {}}", "drives: expected an array");
    config_file_fails("{\"drives\": [1]}", "drives[0]: expected an object");
    config_file_fails("{\"machine-config\": {\"vcpu_count\": 0, \"mem_size_mib\": 64}}",
                      "machine-config: vcpu_count: 0 is out of range");
    config_file_fails("{\"boot-source\": {\"kernel_image_path\": \"/nonexistent\"}}",
                      "boot-source: kernel_image_path: /nonexistent");
    config_file_fails("{", "malformed JSON");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_object),       cmocka_unit_test(test_read_fields),
        cmocka_unit_test(test_machine_config),     cmocka_unit_test(test_bucket_rate),
        cmocka_unit_test(test_root_cmdline),       cmocka_unit_test(test_set_string),
        cmocka_unit_test(test_config_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
