/* Number and size parsing with errors for sign, junk and overflow. */
#include "common/parse.h"

#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s) || *s == '-' || *s == '+')
        return -EINVAL;
    /* Decimal, or hex with 0x: a leading zero is not octal ("010" is ten, as qemu-img reads
     * sizes). strtoull with base 0 would read "010" as 8. */
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        if (!isxdigit((unsigned char)*s))
            return -EINVAL;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno == ERANGE)
        return -ERANGE;
    if (end == s || *end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

static int suffix_shift(const char *suffix, uint64_t default_unit, uint64_t *mult)
{
    static const char units[] = "KMGTPE";
    if (*suffix == '\0') {
        *mult = default_unit;
        return 0;
    }
    if ((suffix[0] == 'b' || suffix[0] == 'B') && suffix[1] == '\0') {
        *mult = 1;
        return 0;
    }
    const char *u = strchr(units, toupper((unsigned char)suffix[0]));
    if (!u)
        return -EINVAL;
    const char *rest = suffix + 1;
    if (strcmp(rest, "") && strcmp(rest, "B") && strcmp(rest, "iB") && strcmp(rest, "ib") &&
        strcmp(rest, "b"))
        return -EINVAL;
    *mult = 1ULL << (10 * (u - units + 1));
    return 0;
}

int parse_size(const char *s, uint64_t default_unit, uint64_t *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -EINVAL;
    const char *p = s;
    while (isdigit((unsigned char)*p))
        p++;
    const char *frac = NULL;
    if (*p == '.') {
        frac = p + 1;
        p++;
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        while (isdigit((unsigned char)*p))
            p++;
    }
    uint64_t mult;
    if (suffix_shift(p, default_unit, &mult) < 0)
        return -EINVAL;
    if (frac && mult == 1)
        return -EINVAL; /* fractional bytes make no sense */
    char whole[32];
    size_t wlen = (size_t)((frac ? frac - 1 : p) - s);
    if (wlen >= sizeof(whole))
        return -ERANGE;
    memcpy(whole, s, wlen);
    whole[wlen] = '\0';
    uint64_t w;
    int r = parse_u64(whole, &w);
    if (r < 0)
        return r;
    uint64_t v;
    if (__builtin_mul_overflow(w, mult, &v))
        return -ERANGE;
    if (frac) {
        /* add the fractional part: digits / 10^n * mult, truncated to bytes */
        long double f = strtold(frac - 1, NULL) * (long double)mult;
        if (__builtin_add_overflow(v, (uint64_t)f, &v))
            return -ERANGE;
    }
    *out = v;
    return 0;
}

const char *format_size(uint64_t bytes, char *buf, unsigned buflen)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    unsigned i = 0;
    double v = (double)bytes;
    while (v >= 1024.0 && i + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        i++;
    }
    if (i == 0)
        snprintf(buf, buflen, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, buflen, "%.3g %s", v, units[i]);
    return buf;
}

int parse_kv_list(const char *s, char *buf, struct kv_item *items, unsigned max)
{
    unsigned n = 0;
    char *out = buf;
    const char *p = s;
    while (*p) {
        if (n == max)
            return -E2BIG;
        items[n] = (struct kv_item){.key = out};
        bool in_value = false;
        for (; *p; p++) {
            if (*p == ',' && p[1] == ',' && in_value) { /* an escaped comma */
                *out++ = ',';
                p++;
                continue;
            }
            if (*p == ',')
                break;
            if (*p == '=' && !in_value) {
                *out++ = '\0';
                items[n].value = out;
                in_value = true;
                continue;
            }
            *out++ = *p;
        }
        *out++ = '\0';
        if (!items[n].key[0])
            return -EINVAL;
        n++;
        if (*p == ',')
            p++;
    }
    if (n == 0) /* every item ends with its own NUL: the buffer holds strlen(s) + 1 bytes */
        *out = '\0';
    return (int)n;
}

int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"on", "yes", "true", "1"}, *const no[] = {"off", "no",
                                                                                "false", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcmp(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcmp(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

int parse_unprivileged_id(const char *flag, const char *v, uint32_t *out, struct wisp_err *err)
{
    uint64_t n;
    if (parse_u64(v, &n) < 0 || n >= UINT32_MAX)
        return wisp_err_set(err, EINVAL, "%s: '%s' is not a numeric id", flag, v);
    if (n == 0)
        return wisp_err_set(err, EINVAL, "%s: 0 is root's: give an unprivileged id", flag);
    *out = (uint32_t)n;
    return 0;
}
