/* CPU lists ("0-3,8,10-11") to and from cpu_set_t. */
#include "common/cpulist.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int read_cpu(const char **p, const char *end, unsigned *out)
{
    const char *c = *p;
    unsigned long v = 0;
    if (c == end || *c < '0' || *c > '9')
        return -EINVAL;
    for (; c < end && *c >= '0' && *c <= '9'; c++) {
        v = v * 10 + (unsigned long)(*c - '0');
        if (v >= CPU_SETSIZE)
            return -ERANGE;
    }
    *p = c;
    *out = (unsigned)v;
    return 0;
}

int cpulist_parse(const char *s, size_t len, cpu_set_t *out)
{
    const char *p = s, *end = s + (len == (size_t)-1 ? strlen(s) : len);
    CPU_ZERO(out);
    while (p < end) {
        unsigned a, b;
        int r = read_cpu(&p, end, &a);
        if (r < 0)
            return r;
        b = a;
        if (p < end && *p == '-') {
            p++;
            if ((r = read_cpu(&p, end, &b)) < 0)
                return r;
            if (b < a)
                return -EINVAL;
        }
        for (unsigned c = a; c <= b; c++)
            CPU_SET(c, out);
        if (p < end && *p != ',')
            return -EINVAL;
        if (p < end && ++p == end) /* a trailing comma */
            return -EINVAL;
    }
    return CPU_COUNT(out) ? 0 : -EINVAL;
}

int cpulist_format(const cpu_set_t *set, char *buf, size_t size)
{
    size_t n = 0;
    if (size == 0)
        return -ENOSPC;
    buf[0] = '\0';
    for (unsigned c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, set))
            continue;
        unsigned e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set))
            e++;
        int w = e == c ? snprintf(buf + n, size - n, "%s%u", n ? "," : "", c)
                       : snprintf(buf + n, size - n, "%s%u-%u", n ? "," : "", c, e);
        if (w < 0 || (size_t)w >= size - n)
            return -ENOSPC;
        n += (size_t)w;
        c = e;
    }
    return (int)n;
}
