/* Snapshot, restore and clone through wispd (docs/wispd.md, "Snapshots and clones"), on
 * wisp-vmm's snapshot API (docs/snapshot.md): a snapshot pauses a running VM, writes its state
 * and memory files and its definition beside them, and resumes it; a restore starts a VM whose
 * wisp-vmm loads a snapshot instead of booting; a clone snapshots a VM once and restores it N
 * times, each clone a VM of its own (name, API socket, console, taps, vsock path), started all
 * at once on the loop. Progress is a stream of JSON lines. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/http.h"
#include "api/json.h"
#include "common/cleanup.h"
#include "network.h"
#include "overlay.h"
#include "placement.h"
#include "registry.h"
#include "vmmclient.h"
#include "wispd.h"

#define SNAPSHOT_TIMEOUT_MS 120000 /* writing guest memory: seconds for large VMs */
#define CLONE_MAX           10000

/* A snapshot's three files from a path: a directory holds state, memory and vm.json; any
 * other path P is the state file, with P.mem and P.json. */
static int snapshot_files(const char *path, char *state, char *mem, char *def, size_t size,
                          struct wisp_err *err)
{
    struct stat st;
    if (path[0] != '/')
        return wisp_err_set(err, EINVAL, "%s: not an absolute path", path);
    bool dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    int n = snprintf(state, size, dir ? "%s/state" : "%s", path);
    snprintf(mem, size, dir ? "%s/memory" : "%s.mem", path);
    snprintf(def, size, dir ? "%s/vm.json" : "%s.json", path);
    if (n < 0 || (size_t)n + 8 >= size)
        return wisp_err_set(err, ENAMETOOLONG, "%s: the path is too long", path);
    return 0;
}

/* ---- the requests of a restore --------------------------------------------------------- */

size_t clone_restore_requests(const struct vm *vm, struct vmm_request *r, size_t max)
{
    char js[160], jm[160], jd[160]; /* a jailed VM's paths are its jail's (placement.h) */
    json_t *load = json_pack(
        "{s:s, s:{s:s, s:s}, s:b}", "snapshot_path",
        placement_path(vm, "snapshot", "state", vm->restore_state, js, sizeof(js)), "mem_backend",
        "backend_type", "File", "backend_path",
        placement_path(vm, "snapshot", "memory", vm->restore_mem, jm, sizeof(jm)), "resume_vm", 1);
    json_t *item, *nets = json_array(), *drives = json_array();
    size_t i;
    char tap[16];
    json_array_foreach(json_object_get(vm->def, "nics"), i, item)
    {
        json_t *o = json_pack("{s:O, s:s}", "iface_id", json_object_get(item, "id"),
                              "host_dev_name", net_nic_tap(vm, i, item, tap));
        if (json_object_get(item, "mac")) /* a clone's own (define_from), else the snapshot's */
            json_object_set(o, "guest_mac", json_object_get(item, "mac"));
        json_array_append_new(nets, o);
    }
    json_array_foreach(json_object_get(vm->def, "drives"), i, item) json_array_append_new(
        drives, json_pack("{s:O, s:s}", "drive_id", json_object_get(item, "id"), "path_on_host",
                          placement_path(
                              vm, "drive", json_string_value(json_object_get(item, "id")),
                              json_string_value(json_object_get(item, "path")), jd, sizeof(jd))));
    if (json_array_size(nets))
        json_object_set(load, "network_overrides", nets);
    if (json_array_size(drives))
        json_object_set(load, "drive_overrides", drives);
    json_decref(nets);
    json_decref(drives);
    json_t *vsock = json_object_get(vm->def, "vsock");
    if (json_object_get(vsock, "uds_path")) {
        json_t *o = json_pack("{s:O}", "uds_path", json_object_get(vsock, "uds_path"));
        if (json_object_get(vsock, "guest_cid")) /* a clone's own */
            json_object_set(o, "guest_cid", json_object_get(vsock, "guest_cid"));
        json_object_set_new(load, "vsock_override", o);
    }
    r[0] = (struct vmm_request){"PUT", strdup("/snapshot/load"), json_dumps(load, 0)};
    json_decref(load);
    return max ? 1 : 0;
}

/* ---- snapshot ------------------------------------------------------------------------- */

struct snap_job {
    struct wispd *d;
    int64_t id;
    char name[72];
    char state[PATH_MAX], mem[PATH_MAX], def[PATH_MAX];
    bool resume;             /* it was running: resumed after */
    bool hold;               /* left paused after it (clone.c resumes it: writable drives) */
    struct api_request *req; /* POST .../snapshot: answered at the end */
    struct clone_job *clone; /* or a clone's first step */
};

static void clone_snapshot_done(struct clone_job *cj, bool ok, const char *msg);

static void write_definition(struct snap_job *j, const json_t *def, struct wisp_err *err)
{
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s.tmp", j->def);
    if (json_dump_file(def, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) < 0 || rename(tmp, j->def) < 0)
        wisp_err_sys(err, errno ? errno : EIO, "%s", j->def);
}

static void ignore_done(void *opaque, int status, const char *message)
{
}

static void snap_done(void *opaque, int status, const char *message)
{
    struct snap_job *j = opaque;
    struct vm *vm = wispd_find(j->d, j->name);
    if (vm && vm->id != j->id)
        vm = NULL;
    if (vm)
        vm->client = NULL;
    struct wisp_err err = {0};
    if (status == 0 && !vm)
        wisp_err_set(&err, ENOENT, "%s: removed during its snapshot", j->name);
    else if (status < 0)
        wisp_err_set(&err, -status, "%s: snapshot: %s", j->name, message);
    else if (placement_take_file(vm, "snapshot", "state", j->state, &err) == 0 &&
             placement_take_file(vm, "snapshot", "memory", j->mem, &err) == 0)
        write_definition(j, vm->def, &err);
    if (err.msg[0] && vm && status < 0 && j->resume) {
        /* it may have stayed paused (the pause went through, the snapshot did not) */
        struct vmm_request r = {"PATCH", strdup("/vm"), strdup("{\"state\": \"Resumed\"}")};
        (void)vmm_client_run(NULL, j->d->loop, vm->api_sock, &r, 1, 0, 5000, ignore_done, NULL,
                             NULL);
    }
    if (!err.msg[0] && vm)
        wispd_event(j->d, vm->name, "snapshot", j->state);
    if (j->req) {
        if (err.msg[0])
            api_reply_error(j->req, err.errnum == ENOENT ? 404 : 400, "%s", err.msg);
        else
            api_reply_json(j->req, 200,
                           json_pack("{s:s, s:s, s:s, s:s}", "name", j->name, "state", j->state,
                                     "memory", j->mem, "definition", j->def));
    }
    if (j->clone)
        clone_snapshot_done(j->clone, !err.msg[0], err.msg);
    free(j);
}

/* Pauses (if running), snapshots, resumes: one request sequence on the VM's API. */
static int snapshot_start(struct vm *vm, struct snap_job *j, struct wisp_err *err)
{
    if (vm->state != VM_RUNNING && vm->state != VM_PAUSED)
        return wisp_err_set(err, EBUSY, "%s is %s: a snapshot is of a running or paused VM",
                            vm->name, vm_state_name(vm->state));
    if (vm->client)
        return wisp_err_set(err, EBUSY, "%s: a request to it is under way", vm->name);
    j->d = vm->d;
    j->id = vm->id;
    snprintf(j->name, sizeof(j->name), "%s", vm->name);
    j->resume = vm->state == VM_RUNNING;
    char js[160], jm[160]; /* a jailed VM writes in its jail; snap_done moves the files out */
    json_t *body = json_pack("{s:s, s:s}", "snapshot_path",
                             placement_path(vm, "snapshot", "state", j->state, js, sizeof(js)),
                             "mem_file_path",
                             placement_path(vm, "snapshot", "memory", j->mem, jm, sizeof(jm)));
    struct vmm_request r[3];
    size_t n = 0;
    if (j->resume)
        r[n++] = (struct vmm_request){"PATCH", strdup("/vm"), strdup("{\"state\": \"Paused\"}")};
    r[n++] = (struct vmm_request){"PUT", strdup("/snapshot/create"), json_dumps(body, 0)};
    if (j->resume && !j->hold)
        r[n++] = (struct vmm_request){"PATCH", strdup("/vm"), strdup("{\"state\": \"Resumed\"}")};
    json_decref(body);
    return vmm_client_run(&vm->client, vm->d->loop, vm->api_sock, r, n, 0, SNAPSHOT_TIMEOUT_MS,
                          snap_done, j, err);
}

/* Reads one string field of the body. */
static int body_string(struct api_request *req, const char *what, const char *field, char *out,
                       size_t size, struct wisp_err *err)
{
    size_t len;
    const char *text = api_request_body(req, &len);
    json_t *body = NULL;
    const char *v = NULL;
    const struct api_json_field f[] = {
        {.name = field, .type = API_JSON_STRING, .required = true, .out = &v}};
    int ret = api_json_parse_object(text, len, what, &body, err);
    if (ret == 0)
        ret = api_json_read(body, what, f, 1, err);
    if (ret == 0 && snprintf(out, size, "%s", v) >= (int)size)
        ret = wisp_err_set(err, ENAMETOOLONG, "%s: %s: too long", what, field);
    json_decref(body);
    return ret;
}

/* POST /v1/vms/{name}/snapshot {"path": P} */
void clone_h_snapshot(struct api_request *req, void *opaque)
{
    struct vm *vm = wispd_vm_or_404(opaque, req);
    if (!vm)
        return;
    struct wisp_err err = {0};
    char path[PATH_MAX];
    struct snap_job *j = calloc(1, sizeof(*j));
    int ret = j ? body_string(req, "snapshot", "path", path, sizeof(path), &err)
                : wisp_err_set(&err, ENOMEM, "out of memory");
    if (ret == 0)
        ret = snapshot_files(path, j->state, j->mem, j->def, sizeof(j->state), &err);
    if (ret == 0) {
        j->req = req;
        ret = snapshot_start(vm, j, &err);
    }
    if (ret < 0) {
        free(j);
        api_reply_error(req, err.errnum == EBUSY ? 409 : 400, "%s", err.msg);
        return;
    }
    api_request_suspend(req);
}

/* ---- restore --------------------------------------------------------------------------- */

/* Defines a VM from a definition with another name (and the host resources that must be its
 * own: taps, vsock path; clone number `index` > 0 also its vsock cid, the source's + index, and
 * a new MAC for each NIC, allocated as a define's); *out the new VM. */
static int define_from(struct wispd *d, json_t *src, const char *name, unsigned index,
                       const char *overlay_dir, struct vm **out, struct wisp_err *err)
{
    json_t *def = json_deep_copy(src), *item;
    if (!def)
        return wisp_err_set(err, ENOMEM, "out of memory");
    json_object_set_new(def, "name", json_string(name));
    size_t i;
    unsigned h = 5381;
    for (const char *p = name; *p; p++)
        h = h * 33 + (unsigned char)*p;
    json_array_foreach(json_object_get(def, "nics"), i, item)
    {
        if (index)
            json_object_del(item, "mac"); /* net_vm_define() allocates the clone's own */
        if (json_object_get(item, "network"))
            continue; /* wispd makes its tap (network.h) */
        char tap[32]; /* at most 15 bytes (IFNAMSIZ): wc, 8 hex digits, n, the index */
        snprintf(tap, sizeof(tap), "wc%08xn%u", h, (unsigned)(i % 100));
        json_object_set_new(item, "tap", json_string(tap));
    }
    json_array_foreach(json_object_get(def, "drives"), i, item)
    {
        if (!overlay_dir || json_is_true(json_object_get(item, "read_only")))
            continue; /* read-only drives are shared */
        char overlay[PATH_MAX], backing[PATH_MAX];
        overlay_paths(overlay_dir, name, json_string_value(json_object_get(item, "id")), overlay,
                      backing, sizeof(overlay));
        json_object_set_new(item, "path", json_string(overlay));
        json_object_set_new(item, "format", json_string("qcow2"));
        json_object_set_new(item, "backing", json_string(backing));
    }
    json_t *vsock = json_object_get(def, "vsock");
    /* a jailed VM's uds_path is its jail's (each jail has its own): it stays */
    bool jailed = d->place.jail && !json_is_false(json_object_get(def, "jail"));
    if (json_object_get(vsock, "uds_path")) {
        char uds[PATH_MAX];
        snprintf(uds, sizeof(uds), "%s/run/%s.vsock", d->state_dir, name);
        if (!jailed)
            json_object_set_new(vsock, "uds_path", json_string(uds));
        json_int_t cid = json_integer_value(json_object_get(vsock, "guest_cid"));
        if (index && cid >= 3) /* 3 .. 0xfffffffe */
            json_object_set_new(vsock, "guest_cid",
                                json_integer(3 + (cid - 3 + index) % 0xfffffffcll));
    }
    int ret = index ? net_vm_define(d, def, err) : 0;
    cleanup_free char *text = ret == 0 ? json_dumps(def, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_t *checked = NULL;
    int64_t id;
    if (ret == 0)
        ret = text ? vmdef_parse(text, strlen(text), &checked, err)
                   : wisp_err_set(err, ENOMEM, "out of memory");
    json_decref(def);
    if (ret == 0 && wispd_find(d, name))
        ret = wisp_err_set(err, EEXIST, "a VM named '%s' exists", name);
    cleanup_free char *stored =
        ret == 0 ? json_dumps(checked, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    if (ret == 0)
        ret = registry_define(d->reg, name, stored,
                              json_string_value(json_object_get(checked, "restart_policy")), &id,
                              err);
    if (ret == 0)
        ret = vm_create(d, checked, id, out, err);
    if (ret == 0)
        wispd_event(d, name, "define", "");
    json_decref(checked);
    return ret;
}

static int set_restore(struct vm *vm, const char *state, const char *mem, struct wisp_err *err)
{
    free(vm->restore_state);
    free(vm->restore_mem);
    vm->restore_state = strdup(state);
    vm->restore_mem = strdup(mem);
    if (!vm->restore_state || !vm->restore_mem)
        return wisp_err_set(err, ENOMEM, "out of memory");
    return 0;
}

/* POST /v1/vms/{name}/restore {"from": P}: into the stopped VM NAME, or a new VM NAME defined
 * from the snapshot's definition. Answered once it runs, as a start. */
void clone_h_restore(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    const char *name = api_request_param(req, "name");
    struct wisp_err err = {0};
    char from[PATH_MAX], state[PATH_MAX], mem[PATH_MAX], defp[PATH_MAX];
    int ret = body_string(req, "restore", "from", from, sizeof(from), &err);
    if (ret == 0)
        ret = snapshot_files(from, state, mem, defp, sizeof(state), &err);
    if (ret == 0 && (access(state, R_OK) < 0 || access(mem, R_OK) < 0))
        ret = wisp_err_sys(&err, errno, "restore: %s", access(state, R_OK) < 0 ? state : mem);
    struct vm *vm = ret == 0 ? wispd_find(d, name) : NULL;
    if (ret == 0 && !vm) {
        json_error_t je;
        json_t *def = json_load_file(defp, 0, &je);
        if (!def)
            ret = wisp_err_set(&err, EINVAL,
                               "restore: %s: %s (the snapshot's definition, written by wisp "
                               "snapshot)",
                               defp, je.text);
        else
            ret = define_from(d, def, name, 0, NULL, &vm, &err);
        json_decref(def);
    }
    if (ret == 0)
        ret = set_restore(vm, state, mem, &err);
    if (ret == 0)
        ret = vm_start(vm, req, &err);
    if (ret < 0) {
        if (vm) {
            free(vm->restore_state);
            free(vm->restore_mem);
            vm->restore_state = vm->restore_mem = NULL;
        }
        unsigned st = err.errnum == EEXIST || err.errnum == EBUSY    ? 409
                      : err.errnum == EMFILE || err.errnum == EAGAIN ? 507
                                                                     : 400;
        api_reply_error(req, st, "%s", err.msg);
    }
}

/* ---- clone ----------------------------------------------------------------------------- */

struct clone_job {
    struct wispd *d;
    char source[72], prefix[72];
    unsigned count, started, failed, done;
    int64_t t0_ms, snap_ms;
    struct snap_job *snap;
    char state[PATH_MAX], mem[PATH_MAX];
    /* writable drives (overlay.c): the source stays paused until the copies and the overlays
     * are made in dir */
    unsigned nr_writable;
    bool source_running;
    int64_t source_id;
    char dir[PATH_MAX];
    struct overlay_job ov;
    json_t *def;     /* the source's definition */
    json_t *results; /* [{name, state, error?}] */
    struct api_stream *st;
    char *out; /* JSON lines not sent yet */
    size_t out_len, out_pos;
    bool finished;
};

static void job_line(struct clone_job *cj, json_t *line)
{
    char *text = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    size_t n = text ? strlen(text) : 0;
    char *p = text ? realloc(cj->out, cj->out_len + n + 1) : NULL;
    if (p) {
        memcpy(p + cj->out_len, text, n);
        p[cj->out_len + n] = '\n';
        cj->out = p;
        cj->out_len += n + 1;
    }
    free(text);
    api_stream_wake(cj->st);
}

static void job_free(struct clone_job *cj)
{
    json_decref(cj->def);
    json_decref(cj->results);
    free(cj->out);
    free(cj);
}

static void job_finish(struct clone_job *cj, const char *error)
{
    int64_t ms = registry_now_ms() - cj->t0_ms;
    json_t *sum = json_pack(
        "{s:b, s:s, s:i, s:i, s:i, s:I, s:I, s:f, s:O}", "finished", 1, "source", cj->source,
        "total", cj->count, "running", cj->done - cj->failed, "failed", cj->failed, "elapsed_ms",
        (json_int_t)ms, "snapshot_ms", (json_int_t)cj->snap_ms, "clones_per_s",
        ms > cj->snap_ms ? (cj->done - cj->failed) * 1000.0 / (double)(ms - cj->snap_ms) : 0.0,
        "clones", cj->results);
    if (error)
        json_object_set_new(sum, "error", json_string(error));
    cj->finished = true;
    job_line(cj, sum);
    if (!cj->st)
        job_free(cj);
}

/* One clone's outcome: kept for the summary, and a progress line (steals r). */
static void progress(struct clone_job *cj, json_t *r)
{
    json_t *line = json_copy(r);
    json_array_append_new(cj->results, r);
    json_object_set_new(line, "done", json_integer(cj->done));
    json_object_set_new(line, "total", json_integer(cj->count));
    job_line(cj, line);
}

static void clone_started(struct vm *vm, void *opaque, bool ok, const char *msg)
{
    struct clone_job *cj = opaque;
    cj->done++;
    if (!ok)
        cj->failed++;
    json_t *r = json_pack("{s:s, s:s}", "name", vm->name, "state", ok ? "running" : "failed");
    if (!ok)
        json_object_set_new(r, "error", json_string(msg));
    progress(cj, r);
    if (cj->done == cj->count)
        job_finish(cj, NULL);
}

static void start_clones(struct clone_job *cj);

/* The source, held paused for the overlays, runs on (unless it went meanwhile). */
static void resume_source(struct clone_job *cj)
{
    struct vm *vm = wispd_find(cj->d, cj->source);
    if (!cj->source_running || !vm || vm->id != cj->source_id || vm->state != VM_RUNNING)
        return;
    struct vmm_request r = {"PATCH", strdup("/vm"), strdup("{\"state\": \"Resumed\"}")};
    (void)vmm_client_run(NULL, cj->d->loop, vm->api_sock, &r, 1, 0, 5000, ignore_done, NULL, NULL);
}

static void overlays_done(struct overlay_job *ov, bool ok, const char *msg)
{
    struct clone_job *cj = (struct clone_job *)((char *)ov - offsetof(struct clone_job, ov));
    resume_source(cj);
    if (!ok) {
        job_finish(cj, msg);
        return;
    }
    start_clones(cj);
}

static void clone_snapshot_done(struct clone_job *cj, bool ok, const char *msg)
{
    cj->snap = NULL;
    cj->snap_ms = registry_now_ms() - cj->t0_ms;
    if (!ok) {
        if (cj->nr_writable)
            resume_source(cj);
        job_finish(cj, msg);
        return;
    }
    if (cj->nr_writable) {
        struct vm *vm = wispd_find(cj->d, cj->source);
        struct wisp_err err = {0};
        cj->ov = (struct overlay_job){.def = cj->def,
                                      .img = cj->d->img_path,
                                      .dir = cj->dir,
                                      .prefix = cj->prefix,
                                      .count = cj->count,
                                      .chown = cj->d->place.jail &&
                                               !json_is_false(json_object_get(cj->def, "jail")),
                                      .uid = cj->d->place.jail_uid,
                                      .gid = cj->d->place.jail_gid,
                                      .done = overlays_done};
        if (!vm || overlay_job_start(cj->d, &cj->ov, &err) < 0) {
            resume_source(cj);
            job_finish(cj, vm ? err.msg : "the source was removed");
        }
        return;
    }
    start_clones(cj);
}

static void start_clones(struct clone_job *cj)
{
    job_line(cj, json_pack("{s:s, s:s, s:I, s:i}", "snapshot", cj->state, "memory", cj->mem,
                           "snapshot_ms", (json_int_t)cj->snap_ms, "overlays",
                           (int)(cj->nr_writable * cj->count)));
    /* every clone defined and started now; each start runs on the loop by itself */
    for (unsigned i = 1; i <= cj->count; i++) {
        char name[160];
        snprintf(name, sizeof(name), "%s-%u", cj->prefix, i);
        struct wisp_err err = {0};
        struct vm *vm = NULL;
        int ret = define_from(cj->d, cj->def, name, i, cj->nr_writable ? cj->dir : NULL, &vm, &err);
        if (ret == 0)
            ret = set_restore(vm, cj->state, cj->mem, &err);
        if (ret == 0) {
            vm->on_start = clone_started;
            vm->on_start_opaque = cj;
            ret = vm_start(vm, NULL, &err);
            if (ret < 0)
                vm->on_start = NULL;
        }
        if (ret < 0) {
            cj->done++;
            cj->failed++;
            json_t *r =
                json_pack("{s:s, s:s, s:s}", "name", name, "state", "failed", "error", err.msg);
            progress(cj, r);
        }
    }
    if (cj->done == cj->count)
        job_finish(cj, NULL);
}

static long clone_fill(void *opaque, char *buf, size_t max)
{
    struct clone_job *cj = opaque;
    if (cj->out_pos == cj->out_len)
        return cj->finished ? -1 : 0;
    size_t n = cj->out_len - cj->out_pos < max ? cj->out_len - cj->out_pos : max;
    memcpy(buf, cj->out + cj->out_pos, n);
    cj->out_pos += n;
    return (long)n;
}

static void clone_closed(void *opaque)
{
    struct clone_job *cj = opaque;
    cj->st = NULL; /* the client went away: the clones go on */
    if (cj->finished)
        job_free(cj);
}

/* POST /v1/vms/{name}/clone {"count": N, "prefix": P}: a stream of JSON lines (the snapshot,
 * each clone as it runs or fails, a summary with "finished"). */
void clone_h_clone(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    struct vm *vm = wispd_vm_or_404(d, req);
    if (!vm)
        return;
    struct wisp_err err = {0};
    size_t len;
    const char *text = api_request_body(req, &len);
    json_t *body = NULL;
    uint64_t count = 0;
    const char *prefix = NULL;
    const struct api_json_field f[] = {
        {.name = "count", .type = API_JSON_UINT, .required = true, .out = &count, .max = CLONE_MAX},
        {.name = "prefix", .type = API_JSON_STRING, .required = false, .out = &prefix}};
    int ret = api_json_parse_object(text, len, "clone", &body, &err);
    if (ret == 0)
        ret = api_json_read(body, "clone", f, 2, &err);
    if (ret == 0 && count < 1)
        ret = wisp_err_set(&err, EINVAL, "clone: count: at least 1");
    unsigned nr_writable = 0;
    if (ret == 0) /* writable drives: an overlay per clone (overlay.c) */
        ret = overlay_check(vm, &nr_writable, &err);
    struct clone_job *cj = ret == 0 ? calloc(1, sizeof(*cj)) : NULL;
    if (ret == 0 && !cj)
        ret = wisp_err_set(&err, ENOMEM, "out of memory");
    if (ret == 0) {
        snprintf(cj->source, sizeof(cj->source), "%s", vm->name);
        snprintf(cj->prefix, sizeof(cj->prefix), "%.60s", prefix ? prefix : vm->name);
        cj->d = d;
        cj->count = (unsigned)count;
        cj->nr_writable = nr_writable;
        cj->source_running = vm->state == VM_RUNNING;
        cj->source_id = vm->id;
        cj->t0_ms = registry_now_ms();
        cj->def = json_incref(vm->def);
        cj->results = json_array();
        /* the names are checked up front: all free, all valid */
        for (unsigned k = 1; ret == 0 && k <= cj->count; k++) {
            char name[160];
            snprintf(name, sizeof(name), "%s-%u", cj->prefix, k);
            if (wispd_find(d, name))
                ret = wisp_err_set(&err, EEXIST, "clone: a VM named '%s' exists", name);
            else if (strlen(name) > 64)
                ret = wisp_err_set(&err, EINVAL, "clone: '%s' is longer than 64 bytes", name);
        }
    }
    char dir[PATH_MAX];
    if (ret == 0) {
        snprintf(dir, sizeof(dir), "%s/snapshots", d->state_dir);
        mkdir(dir, 0750);
        snprintf(dir, sizeof(dir), "%s/snapshots/%lld-%lld", d->state_dir, (long long)vm->id,
                 (long long)cj->t0_ms);
        if (mkdir(dir, 0750) < 0)
            ret = wisp_err_sys(&err, errno, "%s", dir);
    }
    struct snap_job *j = ret == 0 ? calloc(1, sizeof(*j)) : NULL;
    if (ret == 0 && !j)
        ret = wisp_err_set(&err, ENOMEM, "out of memory");
    if (ret == 0) {
        snapshot_files(dir, j->state, j->mem, j->def, sizeof(j->state), &err);
        snprintf(cj->state, sizeof(cj->state), "%s", j->state);
        snprintf(cj->mem, sizeof(cj->mem), "%s", j->mem);
        snprintf(cj->dir, sizeof(cj->dir), "%s", dir);
        j->hold = nr_writable > 0;
        j->clone = cj;
        cj->snap = j;
        ret = snapshot_start(vm, j, &err);
        if (ret < 0) {
            rmdir(dir);
            free(j);
        }
    }
    json_decref(body);
    if (ret < 0) {
        if (cj)
            job_free(cj);
        api_reply_error(req,
                        err.errnum == EEXIST || err.errnum == EBUSY ? 409
                        : err.errnum == ENOTSUP                     ? 400
                                                                    : 400,
                        "%s", err.msg);
        return;
    }
    cj->st = api_reply_stream(req, 200, "application/x-ndjson", clone_fill, clone_closed, cj);
}
