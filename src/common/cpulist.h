/* CPU lists as the kernel writes them (cpuset.cpus, Cpus_allowed_list): "0-3,8,10-11". */
#ifndef WISP_COMMON_CPULIST_H
#define WISP_COMMON_CPULIST_H

#include <sched.h>
#include <stddef.h>

/* Parses the whole of s (up to `len` bytes, or to its end when len is (size_t)-1) into *out:
 * comma-separated CPUs and ranges A-B (A <= B), each below CPU_SETSIZE, at least one CPU.
 * Returns 0 or -EINVAL (junk, an empty list, a reversed range) / -ERANGE (a CPU too high). */
int cpulist_parse(const char *s, size_t len, cpu_set_t *out);
/* Writes *set as a list ("0-3,8") into buf (NUL-terminated; "" for an empty set). Returns the
 * length, or -ENOSPC when buf is too small. */
int cpulist_format(const cpu_set_t *set, char *buf, size_t size);

#endif
