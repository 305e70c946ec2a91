/* The machine's resource allocator: MMIO windows and interrupt lines (GSIs) for devices, and
 * the record of what it handed out, from which the firmware tables (ACPI DSDT, MP table) and
 * the kernel command line are written, so that they describe exactly those resources. */
#ifndef WISP_DEVICES_RESOURCES_H
#define WISP_DEVICES_RESOURCES_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define RESOURCES_MAX_GSIS 64

/* A virtio-mmio window a driver finds through the firmware tables or the command line. */
struct resource_virtio_mmio {
    char owner[40];
    uint64_t base, size;
    unsigned gsi;
};

/*
 * Built by the machine before devices are realized (single-threaded: realize runs on the main
 * thread), read by the firmware-table writers afterwards.
 *   resources_init()       the MMIO window pool and which GSIs devices may get, in order
 *   resources_claim_gsi()  a fixed line (COM1's IRQ 4)
 *   resources_alloc_mmio() / resources_alloc_gsi() / resources_add_virtio_mmio()
 *   resources_destroy()
 */
struct device_resources {
    uint64_t mmio_base, mmio_end, mmio_next;
    /* guest-physical space above RAM for memory-like devices (virtio-pmem): [high_next,
     * high_end), set by resources_set_high once RAM is laid out; empty until then */
    uint64_t high_next, high_end;
    uint8_t gsi_order[RESOURCES_MAX_GSIS]; /* allocatable GSIs, in the order they are handed out */
    unsigned nr_gsi_order;
    uint64_t gsi_used; /* bit per GSI: claimed or allocated */
    char gsi_owner[RESOURCES_MAX_GSIS][40];
    struct resource_virtio_mmio *virtio;
    unsigned nr_virtio, cap_virtio;
};

void resources_init(struct device_resources *res, uint64_t mmio_base, uint64_t mmio_end,
                    const uint8_t *gsi_order, unsigned nr_gsis);
void resources_destroy(struct device_resources *res);
/* A window of `size` bytes (a power of two >= 4 KiB), aligned to its size. */
int resources_alloc_mmio(struct device_resources *res, uint64_t size, const char *owner,
                         uint64_t *base, struct wisp_err *err);
/* The next free GSI of the allocatable order; -ENOSPC names the owner and the limit. */
int resources_alloc_gsi(struct device_resources *res, const char *owner, unsigned *gsi,
                        struct wisp_err *err);
/* A fixed GSI; -EEXIST if someone has it. */
int resources_claim_gsi(struct device_resources *res, unsigned gsi, const char *owner,
                        struct wisp_err *err);
bool resources_gsi_used(const struct device_resources *res, unsigned gsi);
/* The space above RAM and the 32-bit MMIO hole that resources_alloc_high hands out. */
void resources_set_high(struct device_resources *res, uint64_t start, uint64_t end);
/* `size` bytes (> 0) of it at a multiple of `align` (a power of two), each range after the
 * previous one; overflow-checked, -ENOSPC naming the owner and the limit. */
int resources_alloc_high(struct device_resources *res, uint64_t size, uint64_t align,
                         const char *owner, uint64_t *base, struct wisp_err *err);
int resources_add_virtio_mmio(struct device_resources *res, const char *owner, uint64_t base,
                              uint64_t size, unsigned gsi, struct wisp_err *err);

#endif
