/* The guest of bench/snapshot's restore latency: writes boot marker 1 (port 0x440) and prints
 * "tick: ready" first thing, then forever writes marker 2 and prints "." every `tick_us`
 * microseconds (default 50). Run with --boot-marker, wisp-vmm prints the time of each marker:
 * after a fresh boot the first marker is the guest's first instruction of its own; after a
 * restore, the first marker 2 comes within one tick of the guest's first instruction, and the
 * first "." on COM1 is its first output. */
#include "guest.h"

void guest_main(void)
{
    uint64_t tick = guest_cmdline_u64("tick_us", 50);
    guest_boot_marker(1);
    guest_printf("tick: ready\n");
    for (;;) {
        guest_boot_marker(2);
        guest_putc('.');
        guest_udelay(tick);
    }
}
