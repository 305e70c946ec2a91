/* libFuzzer target: API request bodies (docs/api.md) through the JSON parser and the resource
 * functions the routes and --config-file apply them with (src/api/json.c: the field tables;
 * src/vmm/api_resources.c, api_devices.c), then the whole configuration back as JSON
 * (api_export.c) and the kernel command line (vm_config_prepare_start). Every body must be
 * refused with a message or applied, without a crash, a leak or a report. The HTTP layer itself
 * (libmicrohttpd's parser, the routing of src/api/http.c) is not fuzzed here: it needs a socket.
 *
 * Input: 1 byte choosing the resource (byte % 10: boot-source, machine-config PUT, PATCH, drive
 * "rootfs", network interface "eth0", entropy, serial, wisp, a RateLimiter, pmem "p0"), then the
 * body.
 * Several bodies in one input, separated by a line "\n--\n", go to the same configuration in
 * turn (the first byte of each chooses its resource), as a client's requests would.
 *
 * The logger and metrics resources are left out: they open files for writing. Drives, the
 * kernel and the initrd are opened read-only or O_RDWR without O_CREAT or O_TRUNC (they are
 * checked, never written); the target skips bodies with a string naming "dev", "proc" or "sys",
 * so that no device node is opened. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/json.h"
#include "vmm/api.h"
#include "vmm/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool names_system_path(const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        return strstr(s, "dev") || strstr(s, "proc") || strstr(s, "sys");
    }
    const char *key;
    json_t *item;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, item) if (names_system_path(item)) return true;
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, item) if (names_system_path(item)) return true;
    }
    return false;
}

static int apply(struct vm_config *cfg, unsigned which, const json_t *body, struct wisp_err *err)
{
    switch (which % 10) {
    case 0:
        return vm_resource_boot_source(cfg, body, "PUT /boot-source", err);
    case 1:
        return vm_resource_machine_config(cfg, body, false, "PUT /machine-config", err);
    case 2:
        return vm_resource_machine_config(cfg, body, true, "PATCH /machine-config", err);
    case 3:
        return vm_resource_drive(cfg, body, "rootfs", "PUT /drives/rootfs", err);
    case 4:
        return vm_resource_nic(cfg, body, "eth0", "PUT /network-interfaces/eth0", err);
    case 5:
        return vm_resource_entropy(cfg, body, "PUT /entropy", err);
    case 6:
        return vm_resource_serial(cfg, body, "PUT /serial", err);
    case 7:
        return vm_resource_wisp(cfg, body, "PUT /wisp", err);
    case 9:
        return vm_resource_pmem(cfg, body, "p0", "PUT /pmem/p0", err);
    default: {
        struct fc_rate_limiter rl;
        memset(&rl, 0, sizeof(rl));
        return fc_rate_limiter_parse(body, "rate_limiter", &rl, err);
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vm_config cfg;
    vm_config_init(&cfg);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *sep = memmem(p, (size_t)(end - p), "\n--\n", 4);
        const char *stop = sep ? sep : end;
        if (stop - p >= 1) {
            unsigned which = (unsigned char)*p;
            struct wisp_err err = {0};
            json_t *body = NULL;
            int r = api_json_parse_object(p + 1, (size_t)(stop - p - 1), "body", &body, &err);
            if (r == 0 && !names_system_path(body))
                r = apply(&cfg, which, body, &err);
            if (r < 0 && !err.msg[0])
                abort(); /* an error must say what is wrong */
            json_decref(body);
        }
        p = sep ? sep + 4 : end;
    }
    json_decref(vm_config_to_json(&cfg));
    json_decref(vm_machine_config_json(&cfg));
    struct wisp_err err = {0};
    if (cfg.kernel)
        (void)vm_config_prepare_start(&cfg, &err);
    vm_config_free(&cfg);
    return 0;
}
