/* The automatic balloon's policy (docs/memory.md, "The automatic balloon"): the host's level
 * from PSI or MemAvailable, its state with hysteresis, and each opted-in VM's next target,
 * as pure functions over a snapshot (reclaim.h); its options and the definition's fields. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reclaim.h"

void reclaim_config_defaults(struct reclaim_config *c)
{
    *c = (struct reclaim_config){.high = 10.0,
                                 .low = 1.0,
                                 .avail_low_pct = 10,
                                 .avail_high_pct = 20,
                                 .interval_ms = 2000,
                                 .calm_s = 30,
                                 .step_mib = 64,
                                 .holdoff_s = 60,
                                 .window_s = 60,
                                 .trigger_stall_ms = 200};
    snprintf(c->psi_path, sizeof(c->psi_path), "/proc/pressure/memory");
}

static bool uint_in(const char *v, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || n < lo || n > hi)
        return false;
    *out = (unsigned)n;
    return true;
}

static bool pct_in(const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || x < 0 || x > 100)
        return false;
    *out = x;
    return true;
}

/* One key=value of --reclaim; false when the key is unknown or the value out of its range. */
static bool set_option(struct reclaim_config *c, const char *key, const char *v)
{
    static const struct {
        const char *key;
        size_t off;
        unsigned lo, hi;
    } uints[] = {
        {"avail_low_pct", offsetof(struct reclaim_config, avail_low_pct), 1, 99},
        {"avail_high_pct", offsetof(struct reclaim_config, avail_high_pct), 2, 100},
        {"interval_ms", offsetof(struct reclaim_config, interval_ms), 50, 60000},
        {"calm_s", offsetof(struct reclaim_config, calm_s), 0, 86400},
        {"step_mib", offsetof(struct reclaim_config, step_mib), 1, 1 << 20},
        {"holdoff_s", offsetof(struct reclaim_config, holdoff_s), 0, 86400},
        {"window_s", offsetof(struct reclaim_config, window_s), 1, 86400},
        {"trigger_stall_ms", offsetof(struct reclaim_config, trigger_stall_ms), 1, 2000},
    };
    if (!strcmp(key, "psi"))
        return *v && snprintf(c->psi_path, sizeof(c->psi_path), "%s", v) < (int)sizeof(c->psi_path);
    if (!strcmp(key, "high"))
        return pct_in(v, &c->high);
    if (!strcmp(key, "low"))
        return pct_in(v, &c->low);
    for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++)
        if (!strcmp(key, uints[i].key))
            return uint_in(v, uints[i].lo, uints[i].hi, (unsigned *)((char *)c + uints[i].off));
    return false;
}

int reclaim_parse_options(struct reclaim_config *c, const char *list, struct wisp_err *err)
{
    if (!strcmp(list, "off")) {
        c->off = true;
        return 0;
    }
    char buf[1024];
    if (snprintf(buf, sizeof(buf), "%s", list) >= (int)sizeof(buf))
        return wisp_err_set(err, EINVAL, "--reclaim: too long");
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return wisp_err_set(err, EINVAL, "--reclaim: '%s' is not KEY=VALUE (or off)", kv);
        *eq = '\0';
        if (!set_option(c, kv, eq + 1))
            return wisp_err_set(err, EINVAL,
                                "--reclaim: %s=%s: unknown key or value out of range (keys: psi, "
                                "high, low, avail_low_pct, avail_high_pct, interval_ms, calm_s, "
                                "step_mib, holdoff_s, window_s, trigger_stall_ms)",
                                kv, eq + 1);
    }
    if (c->low >= c->high)
        return wisp_err_set(err, EINVAL, "--reclaim: low (%.2f) must be below high (%.2f)", c->low,
                            c->high);
    if (c->avail_low_pct >= c->avail_high_pct)
        return wisp_err_set(err, EINVAL, "--reclaim: avail_low_pct must be below avail_high_pct");
    return 0;
}

enum reclaim_level reclaim_level_psi(const struct reclaim_config *c, double some_avg10,
                                     bool triggered)
{
    if (triggered || some_avg10 >= c->high)
        return RECLAIM_HIGH;
    return some_avg10 < c->low ? RECLAIM_LOW : RECLAIM_MID;
}

enum reclaim_level reclaim_level_meminfo(const struct reclaim_config *c, uint64_t avail_kib,
                                         uint64_t total_kib)
{
    if (!total_kib)
        return RECLAIM_LOW;
    if (avail_kib * 100 < (uint64_t)c->avail_low_pct * total_kib)
        return RECLAIM_HIGH;
    return avail_kib * 100 > (uint64_t)c->avail_high_pct * total_kib ? RECLAIM_LOW : RECLAIM_MID;
}

enum reclaim_action reclaim_host_step(const struct reclaim_config *c, struct reclaim_host *h,
                                      enum reclaim_level level, int64_t now_ms, bool *changed)
{
    *changed = false;
    if (level == RECLAIM_HIGH) {
        h->low_since_ms = 0;
        *changed = !h->pressure;
        h->pressure = true;
        return RECLAIM_INFLATE;
    }
    if (level == RECLAIM_MID) {
        h->low_since_ms = 0;
        return RECLAIM_HOLD;
    }
    if (!h->low_since_ms)
        h->low_since_ms = now_ms ? now_ms : 1;
    if (h->pressure && now_ms - h->low_since_ms >= (int64_t)c->calm_s * 1000) {
        h->pressure = false;
        *changed = true;
    }
    return h->pressure ? RECLAIM_HOLD : RECLAIM_DEFLATE;
}

const char *reclaim_reason_name(enum reclaim_reason r)
{
    static const char *const names[] = {"keep", "host pressure", "host pressure over",
                                        "the guest needs memory", "the guest deflated on OOM"};
    return names[r];
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* What the host may still take from a VM: its recent available memory less its margin, and no
 * further than its floor. */
static uint32_t room_of(const struct reclaim_view *v)
{
    uint64_t avail = min_u64(v->available_mib, v->recent_available_mib);
    uint64_t headroom = avail > v->margin_mib ? avail - v->margin_mib : 0;
    uint64_t used = (uint64_t)v->min_mib + v->target_mib;
    uint64_t floor_room = v->memory_mib > used ? v->memory_mib - used : 0;
    return (uint32_t)min_u64(headroom, floor_room);
}

/* Idle first: the larger share of its memory the guest has free (in 1/1024). */
static uint64_t idleness(const struct reclaim_view *v)
{
    return v->memory_mib ? min_u64(v->free_mib, v->memory_mib) * 1024 / v->memory_mib : 0;
}

struct order {
    const struct reclaim_view *vms;
    size_t i;
};

static int by_idle_first(const void *a, const void *b)
{
    const struct order *x = a, *y = b;
    const struct reclaim_view *p = &x->vms[x->i], *q = &y->vms[y->i];
    uint64_t ip = idleness(p), iq = idleness(q);
    if (ip != iq)
        return ip > iq ? -1 : 1;
    uint32_t rp = room_of(p), rq = room_of(q);
    if (rp != rq)
        return rp > rq ? -1 : 1;
    return x->i < y->i ? -1 : 1;
}

static int by_busy_first(const void *a, const void *b)
{
    const struct order *x = a, *y = b;
    uint64_t ip = idleness(&x->vms[x->i]), iq = idleness(&y->vms[y->i]);
    if (ip != iq)
        return ip < iq ? -1 : 1;
    return x->i < y->i ? -1 : 1;
}

/* The guest's own needs first: they are not rate-limited and hold it off the host's side. */
static void guest_side(const struct reclaim_config *c, int64_t now_ms, const struct reclaim_view *v,
                       struct reclaim_decision *out)
{
    int64_t holdoff = now_ms + (int64_t)c->holdoff_s * 1000;
    if (v->oom_deflated) {
        uint32_t t = v->actual_mib > v->base_mib ? v->actual_mib : v->base_mib;
        if (t < v->target_mib)
            *out = (struct reclaim_decision){t, RECLAIM_GUEST_OOM, holdoff};
        return;
    }
    if (!v->have_stats || !v->fresh || v->target_mib <= v->base_mib ||
        v->available_mib * 2 >= v->margin_mib)
        return;
    uint64_t need = v->margin_mib - v->available_mib;
    uint64_t from = min_u64(v->target_mib, v->actual_mib);
    uint64_t t = from > need ? from - need : 0;
    if (t < v->base_mib)
        t = v->base_mib;
    if (t < v->target_mib)
        *out = (struct reclaim_decision){(uint32_t)t, RECLAIM_GUEST_NEEDS, holdoff};
}

int reclaim_policy(const struct reclaim_config *c, enum reclaim_action action, int64_t now_ms,
                   const struct reclaim_view *vms, size_t n, struct reclaim_decision *out)
{
    struct order *ord = n ? calloc(n, sizeof(*ord)) : NULL;
    if (n && !ord)
        return -ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] =
            (struct reclaim_decision){vms[i].target_mib, RECLAIM_KEEP, vms[i].holdoff_until_ms};
        guest_side(c, now_ms, &vms[i], &out[i]);
        if (out[i].reason != RECLAIM_KEEP)
            continue;
        const struct reclaim_view *v = &vms[i];
        if (action == RECLAIM_INFLATE && v->have_stats && v->settled &&
            now_ms >= v->holdoff_until_ms && room_of(v) > 0)
            ord[m++] = (struct order){vms, i};
        else if (action == RECLAIM_DEFLATE && v->target_mib > v->base_mib)
            ord[m++] = (struct order){vms, i};
    }
    if (m)
        qsort(ord, m, sizeof(*ord), action == RECLAIM_INFLATE ? by_idle_first : by_busy_first);
    uint32_t budget = c->step_mib;
    for (size_t k = 0; k < m && budget; k++) {
        const struct reclaim_view *v = &vms[ord[k].i];
        struct reclaim_decision *o = &out[ord[k].i];
        if (action == RECLAIM_INFLATE) {
            uint32_t take = room_of(v) < budget ? room_of(v) : budget;
            *o = (struct reclaim_decision){v->target_mib + take, RECLAIM_HOST_INFLATE,
                                           o->holdoff_until_ms};
            budget -= take;
        } else {
            uint32_t give =
                v->target_mib - v->base_mib < budget ? v->target_mib - v->base_mib : budget;
            *o = (struct reclaim_decision){v->target_mib - give, RECLAIM_HOST_DEFLATE,
                                           o->holdoff_until_ms};
            budget -= give;
        }
    }
    free(ord);
    return 0;
}

void reclaim_window_add(struct reclaim_window *w, unsigned window_s, int64_t now_ms, uint64_t v)
{
    int64_t bucket = (int64_t)window_s * 1000 / RECLAIM_WINDOW;
    if (w->n && now_ms - w->t[w->head] < bucket) {
        if (v < w->v[w->head])
            w->v[w->head] = v; /* the newest bucket keeps its least */
        return;
    }
    w->head = w->n ? (w->head + 1) % RECLAIM_WINDOW : 0;
    w->t[w->head] = now_ms;
    w->v[w->head] = v;
    if (w->n < RECLAIM_WINDOW)
        w->n++;
}

uint64_t reclaim_window_min(const struct reclaim_window *w, unsigned window_s, int64_t now_ms,
                            uint64_t fallback)
{
    bool any = false;
    uint64_t m = 0;
    for (unsigned k = 0; k < w->n; k++) {
        unsigned i = (w->head + RECLAIM_WINDOW - k) % RECLAIM_WINDOW;
        if (now_ms - w->t[i] > (int64_t)window_s * 1000)
            break;
        if (!any || w->v[i] < m)
            m = w->v[i];
        any = true;
    }
    return any ? m : fallback;
}

bool reclaim_parse_psi(const char *text, double *some_avg10)
{
    const char *p = strstr(text, "some avg10=");
    if (!p || (p != text && p[-1] != '\n'))
        return false;
    char *end;
    double v = strtod(p + 11, &end);
    if (end == p + 11 || !isfinite(v) || v < 0 || v > 100)
        return false;
    *some_avg10 = v;
    return true;
}

static bool meminfo_field(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, klen))
            continue;
        char *end;
        unsigned long long v = strtoull(p + klen, &end, 10);
        if (end == p + klen)
            return false;
        *out = v;
        return true;
    }
    return false;
}

bool reclaim_parse_meminfo(const char *text, uint64_t *avail_kib, uint64_t *total_kib)
{
    return meminfo_field(text, "MemAvailable:", avail_kib) &&
           meminfo_field(text, "MemTotal:", total_kib);
}

static int def_uint(json_t *b, const char *key, uint64_t max, bool *present, uint64_t *out,
                    struct wisp_err *err)
{
    json_t *v = json_object_get(b, key);
    *present = v && !json_is_null(v);
    if (!*present)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return wisp_err_set(err, EINVAL, "definition: balloon: %s: an integer from 0 to %llu", key,
                            (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int reclaim_check_def(json_t *def, struct wisp_err *err)
{
    json_t *b = json_object_get(def, "balloon"), *a = json_object_get(b, "auto");
    if (!b)
        return 0;
    uint64_t mem = (uint64_t)json_integer_value(json_object_get(def, "memory_mib"));
    uint64_t amount = 0, stats = 1, min = mem / 4 > 32 ? mem / 4 : 32, margin = mem / 8;
    bool has_amount, has_stats, has_min, has_margin;
    if (margin < 16)
        margin = 16;
    if (min > mem) /* the defaults fit the VM: an explicit value above memory_mib is refused */
        min = mem;
    if (margin > mem)
        margin = mem;
    if (a && !json_is_boolean(a))
        return wisp_err_set(err, EINVAL, "definition: balloon: auto: true or false");
    int ret = def_uint(b, "amount_mib", mem, &has_amount, &amount, err);
    if (ret == 0)
        ret = def_uint(b, "stats_polling_interval_s", 3600, &has_stats, &stats, err);
    if (ret == 0)
        ret = def_uint(b, "auto_min_mib", mem, &has_min, &min, err);
    if (ret == 0)
        ret = def_uint(b, "auto_margin_mib", mem, &has_margin, &margin, err);
    if (ret < 0)
        return ret;
    if (!json_is_true(a))
        return has_min || has_margin
                   ? wisp_err_set(err, EINVAL,
                                  "definition: balloon: auto_min_mib and auto_margin_mib are "
                                  "for \"auto\": true")
                   : 0;
    if (stats == 0)
        return wisp_err_set(err, EINVAL,
                            "definition: balloon: auto needs the guest's statistics: "
                            "stats_polling_interval_s must be at least 1");
    if (min > mem || amount > mem - min)
        return wisp_err_set(err, EINVAL,
                            "definition: balloon: amount_mib %llu and auto_min_mib %llu are more "
                            "than memory_mib %llu",
                            (unsigned long long)amount, (unsigned long long)min,
                            (unsigned long long)mem);
    if (margin < 2)
        return wisp_err_set(err, EINVAL, "definition: balloon: auto_margin_mib: at least 2");
    json_object_set_new(b, "amount_mib", json_integer((json_int_t)amount));
    json_object_set_new(b, "stats_polling_interval_s", json_integer((json_int_t)stats));
    if (!json_object_get(b, "deflate_on_oom"))
        json_object_set_new(b, "deflate_on_oom", json_true());
    json_object_set_new(b, "auto_min_mib", json_integer((json_int_t)min));
    json_object_set_new(b, "auto_margin_mib", json_integer((json_int_t)margin));
    return 0;
}
