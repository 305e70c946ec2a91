/* Unit tests of the machine's device table on a port bus, without KVM: the ports that end the
 * VM (with which status), what the legacy ports read, COM1 output and its IRQ line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "arch/x86/pc.h"
#include "bus/bus.h"
#include "common/chardev.h"
#include "common/statebuf.h"
#include "devices/device.h"
#include "devices/legacy.h"
#include "devices/resources.h"
#include "vmm/machine.h"

struct machine_fake {
    struct bus pio, mmio;
    struct device_resources res;
    struct device_list devs;
    struct machine_legacy legacy;
    struct device_ctx ctx;
    struct chardev *console;
    int stops, last_status;
    int irq_gsi, irq_level;
    int pipe_fds[2];
};

static void fake_set_irq(void *opaque, unsigned gsi, int level)
{
    struct machine_fake *f = opaque;
    f->irq_gsi = (int)gsi;
    f->irq_level = level;
}

static void fake_stop(void *opaque, int status, const char *why)
{
    struct machine_fake *f = opaque;
    f->stops++;
    f->last_status = status;
}

static int setup(void **state)
{
    static struct machine_fake f;
    memset(&f, 0, sizeof(f));
    f.irq_gsi = -1;
    if (pipe(f.pipe_fds) < 0)
        return -1;
    bus_init(&f.pio, BUS_PIO);
    bus_init(&f.mmio, BUS_MMIO);
    static const uint8_t gsis[] = PC_DEVICE_GSIS;
    resources_init(&f.res, PC_DEVICE_MMIO_BASE, PC_DEVICE_MMIO_END, gsis, sizeof(gsis));
    f.ctx = (struct device_ctx){.pio = &f.pio,
                                .mmio = &f.mmio,
                                .res = &f.res,
                                .set_irq = fake_set_irq,
                                .request_stop = fake_stop,
                                .opaque = &f,
                                .launch_ns = -1};
    struct wisp_err err = {0};
    char out_path[64];
    snprintf(out_path, sizeof(out_path), "/proc/self/fd/%d", f.pipe_fds[1]);
    if (chardev_open(&f.console, CHARDEV_FILE, out_path, "--serial", &err) < 0 ||
        machine_add_legacy_devices(&f.devs, &f.ctx, &f.legacy, f.console, false, &err) < 0 ||
        device_list_realize(&f.devs, &err) < 0) {
        print_error("%s\n", err.msg);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct machine_fake *f = *state;
    device_list_destroy(&f->devs);
    chardev_close(f->console);
    resources_destroy(&f->res);
    bus_destroy(&f->pio);
    bus_destroy(&f->mmio);
    close(f->pipe_fds[0]);
    close(f->pipe_fds[1]);
    return 0;
}

static void outb(struct machine_fake *f, uint16_t port, uint8_t v)
{
    bus_write(&f->pio, port, &v, 1);
}

static uint8_t inb(struct machine_fake *f, uint16_t port)
{
    uint8_t v;
    bus_read(&f->pio, port, &v, 1);
    return v;
}

static void test_ports_that_end_the_vm(void **state)
{
    struct machine_fake *f = *state;
    /* writes that mean nothing */
    outb(f, PORT_I8042_CMD, 0xd1);
    outb(f, PORT_ACPI_RESET, 0x0e);
    outb(f, PORT_ACPI_SLEEP_CTL, 5 << 2); /* SLP_TYP without SLP_EN */
    outb(f, PORT_PCI_RESET, 0x02);        /* SYS_RST alone selects, does not reset */
    outb(f, 0x80, 0x55);
    assert_int_equal(f->stops, 0);
    outb(f, PORT_I8042_CMD, 0xfe);
    assert_int_equal(f->stops, 1);
    assert_int_equal(f->last_status, 0);
    outb(f, PORT_ACPI_RESET, ACPI_PM_RESET_VALUE);
    assert_int_equal(f->stops, 2);
    outb(f, PORT_ACPI_SLEEP_CTL, 0x20 | (5 << 2));
    assert_int_equal(f->stops, 3);
    outb(f, PORT_PCI_RESET, 0x06);
    assert_int_equal(f->stops, 4);
    assert_int_equal(f->last_status, 0);
    uint32_t v = 0x1234562a; /* a 32-bit write: status is the low byte */
    assert_true(bus_write(&f->pio, PORT_TEST_EXIT, &v, 4));
    assert_int_equal(f->stops, 5);
    assert_int_equal(f->last_status, 0x2a);
}

static void test_port_reads(void **state)
{
    struct machine_fake *f = *state;
    assert_int_equal(inb(f, PORT_I8042_CMD), 0x14); /* SYS, not key-locked, buffer empty */
    assert_int_equal(inb(f, PORT_I8042_DATA), 0);
    assert_int_equal(inb(f, 0x62), 0xff);
    assert_int_equal(inb(f, PORT_ACPI_SLEEP_STS), 0);
    assert_int_equal(inb(f, 0x80), 0xff);
    uint16_t w;
    assert_false(bus_read(&f->pio, 0x1234, &w, 2)); /* nobody's: all ones */
    assert_int_equal(w, 0xffff);
    /* the table's ranges do not overlap, and a device on a taken port is refused */
    struct port_params p = {.base = PORT_COM1 + 7};
    struct device *extra = NULL;
    struct wisp_err err = {0};
    assert_int_equal(
        device_list_add(&f->devs, &io_delay_device_ops, "extra", &p, &f->ctx, &extra, &err), 0);
    assert_int_equal(device_list_realize(&f->devs, &err), -EEXIST);
    assert_non_null(strstr(err.msg, "extra: port range 0x3ff-0x3ff overlaps serial0"));
    /* a name is unique */
    assert_int_equal(
        device_list_add(&f->devs, &io_delay_device_ops, "serial0", &p, &f->ctx, NULL, &err),
        -EEXIST);
}

static void test_com1_output_and_irq4(void **state)
{
    struct machine_fake *f = *state;
    outb(f, PORT_COM1, 'o');
    outb(f, PORT_COM1, 'k');
    char buf[4] = {0};
    assert_int_equal(read(f->pipe_fds[0], buf, sizeof(buf)), 2);
    assert_string_equal(buf, "ok");
    outb(f, PORT_COM1 + 4, 0x08); /* MCR.OUT2 */
    outb(f, PORT_COM1 + 1, 0x02); /* IER.ETBEI */
    assert_int_equal(f->irq_gsi, COM1_IRQ);
    assert_int_equal(f->irq_level, 1);
    assert_int_equal(inb(f, PORT_COM1 + 2), 0x02); /* IIR: THRE, cleared by this read */
    assert_int_equal(f->irq_level, 0);
    device_list_reset(&f->devs);
    assert_int_equal(inb(f, PORT_COM1 + 4), 0);
}

/* The i8042's snapshot state: CTR, pending keyboard parameter and the FIFO survive a save, a
 * reset and a load; a state the device cannot hold is refused and changes nothing. */
static void test_i8042_state(void **state)
{
    struct machine_fake *f = *state;
    struct device *dev = device_list_find(&f->devs, "i8042");
    assert_non_null(dev);
    assert_true(dev->ops->save_optional); /* a DEVX section: older snapshots lack it */
    outb(f, PORT_I8042_CMD, 0x60);
    outb(f, PORT_I8042_DATA, 0x05); /* CTR: no translation */
    outb(f, PORT_I8042_DATA, 0xf0); /* scancode set: its parameter pending */
    struct wisp_err err = {0};
    assert_int_equal(i8042_send_ctrl_alt_del(dev, &err), 0);
    struct state_writer w;
    state_writer_init(&w);
    assert_int_equal(dev->ops->save(dev, &w, &err), 0);
    dev->ops->reset(dev);
    assert_int_equal(inb(f, PORT_I8042_CMD), 0x14); /* empty again */
    struct state_reader r;
    state_reader_init(&r, w.buf, w.len);
    assert_int_equal(dev->ops->load(dev, &r, &err), 0);
    assert_int_equal(state_reader_done(&r, "i8042", &err), 0);
    const uint8_t want[] = {0xfa, 0x14, 0x11, 0xe0, 0x71};
    for (unsigned i = 0; i < sizeof(want); i++) {
        assert_int_equal(inb(f, PORT_I8042_CMD) & 1, 1);
        assert_int_equal(inb(f, PORT_I8042_DATA), want[i]);
    }
    assert_int_equal(inb(f, PORT_I8042_CMD) & 1, 0);
    outb(f, PORT_I8042_DATA, 0x00); /* the pending 0xf0's parameter: ask */
    assert_int_equal(inb(f, PORT_I8042_DATA), 0xfa);
    assert_int_equal(inb(f, PORT_I8042_DATA), 0x02);
    outb(f, PORT_I8042_CMD, 0x20);
    assert_int_equal(inb(f, PORT_I8042_DATA), 0x05);
    /* byte 4 is the FIFO's count, 17 > 16; byte 2 a pending command that takes no data */
    for (unsigned bad = 0; bad < 2; bad++) {
        uint8_t copy[64];
        assert_true(w.len <= sizeof(copy));
        memcpy(copy, w.buf, w.len);
        copy[bad ? 2 : 4] = bad ? 0x20 : 17;
        state_reader_init(&r, copy, w.len);
        assert_int_equal(dev->ops->load(dev, &r, &err), -EINVAL);
        assert_non_null(strstr(err.msg, bad ? "pending controller command" : "FIFO"));
        outb(f, PORT_I8042_CMD, 0x20);
        assert_int_equal(inb(f, PORT_I8042_DATA), 0x05); /* unchanged */
    }
    state_writer_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ports_that_end_the_vm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_i8042_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_com1_output_and_irq4, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
