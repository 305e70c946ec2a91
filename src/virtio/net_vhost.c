/* vhost-net: the probe and the ring validation (see net_vhost.h for what is not built). */
#include "virtio/net_vhost.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vhost.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The host address of [gpa, gpa + len) if it lies in one region; 0 otherwise. */
static uint64_t region_hva(const struct guest_mem_region *regions, size_t nregions, uint64_t gpa,
                           uint64_t len)
{
    for (size_t i = 0; i < nregions; i++) {
        const struct guest_mem_region *r = &regions[i];
        if (gpa < r->gpa || gpa - r->gpa > r->size || len > r->size - (gpa - r->gpa))
            continue;
        return (uint64_t)(uintptr_t)r->hva + (gpa - r->gpa);
    }
    return 0;
}

static int ring_part(const struct guest_mem_region *regions, size_t nregions, const char *what,
                     uint64_t gpa, uint64_t len, uint64_t align, uint64_t *hva,
                     struct wisp_err *err)
{
    if (gpa & (align - 1))
        return wisp_err_set(err, EINVAL, "vhost: the %s at 0x%llx is not %llu-byte aligned", what,
                            (unsigned long long)gpa, (unsigned long long)align);
    *hva = region_hva(regions, nregions, gpa, len);
    if (!*hva)
        return wisp_err_set(err, EINVAL, "vhost: the %s [0x%llx, +%llu) is not inside guest RAM",
                            what, (unsigned long long)gpa, (unsigned long long)len);
    return 0;
}

int net_vhost_ring_check(const struct guest_mem_region *regions, size_t nregions, uint32_t num,
                         uint64_t desc, uint64_t avail, uint64_t used, int event_idx,
                         struct net_vhost_ring *out, struct wisp_err *err)
{
    if (num == 0 || num > 32768 || (num & (num - 1)))
        return wisp_err_set(err, EINVAL, "vhost: queue size %u is not a power of two <= 32768",
                            num);
    uint64_t extra = event_idx ? 2 : 0; /* used_event / avail_event */
    /* num <= 32768: none of these lengths can overflow */
    uint64_t desc_len = 16ULL * num;
    uint64_t avail_len = 4 + 2ULL * num + extra;
    uint64_t used_len = 4 + 8ULL * num + extra;
    int r =
        ring_part(regions, nregions, "descriptor table", desc, desc_len, 16, &out->desc_hva, err);
    if (r == 0)
        r = ring_part(regions, nregions, "available ring", avail, avail_len, 2, &out->avail_hva,
                      err);
    if (r == 0)
        r = ring_part(regions, nregions, "used ring", used, used_len, 4, &out->used_hva, err);
    return r;
}

int net_vhost_open(const char *path, uint64_t *features, struct wisp_err *err)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return wisp_err_set(err, e,
                            "%s: cannot open it: %s (vhost-net needs the vhost_net module "
                            "and access to the device; vhost=auto uses the user-space path)",
                            path, strerror(e));
    }
    if (ioctl(fd, VHOST_SET_OWNER) < 0 || ioctl(fd, VHOST_GET_FEATURES, features) < 0) {
        int e = errno;
        close(fd);
        return wisp_err_set(err, e, "%s: VHOST_SET_OWNER/VHOST_GET_FEATURES failed: %s", path,
                            strerror(e));
    }
    return fd;
}

int net_vhost_usable(const char *where, const struct virtio_net_params *p, struct wisp_err *err)
{
    if (p->rx_bps || p->tx_bps || p->rx_ops || p->tx_ops || p->rx_bps_once || p->tx_bps_once ||
        p->rx_ops_once || p->tx_ops_once)
        return wisp_err_set(err, EINVAL,
                            "%s: vhost=on: rate limits cannot apply to frames the kernel's "
                            "vhost-net moves; drop the limits or use vhost=off",
                            where);
    uint64_t features;
    int fd = net_vhost_open(NET_VHOST_DEV, &features, err);
    if (fd < 0)
        return wisp_err_wrap(err, "%s: vhost=on", where);
    close(fd);
    return wisp_err_set(err, ENOTSUP,
                        "%s: vhost=on: " NET_VHOST_DEV " opens, but wisp-vmm's vhost-net data "
                        "path is not built yet; vhost=auto or vhost=off moves frames in user "
                        "space",
                        where);
}
