/* JSON (jansson) for API bodies and configuration files: parsing an object, and reading its
 * fields by a table of names and types, with errors that name the field and refuse unknown
 * ones. */
#ifndef WISP_API_JSON_H
#define WISP_API_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"

/* Parses `len` bytes of text as one JSON object. Duplicate keys, NUL characters in strings,
 * invalid UTF-8 and anything after the object are refused. -EINVAL with err naming `where`
 * and the line and column. The caller json_decref()s *out. */
int api_json_parse_object(const char *text, size_t len, const char *where, json_t **out,
                          struct wisp_err *err);

enum api_json_type {
    API_JSON_STRING, /* out: const char ** (into the object: valid while it lives) */
    API_JSON_BOOL,   /* out: bool * */
    API_JSON_UINT,   /* out: uint64_t *; an integer from 0 to `max` */
    API_JSON_OBJECT, /* out: json_t ** (borrowed) */
    API_JSON_ARRAY,  /* out: json_t ** (borrowed) */
};

struct api_json_field {
    const char *name;
    enum api_json_type type;
    bool required;
    void *out;
    bool *present; /* optional: set to whether the field was there (null counts as absent) */
    uint64_t max;  /* API_JSON_UINT: the largest value accepted; 0 means INT64_MAX */
};

/*
 * Reads obj's fields by the table: a field that is present must have its type (and range);
 * a required one must be present; a field the table does not name is refused, and the message
 * lists the known ones. `null` is taken as absent (as Firecracker's optional fields).
 * Outputs of absent fields are left as they are. Returns 0 or -EINVAL with err starting with
 * `where` ("machine-config: vcpu_count: ...").
 */
int api_json_read(const json_t *obj, const char *where, const struct api_json_field *fields,
                  size_t n, struct wisp_err *err);

/* "a string", "an integer", ... for messages. */
const char *api_json_type_name(const json_t *v);

#endif
