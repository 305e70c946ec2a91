/* wisp-vmm's API server (vmm/api.h): starting and stopping it, the helpers handlers share, and
 * the lifecycle it drives: PUT /actions (InstanceStart, SendCtrlAltDel, FlushMetrics) and
 * PATCH /vm (Paused, Resumed). */
#include "vmm/api.h"

#include <errno.h>
#include <malloc.h>
#include <string.h>

#include "api/json.h"
#include "common/log.h"
#include "devices/legacy.h"
#include "vmm/metrics.h"
#include "vmm/vmm.h"

int vmm_api_body(struct api_request *req, const char *where, json_t **out)
{
    struct wisp_err err = {0};
    size_t len;
    const char *body = api_request_body(req, &len);
    if (len == 0) {
        api_reply_error(req, 400, "%s: the request has no body (a JSON object is expected)", where);
        return -EINVAL;
    }
    int r = api_json_parse_object(body, len, where, out, &err);
    if (r < 0)
        vmm_api_fail(req, &err);
    return r;
}

void vmm_api_fail(struct api_request *req, const struct wisp_err *err)
{
    api_reply_error(req, 400, "%s", err->msg);
}

bool vmm_api_before_start(struct vmm_api *a, struct api_request *req, const char *what)
{
    if (a->v->state == VMM_NOT_STARTED)
        return true;
    /* Firecracker's words, then why */
    api_reply_error(req, 400,
                    "The requested operation is not supported after starting the microVM: %s "
                    "is configured before InstanceStart (the VM is %s)",
                    what, vmm_state_name(a->v->state));
    return false;
}

/* ---- PUT /actions ------------------------------------------------------------------------ */

static void instance_start(struct vmm_api *a, struct api_request *req)
{
    struct vmm *v = a->v;
    struct wisp_err err = {0};
    if (v->state != VMM_NOT_STARTED) {
        api_reply_error(req, 400, "InstanceStart: the VM is %s: it starts only once",
                        vmm_state_name(v->state));
        return;
    }
    if (!v->cfg->kernel) {
        api_reply_error(req, 400, "InstanceStart: no boot source: PUT /boot-source first");
        return;
    }
    bool usage;
    int r = vm_config_prepare_start(v->cfg, &err);
    if (r == 0)
        r = vmm_start(v, &usage, &err);
    if (r < 0) {
        wisp_log_error("InstanceStart: %s", err.msg);
        api_reply_error(req, 400, "InstanceStart: %s", err.msg);
        return;
    }
    /* what the configuration and the boot's loading freed goes back to the kernel: an idle VM
     * keeps none of those heap pages (bench/scale's memory per VM) */
    malloc_trim(0);
    api_reply_empty(req);
}

/* Firecracker's: the i8042's keyboard presses Ctrl-Alt-Del (Running or Paused; the keys wait in
 * the controller while paused). */
static void send_ctrl_alt_del(struct vmm_api *a, struct api_request *req)
{
    struct vmm *v = a->v;
    struct wisp_err err = {0};
    struct device *dev = v->have_machine ? device_list_find(&v->m.devices, "i8042") : NULL;
    if (v->state != VMM_RUNNING && v->state != VMM_PAUSED)
        api_reply_error(req, 400,
                        "The requested operation is not supported before starting the microVM: "
                        "SendCtrlAltDel needs a running VM (the VM is %s)",
                        vmm_state_name(v->state));
    else if (!dev)
        api_reply_error(req, 400, "SendCtrlAltDel: the machine has no i8042");
    else if (i8042_send_ctrl_alt_del(dev, &err) < 0)
        api_reply_error(req, 400, "SendCtrlAltDel: %s", err.msg);
    else
        api_reply_empty(req);
}

void api_put_actions(struct api_request *req, void *opaque);
void api_put_actions(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    json_t *body;
    if (vmm_api_body(req, "PUT /actions", &body) < 0)
        return;
    const char *type = NULL;
    struct wisp_err err = {0};
    const struct api_json_field f[] = {{"action_type", API_JSON_STRING, true, &type, NULL, 0}};
    if (api_json_read(body, "PUT /actions", f, 1, &err) < 0) {
        vmm_api_fail(req, &err);
    } else if (!strcmp(type, "InstanceStart")) {
        instance_start(a, req);
    } else if (!strcmp(type, "SendCtrlAltDel")) {
        send_ctrl_alt_del(a, req);
    } else if (!strcmp(type, "FlushMetrics")) {
        if (!a->metrics)
            api_reply_error(req, 400,
                            "FlushMetrics: the metrics are not configured "
                            "(PUT /metrics first)");
        else if (vmm_metrics_flush(a->metrics, &err) < 0)
            vmm_api_fail(req, &err);
        else
            api_reply_empty(req);
    } else {
        api_reply_error(req, 400,
                        "PUT /actions: action_type: '%.32s' is not InstanceStart, "
                        "SendCtrlAltDel or FlushMetrics",
                        type);
    }
    json_decref(body);
}

/* ---- PATCH /vm --------------------------------------------------------------------------- */

static void vm_paused(void *opaque)
{
    struct vmm_api *a = opaque;
    struct api_request *req = a->pending_pause;
    a->pending_pause = NULL;
    if (req)
        api_reply_empty(req);
}

static void vm_pause(struct vmm_api *a, struct api_request *req)
{
    struct wisp_err err = {0};
    if (a->v->state == VMM_PAUSED && !a->pending_pause) {
        api_reply_empty(req); /* already paused */
        return;
    }
    if (a->pending_pause || a->v->pause_pending) {
        api_reply_error(req, 400, "PATCH /vm: a pause is already under way");
        return;
    }
    if (vmm_pause(a->v, vm_paused, a, &err) < 0) {
        api_reply_error(req, 400, "PATCH /vm: %s", err.msg);
        return;
    }
    a->pending_pause = req; /* answered when every vCPU is parked */
    api_request_suspend(req);
}

static void vm_resume(struct vmm_api *a, struct api_request *req)
{
    struct wisp_err err = {0};
    if (a->v->state == VMM_RUNNING && !a->v->pause_pending) {
        api_reply_empty(req); /* already running */
        return;
    }
    if (a->v->pause_pending)
        api_reply_error(req, 400, "PATCH /vm: a pause is under way: resume once it is done");
    else if (vmm_resume(a->v, &err) < 0)
        api_reply_error(req, 400, "PATCH /vm: %s", err.msg);
    else
        api_reply_empty(req);
}

void api_patch_vm(struct api_request *req, void *opaque);
void api_patch_vm(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    json_t *body;
    if (vmm_api_body(req, "PATCH /vm", &body) < 0)
        return;
    const char *state = NULL;
    struct wisp_err err = {0};
    const struct api_json_field f[] = {{"state", API_JSON_STRING, true, &state, NULL, 0}};
    if (api_json_read(body, "PATCH /vm", f, 1, &err) < 0)
        vmm_api_fail(req, &err);
    else if (strcmp(state, "Paused") && strcmp(state, "Resumed"))
        api_reply_error(req, 400, "PATCH /vm: state: '%.32s' is not Paused or Resumed", state);
    else if (a->v->state == VMM_NOT_STARTED)
        api_reply_error(req, 400,
                        "PATCH /vm: the VM is Not started: start it first "
                        "(PUT /actions InstanceStart)");
    else if (state[0] == 'P')
        vm_pause(a, req);
    else
        vm_resume(a, req);
    json_decref(body);
}

/* ---- the server -------------------------------------------------------------------------- */

int vmm_api_start(struct vmm_api *a, struct vmm *v, struct wisp_err *err)
{
    memset(a, 0, sizeof(*a));
    a->v = v;
    const struct vm_api_config *c = &v->cfg->api;
    int r = 0;
    if (c->metrics_path) /* from a config file */
        r = vmm_metrics_start(&a->metrics, v, c->metrics_path, err);
    if (r == 0 && c->api_sock &&
        (r = api_server_create(&a->server, v->loop, c->api_sock, NULL, err)) < 0)
        wisp_err_wrap(err, "--api-sock");
    if (r == 0 && c->has_api_sock_fd) {
        char name[48];
        snprintf(name, sizeof(name), "the API socket (fd %d)", c->api_sock_fd);
        if ((r = api_server_adopt(&a->server, v->loop, c->api_sock_fd, name, NULL, err)) < 0)
            wisp_err_wrap(err, "--api-sock-fd");
    }
    if (r == 0 && a->server)
        r = vmm_api_add_routes(a, err);
    if (r < 0)
        vmm_api_stop(a);
    return r;
}

void vmm_api_stop(struct vmm_api *a)
{
    a->pending_pause = NULL; /* answered (503) by the server's end */
    api_server_destroy(a->server);
    a->server = NULL;
    vmm_metrics_stop(a->metrics);
    a->metrics = NULL;
}
