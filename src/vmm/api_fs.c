/* The virtio-9p shares as an API resource, a wisp extension (docs/api.md, docs/9p.md):
 * PUT /fs/{id} {fs_id, tag, path_on_host, read_only} before the start, --config-file's "fs"
 * array, and their GET /vm/config form. Snapshots of a VM with a share are refused (the
 * device's quiesce), so shares have no part in a snapshot's configuration. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "api/json.h"
#include "vmm/api.h"
#include "vmm/config.h"

#define FS_MAX_PATH 4096

static const char *fs_name(const struct vm_config *cfg, unsigned i, char *buf, size_t len)
{
    if (cfg->fs[i].id)
        return cfg->fs[i].id;
    snprintf(buf, len, "fs%u", i);
    return buf;
}

static int find_fs(const struct vm_config *cfg, const char *id)
{
    for (unsigned i = 0; i < cfg->nr_fs; i++) {
        char name[40];
        if (!strcmp(fs_name(cfg, i, name, sizeof(name)), id))
            return (int)i;
    }
    return -1;
}

int vm_resource_fs(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                   struct wisp_err *err)
{
    const char *body_id = NULL, *tag = NULL, *path = NULL;
    bool read_only = false;
    const struct api_json_field f[] = {
        {"fs_id", API_JSON_STRING, true, &body_id, NULL, 0},
        {"tag", API_JSON_STRING, true, &tag, NULL, 0},
        {"path_on_host", API_JSON_STRING, true, &path, NULL, 0},
        {"read_only", API_JSON_BOOL, false, &read_only, NULL, 0},
    };
    int r = api_json_read(body, where, f, sizeof(f) / sizeof(f[0]), err);
    if (r == 0)
        r = vm_check_id(where, "fs_id", body_id, id, err);
    char w[160];
    snprintf(w, sizeof(w), "%s: tag", where);
    if (r == 0)
        r = p9_check_tag(tag, w, err);
    if (r < 0)
        return r;
    struct stat st;
    if (!*path || strlen(path) > FS_MAX_PATH)
        return wisp_err_set(err, EINVAL, "%s: path_on_host: empty or longer than %d bytes", where,
                            FS_MAX_PATH);
    if (stat(path, &st) < 0)
        return wisp_err_sys(err, errno, "%s: path_on_host: %s", where, path);
    if (!S_ISDIR(st.st_mode))
        return wisp_err_set(err, ENOTDIR, "%s: path_on_host: %s is not a directory", where, path);
    if (vm_config_find_drive(cfg, body_id) >= 0 || vm_config_find_nic(cfg, body_id) >= 0)
        return wisp_err_set(err, EINVAL, "%s: fs_id: a drive or network interface has the id %s",
                            where, body_id);
    int i = find_fs(cfg, body_id);
    for (unsigned k = 0; k < cfg->nr_fs; k++)
        if ((int)k != i && !strcmp(cfg->fs[k].tag, tag))
            return wisp_err_set(err, EINVAL, "%s: tag: another share has the tag %s", where, tag);
    if (i < 0 && cfg->nr_fs == VMM_MAX_FS)
        return wisp_err_set(err, EINVAL, "%s: a VM has at most %d shares", where, VMM_MAX_FS);
    if (i < 0) {
        i = (int)cfg->nr_fs++;
        cfg->fs[i] = (struct virtio_9p_params){0};
    }
    struct virtio_9p_params *p = &cfg->fs[i];
    p->read_only = read_only;
    r = vm_config_set_string(cfg, &p->id, body_id, err);
    if (r == 0)
        r = vm_config_set_string(cfg, &p->tag, tag, err);
    return r < 0 ? r : vm_config_set_string(cfg, &p->path, path, err);
}

json_t *vm_fs_json(const struct vm_config *cfg)
{
    json_t *a = json_array();
    for (unsigned i = 0; a && i < cfg->nr_fs; i++) {
        char name[40];
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:b}", "fs_id",
                                           fs_name(cfg, i, name, sizeof(name)), "tag",
                                           cfg->fs[i].tag, "path_on_host", cfg->fs[i].path,
                                           "read_only", cfg->fs[i].read_only));
    }
    return a;
}
