/* Port-I/O and MMIO dispatch over a sorted array of non-overlapping ranges. */
#include "bus/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bus_init(struct bus *bus, enum bus_space space)
{
    memset(bus, 0, sizeof(*bus));
    bus->space = space;
}

void bus_destroy(struct bus *bus)
{
    free(bus->ranges);
    bus->ranges = NULL;
    bus->nr = bus->cap = 0;
}

static const char *bus_space_name(const struct bus *bus)
{
    return bus->space == BUS_PIO ? "port" : "MMIO";
}

/* Index of the first range whose base is > addr (binary search). */
static unsigned bus_upper_bound(const struct bus *bus, uint64_t addr)
{
    unsigned lo = 0, hi = bus->nr;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (bus->ranges[mid].base <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const char *name,
                 const struct bus_ops *ops, void *opaque, struct wisp_err *err)
{
    if (!name)
        name = "?";
    uint64_t last;
    if (len == 0 || __builtin_add_overflow(base, len - 1, &last))
        return wisp_err_set(err, EINVAL, "%s: invalid %s range 0x%llx+0x%llx", name,
                            bus_space_name(bus), (unsigned long long)base, (unsigned long long)len);
    unsigned i = bus_upper_bound(bus, base);
    /* the range before i starts at or below base; the one at i starts above base */
    const struct bus_range *clash = NULL;
    if (i > 0 && bus->ranges[i - 1].base + (bus->ranges[i - 1].len - 1) >= base)
        clash = &bus->ranges[i - 1];
    else if (i < bus->nr && bus->ranges[i].base <= last)
        clash = &bus->ranges[i];
    if (clash)
        return wisp_err_set(err, EEXIST, "%s: %s range 0x%llx-0x%llx overlaps %s at 0x%llx-0x%llx",
                            name, bus_space_name(bus), (unsigned long long)base,
                            (unsigned long long)last, clash->name, (unsigned long long)clash->base,
                            (unsigned long long)(clash->base + clash->len - 1));
    if (bus->nr == bus->cap) {
        unsigned cap = bus->cap ? bus->cap * 2 : 8;
        struct bus_range *r = realloc(bus->ranges, cap * sizeof(*r));
        if (!r)
            return wisp_err_set(err, ENOMEM, "%s: out of memory registering a %s range", name,
                                bus_space_name(bus));
        bus->ranges = r;
        bus->cap = cap;
    }
    memmove(&bus->ranges[i + 1], &bus->ranges[i], (bus->nr - i) * sizeof(bus->ranges[0]));
    bus->ranges[i] =
        (struct bus_range){.base = base, .len = len, .name = name, .ops = ops, .opaque = opaque};
    bus->nr++;
    return 0;
}

const struct bus_range *bus_find(const struct bus *bus, uint64_t addr)
{
    unsigned i = bus_upper_bound(bus, addr);
    if (i == 0)
        return NULL;
    const struct bus_range *r = &bus->ranges[i - 1];
    return addr - r->base < r->len ? r : NULL;
}

/* The range holding all of [addr, addr + size), or NULL. */
static const struct bus_range *bus_find_access(const struct bus *bus, uint64_t addr, unsigned size)
{
    const struct bus_range *r = bus_find(bus, addr);
    if (!r || size == 0 || size > r->len - (addr - r->base))
        return NULL;
    return r;
}

bool bus_read(const struct bus *bus, uint64_t addr, void *data, unsigned size)
{
    const struct bus_range *r = bus_find_access(bus, addr, size);
    memset(data, 0xff, size);
    if (!r || !r->ops->read)
        return false;
    r->ops->read(r->opaque, addr - r->base, data, size);
    return true;
}

bool bus_write(const struct bus *bus, uint64_t addr, const void *data, unsigned size)
{
    const struct bus_range *r = bus_find_access(bus, addr, size);
    if (!r || !r->ops->write)
        return false;
    r->ops->write(r->opaque, addr - r->base, data, size);
    return true;
}
