/* The API's device resources before the start (docs/api.md): PUT /drives/{drive_id} and PUT
 * /network-interfaces/{iface_id} (and the config file's "drives" and "network-interfaces"),
 * with Firecracker's fields and wisp's own, applied to the configuration. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/json.h"
#include "common/io.h"
#include "net/tap.h"
#include "vmm/api.h"

#define N(a)       (sizeof(a) / sizeof((a)[0]))
#define ID_MAX_LEN 32

const char *vm_drive_name(const struct vm_config *cfg, unsigned i, char *buf, size_t len)
{
    if (cfg->drives[i].id)
        return cfg->drives[i].id;
    snprintf(buf, len, "blk%u", i); /* machine_devices.c names them so */
    return buf;
}

const char *vm_nic_name(const struct vm_config *cfg, unsigned i, char *buf, size_t len)
{
    if (cfg->nics[i].id)
        return cfg->nics[i].id;
    snprintf(buf, len, "net%u", i);
    return buf;
}

int vm_config_find_drive(const struct vm_config *cfg, const char *id)
{
    char buf[16];
    for (unsigned i = 0; i < cfg->nr_drives; i++)
        if (!strcmp(vm_drive_name(cfg, i, buf, sizeof(buf)), id))
            return (int)i;
    return -1;
}

int vm_config_find_nic(const struct vm_config *cfg, const char *id)
{
    char buf[16];
    for (unsigned i = 0; i < cfg->nr_nics; i++)
        if (!strcmp(vm_nic_name(cfg, i, buf, sizeof(buf)), id))
            return (int)i;
    return -1;
}

/* Ids name devices and their threads: short, and only characters that need no quoting. */
int vm_check_id(const char *where, const char *field, const char *id, const char *path_id,
                struct wisp_err *err)
{
    size_t n = strlen(id);
    if (n == 0 || n > ID_MAX_LEN ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789_-") != n)
        return wisp_err_set(err, EINVAL,
                            "%s: %s: '%.40s' is not 1 to %d letters, digits, '_' or '-'", where,
                            field, id, ID_MAX_LEN);
    if (path_id && strcmp(id, path_id)) /* Firecracker's words */
        return wisp_err_set(err, EINVAL,
                            "%s: The id from the path [%.40s] does not match the id from the body "
                            "[%.40s]!",
                            where, path_id, id);
    return 0;
}

/* ---- drives ---------------------------------------------------------------------------- */

struct drive_body {
    const char *id, *path, *partuuid, *cache_type, *io_engine, *socket, *format, *aio, *cache;
    const char *serial;
    bool is_root, read_only, has_rl, has_throttle, has_queues;
    uint64_t queues;
    json_t *rl, *throttle;
};

/* wisp's "throttle" object: the --drive keys (docs/wisp-vmm.md), with '_' for '-'. */
static int throttle_parse(const json_t *j, const char *where, struct block_throttle_limits *l,
                          struct wisp_err *err)
{
    const struct api_json_field f[] = {
        {"iops", API_JSON_UINT, false, &l->iops_total, NULL, 0},
        {"iops_read", API_JSON_UINT, false, &l->iops_read, NULL, 0},
        {"iops_write", API_JSON_UINT, false, &l->iops_write, NULL, 0},
        {"iops_burst", API_JSON_UINT, false, &l->iops_total_max, NULL, 0},
        {"bps", API_JSON_UINT, false, &l->bps_total, NULL, 0},
        {"bps_read", API_JSON_UINT, false, &l->bps_read, NULL, 0},
        {"bps_write", API_JSON_UINT, false, &l->bps_write, NULL, 0},
        {"bps_burst", API_JSON_UINT, false, &l->bps_total_max, NULL, 0},
    };
    int r = api_json_read(j, where, f, N(f), err);
    if (r == 0 && l->iops_total && (l->iops_read || l->iops_write))
        r = wisp_err_set(err, EINVAL, "%s: iops cannot be combined with iops_read/iops_write",
                         where);
    if (r == 0 && l->bps_total && (l->bps_read || l->bps_write))
        r = wisp_err_set(err, EINVAL, "%s: bps cannot be combined with bps_read/bps_write", where);
    if (r == 0 && l->iops_total_max && !l->iops_total)
        r = wisp_err_set(err, EINVAL, "%s: iops_burst needs iops", where);
    if (r == 0 && l->bps_total_max && !l->bps_total)
        r = wisp_err_set(err, EINVAL, "%s: bps_burst needs bps", where);
    return r;
}

static int drive_read(const json_t *body, const char *where, struct drive_body *b,
                      struct wisp_err *err)
{
    const struct api_json_field f[] = {
        {"drive_id", API_JSON_STRING, true, &b->id, NULL, 0},
        {"path_on_host", API_JSON_STRING, false, &b->path, NULL, 0},
        {"is_root_device", API_JSON_BOOL, true, &b->is_root, NULL, 0},
        {"is_read_only", API_JSON_BOOL, false, &b->read_only, NULL, 0},
        {"partuuid", API_JSON_STRING, false, &b->partuuid, NULL, 0},
        {"cache_type", API_JSON_STRING, false, &b->cache_type, NULL, 0},
        {"io_engine", API_JSON_STRING, false, &b->io_engine, NULL, 0},
        {"rate_limiter", API_JSON_OBJECT, false, &b->rl, &b->has_rl, 0},
        {"socket", API_JSON_STRING, false, &b->socket, NULL, 0},
        /* wisp's own */
        {"format", API_JSON_STRING, false, &b->format, NULL, 0},
        {"aio", API_JSON_STRING, false, &b->aio, NULL, 0},
        {"cache", API_JSON_STRING, false, &b->cache, NULL, 0},
        {"serial", API_JSON_STRING, false, &b->serial, NULL, 0},
        {"queues", API_JSON_UINT, false, &b->queues, &b->has_queues, 8},
        {"throttle", API_JSON_OBJECT, false, &b->throttle, &b->has_throttle, 0},
    };
    return api_json_read(body, where, f, N(f), err);
}

/* An image must open (read-only for is_read_only) and be a file or a block device; never
 * blocks (O_NONBLOCK: a FIFO is refused, not waited for). */
int vm_check_image(const char *what, const char *path, bool read_only, struct wisp_err *err)
{
    int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s: %s", what, path);
    struct stat st;
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    close(fd);
    if (r < 0)
        return wisp_err_sys(err, -r, "%s: %s", what, path);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return wisp_err_set(err, EINVAL, "%s: %s is %s, not an image file or a block device", what,
                            path, wisp_file_type_name(st.st_mode));
    return 0;
}

/* Firecracker's cache_type and io_engine, then wisp's keys over them. */
static int drive_modes(const struct drive_body *b, const char *where, struct virtio_blk_params *p,
                       struct wisp_err *err)
{
    p->cache = BLOCK_CACHE_UNSAFE; /* Firecracker's default: flushes are not carried out */
    if (b->cache_type && !strcmp(b->cache_type, "Writeback"))
        p->cache = BLOCK_CACHE_WRITEBACK;
    else if (b->cache_type && strcmp(b->cache_type, "Unsafe"))
        return wisp_err_set(err, EINVAL, "%s: cache_type: '%.32s' is not Unsafe or Writeback",
                            where, b->cache_type);
    if (b->cache && block_cache_mode_parse(b->cache, &p->cache) < 0)
        return wisp_err_set(err, EINVAL,
                            "%s: cache: '%.32s' is not writeback, writethrough, none, directsync "
                            "or unsafe",
                            where, b->cache);
    p->aio_given = true;
    p->aio = BLOCK_AIO_SYNC; /* Firecracker's default */
    if (b->io_engine && !strcmp(b->io_engine, "Async"))
        p->aio = BLOCK_AIO_IO_URING;
    else if (b->io_engine && strcmp(b->io_engine, "Sync"))
        return wisp_err_set(err, EINVAL, "%s: io_engine: '%.32s' is not Sync or Async", where,
                            b->io_engine);
    if (b->aio && !strcmp(b->aio, "auto"))
        p->aio_given = false;
    else if (b->aio && block_aio_engine_parse(b->aio, &p->aio) < 0)
        return wisp_err_set(err, EINVAL, "%s: aio: '%.32s' is not io_uring, threads, sync or auto",
                            where, b->aio);
    p->format = "raw"; /* Firecracker's images are raw; wisp's format key says otherwise */
    if (b->format && !strcmp(b->format, "auto"))
        p->format = NULL;
    else if (b->format && strcmp(b->format, "raw") && strcmp(b->format, "qcow2"))
        return wisp_err_set(err, EINVAL, "%s: format: '%.32s' is not raw, qcow2 or auto", where,
                            b->format);
    else if (b->format)
        p->format = b->format[0] == 'q' ? "qcow2" : "raw";
    return 0;
}

static int drive_params(const struct drive_body *b, const char *where, struct virtio_blk_params *p,
                        struct vm_drive_api *x, struct wisp_err *err)
{
    char w[160];
    *p = (struct virtio_blk_params){.read_only = b->read_only, .queues = 1};
    *x = (struct vm_drive_api){.is_root_device = b->is_root};
    if (b->socket)
        return wisp_err_set(err, EINVAL, "%s: socket: vhost-user-block is not supported", where);
    if (!b->path)
        return wisp_err_set(err, EINVAL, "%s: path_on_host: missing (required)", where);
    int r = drive_modes(b, where, p, err);
    if (r == 0 && b->serial && strlen(b->serial) > 20)
        r = wisp_err_set(err, EINVAL, "%s: serial: longer than 20 bytes", where);
    if (r == 0 && b->has_queues && b->queues == 0)
        r = wisp_err_set(err, EINVAL, "%s: queues: 0 is out of range (1 to 8)", where);
    if (r == 0 && b->has_rl && b->has_throttle)
        r = wisp_err_set(err, EINVAL, "%s: rate_limiter and throttle: give one of them", where);
    if (r == 0 && b->has_rl) {
        snprintf(w, sizeof(w), "%s: rate_limiter", where);
        r = fc_rate_limiter_parse(b->rl, w, &x->rate_limiter, err);
        fc_rate_limiter_to_block(&x->rate_limiter, &p->limits);
        x->has_rate_limiter = true;
    }
    if (r == 0 && b->has_throttle) {
        snprintf(w, sizeof(w), "%s: throttle", where);
        r = throttle_parse(b->throttle, w, &p->limits, err);
    }
    if (r == 0) {
        snprintf(w, sizeof(w), "%s: path_on_host", where);
        r = vm_check_image(w, b->path, b->read_only, err);
    }
    if (b->has_queues)
        p->queues = (unsigned)b->queues;
    return r;
}

/* Firecracker attaches the root drive first, so that it is /dev/vda. */
static void drive_move_first(struct vm_config *cfg, unsigned i)
{
    struct virtio_blk_params p = cfg->drives[i];
    struct vm_drive_api x = cfg->api.drives[i];
    memmove(&cfg->drives[1], &cfg->drives[0], i * sizeof(cfg->drives[0]));
    memmove(&cfg->api.drives[1], &cfg->api.drives[0], i * sizeof(cfg->api.drives[0]));
    cfg->drives[0] = p;
    cfg->api.drives[0] = x;
}

static int drive_store(struct vm_config *cfg, int i, const struct drive_body *b,
                       const struct virtio_blk_params *p, const struct vm_drive_api *x,
                       struct wisp_err *err)
{
    struct virtio_blk_params *d = &cfg->drives[i];
    struct vm_drive_api *dx = &cfg->api.drives[i];
    const char *old_id = d->id, *old_path = d->path, *old_serial = d->serial;
    const char *old_partuuid = dx->partuuid;
    *d = *p;
    *dx = *x;
    d->id = old_id, d->path = old_path, d->serial = old_serial, dx->partuuid = old_partuuid;
    int r = vm_config_set_string(cfg, &d->id, b->id, err);
    if (r == 0)
        r = vm_config_set_string(cfg, &d->path, b->path, err);
    if (r == 0)
        r = vm_config_set_string(cfg, &d->serial, b->serial, err);
    if (r == 0)
        r = vm_config_set_string(cfg, &dx->partuuid, b->partuuid, err);
    if (r == 0 && x->is_root_device && i > 0)
        drive_move_first(cfg, (unsigned)i);
    return r;
}

int vm_resource_drive(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                      struct wisp_err *err)
{
    struct drive_body b = {0};
    struct virtio_blk_params p;
    struct vm_drive_api x;
    int r = drive_read(body, where, &b, err);
    if (r == 0)
        r = vm_check_id(where, "drive_id", b.id, id, err);
    if (r == 0)
        r = drive_params(&b, where, &p, &x, err);
    if (r < 0)
        return r;
    int i = vm_config_find_drive(cfg, b.id);
    for (unsigned k = 0; x.is_root_device && k < cfg->nr_drives; k++)
        if ((int)k != i && cfg->api.drives[k].is_root_device)
            return wisp_err_set(err, EINVAL,
                                "%s: A root block device already exists! (drive %s is the root "
                                "device; a VM has one)",
                                where, vm_drive_name(cfg, k, (char[16]){0}, 16));
    if (vm_config_find_nic(cfg, b.id) >= 0)
        return wisp_err_set(err, EINVAL, "%s: drive_id: a network interface has the id %s", where,
                            b.id);
    if (i < 0 && cfg->nr_drives == VMM_MAX_DRIVES)
        return wisp_err_set(err, EINVAL, "%s: a VM has at most %d drives", where, VMM_MAX_DRIVES);
    if (i < 0) {
        i = (int)cfg->nr_drives++;
        cfg->drives[i] = (struct virtio_blk_params){0};
        cfg->api.drives[i] = (struct vm_drive_api){0};
    }
    return drive_store(cfg, i, &b, &p, &x, err);
}

/* ---- network interfaces ---------------------------------------------------------------- */

struct nic_body {
    const char *id, *tap, *mac;
    json_t *rx, *tx;
    bool has_rx, has_tx, has_mtu;
    uint64_t mtu, rx_bps, rx_burst, tx_bps, tx_burst;
};

static int nic_read(const json_t *body, const char *where, struct nic_body *b, struct wisp_err *err)
{
    const struct api_json_field f[] = {
        {"iface_id", API_JSON_STRING, true, &b->id, NULL, 0},
        {"host_dev_name", API_JSON_STRING, true, &b->tap, NULL, 0},
        {"guest_mac", API_JSON_STRING, false, &b->mac, NULL, 0},
        {"rx_rate_limiter", API_JSON_OBJECT, false, &b->rx, &b->has_rx, 0},
        {"tx_rate_limiter", API_JSON_OBJECT, false, &b->tx, &b->has_tx, 0},
        {"mtu", API_JSON_UINT, false, &b->mtu, &b->has_mtu, 0},
        /* wisp's own: --net's rx-bps, rx-burst, tx-bps, tx-burst */
        {"rx_bps", API_JSON_UINT, false, &b->rx_bps, NULL, 0},
        {"rx_burst", API_JSON_UINT, false, &b->rx_burst, NULL, 0},
        {"tx_bps", API_JSON_UINT, false, &b->tx_bps, NULL, 0},
        {"tx_burst", API_JSON_UINT, false, &b->tx_burst, NULL, 0},
    };
    int r = api_json_read(body, where, f, N(f), err);
    if (r == 0 && b->has_mtu)
        r = wisp_err_set(err, EINVAL,
                         "%s: mtu: not supported: wisp's virtio-net does not offer "
                         "VIRTIO_NET_F_MTU (the guest picks its MTU)",
                         where);
    if (r == 0 && strlen(b->tap) >= 16)
        r = wisp_err_set(err, EINVAL, "%s: host_dev_name: '%.40s' is longer than 15 characters",
                         where, b->tap);
    if (r == 0 &&
        ((b->has_rx && (b->rx_bps || b->rx_burst)) || (b->has_tx && (b->tx_bps || b->tx_burst))))
        r = wisp_err_set(err, EINVAL,
                         "%s: give a direction's limits as a rate limiter or as "
                         "bps/burst, not both",
                         where);
    if (r == 0 && ((b->rx_burst && !b->rx_bps) || (b->tx_burst && !b->tx_bps)))
        r = wisp_err_set(err, EINVAL, "%s: rx_burst (tx_burst) needs rx_bps (tx_bps)", where);
    return r;
}

static void net_rates_to_params(const struct virtio_net_rate *rx, const struct virtio_net_rate *tx,
                                struct virtio_net_params *p)
{
    p->rx_bps = rx->bps, p->rx_burst = rx->bps_burst, p->rx_bps_once = rx->bps_once;
    p->rx_ops = rx->ops, p->rx_ops_burst = rx->ops_burst, p->rx_ops_once = rx->ops_once;
    p->tx_bps = tx->bps, p->tx_burst = tx->bps_burst, p->tx_bps_once = tx->bps_once;
    p->tx_ops = tx->ops, p->tx_ops_burst = tx->ops_burst, p->tx_ops_once = tx->ops_once;
}

static int nic_params(const struct nic_body *b, const char *where, struct virtio_net_params *p,
                      struct vm_nic_api *x, struct wisp_err *err)
{
    char w[160];
    *p = (struct virtio_net_params){.vhost = VIRTIO_NET_VHOST_OFF};
    *x = (struct vm_nic_api){.has_rx = b->has_rx, .has_tx = b->has_tx};
    if (b->mac && virtio_net_parse_mac(b->mac, p->mac) < 0)
        return wisp_err_set(err, EINVAL,
                            "%s: guest_mac: '%.40s' is not a unicast address like "
                            "02:00:00:00:00:01",
                            where, b->mac);
    p->mac_given = b->mac != NULL;
    int r = 0;
    if (b->has_rx) {
        snprintf(w, sizeof(w), "%s: rx_rate_limiter", where);
        r = fc_rate_limiter_parse(b->rx, w, &x->rx, err);
    }
    if (r == 0 && b->has_tx) {
        snprintf(w, sizeof(w), "%s: tx_rate_limiter", where);
        r = fc_rate_limiter_parse(b->tx, w, &x->tx, err);
    }
    if (r < 0)
        return r;
    struct virtio_net_rate rx, tx;
    fc_rate_limiter_to_net(&x->rx, &rx);
    fc_rate_limiter_to_net(&x->tx, &tx);
    net_rates_to_params(&rx, &tx, p);
    if (b->rx_bps)
        p->rx_bps = b->rx_bps, p->rx_burst = b->rx_burst;
    if (b->tx_bps)
        p->tx_bps = b->tx_bps, p->tx_burst = b->tx_burst;
    snprintf(w, sizeof(w), "%s: host_dev_name", where);
    r = tap_check(b->tap, err);
    return r < 0 ? wisp_err_wrap(err, "%s", w) : 0;
}

int vm_resource_nic(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                    struct wisp_err *err)
{
    struct nic_body b = {0};
    struct virtio_net_params p;
    struct vm_nic_api x;
    int r = nic_read(body, where, &b, err);
    if (r == 0)
        r = vm_check_id(where, "iface_id", b.id, id, err);
    if (r == 0)
        r = nic_params(&b, where, &p, &x, err);
    if (r < 0)
        return r;
    if (vm_config_find_drive(cfg, b.id) >= 0)
        return wisp_err_set(err, EINVAL, "%s: iface_id: a drive has the id %s", where, b.id);
    int i = vm_config_find_nic(cfg, b.id);
    for (unsigned k = 0; k < cfg->nr_nics; k++)
        if ((int)k != i && !strcmp(cfg->nics[k].tap, b.tap))
            return wisp_err_set(err, EINVAL, "%s: host_dev_name: the tap %s is another NIC's",
                                where, b.tap);
    if (i < 0 && cfg->nr_nics == VMM_MAX_NICS)
        return wisp_err_set(err, EINVAL, "%s: a VM has at most %d NICs", where, VMM_MAX_NICS);
    if (i < 0) {
        i = (int)cfg->nr_nics++;
        cfg->nics[i] = (struct virtio_net_params){0};
    }
    struct virtio_net_params *n = &cfg->nics[i];
    const char *old_id = n->id, *old_tap = n->tap;
    *n = p;
    n->id = old_id, n->tap = old_tap;
    cfg->api.nics[i] = x;
    r = vm_config_set_string(cfg, &n->id, b.id, err);
    return r < 0 ? r : vm_config_set_string(cfg, &n->tap, b.tap, err);
}
