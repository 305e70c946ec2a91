/* virtio-net (virtio 1.2 §5.1) on a tap device: the device type, its features and
 * configuration space, and activate/reset; the data path is in net_io.c. One receive and one
 * transmit queue, served with the tap by the NIC's own I/O thread ("net-<name>"). */
#include <endian.h>
#include <errno.h>
#include <linux/virtio_ids.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/statebuf.h"
#include "devices/device.h"
#include "virtio/net_int.h"

/* Offered whatever the tap takes; the offloads come from the tap's probe (net_frame.c). */
#define NET_BASE_FEATURES                                                                          \
    (1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS | 1ull << VIRTIO_NET_F_MRG_RXBUF)

/* §5.1.4: the configuration is read-only for a modern driver (the MAC changes only through a
 * control queue, which this device does not have): writes are ignored. */
static void net_config_read(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size)
{
    const struct virtio_net *n = (const struct virtio_net *)vdev;
    if (offset >= sizeof(n->config))
        return;
    size_t len = sizeof(n->config) - offset < size ? sizeof(n->config) - offset : size;
    memcpy(data, n->config + offset, len);
}

static void net_fill_config(struct virtio_net *n, const uint8_t mac[6])
{
    memcpy(n->config, mac, 6);
    uint16_t status = htole16(VIRTIO_NET_S_LINK_UP), pairs = htole16(1);
    memcpy(n->config + 6, &status, 2);
    memcpy(n->config + 8, &pairs, 2); /* max_virtqueue_pairs: read only with MQ */
}

static void bucket_init(struct token_bucket *tb, uint64_t rate, uint64_t burst, uint64_t once)
{
    token_bucket_init(tb, rate, burst);
    token_bucket_add_once(tb, once);
}

void net_init_buckets(struct virtio_net *n)
{
    const struct virtio_net_rate *rx = &n->rx_rate, *tx = &n->tx_rate;
    bucket_init(&n->rx_bucket, rx->bps, rx->bps_burst, rx->bps_once);
    bucket_init(&n->tx_bucket, tx->bps, tx->bps_burst, tx->bps_once);
    bucket_init(&n->rx_ops_bucket, rx->ops, rx->ops_burst, rx->ops_once);
    bucket_init(&n->tx_ops_bucket, tx->ops, tx->ops_burst, tx->ops_once);
}

struct virtio_net_rate virtio_net_params_rate(const struct virtio_net_params *p, bool rx)
{
    if (rx)
        return (struct virtio_net_rate){p->rx_bps, p->rx_burst,     p->rx_bps_once,
                                        p->rx_ops, p->rx_ops_burst, p->rx_ops_once};
    return (struct virtio_net_rate){p->tx_bps, p->tx_burst,     p->tx_bps_once,
                                    p->tx_ops, p->tx_ops_burst, p->tx_ops_once};
}

struct rates_call {
    struct virtio_net *n;
    struct virtio_net_rate rx, tx;
};

static void rates_in_loop(void *opaque)
{
    struct rates_call *c = opaque;
    c->n->rx_rate = c->rx;
    c->n->tx_rate = c->tx;
    net_init_buckets(c->n);
    net_io_rates_changed(c->n);
}

/* Under vdev->lock, so that an activate (which reads the rates) comes before or after. */
int virtio_net_set_rates(struct device *dev, const struct virtio_net_rate *rx,
                         const struct virtio_net_rate *tx, struct wisp_err *err)
{
    struct virtio_net *n = dev->state;
    struct rates_call c = {.n = n, .rx = *rx, .tx = *tx};
    pthread_mutex_lock(&n->vdev.lock);
    int r = evloop_call_sync(n->loop, rates_in_loop, &c);
    pthread_mutex_unlock(&n->vdev.lock);
    if (r < 0)
        return wisp_err_set(err, -r, "%s: the I/O thread has stopped", dev->name);
    return 0;
}

void virtio_net_get_stats(const struct device *dev, struct virtio_net_stats *out)
{
    const struct virtio_net *n = dev->state;
    /* written by the I/O thread only; relaxed loads of aligned words are whole on x86-64 */
    *out = (struct virtio_net_stats){
        .rx_frames = __atomic_load_n(&n->rx_frames, __ATOMIC_RELAXED),
        .rx_bytes = __atomic_load_n(&n->rx_bytes, __ATOMIC_RELAXED),
        .rx_dropped = __atomic_load_n(&n->rx_dropped, __ATOMIC_RELAXED),
        .tx_frames = __atomic_load_n(&n->tx_frames, __ATOMIC_RELAXED),
        .tx_bytes = __atomic_load_n(&n->tx_bytes, __ATOMIC_RELAXED),
        .tx_dropped = __atomic_load_n(&n->tx_dropped, __ATOMIC_RELAXED),
    };
}

/* DRIVER_OK (vCPU thread, vdev->lock held): the tap takes the offloads the driver accepts in
 * received frames, then the I/O thread serves the queues and the tap. */
static int net_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_net *n = (struct virtio_net *)vdev;
    n->features = vdev->guest_features;
    n->rx_ok = vdev->queues[NET_RX_QUEUE].vq.ready;
    n->tx_ok = vdev->queues[NET_TX_QUEUE].vq.ready;
    net_init_buckets(n);
    int r = tap_set_offload(&n->tap, net_tap_offloads(n->features), err);
    if (r < 0)
        return wisp_err_wrap(err, "%s", vdev->dev->name);
    return net_io_start(n, err);
}

static void net_reset(struct virtio_dev *vdev)
{
    struct virtio_net *n = (struct virtio_net *)vdev;
    net_io_stop(n);
    (void)tap_set_offload(&n->tap, 0, NULL); /* no partial checksums for the next driver */
}

static int net_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    net_io_quiesce((struct virtio_net *)vdev);
    return 0;
}

static int net_resume(struct virtio_dev *vdev, struct wisp_err *err)
{
    return net_io_start((struct virtio_net *)vdev, err);
}

/* The MAC the guest's driver read: a restored NIC must have the same (the configuration a
 * snapshot holds gives it as mac=). */
static int net_save(struct virtio_dev *vdev, struct state_writer *w, struct wisp_err *err)
{
    const struct virtio_net *n = (const struct virtio_net *)vdev;
    state_put_bytes(w, n->config, 6);
    return 0;
}

static int net_load(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err)
{
    const struct virtio_net *n = (const struct virtio_net *)vdev;
    uint8_t mac[6];
    state_get_bytes(r, mac, sizeof(mac));
    if (!r->bad && memcmp(mac, n->config, 6) && !n->p->mac_override)
        return wisp_err_set(err, EINVAL, "the MAC differs from the snapshot's NIC");
    return 0;
}

void virtio_net_get_mac(const struct device *dev, uint8_t mac[6])
{
    const struct virtio_net *n = dev->state;
    memcpy(mac, n->config, 6);
}

static const struct virtio_dev_ops net_ops = {
    .config_read = net_config_read,
    .activate = net_activate,
    .reset = net_reset,
    .quiesce = net_quiesce,
    .resume = net_resume,
    .save = net_save,
    .load = net_load,
};

static int net_open_backend(struct virtio_net *n, struct device *dev, struct wisp_err *err)
{
    const struct virtio_net_params *p = n->p;
    if (p->vhost == VIRTIO_NET_VHOST_ON) /* net_vhost_usable() refuses it already */
        return wisp_err_set(err, ENOTSUP, "%s: vhost=on: vhost-net is not implemented", dev->name);
    if (p->vhost == VIRTIO_NET_VHOST_AUTO) /* net_vhost.h: no data path to probe for */
        wisp_log_info("%s: vhost=auto: frames move in user space (wisp-vmm's vhost-net data "
                      "path is not built)",
                      dev->name);
    n->rx_buf = malloc(NET_MAX_LEN + 1);
    if (!n->rx_buf)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    int r = tap_open(&n->tap, p->tap, (int)NET_HDR_LEN, err);
    if (r < 0)
        return wisp_err_wrap(err, "%s", dev->name);
    char thread[48]; /* shown as its first 15 characters */
    snprintf(thread, sizeof(thread), "net-%s", dev->name);
    r = iothread_start(&n->thread, thread, err);
    if (r < 0)
        return r;
    n->loop = iothread_loop(n->thread);
    return 0;
}

static int net_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_net *n = calloc(1, sizeof(*n));
    if (!n)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = n;
    n->p = dev->params;
    n->rx_rate = virtio_net_params_rate(n->p, true);
    n->tx_rate = virtio_net_params_rate(n->p, false);
    n->tap.fd = -1;
    int r = net_open_backend(n, dev, err);
    if (r < 0)
        return r;
    uint8_t mac[6];
    if (n->p->mac_given)
        memcpy(mac, n->p->mac, 6);
    else
        net_default_mac(dev->name, n->tap.name, mac);
    net_fill_config(n, mac);
    static const uint16_t sizes[] = {NET_QUEUE_MAX, NET_QUEUE_MAX};
    uint64_t features = NET_BASE_FEATURES | net_offload_features(n->tap.offloads);
    return virtio_dev_init(&n->vdev, dev, &net_ops, VIRTIO_ID_NET, features, 2, sizes, err);
}

static void net_teardown(struct device *dev)
{
    struct virtio_net *n = dev->state;
    if (!n)
        return;
    virtio_dev_destroy(&n->vdev); /* resets the device: the I/O thread lets go of the queues */
    iothread_stop(n->thread);
    tap_close(&n->tap);
    free(n->rx_buf);
    free(n);
    dev->state = NULL;
}

const struct device_ops virtio_net_device_ops = {
    .type = "virtio-net",
    .realize = net_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = net_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
};
