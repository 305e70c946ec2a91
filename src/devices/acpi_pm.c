/* Hardware-reduced ACPI registers (ACPI 6.4 §4.8.3.7): the FADT's RESET_REG at +0 and
 * SLEEP_CONTROL_REG at +4 end the VM; SLEEP_STATUS_REG at +5 reads 0. */
#include <string.h>

#include "devices/legacy.h"

#define ACPI_OFF_RESET     0
#define ACPI_OFF_SLEEP_CTL 4
#define ACPI_RANGE_LEN     6
#define ACPI_SLP_EN        0x20 /* SLEEP_CONTROL_REG bit 5; SLP_TYPx is bits 4:2 */

static int acpi_pm_realize(struct device *dev, struct wisp_err *err)
{
    const struct port_params *p = dev->params;
    return device_register_pio(dev, p->base, ACPI_RANGE_LEN, err);
}

static void acpi_pm_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0, size); /* WAK_STS clear; the other registers read 0 */
}

static void acpi_pm_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    uint8_t v = (uint8_t)device_access_value(data, size);
    if (offset == ACPI_OFF_RESET && v == ACPI_PM_RESET_VALUE)
        dev->ctx->request_stop(dev->ctx->opaque, 0, "ACPI reset");
    else if (offset == ACPI_OFF_SLEEP_CTL && (v & ACPI_SLP_EN))
        dev->ctx->request_stop(dev->ctx->opaque, 0, "ACPI sleep (poweroff)");
}

const struct device_ops acpi_pm_device_ops = {
    .type = "acpi-pm",
    .realize = acpi_pm_realize,
    .pio_in = acpi_pm_in,
    .pio_out = acpi_pm_out,
};
