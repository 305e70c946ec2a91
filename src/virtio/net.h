/* virtio-net (virtio 1.2 §5.1) on a tap device: a NIC of the machine. */
#ifndef WISP_VIRTIO_NET_H
#define WISP_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "devices/device.h"

/* vhost-net is not implemented yet: the parser refuses vhost=on (a usage error), and
 * vhost=auto is the user-space data path everywhere. */
enum virtio_net_vhost {
    VIRTIO_NET_VHOST_OFF,  /* the user-space data path (default) */
    VIRTIO_NET_VHOST_ON,   /* vhost-net (refused until it is implemented) */
    VIRTIO_NET_VHOST_AUTO, /* vhost-net where it exists, else user space: today user space */
};

/* One NIC, as --net (and later the API's PUT /network-interfaces/{id}) describes it. Strings
 * are not owned. */
struct virtio_net_params {
    const char *id;  /* the device name; NULL: "netN" */
    const char *tap; /* the tap device's name (an existing one, or created when wisp-vmm may) */
    uint8_t mac[6];
    bool mac_given; /* false: a locally administered MAC derived from the name and the tap */
    enum virtio_net_vhost vhost;
    uint64_t rx_bps, tx_bps;     /* token-bucket limits, frame bytes/s (0 = none) */
    uint64_t rx_burst, tx_burst; /* bytes the bucket holds (0: a tenth of a second's worth) */
};

/* Parses a --net value "tap=NAME[,mac=..][,vhost=off|auto][,rx-bps=..][,tx-bps=..]
 * [,rx-burst=..][,tx-burst=..][,id=..]" into *p (pointers into buf, a copy the caller keeps;
 * strlen(spec) + 1 bytes). Returns 0 or -errno with err naming the key. */
int virtio_net_params_parse(const char *spec, char *buf, struct virtio_net_params *p,
                            struct wisp_err *err);

extern const struct device_ops virtio_net_device_ops;
/* The MAC a realized NIC shows the guest (given, or derived from its name and tap). */
void virtio_net_get_mac(const struct device *dev, uint8_t mac[6]);

#endif
