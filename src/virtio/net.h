/* virtio-net (virtio 1.2 §5.1) on a tap device: a NIC of the machine. */
#ifndef WISP_VIRTIO_NET_H
#define WISP_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "devices/device.h"

enum virtio_net_vhost {
    VIRTIO_NET_VHOST_OFF,  /* the user-space data path (default) */
    VIRTIO_NET_VHOST_ON,   /* vhost-net; an error where /dev/vhost-net does not exist */
    VIRTIO_NET_VHOST_AUTO, /* vhost-net where it exists, else user space */
};

/* One NIC, as --net (and later the API's PUT /network-interfaces/{id}) describes it. Strings
 * are not owned. */
struct virtio_net_params {
    const char *id;  /* the device name; NULL: "netN" */
    const char *tap; /* the tap device's name (an existing one, or created when wisp-vmm may) */
    uint8_t mac[6];
    bool mac_given; /* false: a locally administered MAC derived from the id and the pid */
    enum virtio_net_vhost vhost;
    uint64_t rx_bps, tx_bps; /* token-bucket limits, bytes/s (0 = none) */
    uint64_t rx_burst, tx_burst;
};

/* Parses a --net value "tap=NAME[,mac=..][,vhost=on|off|auto][,rx-bps=..][,tx-bps=..][,id=..]"
 * into *p (pointers into buf, a copy the caller keeps; strlen(spec) + 1 bytes). */
int virtio_net_params_parse(const char *spec, char *buf, struct virtio_net_params *p,
                            struct wisp_err *err);

extern const struct device_ops virtio_net_device_ops;

#endif
