/* NUMA placement (docs/wispd.md, "NUMA"): the host's nodes from libnuma, or a described
 * topology for tests, and the choice of one node for a VM's vCPUs and memory. The choice looks
 * at the nodes only (counters kept as VMs start and end), never at the other VMs. */
#include <errno.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cpulist.h"
#include "common/parse.h"
#include "placement.h"

int numa_topology_parse(const char *desc, struct numa_topology *t, struct wisp_err *err)
{
    memset(t, 0, sizeof(*t));
    const char *p = desc;
    while (*p) {
        size_t n = strcspn(p, " ");
        char item[256], *c1, *c2;
        if (n == 0) {
            p++;
            continue;
        }
        if (n >= sizeof(item) || t->nr_nodes == NUMA_MAX_NODES)
            return wisp_err_set(err, EINVAL, "NUMA topology: '%.*s': too long or too many nodes",
                                (int)n, p);
        memcpy(item, p, n);
        item[n] = '\0';
        p += n;
        struct numa_node_info *node = &t->nodes[t->nr_nodes];
        uint64_t id, mib;
        c1 = strchr(item, ':');
        c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            return wisp_err_set(err, EINVAL, "NUMA topology: '%s' is not NODE:CPUS:MIB", item);
        *c1 = *c2 = '\0';
        if (parse_u64(item, &id) < 0 || id >= NUMA_MAX_NODES || parse_u64(c2 + 1, &mib) < 0 ||
            cpulist_parse(c1 + 1, (size_t)-1, &node->cpus) < 0)
            return wisp_err_set(err, EINVAL, "NUMA topology: node '%s' (%s, %s MiB) does not parse",
                                item, c1 + 1, c2 + 1);
        if (numa_find(t, (int)id) >= 0)
            return wisp_err_set(err, EINVAL, "NUMA topology: node %s twice", item);
        node->id = (int)id;
        node->nr_cpus = (unsigned)CPU_COUNT(&node->cpus);
        node->mem_mib = mib;
        t->nr_nodes++;
    }
    if (!t->nr_nodes)
        return wisp_err_set(err, EINVAL, "NUMA topology: no node");
    return 0;
}

int numa_topology_host(struct numa_topology *t, struct wisp_err *err)
{
    memset(t, 0, sizeof(*t));
    if (numa_available() < 0) { /* no NUMA: one node of every CPU */
        t->nr_nodes = 1;
        sched_getaffinity(0, sizeof(t->nodes[0].cpus), &t->nodes[0].cpus);
        t->nodes[0].nr_cpus = (unsigned)CPU_COUNT(&t->nodes[0].cpus);
        return 0;
    }
    struct bitmask *cpus = numa_allocate_cpumask();
    if (!cpus)
        return wisp_err_set(err, ENOMEM, "out of memory");
    for (int n = 0; n <= numa_max_node() && t->nr_nodes < NUMA_MAX_NODES; n++) {
        if (!numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)n))
            continue;
        struct numa_node_info *node = &t->nodes[t->nr_nodes];
        long long size = numa_node_size64(n, NULL);
        if (numa_node_to_cpus(n, cpus) < 0)
            continue;
        node->id = n;
        for (unsigned c = 0; c < cpus->size && c < CPU_SETSIZE; c++)
            if (numa_bitmask_isbitset(cpus, c))
                CPU_SET(c, &node->cpus);
        node->nr_cpus = (unsigned)CPU_COUNT(&node->cpus);
        node->mem_mib = size > 0 ? (uint64_t)size >> 20 : 0;
        if (node->nr_cpus) /* a memory-only node takes no VM */
            t->nr_nodes++;
    }
    numa_free_cpumask(cpus);
    if (!t->nr_nodes)
        return wisp_err_set(err, ENODEV, "libnuma: no node with CPUs");
    return 0;
}

int numa_find(const struct numa_topology *t, int node)
{
    for (unsigned i = 0; i < t->nr_nodes; i++)
        if (t->nodes[i].id == node)
            return (int)i;
    return -1;
}

int numa_pick(const struct numa_topology *t, unsigned vcpus, uint64_t mem_mib,
              const cpu_set_t *allowed)
{
    int best = -1;
    uint64_t best_load = 0, best_free = 0;
    for (unsigned i = 0; i < t->nr_nodes; i++) {
        const struct numa_node_info *n = &t->nodes[i];
        if (n->used_mib > n->mem_mib || n->mem_mib - n->used_mib < mem_mib || !n->nr_cpus)
            continue;
        if (allowed) {
            cpu_set_t both;
            CPU_AND(&both, &n->cpus, allowed);
            if (!CPU_EQUAL(&both, allowed))
                continue;
        }
        /* vCPUs per CPU once this VM is there, in thousandths */
        uint64_t load = ((uint64_t)n->used_vcpus + vcpus) * 1000 / n->nr_cpus;
        uint64_t free_mib = n->mem_mib - n->used_mib;
        if (best < 0 || load < best_load || (load == best_load && free_mib > best_free)) {
            best = (int)i;
            best_load = load;
            best_free = free_mib;
        }
    }
    return best;
}

void numa_account(struct numa_topology *t, int idx, unsigned vcpus, uint64_t mem_mib, int sign)
{
    if (idx < 0 || (unsigned)idx >= t->nr_nodes)
        return;
    struct numa_node_info *n = &t->nodes[idx];
    if (sign > 0) {
        n->used_vcpus += vcpus;
        n->used_mib += mem_mib;
    } else {
        n->used_vcpus -= vcpus < n->used_vcpus ? vcpus : n->used_vcpus;
        n->used_mib -= mem_mib < n->used_mib ? mem_mib : n->used_mib;
    }
}
