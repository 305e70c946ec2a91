/* The per-thread start hook (thread_kind.h). */
#include "common/thread_kind.h"

#include <stddef.h>

/* Set once before the first thread starts, read-only afterwards. */
static wisp_thread_enter_fn *enter_hook;

void wisp_thread_set_enter_hook(wisp_thread_enter_fn *fn)
{
    enter_hook = fn;
}

void wisp_thread_enter(enum wisp_thread_kind kind, const char *name)
{
    if (enter_hook)
        enter_hook(kind, name);
}
