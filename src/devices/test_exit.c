/* The test-exit port: a guest write of V ends the VMM with exit status V & 0xff (like QEMU's
 * isa-debug-exit, without its 2V+1). */
#include "devices/legacy.h"

static int test_exit_realize(struct device *dev, struct wisp_err *err)
{
    const struct port_params *p = dev->params;
    return device_register_pio(dev, p->base, p->len ? p->len : 4, err);
}

static void test_exit_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    int status = (int)(device_access_value(data, size) & 0xff);
    dev->ctx->request_stop(dev->ctx->opaque, status, "test-exit port");
}

const struct device_ops test_exit_device_ops = {
    .type = "test-exit",
    .realize = test_exit_realize,
    .pio_out = test_exit_out,
};
