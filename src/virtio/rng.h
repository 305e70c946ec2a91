/* virtio-rng (virtio 1.2 §5.4): entropy from the host's getrandom(), rate-limited. */
#ifndef WISP_VIRTIO_RNG_H
#define WISP_VIRTIO_RNG_H

#include <stdint.h>

#include "devices/device.h"

struct virtio_rng_params {
    uint64_t bytes_per_sec; /* 0 = unlimited */
    uint64_t burst;         /* bytes the bucket holds (0: a tenth of a second's worth) */
};
extern const struct device_ops virtio_rng_device_ops;

#endif
