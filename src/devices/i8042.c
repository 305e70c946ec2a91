/* i8042 keyboard controller: only what a PC kernel uses to reset (command 0xfe on the command
 * port pulses the CPU reset line; the VM ends with status 0). */
#include <string.h>

#include "devices/legacy.h"

#define I8042_CMD_OFFSET 4    /* command/status port = data port + 4 (0x64) */
#define I8042_CMD_RESET  0xfe /* pulse output port bit 0: the CPU reset line */
#define I8042_STR_SYS    0x04 /* status: system flag (self-test passed) */

/* One range data..command: port 0x61 (NMI status / speaker) is served by KVM's in-kernel PIT
 * and never reaches us; 0x62/0x63 read as all ones. */
static int i8042_realize(struct device *dev, struct wisp_err *err)
{
    const struct i8042_params *p = dev->params;
    return device_register_pio(dev, p->base, I8042_CMD_OFFSET + 1, err);
}

/* Data reads 0 (empty buffer); status reads "buffers empty, self-test passed", so Linux's
 * i8042 probe does not wait for a controller and its reboot path can write the command. */
static void i8042_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0xff, size);
    if (offset == 0)
        ((uint8_t *)data)[0] = 0;
    else if (offset == I8042_CMD_OFFSET)
        ((uint8_t *)data)[0] = I8042_STR_SYS;
}

static void i8042_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    if (offset == I8042_CMD_OFFSET && (uint8_t)device_access_value(data, size) == I8042_CMD_RESET)
        dev->ctx->request_stop(dev->ctx->opaque, 0, "i8042 reset (0xfe to port 0x64)");
}

const struct device_ops i8042_device_ops = {
    .type = "i8042",
    .realize = i8042_realize,
    .pio_in = i8042_in,
    .pio_out = i8042_out,
};
