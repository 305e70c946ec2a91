/* The configuration as JSON (GET /vm/config, GET /machine-config): Firecracker's
 * FullVmConfiguration with wisp's own fields beside Firecracker's, in the shape a
 * --config-file takes, so that the output given back as a config file makes the same VM. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "vmm/api.h"

static void set_str(json_t *o, const char *key, const char *v)
{
    if (v)
        json_object_set_new(o, key, json_string(v));
}

static void set_uint(json_t *o, const char *key, uint64_t v)
{
    json_object_set_new(o, key, json_integer((json_int_t)(v > INT64_MAX ? INT64_MAX : v)));
}

json_t *vm_machine_config_json(const struct vm_config *cfg)
{
    const struct guest_mem_options *m = &cfg->mem;
    char backend[4200];
    snprintf(backend, sizeof(backend), "%s%s%s", guest_mem_backend_name(m->backend),
             m->path ? "=" : "", m->path ? m->path : "");
    return json_pack("{s:I,s:I,s:b,s:b,s:s,s:s,s:s,s:b,s:b}", "vcpu_count", (json_int_t)cfg->cpus,
                     "mem_size_mib", (json_int_t)(cfg->mem_bytes >> 20), "smt", 0,
                     "track_dirty_pages", cfg->track_dirty_pages, "huge_pages",
                     m->backend == GUEST_MEM_HUGETLBFS ? "2M" : "None", "mem_backend", backend,
                     "thp", guest_mem_switch_name(m->thp), "ksm", m->ksm, "prefault", m->prefault);
}

static json_t *boot_source_json(const struct vm_config *cfg)
{
    json_t *o = json_object();
    set_str(o, "kernel_image_path", cfg->kernel);
    set_str(o, "initrd_path", cfg->initrd);
    set_str(o, "boot_args", cfg->api.boot_args ? cfg->api.boot_args : cfg->cmdline);
    return o;
}

/* A CLI drive's throttling, exactly, as wisp's "throttle" object. */
static json_t *throttle_json(const struct block_throttle_limits *l)
{
    static const struct block_throttle_limits none;
    if (!memcmp(l, &none, sizeof(none)))
        return NULL;
    json_t *o = json_object();
    const struct {
        const char *key;
        uint64_t v;
    } keys[] = {{"iops", l->iops_total},       {"iops_read", l->iops_read},
                {"iops_write", l->iops_write}, {"iops_burst", l->iops_total_max},
                {"bps", l->bps_total},         {"bps_read", l->bps_read},
                {"bps_write", l->bps_write},   {"bps_burst", l->bps_total_max}};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (keys[i].v)
            set_uint(o, keys[i].key, keys[i].v);
    return o;
}

static json_t *drive_json(const struct vm_config *cfg, unsigned i)
{
    const struct virtio_blk_params *d = &cfg->drives[i];
    const struct vm_drive_api *x = &cfg->api.drives[i];
    char name[16];
    json_t *o =
        json_pack("{s:s,s:s,s:b,s:b}", "drive_id", vm_drive_name(cfg, i, name, 16), "path_on_host",
                  d->path, "is_root_device", x->is_root_device, "is_read_only", d->read_only);
    set_str(o, "partuuid", x->partuuid);
    set_str(o, "cache_type", d->cache == BLOCK_CACHE_UNSAFE ? "Unsafe" : "Writeback");
    bool sync = d->aio_given && d->aio == BLOCK_AIO_SYNC;
    set_str(o, "io_engine", sync ? "Sync" : "Async");
    if (x->has_rate_limiter)
        json_object_set_new(o, "rate_limiter", fc_rate_limiter_json(&x->rate_limiter));
    /* wisp's own */
    set_str(o, "format", d->format ? d->format : "auto");
    set_str(o, "aio", d->aio_given ? block_aio_engine_name(d->aio) : "auto");
    set_str(o, "cache", block_cache_mode_name(d->cache));
    set_str(o, "serial", d->serial);
    set_uint(o, "queues", d->queues ? d->queues : 1);
    json_t *t = x->has_rate_limiter ? NULL : throttle_json(&d->limits);
    if (t)
        json_object_set_new(o, "throttle", t);
    return o;
}

static json_t *nic_json(const struct vm_config *cfg, unsigned i)
{
    const struct virtio_net_params *n = &cfg->nics[i];
    const struct vm_nic_api *x = &cfg->api.nics[i];
    char name[16], mac[18];
    json_t *o =
        json_pack("{s:s,s:s}", "iface_id", vm_nic_name(cfg, i, name, 16), "host_dev_name", n->tap);
    if (n->mac_given) {
        snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1], n->mac[2],
                 n->mac[3], n->mac[4], n->mac[5]);
        set_str(o, "guest_mac", mac);
    }
    if (x->has_rx)
        json_object_set_new(o, "rx_rate_limiter", fc_rate_limiter_json(&x->rx));
    else if (n->rx_bps) /* from --net: wisp's fields, exactly */
        set_uint(o, "rx_bps", n->rx_bps), set_uint(o, "rx_burst", n->rx_burst);
    if (x->has_tx)
        json_object_set_new(o, "tx_rate_limiter", fc_rate_limiter_json(&x->tx));
    else if (n->tx_bps)
        set_uint(o, "tx_bps", n->tx_bps), set_uint(o, "tx_burst", n->tx_burst);
    return o;
}

static json_t *entropy_json(const struct vm_config *cfg)
{
    json_t *o = json_object();
    if (cfg->api.rng_rate_limited) {
        json_object_set_new(o, "rate_limiter", fc_rate_limiter_json(&cfg->api.rng_rate_limiter));
    } else if (cfg->rng_params.bytes_per_sec) { /* from --rng=bps=N: wisp's fields */
        set_uint(o, "bps", cfg->rng_params.bytes_per_sec);
        if (cfg->rng_params.burst)
            set_uint(o, "burst", cfg->rng_params.burst);
    }
    return o;
}

static json_t *wisp_json(const struct vm_config *cfg)
{
    char serial[4200];
    if (cfg->serial == VMM_SERIAL_FILE)
        snprintf(serial, sizeof(serial), "file:%s", cfg->serial_path);
    else
        snprintf(serial, sizeof(serial), "%s", cfg->serial == VMM_SERIAL_STDIO ? "stdio" : "none");
    return json_pack("{s:s,s:s,s:b,s:b,s:b,s:b}", "serial", serial, "console",
                     cfg->console == VMM_CONSOLE_VIRTIO ? "virtio" : "serial", "cmdline_devices",
                     cfg->cmdline_devices, "boot_marker", cfg->boot_marker, "debug", cfg->debug,
                     "async_teardown", cfg->async_teardown);
}

static json_t *logger_json(const struct vm_config *cfg)
{
    json_t *o = json_pack(
        "{s:s,s:b,s:b}", "level", wisp_log_level_name((enum wisp_log_level)cfg->api.log_level),
        "show_level", cfg->api.log_show_level, "show_log_origin", cfg->api.log_show_origin);
    set_str(o, "log_path", cfg->api.log_path);
    return o;
}

json_t *vm_config_to_json(const struct vm_config *cfg)
{
    json_t *o = json_object(), *drives = json_array(), *nics = json_array();
    if (!o || !drives || !nics) {
        json_decref(o);
        json_decref(drives);
        json_decref(nics);
        return NULL;
    }
    if (cfg->kernel)
        json_object_set_new(o, "boot-source", boot_source_json(cfg));
    json_object_set_new(o, "machine-config", vm_machine_config_json(cfg));
    for (unsigned i = 0; i < cfg->nr_drives; i++)
        json_array_append_new(drives, drive_json(cfg, i));
    json_object_set_new(o, "drives", drives);
    for (unsigned i = 0; i < cfg->nr_nics; i++)
        json_array_append_new(nics, nic_json(cfg, i));
    json_object_set_new(o, "network-interfaces", nics);
    if (cfg->rng)
        json_object_set_new(o, "entropy", entropy_json(cfg));
    if (cfg->nr_fs)
        json_object_set_new(o, "fs", vm_fs_json(cfg));
    if (cfg->nr_pmems) {
        json_t *pmems = json_array();
        for (unsigned i = 0; pmems && i < cfg->nr_pmems; i++)
            json_array_append_new(pmems, vm_pmem_json(cfg, i));
        json_object_set_new(o, "pmem", pmems);
    }
    if (cfg->vsock)
        json_object_set_new(o, "vsock", vm_vsock_json(cfg));
    if (cfg->balloon)
        json_object_set_new(o, "balloon", vm_balloon_json(cfg));
    if (cfg->api.logger_set)
        json_object_set_new(o, "logger", logger_json(cfg));
    if (cfg->api.metrics_path)
        json_object_set_new(o, "metrics",
                            json_pack("{s:s}", "metrics_path", cfg->api.metrics_path));
    json_object_set_new(o, "wisp", wisp_json(cfg));
    return o;
}
