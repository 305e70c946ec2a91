/* Ends through the test-exit port with the status given as "exit=N" (default 42). */
#include "guest.h"

void guest_main(void)
{
    int code = (int)guest_cmdline_u64("exit", 42);
    guest_printf("exit_status: exiting with %d\n", code);
    guest_exit(code);
}
