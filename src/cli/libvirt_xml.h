/* libvirt domain XML (the subset of docs/wisp.md, "import-libvirt") into a wisp definition. */
#ifndef WISP_CLI_LIBVIRT_XML_H
#define WISP_CLI_LIBVIRT_XML_H

#include <jansson.h>
#include <stddef.h>

/* 0 and *def (a new definition, not yet checked by wispd) and *warnings (an array of strings:
 * what the import did not carry over; NULL to not take it), or -1 and err naming the element
 * that wisp does not support or that is wrong. Any bytes are safe input. */
int libvirt_to_def(const char *xml, size_t len, json_t **def, json_t **warnings, char *err,
                   size_t err_size);

#endif
