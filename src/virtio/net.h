/* virtio-net (virtio 1.2 §5.1) on a tap device: a NIC of the machine. */
#ifndef WISP_VIRTIO_NET_H
#define WISP_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "devices/device.h"

/* vhost-net's data path is not built yet (virtio/net_vhost.h has its probe and ring checks):
 * the parser refuses vhost=on (a usage error naming /dev/vhost-net, or the rate limits that
 * cannot apply to it), and vhost=auto is the user-space data path everywhere. */
enum virtio_net_vhost {
    VIRTIO_NET_VHOST_OFF,  /* the user-space data path (default) */
    VIRTIO_NET_VHOST_ON,   /* vhost-net (refused until its data path is built) */
    VIRTIO_NET_VHOST_AUTO, /* vhost-net where it exists, else user space: today user space */
};

/* One NIC, as --net (and later the API's PUT /network-interfaces/{id}) describes it. Strings
 * are not owned. */
struct virtio_net_params {
    const char *id;  /* the device name; NULL: "netN" */
    const char *tap; /* the tap device's name (an existing one, or created when wisp-vmm may) */
    uint8_t mac[6];
    bool mac_given; /* false: a locally administered MAC derived from the name and the tap */
    /* a restore's network_overrides gave another MAC than the snapshot's (a clone's own): the
     * device's config space has it, the guest's driver still uses the one it read at probe */
    bool mac_override;
    enum virtio_net_vhost vhost;
    uint64_t rx_bps, tx_bps;     /* token-bucket limits, frame bytes/s (0 = none) */
    uint64_t rx_burst, tx_burst; /* bytes the bucket holds (0: a tenth of a second's worth) */
    /* the rest of Firecracker's rate limiters (the API's rx_/tx_rate_limiter) */
    uint64_t rx_ops, tx_ops;             /* frames/s (0 = none) */
    uint64_t rx_ops_burst, tx_ops_burst; /* frames the bucket holds (0: a tenth of a second's) */
    uint64_t rx_bps_once, tx_bps_once, rx_ops_once, tx_ops_once; /* one-time bursts */
};

/* "02:00:00:00:00:01": 0, or -EINVAL (not 17 bytes of hex pairs, or a multicast address). */
int virtio_net_parse_mac(const char *s, uint8_t mac[6]);

/* One direction's limits (the matching fields of virtio_net_params). */
struct virtio_net_rate {
    uint64_t bps, bps_burst, bps_once;
    uint64_t ops, ops_burst, ops_once;
};
/* A direction's limits as the params give them. */
struct virtio_net_rate virtio_net_params_rate(const struct virtio_net_params *p, bool rx);
/* New limits for a realized NIC (main thread; the VM may run): they apply from the next frame,
 * with full buckets. Waits for the NIC's I/O thread (which never blocks) to take them. */
int virtio_net_set_rates(struct device *dev, const struct virtio_net_rate *rx,
                         const struct virtio_net_rate *tx, struct wisp_err *err);
/* Frames and bytes moved so far (any thread; for metrics). */
struct virtio_net_stats {
    uint64_t rx_frames, rx_bytes, rx_dropped, tx_frames, tx_bytes, tx_dropped;
};
void virtio_net_get_stats(const struct device *dev, struct virtio_net_stats *out);

/* Parses a --net value "tap=NAME[,mac=..][,vhost=on|off|auto][,rx-bps=..][,tx-bps=..]
 * [,rx-burst=..][,tx-burst=..][,id=..]" into *p (pointers into buf, a copy the caller keeps;
 * strlen(spec) + 1 bytes). Returns 0 or -errno with err naming the key. */
int virtio_net_params_parse(const char *spec, char *buf, struct virtio_net_params *p,
                            struct wisp_err *err);

extern const struct device_ops virtio_net_device_ops;
/* The MAC a realized NIC shows the guest (given, or derived from its name and tap). */
void virtio_net_get_mac(const struct device *dev, uint8_t mac[6]);

#endif
