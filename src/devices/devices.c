/* The machine's device table: every legacy device, realized and torn down in this order. */
#include <string.h>

#include "devices/device.h"

/* The one explicit list of the machine's devices, indexed by the DEV_* enum. */
static const struct device_ops *const device_table[DEV_COUNT] = {
    [DEV_SERIAL0] = &serial_device_ops,      [DEV_I8042] = &i8042_device_ops,
    [DEV_TEST_EXIT] = &test_exit_device_ops, [DEV_BOOT_MARKER] = &boot_marker_device_ops,
    [DEV_ACPI_PM] = &acpi_pm_device_ops,     [DEV_PCI_RESET] = &pci_reset_device_ops,
    [DEV_IO_DELAY] = &io_delay_device_ops,
};

int devices_realize(struct devices *devs, const struct device_ctx *ctx, struct wisp_err *err)
{
    memset(devs, 0, sizeof(*devs));
    for (unsigned i = 0; i < DEV_COUNT; i++) {
        struct device *dev = &devs->dev[i];
        dev->ops = device_table[i];
        dev->ctx = ctx;
        int r = dev->ops->realize ? dev->ops->realize(dev, ctx, err) : 0;
        if (r < 0) {
            devices_teardown(devs);
            return r;
        }
    }
    return 0;
}

void devices_reset(struct devices *devs)
{
    for (unsigned i = 0; i < DEV_COUNT; i++)
        if (devs->dev[i].ops && devs->dev[i].ops->reset)
            devs->dev[i].ops->reset(&devs->dev[i]);
}

void devices_teardown(struct devices *devs)
{
    for (unsigned i = DEV_COUNT; i-- > 0;) {
        struct device *dev = &devs->dev[i];
        if (dev->ops && dev->ops->teardown)
            dev->ops->teardown(dev);
        dev->ops = NULL;
        dev->state = NULL;
    }
}
