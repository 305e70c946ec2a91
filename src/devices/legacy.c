/*
 * The legacy PC devices of the machine: COM1 glue around the 8250 model, the i8042 reset line,
 * the test-exit and boot-marker ports, the HW-reduced ACPI reset/sleep registers, the 0xcf9
 * reset control, and the ports Linux pokes at boot that need no model (io delay).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus.h"
#include "devices/device.h"
#include "devices/ports.h"
#include "devices/serial.h"

int device_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static uint64_t device_value(const void *data, unsigned size)
{
    uint64_t v = 0;
    memcpy(&v, data, size < 8 ? size : 8); /* x86 is little-endian */
    return v;
}

/* ---- COM1: 8250 UART ---------------------------------------------------------------- */

static void serial_dev_tx(void *opaque, uint8_t byte)
{
    struct device *dev = opaque;
    if (dev->ctx->serial_out_fd >= 0)
        (void)device_write_all(dev->ctx->serial_out_fd, &byte,
                               1); /* a closed reader loses output */
}

static void serial_dev_set_irq(void *opaque, int level)
{
    struct device *dev = opaque;
    dev->ctx->set_irq(dev->ctx->opaque, COM1_IRQ, level);
}

static void serial_dev_rx_space(void *opaque)
{
    struct device *dev = opaque;
    if (dev->ctx->rx_space)
        dev->ctx->rx_space(dev->ctx->opaque);
}

static int serial_dev_realize(struct device *dev, const struct device_ctx *ctx,
                              struct wisp_err *err)
{
    struct serial_backend be = {
        .tx = serial_dev_tx,
        .set_irq = serial_dev_set_irq,
        .rx_space = serial_dev_rx_space,
        .opaque = dev,
    };
    dev->state = serial_create(&be);
    if (!dev->state)
        return wisp_err_set(err, ENOMEM, "serial0: out of memory");
    return bus_register(ctx->pio, PORT_COM1, UART_NR_PORTS, dev, err);
}

static void serial_dev_reset(struct device *dev)
{
    serial_reset(dev->state);
}

/* Wider accesses are split into byte accesses of consecutive registers, as on the ISA bus. */
static void serial_dev_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    uint8_t *p = data;
    for (unsigned i = 0; i < size; i++)
        p[i] = serial_read(dev->state, (unsigned)offset + i);
}

static void serial_dev_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    const uint8_t *p = data;
    for (unsigned i = 0; i < size; i++)
        serial_write(dev->state, (unsigned)offset + i, p[i]);
}

static void serial_dev_teardown(struct device *dev)
{
    serial_destroy(dev->state);
    dev->state = NULL;
}

const struct device_ops serial_device_ops = {
    .name = "serial0",
    .realize = serial_dev_realize,
    .reset = serial_dev_reset,
    .pio_in = serial_dev_in,
    .pio_out = serial_dev_out,
    .teardown = serial_dev_teardown,
};

/* ---- i8042: only what a PC kernel uses to reset ------------------------------------- */

#define I8042_CMD_RESET 0xfe /* pulse output port bit 0: the CPU reset line */
#define I8042_STR_SYS   0x04 /* status: system flag (self-test passed) */

/* One range 0x60-0x64: port 0x61 (NMI status / speaker) is served by KVM's in-kernel PIT and
 * never reaches us; 0x62/0x63 read as all ones. */
static int i8042_realize(struct device *dev, const struct device_ctx *ctx, struct wisp_err *err)
{
    return bus_register(ctx->pio, PORT_I8042_DATA, PORT_I8042_CMD - PORT_I8042_DATA + 1, dev, err);
}

/* Data reads 0 (empty buffer); status reads "buffers empty, self-test passed", so Linux's
 * i8042 probe does not wait for a controller and its reboot path can write the command. */
static void i8042_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0xff, size);
    if (offset == 0)
        ((uint8_t *)data)[0] = 0;
    else if (offset == PORT_I8042_CMD - PORT_I8042_DATA)
        ((uint8_t *)data)[0] = I8042_STR_SYS;
}

static void i8042_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    if (offset == PORT_I8042_CMD - PORT_I8042_DATA &&
        (uint8_t)device_value(data, size) == I8042_CMD_RESET)
        dev->ctx->request_stop(dev->ctx->opaque, 0, "i8042 reset (0xfe to port 0x64)");
}

const struct device_ops i8042_device_ops = {
    .name = "i8042",
    .realize = i8042_realize,
    .pio_in = i8042_in,
    .pio_out = i8042_out,
};

/* ---- test-exit port: the guest ends the VMM with a status -------------------------- */

static int test_exit_realize(struct device *dev, const struct device_ctx *ctx, struct wisp_err *err)
{
    return bus_register(ctx->pio, PORT_TEST_EXIT, 4, dev, err);
}

static void test_exit_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    int status = (int)(device_value(data, size) & 0xff);
    dev->ctx->request_stop(dev->ctx->opaque, status, "test-exit port");
}

const struct device_ops test_exit_device_ops = {
    .name = "test-exit",
    .realize = test_exit_realize,
    .pio_out = test_exit_out,
};

/* ---- boot-time marker --------------------------------------------------------------- */

static int boot_marker_realize(struct device *dev, const struct device_ctx *ctx,
                               struct wisp_err *err)
{
    return bus_register(ctx->pio, PORT_BOOT_MARKER, 4, dev, err);
}

static double ms_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/* "at" is CLOCK_MONOTONIC now minus CLOCK_MONOTONIC at the top of main(); with WISP_LAUNCH_NS
 * (the launcher's CLOCK_MONOTONIC before exec) it also prints the time since the launch. */
static void boot_marker_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    const struct device_ctx *ctx = dev->ctx;
    if (!ctx->boot_marker)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    char line[160];
    int n = snprintf(line, sizeof(line), "wisp-vmm: boot-marker %" PRIu64 " at %.3f ms",
                     device_value(data, size), ms_between(&ctx->start, &now));
    if (ctx->launch_ns >= 0 && n > 0 && (size_t)n < sizeof(line)) {
        int64_t now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
        n += snprintf(line + n, sizeof(line) - (size_t)n, " (%.3f ms since launch)",
                      (double)(now_ns - ctx->launch_ns) / 1e6);
    }
    if (n > 0 && (size_t)n < sizeof(line) - 1) {
        line[n++] = '\n';
        (void)device_write_all(STDERR_FILENO, line, (size_t)n);
    }
}

const struct device_ops boot_marker_device_ops = {
    .name = "boot-marker",
    .realize = boot_marker_realize,
    .pio_out = boot_marker_out,
};

/* ---- HW-reduced ACPI: FADT RESET_REG and SLEEP_CONTROL/STATUS_REG (ACPI 6.4 §4.8.3.7) -- */

#define ACPI_SLP_EN 0x20 /* SLEEP_CONTROL_REG bit 5; SLP_TYPx is bits 4:2 */

/* One range 0x600-0x605: RESET_REG at +0, SLEEP_CONTROL_REG at +4, SLEEP_STATUS_REG at +5. */
#define ACPI_OFF_RESET     (PORT_ACPI_RESET - PORT_ACPI_RESET)
#define ACPI_OFF_SLEEP_CTL (PORT_ACPI_SLEEP_CTL - PORT_ACPI_RESET)

static int acpi_pm_realize(struct device *dev, const struct device_ctx *ctx, struct wisp_err *err)
{
    return bus_register(ctx->pio, PORT_ACPI_RESET, PORT_ACPI_SLEEP_STS - PORT_ACPI_RESET + 1, dev,
                        err);
}

static void acpi_pm_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0, size); /* WAK_STS clear; the other registers read 0 */
}

static void acpi_pm_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    uint8_t v = (uint8_t)device_value(data, size);
    if (offset == ACPI_OFF_RESET && v == ACPI_RESET_VALUE)
        dev->ctx->request_stop(dev->ctx->opaque, 0, "ACPI reset");
    else if (offset == ACPI_OFF_SLEEP_CTL && (v & ACPI_SLP_EN))
        dev->ctx->request_stop(dev->ctx->opaque, 0, "ACPI sleep (poweroff)");
}

const struct device_ops acpi_pm_device_ops = {
    .name = "acpi-pm",
    .realize = acpi_pm_realize,
    .pio_in = acpi_pm_in,
    .pio_out = acpi_pm_out,
};

/* ---- 0xcf9 reset control register (Intel PCH): bit 2 starts a reset -------------------- */

static int pci_reset_realize(struct device *dev, const struct device_ctx *ctx, struct wisp_err *err)
{
    return bus_register(ctx->pio, PORT_PCI_RESET, 1, dev, err);
}

static void pci_reset_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0, size);
}

static void pci_reset_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    if (device_value(data, size) & 0x04)
        dev->ctx->request_stop(dev->ctx->opaque, 0, "reset through port 0xcf9");
}

const struct device_ops pci_reset_device_ops = {
    .name = "cf9-reset",
    .realize = pci_reset_realize,
    .pio_in = pci_reset_in,
    .pio_out = pci_reset_out,
};

/* ---- ports that need no model ------------------------------------------------------- */

/* 0x80: POST code / io delay (Linux's outb_p); 0xed: alternative io delay. Reads 0xff. */
static int io_delay_realize(struct device *dev, const struct device_ctx *ctx, struct wisp_err *err)
{
    int r = bus_register(ctx->pio, 0x80, 1, dev, err);
    return r < 0 ? r : bus_register(ctx->pio, 0xed, 1, dev, err);
}

static void io_delay_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    memset(data, 0xff, size);
}

static void io_delay_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
}

const struct device_ops io_delay_device_ops = {
    .name = "io-delay",
    .realize = io_delay_realize,
    .pio_in = io_delay_in,
    .pio_out = io_delay_out,
};
