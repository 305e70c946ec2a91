/* The boot-time marker port: with --boot-marker each guest write of V logs the time since the
 * machine's start (and since the launch, with WISP_LAUNCH_NS). Logging never blocks the vCPU. */
#include <inttypes.h>
#include <stdio.h>

#include "common/log.h"
#include "devices/legacy.h"

static int boot_marker_realize(struct device *dev, struct wisp_err *err)
{
    const struct boot_marker_params *p = dev->params;
    return device_register_pio(dev, p->base, 4, err);
}

static double ms_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static void boot_marker_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    const struct boot_marker_params *p = dev->params;
    const struct device_ctx *ctx = dev->ctx;
    if (!p->enabled)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    char since_launch[48] = "";
    if (ctx->launch_ns >= 0) {
        int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
        snprintf(since_launch, sizeof(since_launch), " (%.3f ms since launch)",
                 (double)(now_ns - ctx->launch_ns) / 1e6);
    }
    wisp_log("boot-marker %" PRIu64 " at %.3f ms%s", device_access_value(data, size),
             ms_between(&ctx->start, &now), since_launch);
}

const struct device_ops boot_marker_device_ops = {
    .type = "boot-marker",
    .realize = boot_marker_realize,
    .pio_out = boot_marker_out,
};
