/* VM definitions (docs/wispd.md, "Definitions"): checked once at define, defaults filled in,
 * stored as the JSON text this gives back. */
#include <errno.h>
#include <string.h>

#include "api/json.h"
#include "common/cleanup.h"
#include "netdef.h"
#include "reclaim.h"
#include "wispd.h"

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 64 || n[0] == '.' || n[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", n[i]))
            return false;
    return true;
}

static int check_list(json_t *list, const char *what, const struct api_json_field *proto, size_t n,
                      struct wisp_err *err)
{
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        char where[64];
        snprintf(where, sizeof(where), "%s[%zu]", what, i);
        struct api_json_field f[8];
        memcpy(f, proto, n * sizeof(*f));
        const char *s[8];
        bool b[8];
        for (size_t k = 0; k < n; k++)
            f[k].out = f[k].type == API_JSON_BOOL ? (void *)&b[k] : (void *)&s[k];
        if (!json_is_object(item))
            return wisp_err_set(err, EINVAL, "%s: expected an object", where);
        int ret = api_json_read(item, where, f, n, err);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* pmem[]: an absolute path (wispd runs wisp-vmm from its state directory, and a jail links
 * it in), mode ro, cow or rw (wisp-vmm's; the file itself is checked by wisp-vmm at the start),
 * at most 8 devices (wisp-vmm's limit). */
static int check_pmem(json_t *pmem, struct wisp_err *err)
{
    size_t i;
    json_t *item;
    if (json_array_size(pmem) > 8)
        return wisp_err_set(err, EINVAL, "definition: pmem: at most 8 devices");
    json_array_foreach(pmem, i, item)
    {
        const char *path = json_string_value(json_object_get(item, "path"));
        const char *mode = json_string_value(json_object_get(item, "mode"));
        if (path[0] != '/')
            return wisp_err_set(err, EINVAL, "definition: pmem[%zu]: path: '%s' is not absolute", i,
                                path);
        if (mode && strcmp(mode, "ro") && strcmp(mode, "cow") && strcmp(mode, "rw"))
            return wisp_err_set(
                err, EINVAL, "definition: pmem[%zu]: mode: '%.16s' is not ro, cow or rw", i, mode);
    }
    return 0;
}

int vmdef_parse(const char *text, size_t len, json_t **out, struct wisp_err *err)
{
    json_t *def;
    int ret = api_json_parse_object(text, len, "definition", &def, err);
    if (ret < 0)
        return ret;
    const char *name = NULL, *kernel = NULL, *initrd = NULL, *cmdline = NULL, *console = NULL,
               *policy = NULL;
    uint64_t vcpus = 1, mem = 128, stop_timeout = 10;
    json_t *drives = NULL, *nics = NULL, *vsock = NULL, *balloon = NULL, *placement = NULL,
           *limits = NULL, *pmem = NULL;
    bool jail = true, ksm = false;
    const struct api_json_field fields[] = {
        {.name = "name", .type = API_JSON_STRING, .required = true, .out = &name},
        {.name = "vcpus", .type = API_JSON_UINT, .required = false, .out = &vcpus, .max = 1024},
        {.name = "memory_mib",
         .type = API_JSON_UINT,
         .required = false,
         .out = &mem,
         .max = 1048576},
        {.name = "kernel", .type = API_JSON_STRING, .required = true, .out = &kernel},
        {.name = "initrd", .type = API_JSON_STRING, .required = false, .out = &initrd},
        {.name = "cmdline", .type = API_JSON_STRING, .required = false, .out = &cmdline},
        {.name = "drives", .type = API_JSON_ARRAY, .required = false, .out = &drives},
        {.name = "pmem", .type = API_JSON_ARRAY, .required = false, .out = &pmem},
        {.name = "ksm", .type = API_JSON_BOOL, .required = false, .out = &ksm},
        {.name = "nics", .type = API_JSON_ARRAY, .required = false, .out = &nics},
        {.name = "console", .type = API_JSON_STRING, .required = false, .out = &console},
        {.name = "vsock", .type = API_JSON_OBJECT, .required = false, .out = &vsock},
        {.name = "balloon", .type = API_JSON_OBJECT, .required = false, .out = &balloon},
        {.name = "placement", .type = API_JSON_OBJECT, .required = false, .out = &placement},
        {.name = "limits", .type = API_JSON_OBJECT, .required = false, .out = &limits},
        {.name = "jail", .type = API_JSON_BOOL, .required = false, .out = &jail},
        {.name = "restart_policy", .type = API_JSON_STRING, .required = false, .out = &policy},
        {.name = "stop_timeout_s",
         .type = API_JSON_UINT,
         .required = false,
         .out = &stop_timeout,
         .max = 3600},
    };
    ret = api_json_read(def, "definition", fields, ARRAY_SIZE(fields), err);
    if (ret == 0 && !name_ok(name))
        ret = wisp_err_set(err, EINVAL,
                           "definition: name: '%.64s' is not 1 to 64 of A-Z a-z 0-9 . _ - "
                           "(not starting with . or -)",
                           name);
    else if (ret == 0 && (vcpus < 1 || mem < 2))
        ret = wisp_err_set(err, EINVAL, "definition: %s",
                           vcpus < 1 ? "vcpus: at least 1" : "memory_mib: at least 2");
    else if (ret == 0 && kernel[0] != '/')
        ret = wisp_err_set(err, EINVAL,
                           "definition: kernel: '%s' is not an absolute path (wispd runs "
                           "wisp-vmm from its state directory)",
                           kernel);
    else if (ret == 0 && console && strcmp(console, "serial") && strcmp(console, "virtio"))
        ret =
            wisp_err_set(err, EINVAL, "definition: console: '%s' is not serial or virtio", console);
    else if (ret == 0 && policy && strcmp(policy, "no") && strcmp(policy, "on-failure") &&
             strcmp(policy, "always"))
        ret = wisp_err_set(err, EINVAL,
                           "definition: restart_policy: '%s' is not no, on-failure or always",
                           policy);
    static const struct api_json_field drive_fields[] = {
        {.name = "id", .type = API_JSON_STRING, .required = true},
        {.name = "path", .type = API_JSON_STRING, .required = true},
        {.name = "root", .type = API_JSON_BOOL, .required = false},
        {.name = "read_only", .type = API_JSON_BOOL, .required = false},
        {.name = "format", .type = API_JSON_STRING, .required = false},
        /* a qcow2 image's backing file (a clone's overlay: overlay.c), put beside it in a jail */
        {.name = "backing", .type = API_JSON_STRING, .required = false},
    };
    static const struct api_json_field nic_fields[] = {
        {.name = "id", .type = API_JSON_STRING, .required = true},
        {.name = "tap", .type = API_JSON_STRING, .required = false},
        {.name = "network", .type = API_JSON_STRING, .required = false},
        {.name = "mac", .type = API_JSON_STRING, .required = false},
    };
    if (ret == 0 && drives)
        ret = check_list(drives, "drives", drive_fields, ARRAY_SIZE(drive_fields), err);
    static const struct api_json_field pmem_fields[] = {
        {.name = "id", .type = API_JSON_STRING, .required = true},
        {.name = "path", .type = API_JSON_STRING, .required = true},
        {.name = "mode", .type = API_JSON_STRING, .required = false},
        {.name = "root", .type = API_JSON_BOOL, .required = false},
    };
    if (ret == 0 && nics)
        ret = check_list(nics, "nics", nic_fields, ARRAY_SIZE(nic_fields), err);
    if (ret == 0 && pmem)
        ret = check_list(pmem, "pmem", pmem_fields, ARRAY_SIZE(pmem_fields), err);
    if (ret == 0 && pmem)
        ret = check_pmem(pmem, err);
    if (ret == 0 && nics)
        ret = netdef_check_nics(nics, err);
    if (ret < 0) {
        json_decref(def);
        return ret;
    }
    json_object_set_new(def, "vcpus", json_integer((json_int_t)vcpus));
    json_object_set_new(def, "memory_mib", json_integer((json_int_t)mem));
    json_object_set_new(def, "restart_policy", json_string(policy ? policy : "no"));
    json_object_set_new(def, "stop_timeout_s", json_integer((json_int_t)stop_timeout));
    if (placement_check(def, err) < 0 ||   /* placement, limits, jail (placement.c) */
        reclaim_check_def(def, err) < 0) { /* the balloon's auto mode (reclaim_policy.c) */
        json_decref(def);
        return -EINVAL;
    }
    *out = def;
    return 0;
}
