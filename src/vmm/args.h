/* wisp-vmm's command line: a pure parser that unit tests can call. */
#ifndef WISP_VMM_ARGS_H
#define WISP_VMM_ARGS_H

#include "common/err.h"
#include "vmm/config.h"

/*
 * Parses argv[1..argc-1] into *cfg (vm_config_init's defaults first). Values point into argv
 * or into copies cfg owns.
 * Accepts "--flag VALUE" and "--flag=VALUE". Returns 0, or -EINVAL with err naming the flag and
 * what is wrong (the caller prints it and exits with status 2). Touches no global state.
 */
int vmm_args_parse(int argc, char *const argv[], struct vm_config *cfg, struct wisp_err *err);

/* The --help text. */
extern const char vmm_usage_text[];

#endif
