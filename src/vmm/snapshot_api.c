/* The API's snapshot routes (docs/api.md, docs/snapshot.md) with Firecracker's bodies:
 * PUT /snapshot/create (answered when both files are written) and PUT /snapshot/load, plus
 * wisp's extensions drive_overrides and fs_overrides. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "vmm/api.h"
#include "virtio/vsock.h"
#include "vmm/snapshot.h"
#include "vmm/vmm.h"

void api_put_snapshot_create(struct api_request *req, void *opaque);
void api_put_snapshot_load(struct api_request *req, void *opaque);

static void create_done(void *opaque, int result, const struct wisp_err *err)
{
    struct api_request *req = opaque;
    if (result < 0)
        api_reply_error(req, 400, "PUT /snapshot/create: %s", err->msg);
    else
        api_reply_empty(req);
}

void api_put_snapshot_create(struct api_request *req, void *opaque)
{
    static const char where[] = "PUT /snapshot/create";
    struct vmm_api *a = opaque;
    json_t *body;
    if (vmm_api_body(req, where, &body) < 0)
        return;
    struct snapshot_create_params p = {.type = SNAPSHOT_FULL};
    const char *type = NULL, *version = NULL;
    const struct api_json_field f[] = {
        {"snapshot_path", API_JSON_STRING, true, &p.snapshot_path, NULL, 0},
        {"mem_file_path", API_JSON_STRING, true, &p.mem_file_path, NULL, 0},
        {"snapshot_type", API_JSON_STRING, false, &type, NULL, 0},
        {"version", API_JSON_STRING, false, &version, NULL, 0}, /* Firecracker's old field */
    };
    struct wisp_err err = {0};
    int r = api_json_read(body, where, f, sizeof(f) / sizeof(f[0]), &err);
    if (r == 0 && type && !strcmp(type, "Diff"))
        p.type = SNAPSHOT_DIFF;
    else if (r == 0 && type && strcmp(type, "Full"))
        r = wisp_err_set(&err, EINVAL, "%s: snapshot_type: '%s' is neither Full nor Diff", where,
                         type);
    if (r == 0 && vmm_snapshot_create(a->v, &p, create_done, req, &err) < 0)
        r = wisp_err_wrap(&err, "%s", where);
    json_decref(body); /* the paths were copied */
    if (r < 0)
        vmm_api_fail(req, &err);
    else
        api_request_suspend(req); /* answered by create_done */
}

/* mem_backend {backend_type, backend_path}, or Firecracker's older mem_file_path. */
static int read_backend(const json_t *backend, const char *mem_file, const char *where,
                        struct snapshot_load_params *p, struct wisp_err *err)
{
    if (!backend == !mem_file)
        return wisp_err_set(err, EINVAL, "%s: exactly one of mem_backend and mem_file_path", where);
    if (mem_file) {
        p->backend = SNAPSHOT_MEM_FILE;
        p->backend_path = mem_file;
        return 0;
    }
    const char *type = NULL;
    const struct api_json_field f[] = {
        {"backend_type", API_JSON_STRING, true, &type, NULL, 0},
        {"backend_path", API_JSON_STRING, true, &p->backend_path, NULL, 0},
    };
    int r = api_json_read(backend, "PUT /snapshot/load: mem_backend", f, 2, err);
    if (r == 0 && !strcmp(type, "Uffd"))
        p->backend = SNAPSHOT_MEM_UFFD;
    else if (r == 0 && strcmp(type, "File"))
        r = wisp_err_set(err, EINVAL,
                         "%s: mem_backend: backend_type: '%s' is neither File nor Uffd", where,
                         type);
    return r;
}

/* network_overrides [{iface_id, host_dev_name, guest_mac}] and drive_overrides [{drive_id,
 * path_on_host}]: opt, when not NULL, names an optional third string (opts[i] NULL without). */
static int read_overrides(const json_t *list, const char *what, const char *key, const char *value,
                          const char *opt, const char **keys, const char **values,
                          const char **opts, unsigned *n, struct wisp_err *err)
{
    if (!list)
        return 0;
    if (json_array_size(list) > SNAPSHOT_MAX_OVERRIDES)
        return wisp_err_set(err, EINVAL, "PUT /snapshot/load: %s: more than %u entries", what,
                            SNAPSHOT_MAX_OVERRIDES);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char where[96];
        snprintf(where, sizeof(where), "PUT /snapshot/load: %s[%zu]", what, i);
        const json_t *o = json_array_get(list, i);
        if (!json_is_object(o))
            return wisp_err_set(err, EINVAL, "%s: %s, not an object", where, api_json_type_name(o));
        const struct api_json_field f[] = {
            {key, API_JSON_STRING, true, &keys[i], NULL, 0},
            {value, API_JSON_STRING, true, &values[i], NULL, 0},
            {opt, API_JSON_STRING, false, opt ? &opts[i] : NULL, NULL, 0},
        };
        if (opt)
            opts[i] = NULL;
        int r = api_json_read(o, where, f, opt ? 3 : 2, err);
        if (r < 0)
            return r;
        *n = (unsigned)i + 1;
    }
    return 0;
}

/* fs_overrides [{fs_id | tag, path_on_host, read_only}]. */
static int read_fs_overrides(const json_t *list, struct snapshot_load_params *p,
                             struct wisp_err *err)
{
    if (!list)
        return 0;
    if (json_array_size(list) > SNAPSHOT_MAX_OVERRIDES)
        return wisp_err_set(err, EINVAL, "PUT /snapshot/load: fs_overrides: more than %u entries",
                            SNAPSHOT_MAX_OVERRIDES);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char where[96];
        snprintf(where, sizeof(where), "PUT /snapshot/load: fs_overrides[%zu]", i);
        const json_t *o = json_array_get(list, i);
        if (!json_is_object(o))
            return wisp_err_set(err, EINVAL, "%s: %s, not an object", where, api_json_type_name(o));
        struct snapshot_fs_override *ov = &p->fs_overrides[i];
        bool ro = false;
        const struct api_json_field f[] = {
            {"fs_id", API_JSON_STRING, false, &ov->fs_id, NULL, 0},
            {"tag", API_JSON_STRING, false, &ov->tag, NULL, 0},
            {"path_on_host", API_JSON_STRING, true, &ov->path_on_host, NULL, 0},
            {"read_only", API_JSON_BOOL, false, &ro, NULL, 0},
        };
        int r = api_json_read(o, where, f, sizeof(f) / sizeof(f[0]), err);
        if (r < 0)
            return r;
        if (!ov->fs_id == !ov->tag)
            return wisp_err_set(err, EINVAL, "%s: exactly one of fs_id and tag", where);
        ov->read_only = json_object_get(o, "read_only") ? ro : -1;
        p->nr_fs_overrides = (unsigned)i + 1;
    }
    return 0;
}

static int read_load(const json_t *body, struct snapshot_load_params *p, struct wisp_err *err)
{
    static const char where[] = "PUT /snapshot/load";
    const char *mem_file = NULL;
    json_t *backend = NULL, *nets = NULL, *drives = NULL, *vsock = NULL, *fs = NULL;
    bool diff = false;
    const struct api_json_field f[] = {
        {"snapshot_path", API_JSON_STRING, true, &p->snapshot_path, NULL, 0},
        {"mem_backend", API_JSON_OBJECT, false, &backend, NULL, 0},
        {"mem_file_path", API_JSON_STRING, false, &mem_file, NULL, 0},
        {"resume_vm", API_JSON_BOOL, false, &p->resume_vm, NULL, 0},
        {"track_dirty_pages", API_JSON_BOOL, false, &p->track_dirty_pages, NULL, 0},
        {"enable_diff_snapshots", API_JSON_BOOL, false, &diff, NULL, 0},
        {"clock_realtime", API_JSON_BOOL, false, &p->clock_realtime, NULL, 0},
        {"network_overrides", API_JSON_ARRAY, false, &nets, NULL, 0},
        {"vsock_override", API_JSON_OBJECT, false, &vsock, NULL, 0},
        {"drive_overrides", API_JSON_ARRAY, false, &drives, NULL, 0}, /* wisp's */
        {"fs_overrides", API_JSON_ARRAY, false, &fs, NULL, 0},        /* wisp's */
    };
    int r = api_json_read(body, where, f, sizeof(f) / sizeof(f[0]), err);
    p->track_dirty_pages |= diff; /* Firecracker's older name */
    if (r == 0 && vsock) {
        const struct api_json_field vf[] = {
            {"uds_path", API_JSON_STRING, true, &p->vsock_uds_path, NULL, 0},
            {"guest_cid", API_JSON_UINT, false, &p->vsock_guest_cid, NULL, VSOCK_MAX_GUEST_CID},
        };
        r = api_json_read(vsock, "PUT /snapshot/load: vsock_override", vf, 2, err);
        if (r == 0 && json_object_get(vsock, "guest_cid") &&
            p->vsock_guest_cid < VSOCK_MIN_GUEST_CID)
            r = wisp_err_set(err, EINVAL,
                             "PUT /snapshot/load: vsock_override: guest_cid: %llu is outside "
                             "%u..%u",
                             (unsigned long long)p->vsock_guest_cid, VSOCK_MIN_GUEST_CID,
                             VSOCK_MAX_GUEST_CID);
    }
    if (r == 0)
        r = read_backend(backend, mem_file, where, p, err);
    const char *ids[SNAPSHOT_MAX_OVERRIDES], *paths[SNAPSHOT_MAX_OVERRIDES];
    const char *macs[SNAPSHOT_MAX_OVERRIDES];
    if (r == 0)
        r = read_overrides(nets, "network_overrides", "iface_id", "host_dev_name", "guest_mac", ids,
                           paths, macs, &p->nr_overrides, err);
    for (unsigned i = 0; r == 0 && i < p->nr_overrides; i++)
        p->overrides[i] = (struct snapshot_net_override){ids[i], paths[i], macs[i]};
    if (r == 0)
        r = read_overrides(drives, "drive_overrides", "drive_id", "path_on_host", NULL, ids, paths,
                           NULL, &p->nr_drive_overrides, err);
    for (unsigned i = 0; r == 0 && i < p->nr_drive_overrides; i++)
        p->drive_overrides[i] = (struct snapshot_drive_override){ids[i], paths[i]};
    if (r == 0)
        r = read_fs_overrides(fs, p, err);
    return r;
}

void api_put_snapshot_load(struct api_request *req, void *opaque)
{
    struct vmm_api *a = opaque;
    json_t *body;
    if (vmm_api_body(req, "PUT /snapshot/load", &body) < 0)
        return;
    struct snapshot_load_params p = {0};
    struct wisp_err err = {0};
    int r = read_load(body, &p, &err);
    if (r == 0 && vmm_snapshot_load(a->v, &p, &err) < 0)
        r = wisp_err_wrap(&err, "PUT /snapshot/load");
    json_decref(body);
    if (r < 0)
        vmm_api_fail(req, &err);
    else
        api_reply_empty(req);
}
