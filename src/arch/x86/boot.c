/* x86_boot_load(): detects the kernel format and assembles the boot-time guest memory. */
#include "arch/x86/boot.h"

#include <errno.h>
#include <string.h>

int x86_boot_load(const struct guest_mem *mem, const struct x86_boot_params *p,
                  struct x86_boot_entry *entry, struct wisp_err *err)
{
    memset(entry, 0, sizeof(*entry));
    return wisp_err_set(err, ENOSYS, "x86_boot_load: not implemented yet (%s)", p->kernel_path);
}
