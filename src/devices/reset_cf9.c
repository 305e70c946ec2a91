/* The reset control register of Intel chipsets (port 0xcf9): a write with bit 2 (RST_CPU)
 * resets, which ends the VM. */
#include <string.h>

#include "devices/legacy.h"

#define CF9_RST_CPU 0x04

static int reset_cf9_realize(struct device *dev, struct wisp_err *err)
{
    const struct port_params *p = dev->params;
    return device_register_pio(dev, p->base, 1, err);
}

static void reset_cf9_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0, size);
}

static void reset_cf9_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    if (device_access_value(data, size) & CF9_RST_CPU)
        dev->ctx->request_stop(dev->ctx->opaque, 0, "reset through port 0xcf9");
}

const struct device_ops reset_cf9_device_ops = {
    .type = "cf9-reset",
    .realize = reset_cf9_realize,
    .pio_in = reset_cf9_in,
    .pio_out = reset_cf9_out,
};
