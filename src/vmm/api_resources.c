/* The API's resources that are not devices (docs/api.md): boot-source, machine-config,
 * entropy, serial, logger, metrics and wisp's own settings, as JSON bodies applied to the
 * configuration (the API and --config-file share them); Firecracker's rate limiters; the
 * kernel command line with the root drive. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/json.h"
#include "common/io.h"
#include "common/log.h"
#include "kvm/guest_mem.h"
#include "vmm/api.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Firecracker's RateLimiter ----------------------------------------------------------- */

static int bucket_parse(const json_t *j, const char *where, struct fc_token_bucket *b,
                        struct wisp_err *err)
{
    *b = (struct fc_token_bucket){0};
    const struct api_json_field f[] = {
        {"size", API_JSON_UINT, true, &b->size, NULL, 0},
        {"one_time_burst", API_JSON_UINT, false, &b->one_time_burst, NULL, 0},
        {"refill_time", API_JSON_UINT, true, &b->refill_time_ms, NULL, 0},
    };
    return api_json_read(j, where, f, N(f), err);
}

int fc_rate_limiter_parse(const json_t *j, const char *where, struct fc_rate_limiter *out,
                          struct wisp_err *err)
{
    json_t *bw = NULL, *ops = NULL;
    *out = (struct fc_rate_limiter){0};
    const struct api_json_field f[] = {
        {"bandwidth", API_JSON_OBJECT, false, &bw, &out->has_bandwidth, 0},
        {"ops", API_JSON_OBJECT, false, &ops, &out->has_ops, 0},
    };
    int r = api_json_read(j, where, f, N(f), err);
    char w[160];
    if (r == 0 && bw) {
        snprintf(w, sizeof(w), "%s: bandwidth", where);
        r = bucket_parse(bw, w, &out->bandwidth, err);
    }
    if (r == 0 && ops) {
        snprintf(w, sizeof(w), "%s: ops", where);
        r = bucket_parse(ops, w, &out->ops, err);
    }
    return r;
}

static json_t *bucket_json(const struct fc_token_bucket *b)
{
    return json_pack("{s:I,s:I,s:I}", "size", (json_int_t)b->size, "one_time_burst",
                     (json_int_t)b->one_time_burst, "refill_time", (json_int_t)b->refill_time_ms);
}

json_t *fc_rate_limiter_json(const struct fc_rate_limiter *rl)
{
    json_t *j = json_object();
    if (j && rl->has_bandwidth)
        json_object_set_new(j, "bandwidth", bucket_json(&rl->bandwidth));
    if (j && rl->has_ops)
        json_object_set_new(j, "ops", bucket_json(&rl->ops));
    return j;
}

/* size tokens every refill_time ms; Firecracker: no limit when either is 0 */
uint64_t fc_bucket_rate(const struct fc_token_bucket *b)
{
    if (!b->size || !b->refill_time_ms)
        return 0;
    unsigned __int128 rate = (unsigned __int128)b->size * 1000u / b->refill_time_ms;
    return rate > UINT64_MAX ? UINT64_MAX : rate ? (uint64_t)rate : 1;
}

void fc_rate_limiter_to_block(const struct fc_rate_limiter *rl, struct block_throttle_limits *l)
{
    *l = (struct block_throttle_limits){0};
    if (rl->has_bandwidth && (l->bps_total = fc_bucket_rate(&rl->bandwidth))) {
        l->bps_total_max = rl->bandwidth.size;
        l->bps_total_once = rl->bandwidth.one_time_burst;
    }
    if (rl->has_ops && (l->iops_total = fc_bucket_rate(&rl->ops))) {
        l->iops_total_max = rl->ops.size;
        l->iops_total_once = rl->ops.one_time_burst;
    }
}

void fc_rate_limiter_to_net(const struct fc_rate_limiter *rl, struct virtio_net_rate *r)
{
    *r = (struct virtio_net_rate){0};
    if (rl->has_bandwidth && (r->bps = fc_bucket_rate(&rl->bandwidth))) {
        r->bps_burst = rl->bandwidth.size;
        r->bps_once = rl->bandwidth.one_time_burst;
    }
    if (rl->has_ops && (r->ops = fc_bucket_rate(&rl->ops))) {
        r->ops_burst = rl->ops.size;
        r->ops_once = rl->ops.one_time_burst;
    }
}

/* ---- boot-source and machine-config ----------------------------------------------------- */

static int check_regular(const char *what, const char *path, struct wisp_err *err)
{
    off_t size;
    int fd = wisp_open_regular(what, path, &size, err);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

int vm_resource_boot_source(struct vm_config *cfg, const json_t *body, const char *where,
                            struct wisp_err *err)
{
    const char *kernel = NULL, *initrd = NULL, *args = NULL;
    const struct api_json_field f[] = {
        {"kernel_image_path", API_JSON_STRING, true, &kernel, NULL, 0},
        {"initrd_path", API_JSON_STRING, false, &initrd, NULL, 0},
        {"boot_args", API_JSON_STRING, false, &args, NULL, 0},
    };
    char what[160];
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0) {
        snprintf(what, sizeof(what), "%s: kernel_image_path", where);
        r = check_regular(what, kernel, err);
    }
    if (r == 0 && initrd) {
        snprintf(what, sizeof(what), "%s: initrd_path", where);
        r = check_regular(what, initrd, err);
    }
    if (r == 0)
        r = vm_config_set_string(cfg, &cfg->kernel, kernel, err);
    if (r == 0)
        r = vm_config_set_string(cfg, &cfg->initrd, initrd, err);
    if (r == 0) /* two copies: each slot owns its own */
        r = vm_config_set_string(cfg, &cfg->api.boot_args, args ? args : "", err);
    if (r == 0)
        r = vm_config_set_string(cfg, &cfg->cmdline, args, err);
    return r;
}

static int machine_config_check(const char *where, uint64_t cpus, uint64_t mib, bool smt,
                                const char *huge, const char *tmpl, struct wisp_err *err)
{
    if (cpus < 1 || cpus > VMM_MAX_CPUS)
        return wisp_err_set(err, EINVAL, "%s: vcpu_count: %llu is out of range (1 to %u)", where,
                            (unsigned long long)cpus, VMM_MAX_CPUS);
    if (mib < (VMM_MIN_MEM_BYTES >> 20) || mib > (GUEST_MEM_MAX_BYTES >> 20))
        return wisp_err_set(err, EINVAL, "%s: mem_size_mib: %llu is out of range (%llu to %llu)",
                            where, (unsigned long long)mib, VMM_MIN_MEM_BYTES >> 20,
                            GUEST_MEM_MAX_BYTES >> 20);
    if (smt)
        return wisp_err_set(err, EINVAL,
                            "%s: smt: true is not supported: wisp presents each vCPU as a core "
                            "of its own (CPUID: one thread per core, docs/machine.md) and does not "
                            "model SMT siblings",
                            where);
    if (huge && strcmp(huge, "None") && strcmp(huge, "2M") && strcmp(huge, "Transparent"))
        return wisp_err_set(err, EINVAL, "%s: huge_pages: '%.32s' is not None, Transparent or 2M",
                            where, huge);
    if (tmpl && strcmp(tmpl, "None"))
        return wisp_err_set(err, EINVAL,
                            "%s: cpu_template: '%.32s' is not supported: wisp has no CPU "
                            "templates (the guest sees KVM's supported CPUID); only None",
                            where, tmpl);
    return 0;
}

int vm_resource_machine_config(struct vm_config *cfg, const json_t *body, bool patch,
                               const char *where, struct wisp_err *err)
{
    uint64_t cpus = cfg->cpus, mib = cfg->mem_bytes >> 20;
    bool smt = false, dirty = patch ? cfg->track_dirty_pages : false;
    const char *huge = NULL, *tmpl = NULL, *backend = NULL, *thp = NULL;
    bool ksm = patch ? cfg->mem.ksm : false, prefault = patch ? cfg->mem.prefault : false;
    const struct api_json_field f[] = {
        {"vcpu_count", API_JSON_UINT, !patch, &cpus, NULL, 0},
        {"mem_size_mib", API_JSON_UINT, !patch, &mib, NULL, 0},
        {"smt", API_JSON_BOOL, false, &smt, NULL, 0},
        {"track_dirty_pages", API_JSON_BOOL, false, &dirty, NULL, 0},
        {"huge_pages", API_JSON_STRING, false, &huge, NULL, 0},
        {"cpu_template", API_JSON_STRING, false, &tmpl, NULL, 0},
        /* wisp's memory backends and policies (docs/memory.md) */
        {"mem_backend", API_JSON_STRING, false, &backend, NULL, 0},
        {"thp", API_JSON_STRING, false, &thp, NULL, 0},
        {"ksm", API_JSON_BOOL, false, &ksm, NULL, 0},
        {"prefault", API_JSON_BOOL, false, &prefault, NULL, 0},
    };
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0)
        r = machine_config_check(where, cpus, mib, smt, huge, tmpl, err);
    struct guest_mem_options mem = patch ? cfg->mem : (struct guest_mem_options){0};
    if (r == 0 && thp && strcmp(thp, "default"))
        r = vm_config_mem_switch(thp, "machine-config: thp", &mem.thp, err);
    else if (thp)
        mem.thp = GUEST_MEM_DEFAULT;
    if (r < 0)
        return r;
    /* Firecracker's huge_pages: 2M is the hugetlbfs backend, Transparent is THP on */
    if (huge && !strcmp(huge, "2M") && backend && strncmp(backend, "hugetlbfs", 9))
        return wisp_err_set(err, EINVAL, "%s: huge_pages: 2M contradicts mem_backend '%.64s'",
                            where, backend);
    if (huge && !strcmp(huge, "Transparent"))
        mem.thp = GUEST_MEM_ON;
    struct guest_mem_options old = cfg->mem;
    cfg->mem = mem;
    if (backend)
        r = vm_config_mem_backend(cfg, backend, "machine-config: mem_backend", err);
    else if (huge && !strcmp(huge, "2M"))
        r = vm_config_mem_backend(cfg, "hugetlbfs", "machine-config: huge_pages", err);
    else if (!patch)
        cfg->mem.backend = GUEST_MEM_ANON;
    if (r < 0) {
        cfg->mem = old;
        return r;
    }
    cfg->mem.ksm = ksm;
    cfg->mem.prefault = prefault;
    cfg->cpus = (unsigned)cpus;
    cfg->mem_bytes = mib << 20;
    cfg->track_dirty_pages = dirty;
    return 0;
}

/* ---- entropy, serial, wisp's settings --------------------------------------------------- */

int vm_resource_entropy(struct vm_config *cfg, const json_t *body, const char *where,
                        struct wisp_err *err)
{
    json_t *rlj = NULL;
    bool has_rl = false;
    uint64_t bps = 0, burst = 0; /* wisp's own: --rng=bps=N,burst=N */
    const struct api_json_field f[] = {
        {"rate_limiter", API_JSON_OBJECT, false, &rlj, &has_rl, 0},
        {"bps", API_JSON_UINT, false, &bps, NULL, 0},
        {"burst", API_JSON_UINT, false, &burst, NULL, 0},
    };
    struct fc_rate_limiter rl = {0};
    char w[160];
    snprintf(w, sizeof(w), "%s: rate_limiter", where);
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0 && has_rl)
        r = fc_rate_limiter_parse(rlj, w, &rl, err);
    if (r == 0 && rl.has_ops)
        r = wisp_err_set(err, EINVAL, "%s: ops: wisp's virtio-rng limits bytes only", w);
    if (r == 0 && (bps || burst) && has_rl)
        r = wisp_err_set(err, EINVAL, "%s: rate_limiter and bps: give one of them", where);
    if (r == 0 && burst && !bps)
        r = wisp_err_set(err, EINVAL, "%s: burst needs bps", where);
    if (r == 0 && rl.bandwidth.one_time_burst)
        r = wisp_err_set(err, EINVAL, "%s: bandwidth: one_time_burst is not supported for entropy",
                         w);
    if (r < 0)
        return r;
    cfg->rng = true;
    cfg->rng_params = (struct virtio_rng_params){0};
    if ((cfg->rng_params.bytes_per_sec = fc_bucket_rate(&rl.bandwidth)))
        cfg->rng_params.burst = rl.bandwidth.size;
    if (bps)
        cfg->rng_params = (struct virtio_rng_params){.bytes_per_sec = bps, .burst = burst};
    cfg->api.rng_rate_limited = has_rl;
    cfg->api.rng_rate_limiter = rl;
    return 0;
}

static int set_serial(struct vm_config *cfg, const char *v, const char *where, struct wisp_err *err)
{
    if (!strcmp(v, "stdio") || !strcmp(v, "none")) {
        cfg->serial = v[0] == 's' ? VMM_SERIAL_STDIO : VMM_SERIAL_NONE;
        return vm_config_set_string(cfg, &cfg->serial_path, NULL, err);
    }
    if (strncmp(v, "file:", 5) || !v[5])
        return wisp_err_set(err, EINVAL, "%s: serial: '%.64s' is not stdio, none or file:PATH",
                            where, v);
    cfg->serial = VMM_SERIAL_FILE;
    return vm_config_set_string(cfg, &cfg->serial_path, v + 5, err);
}

int vm_resource_serial(struct vm_config *cfg, const json_t *body, const char *where,
                       struct wisp_err *err)
{
    const char *out = NULL;
    json_t *rl = NULL;
    const struct api_json_field f[] = {
        {"serial_out_path", API_JSON_STRING, false, &out, NULL, 0},
        {"rate_limiter", API_JSON_OBJECT, false, &rl, NULL, 0},
    };
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0 && rl)
        r = wisp_err_set(err, EINVAL,
                         "%s: rate_limiter: not supported: COM1's output is never dropped for "
                         "rate, it waits (docs/machine.md, \"Serial port\")",
                         where);
    if (r < 0)
        return r;
    if (!out) { /* Firecracker's default: the process's stdout */
        cfg->serial = VMM_SERIAL_STDIO;
        return vm_config_set_string(cfg, &cfg->serial_path, NULL, err);
    }
    if (!*out)
        return wisp_err_set(err, EINVAL, "%s: serial_out_path: the path is empty", where);
    cfg->serial = VMM_SERIAL_FILE;
    return vm_config_set_string(cfg, &cfg->serial_path, out, err);
}

int vm_resource_wisp(struct vm_config *cfg, const json_t *body, const char *where,
                     struct wisp_err *err)
{
    const char *console = NULL, *serial = NULL;
    bool cmdline_devices = cfg->cmdline_devices, marker = cfg->boot_marker, debug = cfg->debug;
    bool async = cfg->async_teardown;
    const struct api_json_field f[] = {
        {"serial", API_JSON_STRING, false, &serial, NULL, 0},
        {"console", API_JSON_STRING, false, &console, NULL, 0},
        {"cmdline_devices", API_JSON_BOOL, false, &cmdline_devices, NULL, 0},
        {"boot_marker", API_JSON_BOOL, false, &marker, NULL, 0},
        {"debug", API_JSON_BOOL, false, &debug, NULL, 0},
        {"async_teardown", API_JSON_BOOL, false, &async, NULL, 0},
    };
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0 && console && strcmp(console, "serial") && strcmp(console, "virtio"))
        r = wisp_err_set(err, EINVAL, "%s: console: '%.32s' is not serial or virtio", where,
                         console);
    if (r == 0 && serial)
        r = set_serial(cfg, serial, where, err);
    if (r < 0)
        return r;
    if (console)
        cfg->console = console[0] == 'v' ? VMM_CONSOLE_VIRTIO : VMM_CONSOLE_SERIAL;
    cfg->cmdline_devices = cmdline_devices;
    cfg->boot_marker = marker;
    cfg->debug = debug;
    cfg->async_teardown = async;
    return 0;
}

/* ---- logger and metrics ----------------------------------------------------------------- */

int vm_resource_logger(struct vm_config *cfg, const json_t *body, const char *where,
                       struct wisp_err *err)
{
    const char *path = NULL, *level = NULL, *module = NULL;
    bool show_level = false, show_origin = false;
    const struct api_json_field f[] = {
        {"log_path", API_JSON_STRING, false, &path, NULL, 0},
        {"level", API_JSON_STRING, false, &level, NULL, 0},
        {"show_level", API_JSON_BOOL, false, &show_level, NULL, 0},
        {"show_log_origin", API_JSON_BOOL, false, &show_origin, NULL, 0},
        {"module", API_JSON_STRING, false, &module, NULL, 0},
    };
    enum wisp_log_level lv = WISP_LOG_INFO;
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0 && level && wisp_log_level_parse(level, &lv) < 0)
        r = wisp_err_set(err, EINVAL,
                         "%s: level: '%.32s' is not Error, Warning, Info, Debug, Trace or Off",
                         where, level);
    if (r == 0 && module)
        r = wisp_err_set(err, EINVAL, "%s: module: filtering by module is not supported", where);
    char what[160];
    snprintf(what, sizeof(what), "%s: log_path", where);
    if (r == 0 && path)
        r = wisp_log_set_path(path, what, err);
    if (r == 0)
        r = vm_config_set_string(cfg, &cfg->api.log_path, path, err);
    if (r < 0)
        return r;
    wisp_log_configure(lv, show_level, show_origin);
    cfg->api.logger_set = true;
    cfg->api.log_level = (int)lv;
    cfg->api.log_show_level = show_level;
    cfg->api.log_show_origin = show_origin;
    return 0;
}

int vm_resource_metrics(struct vm_config *cfg, const json_t *body, const char *where,
                        struct wisp_err *err)
{
    const char *path = NULL;
    const struct api_json_field f[] = {{"metrics_path", API_JSON_STRING, true, &path, NULL, 0}};
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0 && !*path)
        r = wisp_err_set(err, EINVAL, "%s: metrics_path: the path is empty", where);
    if (r == 0 && cfg->api.metrics_path)
        r = wisp_err_set(err, EINVAL, "%s: the metrics are already written to %s", where,
                         cfg->api.metrics_path);
    return r < 0 ? r : vm_config_set_string(cfg, &cfg->api.metrics_path, path, err);
}

/* ---- the kernel command line with the root drive ---------------------------------------- */

/* Where kernel parameters go: before " -- " (what follows is init's), else at the end. */
static size_t args_end(const char *s)
{
    if (!strncmp(s, "--", 2) && (s[2] == ' ' || !s[2]))
        return 0;
    const char *dd = strstr(s, " -- ");
    if (!dd && strlen(s) >= 3 && !strcmp(s + strlen(s) - 3, " --"))
        dd = s + strlen(s) - 3;
    return dd ? (size_t)(dd - s) : strlen(s);
}

/* Is there a root= among the kernel's parameters (s[0, end))? */
static bool has_root(const char *s, size_t end)
{
    for (const char *p = s; (p = strstr(p, "root=")) && (size_t)(p - s) < end; p++)
        if (p == s || p[-1] == ' ')
            return true;
    return false;
}

int vm_config_prepare_start(struct vm_config *cfg, struct wisp_err *err)
{
    int root = -1;
    for (unsigned i = 0; i < cfg->nr_drives; i++)
        if (cfg->api.drives[i].is_root_device)
            root = (int)i;
    int pmem_root = -1;
    for (unsigned i = 0; root < 0 && i < cfg->nr_pmems; i++)
        if (cfg->pmems[i].root_device)
            pmem_root = (int)i;
    const char *base = cfg->api.boot_args ? cfg->api.boot_args : cfg->cmdline ? cfg->cmdline : "";
    size_t end = args_end(base);
    if ((root < 0 && pmem_root < 0) || has_root(base, end))
        return 0;
    /* virtio-blk drives get vda, vdb, ... in the order of cfg->drives (machine_devices.c);
     * pmem devices pmem0, pmem1, ... in the order of cfg->pmems */
    char dev[96];
    const struct vm_drive_api *d = root >= 0 ? &cfg->api.drives[root] : NULL;
    if (!d)
        snprintf(dev, sizeof(dev), "root=/dev/pmem%d", pmem_root);
    else if (d->partuuid)
        snprintf(dev, sizeof(dev), "root=PARTUUID=%.64s", d->partuuid);
    else if (root < 26)
        snprintf(dev, sizeof(dev), "root=/dev/vd%c", 'a' + root);
    else
        snprintf(dev, sizeof(dev), "root=/dev/vd%c%c", 'a' + root / 26 - 1, 'a' + root % 26);
    bool ro = d ? cfg->drives[root].read_only : cfg->pmems[pmem_root].mode == VIRTIO_PMEM_RO;
    const char *mode = ro ? "ro" : "rw";
    size_t len = strlen(base) + strlen(dev) + 10;
    char *s = malloc(len);
    if (!s)
        return wisp_err_set(err, ENOMEM, "out of memory for the kernel command line");
    const char *gap = base[end] && base[end] != ' ' ? " " : "";
    snprintf(s, len, "%.*s%s%s %s%s%s", (int)end, base, end ? " " : "", dev, mode, gap, base + end);
    int r = vm_config_set_string(cfg, &cfg->cmdline, s, err);
    free(s);
    return r;
}
