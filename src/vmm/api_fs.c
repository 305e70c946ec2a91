/* The virtio-9p shares as an API resource, a wisp extension (docs/api.md, docs/9p.md):
 * PUT /fs/{id} {fs_id, tag, path_on_host, read_only} before the start, --config-file's "fs"
 * array, their GET /vm/config form, and their part of a snapshot's configuration (a share is
 * saved while the guest holds no fid on it: docs/9p.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/json.h"
#include "common/statebuf.h"
#include "vmm/api.h"
#include "vmm/config.h"

#define FS_MAX_PATH 4096
#define FS_PART     'F' /* not the vsock part's version 1, nor 'B' or 'P' */

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

/* After the pmem devices' part, before the vsock's: a snapshot without it has no share. */
void vm_fs_config_write(const struct vm_config *cfg, struct state_writer *w)
{
    if (!cfg->nr_fs)
        return;
    state_put_u8(w, FS_PART);
    state_put_u32(w, cfg->nr_fs);
    for (unsigned i = 0; i < cfg->nr_fs; i++) {
        state_put_str(w, cfg->fs[i].id);
        state_put_str(w, cfg->fs[i].tag);
        state_put_str(w, cfg->fs[i].path);
        state_put_u8(w, cfg->fs[i].read_only);
    }
}

static const char *read_str(struct vm_config *cfg, struct state_reader *r, bool required,
                            size_t max)
{
    bool is_null;
    char *s = state_get_str(r, max, &is_null);
    if (r->bad)
        return NULL;
    const char *copy = NULL;
    if (is_null || !*s) {
        if (required)
            state_reader_fail(r, "a share's tag or path is missing");
    } else if (!(copy = vm_config_strdup(cfg, s, NULL))) {
        state_reader_fail(r, "out of memory");
    }
    free(s);
    return copy;
}

void vm_fs_config_read(struct vm_config *cfg, struct state_reader *r)
{
    cfg->nr_fs = 0;
    if (r->bad || !state_reader_left(r) || r->p[r->off] != FS_PART)
        return;
    (void)state_get_u8(r);
    uint32_t n = state_get_u32(r);
    if (n > VMM_MAX_FS) {
        state_reader_fail(r, "more virtio-9p shares than a machine may have");
        return;
    }
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        struct virtio_9p_params *p = &cfg->fs[i];
        *p = (struct virtio_9p_params){0};
        p->id = read_str(cfg, r, false, 64);
        p->tag = read_str(cfg, r, true, P9_TAG_MAX);
        p->path = read_str(cfg, r, true, FS_MAX_PATH);
        p->read_only = state_get_bool(r);
        if (!r->bad && p9_check_tag(p->tag, "a share", NULL) < 0)
            state_reader_fail(r, "a share's tag has characters a tag may not have");
        for (uint32_t k = 0; k < i && !r->bad; k++)
            if (!strcmp(cfg->fs[k].tag, p->tag))
                state_reader_fail(r, "two shares have one tag");
    }
    if (!r->bad)
        cfg->nr_fs = n;
}

int vm_fs_override(struct vm_config *cfg, const char *fs_id, const char *tag, const char *path,
                   int read_only, struct wisp_err *err)
{
    int i = -1;
    for (unsigned k = 0; fs_id && k < cfg->nr_fs && i < 0; k++) {
        char name[40];
        if (!strcmp(fs_name(cfg, k, name, sizeof(name)), fs_id))
            i = (int)k;
    }
    for (unsigned k = 0; tag && k < cfg->nr_fs && i < 0; k++)
        if (!strcmp(cfg->fs[k].tag, tag))
            i = (int)k;
    if (i < 0)
        return wisp_err_set(err, ENOENT,
                            "fs_overrides: %s %s: the snapshot has no such virtio-9p share (it "
                            "has %u)",
                            fs_id ? "fs_id" : "tag", fs_id ? fs_id : tag, cfg->nr_fs);
    struct stat st;
    if (!*path || strlen(path) > FS_MAX_PATH)
        return wisp_err_set(err, EINVAL,
                            "fs_overrides: %s: path_on_host: empty or longer than %d bytes",
                            cfg->fs[i].tag, FS_MAX_PATH);
    if (stat(path, &st) < 0)
        return wisp_err_sys(err, errno, "fs_overrides: %s: path_on_host: %s", cfg->fs[i].tag, path);
    if (!S_ISDIR(st.st_mode))
        return wisp_err_set(err, ENOTDIR, "fs_overrides: %s: path_on_host: %s is not a directory",
                            cfg->fs[i].tag, path);
    if (read_only >= 0)
        cfg->fs[i].read_only = read_only;
    int r = vm_config_set_string(cfg, &cfg->fs[i].path, path, err);
    return r < 0 ? r : i;
}
