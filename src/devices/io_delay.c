/* Ports Linux pokes that need no model: 0x80 (POST code / outb_p's I/O delay) and 0xed. One
 * instance per port; reads give all ones, writes are ignored, and no exit is logged. */
#include <string.h>

#include "devices/legacy.h"

static int io_delay_realize(struct device *dev, struct wisp_err *err)
{
    const struct port_params *p = dev->params;
    return device_register_pio(dev, p->base, p->len ? p->len : 1, err);
}

static void io_delay_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0xff, size);
}

static void io_delay_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
}

const struct device_ops io_delay_device_ops = {
    .type = "io-delay",
    .realize = io_delay_realize,
    .pio_in = io_delay_in,
    .pio_out = io_delay_out,
};
