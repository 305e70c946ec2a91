/* The API's changes to a running VM (docs/api.md): PATCH /drives/{drive_id} (a new image, the
 * rate limiter), PATCH /network-interfaces/{iface_id} (the rate limiters), and PUT /metrics. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "vmm/api.h"
#include "vmm/metrics.h"
#include "vmm/snapshot.h"
#include "vmm/vmm.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

void api_patch_drive(struct api_request *req, void *opaque);
void api_patch_nic(struct api_request *req, void *opaque);
void api_put_metrics(struct api_request *req, void *opaque);
void api_get_wisp_metrics(struct api_request *req, void *opaque);

/* Firecracker's answer to a PATCH before the start. */
static bool after_start(struct vmm_api *a, struct api_request *req, const char *what)
{
    if (vmm_snapshot_busy(a->v)) { /* the devices are quiesced and being saved */
        api_reply_error(req, 400, "PATCH of %s: a snapshot is being written, try again after it",
                        what);
        return false;
    }
    if (a->v->state == VMM_RUNNING || a->v->state == VMM_PAUSED)
        return true;
    api_reply_error(req, 400,
                    "The requested operation is not supported before starting the microVM: "
                    "PATCH changes %s of a running VM; before InstanceStart, PUT it",
                    what);
    return false;
}

/* The device the path's id names, after the start; or a 400 (NULL). */
static struct device *find_device(struct vmm_api *a, struct api_request *req, bool drive,
                                  const char *where, const char *body_id, int *index)
{
    const struct vm_config *cfg = a->v->cfg;
    const char *id = api_request_param(req, drive ? "drive_id" : "iface_id");
    if (strcmp(id, body_id)) {
        api_reply_error(req, 400,
                        "%s: The id from the path [%.40s] does not match the id from the body "
                        "[%.40s]!",
                        where, id, body_id);
        return NULL;
    }
    *index = drive ? vm_config_find_drive(cfg, id) : vm_config_find_nic(cfg, id);
    struct device *dev = *index < 0 ? NULL : device_list_find(&a->v->m.devices, id);
    if (!dev)
        api_reply_error(req, 400, "%s: the VM has no %s %.40s", where,
                        drive ? "drive" : "network interface", id);
    return dev;
}

/* ---- PATCH /drives/{drive_id} ------------------------------------------------------------ */

struct drive_change {
    struct vmm_api *a;
    struct api_request *req;
    unsigned index;
    char *path; /* the new image, or NULL */
    bool has_rl;
    struct fc_rate_limiter rl;
    struct block_throttle_limits limits;
};

/* Main loop: the drive's I/O thread has done it (or failed: nothing changed). */
static void drive_changed(void *opaque, int result, const struct wisp_err *err)
{
    struct drive_change *c = opaque;
    struct vm_config *cfg = c->a->v->cfg;
    struct wisp_err e = {0};
    if (result == 0 && c->path)
        result = vm_config_set_string(cfg, &cfg->drives[c->index].path, c->path, &e);
    if (result == 0 && c->has_rl) {
        cfg->drives[c->index].limits = c->limits;
        cfg->api.drives[c->index].has_rate_limiter = true;
        cfg->api.drives[c->index].rate_limiter = c->rl;
    }
    if (result < 0)
        api_reply_error(c->req, 400, "%s", e.msg[0] ? e.msg : err->msg);
    else
        api_reply_empty(c->req);
    free(c->path);
    free(c);
}

static int drive_change_read(const json_t *body, const char *where, const char **id,
                             struct drive_change *c, struct wisp_err *err)
{
    const char *path = NULL;
    json_t *rl = NULL;
    const struct api_json_field f[] = {
        {"drive_id", API_JSON_STRING, true, id, NULL, 0},
        {"path_on_host", API_JSON_STRING, false, &path, NULL, 0},
        {"rate_limiter", API_JSON_OBJECT, false, &rl, &c->has_rl, 0},
    };
    char w[160];
    snprintf(w, sizeof(w), "%s: rate_limiter", where);
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0 && c->has_rl && (r = fc_rate_limiter_parse(rl, w, &c->rl, err)) == 0)
        fc_rate_limiter_to_block(&c->rl, &c->limits);
    if (r == 0 && path && !(c->path = strdup(path)))
        r = wisp_err_set(err, ENOMEM, "%s: out of memory", where);
    return r;
}

void api_patch_drive(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    char where[96];
    snprintf(where, sizeof(where), "PATCH %s", api_request_path(req));
    json_t *body;
    if (!after_start(a, req, "a drive") || vmm_api_body(req, where, &body) < 0)
        return;
    struct drive_change *c = calloc(1, sizeof(*c));
    struct wisp_err err = {0};
    const char *id = NULL;
    int index = -1;
    struct device *dev = NULL;
    int r = c ? drive_change_read(body, where, &id, c, &err)
              : wisp_err_set(&err, ENOMEM, "%s: out of memory", where);
    if (r < 0)
        vmm_api_fail(req, &err);
    else if ((dev = find_device(a, req, true, where, id, &index))) {
        char w[160];
        snprintf(w, sizeof(w), "%s: path_on_host", where);
        c->a = a;
        c->req = req;
        c->index = (unsigned)index;
        const struct virtio_blk_update u = {.path = c->path,
                                            .limits = c->has_rl ? &c->limits : NULL};
        if (c->path && vm_check_image(w, c->path, a->v->cfg->drives[index].read_only, &err) < 0)
            r = -EINVAL;
        else if (!c->path && !c->has_rl)
            r = wisp_err_set(&err, EINVAL, "%s: nothing to change (path_on_host, rate_limiter)",
                             where);
        else
            r = virtio_blk_update(dev, &u, drive_changed, c, &err);
        if (r < 0)
            vmm_api_fail(req, &err);
        else {
            api_request_suspend(req); /* answered by drive_changed */
            c = NULL;
        }
    }
    if (c)
        free(c->path);
    free(c);
    json_decref(body);
}

/* ---- PATCH /network-interfaces/{iface_id} ------------------------------------------------ */

void api_patch_nic(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    struct vm_config *cfg = a->v->cfg;
    char where[96], w[160];
    snprintf(where, sizeof(where), "PATCH %s", api_request_path(req));
    json_t *body, *rxj = NULL, *txj = NULL;
    if (!after_start(a, req, "a network interface") || vmm_api_body(req, where, &body) < 0)
        return;
    const char *id = NULL;
    bool has_rx = false, has_tx = false;
    const struct api_json_field f[] = {
        {"iface_id", API_JSON_STRING, true, &id, NULL, 0},
        {"rx_rate_limiter", API_JSON_OBJECT, false, &rxj, &has_rx, 0},
        {"tx_rate_limiter", API_JSON_OBJECT, false, &txj, &has_tx, 0},
    };
    struct wisp_err err = {0};
    struct fc_rate_limiter rx = {0}, tx = {0};
    int r = api_json_read(body, where, f, N(f), &err), i = -1;
    if (r == 0 && has_rx && (snprintf(w, sizeof(w), "%s: rx_rate_limiter", where), 1))
        r = fc_rate_limiter_parse(rxj, w, &rx, &err);
    if (r == 0 && has_tx && (snprintf(w, sizeof(w), "%s: tx_rate_limiter", where), 1))
        r = fc_rate_limiter_parse(txj, w, &tx, &err);
    struct device *dev = NULL;
    if (r < 0)
        vmm_api_fail(req, &err);
    else if ((dev = find_device(a, req, false, where, id, &i))) {
        struct virtio_net_params *p = &cfg->nics[i];
        struct virtio_net_rate rxr = virtio_net_params_rate(p, true);
        struct virtio_net_rate txr = virtio_net_params_rate(p, false);
        if (has_rx)
            fc_rate_limiter_to_net(&rx, &rxr);
        if (has_tx)
            fc_rate_limiter_to_net(&tx, &txr);
        if (virtio_net_set_rates(dev, &rxr, &txr, &err) < 0) {
            vmm_api_fail(req, &err);
        } else {
            p->rx_bps = rxr.bps, p->rx_burst = rxr.bps_burst, p->rx_bps_once = rxr.bps_once;
            p->rx_ops = rxr.ops, p->rx_ops_burst = rxr.ops_burst, p->rx_ops_once = rxr.ops_once;
            p->tx_bps = txr.bps, p->tx_burst = txr.bps_burst, p->tx_bps_once = txr.bps_once;
            p->tx_ops = txr.ops, p->tx_ops_burst = txr.ops_burst, p->tx_ops_once = txr.ops_once;
            if (has_rx)
                cfg->api.nics[i].has_rx = true, cfg->api.nics[i].rx = rx;
            if (has_tx)
                cfg->api.nics[i].has_tx = true, cfg->api.nics[i].tx = tx;
            api_reply_empty(req);
        }
    }
    json_decref(body);
}

/* ---- PUT /metrics ------------------------------------------------------------------------- */

void api_put_metrics(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    struct vm_config *cfg = a->v->cfg;
    json_t *body;
    if (vmm_api_body(req, "PUT /metrics", &body) < 0)
        return;
    struct wisp_err err = {0};
    int r = vm_resource_metrics(cfg, body, "PUT /metrics", &err);
    if (r == 0 && (r = vmm_metrics_start(&a->metrics, a->v, cfg->api.metrics_path, &err)) < 0)
        (void)vm_config_set_string(cfg, &cfg->api.metrics_path, NULL, NULL);
    if (r < 0)
        vmm_api_fail(req, &err);
    else
        api_reply_empty(req);
    json_decref(body);
}

/* GET /wisp/metrics: the counters since the start (wispd's stats). */
void api_get_wisp_metrics(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    api_reply_json(req, 200, vmm_metrics_totals(a->v));
}
