/* virtio-console (virtio 1.2 §5.3): one port, the guest's console hvc0. */
#ifndef WISP_VIRTIO_CONSOLE_H
#define WISP_VIRTIO_CONSOLE_H

#include "devices/device.h"

struct chardev;

struct virtio_console_params {
    struct chardev *chardev; /* host side (output never blocks the guest); not owned */
};

extern const struct device_ops virtio_console_device_ops;

#endif
