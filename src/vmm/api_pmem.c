/* The pmem resource: Firecracker's Pmem body of PUT /pmem/{id} (and --config-file's "pmem"),
 * its GET /vm/config form, and its part of a snapshot's configuration (docs/memory.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "common/statebuf.h"
#include "vmm/api.h"
#include "vmm/config.h"

#define PMEM_PART     'P' /* not the vsock part's version 1, nor the balloon's 'B' */
#define PMEM_MAX_PATH 4096

const char *vm_pmem_name(const struct vm_config *cfg, unsigned i, char *buf, size_t len)
{
    if (cfg->pmems[i].id)
        return cfg->pmems[i].id;
    snprintf(buf, len, "pmem%u", i);
    return buf;
}

static int find_pmem(const struct vm_config *cfg, const char *id)
{
    for (unsigned i = 0; i < cfg->nr_pmems; i++) {
        char name[40];
        if (!strcmp(vm_pmem_name(cfg, i, name, sizeof(name)), id))
            return (int)i;
    }
    return -1;
}

int vm_resource_pmem(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                     struct wisp_err *err)
{
    const char *body_id = NULL, *path = NULL, *mode_s = NULL;
    bool root = false, read_only = false, has_rl = false;
    json_t *rl = NULL;
    const struct api_json_field f[] = {
        {"id", API_JSON_STRING, true, &body_id, NULL, 0},
        {"path_on_host", API_JSON_STRING, true, &path, NULL, 0},
        {"root_device", API_JSON_BOOL, false, &root, NULL, 0},
        {"read_only", API_JSON_BOOL, false, &read_only, NULL, 0},
        {"rate_limiter", API_JSON_OBJECT, false, &rl, &has_rl, 0},
        {"mode", API_JSON_STRING, false, &mode_s, NULL, 0}, /* wisp's: ro, cow, rw */
    };
    int r = api_json_read(body, where, f, sizeof(f) / sizeof(f[0]), err);
    if (r == 0)
        r = vm_check_id(where, "id", body_id, id, err);
    if (r < 0)
        return r;
    if (has_rl)
        return wisp_err_set(err, EINVAL,
                            "%s: rate_limiter: not supported: the guest reads and writes a pmem "
                            "region with loads and stores, which no rate limiter sees",
                            where);
    if (!*path || strlen(path) > PMEM_MAX_PATH)
        return wisp_err_set(err, EINVAL, "%s: path_on_host: empty or longer than %d bytes", where,
                            PMEM_MAX_PATH);
    enum virtio_pmem_mode mode = read_only ? VIRTIO_PMEM_RO : VIRTIO_PMEM_RW;
    if (mode_s && virtio_pmem_mode_parse(mode_s, &mode) < 0)
        return wisp_err_set(err, EINVAL, "%s: mode: '%.32s' is not ro, cow or rw", where, mode_s);
    if (mode_s && read_only && mode != VIRTIO_PMEM_RO)
        return wisp_err_set(err, EINVAL, "%s: read_only is true but mode is %s", where, mode_s);
    char w[160];
    snprintf(w, sizeof(w), "%s: path_on_host", where);
    r = virtio_pmem_check_file(w, path, mode, err);
    if (r < 0)
        return r;
    if (vm_config_find_drive(cfg, body_id) >= 0 || vm_config_find_nic(cfg, body_id) >= 0)
        return wisp_err_set(err, EINVAL, "%s: id: a drive or network interface has the id %s",
                            where, body_id);
    int i = find_pmem(cfg, body_id);
    for (unsigned k = 0; root && k < cfg->nr_drives; k++)
        if (cfg->api.drives[k].is_root_device)
            return wisp_err_set(err, EINVAL, "%s: root_device: a drive is the root device already",
                                where);
    for (unsigned k = 0; root && k < cfg->nr_pmems; k++)
        if ((int)k != i && cfg->pmems[k].root_device)
            return wisp_err_set(err, EINVAL,
                                "%s: root_device: pmem device %u is the root device already", where,
                                k);
    if (i < 0 && cfg->nr_pmems == VMM_MAX_PMEM)
        return wisp_err_set(err, EINVAL, "%s: a VM has at most %d pmem devices", where,
                            VMM_MAX_PMEM);
    if (i < 0) {
        i = (int)cfg->nr_pmems++;
        cfg->pmems[i] = (struct virtio_pmem_params){0};
    }
    struct virtio_pmem_params *p = &cfg->pmems[i];
    p->mode = mode;
    p->root_device = root;
    r = vm_config_set_string(cfg, &p->id, body_id, err);
    return r < 0 ? r : vm_config_set_string(cfg, &p->path, path, err);
}

json_t *vm_pmem_json(const struct vm_config *cfg, unsigned i)
{
    const struct virtio_pmem_params *p = &cfg->pmems[i];
    char name[40];
    return json_pack("{s:s,s:s,s:b,s:b,s:s}", "id", vm_pmem_name(cfg, i, name, sizeof(name)),
                     "path_on_host", p->path, "root_device", p->root_device, "read_only",
                     p->mode == VIRTIO_PMEM_RO, "mode", virtio_pmem_mode_name(p->mode));
}

/* After the balloon's part, before the vsock's: a snapshot without it has no pmem device. */
void vm_pmem_config_write(const struct vm_config *cfg, struct state_writer *w)
{
    if (!cfg->nr_pmems)
        return;
    state_put_u8(w, PMEM_PART);
    state_put_u32(w, cfg->nr_pmems);
    for (unsigned i = 0; i < cfg->nr_pmems; i++) {
        state_put_str(w, cfg->pmems[i].id);
        state_put_str(w, cfg->pmems[i].path);
        state_put_u8(w, (uint8_t)cfg->pmems[i].mode);
        state_put_u8(w, cfg->pmems[i].root_device);
    }
}

static const char *read_str(struct vm_config *cfg, struct state_reader *r, bool required)
{
    bool is_null;
    char *s = state_get_str(r, PMEM_MAX_PATH, &is_null);
    if (r->bad)
        return NULL;
    const char *copy = NULL;
    if (is_null || !*s) {
        if (required)
            state_reader_fail(r, "a pmem device's path is missing");
    } else if (!(copy = vm_config_strdup(cfg, s, NULL))) {
        state_reader_fail(r, "out of memory");
    }
    free(s);
    return copy;
}

void vm_pmem_config_read(struct vm_config *cfg, struct state_reader *r)
{
    cfg->nr_pmems = 0;
    if (r->bad || !state_reader_left(r) || r->p[r->off] != PMEM_PART)
        return;
    (void)state_get_u8(r);
    uint32_t n = state_get_u32(r);
    if (n > VMM_MAX_PMEM) {
        state_reader_fail(r, "more pmem devices than a machine may have");
        return;
    }
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        struct virtio_pmem_params *p = &cfg->pmems[i];
        p->id = read_str(cfg, r, false);
        p->path = read_str(cfg, r, true);
        uint8_t mode = state_get_u8(r);
        p->root_device = state_get_bool(r);
        if (mode > VIRTIO_PMEM_COW)
            state_reader_fail(r, "a pmem device's mode is unknown");
        p->mode = (enum virtio_pmem_mode)mode;
    }
    if (!r->bad)
        cfg->nr_pmems = n;
}
