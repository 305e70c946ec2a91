/* Unit tests of the automatic balloon's policy (src/wispd/reclaim_policy.c): the host's level
 * and its hysteresis, each VM's next target over snapshots of VM statistics (idle first, the
 * floor, the margin, the step, the hold-off, the guest's needs and its OOM deflate), the
 * parsers, the options and the definition's fields. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wispd/reclaim.h"

static struct reclaim_config cfg(void)
{
    struct reclaim_config c;
    reclaim_config_defaults(&c);
    return c;
}

/* An idle 128 MiB guest at base 0 whose statistics are in, floor 32, margin 16. */
static struct reclaim_view idle_vm(uint64_t free_mib)
{
    return (struct reclaim_view){.memory_mib = 128,
                                 .min_mib = 32,
                                 .margin_mib = 16,
                                 .have_stats = true,
                                 .settled = true,
                                 .fresh = true,
                                 .free_mib = free_mib,
                                 .available_mib = free_mib,
                                 .recent_available_mib = free_mib};
}

static void test_levels(void **state)
{
    (void)state;
    struct reclaim_config c = cfg();
    assert_int_equal(reclaim_level_psi(&c, 0.0, false), RECLAIM_LOW);
    assert_int_equal(reclaim_level_psi(&c, 0.99, false), RECLAIM_LOW);
    assert_int_equal(reclaim_level_psi(&c, 1.0, false), RECLAIM_MID);
    assert_int_equal(reclaim_level_psi(&c, 9.99, false), RECLAIM_MID);
    assert_int_equal(reclaim_level_psi(&c, 10.0, false), RECLAIM_HIGH);
    assert_int_equal(reclaim_level_psi(&c, 0.0, true), RECLAIM_HIGH); /* the trigger fired */
    assert_int_equal(reclaim_level_meminfo(&c, 5, 100), RECLAIM_HIGH);
    assert_int_equal(reclaim_level_meminfo(&c, 10, 100), RECLAIM_MID);
    assert_int_equal(reclaim_level_meminfo(&c, 20, 100), RECLAIM_MID);
    assert_int_equal(reclaim_level_meminfo(&c, 21, 100), RECLAIM_LOW);
    assert_int_equal(reclaim_level_meminfo(&c, 0, 0), RECLAIM_LOW);
}

static void test_hysteresis(void **state)
{
    (void)state;
    struct reclaim_config c = cfg(); /* calm_s 30 */
    struct reclaim_host h = {0};
    bool changed;
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_LOW, 1000, &changed), RECLAIM_DEFLATE);
    assert_false(changed);
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_HIGH, 2000, &changed), RECLAIM_INFLATE);
    assert_true(changed && h.pressure);
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_HIGH, 4000, &changed), RECLAIM_INFLATE);
    assert_false(changed);
    /* between the marks: hold */
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_MID, 6000, &changed), RECLAIM_HOLD);
    /* low, but not for calm_s yet; a MID in between starts the count again */
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_LOW, 8000, &changed), RECLAIM_HOLD);
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_LOW, 37000, &changed), RECLAIM_HOLD);
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_MID, 37500, &changed), RECLAIM_HOLD);
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_LOW, 38000, &changed), RECLAIM_HOLD);
    assert_true(h.pressure);
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_LOW, 68000, &changed), RECLAIM_DEFLATE);
    assert_true(changed && !h.pressure);
    assert_int_equal(reclaim_host_step(&c, &h, RECLAIM_MID, 70000, &changed), RECLAIM_HOLD);
    assert_false(changed);
}

static void test_inflate_idle_first(void **state)
{
    (void)state;
    struct reclaim_config c = cfg(); /* step 64 */
    struct reclaim_view v[3] = {idle_vm(30), idle_vm(100), idle_vm(60)};
    struct reclaim_decision d[3];
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 0, v, 3, d), 0);
    /* the idlest (100 free) first: room min(100 - 16, 128 - 32) = 84, the step caps it at 64 */
    assert_int_equal(d[1].target_mib, 64);
    assert_int_equal(d[1].reason, RECLAIM_HOST_INFLATE);
    assert_int_equal(d[2].target_mib, 0); /* nothing left of the step */
    assert_int_equal(d[2].reason, RECLAIM_KEEP);
    assert_int_equal(d[0].target_mib, 0);
    /* a larger step: each gives its room, in order */
    c.step_mib = 100;
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 0, v, 3, d), 0);
    assert_int_equal(d[1].target_mib, 84);
    assert_int_equal(d[2].target_mib, 16);
    assert_int_equal(d[0].target_mib, 0);
}

static void test_floor_and_margin(void **state)
{
    (void)state;
    struct reclaim_config c = cfg();
    c.step_mib = 1000;
    struct reclaim_view v = idle_vm(120);
    struct reclaim_decision d;
    /* the floor: 128 - 32 = 96 at most, though 104 are available beyond the margin */
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 0, &v, 1, &d), 0);
    assert_int_equal(d.target_mib, 96);
    /* at the floor already: nothing */
    v.target_mib = v.actual_mib = 96;
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 0, &v, 1, &d), 0);
    assert_int_equal(d.reason, RECLAIM_KEEP);
    /* the recent least available counts, not the latest: 40 - 16 */
    v = idle_vm(120);
    v.recent_available_mib = 40;
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 0, &v, 1, &d), 0);
    assert_int_equal(d.target_mib, 24);
    /* within its margin: nothing */
    v = idle_vm(16);
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 0, &v, 1, &d), 0);
    assert_int_equal(d.reason, RECLAIM_KEEP);
}

static void test_not_yet(void **state)
{
    (void)state;
    struct reclaim_config c = cfg();
    struct reclaim_view v[4] = {idle_vm(100), idle_vm(100), idle_vm(100), idle_vm(100)};
    v[0].settled = false; /* still inflating, or no statistics since it settled */
    v[1].have_stats = false;
    v[2].holdoff_until_ms = 5000; /* it needed memory back a moment ago */
    struct reclaim_decision d[4];
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 4000, v, 4, d), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(d[i].reason, RECLAIM_KEEP);
    assert_int_equal(d[3].target_mib, 64);
    assert_int_equal(d[2].holdoff_until_ms, 5000);
    /* holding: nothing moves, not even towards the base */
    v[3].target_mib = v[3].actual_mib = 40;
    v[3].available_mib = v[3].recent_available_mib = 60;
    assert_int_equal(reclaim_policy(&c, RECLAIM_HOLD, 4000, v, 4, d), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(d[i].reason, RECLAIM_KEEP);
}

static void test_guest_needs(void **state)
{
    (void)state;
    struct reclaim_config c = cfg(); /* holdoff 60 s */
    struct reclaim_view v = idle_vm(3);
    v.target_mib = v.actual_mib = 64;
    struct reclaim_decision d;
    /* available 3 < margin / 2: 16 - 3 = 13 MiB back at once, whatever the host's state */
    for (enum reclaim_action a = RECLAIM_HOLD; a <= RECLAIM_DEFLATE; a++) {
        assert_int_equal(reclaim_policy(&c, a, 1000, &v, 1, &d), 0);
        assert_int_equal(d.reason, RECLAIM_GUEST_NEEDS);
        assert_int_equal(d.target_mib, 51);
        assert_int_equal(d.holdoff_until_ms, 61000);
    }
    /* still inflating (actual 20 of 64): from what it holds */
    v.actual_mib = 20;
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 1000, &v, 1, &d), 0);
    assert_int_equal(d.target_mib, 7);
    /* never below the base */
    v.base_mib = 10;
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 1000, &v, 1, &d), 0);
    assert_int_equal(d.target_mib, 10);
    /* statistics older than the last target: wait for fresh ones */
    v.fresh = false;
    assert_int_equal(reclaim_policy(&c, RECLAIM_HOLD, 1000, &v, 1, &d), 0);
    assert_int_equal(d.reason, RECLAIM_KEEP);
    /* at its base there is nothing to give */
    v = idle_vm(0);
    assert_int_equal(reclaim_policy(&c, RECLAIM_HOLD, 1000, &v, 1, &d), 0);
    assert_int_equal(d.reason, RECLAIM_KEEP);
    /* half the margin or more: fine */
    v = idle_vm(8);
    v.target_mib = v.actual_mib = 64;
    assert_int_equal(reclaim_policy(&c, RECLAIM_HOLD, 1000, &v, 1, &d), 0);
    assert_int_equal(d.reason, RECLAIM_KEEP);
}

static void test_oom(void **state)
{
    (void)state;
    struct reclaim_config c = cfg();
    struct reclaim_view v = idle_vm(50);
    v.target_mib = 64;
    v.actual_mib = 40;
    v.oom_deflated = true;
    struct reclaim_decision d;
    assert_int_equal(reclaim_policy(&c, RECLAIM_INFLATE, 1000, &v, 1, &d), 0);
    assert_int_equal(d.reason, RECLAIM_GUEST_OOM);
    assert_int_equal(d.target_mib, 40);
    assert_int_equal(d.holdoff_until_ms, 61000);
}

static void test_deflate_busy_first(void **state)
{
    (void)state;
    struct reclaim_config c = cfg();
    c.step_mib = 50;
    struct reclaim_view v[3] = {idle_vm(90), idle_vm(10), idle_vm(50)};
    v[0].target_mib = v[0].actual_mib = 40;
    v[1].target_mib = v[1].actual_mib = 30;
    v[2].target_mib = v[2].actual_mib = 30;
    v[2].base_mib = 10;
    struct reclaim_decision d[3];
    assert_int_equal(reclaim_policy(&c, RECLAIM_DEFLATE, 0, v, 3, d), 0);
    assert_int_equal(d[1].target_mib, 0); /* the busiest first: all 30 */
    assert_int_equal(d[1].reason, RECLAIM_HOST_DEFLATE);
    assert_int_equal(d[2].target_mib, 10); /* then 20 down to its base */
    assert_int_equal(d[0].target_mib, 40); /* the step is spent */
    assert_int_equal(d[0].reason, RECLAIM_KEEP);
    assert_int_equal(reclaim_policy(&c, RECLAIM_DEFLATE, 0, v, 0, d), 0);
}

static void test_window(void **state)
{
    (void)state;
    struct reclaim_window w = {0};
    assert_int_equal(reclaim_window_min(&w, 60, 0, 77), 77);
    reclaim_window_add(&w, 64, 1000, 100);
    reclaim_window_add(&w, 64, 1500, 40); /* same bucket (2 s): its least */
    reclaim_window_add(&w, 64, 4000, 90);
    assert_int_equal(reclaim_window_min(&w, 64, 4000, 0), 40);
    assert_int_equal(reclaim_window_min(&w, 64, 66000, 0), 90); /* 40 aged out */
    for (int i = 0; i < 100; i++)
        reclaim_window_add(&w, 64, 10000 + i * 2000, 200 + (uint64_t)i);
    assert_int_equal(w.n, RECLAIM_WINDOW);
    assert_int_equal(reclaim_window_min(&w, 64, 10000 + 99 * 2000, 0), 200 + 99 - 31);
}

static void test_parsers(void **state)
{
    (void)state;
    double a;
    assert_true(reclaim_parse_psi("some avg10=12.34 avg60=1.00 avg300=0.00 total=5\n"
                                  "full avg10=1.00 avg60=0.00 avg300=0.00 total=1\n",
                                  &a));
    assert_true(a > 12.33 && a < 12.35);
    assert_false(reclaim_parse_psi("full avg10=1.00\n", &a));
    assert_false(reclaim_parse_psi("some avg10=x\n", &a));
    assert_false(reclaim_parse_psi("some avg10=101.00\n", &a));
    assert_false(reclaim_parse_psi("xsome avg10=1.00\n", &a));
    uint64_t av, tot;
    assert_true(reclaim_parse_meminfo("MemTotal:       24000000 kB\nMemFree: 1 kB\n"
                                      "MemAvailable:   12000000 kB\n",
                                      &av, &tot));
    assert_int_equal(av, 12000000);
    assert_int_equal(tot, 24000000);
    assert_false(reclaim_parse_meminfo("MemTotal: 5 kB\n", &av, &tot));
}

static void test_options(void **state)
{
    (void)state;
    struct reclaim_config c = cfg();
    struct wisp_err err = {0};
    assert_int_equal(
        reclaim_parse_options(&c, "psi=/tmp/p,high=20,low=2.5,interval_ms=300,step_mib=8", &err),
        0);
    assert_string_equal(c.psi_path, "/tmp/p");
    assert_true(c.high == 20 && c.low == 2.5 && c.interval_ms == 300 && c.step_mib == 8);
    assert_false(c.off);
    assert_int_equal(reclaim_parse_options(&c, "off", &err), 0);
    assert_true(c.off);
    c = cfg();
    assert_int_equal(reclaim_parse_options(&c, "high=5,low=6", &err), -EINVAL);
    assert_non_null(strstr(err.msg, "below high"));
    assert_int_equal(reclaim_parse_options(&c, "bogus=1", &err), -EINVAL);
    assert_int_equal(reclaim_parse_options(&c, "interval_ms=10", &err), -EINVAL);
    assert_int_equal(reclaim_parse_options(&c, "step_mib=-1", &err), -EINVAL);
    assert_int_equal(reclaim_parse_options(&c, "high", &err), -EINVAL);
    assert_int_equal(reclaim_parse_options(&c, "high=nan", &err), -EINVAL);
    assert_int_equal(reclaim_parse_options(&c, "trigger_stall_ms=2001", &err), -EINVAL);
}

static int check(const char *text, json_t **out, struct wisp_err *err)
{
    json_t *def = json_loads(text, 0, NULL);
    assert_non_null(def);
    int ret = reclaim_check_def(def, err);
    *out = def;
    return ret;
}

static void test_definition(void **state)
{
    (void)state;
    struct wisp_err err = {0};
    json_t *def;
    assert_int_equal(check("{\"memory_mib\": 512, \"balloon\": {\"auto\": true}}", &def, &err), 0);
    json_t *b = json_object_get(def, "balloon");
    assert_int_equal(json_integer_value(json_object_get(b, "amount_mib")), 0);
    assert_int_equal(json_integer_value(json_object_get(b, "stats_polling_interval_s")), 1);
    assert_true(json_is_true(json_object_get(b, "deflate_on_oom")));
    assert_int_equal(json_integer_value(json_object_get(b, "auto_min_mib")), 128);
    assert_int_equal(json_integer_value(json_object_get(b, "auto_margin_mib")), 64);
    json_decref(def);
    /* a small guest: floor 32, margin 16; deflate_on_oom as given */
    assert_int_equal(check("{\"memory_mib\": 64, \"balloon\": {\"auto\": true, \"deflate_on_oom\": "
                           "false, \"amount_mib\": 0}}",
                           &def, &err),
                     0);
    b = json_object_get(def, "balloon");
    assert_int_equal(json_integer_value(json_object_get(b, "auto_min_mib")), 32);
    assert_int_equal(json_integer_value(json_object_get(b, "auto_margin_mib")), 16);
    assert_false(json_is_true(json_object_get(b, "deflate_on_oom")));
    json_decref(def);
    /* a guest smaller than the default floor and margin: both become its memory, and what
     * was filled in checks again (reclaim_fuzz found a margin of 16 above a 12 MiB guest) */
    assert_int_equal(check("{\"memory_mib\": 12, \"balloon\": {\"auto\": true}}", &def, &err), 0);
    b = json_object_get(def, "balloon");
    assert_int_equal(json_integer_value(json_object_get(b, "auto_min_mib")), 12);
    assert_int_equal(json_integer_value(json_object_get(b, "auto_margin_mib")), 12);
    assert_int_equal(reclaim_check_def(def, &err), 0);
    json_decref(def);
    /* no auto: left to wisp-vmm as it is */
    assert_int_equal(check("{\"memory_mib\": 64, \"balloon\": {\"amount_mib\": 8}}", &def, &err),
                     0);
    assert_null(json_object_get(json_object_get(def, "balloon"), "auto_min_mib"));
    json_decref(def);
    static const char *const bad[] = {
        "{\"memory_mib\": 64, \"balloon\": {\"auto\": 1}}",
        "{\"memory_mib\": 64, \"balloon\": {\"auto_min_mib\": 8}}",
        "{\"memory_mib\": 64, \"balloon\": {\"auto\": true, \"stats_polling_interval_s\": 0}}",
        "{\"memory_mib\": 64, \"balloon\": {\"auto\": true, \"auto_min_mib\": 65}}",
        "{\"memory_mib\": 64, \"balloon\": {\"auto\": true, \"amount_mib\": 40}}",
        "{\"memory_mib\": 64, \"balloon\": {\"auto\": true, \"auto_margin_mib\": 1}}",
        "{\"memory_mib\": 64, \"balloon\": {\"auto\": true, \"auto_min_mib\": -1}}",
        "{\"memory_mib\": 64, \"balloon\": {\"auto\": true, \"auto_min_mib\": \"8\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(check(bad[i], &def, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "balloon"));
        json_decref(def);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_hysteresis),
        cmocka_unit_test(test_inflate_idle_first),
        cmocka_unit_test(test_floor_and_margin),
        cmocka_unit_test(test_not_yet),
        cmocka_unit_test(test_guest_needs),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_deflate_busy_first),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_definition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
