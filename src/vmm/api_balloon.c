/* The balloon resource: Firecracker's Balloon body of PUT /balloon and --config-file's
 * "balloon", and its GET form (docs/api.md; the routes are in api_balloon_routes.c). */
#include <errno.h>
#include <string.h>

#include "api/json.h"
#include "common/statebuf.h"
#include "virtio/balloon.h"
#include "vmm/api.h"

#define N(a)          (sizeof(a) / sizeof((a)[0]))
#define PAGES_PER_MIB 256
#define BALLOON_ID    "balloon0"

static int check_amount(uint64_t mib, const char *where, struct wisp_err *err)
{
    if (mib > UINT32_MAX / PAGES_PER_MIB)
        return wisp_err_set(err, EINVAL, "%s: amount_mib: %llu is more than %u", where,
                            (unsigned long long)mib, UINT32_MAX / PAGES_PER_MIB);
    return 0;
}

int vm_resource_balloon(struct vm_config *cfg, const json_t *body, const char *where,
                        struct wisp_err *err)
{
    uint64_t mib = 0, interval = 0;
    bool oom = false;
    const struct api_json_field f[] = {
        {"amount_mib", API_JSON_UINT, true, &mib, NULL, 0},
        {"deflate_on_oom", API_JSON_BOOL, true, &oom, NULL, 0},
        {"stats_polling_interval_s", API_JSON_UINT, false, &interval, NULL, 0},
    };
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0)
        r = check_amount(mib, where, err);
    if (r == 0 && interval > UINT32_MAX)
        r = wisp_err_set(err, EINVAL, "%s: stats_polling_interval_s: %llu is too large", where,
                         (unsigned long long)interval);
    if (r < 0)
        return r;
    cfg->balloon = true;
    cfg->balloon_params = (struct virtio_balloon_params){
        .target_pages = (uint32_t)(mib * PAGES_PER_MIB),
        .deflate_on_oom = oom,
        .stats_interval_s = (uint32_t)interval,
    };
    return 0;
}

json_t *vm_balloon_json(const struct vm_config *cfg)
{
    const struct virtio_balloon_params *p = &cfg->balloon_params;
    return json_pack("{s:I,s:b,s:I}", "amount_mib", (json_int_t)(p->target_pages / PAGES_PER_MIB),
                     "deflate_on_oom", p->deflate_on_oom, "stats_polling_interval_s",
                     (json_int_t)p->stats_interval_s);
}

#define BALLOON_PART 'B' /* not the vsock part's version 1 */

void vm_balloon_config_write(const struct vm_config *cfg, struct state_writer *w)
{
    if (!cfg->balloon)
        return;
    state_put_u8(w, BALLOON_PART);
    state_put_u32(w, cfg->balloon_params.target_pages);
    state_put_u8(w, cfg->balloon_params.deflate_on_oom);
    state_put_u32(w, cfg->balloon_params.stats_interval_s);
}

void vm_balloon_config_read(struct vm_config *cfg, struct state_reader *r)
{
    cfg->balloon = false;
    if (r->bad || !state_reader_left(r) || r->p[r->off] != BALLOON_PART)
        return;
    (void)state_get_u8(r);
    cfg->balloon_params.target_pages = state_get_u32(r);
    cfg->balloon_params.deflate_on_oom = state_get_bool(r);
    cfg->balloon_params.stats_interval_s = state_get_u32(r);
    cfg->balloon = !r->bad;
}
