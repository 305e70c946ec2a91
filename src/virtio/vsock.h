/* virtio-vsock (virtio 1.2 §5.10) with Firecracker's hybrid host side: guest AF_VSOCK stream
 * sockets reach host AF_UNIX sockets (docs/vsock.md). */
#ifndef WISP_VIRTIO_VSOCK_H
#define WISP_VIRTIO_VSOCK_H

#include <stdint.h>

#include "devices/device.h"

#define VSOCK_MIN_GUEST_CID 3          /* 0-2 are reserved (hypervisor, local, host) */
#define VSOCK_MAX_GUEST_CID 0xfffffffe /* -1 is VMADDR_CID_ANY; Linux takes 32 bits */

struct virtio_vsock_params {
    uint64_t guest_cid;   /* the guest's context id, VSOCK_MIN..MAX_GUEST_CID */
    const char *uds_path; /* wisp-vmm listens here; guest connections to port P go to PATH_P */
};
extern const struct device_ops virtio_vsock_device_ops;

#endif
