/* The automatic balloon on wispd's loop (reclaim.h; docs/memory.md, "The automatic balloon"):
 * a PSI trigger fd watched for POLLPRI (or a pressure file read at each tick, or MemAvailable),
 * a tick timer while a VM in auto mode runs, and per such VM the requests to its balloon
 * (GET /balloon/statistics, PATCH /balloon) with a deadline, never waited for; the policy of
 * reclaim_policy.c decides; each change is an event. */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "api/http.h"
#include "common/evloop.h"
#include "reclaim.h"
#include "registry.h"
#include "vmmclient.h"
#include "wispd.h"

#define RECLAIM_TIMEOUT_MS 2000
#define MIB                (1ull << 20)

enum reclaim_source { SOURCE_TRIGGER, SOURCE_FILE, SOURCE_MEMINFO };
static const char *const source_names[] = {"psi-trigger", "psi-file", "meminfo"};
static const char *const level_names[] = {"low", "mid", "high"};

struct vm_reclaim {
    struct vm *vm;
    struct reclaim *r;
    struct vm_reclaim *prev, *next;
    struct vmm_client *client; /* a request under way */
    char *answer;
    bool have_answer, have_stats, settled, fresh, oom_deflated;
    bool failing; /* its last request failed (said once on stderr until one succeeds) */
    uint32_t target_mib, actual_mib;
    uint64_t free_mib, available_mib, stats_updates;
    /* stats_updates at the last new target, while actual was not the target, when actual last
     * moved: only statistics counted after these describe the balloon as it is */
    uint64_t mark_change, mark_settle, mark_actual;
    struct reclaim_window window;
    int64_t holdoff_until_ms, next_poll_ms, updated_ms;
    char last[200]; /* the last change, for the stats */
};

struct reclaim {
    struct wispd *d;
    struct reclaim_config cfg;
    enum reclaim_source source;
    int trigger_fd;
    struct evloop_source *trigger_src, *timer;
    bool triggered, warned;
    struct reclaim_host host;
    enum reclaim_level level;
    double some_avg10;
    uint64_t avail_kib, total_kib;
    struct vm_reclaim *vms; /* the running VMs in auto mode */
    unsigned nr_vms;
};

static bool read_text(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* This tick's level of the host, from its source. */
static enum reclaim_level read_level(struct reclaim *r)
{
    char buf[4096];
    bool triggered = r->triggered;
    r->triggered = false;
    if (read_text("/proc/meminfo", buf, sizeof(buf)))
        reclaim_parse_meminfo(buf, &r->avail_kib, &r->total_kib);
    if (r->source == SOURCE_MEMINFO)
        return reclaim_level_meminfo(&r->cfg, r->avail_kib, r->total_kib);
    if (!read_text(r->cfg.psi_path, buf, sizeof(buf)) || !reclaim_parse_psi(buf, &r->some_avg10)) {
        if (!r->warned)
            fprintf(stderr,
                    "wispd: reclaim: %s: no \"some avg10=\" to read; taken as no pressure\n",
                    r->cfg.psi_path);
        r->warned = true;
        r->some_avg10 = 0;
    }
    return reclaim_level_psi(&r->cfg, r->some_avg10, triggered);
}

/* A field of the definition (`balloon` NULL) or of its balloon, as vmdef.c filled it in. */
static uint32_t def_u32(const struct vm *vm, const char *balloon, const char *key)
{
    json_t *o = balloon ? json_object_get(vm->def, balloon) : vm->def;
    json_int_t v = json_integer_value(json_object_get(o, key));
    return v > 0 && v < UINT32_MAX ? (uint32_t)v : 0;
}

/* A member of the VMM's statistics, in MiB, bounded by the guest's memory (the VMM speaks for
 * the guest, which may say anything). */
static uint64_t stat_mib(json_t *s, const char *key, uint32_t memory_mib, bool *present)
{
    json_t *v = json_object_get(s, key);
    if (present)
        *present = json_is_integer(v) && json_integer_value(v) >= 0;
    json_int_t x = json_integer_value(v);
    uint64_t mib = x > 0 ? (uint64_t)x / MIB : 0;
    return mib < memory_mib ? mib : memory_mib;
}

/* The VMM's answer to GET /balloon/statistics. */
static void take_stats(struct vm_reclaim *vr, json_t *s)
{
    struct reclaim *r = vr->r;
    int64_t now = registry_now_ms();
    uint32_t mem = def_u32(vr->vm, NULL, "memory_mib");
    json_int_t t = json_integer_value(json_object_get(s, "target_mib"));
    json_int_t a = json_integer_value(json_object_get(s, "actual_mib"));
    json_int_t u = json_integer_value(json_object_get(json_object_get(s, "wisp"), "stats_updates"));
    uint32_t target = t > 0 && t <= mem ? (uint32_t)t : 0,
             actual = a > 0 && a <= mem ? (uint32_t)a : 0;
    uint64_t updates = u > 0 ? (uint64_t)u : 0;
    /* The guest gave pages back with no new target: deflate on OOM (virtio 1.2 §5.5.6.1). */
    vr->oom_deflated =
        vr->have_answer && target == vr->target_mib && actual < vr->actual_mib && actual < target;
    bool new_stats = updates > vr->stats_updates;
    if (vr->have_answer && actual != vr->actual_mib)
        vr->mark_actual = updates; /* the guest may have counted before it moved */
    vr->target_mib = target;
    vr->actual_mib = actual;
    vr->stats_updates = updates;
    vr->have_answer = true;
    bool has_free, has_avail;
    uint64_t free_mib = stat_mib(s, "free_memory", mem, &has_free);
    uint64_t avail_mib = stat_mib(s, "available_memory", mem, &has_avail);
    if (new_stats && (has_free || has_avail)) {
        vr->have_stats = true;
        vr->free_mib = has_free ? free_mib : avail_mib;
        vr->available_mib = has_avail ? avail_mib : free_mib;
        reclaim_window_add(&vr->window, r->cfg.window_s, now, vr->available_mib + actual);
    }
    if (actual != target)
        vr->mark_settle = updates;
    vr->settled = actual == target && updates > vr->mark_settle;
    vr->fresh = updates > vr->mark_change && updates > vr->mark_actual;
    vr->updated_ms = now;
}

static void request_done(void *opaque, int status, const char *message)
{
    struct vm_reclaim *vr = opaque;
    vr->client = NULL;
    json_t *s = status == 0 && vr->answer ? json_loads(vr->answer, 0, NULL) : NULL;
    free(vr->answer);
    vr->answer = NULL;
    if (s)
        take_stats(vr, s);
    else if (!vr->failing)
        fprintf(stderr, "wispd: reclaim: %s: %s\n", vr->vm->name,
                message && message[0] ? message : "no statistics in the answer");
    vr->failing = !s;
    json_decref(s);
}

/* GET /balloon/statistics, after a PATCH /balloon to `target` when patch is set. */
static void send_requests(struct vm_reclaim *vr, bool patch, uint32_t target)
{
    struct vmm_request reqs[2];
    size_t n = 0;
    char *body = NULL;
    if (patch && asprintf(&body, "{\"amount_mib\": %u}", target) < 0)
        return;
    if (patch)
        reqs[n++] = (struct vmm_request){"PATCH", strdup("/balloon"), body};
    reqs[n++] = (struct vmm_request){"GET", strdup("/balloon/statistics"), NULL};
    struct wisp_err err = {0};
    if (vmm_client_run(&vr->client, vr->r->d->loop, vr->vm->api_sock, reqs, n, 0,
                       RECLAIM_TIMEOUT_MS, request_done, vr, &err) < 0) {
        vr->client = NULL;
        fprintf(stderr, "wispd: reclaim: %s: %s\n", vr->vm->name, err.msg);
        return;
    }
    vmm_client_keep_answer(vr->client, &vr->answer);
}

static void view_of(const struct vm_reclaim *vr, int64_t now, struct reclaim_view *v)
{
    const struct vm *vm = vr->vm;
    uint64_t recent = reclaim_window_min(&vr->window, vr->r->cfg.window_s, now,
                                         vr->available_mib + vr->actual_mib);
    *v = (struct reclaim_view){
        .memory_mib = def_u32(vm, NULL, "memory_mib"),
        .base_mib = def_u32(vm, "balloon", "amount_mib"),
        .min_mib = def_u32(vm, "balloon", "auto_min_mib"),
        .margin_mib = def_u32(vm, "balloon", "auto_margin_mib"),
        .target_mib = vr->target_mib,
        .actual_mib = vr->actual_mib,
        .have_stats = vr->have_stats,
        .settled = vr->settled,
        .fresh = vr->fresh,
        .oom_deflated = vr->oom_deflated,
        .free_mib = vr->free_mib,
        .available_mib = vr->available_mib,
        .recent_available_mib = recent > vr->actual_mib ? recent - vr->actual_mib : 0,
        .holdoff_until_ms = vr->holdoff_until_ms,
    };
}

/* One decision carried out: the new target, its event. */
static void apply(struct vm_reclaim *vr, const struct reclaim_view *v,
                  const struct reclaim_decision *dec)
{
    struct reclaim *r = vr->r;
    char detail[200];
    if (dec->reason == RECLAIM_GUEST_NEEDS)
        snprintf(detail, sizeof(detail),
                 "deflate %u -> %u MiB: %s (available %llu MiB, margin %u MiB)", v->target_mib,
                 dec->target_mib, reclaim_reason_name(dec->reason),
                 (unsigned long long)v->available_mib, v->margin_mib);
    else if (dec->reason == RECLAIM_HOST_INFLATE)
        snprintf(detail, sizeof(detail),
                 "inflate %u -> %u MiB: %s (free %llu MiB, available %llu MiB, floor %u MiB)",
                 v->target_mib, dec->target_mib, reclaim_reason_name(dec->reason),
                 (unsigned long long)v->free_mib, (unsigned long long)v->available_mib, v->min_mib);
    else
        snprintf(detail, sizeof(detail), "deflate %u -> %u MiB: %s (actual %u MiB)", v->target_mib,
                 dec->target_mib, reclaim_reason_name(dec->reason), v->actual_mib);
    snprintf(vr->last, sizeof(vr->last), "%s", detail);
    vr->target_mib = dec->target_mib;
    vr->holdoff_until_ms = dec->holdoff_until_ms;
    vr->mark_change = vr->mark_settle = vr->stats_updates;
    vr->settled = vr->fresh = vr->oom_deflated = false;
    wispd_event(r->d, vr->vm->name, "balloon", detail);
    send_requests(vr, true, dec->target_mib);
}

static void host_event(struct reclaim *r)
{
    char detail[200];
    if (r->host.pressure && r->source == SOURCE_MEMINFO)
        snprintf(detail, sizeof(detail),
                 "host memory pressure: MemAvailable %llu of %llu kB (below %u%%)",
                 (unsigned long long)r->avail_kib, (unsigned long long)r->total_kib,
                 r->cfg.avail_low_pct);
    else if (r->host.pressure)
        snprintf(detail, sizeof(detail), "host memory pressure: some avg10 %.2f%% (from %.2f%%%s)",
                 r->some_avg10, r->cfg.high, r->source == SOURCE_TRIGGER ? " or the trigger" : "");
    else
        snprintf(detail, sizeof(detail), "host memory pressure over: %s for %u s",
                 r->source == SOURCE_MEMINFO ? "MemAvailable above its mark" : "some avg10 low",
                 r->cfg.calm_s);
    fprintf(stderr, "wispd: reclaim: %s\n", detail);
    wispd_event(r->d, "", "pressure", detail);
}

static void tick(void *opaque)
{
    struct reclaim *r = opaque;
    int64_t now = registry_now_ms();
    r->level = read_level(r);
    bool changed;
    enum reclaim_action action = reclaim_host_step(&r->cfg, &r->host, r->level, now, &changed);
    if (changed)
        host_event(r);
    struct vm_reclaim **vrs = calloc(r->nr_vms ? r->nr_vms : 1, sizeof(*vrs));
    struct reclaim_view *views = calloc(r->nr_vms ? r->nr_vms : 1, sizeof(*views));
    struct reclaim_decision *dec = calloc(r->nr_vms ? r->nr_vms : 1, sizeof(*dec));
    size_t n = 0;
    for (struct vm_reclaim *vr = r->vms; vrs && views && dec && vr; vr = vr->next)
        if (!vr->client && vr->have_answer && vr->vm->state == VM_RUNNING) {
            vrs[n] = vr;
            view_of(vr, now, &views[n++]);
        }
    if (vrs && views && dec && reclaim_policy(&r->cfg, action, now, views, n, dec) == 0)
        for (size_t i = 0; i < n; i++)
            if (dec[i].target_mib != views[i].target_mib)
                apply(vrs[i], &views[i], &dec[i]);
    free(vrs);
    free(views);
    free(dec);
    /* The rest ask for the guest's statistics, no more often than the guest sends them. */
    for (struct vm_reclaim *vr = r->vms; vr; vr = vr->next) {
        if (vr->client || vr->vm->state != VM_RUNNING || now < vr->next_poll_ms)
            continue;
        unsigned every = def_u32(vr->vm, "balloon", "stats_polling_interval_s") * 1000;
        vr->next_poll_ms = now + (every > r->cfg.interval_ms ? every : r->cfg.interval_ms) - 50;
        send_requests(vr, false, 0);
    }
}

static void trigger_ready(void *opaque, uint32_t events)
{
    struct reclaim *r = opaque;
    if (events & EPOLLERR) { /* the file went (a cgroup removed): poll it from now on */
        evloop_source_remove(r->trigger_src);
        r->trigger_src = NULL;
        close(r->trigger_fd);
        r->trigger_fd = -1;
        r->source = SOURCE_FILE;
        return;
    }
    r->triggered = true;
    if (r->nr_vms)
        evloop_timer_arm(r->timer, 1, r->cfg.interval_ms * 1000000ull);
}

/* A PSI trigger (Documentation/accounting/psi.rst, "Userspace monitor usage"): without
 * CAP_SYS_RESOURCE the window must be a multiple of 2 s, so 2 s it is. */
static int open_trigger(struct reclaim *r, struct wisp_err *err)
{
    struct statfs sf;
    char buf[64];
    int fd = open(r->cfg.psi_path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fstatfs(fd, &sf) < 0 ||
        (sf.f_type != PROC_SUPER_MAGIC && sf.f_type != CGROUP2_SUPER_MAGIC)) {
        if (fd >= 0)
            close(fd);
        return -ENOTSUP; /* a file in PSI's format, read at each tick */
    }
    int len = snprintf(buf, sizeof(buf), "some %u 2000000", r->cfg.trigger_stall_ms * 1000);
    if (write(fd, buf, (size_t)len + 1) < 0) {
        int e = errno;
        close(fd);
        return wisp_err_sys(err, e, "%s: a PSI trigger", r->cfg.psi_path);
    }
    r->trigger_fd = fd;
    return evloop_add_fd(r->d->loop, fd, EPOLLPRI, trigger_ready, r, &r->trigger_src, err);
}

int reclaim_init(struct wispd *d, const struct reclaim_config *c, struct wisp_err *err)
{
    if (c->off)
        return 0;
    struct reclaim *r = calloc(1, sizeof(*r));
    if (!r)
        return wisp_err_set(err, ENOMEM, "out of memory");
    *r = (struct reclaim){.d = d, .cfg = *c, .trigger_fd = -1};
    int ret = evloop_add_timer(d->loop, tick, r, &r->timer, err);
    if (ret < 0) {
        free(r);
        return ret;
    }
    d->reclaim = r;
    char buf[4096];
    double avg10;
    struct wisp_err terr = {0};
    errno = 0;
    if (!strcmp(c->psi_path, "off")) {
        r->source = SOURCE_MEMINFO;
        fprintf(stderr, "wispd: reclaim: PSI not used (psi=off): MemAvailable every %u ms\n",
                c->interval_ms);
    } else if (!read_text(c->psi_path, buf, sizeof(buf)) || !reclaim_parse_psi(buf, &avg10)) {
        int e = errno;
        r->source = SOURCE_MEMINFO;
        fprintf(stderr,
                "wispd: reclaim: no PSI at %s (%s): MemAvailable every %u ms instead, pressure "
                "below %u%% of MemTotal\n",
                c->psi_path, e ? strerror(e) : "no \"some avg10=\"", c->interval_ms,
                c->avail_low_pct);
    } else if (open_trigger(r, &terr) == 0) {
        r->source = SOURCE_TRIGGER;
        fprintf(stderr,
                "wispd: reclaim: PSI trigger on %s (some %u ms in 2 s); pressure from avg10 "
                "%.2f%%, over below %.2f%% for %u s\n",
                c->psi_path, c->trigger_stall_ms, c->high, c->low, c->calm_s);
    } else {
        r->source = SOURCE_FILE;
        fprintf(stderr, "wispd: reclaim: %s read every %u ms%s%s\n", c->psi_path, c->interval_ms,
                terr.msg[0] ? " (no trigger: " : "", terr.msg[0] ? terr.msg : "");
    }
    return 0;
}

void reclaim_fini(struct wispd *d)
{
    struct reclaim *r = d->reclaim;
    if (!r)
        return;
    while (r->vms)
        reclaim_vm_ended(r->vms->vm);
    evloop_source_remove(r->trigger_src);
    evloop_source_remove(r->timer);
    if (r->trigger_fd >= 0)
        close(r->trigger_fd);
    free(r);
    d->reclaim = NULL;
}

char *reclaim_vmm_balloon_body(const json_t *def)
{
    json_t *b = json_deep_copy(json_object_get(def, "balloon"));
    json_object_del(b, "auto");
    json_object_del(b, "auto_min_mib");
    json_object_del(b, "auto_margin_mib");
    char *s = json_dumps(b, 0);
    json_decref(b);
    return s;
}

void reclaim_vm_running(struct vm *vm)
{
    struct reclaim *r = vm->d->reclaim;
    if (!r || vm->reclaim ||
        !json_is_true(json_object_get(json_object_get(vm->def, "balloon"), "auto")))
        return;
    struct vm_reclaim *vr = calloc(1, sizeof(*vr));
    if (!vr)
        return;
    *vr = (struct vm_reclaim){.vm = vm, .r = r, .next = r->vms};
    if (r->vms)
        r->vms->prev = vr;
    r->vms = vr;
    vm->reclaim = vr;
    if (r->nr_vms++ == 0)
        evloop_timer_arm(r->timer, r->cfg.interval_ms * 1000000ull,
                         r->cfg.interval_ms * 1000000ull);
    send_requests(vr, false, 0); /* its balloon as it is: a reattached VM may be inflated */
}

unsigned reclaim_nr_vms(const struct wispd *d)
{
    return d->reclaim ? d->reclaim->nr_vms : 0;
}

void reclaim_vm_ended(struct vm *vm)
{
    struct vm_reclaim *vr = vm->reclaim;
    if (!vr)
        return;
    struct reclaim *r = vr->r;
    vmm_client_cancel(vr->client);
    free(vr->answer);
    if (vr->prev)
        vr->prev->next = vr->next;
    else
        r->vms = vr->next;
    if (vr->next)
        vr->next->prev = vr->prev;
    if (--r->nr_vms == 0)
        evloop_timer_arm(r->timer, 0, 0);
    vm->reclaim = NULL;
    free(vr);
}

json_t *reclaim_vm_json(const struct vm *vm)
{
    const struct vm_reclaim *vr = vm->reclaim;
    if (!vr)
        return NULL;
    json_t *j = json_pack("{s:b, s:i, s:i, s:i, s:i, s:i, s:s}", "auto", 1, "target_mib",
                          (int)vr->target_mib, "actual_mib", (int)vr->actual_mib, "base_mib",
                          (int)def_u32(vm, "balloon", "amount_mib"), "floor_mib",
                          (int)def_u32(vm, "balloon", "auto_min_mib"), "margin_mib",
                          (int)def_u32(vm, "balloon", "auto_margin_mib"), "last", vr->last);
    if (vr->have_stats) {
        json_object_set_new(j, "free_mib", json_integer((json_int_t)vr->free_mib));
        json_object_set_new(j, "available_mib", json_integer((json_int_t)vr->available_mib));
    }
    json_object_set_new(j, "updated_ms", json_integer(vr->updated_ms));
    return j;
}

void reclaim_h_get(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    struct reclaim *r = d->reclaim;
    if (!r) {
        api_reply_json(req, 200, json_pack("{s:s}", "source", "off"));
        return;
    }
    json_t *vms = json_array();
    for (struct vm_reclaim *vr = r->vms; vr; vr = vr->next) {
        json_t *v = reclaim_vm_json(vr->vm);
        json_object_set_new(v, "name", json_string(vr->vm->name));
        json_array_append_new(vms, v);
    }
    json_t *cfg =
        json_pack("{s:s, s:f, s:f, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "psi", r->cfg.psi_path,
                  "high", r->cfg.high, "low", r->cfg.low, "avail_low_pct",
                  (int)r->cfg.avail_low_pct, "avail_high_pct", (int)r->cfg.avail_high_pct,
                  "interval_ms", (int)r->cfg.interval_ms, "calm_s", (int)r->cfg.calm_s, "step_mib",
                  (int)r->cfg.step_mib, "holdoff_s", (int)r->cfg.holdoff_s, "window_s",
                  (int)r->cfg.window_s, "trigger_stall_ms", (int)r->cfg.trigger_stall_ms);
    api_reply_json(req, 200,
                   json_pack("{s:s, s:b, s:s, s:f, s:I, s:I, s:o, s:o}", "source",
                             source_names[r->source], "pressure", r->host.pressure, "level",
                             level_names[r->level], "some_avg10", r->some_avg10,
                             "mem_available_kib", (json_int_t)r->avail_kib, "mem_total_kib",
                             (json_int_t)r->total_kib, "config", cfg, "vms", vms));
}
