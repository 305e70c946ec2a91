/* The input of the fuzz targets that take a selector and a text: byte 0 selects the entry, the
 * rest is the text, copied into a buffer of its own with a NUL after it (a read past the end
 * is then ASan's to report). */
#ifndef WISP_FUZZ_TEXT_H
#define WISP_FUZZ_TEXT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The text (free() it), or NULL for an input of no bytes or more than max bytes, or when out
 * of memory: that input is not tried. */
static inline char *fuzz_text(const uint8_t *data, size_t size, size_t max)
{
    if (size < 1 || size > max)
        return NULL;
    char *text = malloc(size);
    if (!text)
        return NULL;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    return text;
}

#endif
