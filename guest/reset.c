/* Pulses the reset line through the i8042; the VMM must end the VM (status 0) at once. */
#include "guest.h"

void guest_main(void)
{
    guest_printf("reset: writing 0xfe to port 0x64\n");
    guest_reset_i8042();
    guest_udelay(2000000);
    guest_printf("reset: still running 2 s after the reset request\n");
    guest_exit(GUEST_EXIT_FAIL);
}
