/* The machine's configuration in a snapshot (docs/snapshot.md, section CONF): what the guest
 * sees of it (memory, vCPUs, the console device, rng, drives, NICs with their MACs, shares), so
 * that a restore builds the same machine. Read back with the checks the command line makes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvm/guest_mem.h"
#include "virtio/virtio.h"
#include "vmm/machine.h"
#include "vmm/snapshot_int.h"

#define CONFIG_MAX_STR 4096

static void write_drive(const struct virtio_blk_params *d, struct state_writer *w)
{
    state_put_str(w, d->id);
    state_put_str(w, d->path);
    state_put_str(w, d->format);
    state_put_u8(w, d->read_only);
    state_put_u8(w, (uint8_t)d->cache);
    state_put_u8(w, (uint8_t)d->aio);
    state_put_u8(w, d->aio_given);
    state_put_str(w, d->serial);
    state_put_u32(w, d->queues);
    const struct block_throttle_limits *l = &d->limits;
    const uint64_t limits[] = {l->iops_total,     l->iops_read,     l->iops_write,
                               l->bps_total,      l->bps_read,      l->bps_write,
                               l->iops_total_max, l->iops_read_max, l->iops_write_max,
                               l->bps_total_max,  l->bps_read_max,  l->bps_write_max};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        state_put_u64(w, limits[i]);
}

static void write_nic(const struct virtio_net_params *n, const uint8_t mac[6],
                      struct state_writer *w)
{
    state_put_str(w, n->id);
    state_put_str(w, n->tap);
    state_put_bytes(w, mac, 6);
    state_put_u8(w, (uint8_t)n->vhost);
    state_put_u64(w, n->rx_bps);
    state_put_u64(w, n->tx_bps);
    state_put_u64(w, n->rx_burst);
    state_put_u64(w, n->tx_burst);
    const uint64_t more[] = {n->rx_ops,      n->tx_ops,      n->rx_ops_burst, n->tx_ops_burst,
                             n->rx_bps_once, n->tx_bps_once, n->rx_ops_once,  n->tx_ops_once};
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        state_put_u64(w, more[i]);
}

int snapshot_config_write(const struct vm_config *cfg, const struct machine *m,
                          struct state_writer *w, struct wisp_err *err)
{
    state_put_u64(w, cfg->mem_bytes);
    state_put_u32(w, cfg->cpus);
    state_put_u8(w, (uint8_t)cfg->console);
    state_put_u8(w, cfg->rng);
    state_put_u64(w, cfg->rng_params.bytes_per_sec);
    state_put_u64(w, cfg->rng_params.burst);
    state_put_u32(w, cfg->nr_drives);
    for (unsigned i = 0; i < cfg->nr_drives; i++)
        write_drive(&cfg->drives[i], w);
    state_put_u32(w, cfg->nr_nics);
    for (unsigned i = 0; i < cfg->nr_nics; i++) {
        char name[16];
        snprintf(name, sizeof(name), "net%u", i);
        const struct device *dev =
            device_list_find(&m->devices, cfg->nics[i].id ? cfg->nics[i].id : name);
        if (!dev)
            return wisp_err_set(err, ENOENT, "NIC %s: no such device", name);
        uint8_t mac[6];
        virtio_net_get_mac(dev, mac);
        write_nic(&cfg->nics[i], mac, w);
    }
    vm_balloon_config_write(cfg, w);
    vm_pmem_config_write(cfg, w);
    vm_fs_config_write(cfg, w);
    vm_vsock_config_write(cfg, w);
    return state_writer_error(w, "configuration", err);
}

/* A string of the configuration, owned by cfg; NULL stays NULL unless required. */
static const char *read_str(struct vm_config *cfg, struct state_reader *r, bool required)
{
    bool is_null;
    char *s = state_get_str(r, CONFIG_MAX_STR, &is_null);
    if (r->bad)
        return NULL;
    if (is_null || (required && !*s)) {
        free(s);
        if (required)
            state_reader_fail(r, "a required string is missing");
        return NULL;
    }
    const char *copy = vm_config_strdup(cfg, s, NULL);
    free(s);
    if (!copy)
        state_reader_fail(r, "out of memory");
    return copy;
}

static void read_drive(struct vm_config *cfg, struct virtio_blk_params *d, struct state_reader *r)
{
    d->id = read_str(cfg, r, false);
    d->path = read_str(cfg, r, true);
    d->format = read_str(cfg, r, false);
    d->read_only = state_get_bool(r);
    uint8_t cache = state_get_u8(r), aio = state_get_u8(r);
    d->aio_given = state_get_bool(r);
    d->serial = read_str(cfg, r, false);
    d->queues = state_get_u32(r);
    uint64_t *limits[] = {
        &d->limits.iops_total,     &d->limits.iops_read,     &d->limits.iops_write,
        &d->limits.bps_total,      &d->limits.bps_read,      &d->limits.bps_write,
        &d->limits.iops_total_max, &d->limits.iops_read_max, &d->limits.iops_write_max,
        &d->limits.bps_total_max,  &d->limits.bps_read_max,  &d->limits.bps_write_max};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        *limits[i] = state_get_u64(r);
    if (cache > BLOCK_CACHE_UNSAFE || aio > BLOCK_AIO_IO_URING)
        state_reader_fail(r, "a drive's cache mode or I/O engine is unknown");
    else if (d->queues > VIRTIO_MAX_QUEUES)
        state_reader_fail(r, "a drive has more queues than a device may have");
    if (d->serial && strlen(d->serial) > 20)
        state_reader_fail(r, "a drive's serial is longer than 20 bytes");
    d->cache = (enum block_cache_mode)cache;
    d->aio = (enum block_aio_engine)aio;
}

static void read_nic(struct vm_config *cfg, struct virtio_net_params *n, struct state_reader *r)
{
    n->id = read_str(cfg, r, false);
    n->tap = read_str(cfg, r, true);
    state_get_bytes(r, n->mac, 6);
    n->mac_given = true; /* the MAC the guest saw, whatever tap this VM gets */
    uint8_t vhost = state_get_u8(r);
    n->rx_bps = state_get_u64(r);
    n->tx_bps = state_get_u64(r);
    n->rx_burst = state_get_u64(r);
    n->tx_burst = state_get_u64(r);
    uint64_t *more[] = {&n->rx_ops,      &n->tx_ops,      &n->rx_ops_burst, &n->tx_ops_burst,
                        &n->rx_bps_once, &n->tx_bps_once, &n->rx_ops_once,  &n->tx_ops_once};
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        *more[i] = state_get_u64(r);
    if (vhost > VIRTIO_NET_VHOST_AUTO || vhost == VIRTIO_NET_VHOST_ON)
        state_reader_fail(r, "a NIC's vhost mode is unknown or not implemented");
    n->vhost = (enum virtio_net_vhost)vhost;
}

static const char *check_machine(const struct vm_config *cfg, uint32_t console)
{
    if (cfg->mem_bytes < VMM_MIN_MEM_BYTES || cfg->mem_bytes > GUEST_MEM_MAX_BYTES ||
        (cfg->mem_bytes & 0xfff))
        return "the memory size is not a multiple of 4 KiB from 2 MiB to 1 TiB";
    if (cfg->cpus < 1 || cfg->cpus > VMM_MAX_CPUS)
        return "the number of vCPUs is out of range";
    if (console > VMM_CONSOLE_VIRTIO)
        return "the console device is unknown";
    return NULL;
}

int snapshot_config_read(struct vm_config *cfg, struct state_reader *r, struct wisp_err *err)
{
    cfg->mem_bytes = state_get_u64(r);
    cfg->cpus = state_get_u32(r);
    uint32_t console = state_get_u8(r);
    cfg->rng = state_get_bool(r);
    cfg->rng_params.bytes_per_sec = state_get_u64(r);
    cfg->rng_params.burst = state_get_u64(r);
    const char *why = r->bad ? NULL : check_machine(cfg, console);
    if (why)
        state_reader_fail(r, why);
    cfg->console = (enum vmm_console)console;
    cfg->nr_drives = state_get_u32(r);
    if (cfg->nr_drives > VMM_MAX_DRIVES)
        state_reader_fail(r, "more drives than a machine may have");
    for (unsigned i = 0; i < cfg->nr_drives && !r->bad; i++)
        read_drive(cfg, &cfg->drives[i], r);
    cfg->nr_nics = r->bad ? 0 : state_get_u32(r);
    if (cfg->nr_nics > VMM_MAX_NICS)
        state_reader_fail(r, "more NICs than a machine may have");
    for (unsigned i = 0; i < cfg->nr_nics && !r->bad; i++)
        read_nic(cfg, &cfg->nics[i], r);
    vm_balloon_config_read(cfg, r);
    vm_pmem_config_read(cfg, r);
    vm_fs_config_read(cfg, r);
    vm_vsock_config_read(cfg, r);
    if (r->bad) {
        cfg->nr_drives = cfg->nr_nics = cfg->nr_pmems = cfg->nr_fs = 0;
        return state_reader_done(r, "configuration", err);
    }
    int ret = state_reader_done(r, "configuration", err);
    return ret < 0 ? ret : vm_config_check(cfg, err);
}
