/* Parsing of numbers and sizes given by people on command lines and in config files. */
#ifndef WISP_COMMON_PARSE_H
#define WISP_COMMON_PARSE_H

#include <stdbool.h>
#include <stdint.h>

/* Parses a whole decimal (or 0x-prefixed hex) unsigned integer; a leading zero is still decimal
 * ("010" is 10, never octal). Rejects sign, junk and overflow. Returns 0 or -EINVAL / -ERANGE. */
int parse_u64(const char *s, uint64_t *out);

/*
 * Parses a byte size with an optional suffix, as qemu-img does: none or B = bytes unless
 * default_unit says otherwise; k/K, M, G, T, P, E = powers of 1024 (an optional trailing "iB"
 * or "B" is accepted: "64KiB", "2MB"). Fractions are allowed with a suffix ("1.5G").
 * default_unit is the multiplier for a bare number (1 for bytes, 1 << 20 for MiB).
 * Returns 0 or -EINVAL / -ERANGE.
 */
int parse_size(const char *s, uint64_t default_unit, uint64_t *out);

/*
 * A "key=value,key=value" list as command-line device options take it (QEMU's syntax: a comma
 * inside a value is written twice, "path=a,,b" is "a,b"). Fills items with pointers into `buf`
 * (a copy of s the caller provides, at least strlen(s) + 1 bytes); an item without '=' has a
 * NULL value. Returns the count, or -E2BIG (more than max) / -EINVAL (an empty key).
 */
struct kv_item {
    const char *key;
    const char *value;
};
int parse_kv_list(const char *s, char *buf, struct kv_item *items, unsigned max);
/* "on"/"yes"/"true"/"1" or "off"/"no"/"false"/"0"; -EINVAL otherwise. */
int parse_bool(const char *s, bool *out);

/* A numeric uid or gid that is not root's (0), for the options that drop privileges (wisp-vmm's
 * and wisp-jailer's --uid/--gid); flag names the option in err. Returns 0 or -EINVAL. */
struct wisp_err;
int parse_unprivileged_id(const char *flag, const char *v, uint32_t *out, struct wisp_err *err);

/* Formats a byte count as "1.5 GiB" into buf; returns buf. */
const char *format_size(uint64_t bytes, char *buf, unsigned buflen);

#endif
