/* --config-file F: Firecracker's configuration file (one JSON object whose members are the
 * API's resources), applied to the configuration with the API's own resource functions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/json.h"
#include "common/cleanup.h"
#include "common/io.h"
#include "vmm/api.h"

#define CONFIG_FILE_MAX (1u << 20) /* far above any VM's configuration */

typedef int (*object_fn)(struct vm_config *cfg, const json_t *body, const char *where,
                         struct wisp_err *err);

static int machine_config(struct vm_config *cfg, const json_t *body, const char *where,
                          struct wisp_err *err)
{
    return vm_resource_machine_config(cfg, body, false, where, err);
}

static int drive(struct vm_config *cfg, const json_t *body, const char *where, struct wisp_err *err)
{
    return vm_resource_drive(cfg, body, NULL, where, err);
}

static int nic(struct vm_config *cfg, const json_t *body, const char *where, struct wisp_err *err)
{
    return vm_resource_nic(cfg, body, NULL, where, err);
}

static int fs(struct vm_config *cfg, const json_t *body, const char *where, struct wisp_err *err)
{
    return vm_resource_fs(cfg, body, NULL, where, err);
}

static int pmem(struct vm_config *cfg, const json_t *body, const char *where, struct wisp_err *err)
{
    return vm_resource_pmem(cfg, body, NULL, where, err);
}

/* The members in the order they apply (the logger first: what follows logs there). */
static const struct member {
    const char *name;
    bool array; /* an array of objects, each applied */
    object_fn fn;
    const char *missing; /* not in wisp (yet): why */
} members[] = {
    {"logger", false, vm_resource_logger, NULL},
    {"machine-config", false, machine_config, NULL},
    {"boot-source", false, vm_resource_boot_source, NULL},
    {"drives", true, drive, NULL},
    {"network-interfaces", true, nic, NULL},
    {"entropy", false, vm_resource_entropy, NULL},
    {"serial", false, vm_resource_serial, NULL},
    {"wisp", false, vm_resource_wisp, NULL},
    {"metrics", false, vm_resource_metrics, NULL},
    {"vsock", false, vm_resource_vsock, NULL},
    {"balloon", false, vm_resource_balloon, NULL},
    {"mmds-config", false, NULL, "wisp-vmm has no metadata service (MMDS)"},
    {"cpu-config", false, NULL, "wisp-vmm has no CPU templates"},
    {"pmem", true, pmem, NULL},
    {"fs", true, fs, NULL},
    {"memory-hotplug", false, NULL, "wisp-vmm has no virtio-mem device"},
};

static int apply_member(struct vm_config *cfg, const struct member *m, const json_t *v,
                        const char *file, struct wisp_err *err)
{
    char where[512];
    snprintf(where, sizeof(where), "%s: %s", file, m->name);
    if (json_is_null(v))
        return 0;
    if (!m->fn)
        return wisp_err_set(err, ENOTSUP, "%s: not supported: %s", where, m->missing);
    if (!m->array) {
        if (!json_is_object(v))
            return wisp_err_set(err, EINVAL, "%s: expected an object, got %s", where,
                                api_json_type_name(v));
        return m->fn(cfg, v, where, err);
    }
    if (!json_is_array(v))
        return wisp_err_set(err, EINVAL, "%s: expected an array, got %s", where,
                            api_json_type_name(v));
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        snprintf(where, sizeof(where), "%s: %s[%zu]", file, m->name, i);
        if (!json_is_object(item))
            return wisp_err_set(err, EINVAL, "%s: expected an object, got %s", where,
                                api_json_type_name(item));
        int r = m->fn(cfg, item, where, err);
        if (r < 0)
            return r;
    }
    return 0;
}

static int read_file(const char *path, char **out, size_t *len, struct wisp_err *err)
{
    off_t size;
    cleanup_close int fd = wisp_open_regular("--config-file", path, &size, err);
    if (fd < 0)
        return fd;
    if (size > CONFIG_FILE_MAX)
        return wisp_err_set(err, EFBIG, "--config-file: %s is larger than %u bytes", path,
                            CONFIG_FILE_MAX);
    char *buf = malloc((size_t)size + 1);
    if (!buf)
        return wisp_err_set(err, ENOMEM, "--config-file: %s: out of memory", path);
    ssize_t n = pread(fd, buf, (size_t)size, 0);
    if (n < 0) {
        free(buf);
        return wisp_err_sys(err, errno, "--config-file: %s", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = (size_t)n;
    return 0;
}

int vm_config_load_file(struct vm_config *cfg, const char *path, struct wisp_err *err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = read_file(path, &text, &len, err);
    json_t *root = NULL;
    if (r == 0)
        r = api_json_parse_object(text, len, path, &root, err);
    if (r < 0)
        return r;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        size_t i = 0;
        while (i < sizeof(members) / sizeof(members[0]) && strcmp(members[i].name, key))
            i++;
        if (i == sizeof(members) / sizeof(members[0])) {
            r = wisp_err_set(err, EINVAL,
                             "%s: unknown member '%.64s' (known: boot-source, machine-config, "
                             "drives, network-interfaces, logger, metrics, entropy, serial, "
                             "vsock, balloon, pmem, fs, wisp)",
                             path, key);
            break;
        }
    }
    for (size_t i = 0; r == 0 && i < sizeof(members) / sizeof(members[0]); i++) {
        json_t *m = json_object_get(root, members[i].name);
        if (m)
            r = apply_member(cfg, &members[i], m, path, err);
    }
    json_decref(root);
    return r;
}
