/* A serial port: the 8250/16550A model (serial.c) on the port bus, wired to an interrupt line
 * and to a chardev (the host side). Output flows as fast as the chardev takes it; input only as
 * fast as the guest empties the receive FIFO. */
#include <errno.h>
#include <stdlib.h>

#include "common/chardev.h"
#include "devices/legacy.h"
#include "devices/resources.h"
#include "devices/serial.h"

struct serial_port {
    struct device *dev;
    struct serial *uart;
    const struct serial_port_params *p;
};

static size_t port_tx(void *opaque, const uint8_t *buf, size_t len)
{
    struct serial_port *sp = opaque;
    return sp->p->chardev ? chardev_write(sp->p->chardev, buf, len) : len;
}

static void port_set_irq(void *opaque, int level)
{
    struct serial_port *sp = opaque;
    const struct device_ctx *ctx = sp->dev->ctx;
    ctx->set_irq(ctx->opaque, sp->p->irq, level);
}

static void port_rx_space(void *opaque)
{
    struct serial_port *sp = opaque;
    if (sp->p->chardev)
        chardev_input_ready(sp->p->chardev);
}

/* chardev frontend: input from the host, output room again */
static size_t port_can_receive(void *opaque)
{
    struct serial_port *sp = opaque;
    return serial_rx_room(sp->uart);
}

static void port_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct serial_port *sp = opaque;
    serial_receive(sp->uart, buf, len);
}

static void port_output_space(void *opaque)
{
    struct serial_port *sp = opaque;
    serial_tx_ready(sp->uart);
}

static int serial_port_realize(struct device *dev, struct wisp_err *err)
{
    const struct serial_port_params *p = dev->params;
    struct serial_port *sp = calloc(1, sizeof(*sp));
    if (!sp)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = sp;
    sp->dev = dev;
    sp->p = p;
    struct serial_backend be = {
        .tx = port_tx,
        .set_irq = port_set_irq,
        .rx_space = port_rx_space,
        .opaque = sp,
    };
    sp->uart = serial_create(&be);
    if (!sp->uart)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    int r = dev->ctx->res ? resources_claim_gsi(dev->ctx->res, p->irq, dev->name, err) : 0;
    if (r == 0)
        r = device_register_pio(dev, p->base, UART_NR_PORTS, err);
    if (r == 0 && p->chardev) {
        struct chardev_frontend fe = {
            .can_receive = port_can_receive,
            .receive = port_receive,
            .output_space = port_output_space,
            .opaque = sp,
        };
        chardev_set_frontend(p->chardev, &fe);
        if (dev->ctx->main_loop)
            r = chardev_attach_input(p->chardev, dev->ctx->main_loop, err);
    }
    return r;
}

static void serial_port_reset(struct device *dev)
{
    struct serial_port *sp = dev->state;
    serial_reset(sp->uart);
}

/* Wider accesses are split into byte accesses of consecutive registers, as on the ISA bus. */
static void serial_port_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    struct serial_port *sp = dev->state;
    uint8_t *p = data;
    for (unsigned i = 0; i < size; i++)
        p[i] = serial_read(sp->uart, (unsigned)offset + i);
}

static void serial_port_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    struct serial_port *sp = dev->state;
    const uint8_t *p = data;
    for (unsigned i = 0; i < size; i++)
        serial_write(sp->uart, (unsigned)offset + i, p[i]);
}

static void serial_port_teardown(struct device *dev)
{
    struct serial_port *sp = dev->state;
    if (!sp)
        return;
    if (sp->p->chardev) /* no more callbacks into this device */
        chardev_set_frontend(sp->p->chardev, &(struct chardev_frontend){0});
    serial_destroy(sp->uart);
    free(sp);
}

static int serial_port_save(struct device *dev, struct state_writer *w, struct wisp_err *err)
{
    struct serial_port *sp = dev->state;
    serial_save(sp->uart, w);
    return 0;
}

static int serial_port_load(struct device *dev, struct state_reader *r, struct wisp_err *err)
{
    struct serial_port *sp = dev->state;
    int ret = serial_load(sp->uart, r, err);
    return ret < 0 ? wisp_err_wrap(err, "%s", dev->name) : 0;
}

struct serial *serial_port_model(struct device *dev)
{
    struct serial_port *sp = dev->state;
    return sp ? sp->uart : NULL;
}

const struct device_ops serial_port_device_ops = {
    .type = "serial",
    .realize = serial_port_realize,
    .reset = serial_port_reset,
    .pio_in = serial_port_in,
    .pio_out = serial_port_out,
    .teardown = serial_port_teardown,
    .save = serial_port_save,
    .load = serial_port_load,
};
