/* The balloon's routes (docs/api.md, docs/memory.md): PUT /balloon before the start, PATCH
 * /balloon and PATCH /balloon/statistics after it, GET /balloon and GET /balloon/statistics.
 * All on the main loop, as the device's queues (virtio/balloon.h). */
#include <errno.h>
#include <string.h>

#include "api/json.h"
#include "virtio/balloon.h"
#include "vmm/api.h"
#include "vmm/snapshot.h"
#include "vmm/vmm.h"

#define N(a)          (sizeof(a) / sizeof((a)[0]))
#define PAGES_PER_MIB 256
#define BALLOON_ID    "balloon0"

void api_put_balloon(struct api_request *req, void *opaque);
void api_patch_balloon(struct api_request *req, void *opaque);
void api_get_balloon(struct api_request *req, void *opaque);
void api_get_balloon_stats(struct api_request *req, void *opaque);
void api_patch_balloon_stats(struct api_request *req, void *opaque);

static int check_amount(uint64_t mib, const char *where, struct wisp_err *err)
{
    if (mib > UINT32_MAX / PAGES_PER_MIB)
        return wisp_err_set(err, EINVAL, "%s: amount_mib: %llu is more than %u", where,
                            (unsigned long long)mib, UINT32_MAX / PAGES_PER_MIB);
    return 0;
}

void api_put_balloon(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    json_t *body;
    if (!vmm_api_before_start(a, req, "the balloon device") ||
        vmm_api_body(req, "PUT /balloon", &body) < 0)
        return;
    struct wisp_err err = {0};
    if (vm_resource_balloon(a->v->cfg, body, "PUT /balloon", &err) < 0)
        vmm_api_fail(req, &err);
    else
        api_reply_empty(req);
    json_decref(body);
}

/* The running balloon device, or a 400 (NULL). */
static struct device *running_balloon(struct vmm_api *a, struct api_request *req, const char *where)
{
    if (!a->v->cfg->balloon) {
        api_reply_error(req, 400,
                        "%s: the VM has no balloon device (PUT /balloon before "
                        "InstanceStart)",
                        where);
        return NULL;
    }
    if (a->v->state != VMM_RUNNING && a->v->state != VMM_PAUSED) {
        api_reply_error(req, 400,
                        "The requested operation is not supported before starting the microVM: "
                        "%s changes the running balloon; before InstanceStart, PUT /balloon",
                        where);
        return NULL;
    }
    if (vmm_snapshot_busy(a->v)) {
        api_reply_error(req, 400, "%s: a snapshot is being written, try again after it", where);
        return NULL;
    }
    struct device *dev = device_list_find(&a->v->m.devices, BALLOON_ID);
    if (!dev)
        api_reply_error(req, 400, "%s: the VM has no balloon device", where);
    return dev;
}

void api_get_balloon(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    if (!a->v->cfg->balloon) {
        api_reply_error(req, 400,
                        "GET /balloon: the VM has no balloon device (PUT /balloon "
                        "before InstanceStart)");
        return;
    }
    api_reply_json(req, 200, vm_balloon_json(a->v->cfg));
}

void api_patch_balloon(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    const char *where = "PATCH /balloon";
    json_t *body;
    struct device *dev = running_balloon(a, req, where);
    if (!dev || vmm_api_body(req, where, &body) < 0)
        return;
    uint64_t mib = 0;
    const struct api_json_field f[] = {{"amount_mib", API_JSON_UINT, true, &mib, NULL, 0}};
    struct wisp_err err = {0};
    int r = api_json_read(body, where, f, N(f), &err);
    if (r == 0)
        r = check_amount(mib, where, &err);
    json_decref(body);
    if (r < 0) {
        vmm_api_fail(req, &err);
        return;
    }
    a->v->cfg->balloon_params.target_pages = (uint32_t)(mib * PAGES_PER_MIB);
    virtio_balloon_set_target(dev, (uint32_t)(mib * PAGES_PER_MIB));
    api_reply_empty(req);
}

void api_patch_balloon_stats(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    const char *where = "PATCH /balloon/statistics";
    json_t *body;
    struct device *dev = running_balloon(a, req, where);
    if (!dev || vmm_api_body(req, where, &body) < 0)
        return;
    uint64_t interval = 0;
    const struct api_json_field f[] = {
        {"stats_polling_interval_s", API_JSON_UINT, true, &interval, NULL, 0}};
    struct wisp_err err = {0};
    int r = api_json_read(body, where, f, N(f), &err);
    json_decref(body);
    if (r == 0 && interval > UINT32_MAX)
        r = wisp_err_set(&err, EINVAL, "%s: stats_polling_interval_s: %llu is too large", where,
                         (unsigned long long)interval);
    if (r == 0 && (interval == 0 || virtio_balloon_set_stats_interval(dev, (uint32_t)interval)))
        r = wisp_err_set(&err, EINVAL,
                         "%s: the statistics can be neither turned on nor off after the start "
                         "(stats_polling_interval_s was %u at PUT /balloon; give a period > 0 "
                         "for a balloon that has them)",
                         where, a->v->cfg->balloon_params.stats_interval_s);
    if (r < 0) {
        vmm_api_fail(req, &err);
        return;
    }
    a->v->cfg->balloon_params.stats_interval_s = (uint32_t)interval;
    api_reply_empty(req);
}

void api_get_balloon_stats(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    const char *where = "GET /balloon/statistics";
    struct device *dev = running_balloon(a, req, where);
    if (!dev)
        return;
    if (!a->v->cfg->balloon_params.stats_interval_s) {
        api_reply_error(req, 400,
                        "%s: the balloon has no statistics (stats_polling_interval_s "
                        "was 0 at PUT /balloon)",
                        where);
        return;
    }
    struct virtio_balloon_stats s;
    virtio_balloon_get_stats(dev, &s);
    json_t *o = json_pack("{s:I,s:I,s:I,s:I}", "target_pages", (json_int_t)s.target_pages,
                          "actual_pages", (json_int_t)s.actual_pages, "target_mib",
                          (json_int_t)(s.target_pages / PAGES_PER_MIB), "actual_mib",
                          (json_int_t)(s.actual_pages / PAGES_PER_MIB));
    static const char *const names[BALLOON_STAT_NR] = {
        "swap_in",          "swap_out",    "major_faults",
        "minor_faults",     "free_memory", "total_memory",
        "available_memory", "disk_caches", "hugetlb_allocations",
        "hugetlb_failures",
    };
    for (unsigned i = 0; i < BALLOON_STAT_NR; i++)
        if (s.valid & (1u << i))
            json_object_set_new(
                o, names[i],
                json_integer((json_int_t)(s.values[i] > INT64_MAX ? INT64_MAX : s.values[i])));
    /* wisp's: what the device did */
    json_object_set_new(o, "wisp",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "stats_updates",
                                  (json_int_t)s.stats_updates, "inflated_pages",
                                  (json_int_t)s.inflated, "deflated_pages", (json_int_t)s.deflated,
                                  "reported_bytes", (json_int_t)s.reported_bytes, "bad_pfns",
                                  (json_int_t)s.bad_pfns));
    api_reply_json(req, 200, o);
}
