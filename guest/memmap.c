/*
 * Prints the memory map from the PVH start info, one "e820: START END TYPE" line per entry, then
 * checks that the RAM is really there: it writes a distinct value near the end of every RAM range
 * above 1 MiB (and at the start and middle of ranges above 4 GiB) and reads all of them back.
 */
#include "guest.h"

#define MAX_PROBES 64

static uint64_t probes[MAX_PROBES];
static unsigned nr_probes;

static void add_probe(uint64_t paddr)
{
    if (nr_probes < MAX_PROBES)
        probes[nr_probes++] = paddr & ~7ull;
}

static uint64_t probe_value(uint64_t paddr)
{
    return paddr ^ 0x5a5aa5a5c3c33c3cull;
}

void guest_main(void)
{
    unsigned n = guest_memmap_count();
    GUEST_ASSERT(n > 0);
    guest_printf("memmap: %u entries\n", n);
    for (unsigned i = 0; i < n; i++) {
        const struct guest_memmap_entry *e = guest_memmap(i);
        guest_printf("e820: 0x%lx 0x%lx %u\n", (unsigned long)e->addr,
                     (unsigned long)(e->addr + e->size), e->type);
        if (e->type != 1 || e->addr < 0x100000 || e->size < 4096)
            continue;
        add_probe(e->addr + e->size - 8);
        if (e->addr >= 1ull << 32) {
            add_probe(e->addr);
            add_probe(e->addr + e->size / 2);
        }
    }
    for (unsigned i = 0; i < nr_probes; i++)
        writeq(probes[i], probe_value(probes[i]));
    for (unsigned i = 0; i < nr_probes; i++)
        GUEST_ASSERT_EQ(readq(probes[i]), probe_value(probes[i]));
    guest_printf("memcheck: %u probes ok\n", nr_probes);
    guest_printf("memmap: end\n");
}
