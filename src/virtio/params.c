/* The command-line forms of the virtio devices' parameters (--drive, --net): key=value lists
 * checked key by key, with errors naming the option and the key. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/parse.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/net_vhost.h"

#define MAX_KEYS 32

static int parse_list(const char *what, const char *spec, char *buf, struct kv_item *kv,
                      struct wisp_err *err)
{
    int n = parse_kv_list(spec, buf, kv, MAX_KEYS);
    if (n == -E2BIG)
        return wisp_err_set(err, EINVAL, "%s: more than %d keys", what, MAX_KEYS);
    if (n < 0)
        return wisp_err_set(err, EINVAL, "%s: '%s' is not a list of key=value", what, spec);
    for (int i = 0; i < n; i++)
        if (!kv[i].value)
            return wisp_err_set(err, EINVAL, "%s: '%s' has no value (key=value)", what, kv[i].key);
    return n;
}

static int parse_count(const char *what, const struct kv_item *kv, uint64_t max, uint64_t *out,
                       struct wisp_err *err)
{
    uint64_t v;
    if (parse_size(kv->value, 1, &v) < 0 || v > max)
        return wisp_err_set(err, EINVAL, "%s: %s: '%s' is not a number up to %llu", what, kv->key,
                            kv->value, (unsigned long long)max);
    *out = v;
    return 0;
}

static int parse_flag(const char *what, const struct kv_item *kv, bool *out, struct wisp_err *err)
{
    if (parse_bool(kv->value, out) < 0)
        return wisp_err_set(err, EINVAL, "%s: %s: '%s' is not on or off", what, kv->key, kv->value);
    return 0;
}

/* The throttling keys of --drive (QEMU's -drive throttling.* names, shortened). */
static uint64_t *throttle_field(struct block_throttle_limits *l, const char *key)
{
    static const struct {
        const char *key;
        size_t offset;
    } keys[] = {
        {"iops", offsetof(struct block_throttle_limits, iops_total)},
        {"iops-read", offsetof(struct block_throttle_limits, iops_read)},
        {"iops-write", offsetof(struct block_throttle_limits, iops_write)},
        {"bps", offsetof(struct block_throttle_limits, bps_total)},
        {"bps-read", offsetof(struct block_throttle_limits, bps_read)},
        {"bps-write", offsetof(struct block_throttle_limits, bps_write)},
        {"iops-burst", offsetof(struct block_throttle_limits, iops_total_max)},
        {"bps-burst", offsetof(struct block_throttle_limits, bps_total_max)},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!strcmp(key, keys[i].key))
            return (uint64_t *)((char *)l + keys[i].offset);
    return NULL;
}

/* The throttling keys that make sense together (the block layer's buckets, docs/block.md). */
static int check_limits(const struct block_throttle_limits *l, struct wisp_err *err)
{
    if (l->iops_total && (l->iops_read || l->iops_write))
        return wisp_err_set(err, EINVAL, "--drive: iops cannot be combined with iops-read/-write");
    if (l->bps_total && (l->bps_read || l->bps_write))
        return wisp_err_set(err, EINVAL, "--drive: bps cannot be combined with bps-read/-write");
    if (l->iops_total_max && !l->iops_total)
        return wisp_err_set(err, EINVAL, "--drive: iops-burst needs iops");
    if (l->bps_total_max && !l->bps_total)
        return wisp_err_set(err, EINVAL, "--drive: bps-burst needs bps");
    return 0;
}

static int blk_key(struct virtio_blk_params *p, const struct kv_item *kv, struct wisp_err *err)
{
    const char *w = "--drive";
    uint64_t n = 0;
    uint64_t *limit = throttle_field(&p->limits, kv->key);
    if (limit)
        return parse_count(w, kv, UINT64_MAX, limit, err);
    if (!strcmp(kv->key, "path") || !strcmp(kv->key, "file")) {
        p->path = kv->value;
    } else if (!strcmp(kv->key, "id")) {
        p->id = kv->value;
    } else if (!strcmp(kv->key, "format")) {
        if (!block_driver_find(kv->value))
            return wisp_err_set(err, EINVAL, "--drive: format: '%s' is not raw or qcow2",
                                kv->value);
        p->format = kv->value;
    } else if (!strcmp(kv->key, "readonly")) {
        return parse_flag(w, kv, &p->read_only, err);
    } else if (!strcmp(kv->key, "cache")) {
        if (block_cache_mode_parse(kv->value, &p->cache) < 0)
            return wisp_err_set(err, EINVAL,
                                "--drive: cache: '%s' is not writeback, writethrough, none, "
                                "directsync or unsafe",
                                kv->value);
    } else if (!strcmp(kv->key, "aio")) {
        if (block_aio_engine_parse(kv->value, &p->aio) < 0)
            return wisp_err_set(err, EINVAL, "--drive: aio: '%s' is not sync, threads or io_uring",
                                kv->value);
        p->aio_given = true;
    } else if (!strcmp(kv->key, "serial")) {
        if (strlen(kv->value) > 20)
            return wisp_err_set(err, EINVAL, "--drive: serial: '%s' is longer than 20 bytes",
                                kv->value);
        p->serial = kv->value;
    } else if (!strcmp(kv->key, "queues")) {
        if (parse_count(w, kv, 8, &n, err) < 0 || n == 0)
            return wisp_err_set(err, EINVAL, "--drive: queues: '%s' is not 1 to 8", kv->value);
        p->queues = (unsigned)n;
    } else {
        return wisp_err_set(err, EINVAL,
                            "--drive: unknown key '%s' (path, format, readonly, cache, aio, "
                            "serial, queues, id, iops[-read|-write|-burst], bps[...])",
                            kv->key);
    }
    return 0;
}

int virtio_blk_params_parse(const char *spec, char *buf, struct virtio_blk_params *p,
                            struct wisp_err *err)
{
    *p = (struct virtio_blk_params){.cache = BLOCK_CACHE_WRITEBACK, .queues = 1};
    struct kv_item kv[MAX_KEYS];
    int n = parse_list("--drive", spec, buf, kv, err);
    for (int i = 0; i < n; i++) {
        int r = blk_key(p, &kv[i], err);
        if (r < 0)
            return r;
    }
    if (n < 0)
        return n;
    if (!p->path || !*p->path)
        return wisp_err_set(err, EINVAL, "--drive: path=FILE is missing");
    return check_limits(&p->limits, err);
}

int virtio_net_parse_mac(const char *s, uint8_t mac[6])
{
    unsigned v[6];
    char end;
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) !=
            6 ||
        strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < 6; i++)
        mac[i] = (uint8_t)v[i];
    return mac[0] & 1 ? -EINVAL : 0; /* a multicast address cannot be a NIC's */
}

static int net_key(struct virtio_net_params *p, const struct kv_item *kv, struct wisp_err *err)
{
    const char *w = "--net";
    if (!strcmp(kv->key, "tap")) {
        if (strlen(kv->value) >= 16)
            return wisp_err_set(err, EINVAL, "--net: tap: '%s' is longer than 15 characters",
                                kv->value);
        p->tap = kv->value;
    } else if (!strcmp(kv->key, "id")) {
        p->id = kv->value;
    } else if (!strcmp(kv->key, "mac")) {
        if (virtio_net_parse_mac(kv->value, p->mac) < 0)
            return wisp_err_set(err, EINVAL,
                                "--net: mac: '%s' is not a unicast address like "
                                "02:00:00:00:00:01",
                                kv->value);
        p->mac_given = true;
    } else if (!strcmp(kv->key, "vhost")) {
        if (!strcmp(kv->value, "auto"))
            p->vhost = VIRTIO_NET_VHOST_AUTO;
        else {
            bool on;
            if (parse_flag(w, kv, &on, err) < 0)
                return wisp_err_set(err, EINVAL, "--net: vhost: '%s' is not on, off or auto",
                                    kv->value);
            p->vhost = on ? VIRTIO_NET_VHOST_ON : VIRTIO_NET_VHOST_OFF;
        }
    } else if (!strcmp(kv->key, "rx-bps")) {
        return parse_count(w, kv, UINT64_MAX, &p->rx_bps, err);
    } else if (!strcmp(kv->key, "tx-bps")) {
        return parse_count(w, kv, UINT64_MAX, &p->tx_bps, err);
    } else if (!strcmp(kv->key, "rx-burst")) {
        return parse_count(w, kv, UINT64_MAX, &p->rx_burst, err);
    } else if (!strcmp(kv->key, "tx-burst")) {
        return parse_count(w, kv, UINT64_MAX, &p->tx_burst, err);
    } else {
        return wisp_err_set(err, EINVAL,
                            "--net: unknown key '%s' (tap, mac, vhost, rx-bps, tx-bps, "
                            "rx-burst, tx-burst, id)",
                            kv->key);
    }
    return 0;
}

int virtio_net_params_parse(const char *spec, char *buf, struct virtio_net_params *p,
                            struct wisp_err *err)
{
    *p = (struct virtio_net_params){.vhost = VIRTIO_NET_VHOST_OFF};
    struct kv_item kv[MAX_KEYS];
    int n = parse_list("--net", spec, buf, kv, err);
    for (int i = 0; i < n; i++) {
        int r = net_key(p, &kv[i], err);
        if (r < 0)
            return r;
    }
    if (n < 0)
        return n;
    if (!p->tap || !*p->tap)
        return wisp_err_set(err, EINVAL, "--net: tap=NAME is missing");
    if (p->rx_burst && !p->rx_bps)
        return wisp_err_set(err, EINVAL, "--net: rx-burst needs rx-bps");
    if (p->tx_burst && !p->tx_bps)
        return wisp_err_set(err, EINVAL, "--net: tx-burst needs tx-bps");
    if (p->vhost == VIRTIO_NET_VHOST_ON)
        return net_vhost_usable("--net", p, err);
    return 0;
}
