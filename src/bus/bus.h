/* Port-I/O and MMIO dispatch: a sorted table of address ranges, each owned by one device. */
#ifndef WISP_BUS_BUS_H
#define WISP_BUS_BUS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* What a range does on an access: offsets are relative to the range's base; `data` is
 * little-endian, `size` 1, 2, 4 or 8. Called on vCPU threads, without a lock: the owner
 * serialises its own state. */
struct bus_ops {
    void (*read)(void *opaque, uint64_t offset, void *data, unsigned size);
    void (*write)(void *opaque, uint64_t offset, const void *data, unsigned size);
};

/*
 * One bus per address space (port I/O, MMIO). Ranges never overlap: bus_register() refuses an
 * overlapping range with -EEXIST (kvmtool does the same). The table is sorted by base address
 * and looked up by binary search; it is built before the vCPUs start and read-only afterwards,
 * so lookups need no lock. Devices serialise their own state (see devices/device.h).
 *
 * Call order: bus_init() -> bus_register()* -> bus_pio_in()/bus_mmio_read()... -> bus_destroy().
 */
enum bus_space {
    BUS_PIO,
    BUS_MMIO,
};

struct bus_range {
    uint64_t base;
    uint64_t len;
    const char *name; /* the owner, for messages (not owned) */
    const struct bus_ops *ops;
    void *opaque;
};

struct bus {
    enum bus_space space;
    struct bus_range *ranges; /* sorted by base */
    unsigned nr, cap;
};

void bus_init(struct bus *bus, enum bus_space space);
void bus_destroy(struct bus *bus);

/* Adds [base, base + len) served by ops/opaque. -EINVAL for len 0 or a range that wraps,
 * -EEXIST if it overlaps a registered range (err names both owners), -ENOMEM. `name` and ops
 * must outlive the bus. An ops without read (or write) makes reads all ones (writes dropped). */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const char *name,
                 const struct bus_ops *ops, void *opaque, struct wisp_err *err);

/* Finds the range containing addr, or NULL. */
const struct bus_range *bus_find(const struct bus *bus, uint64_t addr);

/*
 * Dispatch of one guest access of `size` bytes (1, 2, 4 or 8) at addr, with the offset relative
 * to the device's base. An access nobody claims (or that runs past the end of a range) reads as
 * all ones and writes are dropped; the functions return false then, so the caller can log it.
 */
bool bus_read(const struct bus *bus, uint64_t addr, void *data, unsigned size);
bool bus_write(const struct bus *bus, uint64_t addr, const void *data, unsigned size);

#endif
