/* The legacy PC devices a wisp machine has, each in its own file, with its parameters. The
 * machine (src/vmm) chooses their ports from the platform's layout (arch/x86/pc.h). */
#ifndef WISP_DEVICES_LEGACY_H
#define WISP_DEVICES_LEGACY_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/device.h"

struct chardev;

/* 16550A UART (serial_port.c) on `base` (8 ports) with a fixed interrupt line. */
struct serial_port_params {
    uint16_t base;
    unsigned irq;
    struct chardev *chardev; /* host side; not owned */
};
extern const struct device_ops serial_port_device_ops;
/* The UART model of a realized serial port, for tests and the machine. */
struct serial *serial_port_model(struct device *dev);

/* i8042 keyboard controller and keyboard (i8042.c): data port `base`, command port `base` + 4,
 * IRQ 1; command 0xfe resets the machine. */
struct i8042_params {
    uint16_t base;
};
extern const struct device_ops i8042_device_ops;
/* Presses Ctrl-Alt-Del on the keyboard (any thread): four scancode bytes and IRQ 1. Fails
 * (the reason in err) when the guest disabled the keyboard or left too many bytes unread. */
int i8042_send_ctrl_alt_del(struct device *dev, struct wisp_err *err);

/* A single port that other ports-only devices use: test-exit (test_exit.c: a write of V ends
 * the VM with status V & 0xff), ACPI PM (acpi_pm.c: RESET_REG at base, SLEEP_CONTROL at +4,
 * SLEEP_STATUS at +5), reset control 0xcf9 (reset_cf9.c), I/O delay (io_delay.c: reads all
 * ones, writes ignored), boot marker (boot_marker.c). */
struct port_params {
    uint16_t base;
    uint16_t len; /* 0: the device's own size */
};
extern const struct device_ops test_exit_device_ops;
extern const struct device_ops acpi_pm_device_ops;
extern const struct device_ops reset_cf9_device_ops;
extern const struct device_ops io_delay_device_ops;

#define ACPI_PM_RESET_VALUE 0x0f /* what the FADT's RESET_VALUE says */

/* Boot-time marker (boot_marker.c): with `enabled`, each write of V prints "boot-marker V at
 * T ms" (T since the machine's start; also since the launch when WISP_LAUNCH_NS was set). */
struct boot_marker_params {
    uint16_t base;
    bool enabled;
};
extern const struct device_ops boot_marker_device_ops;

#endif
