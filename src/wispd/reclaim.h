/* wispd's automatic balloon (docs/memory.md, "The automatic balloon"): under host memory
 * pressure (PSI, or MemAvailable where PSI is missing) it inflates the balloons of the VMs whose
 * definition says "balloon": {"auto": true}, idle guests first, never below a floor; it gives
 * the memory back when a guest needs it and when the pressure is over.
 *
 * reclaim_policy.c is the policy: pure functions over a snapshot (the host's level, each VM's
 * view), unit-tested (tests/unit/test_wispd_reclaim.c). reclaim.c is the machinery on wispd's
 * loop: the PSI trigger fd, the tick timer, the requests to each VM's balloon, the events.
 *
 * Call order: reclaim_parse_options() (main, for --reclaim), reclaim_init() after the registry
 * and before wispd_recover(); reclaim_vm_running() when a VM reaches running (a start or a
 * reattach), reclaim_vm_ended() when its process has ended or it is freed. */
#ifndef WISP_WISPD_RECLAIM_H
#define WISP_WISPD_RECLAIM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct api_request;
struct vm;
struct wispd;

struct reclaim_config {
    bool off;
    char psi_path[256];        /* default /proc/pressure/memory; "off": MemAvailable only */
    double high, low;          /* PSI "some" avg10 in percent: pressure from high, over below low */
    unsigned avail_low_pct;    /* without PSI: pressure when MemAvailable < this % of MemTotal */
    unsigned avail_high_pct;   /* ... and over above this % */
    unsigned interval_ms;      /* the tick while anything is to be watched */
    unsigned calm_s;           /* the level below `low` this long: the pressure is over */
    unsigned step_mib;         /* most MiB the host side moves per tick, all VMs together */
    unsigned holdoff_s;        /* a guest that needed memory back is not inflated this long */
    unsigned window_s;         /* a guest's recent available memory: the least over this long */
    unsigned trigger_stall_ms; /* the PSI trigger: this much stall in a 2 s window */
};

void reclaim_config_defaults(struct reclaim_config *c);
/* "--reclaim LIST": off, or comma-separated key=value (docs/wispd.md). -EINVAL naming the key. */
int reclaim_parse_options(struct reclaim_config *c, const char *list, struct wisp_err *err);

/* ---- the policy (reclaim_policy.c) -------------------------------------------------------- */

/* The host's memory, classified against the thresholds. */
enum reclaim_level { RECLAIM_LOW, RECLAIM_MID, RECLAIM_HIGH };
enum reclaim_level reclaim_level_psi(const struct reclaim_config *c, double some_avg10,
                                     bool triggered);
enum reclaim_level reclaim_level_meminfo(const struct reclaim_config *c, uint64_t avail_kib,
                                         uint64_t total_kib);

/* The host's state with hysteresis: PRESSURE from the first HIGH; CALM again once the level
 * has stayed LOW for calm_s. */
struct reclaim_host {
    bool pressure;
    int64_t low_since_ms; /* 0: not LOW now */
};
/* What the host side does this tick. */
enum reclaim_action { RECLAIM_HOLD, RECLAIM_INFLATE, RECLAIM_DEFLATE };
/* Steps the host's state by one reading; returns this tick's action and sets *changed when the
 * state flipped (an event). */
enum reclaim_action reclaim_host_step(const struct reclaim_config *c, struct reclaim_host *h,
                                      enum reclaim_level level, int64_t now_ms, bool *changed);

/* One opted-in running VM as the policy sees it (MiB throughout). */
struct reclaim_view {
    uint32_t memory_mib;    /* the definition's guest memory */
    uint32_t base_mib;      /* the definition's amount_mib: the target with nothing reclaimed */
    uint32_t min_mib;       /* floor: memory_mib - target never below this */
    uint32_t margin_mib;    /* what a guest keeps above its recent need */
    uint32_t target_mib;    /* now (as the VMM last said) */
    uint32_t actual_mib;    /* the guest driver's actual */
    bool have_stats;        /* the guest sent statistics */
    bool settled;           /* actual == target and statistics arrived since */
    bool fresh;             /* statistics arrived since the last new target and since actual
                             * last moved (so they count the balloon as it is) */
    bool oom_deflated;      /* actual fell below the target with no new target: the guest
                             * took pages back (deflate_on_oom) */
    uint64_t free_mib;      /* the guest's free memory, latest */
    uint64_t available_mib; /* its available memory, latest */
    uint64_t recent_available_mib; /* the least available over window_s, as at this balloon */
    int64_t holdoff_until_ms;
};

enum reclaim_reason {
    RECLAIM_KEEP,         /* no change */
    RECLAIM_HOST_INFLATE, /* host pressure: this idle guest gives memory */
    RECLAIM_HOST_DEFLATE, /* host pressure over: memory back */
    RECLAIM_GUEST_NEEDS,  /* the guest's available memory fell below half its margin */
    RECLAIM_GUEST_OOM,    /* the guest deflated on its own (deflate_on_oom): accepted */
};
const char *reclaim_reason_name(enum reclaim_reason r);

struct reclaim_decision {
    uint32_t target_mib;
    enum reclaim_reason reason;
    int64_t holdoff_until_ms; /* the view's, or later */
};

/* The new target of each of vms[0..n) into out[0..n). Returns 0, or -ENOMEM. */
int reclaim_policy(const struct reclaim_config *c, enum reclaim_action action, int64_t now_ms,
                   const struct reclaim_view *vms, size_t n, struct reclaim_decision *out);

/* A guest's available memory over a window, as if its balloon were empty (available +
 * actual), kept in RECLAIM_WINDOW buckets. */
#define RECLAIM_WINDOW 32
struct reclaim_window {
    int64_t t[RECLAIM_WINDOW];
    uint64_t v[RECLAIM_WINDOW];
    unsigned n, head; /* head: the newest */
};
void reclaim_window_add(struct reclaim_window *w, unsigned window_s, int64_t now_ms, uint64_t v);
/* The least value younger than window_s; `fallback` when there is none. */
uint64_t reclaim_window_min(const struct reclaim_window *w, unsigned window_s, int64_t now_ms,
                            uint64_t fallback);

/* Parses the "some avg10=" value of a PSI file's text; false when it is not there. */
bool reclaim_parse_psi(const char *text, double *some_avg10);
/* MemAvailable and MemTotal (kB) of /proc/meminfo's text; false when either is missing. */
bool reclaim_parse_meminfo(const char *text, uint64_t *avail_kib, uint64_t *total_kib);

/* The definition's "balloon" (vmdef.c): checks wispd's auto fields and fills their defaults
 * (and the balloon's, when auto is on). 0 or -EINVAL naming the field. */
int reclaim_check_def(json_t *def, struct wisp_err *err);

/* ---- on wispd's loop (reclaim.c) ---------------------------------------------------------- */

int reclaim_init(struct wispd *d, const struct reclaim_config *c, struct wisp_err *err);
void reclaim_fini(struct wispd *d);
/* The body of wisp-vmm's PUT /balloon: the definition's balloon without wispd's fields
 * (malloc'd JSON text). */
char *reclaim_vmm_balloon_body(const json_t *def);
void reclaim_vm_running(struct vm *vm);
/* The running VMs in auto mode (each may hold one more fd: its balloon's request). */
unsigned reclaim_nr_vms(const struct wispd *d);
void reclaim_vm_ended(struct vm *vm);
/* The "balloon" member of GET /v1/vms/{name}/stats, or NULL for a VM not in auto mode. */
json_t *reclaim_vm_json(const struct vm *vm);
/* GET /v1/reclaim */
void reclaim_h_get(struct api_request *req, void *opaque);

#endif
