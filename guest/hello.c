/* Prints a greeting and the command line on COM1, then passes. */
#include "guest.h"

void guest_main(void)
{
    guest_printf("hello from the wisp guest kit\n");
    guest_printf("cmdline: %s\n", guest_cmdline());
}
