/* Prints the memory map from the PVH start info, one "e820: START END TYPE" line per entry. */
#include "guest.h"

void guest_main(void)
{
    unsigned n = guest_memmap_count();
    GUEST_ASSERT(n > 0);
    guest_printf("memmap: %u entries\n", n);
    for (unsigned i = 0; i < n; i++) {
        const struct guest_memmap_entry *e = guest_memmap(i);
        guest_printf("e820: 0x%lx 0x%lx %u\n", (unsigned long)e->addr,
                     (unsigned long)(e->addr + e->size), e->type);
    }
    guest_printf("memmap: end\n");
}
