/* Cleanup attributes for locals, so early returns stay short and leak-free. */
#ifndef WISP_COMMON_CLEANUP_H
#define WISP_COMMON_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>

static inline void cleanup_free_fn(void *p)
{
    free(*(void **)p);
}

static inline void cleanup_close_fn(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

/* `cleanup_free char *buf = malloc(n);` is freed when buf goes out of scope. */
#define cleanup_free __attribute__((cleanup(cleanup_free_fn)))
/* `cleanup_close int fd = open(...);` is closed when fd goes out of scope (if >= 0). */
#define cleanup_close __attribute__((cleanup(cleanup_close_fn)))

/* Hands ownership out of a cleanup variable: `return steal_fd(&fd);` */
static inline int steal_fd(int *fd)
{
    int r = *fd;
    *fd = -1;
    return r;
}

static inline void *steal_ptr(void *pp)
{
    void **p = pp;
    void *r = *p;
    *p = NULL;
    return r;
}

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
