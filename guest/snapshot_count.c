/* Counts and prints, for the snapshot tests (tests/snapshot/): "count N" lines, one every
 * `delay_us` microseconds (command line, default 1000), up to `limit` (default: forever), then
 * "count done". A VM snapshotted while it counts and restored elsewhere goes on with the next
 * number: every line of both runs together is the sequence 0, 1, 2, ... without a gap. */
#include "guest.h"

void guest_main(void)
{
    uint64_t delay = guest_cmdline_u64("delay_us", 1000);
    uint64_t limit = guest_cmdline_u64("limit", ~0ull);
    guest_printf("count: start\n");
    for (uint64_t n = 0; n < limit; n++) {
        guest_printf("count %lu\n", (unsigned long)n);
        guest_udelay(delay);
    }
    guest_printf("count done\n");
}
