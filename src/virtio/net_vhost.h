/* vhost-net (the kernel's drivers/vhost/net.c, linux/vhost.h): what of it wisp-vmm has.
 *
 * Built: the probe (open /dev/vhost-net, VHOST_SET_OWNER, VHOST_GET_FEATURES) that decides
 * vhost=on and vhost=auto, and the validation of a queue's ring addresses into the host
 * addresses VHOST_SET_VRING_ADDR takes. Not built yet: the data path (SET_MEM_TABLE, the
 * rings, SET_VRING_KICK/CALL on the queue's ioeventfd/irqfd, NET_SET_BACKEND), so vhost=on is
 * refused even where /dev/vhost-net opens, and vhost=auto is the user-space path. */
#ifndef WISP_VIRTIO_NET_VHOST_H
#define WISP_VIRTIO_NET_VHOST_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "kvm/guest_mem.h"
#include "virtio/net.h"

#define NET_VHOST_DEV "/dev/vhost-net"

/* The host addresses of one split virtqueue's three parts (vhost_vring_addr's fields). */
struct net_vhost_ring {
    uint64_t desc_hva, avail_hva, used_hva;
};

/* Checks a queue the driver set up (size `num`, the guest-physical addresses of its
 * descriptor table, available and used rings; event_idx: the rings carry used_event /
 * avail_event) the way the user-space path does: num a power of two in 1..32768, each part
 * aligned as virtio 1.2 §2.7 requires (16, 2, 4), each part's whole length inside one region
 * of `regions`, no sum overflowing. Pure: touches no memory. Returns 0 and fills *out, or
 * -EINVAL with err naming the part. */
int net_vhost_ring_check(const struct guest_mem_region *regions, size_t nregions, uint32_t num,
                         uint64_t desc, uint64_t avail, uint64_t used, int event_idx,
                         struct net_vhost_ring *out, struct wisp_err *err);

/* Opens `path` (NET_VHOST_DEV) O_RDWR | O_CLOEXEC, takes ownership (VHOST_SET_OWNER) and reads
 * the features the kernel offers (VHOST_GET_FEATURES). Returns the fd, or -errno with err
 * naming the path. */
int net_vhost_open(const char *path, uint64_t *features, struct wisp_err *err);

/* Whether a NIC asking vhost=on can have it, decided when the options are read so that a
 * refusal is a usage error (status 2) before any KVM work: rate limits cannot apply to frames
 * the kernel moves (refused), /dev/vhost-net must open (err names it), and, until the data
 * path is built, it is refused even then. `where` prefixes err ("--net"). Returns 0 or -errno. */
int net_vhost_usable(const char *where, const struct virtio_net_params *p, struct wisp_err *err);

#endif
