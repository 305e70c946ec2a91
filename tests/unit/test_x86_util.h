/* Helpers shared by the x86 boot unit tests: temporary files and guest memory readers. */
#ifndef WISP_TESTS_UNIT_TEST_X86_UTIL_H
#define WISP_TESTS_UNIT_TEST_X86_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvm/guest_mem.h"

/* Writes `len` bytes to a new temporary file; returns its path (malloc'd) or NULL. */
static inline char *x86_test_tmpfile(const void *data, size_t len)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *path = NULL;
    if (asprintf(&path, "%s/wisp-x86-test-XXXXXX", dir) < 0)
        return NULL;
    int fd = mkstemp(path);
    if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len)) {
        if (fd >= 0)
            close(fd);
        free(path);
        return NULL;
    }
    close(fd);
    return path;
}

static inline void x86_test_rmfile(char *path)
{
    if (path)
        unlink(path);
    free(path);
}

static inline uint64_t x86_test_read64(const struct guest_mem *mem, uint64_t gpa)
{
    uint64_t v = 0;
    if (guest_mem_read(mem, gpa, &v, sizeof(v)) < 0)
        abort();
    return v;
}

static inline uint32_t x86_test_read32(const struct guest_mem *mem, uint64_t gpa)
{
    uint32_t v = 0;
    if (guest_mem_read(mem, gpa, &v, sizeof(v)) < 0)
        abort();
    return v;
}

#endif
