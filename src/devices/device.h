/* The device model: a const table of operations plus per-instance state; the machine's devices. */
#ifndef WISP_DEVICES_DEVICE_H
#define WISP_DEVICES_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/err.h"

struct bus;
struct device;

/*
 * What a device may use from the machine while it is realized. Callbacks are called from vCPU
 * threads (and the console thread for serial input); they are thread-safe.
 */
struct device_ctx {
    struct bus *pio;  /* register port ranges here */
    struct bus *mmio; /* register MMIO ranges here */
    /* Drives an interrupt line (GSI) to level 0/1 (KVM_IRQ_LINE on the in-kernel PIC+IOAPIC). */
    void (*set_irq)(void *opaque, unsigned gsi, int level);
    /* Ends the VM: the VMM exits with `status` (the first request wins). `why` is logged. */
    void (*request_stop)(void *opaque, int status, const char *why);
    void *opaque; /* passed to the callbacks */

    int serial_out_fd;     /* where COM1 output goes; -1 discards it */
    bool boot_marker;      /* print boot-time markers (PORT_BOOT_MARKER) */
    bool debug;            /* log unclaimed ports once each */
    struct timespec start; /* CLOCK_MONOTONIC at the top of main() */
    int64_t launch_ns;     /* launcher's CLOCK_MONOTONIC (WISP_LAUNCH_NS), or -1 */
    /* Serial input: called after the guest frees room in the receive FIFO (may be NULL). */
    void (*rx_space)(void *opaque);
};

/*
 * Device operations. Every handler gets the device (its state is dev->state) and an offset
 * relative to the base of the range it registered. `data` is little-endian, `size` is 1, 2, 4
 * or 8. realize() allocates dev->state and registers the device's ranges on ctx->pio/mmio;
 * teardown() frees what realize() made and copes with a partial realize. The handlers are
 * called without a lock held: a device whose state is touched by more than one thread locks
 * it itself.
 */
struct device_ops {
    const char *name;
    int (*realize)(struct device *dev, const struct device_ctx *ctx, struct wisp_err *err);
    void (*reset)(struct device *dev);
    void (*pio_in)(struct device *dev, uint64_t offset, void *data, unsigned size);
    void (*pio_out)(struct device *dev, uint64_t offset, const void *data, unsigned size);
    void (*mmio_read)(struct device *dev, uint64_t offset, void *data, unsigned size);
    void (*mmio_write)(struct device *dev, uint64_t offset, const void *data, unsigned size);
    void (*teardown)(struct device *dev);
};

struct device {
    const struct device_ops *ops;
    const struct device_ctx *ctx; /* set by devices_realize() */
    void *state;                  /* owned by the device */
};

/* The legacy devices of the machine, defined in their own files. */
extern const struct device_ops serial_device_ops;      /* 8250 UART on COM1, IRQ 4 */
extern const struct device_ops i8042_device_ops;       /* reset line only */
extern const struct device_ops test_exit_device_ops;   /* PORT_TEST_EXIT */
extern const struct device_ops boot_marker_device_ops; /* PORT_BOOT_MARKER */
extern const struct device_ops acpi_pm_device_ops;     /* HW-reduced ACPI reset/sleep registers */
extern const struct device_ops pci_reset_device_ops;   /* 0xcf9 */
extern const struct device_ops io_delay_device_ops;    /* port 0x80 and friends, no-ops */

/* The machine's device set, in the order of the one table in devices.c. */
enum {
    DEV_SERIAL0,
    DEV_I8042,
    DEV_TEST_EXIT,
    DEV_BOOT_MARKER,
    DEV_ACPI_PM,
    DEV_PCI_RESET,
    DEV_IO_DELAY,
    DEV_COUNT,
};

struct devices {
    struct device dev[DEV_COUNT];
};

/* Realizes every device of the table; on failure tears down those already realized. */
int devices_realize(struct devices *devs, const struct device_ctx *ctx, struct wisp_err *err);
/* Resets every realized device. */
void devices_reset(struct devices *devs);
/* Tears down every realized device (safe on a zeroed or partially realized set). */
void devices_teardown(struct devices *devs);

/* Writes all of buf to fd, retrying on EINTR/short writes; returns 0 or -errno. */
int device_write_all(int fd, const void *buf, size_t len);

#endif
