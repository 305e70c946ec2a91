/* Unit tests of wispd's NUMA placement (src/wispd/numa.c) against described topologies: the
 * choice of one node per VM as VMs start and end, memory that fits, CPUs asked for. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/cpulist.h"
#include "wispd/placement.h"

static struct numa_topology topo(const char *desc)
{
    struct numa_topology t;
    struct wisp_err err = {0};
    assert_int_equal(numa_topology_parse(desc, &t, &err), 0);
    return t;
}

static void test_parse(void **state)
{
    (void)state;
    struct numa_topology t = topo("0:0-3:8192 1:4-7,12:4096");
    assert_int_equal(t.nr_nodes, 2);
    assert_int_equal(t.nodes[1].id, 1);
    assert_int_equal(t.nodes[1].nr_cpus, 5);
    assert_int_equal(t.nodes[1].mem_mib, 4096);
    struct wisp_err err = {0};
    static const char *const bad[] = {"", "0:0-3", "x:0:1", "0:3-1:1", "0:0:1 0:1:1", "64:0:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(numa_topology_parse(bad[i], &t, &err), -EINVAL);
}

/* VMs of 2 vCPUs go round the nodes by load; the end of one frees its node's share. */
static void test_least_loaded(void **state)
{
    (void)state;
    struct numa_topology t = topo("0:0-3:8192 1:4-7:8192");
    int a = numa_pick(&t, 2, 1024, NULL);
    assert_int_equal(t.nodes[a].id, 0); /* a tie: the lower number */
    numa_account(&t, a, 2, 1024, 1);
    int b = numa_pick(&t, 2, 1024, NULL);
    assert_int_equal(t.nodes[b].id, 1);
    numa_account(&t, b, 2, 1024, 1);
    int c = numa_pick(&t, 2, 512, NULL); /* same load: node 0 and 1 have 7168 MiB free */
    assert_int_equal(t.nodes[c].id, 0);
    numa_account(&t, c, 2, 512, 1);
    assert_int_equal(t.nodes[numa_pick(&t, 1, 1, NULL)].id, 1); /* 0 is at 4/4, 1 at 2/4 */
    numa_account(&t, a, 2, 1024, -1);                           /* the first VM ends */
    numa_account(&t, c, 2, 512, -1);
    assert_int_equal(t.nodes[numa_pick(&t, 1, 1, NULL)].id, 0);
    assert_int_equal(t.nodes[0].used_vcpus, 0);
    assert_int_equal(t.nodes[0].used_mib, 0);
}

/* Uneven nodes: load is vCPUs per CPU, so the bigger node takes more VMs. */
static void test_uneven(void **state)
{
    (void)state;
    struct numa_topology t = topo("0:0-1:65536 1:2-9:65536");
    unsigned on[2] = {0, 0};
    for (int i = 0; i < 10; i++) {
        int n = numa_pick(&t, 1, 256, NULL);
        assert_true(n >= 0);
        on[n]++;
        numa_account(&t, n, 1, 256, 1);
    }
    assert_int_equal(on[0], 2);
    assert_int_equal(on[1], 8);
}

/* A VM goes only where its memory fits; none: -1 (not placed on one node). */
static void test_memory_fits(void **state)
{
    (void)state;
    struct numa_topology t = topo("0:0-3:4096 1:4-7:16384");
    numa_account(&t, 1, 8, 1024, 1); /* node 1 is busier, but node 0 cannot hold 6 GiB */
    assert_int_equal(t.nodes[numa_pick(&t, 1, 6144, NULL)].id, 1);
    assert_int_equal(numa_pick(&t, 1, 20000, NULL), -1);
    numa_account(&t, 1, 0, 15000, 1);
    assert_int_equal(numa_pick(&t, 1, 4097, NULL), -1);
    assert_int_equal(t.nodes[numa_pick(&t, 1, 4096, NULL)].id, 0);
}

/* placement.cpus: only a node holding all of them. */
static void test_allowed_cpus(void **state)
{
    (void)state;
    struct numa_topology t = topo("0:0-3:4096 1:4-7:4096 2:8-11:4096");
    cpu_set_t want;
    assert_int_equal(cpulist_parse("9-10", (size_t)-1, &want), 0);
    assert_int_equal(t.nodes[numa_pick(&t, 4, 1, &want)].id, 2);
    assert_int_equal(cpulist_parse("3-4", (size_t)-1, &want), 0); /* spans 0 and 1 */
    assert_int_equal(numa_pick(&t, 1, 1, &want), -1);
    assert_int_equal(numa_find(&t, 2), 2);
    assert_int_equal(numa_find(&t, 5), -1);
}

/* One node: every VM fits there (wispd does not place at all then: a no-op). */
static void test_one_node(void **state)
{
    (void)state;
    struct numa_topology t = topo("0:0-1:24000");
    for (int i = 0; i < 1000; i++) {
        int n = numa_pick(&t, 1, 16, NULL);
        assert_int_equal(n, 0);
        numa_account(&t, n, 1, 16, 1);
    }
    assert_int_equal(t.nodes[0].used_vcpus, 1000);
    assert_int_equal(t.nodes[0].used_mib, 16000);
}

/* The host's own topology parses through libnuma (this machine: one node). */
static void test_host(void **state)
{
    (void)state;
    struct numa_topology t;
    struct wisp_err err = {0};
    assert_int_equal(numa_topology_host(&t, &err), 0);
    assert_true(t.nr_nodes >= 1);
    assert_true(t.nodes[0].nr_cpus >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),        cmocka_unit_test(test_least_loaded),
        cmocka_unit_test(test_uneven),       cmocka_unit_test(test_memory_fits),
        cmocka_unit_test(test_allowed_cpus), cmocka_unit_test(test_one_node),
        cmocka_unit_test(test_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
