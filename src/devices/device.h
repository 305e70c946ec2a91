/* The device model: a const table of operations per device type, any number of instances of a
 * type, each with its own parameters, and what the machine offers them (buses, the VM, the
 * resource allocator, the event loop). */
#ifndef WISP_DEVICES_DEVICE_H
#define WISP_DEVICES_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/err.h"

struct bus;
struct device;
struct device_resources;
struct evloop;
struct guest_mem;
struct kvm_ioeventfd_spec;
struct state_reader;
struct state_writer;
struct vm;

/*
 * What the machine offers every device. Built once by the machine before any device is
 * realized; devices keep a pointer to it. Callbacks are thread-safe.
 */
struct device_ctx {
    struct bus *pio;              /* register port ranges here (device_register_pio) */
    struct bus *mmio;             /* register MMIO ranges here (device_register_mmio) */
    struct vm *vm;                /* the KVM VM; NULL in unit tests */
    const struct guest_mem *mem;  /* guest RAM (every device access goes through gpa_to_hva) */
    struct device_resources *res; /* MMIO windows and interrupt lines (devices/resources.h) */
    struct evloop *main_loop;     /* the machine's event loop (main thread) */
    /* Drives an interrupt line (GSI) to level 0/1 (KVM_IRQ_LINE on the in-kernel irqchip). */
    void (*set_irq)(void *opaque, unsigned gsi, int level);
    /* Ends the VM: the VMM exits with `status` (the first request wins). `why` is logged. */
    void (*request_stop)(void *opaque, int status, const char *why);
    /* Connects an eventfd to a guest write (ioeventfd) or to an interrupt line (irqfd; each
     * write pulses it). The machine does it with KVM; the device test protocol watches the
     * fds itself instead. */
    int (*attach_ioeventfd)(void *opaque, const struct kvm_ioeventfd_spec *spec, int fd,
                            bool assign, struct wisp_err *err);
    int (*attach_irqfd)(void *opaque, unsigned gsi, int fd, bool assign, struct wisp_err *err);
    void *opaque;          /* passed to the callbacks */
    bool debug;            /* devices may log more */
    struct timespec start; /* CLOCK_MONOTONIC at the top of main() */
    int64_t launch_ns;     /* launcher's CLOCK_MONOTONIC (WISP_LAUNCH_NS), or -1 */
};

/*
 * Operations of a device type. realize() reads dev->params (the type's parameter struct,
 * owned by the caller and valid for the device's life), allocates dev->state, claims its
 * resources and registers its ranges; teardown() frees what realize() made and copes with a
 * partial realize (it is also called after realize failed). The access handlers get an offset
 * relative to the base of the range they registered, little-endian `data`, `size` 1, 2, 4 or 8,
 * and run on vCPU threads without a lock held: a device whose state more than one thread
 * touches locks it itself.
 */
struct device_ops {
    const char *type; /* "serial", "virtio-blk", ... */
    int (*realize)(struct device *dev, struct wisp_err *err);
    void (*reset)(struct device *dev);
    void (*pio_in)(struct device *dev, uint64_t offset, void *data, unsigned size);
    void (*pio_out)(struct device *dev, uint64_t offset, const void *data, unsigned size);
    void (*mmio_read)(struct device *dev, uint64_t offset, void *data, unsigned size);
    void (*mmio_write)(struct device *dev, uint64_t offset, const void *data, unsigned size);
    void (*teardown)(struct device *dev);
    /*
     * Snapshots (docs/snapshot.md), all optional, on the main thread while the vCPUs are paused:
     * quiesce() stops taking new work and waits for the work in flight (a drive's requests
     * complete), so that neither guest memory nor the device's state changes until resume()
     * lets it go on; save() appends the device's state (what its params do not say) to w;
     * load(), after realize() and before any vCPU runs, restores it from r and checks it
     * against what this instance is (a drive's size, the features its backend offers).
     */
    int (*quiesce)(struct device *dev, struct wisp_err *err);
    void (*resume)(struct device *dev);
    int (*save)(struct device *dev, struct state_writer *w, struct wisp_err *err);
    int (*load)(struct device *dev, struct state_reader *r, struct wisp_err *err);
    /* The type's state came after snapshot format version 1: save() goes into an optional
     * section (DEVX) that older readers skip, and a snapshot without it leaves the device as
     * reset() does (docs/snapshot.md). */
    bool save_optional;
};

struct device {
    const struct device_ops *ops;
    const struct device_ctx *ctx;
    char name[40];      /* instance name, unique in the machine: "serial0", "blk0", a drive id */
    const void *params; /* the type's parameters (not owned) */
    void *state;        /* owned by the device */
    bool realized;
};

/* Registers [base, base + len) of the port (MMIO) bus with the device's pio (mmio) handlers. */
int device_register_pio(struct device *dev, uint64_t base, uint64_t len, struct wisp_err *err);
int device_register_mmio(struct device *dev, uint64_t base, uint64_t len, struct wisp_err *err);

/* The value of a little-endian access of `size` bytes. */
uint64_t device_access_value(const void *data, unsigned size);

/*
 * The machine's devices, in creation order (realized in that order, torn down in reverse).
 * Call order: device_list_add()* -> device_list_realize() -> ... -> device_list_destroy().
 */
struct device_list {
    struct device **items;
    unsigned nr, cap;
};

/* Adds an instance (not realized yet). `name` must be unique (-EEXIST otherwise). */
int device_list_add(struct device_list *l, const struct device_ops *ops, const char *name,
                    const void *params, const struct device_ctx *ctx, struct device **out,
                    struct wisp_err *err);
/* Realizes every instance not realized yet; on failure tears down all realized ones and
 * returns the error wrapped with the instance's name. */
int device_list_realize(struct device_list *l, struct wisp_err *err);
void device_list_reset(struct device_list *l);
struct device *device_list_find(const struct device_list *l, const char *name);
/* Quiesces every realized instance in order (device_ops.quiesce); on a failure resumes those
 * already quiesced and returns the error. device_list_resume() resumes all, in reverse. */
int device_list_quiesce(struct device_list *l, struct wisp_err *err);
void device_list_resume(struct device_list *l);
/* Tears down (reverse order) and frees every instance; safe on an empty list. */
void device_list_destroy(struct device_list *l);

#endif
