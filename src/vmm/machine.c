/* Assembles the machine (KVM VM, RAM, devices, console, vCPUs, kernel) and runs the main loop:
 * signals, serial input, and the end of the VM. */
#include "vmm/machine.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "devices/serial.h"

void machine_note_start(struct timespec *start)
{
    clock_gettime(CLOCK_MONOTONIC, start);
}

static void machine_set_irq(void *opaque, unsigned gsi, int level)
{
    struct machine *m = opaque;
    (void)kvm_vm_irq_line(&m->vm, gsi, level);
}

static void machine_stop_cb(void *opaque, int status, const char *why)
{
    machine_request_stop(opaque, status, why);
}

static void machine_rx_space(void *opaque)
{
    struct machine *m = opaque;
    uint64_t one = 1;
    (void)!write(m->wake_fd, &one, sizeof(one));
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

static int machine_create_devices(struct machine *m, const struct timespec *start,
                                  struct wisp_err *err)
{
    bus_init(&m->pio, BUS_PIO);
    bus_init(&m->mmio, BUS_MMIO);
    int r = console_open(&m->con, m->args, err);
    if (r < 0)
        return r;
    m->ctx = (struct device_ctx){
        .pio = &m->pio,
        .mmio = &m->mmio,
        .set_irq = machine_set_irq,
        .request_stop = machine_stop_cb,
        .opaque = m,
        .serial_out_fd = m->con.out_fd,
        .boot_marker = m->args->boot_marker,
        .debug = m->args->debug,
        .start = *start,
        .launch_ns = launch_ns_from_env(),
        .rx_space = machine_rx_space,
    };
    return devices_realize(&m->devs, &m->ctx, err);
}

/* Blocks SIGINT/SIGTERM (inherited by the vCPU threads) and reads them through a signalfd,
 * so the main loop ends the VM cleanly. SIGPIPE: a closed console reader is not fatal. */
static int machine_setup_signals(struct machine *m, struct wisp_err *err)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    m->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (m->signal_fd < 0)
        return wisp_err_sys(err, errno, "signalfd");
    m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->wake_fd < 0)
        return wisp_err_sys(err, errno, "eventfd");
    return 0;
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

static int machine_load_kernel(struct machine *m, struct x86_boot_entry *entry,
                               struct wisp_err *err)
{
    struct x86_boot_params p = {
        .kernel_path = m->args->kernel,
        .initrd_path = m->args->initrd,
        .cmdline = m->args->cmdline,
        .nr_cpus = m->nr_vcpus,
    };
    return x86_boot_load(&m->vm.mem, &p, entry, err);
}

static void machine_init_fields(struct machine *m, const struct vmm_args *args, struct kvm *kvm)
{
    memset(m, 0, sizeof(*m));
    m->args = args;
    m->kvm = *kvm; /* moved: the caller's copy no longer owns anything */
    kvm->fd = -1;
    kvm->cpuid = NULL;
    kvm->msr_list = NULL;
    m->vm.fd = m->wake_fd = m->signal_fd = -1;
    m->con.out_fd = m->con.in_fd = -1;
    m->nr_vcpus = args->cpus;
    pthread_mutex_init(&m->start_lock, NULL);
    pthread_cond_init(&m->start_cond, NULL);
    atomic_init(&m->stopping, false);
    atomic_init(&m->stop_status, -1);
}

int machine_create(struct machine *m, const struct vmm_args *args, struct kvm *kvm,
                   const struct timespec *start, struct wisp_err *err)
{
    machine_init_fields(m, args, kvm);
    int r = machine_setup_signals(m, err);
    if (r == 0)
        r = kvm_vm_create(&m->vm, &m->kvm, err);
    if (r == 0 && m->nr_vcpus > 255)
        r = kvm_vm_enable_x2apic_ids(&m->vm, err);
    if (r == 0)
        r = kvm_vm_map_memory(&m->vm, args->mem_bytes, err);
    /* Register RAM before the irqchip exists: with the irqchip (and its IOAPIC/PIT I/O devices)
     * in place, each memory-slot update waits for more SRCU grace periods; measured in
     * bench/launch, this order roughly halves the kernel's share of launch time under load. */
    if (r == 0)
        r = kvm_vm_register_memory(&m->vm, err);
    if (r == 0 && args->debug && !(m->port_logged = calloc(0x10000 / 8, 1)))
        r = wisp_err_set(err, ENOMEM, "out of memory");
    if (r == 0 && !(m->vcpus = calloc(m->nr_vcpus, sizeof(*m->vcpus))))
        r = wisp_err_set(err, ENOMEM, "out of memory for %u vCPUs", m->nr_vcpus);
    /* vCPU threads start now and create their vCPUs as soon as the irqchip exists, while this
     * thread creates the irqchip and loads the kernel */
    if (r == 0)
        r = vcpu_threads_start(m, err);
    if (r == 0)
        r = kvm_vm_create_irqchip(&m->vm, err);
    if (r == 0)
        machine_set_chips_ready(m);
    if (r == 0)
        r = machine_create_devices(m, start, err);
    struct x86_boot_entry entry;
    if (r == 0)
        r = machine_load_kernel(m, &entry, err);
    if (r < 0)
        vcpu_threads_stop(m); /* aborts threads waiting for the irqchip */
    if (r == 0) {
        struct wisp_err vcpu_err = {0};
        int rv = machine_wait_vcpus_ready(m, &vcpu_err);
        if (r == 0 && rv < 0) {
            r = rv;
            if (err)
                *err = vcpu_err;
        }
    }
    if (r == 0)
        r = x86_boot_set_vcpu_regs(m->vcpus[0].vcpu.fd, &entry, err);
    if (r < 0)
        machine_destroy(m);
    return r;
}

/* Moves what stdin has into the UART's receive FIFO, as much as it has room for. */
static void machine_feed_serial(struct machine *m)
{
    struct serial *s = m->devs.dev[DEV_SERIAL0].state;
    uint8_t buf[UART_FIFO_SIZE];
    size_t room = serial_rx_room(s);
    if (room == 0)
        return;
    ssize_t n = read(m->con.in_fd, buf, room < sizeof(buf) ? room : sizeof(buf));
    if (n > 0)
        serial_receive(s, buf, (size_t)n);
    else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        m->con.in_fd = -1; /* end of input: stop polling it */
}

static void machine_start_vcpus(struct machine *m)
{
    pthread_mutex_lock(&m->start_lock);
    m->go = true;
    pthread_cond_broadcast(&m->start_cond);
    pthread_mutex_unlock(&m->start_lock);
}

int machine_run(struct machine *m, struct wisp_err *err)
{
    machine_start_vcpus(m);
    while (!atomic_load(&m->stopping)) {
        struct pollfd fds[3] = {
            {.fd = m->signal_fd, .events = POLLIN},
            {.fd = m->wake_fd, .events = POLLIN},
            {.fd = -1, .events = POLLIN},
        };
        struct serial *s = m->devs.dev[DEV_SERIAL0].state;
        if (m->con.in_fd >= 0 && serial_rx_room(s) > 0)
            fds[2].fd = m->con.in_fd;
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            machine_request_stop(m, 1, "poll failed");
            break;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(m->signal_fd, &si, sizeof(si)) == sizeof(si))
                machine_request_stop(m, 0, si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        }
        if (fds[1].revents & POLLIN) {
            uint64_t v;
            (void)!read(m->wake_fd, &v, sizeof(v));
        }
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR))
            machine_feed_serial(m);
    }
    vcpu_threads_stop(m);
    int status = atomic_load(&m->stop_status);
    (void)err;
    return status < 0 ? 0 : status;
}

void machine_destroy(struct machine *m)
{
    vcpu_threads_stop(m);
    devices_teardown(&m->devs);
    bus_destroy(&m->pio);
    bus_destroy(&m->mmio);
    console_close(&m->con);
    kvm_vm_destroy(&m->vm);
    kvm_close(&m->kvm);
    free(m->vcpus);
    m->vcpus = NULL;
    free(m->port_logged);
    m->port_logged = NULL;
    if (m->wake_fd >= 0)
        close(m->wake_fd);
    if (m->signal_fd >= 0)
        close(m->signal_fd);
    m->wake_fd = m->signal_fd = -1;
    pthread_cond_destroy(&m->start_cond);
    pthread_mutex_destroy(&m->start_lock);
}

/* The teardown helper: waits for the VMM to exit (EOF on the pipe), then exits itself, which
 * drops the last references to the VM and the shared address space. It only makes syscalls:
 * it shares the VMM's memory and thread pointer. */
static int machine_teardown_child(void *opaque)
{
    int *pipe_fds = opaque;
    char c;
    syscall(SYS_close, pipe_fds[1]);
    syscall(SYS_close_range, 0, 2, 0); /* let whoever reads our stdout/stderr see EOF */
    while (syscall(SYS_read, pipe_fds[0], &c, 1) < 0)
        ;
    return 0;
}

int machine_teardown_async(struct machine *m)
{
    console_close(&m->con); /* the terminal is restored now, not by the helper */
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) < 0)
        return -errno;
    size_t stack_size = 16 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        return -errno;
    }
    /* CLONE_VM: no copy of the address space; the fd table is copied, so the helper holds its
     * own references to /dev/kvm, the VM and RAM. */
    pid_t pid =
        clone(machine_teardown_child, (char *)stack + stack_size, CLONE_VM | SIGCHLD, pipe_fds);
    if (pid < 0) {
        int e = errno;
        munmap(stack, stack_size);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        return -e;
    }
    close(pipe_fds[0]); /* the write end stays open until this process exits */
    return 0;
}
