/* Reading JSON bodies by a table of fields (json.h). */
#include "api/json.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int api_json_parse_object(const char *text, size_t len, const char *where, json_t **out,
                          struct wisp_err *err)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!j)
        return wisp_err_set(err, EINVAL, "%s: malformed JSON at line %d, column %d: %s", where,
                            je.line, je.column, je.text);
    if (!json_is_object(j)) {
        int r = wisp_err_set(err, EINVAL, "%s: expected a JSON object, got %s", where,
                             api_json_type_name(j));
        json_decref(j);
        return r;
    }
    *out = j;
    return 0;
}

const char *api_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

static const char *type_wanted(enum api_json_type t)
{
    static const char *const names[] = {"a string", "a boolean", "an integer", "an object",
                                        "an array"};
    return names[t];
}

static int read_field(const json_t *v, const char *where, const struct api_json_field *f,
                      struct wisp_err *err)
{
    bool ok = false;
    switch (f->type) {
    case API_JSON_STRING:
        if ((ok = json_is_string(v)))
            *(const char **)f->out = json_string_value(v);
        break;
    case API_JSON_BOOL:
        if ((ok = json_is_boolean(v)))
            *(bool *)f->out = json_is_true(v);
        break;
    case API_JSON_UINT: {
        if (!(ok = json_is_integer(v)))
            break;
        json_int_t i = json_integer_value(v);
        uint64_t max = f->max ? f->max : (uint64_t)INT64_MAX;
        if (i < 0 || (uint64_t)i > max)
            return wisp_err_set(err, EINVAL, "%s: %s: %lld is out of range (0 to %llu)", where,
                                f->name, (long long)i, (unsigned long long)max);
        *(uint64_t *)f->out = (uint64_t)i;
        break;
    }
    case API_JSON_OBJECT:
    case API_JSON_ARRAY:
        ok = f->type == API_JSON_OBJECT ? json_is_object(v) : json_is_array(v);
        if (ok)
            *(json_t **)f->out = (json_t *)v;
        break;
    }
    if (!ok)
        return wisp_err_set(err, EINVAL, "%s: %s: expected %s, got %s", where, f->name,
                            type_wanted(f->type), api_json_type_name(v));
    return 0;
}

static int unknown_field(const char *where, const char *key, const struct api_json_field *fields,
                         size_t n, struct wisp_err *err)
{
    char known[384];
    size_t len = 0;
    known[0] = '\0';
    for (size_t i = 0; i < n && len < sizeof(known); i++)
        len += (size_t)snprintf(known + len, sizeof(known) - len, "%s%s", i ? ", " : "",
                                fields[i].name);
    return wisp_err_set(err, EINVAL, "%s: unknown field '%.64s' (known: %s)", where, key, known);
}

int api_json_read(const json_t *obj, const char *where, const struct api_json_field *fields,
                  size_t n, struct wisp_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i = 0;
        while (i < n && strcmp(fields[i].name, key))
            i++;
        if (i == n)
            return unknown_field(where, key, fields, n, err);
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *fv = json_object_get(obj, fields[i].name);
        bool there = fv && !json_is_null(fv);
        if (fields[i].present)
            *fields[i].present = there;
        if (!there) {
            if (fields[i].required)
                return wisp_err_set(err, EINVAL, "%s: %s: missing (required)", where,
                                    fields[i].name);
            continue;
        }
        int r = read_field(fv, where, &fields[i], err);
        if (r < 0)
            return r;
    }
    return 0;
}
