/* The wisp-vmm process: the lifecycle of its one VM, the main loop and the signals that end it,
 * and what must be opened (and checked) before the machine exists. */
#include "vmm/vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/chardev.h"
#include "common/evloop.h"
#include "common/io.h"
#include "common/log.h"
#include "net/tap.h"
#include "vmm/snapshot.h"

const char *vmm_state_name(enum vmm_state s)
{
    static const char *const names[] = {"Not started", "Running", "Paused", "Ended"};
    return (unsigned)s < 4 ? names[s] : "?";
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGINT:
        return "SIGINT";
    case SIGTERM:
        return "SIGTERM";
    case SIGHUP:
        return "SIGHUP";
    case SIGQUIT:
        return "SIGQUIT";
    }
    return "a signal";
}

static void vmm_signal(void *opaque, uint32_t events)
{
    struct vmm *v = opaque;
    struct signalfd_siginfo si;
    if (read(v->signal_fd, &si, sizeof(si)) == sizeof(si))
        vmm_end(v, 0, signal_name((int)si.ssi_signo));
}

/* SIGINT, SIGTERM, SIGHUP and SIGQUIT end the VM in order (terminal restored, exit 0): they are
 * blocked in every thread and read from a signalfd on the main loop. SIGPIPE: a reader that
 * went away is not fatal. */
int vmm_init(struct vmm *v, struct vm_config *cfg, const struct timespec *start,
             struct wisp_err *err)
{
    memset(v, 0, sizeof(*v));
    v->cfg = cfg;
    v->start = *start;
    v->signal_fd = -1;
    v->state = VMM_NOT_STARTED;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    v->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (v->signal_fd < 0)
        return wisp_err_sys(err, errno, "signalfd");
    int r = evloop_create(&v->loop, "main", err);
    if (r == 0)
        r = evloop_add_fd(v->loop, v->signal_fd, EPOLLIN, vmm_signal, v, &v->signal_src, err);
    return r;
}

/* The machine ended (any thread): the loop quits and the process exits. */
static void vmm_machine_ended(void *opaque)
{
    struct vmm *v = opaque;
    evloop_quit(v->loop);
}

void vmm_end(struct vmm *v, int status, const char *why)
{
    if (v->have_machine) {
        machine_request_stop(&v->m, status, why); /* quits the loop through on_end */
        return;
    }
    if (v->state != VMM_ENDED) {
        v->exit_status = status;
        v->state = VMM_ENDED;
    }
    evloop_quit(v->loop);
}

/* Files named by the configuration are checked before any KVM work, without blocking (a FIFO
 * or a device is refused, not opened for reading): a wrong one is a usage error. */
static int check_input_file(const char *flag, const char *path, struct wisp_err *err)
{
    off_t size;
    int fd = wisp_open_regular(flag, path, &size, err);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

/* A drive's image must open (read-only for readonly=on) and be a file or a block device. */
static int check_drive_file(const struct virtio_blk_params *d, struct wisp_err *err)
{
    int fd = open(d->path, (d->read_only ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "--drive: %s", d->path);
    struct stat st;
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    close(fd);
    if (r < 0)
        return wisp_err_sys(err, -r, "--drive: %s", d->path);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return wisp_err_set(err, EINVAL, "--drive: %s is %s, not an image file or a block device",
                            d->path, wisp_file_type_name(st.st_mode));
    return 0;
}

static int check_drive_files(const struct vm_config *cfg, struct wisp_err *err)
{
    for (unsigned i = 0; i < cfg->nr_drives; i++)
        if (check_drive_file(&cfg->drives[i], err) < 0)
            return -EINVAL;
    return 0;
}

/* A NIC's tap must exist or be one wisp-vmm may create. */
static int check_nic_taps(const struct vm_config *cfg, struct wisp_err *err)
{
    for (unsigned i = 0; i < cfg->nr_nics; i++)
        if (tap_check(cfg->nics[i].tap, err) < 0)
            return wisp_err_wrap(err, "--net");
    return 0;
}

/* What the configuration names, checked before anything is built (usage errors). */
static int check_config(const struct vm_config *cfg, bool restore, struct wisp_err *err)
{
    int r = 0;
    if (cfg->kernel)
        r = check_input_file("--kernel", cfg->kernel, err);
    else if (!cfg->test_socket && !restore)
        r = wisp_err_set(err, EINVAL, "--kernel: missing (the kernel to boot is required)");
    if (r == 0 && cfg->initrd)
        r = check_input_file("--initrd", cfg->initrd, err);
    if (r == 0)
        r = check_drive_files(cfg, err);
    if (r == 0)
        r = check_nic_taps(cfg, err);
    return r;
}

static enum chardev_kind console_kind(const struct vm_config *c)
{
    return c->serial == VMM_SERIAL_STDIO  ? CHARDEV_STDIO
           : c->serial == VMM_SERIAL_FILE ? CHARDEV_FILE
                                          : CHARDEV_NULL;
}

int vmm_start(struct vmm *v, bool *usage, struct wisp_err *err)
{
    *usage = true;
    if (v->state != VMM_NOT_STARTED)
        return wisp_err_set(err, EINVAL, "the VM is %s: it can start only once",
                            vmm_state_name(v->state));
    struct chardev *console = NULL;
    int r = check_config(v->cfg, v->restore != NULL, err);
    if (r == 0)
        r = chardev_open(&console, console_kind(v->cfg), v->cfg->serial_path, "--serial", err);
    if (r == 0 && v->cfg->console_log_max &&
        chardev_set_file_cap(console, v->cfg->console_log_max, err) < 0) {
        wisp_log("%s", err->msg); /* a notice: the VM still runs */
        *err = (struct wisp_err){0};
    }
    if (r < 0)
        return r;
    *usage = false;
    struct kvm kvm;
    const char *kvm_path = getenv("WISP_KVM_DEVICE");
    r = kvm_open(&kvm, kvm_path && *kvm_path ? kvm_path : "/dev/kvm", err);
    if (r < 0) {
        chardev_close(console);
        return r;
    }
    unsigned max = kvm.max_vcpus < VMM_MAX_CPUS ? kvm.max_vcpus : VMM_MAX_CPUS;
    if (v->cfg->cpus > max) {
        chardev_close(console);
        kvm_close(&kvm);
        *usage = true;
        return wisp_err_set(err, EINVAL, "--cpus: %u is more than this host's KVM allows (%u)",
                            v->cfg->cpus, max);
    }
    const struct machine_host host = {.kvm = &kvm,
                                      .console = console,
                                      .loop = v->loop,
                                      .start = &v->start,
                                      .on_end = vmm_machine_ended,
                                      .opaque = v,
                                      .restore = v->restore};
    r = machine_create(&v->m, v->cfg, &host, err);
    if (r < 0)
        return r;
    v->have_machine = true;
    /* everything is open, no vCPU has run: the user of --uid/--gid from now on */
    r = vmm_privileges_drop(&v->cfg->privileges, err);
    if (r < 0)
        return r;
    if (v->start_paused) { /* a snapshot loaded without resume_vm */
        machine_start_paused(&v->m);
        v->state = VMM_PAUSED;
        return 0;
    }
    v->state = VMM_RUNNING;
    machine_start(&v->m);
    return 0;
}

struct pause_waiter {
    struct vmm *v;
    void (*done)(void *opaque);
    void *opaque;
};

static void vmm_paused(void *opaque)
{
    struct pause_waiter *w = opaque;
    struct vmm *v = w->v;
    v->pause_pending = false;
    if (v->state == VMM_RUNNING)
        v->state = VMM_PAUSED;
    if (w->done)
        w->done(w->opaque);
    free(w);
}

int vmm_pause(struct vmm *v, void (*done)(void *opaque), void *opaque, struct wisp_err *err)
{
    if (v->state != VMM_RUNNING)
        return wisp_err_set(err, EINVAL, "the VM is %s: only a running VM can be paused",
                            vmm_state_name(v->state));
    if (v->pause_pending)
        return wisp_err_set(err, EALREADY, "a pause is already under way");
    struct pause_waiter *w = malloc(sizeof(*w));
    if (!w)
        return wisp_err_set(err, ENOMEM, "out of memory");
    *w = (struct pause_waiter){.v = v, .done = done, .opaque = opaque};
    int r = machine_pause(&v->m, vmm_paused, w);
    if (r < 0) {
        free(w);
        return wisp_err_sys(err, -r, "cannot pause the VM");
    }
    v->pause_pending = true;
    return 0;
}

int vmm_resume(struct vmm *v, struct wisp_err *err)
{
    if (v->state != VMM_PAUSED)
        return wisp_err_set(err, EINVAL, "the VM is %s: only a paused VM can be resumed",
                            vmm_state_name(v->state));
    if (vmm_snapshot_busy(v))
        return wisp_err_set(err, EBUSY, "a snapshot is being written: the VM resumes after it");
    int r = machine_resume(&v->m);
    if (r < 0)
        return wisp_err_sys(err, -r, "cannot resume the VM");
    v->state = VMM_RUNNING;
    return 0;
}

int vmm_run(struct vmm *v)
{
    if (v->state != VMM_ENDED)
        evloop_run(v->loop);
    if (v->have_machine && v->state != VMM_ENDED)
        v->exit_status = machine_stop(&v->m);
    v->state = VMM_ENDED;
    return v->exit_status;
}

void vmm_destroy(struct vmm *v)
{
    vmm_snapshot_cancel(v); /* a snapshot being written stops reading guest memory */
    if (v->have_machine && (!v->cfg->async_teardown || machine_teardown_async(&v->m) < 0))
        machine_destroy(&v->m);
    v->have_machine = false;
    vmm_snapshot_free(v); /* after the machine: a restored VM's configuration is in it */
    evloop_source_remove(v->signal_src);
    v->signal_src = NULL;
    evloop_destroy(v->loop);
    v->loop = NULL;
    if (v->signal_fd >= 0)
        close(v->signal_fd);
    v->signal_fd = -1;
}
