/* Assembles the machine (KVM VM, RAM, resources, devices, console, vCPUs, kernel) and runs the
 * main thread's event loop until the VM ends. */
#include "vmm/machine.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/x86/pc.h"
#include "common/chardev.h"
#include "common/evloop.h"
#include "common/log.h"
#include "vmm/qtest.h"

/* How long the end of the VM waits for console output to reach a slow reader. */
#define CONSOLE_FLUSH_MS 500

void machine_note_start(struct timespec *start)
{
    clock_gettime(CLOCK_MONOTONIC, start);
}

static void machine_set_irq(void *opaque, unsigned gsi, int level)
{
    struct machine *m = opaque;
    if (m->qtest)
        qtest_set_irq(m->qtest, gsi, level);
    (void)kvm_vm_irq_line(&m->vm, gsi, level);
}

static void machine_stop_cb(void *opaque, int status, const char *why)
{
    machine_request_stop(opaque, status, why);
}

static int machine_attach_ioeventfd(void *opaque, const struct kvm_ioeventfd_spec *spec, int fd,
                                    bool assign, struct wisp_err *err)
{
    struct machine *m = opaque;
    if (m->qtest) /* no vCPU writes; the transport signals QueueNotify writes itself */
        return 0;
    if (!assign) /* see machine_attach_irqfd */
        return 0;
    return kvm_vm_ioeventfd(&m->vm, spec, fd, assign, err);
}

static int machine_attach_irqfd(void *opaque, unsigned gsi, int fd, bool assign,
                                struct wisp_err *err)
{
    struct machine *m = opaque;
    if (m->qtest) /* the test protocol watches the interrupt eventfds itself */
        return qtest_attach_irqfd(m->qtest, gsi, fd, assign, err);
    /* Devices are torn down only when the VM itself goes: KVM drops their ioeventfds and irqfds
     * with it (an irqfd whose eventfd is closed shuts down by itself), and deassigning each
     * first waits for a KVM synchronisation (~2 ms each here: +5.8 ms at the end of a VM with
     * a drive and a NIC, bench/launch). */
    if (!assign)
        return 0;
    return kvm_vm_irqfd(&m->vm, gsi, fd, -1, assign, err);
}

static int64_t launch_ns_from_env(void)
{
    const char *s = getenv("WISP_LAUNCH_NS");
    if (!s || !*s)
        return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    return *end || v < 0 ? -1 : (int64_t)v;
}

/* Guest-physical space for memory-like devices (virtio-pmem): from the first memory section
 * (128 MiB) boundary above RAM and the 32-bit MMIO hole, to the end of the guest's physical
 * addresses (CPUID 0x80000008 EAX[7:0], as the vCPUs get it; 36 bits without the leaf). */
static void machine_set_high_space(struct machine *m)
{
    uint64_t top = GUEST_MMIO_HOLE_END;
    for (unsigned i = 0; i < m->vm.mem.nr_regions; i++) {
        const struct guest_mem_region *rg = &m->vm.mem.regions[i];
        if (rg->gpa + rg->size > top)
            top = rg->gpa + rg->size;
    }
    const struct kvm_cpuid_entry2 *e =
        m->kvm.cpuid ? kvm_find_cpuid(m->kvm.cpuid, 0x80000008, 0) : NULL;
    unsigned bits = e && (e->eax & 0xff) >= 36 && (e->eax & 0xff) <= 52 ? e->eax & 0xff : 36;
    uint64_t start = (top + PC_HIGH_DEVICE_ALIGN - 1) & ~(PC_HIGH_DEVICE_ALIGN - 1);
    resources_set_high(&m->res, start, 1ull << bits);
}

static int machine_create_devices(struct machine *m, const struct timespec *start,
                                  struct wisp_err *err)
{
    static const uint8_t device_gsis[] = PC_DEVICE_GSIS;
    bus_init(&m->pio, BUS_PIO);
    bus_init(&m->mmio, BUS_MMIO);
    resources_init(&m->res, PC_DEVICE_MMIO_BASE, PC_DEVICE_MMIO_END, device_gsis,
                   sizeof(device_gsis));
    machine_set_high_space(m);
    m->ctx = (struct device_ctx){
        .pio = &m->pio,
        .mmio = &m->mmio,
        .vm = &m->vm,
        .mem = &m->vm.mem,
        .res = &m->res,
        .main_loop = m->loop,
        .set_irq = machine_set_irq,
        .request_stop = machine_stop_cb,
        .attach_ioeventfd = machine_attach_ioeventfd,
        .attach_irqfd = machine_attach_irqfd,
        .opaque = m,
        .debug = m->args->debug,
        .start = *start,
        .launch_ns = launch_ns_from_env(),
    };
    int r = machine_add_devices(m, err);
    return r < 0 ? r : device_list_realize(&m->devices, err);
}

/* Waits until every vCPU thread finished its initialisation; returns the first failure. */
static int machine_wait_vcpus_ready(struct machine *m, struct wisp_err *err)
{
    pthread_mutex_lock(&m->start_lock);
    while (m->nr_ready < m->nr_started)
        pthread_cond_wait(&m->start_cond, &m->start_lock);
    pthread_mutex_unlock(&m->start_lock);
    for (unsigned i = 0; i < m->nr_started; i++)
        if (m->vcpus[i].init_result < 0) {
            if (err)
                *err = m->vcpus[i].err;
            return m->vcpus[i].init_result;
        }
    return 0;
}

static void machine_set_chips_ready(struct machine *m)
{
    pthread_mutex_lock(&m->start_lock);
    m->chips_ready = true;
    pthread_cond_broadcast(&m->start_cond);
    pthread_mutex_unlock(&m->start_lock);
}

/* Where kernel parameters the VMM adds go: before " -- " (what follows it is init's), else at
 * the end. */
static size_t cmdline_insert_point(const char *user)
{
    if (!strncmp(user, "-- ", 3) || !strcmp(user, "--"))
        return 0;
    const char *dd = strstr(user, " -- ");
    if (!dd && strlen(user) >= 3 && !strcmp(user + strlen(user) - 3, " --"))
        dd = user + strlen(user) - 3;
    return dd ? (size_t)(dd - user) : strlen(user);
}

/* The kernel command line: the user's, with (--cmdline-devices on) one
 * "virtio_mmio.device=4K@BASE:IRQ" per virtio device, as Firecracker passes them, placed before
 * the user's "--" so that the kernel, not init, reads them. */
static char *machine_cmdline(const struct machine *m, struct wisp_err *err)
{
    const char *user = m->args->cmdline ? m->args->cmdline : "";
    size_t len = strlen(user) + 2 + (m->args->cmdline_devices ? m->res.nr_virtio * 64 : 0);
    char *s = malloc(len);
    if (!s) {
        wisp_err_set(err, ENOMEM, "out of memory for the kernel command line");
        return NULL;
    }
    size_t at = cmdline_insert_point(user);
    size_t n = (size_t)snprintf(s, len, "%.*s", (int)at, user);
    for (unsigned i = 0; m->args->cmdline_devices && i < m->res.nr_virtio; i++) {
        const struct resource_virtio_mmio *v = &m->res.virtio[i];
        n += (size_t)snprintf(s + n, len - n, "%svirtio_mmio.device=%lluK@0x%llx:%u", n ? " " : "",
                              (unsigned long long)(v->size >> 10), (unsigned long long)v->base,
                              v->gsi);
    }
    snprintf(s + n, len - n, "%s%s", n && at == 0 && user[0] ? " " : "", user + at);
    return s;
}

static int machine_load_kernel(struct machine *m, struct x86_boot_entry *entry,
                               struct wisp_err *err)
{
    struct x86_boot_mmio_device *devs = calloc(m->res.nr_virtio + 1, sizeof(*devs));
    char *cmdline = devs ? machine_cmdline(m, err) : NULL;
    if (!cmdline) {
        free(devs);
        return devs ? -ENOMEM : wisp_err_set(err, ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < m->res.nr_virtio; i++)
        devs[i] = (struct x86_boot_mmio_device){.base = m->res.virtio[i].base,
                                                .size = m->res.virtio[i].size,
                                                .gsi = m->res.virtio[i].gsi};
    struct x86_boot_params p = {
        .kernel_path = m->args->kernel,
        .initrd_path = m->args->initrd,
        .cmdline = cmdline,
        .nr_cpus = m->nr_vcpus,
        .mmio_devices = devs,
        .nr_mmio_devices = m->res.nr_virtio,
    };
    int r = x86_boot_load(&m->vm.mem, &p, entry, err);
    free(cmdline);
    free(devs);
    return r;
}

static void machine_init_fields(struct machine *m, const struct vm_config *args,
                                const struct machine_host *h)
{
    memset(m, 0, sizeof(*m));
    m->args = args;
    m->kvm = *h->kvm; /* moved: the caller's copy no longer owns anything */
    h->kvm->fd = -1;
    h->kvm->cpuid = NULL;
    h->kvm->msr_list = NULL;
    m->console = h->console;
    m->loop = h->loop;
    m->on_end = h->on_end;
    m->end_opaque = h->opaque;
    m->vm.fd = -1;
    m->nr_vcpus = args->cpus;
    m->restore = h->restore;
    pthread_mutex_init(&m->start_lock, NULL);
    pthread_cond_init(&m->start_cond, NULL);
    atomic_init(&m->stopping, false);
    atomic_init(&m->vcpu_exit, false);
    atomic_init(&m->stop_status, -1);
}

int machine_create(struct machine *m, const struct vm_config *args, const struct machine_host *h,
                   struct wisp_err *err)
{
    machine_init_fields(m, args, h);
    const struct timespec *start = h->start;
    int r = 0;
    if (args->test_socket) /* before the devices: their irqfds go to it */
        r = qtest_create(&m->qtest, m, args->test_socket, err);
    if (r == 0)
        r = kvm_vm_create(&m->vm, &m->kvm, err);
    if (r == 0 && m->nr_vcpus > 255)
        r = kvm_vm_enable_x2apic_ids(&m->vm, err);
    if (r == 0)
        r = h->restore
                ? h->restore->map_memory(h->restore->opaque, &m->vm.mem, args->mem_bytes, err)
                : kvm_vm_map_memory(&m->vm, args->mem_bytes, &args->mem, err);
    /* diff snapshots: KVM logs the guest's writes, the VMM its own (all of RAM counts as
     * written after a boot: there is no snapshot to compare with yet) */
    m->vm.dirty_log = args->track_dirty_pages;
    if (r == 0 && args->track_dirty_pages)
        r = guest_mem_track_dirty(&m->vm.mem, !h->restore, err);
    /* Register RAM before the irqchip exists: with the irqchip (and its IOAPIC/PIT I/O devices)
     * in place, each memory-slot update waits for more SRCU grace periods; measured in
     * bench/launch, this order roughly halves the kernel's share of launch time under load. */
    if (r == 0)
        r = kvm_vm_register_memory(&m->vm, err);
    if (r == 0 && args->debug && !(m->port_logged = calloc(0x10000 / 8, 1)))
        r = wisp_err_set(err, ENOMEM, "out of memory");
    if (r == 0 && !m->qtest && !(m->vcpus = calloc(m->nr_vcpus, sizeof(*m->vcpus))))
        r = wisp_err_set(err, ENOMEM, "out of memory for %u vCPUs", m->nr_vcpus);
    /* vCPU threads start now and create their vCPUs as soon as the irqchip exists, while this
     * thread creates the irqchip and loads the kernel */
    if (r == 0 && !m->qtest)
        r = vcpu_threads_start(m, err);
    if (r == 0)
        r = kvm_vm_create_irqchip(&m->vm, err);
    if (r == 0)
        machine_set_chips_ready(m);
    if (r == 0)
        r = machine_create_devices(m, start, err);
    struct x86_boot_entry entry;
    if (r == 0 && args->kernel && !h->restore) /* optional with --test-socket */
        r = machine_load_kernel(m, &entry, err);
    if (r < 0)
        vcpu_threads_stop(m); /* aborts threads waiting for the irqchip */
    if (r == 0)
        r = machine_wait_vcpus_ready(m, err);
    if (r == 0 && !m->qtest && !h->restore)
        r = x86_boot_set_vcpu_regs(m->vcpus[0].vcpu.fd, &entry, err);
    if (r == 0 && h->restore)
        r = h->restore->restore_machine(h->restore->opaque, m, err);
    m->restore = NULL;
    if (r == 0 && m->qtest)
        r = qtest_listen(m->qtest, err);
    if (r < 0)
        machine_destroy(m);
    return r;
}

void machine_start(struct machine *m)
{
    if (m->qtest) /* no vCPUs: the test protocol drives the devices */
        return;
    pthread_mutex_lock(&m->start_lock);
    m->go = true;
    pthread_cond_broadcast(&m->start_cond);
    pthread_mutex_unlock(&m->start_lock);
}

int machine_stop(struct machine *m)
{
    vcpu_threads_stop(m);
    chardev_flush(m->console, CONSOLE_FLUSH_MS);
    int status = atomic_load(&m->stop_status);
    return status < 0 ? 0 : status;
}

void machine_destroy_devices(struct machine *m)
{
    vcpu_threads_stop(m);
    device_list_destroy(&m->devices); /* drives flush and close here (qcow2 metadata) */
    /* the test socket after the devices: they detach their eventfds from it */
    qtest_destroy(m->qtest);
    m->qtest = NULL;
    resources_destroy(&m->res);
    bus_destroy(&m->pio);
    bus_destroy(&m->mmio);
    chardev_close(m->console);
    m->console = NULL;
}

void machine_destroy(struct machine *m)
{
    machine_destroy_devices(m);
    kvm_vm_destroy(&m->vm);
    kvm_close(&m->kvm);
    free(m->vcpus);
    m->vcpus = NULL;
    free(m->port_logged);
    m->port_logged = NULL;
    pthread_cond_destroy(&m->start_cond);
    pthread_mutex_destroy(&m->start_lock);
}
