/* MMIO window and GSI allocation, and the list of virtio-mmio windows handed out. */
#include "devices/resources.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void resources_init(struct device_resources *res, uint64_t mmio_base, uint64_t mmio_end,
                    const uint8_t *gsi_order, unsigned nr_gsis)
{
    memset(res, 0, sizeof(*res));
    res->mmio_base = res->mmio_next = mmio_base;
    res->mmio_end = mmio_end;
    for (unsigned i = 0; i < nr_gsis && res->nr_gsi_order < RESOURCES_MAX_GSIS; i++)
        if (gsi_order[i] < RESOURCES_MAX_GSIS)
            res->gsi_order[res->nr_gsi_order++] = gsi_order[i];
}

void resources_destroy(struct device_resources *res)
{
    free(res->virtio);
    res->virtio = NULL;
    res->nr_virtio = res->cap_virtio = 0;
}

int resources_alloc_mmio(struct device_resources *res, uint64_t size, const char *owner,
                         uint64_t *base, struct wisp_err *err)
{
    if (size < 4096 || (size & (size - 1)))
        return wisp_err_set(err, EINVAL,
                            "%s: MMIO window of %llu bytes is not a power of two "
                            ">= 4 KiB",
                            owner, (unsigned long long)size);
    uint64_t start = (res->mmio_next + size - 1) & ~(size - 1);
    if (start < res->mmio_next || start > res->mmio_end || size > res->mmio_end - start)
        return wisp_err_set(err, ENOSPC,
                            "%s: no room for a %llu KiB MMIO window in [0x%llx, 0x%llx)", owner,
                            (unsigned long long)(size >> 10), (unsigned long long)res->mmio_base,
                            (unsigned long long)res->mmio_end);
    res->mmio_next = start + size;
    *base = start;
    return 0;
}

void resources_set_high(struct device_resources *res, uint64_t start, uint64_t end)
{
    res->high_next = start;
    res->high_end = end;
}

int resources_alloc_high(struct device_resources *res, uint64_t size, uint64_t align,
                         const char *owner, uint64_t *base, struct wisp_err *err)
{
    if (size == 0 || align == 0 || (align & (align - 1)))
        return wisp_err_set(err, EINVAL, "%s: a region of %llu bytes aligned to %llu is invalid",
                            owner, (unsigned long long)size, (unsigned long long)align);
    uint64_t start, end;
    bool bad = __builtin_add_overflow(res->high_next, align - 1, &start);
    start &= ~(align - 1);
    bad = bad || __builtin_add_overflow(start, size, &end) || end > res->high_end;
    if (bad)
        return wisp_err_set(err, ENOSPC,
                            "%s: no room for %llu MiB of guest-physical space at 0x%llx (the "
                            "guest's physical addresses end at 0x%llx)",
                            owner, (unsigned long long)(size >> 20),
                            (unsigned long long)res->high_next, (unsigned long long)res->high_end);
    res->high_next = end;
    *base = start;
    return 0;
}

static void gsi_take(struct device_resources *res, unsigned gsi, const char *owner)
{
    res->gsi_used |= 1ULL << gsi;
    snprintf(res->gsi_owner[gsi], sizeof(res->gsi_owner[gsi]), "%s", owner);
}

int resources_alloc_gsi(struct device_resources *res, const char *owner, unsigned *gsi,
                        struct wisp_err *err)
{
    for (unsigned i = 0; i < res->nr_gsi_order; i++) {
        unsigned g = res->gsi_order[i];
        if (!resources_gsi_used(res, g)) {
            gsi_take(res, g, owner);
            *gsi = g;
            return 0;
        }
    }
    return wisp_err_set(err, ENOSPC,
                        "%s: no interrupt line left (the machine has %u for devices, all taken)",
                        owner, res->nr_gsi_order);
}

int resources_claim_gsi(struct device_resources *res, unsigned gsi, const char *owner,
                        struct wisp_err *err)
{
    if (gsi >= RESOURCES_MAX_GSIS)
        return wisp_err_set(err, EINVAL, "%s: GSI %u does not exist", owner, gsi);
    if (resources_gsi_used(res, gsi))
        return wisp_err_set(err, EEXIST, "%s: GSI %u is already taken by %s", owner, gsi,
                            res->gsi_owner[gsi]);
    gsi_take(res, gsi, owner);
    return 0;
}

bool resources_gsi_used(const struct device_resources *res, unsigned gsi)
{
    return gsi < RESOURCES_MAX_GSIS && (res->gsi_used >> gsi & 1);
}

int resources_add_virtio_mmio(struct device_resources *res, const char *owner, uint64_t base,
                              uint64_t size, unsigned gsi, struct wisp_err *err)
{
    if (res->nr_virtio == res->cap_virtio) {
        unsigned cap = res->cap_virtio ? res->cap_virtio * 2 : 8;
        struct resource_virtio_mmio *v = realloc(res->virtio, cap * sizeof(*v));
        if (!v)
            return wisp_err_set(err, ENOMEM, "%s: out of memory", owner);
        res->virtio = v;
        res->cap_virtio = cap;
    }
    struct resource_virtio_mmio *v = &res->virtio[res->nr_virtio++];
    snprintf(v->owner, sizeof(v->owner), "%s", owner);
    v->base = base;
    v->size = size;
    v->gsi = gsi;
    return 0;
}
