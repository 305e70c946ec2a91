/*
 * RAM above 4 GiB: pagetables.S maps only the first 4 GiB statically; here ring 3 adds 2 MiB
 * mappings for the memory map's RAM above the hole. The tables are plain user-accessible memory,
 * so this runs natively; each directory is filled before its PDPT entry makes it visible, and
 * no TLB flush is needed because not-present entries are never cached (SDM vol. 3 4.10.2.3).
 */
#include "guest.h"
#include "kit.h"

#define HIGH_GIB_MAX 60       /* 4 .. 64 GiB */
#define PTE_TABLE    0x007ull /* present, writable, user */
#define PTE_LARGE    0x087ull /* + 2 MiB page */

extern uint64_t pdpt[512];
static uint64_t high_pd[HIGH_GIB_MAX][512] __attribute__((aligned(4096)));

/* Identity-maps GiB number `gib` (4 .. 63) with 2 MiB pages, unless it is mapped already. */
static void map_gib(uint64_t gib)
{
    if (gib < 4 || gib >= 4 + HIGH_GIB_MAX || (pdpt[gib] & 1))
        return;
    uint64_t *pd = high_pd[gib - 4];
    for (unsigned j = 0; j < 512; j++)
        pd[j] = (gib << 30) + ((uint64_t)j << 21) + PTE_LARGE;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    pdpt[gib] = (uint64_t)(uintptr_t)pd + PTE_TABLE;
}

bool guest_map_phys(uint64_t addr, uint64_t size)
{
    uint64_t end = addr + size;
    if (end < addr || end > (4ull + HIGH_GIB_MAX) << 30)
        return false;
    for (uint64_t gib = addr >> 30; gib < (end + (1ull << 30) - 1) >> 30; gib++)
        map_gib(gib);
    return true;
}

void guest_paging_init(void)
{
    uint64_t top = 0;
    for (unsigned i = 0; i < guest_memmap_count(); i++) {
        const struct guest_memmap_entry *e = guest_memmap(i);
        if (e->addr + e->size > top)
            top = e->addr + e->size;
    }
    uint64_t gib_end = (top + (1ull << 30) - 1) >> 30;
    if (gib_end > 4 + HIGH_GIB_MAX)
        gib_end = 4 + HIGH_GIB_MAX;
    for (uint64_t gib = 4; gib < gib_end; gib++)
        map_gib(gib);
}
