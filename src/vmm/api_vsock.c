/* The vsock resource: Firecracker's PUT /vsock body (and --config-file's "vsock"), its GET
 * /vm/config form, and its part of a snapshot's configuration (docs/vsock.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "common/statebuf.h"
#include "vmm/api.h"
#include "vmm/config.h"

#define VSOCK_MAX_PATH 107 /* sun_path less its NUL; uds_path_PORT must fit too when used */

int vm_resource_vsock(struct vm_config *cfg, const json_t *body, const char *where,
                      struct wisp_err *err)
{
    uint64_t cid = 0;
    const char *uds = NULL, *id = NULL;
    const struct api_json_field f[] = {
        {"guest_cid", API_JSON_UINT, true, &cid, NULL, 0},
        {"uds_path", API_JSON_STRING, true, &uds, NULL, 0},
        {"vsock_id", API_JSON_STRING, false, &id, NULL, 0}, /* deprecated by Firecracker */
    };
    int r = api_json_read(body, where, f, sizeof(f) / sizeof(f[0]), err);
    if (r < 0)
        return r;
    if (cid < VSOCK_MIN_GUEST_CID || cid > VSOCK_MAX_GUEST_CID)
        return wisp_err_set(err, EINVAL, "%s: guest_cid: %llu is outside %u..%u", where,
                            (unsigned long long)cid, VSOCK_MIN_GUEST_CID, VSOCK_MAX_GUEST_CID);
    if (!*uds || strlen(uds) > VSOCK_MAX_PATH)
        return wisp_err_set(err, EINVAL, "%s: uds_path: empty or longer than %u bytes", where,
                            VSOCK_MAX_PATH);
    r = vm_config_set_string(cfg, &cfg->vsock_params.uds_path, uds, err);
    if (r < 0)
        return r;
    cfg->vsock = true;
    cfg->vsock_params.guest_cid = cid;
    return 0;
}

json_t *vm_vsock_json(const struct vm_config *cfg)
{
    return json_pack("{s:I,s:s}", "guest_cid", (json_int_t)cfg->vsock_params.guest_cid, "uds_path",
                     cfg->vsock_params.uds_path);
}

/* After the NICs, optional: a snapshot without it (older, or no vsock) reads as no vsock. */
void vm_vsock_config_write(const struct vm_config *cfg, struct state_writer *w)
{
    if (!cfg->vsock)
        return;
    state_put_u8(w, 1);
    state_put_u64(w, cfg->vsock_params.guest_cid);
    state_put_str(w, cfg->vsock_params.uds_path);
}

void vm_vsock_config_read(struct vm_config *cfg, struct state_reader *r)
{
    cfg->vsock = false;
    if (r->bad || !state_reader_left(r))
        return;
    if (state_get_u8(r) != 1) {
        state_reader_fail(r, "the vsock part is not version 1");
        return;
    }
    cfg->vsock_params.guest_cid = state_get_u64(r);
    bool is_null;
    char *s = state_get_str(r, VSOCK_MAX_PATH, &is_null);
    if (r->bad)
        return;
    if (is_null || !*s || cfg->vsock_params.guest_cid < VSOCK_MIN_GUEST_CID ||
        cfg->vsock_params.guest_cid > VSOCK_MAX_GUEST_CID) {
        free(s);
        state_reader_fail(r, "the vsock device's cid or path is invalid");
        return;
    }
    int ret = vm_config_set_string(cfg, &cfg->vsock_params.uds_path, s, NULL);
    free(s);
    if (ret < 0)
        state_reader_fail(r, "out of memory");
    else
        cfg->vsock = true;
}
