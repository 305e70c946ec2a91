/*
 * virtio-balloon (virtio 1.2 §5.5): the host asks the guest for `num_pages` 4 KiB pages
 * (PATCH /balloon); the pages the guest puts in the inflate queue, and the free ranges it puts
 * in the free page reporting queue, leave the host (guest_mem_discard: MADV_DONTNEED for
 * private memory, a punched hole for a shared backend) and read as zeroes when the guest
 * touches them again, deflated or reused. Features offered: STATS_VQ, DEFLATE_ON_OOM (when
 * asked for) and REPORTING.
 *
 * Threads: the queues are served on the machine's main loop (each inflated page is one
 * madvise or fallocate, done as it comes; nothing waits). The API's calls below come from the
 * main loop too; the config space is read and written by vCPU threads under vdev->lock, and
 * the target is set under it. The statistics are kept under the device's own lock.
 */
#ifndef WISP_VIRTIO_BALLOON_H
#define WISP_VIRTIO_BALLOON_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/device.h"

struct virtio_balloon_params {
    uint32_t target_pages;     /* num_pages at the start (Firecracker's amount_mib x 256) */
    bool deflate_on_oom;       /* offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM */
    uint32_t stats_interval_s; /* 0: no statistics queue offered */
};

/* The guest's statistics (§5.5.6.3 tags; valid says which it sent) and the device's counts. */
enum {
    BALLOON_STAT_SWAP_IN,
    BALLOON_STAT_SWAP_OUT,
    BALLOON_STAT_MAJFLT,
    BALLOON_STAT_MINFLT,
    BALLOON_STAT_MEMFREE,
    BALLOON_STAT_MEMTOT,
    BALLOON_STAT_AVAIL,
    BALLOON_STAT_CACHES,
    BALLOON_STAT_HTLB_PGALLOC,
    BALLOON_STAT_HTLB_PGFAIL,
    BALLOON_STAT_NR,
};
struct virtio_balloon_stats {
    uint32_t target_pages, actual_pages;
    uint64_t values[BALLOON_STAT_NR];
    uint32_t valid;         /* bit per tag the guest sent */
    uint64_t stats_updates; /* buffers the guest sent on the statistics queue */
    uint64_t inflated, deflated, reported_bytes, bad_pfns;
};

extern const struct device_ops virtio_balloon_device_ops;

/* Main loop: a new target (pages); the guest is told by a config interrupt. */
void virtio_balloon_set_target(struct device *dev, uint32_t pages);
/* Main loop: the statistics period (0 stops asking). -EINVAL if the device was created
 * without the statistics queue (interval 0 at the start), as Firecracker refuses it. */
int virtio_balloon_set_stats_interval(struct device *dev, uint32_t seconds);
void virtio_balloon_get_stats(struct device *dev, struct virtio_balloon_stats *out);

#endif
