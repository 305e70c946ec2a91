/* The machine's devices: the one explicit table of device types, and the instances a machine
 * gets (the legacy PC devices always; virtio devices from the configuration). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "arch/x86/pc.h"
#include "common/chardev.h"
#include "virtio/blk.h"
#include "virtio/balloon.h"
#include "virtio/console.h"
#include "virtio/net.h"
#include "virtio/pmem.h"
#include "virtio/p9.h"
#include "virtio/rng.h"
#include "virtio/vsock.h"
#include "vmm/machine.h"

/* Every device type wisp-vmm knows, by the name used in messages and configurations. */
static const struct device_ops *const device_types[] = {
    &serial_port_device_ops,    &i8042_device_ops,       &test_exit_device_ops,
    &boot_marker_device_ops,    &acpi_pm_device_ops,     &reset_cf9_device_ops,
    &io_delay_device_ops,       &virtio_rng_device_ops,  &virtio_console_device_ops,
    &virtio_blk_device_ops,     &virtio_net_device_ops,  &virtio_vsock_device_ops,
    &virtio_balloon_device_ops, &virtio_pmem_device_ops, &virtio_9p_device_ops,
};

static const struct device_ops *device_type(const char *type)
{
    for (size_t i = 0; i < sizeof(device_types) / sizeof(device_types[0]); i++)
        if (!strcmp(device_types[i]->type, type))
            return device_types[i];
    return NULL;
}

struct adder {
    struct device_list *list;
    const struct device_ctx *ctx;
};

static int add(const struct adder *a, const char *type, const char *name, const void *params,
               struct wisp_err *err)
{
    const struct device_ops *ops = device_type(type);
    if (!ops)
        return wisp_err_set(err, EINVAL, "%s: unknown device type '%s'", name, type);
    return device_list_add(a->list, ops, name, params, a->ctx, NULL, err);
}

int machine_add_legacy_devices(struct device_list *list, const struct device_ctx *ctx,
                               struct machine_legacy *l, struct chardev *console, bool boot_marker,
                               struct wisp_err *err)
{
    const struct adder a = {.list = list, .ctx = ctx}, *m = &a;
    l->com1 = (struct serial_port_params){.base = PORT_COM1, .irq = COM1_IRQ, .chardev = console};
    l->i8042 = (struct i8042_params){.base = PORT_I8042_DATA};
    l->test_exit = (struct port_params){.base = PORT_TEST_EXIT};
    l->boot_marker = (struct boot_marker_params){.base = PORT_BOOT_MARKER, .enabled = boot_marker};
    l->acpi_pm = (struct port_params){.base = PORT_ACPI_RESET};
    l->cf9 = (struct port_params){.base = PORT_PCI_RESET};
    l->io_delay = (struct port_params){.base = PORT_IO_DELAY};
    l->io_delay_alt = (struct port_params){.base = PORT_IO_DELAY_ALT};
    int r = add(m, "serial", "serial0", &l->com1, err);
    if (r == 0)
        r = add(m, "i8042", "i8042", &l->i8042, err);
    if (r == 0)
        r = add(m, "test-exit", "test-exit", &l->test_exit, err);
    if (r == 0)
        r = add(m, "boot-marker", "boot-marker", &l->boot_marker, err);
    if (r == 0)
        r = add(m, "acpi-pm", "acpi-pm", &l->acpi_pm, err);
    if (r == 0)
        r = add(m, "cf9-reset", "cf9-reset", &l->cf9, err);
    if (r == 0)
        r = add(m, "io-delay", "io-delay", &l->io_delay, err);
    if (r == 0)
        r = add(m, "io-delay", "io-delay-alt", &l->io_delay_alt, err);
    return r;
}

/* The virtio devices the configuration asks for, in a fixed order (so their windows and
 * lines do not depend on the order of the options). */
static int add_virtio(struct machine *m, struct wisp_err *err)
{
    const struct adder a = {.list = &m->devices, .ctx = &m->ctx};
    int r = 0;
    if (m->args->rng)
        r = add(&a, "virtio-rng", "rng0", &m->args->rng_params, err);
    for (unsigned i = 0; r == 0 && i < m->args->nr_drives; i++) {
        const struct virtio_blk_params *d = &m->args->drives[i];
        char name[16];
        snprintf(name, sizeof(name), "blk%u", i);
        r = add(&a, "virtio-blk", d->id ? d->id : name, d, err);
    }
    for (unsigned i = 0; r == 0 && i < m->args->nr_nics; i++) {
        const struct virtio_net_params *nic = &m->args->nics[i];
        char name[16];
        snprintf(name, sizeof(name), "net%u", i);
        r = add(&a, "virtio-net", nic->id ? nic->id : name, nic, err);
    }
    for (unsigned i = 0; r == 0 && i < m->args->nr_pmems; i++) {
        char name[40];
        r = add(&a, "virtio-pmem", vm_pmem_name(m->args, i, name, sizeof(name)), &m->args->pmems[i],
                err);
    }
    if (r == 0 && m->args->balloon)
        r = add(&a, "virtio-balloon", "balloon0", &m->args->balloon_params, err);
    if (r == 0 && m->args->vsock)
        r = add(&a, "virtio-vsock", "vsock0", &m->args->vsock_params, err);
    if (r == 0 && m->args->console == VMM_CONSOLE_VIRTIO) {
        m->console_params = (struct virtio_console_params){.chardev = m->console};
        r = add(&a, "virtio-console", "console0", &m->console_params, err);
    }
    /* last: the windows of the devices above stay where snapshots expect them */
    for (unsigned i = 0; r == 0 && i < m->args->nr_fs; i++) {
        const struct virtio_9p_params *fs = &m->args->fs[i];
        char name[16];
        snprintf(name, sizeof(name), "fs%u", i);
        r = add(&a, "virtio-9p", fs->id ? fs->id : name, fs, err);
    }
    return r;
}

int machine_add_devices(struct machine *m, struct wisp_err *err)
{
    /* with --console virtio the console is hvc0's, and COM1 has no host side */
    struct chardev *com1 = m->args->console == VMM_CONSOLE_VIRTIO ? NULL : m->console;
    int r = machine_add_legacy_devices(&m->devices, &m->ctx, &m->legacy, com1, m->args->boot_marker,
                                       err);
    return r < 0 ? r : add_virtio(m, err);
}
