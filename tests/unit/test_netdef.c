/* wispd's network definitions (src/wispd/netdef.c): IPv4 addresses, subnets, MACs, overlaps,
 * and what `net create` and a VM's nics[] accept and refuse. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "wispd/netdef.h"

static void test_ipv4(void **state)
{
    uint32_t a;
    char out[16];
    assert_int_equal(net_parse_ipv4("198.51.100.7", &a), 0);
    assert_int_equal(a, 0xc6336407);
    net_format_ipv4(a, out);
    assert_string_equal(out, "198.51.100.7");
    assert_int_equal(net_parse_ipv4("0.0.0.0", &a), 0);
    assert_int_equal(net_parse_ipv4("255.255.255.255", &a), 0);
    const char *bad[] = {"",         "1.2.3",  "1.2.3.4.5", "256.1.1.1",  "01.2.3.4",   "1.2.3.4 ",
                         " 1.2.3.4", "1..3.4", "1.2.3.-4",  "1.2.3.4/24", "1000.1.1.1", "a.b.c.d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(net_parse_ipv4(bad[i], &a), -EINVAL);
}

static void test_cidr_and_overlap(void **state)
{
    uint32_t a;
    unsigned p;
    assert_int_equal(net_parse_cidr("198.51.100.0/24", &a, &p), 0);
    assert_int_equal(p, 24);
    assert_int_equal(net_parse_cidr("0.0.0.0/0", &a, &p), 0);
    assert_int_equal(net_parse_cidr("10.0.0.0/32", &a, &p), 0);
    const char *bad[] = {"10.0.0.0",    "10.0.0.0/", "10.0.0.0/33",   "10.0.0.0/024",
                         "10.0.0.0/2a", "/24",       "10.0.0.0/24/1", "10.0.0.0/100"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(net_parse_cidr(bad[i], &a, &p), -EINVAL);
    assert_true(net_overlap(0xc6336400, 24, 0xc6336480, 25));  /* contains */
    assert_true(net_overlap(0xc6336480, 25, 0xc6336400, 24));  /* is contained */
    assert_false(net_overlap(0xc6336400, 25, 0xc6336480, 25)); /* neighbours */
    assert_true(net_overlap(0x0a000005, 32, 0x0a000000, 8));
    assert_true(net_overlap(0x01020304, 0, 0xc6336400, 24)); /* a default route */
}

static void test_mac(void **state)
{
    uint64_t m;
    char out[18];
    assert_int_equal(net_parse_mac("0A:77:69:ff:00:01", &m), 0);
    assert_true(m == 0x0a7769ff0001ull);
    net_format_mac(m, out);
    assert_string_equal(out, "0a:77:69:ff:00:01");
    assert_true(net_mac_usable(m));
    assert_int_equal(net_parse_mac("01:00:5e:00:00:01", &m), 0);
    assert_false(net_mac_usable(m)); /* multicast */
    assert_int_equal(net_parse_mac("00:00:00:00:00:00", &m), 0);
    assert_false(net_mac_usable(m));
    const char *bad[] = {"",
                         "0a:77:69:ff:00",
                         "0a:77:69:ff:00:01:02",
                         "0a-77-69-ff-00-01",
                         "0a:77:69:ff:00:1",
                         "0a:77:69:ff:00:0g",
                         "0a:77:69:ff:00:01 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(net_parse_mac(bad[i], &m), -EINVAL);
}

static int check(const char *text, struct netdef *n, struct wisp_err *err)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    int ret = netdef_check(j, n, err);
    json_decref(j);
    return ret;
}

static void test_netdef_defaults(void **state)
{
    struct netdef n;
    struct wisp_err err = {0};
    char a[16];
    assert_int_equal(check("{\"name\": \"lan\", \"subnet\": \"198.51.100.0/24\"}", &n, &err), 0);
    assert_string_equal(n.bridge, "wb-lan");
    net_format_ipv4(n.gateway, a);
    assert_string_equal(a, "198.51.100.1");
    net_format_ipv4(n.range_start, a);
    assert_string_equal(a, "198.51.100.2");
    net_format_ipv4(n.range_end, a);
    assert_string_equal(a, "198.51.100.254");
    assert_false(n.nat || n.dns);
    /* the gateway last: the range below it */
    assert_int_equal(check("{\"name\": \"b\", \"subnet\": \"10.1.0.0/16\", \"gateway\": "
                           "\"10.1.255.254\", \"nat\": true}",
                           &n, &err),
                     0);
    net_format_ipv4(n.range_end, a);
    assert_string_equal(a, "10.1.255.253");
    assert_true(n.nat);
    /* what it gives back loads as the same network */
    json_t *back = netdef_to_json(&n);
    struct netdef again;
    assert_int_equal(netdef_check(back, &again, &err), 0);
    assert_memory_equal(&n, &again, sizeof(n));
    json_decref(back);
}

static void test_netdef_refused(void **state)
{
    static const struct {
        const char *def, *words;
    } cases[] = {
        {"{\"name\": \"x\"}", "subnet"},
        {"{\"name\": \"x\", \"subnet\": \"1.2.3.0/24\", \"vlan\": 3}", "vlan"},
        {"{\"name\": \"waytoolongname\", \"subnet\": \"198.51.100.0/24\"}", "name"},
        {"{\"name\": \"-x\", \"subnet\": \"198.51.100.0/24\"}", "name"},
        {"{\"name\": \"a b\", \"subnet\": \"198.51.100.0/24\"}", "name"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/7\"}", "8 to 30"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/31\"}", "8 to 30"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.1/24\"}", "host bits"},
        {"{\"name\": \"x\", \"subnet\": \"127.0.0.0/8\"}", "loopback"},
        {"{\"name\": \"x\", \"subnet\": \"169.254.0.0/16\"}", "link-local"},
        {"{\"name\": \"x\", \"subnet\": \"230.0.0.0/8\"}", "multicast"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/24\", \"gateway\": \"198.51.100.0\"}",
         "gateway"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/24\", \"gateway\": \"198.51.101.1\"}",
         "gateway"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/24\", \"dhcp_range\": "
         "\"198.51.100.1-198.51.100.9\"}",
         "holds the gateway"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/24\", \"dhcp_range\": "
         "\"198.51.100.20-198.51.100.9\"}",
         "starts after"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/24\", \"dhcp_range\": "
         "\"198.51.100.20-198.51.100.255\"}",
         "within"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/24\", \"dhcp_range\": \"x-y\"}", "A-B"},
        {"{\"name\": \"x\", \"subnet\": \"198.51.100.0/24\", \"nat\": \"yes\"}", "nat"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct netdef n;
        struct wisp_err err = {0};
        assert_int_equal(check(cases[i].def, &n, &err), -EINVAL);
        if (!strstr(err.msg, cases[i].words))
            fail_msg("%s: '%s' lacks '%s'", cases[i].def, err.msg, cases[i].words);
    }
}

static void test_nics(void **state)
{
    static const struct {
        const char *nics;
        int ret;
    } cases[] = {
        {"[{\"id\": \"a\", \"network\": \"lan\"}, {\"id\": \"b\", \"tap\": \"t0\", \"mac\": "
         "\"02:00:00:00:00:01\"}]",
         0},
        {"[{\"id\": \"a\"}]", -EINVAL},
        {"[{\"id\": \"a\", \"network\": \"lan\", \"tap\": \"t0\"}]", -EINVAL},
        {"[{\"id\": \"a\", \"tap\": \"0123456789abcdef\"}]", -EINVAL},
        {"[{\"id\": \"a\", \"network\": \"lan\", \"mac\": \"ff:ff:ff:ff:ff:ff\"}]", -EINVAL},
        {"[{\"id\": \"a\", \"network\": \"lan\", \"mac\": \"nonsense\"}]", -EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = json_loads(cases[i].nics, 0, NULL);
        struct wisp_err err = {0};
        assert_non_null(j);
        assert_int_equal(netdef_check_nics(j, &err), cases[i].ret);
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_cidr_and_overlap),
        cmocka_unit_test(test_mac),
        cmocka_unit_test(test_netdef_defaults),
        cmocka_unit_test(test_netdef_refused),
        cmocka_unit_test(test_nics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
