/* Device instances: creation, realize/reset/teardown in order, and their bus ranges. */
#include "devices/device.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"

uint64_t device_access_value(const void *data, unsigned size)
{
    uint64_t v = 0;
    memcpy(&v, data, size < 8 ? size : 8); /* x86 is little-endian */
    return v;
}

static void dev_pio_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
    struct device *dev = opaque;
    dev->ops->pio_in(dev, offset, data, size);
}

static void dev_pio_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
    struct device *dev = opaque;
    dev->ops->pio_out(dev, offset, data, size);
}

static void dev_mmio_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
    struct device *dev = opaque;
    dev->ops->mmio_read(dev, offset, data, size);
}

static void dev_mmio_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
    struct device *dev = opaque;
    dev->ops->mmio_write(dev, offset, data, size);
}

static const struct bus_ops dev_pio_ops = {.read = dev_pio_read, .write = dev_pio_write};
static const struct bus_ops dev_pio_ro_ops = {.read = dev_pio_read};
static const struct bus_ops dev_pio_wo_ops = {.write = dev_pio_write};
static const struct bus_ops dev_mmio_ops = {.read = dev_mmio_read, .write = dev_mmio_write};

int device_register_pio(struct device *dev, uint64_t base, uint64_t len, struct wisp_err *err)
{
    const struct bus_ops *ops = dev->ops->pio_in && dev->ops->pio_out ? &dev_pio_ops
                                : dev->ops->pio_in                    ? &dev_pio_ro_ops
                                                                      : &dev_pio_wo_ops;
    return bus_register(dev->ctx->pio, base, len, dev->name, ops, dev, err);
}

int device_register_mmio(struct device *dev, uint64_t base, uint64_t len, struct wisp_err *err)
{
    return bus_register(dev->ctx->mmio, base, len, dev->name, &dev_mmio_ops, dev, err);
}

int device_list_add(struct device_list *l, const struct device_ops *ops, const char *name,
                    const void *params, const struct device_ctx *ctx, struct device **out,
                    struct wisp_err *err)
{
    if (strlen(name) >= sizeof(((struct device *)0)->name))
        return wisp_err_set(err, EINVAL, "device name '%s' is too long (at most %zu characters)",
                            name, sizeof(((struct device *)0)->name) - 1);
    if (device_list_find(l, name))
        return wisp_err_set(err, EEXIST, "two devices are named '%s'", name);
    if (l->nr == l->cap) {
        unsigned cap = l->cap ? l->cap * 2 : 16;
        struct device **items = realloc(l->items, cap * sizeof(*items));
        if (!items)
            return wisp_err_set(err, ENOMEM, "out of memory for device %s", name);
        l->items = items;
        l->cap = cap;
    }
    struct device *dev = calloc(1, sizeof(*dev));
    if (!dev)
        return wisp_err_set(err, ENOMEM, "out of memory for device %s", name);
    dev->ops = ops;
    dev->ctx = ctx;
    dev->params = params;
    snprintf(dev->name, sizeof(dev->name), "%s", name);
    l->items[l->nr++] = dev;
    if (out)
        *out = dev;
    return 0;
}

static void device_teardown(struct device *dev)
{
    if (dev->ops->teardown)
        dev->ops->teardown(dev);
    dev->state = NULL;
    dev->realized = false;
}

int device_list_realize(struct device_list *l, struct wisp_err *err)
{
    for (unsigned i = 0; i < l->nr; i++) {
        struct device *dev = l->items[i];
        if (dev->realized)
            continue;
        int r = dev->ops->realize ? dev->ops->realize(dev, err) : 0;
        if (r < 0) {
            device_teardown(dev); /* copes with the partial realize */
            for (unsigned j = i; j-- > 0;)
                if (l->items[j]->realized)
                    device_teardown(l->items[j]);
            return err && strncmp(err->msg, dev->name, strlen(dev->name))
                       ? wisp_err_wrap(err, "%s", dev->name)
                       : r;
        }
        dev->realized = true;
    }
    return 0;
}

void device_list_reset(struct device_list *l)
{
    for (unsigned i = 0; i < l->nr; i++)
        if (l->items[i]->realized && l->items[i]->ops->reset)
            l->items[i]->ops->reset(l->items[i]);
}

static void device_list_resume_below(struct device_list *l, unsigned end)
{
    for (unsigned i = end; i-- > 0;)
        if (l->items[i]->realized && l->items[i]->ops->resume)
            l->items[i]->ops->resume(l->items[i]);
}

int device_list_quiesce(struct device_list *l, struct wisp_err *err)
{
    for (unsigned i = 0; i < l->nr; i++) {
        struct device *dev = l->items[i];
        int r = dev->realized && dev->ops->quiesce ? dev->ops->quiesce(dev, err) : 0;
        if (r < 0) {
            device_list_resume_below(l, i);
            return r;
        }
    }
    return 0;
}

void device_list_resume(struct device_list *l)
{
    device_list_resume_below(l, l->nr);
}

struct device *device_list_find(const struct device_list *l, const char *name)
{
    for (unsigned i = 0; i < l->nr; i++)
        if (!strcmp(l->items[i]->name, name))
            return l->items[i];
    return NULL;
}

void device_list_destroy(struct device_list *l)
{
    for (unsigned i = l->nr; i-- > 0;) {
        if (l->items[i]->realized)
            device_teardown(l->items[i]);
        free(l->items[i]);
    }
    free(l->items);
    *l = (struct device_list){0};
}
