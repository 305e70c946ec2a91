/* wispd's REST API, /v1/... (docs/wispd.md, "API"), on src/api's server. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "wisp-config.h"
#include "api/http.h"
#include "common/cleanup.h"
#include "network.h"
#include "reclaim.h"
#include "registry.h"
#include "wispd.h"

static unsigned status_of(int errnum)
{
    switch (errnum) {
    case ENOENT:
        return 404;
    case EEXIST:
    case EBUSY:
    case EALREADY:
        return 409;
    case EMFILE:
    case EAGAIN:
    case ENOSPC:
        return 507;
    case EINVAL:
    case ENOTSUP:
        return 400;
    default:
        return 500;
    }
}

static void reply_err(struct api_request *req, const struct wisp_err *err)
{
    api_reply_error(req, status_of(err->errnum), "%s", err->msg);
}

struct vm *wispd_vm_or_404(struct wispd *d, struct api_request *req)
{
    const char *name = api_request_param(req, "name");
    struct vm *vm = wispd_find(d, name);
    if (!vm)
        api_reply_error(req, 404, "no VM named '%s'", name);
    return vm;
}

struct vm *wispd_live_vm_or_reply(struct wispd *d, struct api_request *req, const char *what)
{
    struct vm *vm = wispd_vm_or_404(d, req);
    if (vm && vm->state != VM_RUNNING && vm->state != VM_PAUSED) {
        api_reply_error(req, 409, "%s is %s: %s", vm->name, vm_state_name(vm->state), what);
        return NULL;
    }
    return vm;
}

static void h_version(struct api_request *req, void *opaque)
{
    api_reply_json(req, 200,
                   json_pack("{s:s, s:i, s:i}", "version", WISP_VERSION, "api", 1, "schema",
                             REGISTRY_SCHEMA_VERSION));
}

static void h_list(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    json_t *a = json_array();
    for (unsigned h = 0; h < VM_HASH_SIZE; h++)
        for (struct vm *vm = d->hash[h]; vm; vm = vm->hash_next)
            json_array_append_new(a, vm_to_json(vm));
    api_reply_json(req, 200, a);
}

static void h_define(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    struct wisp_err err = {0};
    size_t len;
    const char *body = api_request_body(req, &len);
    json_t *def;
    if (vmdef_parse(body, len, &def, &err) < 0) {
        reply_err(req, &err);
        return;
    }
    const char *name = json_string_value(json_object_get(def, "name"));
    int ret = net_vm_define(d, def, &err); /* MACs allocated into def */
    cleanup_free char *text = json_dumps(def, JSON_SORT_KEYS | JSON_COMPACT);
    int64_t id;
    struct vm *vm;
    if (wispd_find(d, name)) {
        api_reply_error(req, 409, "a VM named '%s' exists", name);
    } else if (ret < 0) {
        reply_err(req, &err);
    } else if (registry_define(d->reg, name, text,
                               json_string_value(json_object_get(def, "restart_policy")), &id,
                               &err) < 0 ||
               vm_create(d, def, id, &vm, &err) < 0) {
        reply_err(req, &err);
    } else {
        wispd_event(d, name, "define", "");
        api_reply_json(req, 201, vm_to_json(vm));
    }
    json_decref(def);
}

static void h_show(struct api_request *req, void *opaque)
{
    struct vm *vm = wispd_vm_or_404(opaque, req);
    if (vm)
        api_reply_json(req, 200, vm_to_json(vm));
}

/* POST /v1/vms/{name}/{action}: answered once the VM is there (running, stopped, ...). */
static void h_action(struct api_request *req, void *opaque)
{
    struct vm *vm = wispd_vm_or_404(opaque, req);
    if (!vm)
        return;
    const char *a = api_request_param(req, "action");
    struct wisp_err err = {0};
    int ret;
    if (!strcmp(a, "start"))
        ret = vm_start(vm, req, &err);
    else if (!strcmp(a, "stop"))
        ret = vm_stop(vm, false, req, &err);
    else if (!strcmp(a, "kill"))
        ret = vm_stop(vm, true, req, &err);
    else if (!strcmp(a, "restart"))
        ret = vm_restart(vm, req, &err);
    else if (!strcmp(a, "pause") || !strcmp(a, "resume"))
        ret = vm_pause(vm, !strcmp(a, "pause"), req, &err);
    else {
        api_reply_error(req, 404, "unknown action '%s' (start, stop, kill, restart, pause, resume)",
                        a);
        return;
    }
    if (ret < 0)
        reply_err(req, &err);
}

static void h_remove(struct api_request *req, void *opaque)
{
    struct vm *vm = wispd_vm_or_404(opaque, req);
    if (!vm)
        return;
    struct wisp_err err = {0};
    bool force = !strcmp(api_request_path(req) + strlen(api_request_path(req)) - 6, "/force");
    if (vm_remove(vm, force, req, &err) < 0)
        reply_err(req, &err);
}

static void h_limits(struct api_request *req, void *opaque)
{
    api_reply_json(req, 200, wispd_limits_json(opaque));
}

static int add_event(int64_t id, int64_t time_ms, const char *vm, const char *kind,
                     const char *detail, void *opaque)
{
    json_array_append_new(opaque,
                          json_pack("{s:I, s:I, s:s, s:s, s:s}", "id", (json_int_t)id, "time_ms",
                                    (json_int_t)time_ms, "vm", vm, "kind", kind, "event", detail));
    return 0;
}

static bool answer_events(struct wispd *d, struct api_request *req, int64_t after, bool wait)
{
    json_t *a = json_array();
    struct wisp_err err = {0};
    if (registry_for_each_event(d->reg, after, 1000, add_event, a, &err) < 0) {
        json_decref(a);
        reply_err(req, &err);
        return true;
    }
    if (json_array_size(a) == 0 && wait) {
        json_decref(a);
        return false;
    }
    api_reply_json(req, 200, a);
    return true;
}

/* GET /v1/events/{after}: the events after number `after`; with none yet, the answer waits
 * for the next one (a long poll: `wisp events -f` asks again with the last number). */
static void h_events(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    const char *p = api_request_param(req, "after");
    if (!p && api_request_query(req, "follow")) {
        events_h_stream(req, d);
        return;
    }
    char *end;
    long long after = p ? strtoll(p, &end, 10) : 0;
    if (p && (*end || after < 0)) {
        api_reply_error(req, 400, "events: '%s' is not an event number", p);
        return;
    }
    if (answer_events(d, req, after, p != NULL))
        return;
    if (d->nr_event_waiters == ARRAY_SIZE(d->event_waiters)) {
        api_reply_json(req, 200, json_array());
        return;
    }
    api_request_suspend(req);
    d->event_after[d->nr_event_waiters] = after;
    d->event_waiters[d->nr_event_waiters++] = req;
}

void wispd_events_notify(struct wispd *d)
{
    events_wake(d);
    unsigned n = d->nr_event_waiters;
    d->nr_event_waiters = 0;
    for (unsigned i = 0; i < n; i++)
        answer_events(d, d->event_waiters[i], d->event_after[i], false);
}

static const struct api_route routes[] = {
    {"GET", "/v1/version", h_version},
    {"GET", "/v1/limits", h_limits},
    {"GET", "/v1/reclaim", reclaim_h_get},
    {"GET", "/v1/vms", h_list},
    {"POST", "/v1/vms", h_define},
    {"GET", "/v1/vms/{name}", h_show},
    {"DELETE", "/v1/vms/{name}", h_remove},
    {"DELETE", "/v1/vms/{name}/force", h_remove},
    {"GET", "/v1/vms/{name}/log", console_h_log},
    {"POST", "/v1/vms/{name}/console", console_h_attach},
    {"GET", "/v1/vms/{name}/stats", stats_h_get},
    {"POST", "/v1/vms/{name}/snapshot", clone_h_snapshot},
    {"POST", "/v1/vms/{name}/restore", clone_h_restore},
    {"POST", "/v1/vms/{name}/clone", clone_h_clone},
    {"POST", "/v1/vms/{name}/{action}", h_action},
    {"GET", "/v1/events", h_events},
    {"GET", "/v1/events/{after}", h_events},
};

int wispd_serve(struct wispd *d, const char *socket_path, struct wisp_err *err)
{
    struct api_server_limits limits = {.max_body = 1 << 20,
                                       .max_connections = 256,
                                       .request_deadline_s = 120,
                                       .allow_upgrade = true};
    int ret = api_server_create(&d->server, d->loop, socket_path, &limits, err);
    if (ret == 0)
        ret = api_server_add_routes(d->server, routes, ARRAY_SIZE(routes), d, err);
    if (ret == 0)
        ret = net_add_routes(d, err);
    return ret;
}
