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

/* Formats a byte count as "1.5 GiB" into buf; returns buf. */
const char *format_size(uint64_t bytes, char *buf, unsigned buflen);

#endif
