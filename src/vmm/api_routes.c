/* Every route of wisp-vmm's API (docs/api.md), in one table, and the handlers of the
 * resources that are configured before the start.
 *
 * To add a route: write a handler `void api_x(struct api_request *req, void *opaque)` (opaque
 * is the struct vmm_api *; vmm/api.h has the helpers: vmm_api_body() for the JSON body,
 * vmm_api_fail(), vmm_api_before_start(), and api/http.h the api_reply_*() answers; a handler
 * that must wait calls api_request_suspend() and answers later from the main loop), declare
 * it beside the others below, and add one line to `routes`:
 *     {"PUT", "/snapshot/create", api_put_snapshot_create},
 * A route added with the method and path of one in the table replaces it. */
#include <string.h>

#include "api/json.h"
#include "vmm/api.h"
#include "vmm/metrics.h"
#include "vmm/vmm.h"
#include "wisp-config.h"

/* handlers of other files */
void api_put_actions(struct api_request *req, void *opaque);         /* api.c */
void api_patch_vm(struct api_request *req, void *opaque);            /* api.c */
void api_patch_drive(struct api_request *req, void *opaque);         /* api_runtime.c */
void api_patch_nic(struct api_request *req, void *opaque);           /* api_runtime.c */
void api_put_metrics(struct api_request *req, void *opaque);         /* api_runtime.c */
void api_get_wisp_metrics(struct api_request *req, void *opaque);    /* api_runtime.c */
void api_put_snapshot_create(struct api_request *req, void *opaque); /* snapshot_api.c */
void api_put_snapshot_load(struct api_request *req, void *opaque);   /* snapshot_api.c */
void api_put_balloon(struct api_request *req, void *opaque);         /* api_balloon_routes.c */
void api_patch_balloon(struct api_request *req, void *opaque);       /* api_balloon_routes.c */
void api_get_balloon(struct api_request *req, void *opaque);         /* api_balloon_routes.c */
void api_get_balloon_stats(struct api_request *req, void *opaque);   /* api_balloon_routes.c */
void api_patch_balloon_stats(struct api_request *req, void *opaque); /* api_balloon_routes.c */

/* ---- reading ------------------------------------------------------------------------------ */

static void api_get_root(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    const char *id = a->v->cfg->api.id ? a->v->cfg->api.id : "anonymous-instance";
    api_reply_json(req, 200,
                   json_pack("{s:s,s:s,s:s,s:s}", "id", id, "state", vmm_state_name(a->v->state),
                             "vmm_version", WISP_VERSION, "app_name", "wisp-vmm"));
}

static void api_get_version(struct api_request *req, void *opaque)
{
    api_reply_json(req, 200, json_pack("{s:s}", "firecracker_version", WISP_VERSION));
}

static void api_get_vm_config(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    api_reply_json(req, 200, vm_config_to_json(a->v->cfg));
}

static void api_get_machine_config(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    api_reply_json(req, 200, vm_machine_config_json(a->v->cfg));
}

/* ---- configuring before the start -------------------------------------------------------- */

typedef int (*resource_fn)(struct vm_config *cfg, const json_t *body, const char *where,
                           struct wisp_err *err);

/* A pre-boot resource: the body applied to the configuration. */
static void put_resource(struct api_request *req, struct vmm_api *a, const char *what,
                         resource_fn fn)
{
    char where[96];
    snprintf(where, sizeof(where), "%s %s", api_request_method(req), api_request_path(req));
    json_t *body;
    if (!vmm_api_before_start(a, req, what) || vmm_api_body(req, where, &body) < 0)
        return;
    struct wisp_err err = {0};
    if (fn(a->v->cfg, body, where, &err) < 0)
        vmm_api_fail(req, &err);
    else
        api_reply_empty(req);
    json_decref(body);
}

static void api_put_boot_source(struct api_request *req, void *opaque)
{
    put_resource(req, opaque, "the boot source", vm_resource_boot_source);
}

static int machine_put(struct vm_config *cfg, const json_t *b, const char *w, struct wisp_err *e)
{
    return vm_resource_machine_config(cfg, b, false, w, e);
}

static int machine_patch(struct vm_config *cfg, const json_t *b, const char *w, struct wisp_err *e)
{
    return vm_resource_machine_config(cfg, b, true, w, e);
}

static void api_put_machine_config(struct api_request *req, void *opaque)
{
    put_resource(req, opaque, "the machine configuration", machine_put);
}

static void api_patch_machine_config(struct api_request *req, void *opaque)
{
    put_resource(req, opaque, "the machine configuration", machine_patch);
}

static void api_put_entropy(struct api_request *req, void *opaque)
{
    put_resource(req, opaque, "the entropy device", vm_resource_entropy);
}

static void api_put_vsock(struct api_request *req, void *opaque)
{
    put_resource(req, opaque, "the vsock device", vm_resource_vsock);
}

static void api_put_serial(struct api_request *req, void *opaque)
{
    put_resource(req, opaque, "the serial console", vm_resource_serial);
}

static void api_put_wisp(struct api_request *req, void *opaque)
{
    put_resource(req, opaque, "wisp's settings", vm_resource_wisp);
}

/* A device with the id of the path: the body's id must be the same. */
static void put_device(struct api_request *req, struct vmm_api *a, bool drive)
{
    char where[96];
    snprintf(where, sizeof(where), "PUT %s", api_request_path(req));
    const char *id = api_request_param(req, drive ? "drive_id" : "iface_id");
    json_t *body;
    if (!vmm_api_before_start(a, req, drive ? "a drive" : "a network interface") ||
        vmm_api_body(req, where, &body) < 0)
        return;
    struct wisp_err err = {0};
    int r = drive ? vm_resource_drive(a->v->cfg, body, id, where, &err)
                  : vm_resource_nic(a->v->cfg, body, id, where, &err);
    if (r < 0)
        vmm_api_fail(req, &err);
    else
        api_reply_empty(req);
    json_decref(body);
}

static void api_put_drive(struct api_request *req, void *opaque)
{
    put_device(req, opaque, true);
}

static void api_put_nic(struct api_request *req, void *opaque)
{
    put_device(req, opaque, false);
}

typedef int (*id_resource_fn)(struct vm_config *cfg, const json_t *body, const char *id,
                              const char *where, struct wisp_err *err);

/* A pre-boot resource named by the path's {id} (the body's id must be the same). */
static void put_with_id(struct api_request *req, struct vmm_api *a, const char *what,
                        id_resource_fn fn)
{
    char where[96];
    snprintf(where, sizeof(where), "PUT %s", api_request_path(req));
    json_t *body;
    if (!vmm_api_before_start(a, req, what) || vmm_api_body(req, where, &body) < 0)
        return;
    struct wisp_err err = {0};
    if (fn(a->v->cfg, body, api_request_param(req, "id"), where, &err) < 0)
        vmm_api_fail(req, &err);
    else
        api_reply_empty(req);
    json_decref(body);
}

static void api_put_pmem(struct api_request *req, void *opaque)
{
    put_with_id(req, opaque, "a pmem device", vm_resource_pmem);
}

static void api_put_fs(struct api_request *req, void *opaque)
{
    put_with_id(req, opaque, "a virtio-9p share", vm_resource_fs);
}

/* The logger may be set at any time (Firecracker's may be set before the start too). */
static void api_put_logger(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    json_t *body;
    if (vmm_api_body(req, "PUT /logger", &body) < 0)
        return;
    struct wisp_err err = {0};
    if (vm_resource_logger(a->v->cfg, body, "PUT /logger", &err) < 0)
        vmm_api_fail(req, &err);
    else
        api_reply_empty(req);
    json_decref(body);
}

/* Resources of Firecracker's that wisp does not have: a 400 saying why. */
static void api_not_supported(struct api_request *req, void *opaque)
{
    const char *path = api_request_path(req), *why = "wisp-vmm does not have it";
    if (!strncmp(path, "/mmds", 5))
        why = "wisp-vmm has no metadata service (MMDS)";
    else if (!strncmp(path, "/cpu-config", 11))
        why = "wisp-vmm has no CPU templates: the guest sees KVM's supported CPUID";
    else if (!strncmp(path, "/pmem", 5))
        why = "a pmem device has no rate limiter (the guest's loads and stores pass none)";
    api_reply_error(req, 400, "%s %s: not supported: %s", api_request_method(req), path, why);
}

static const struct api_route routes[] = {
    {"GET", "/", api_get_root},
    {"GET", "/version", api_get_version},
    {"GET", "/vm/config", api_get_vm_config},
    {"GET", "/machine-config", api_get_machine_config},
    {"PUT", "/machine-config", api_put_machine_config},
    {"PATCH", "/machine-config", api_patch_machine_config},
    {"PUT", "/boot-source", api_put_boot_source},
    {"PUT", "/drives/{drive_id}", api_put_drive},
    {"PATCH", "/drives/{drive_id}", api_patch_drive},
    {"PUT", "/network-interfaces/{iface_id}", api_put_nic},
    {"PATCH", "/network-interfaces/{iface_id}", api_patch_nic},
    {"PUT", "/entropy", api_put_entropy},
    {"PUT", "/serial", api_put_serial},
    {"PUT", "/logger", api_put_logger},
    {"PUT", "/metrics", api_put_metrics},
    {"GET", "/wisp/metrics", api_get_wisp_metrics},
    {"PUT", "/actions", api_put_actions},
    {"PATCH", "/vm", api_patch_vm},
    {"PUT", "/snapshot/create", api_put_snapshot_create},
    {"PUT", "/snapshot/load", api_put_snapshot_load},
    {"PUT", "/wisp", api_put_wisp},
    {"PUT", "/vsock", api_put_vsock},
    {"PUT", "/balloon", api_put_balloon},
    {"PATCH", "/balloon", api_patch_balloon},
    {"GET", "/balloon", api_get_balloon},
    {"GET", "/balloon/statistics", api_get_balloon_stats},
    {"PATCH", "/balloon/statistics", api_patch_balloon_stats},
    {"PUT", "/mmds", api_not_supported},
    {"PATCH", "/mmds", api_not_supported},
    {"GET", "/mmds", api_not_supported},
    {"PUT", "/mmds/config", api_not_supported},
    {"PUT", "/cpu-config", api_not_supported},
    {"PUT", "/pmem/{id}", api_put_pmem},
    {"PUT", "/fs/{id}", api_put_fs},
    {"PATCH", "/pmem/{id}", api_not_supported},
};

int vmm_api_add_routes(struct vmm_api *a, struct wisp_err *err)
{
    return api_server_add_routes(a->server, routes, sizeof(routes) / sizeof(routes[0]), a, err);
}
