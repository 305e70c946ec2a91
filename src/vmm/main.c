/* wisp-vmm: one KVM virtual machine per process, from the command line. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/chardev.h"
#include "common/io.h"
#include "common/log.h"
#include "net/tap.h"
#include "vmm/args.h"
#include "vmm/machine.h"
#include "wisp-config.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2
/* Time the last messages get to reach a slow stderr before the process exits anyway. */
#define LOG_FLUSH_MS 500

static void print_error(const struct wisp_err *err)
{
    wisp_log("%s", err->msg);
    wisp_log_flush(LOG_FLUSH_MS);
}

/* Signals that end the process without passing through machine_run (a crash, or one the
 * main loop does not read): the terminal goes back to how it was, then the signal's own
 * action (core dump or termination) follows. SIGINT/SIGTERM/SIGHUP/SIGQUIT end the VM in order
 * through the main loop's signalfd instead (machine.c). */
static void fatal_signal(int sig)
{
    chardev_restore_terminals();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_fatal_handlers(void)
{
    static const int sigs[] = {SIGSEGV, SIGBUS,    SIGILL,  SIGFPE,  SIGABRT, SIGALRM, SIGUSR2,
                               SIGPROF, SIGVTALRM, SIGXCPU, SIGXFSZ, SIGSYS,  SIGTRAP};
    struct sigaction sa = {.sa_handler = fatal_signal, .sa_flags = SA_RESETHAND | SA_NODEFER};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}

/* Files named on the command line are checked before any KVM work, without blocking (a FIFO
 * or a device is refused, not opened for reading): a wrong one is a usage error (status 2). */
static int check_input_file(const char *flag, const char *path, struct wisp_err *err)
{
    off_t size;
    int fd = wisp_open_regular(flag, path, &size, err);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

/* A --drive image is checked the same way, but may be a block device, and must be writable
 * unless readonly=on (the device opens it later, in the machine). */
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

static int check_drive_files(const struct vmm_args *args, struct wisp_err *err)
{
    for (unsigned i = 0; i < args->nr_drives; i++)
        if (check_drive_file(&args->drives[i], err) < 0)
            return -EINVAL;
    return 0;
}

/* A NIC's tap must exist or be one wisp-vmm may create: checked up front, a usage error. */
static int check_nic_taps(const struct vmm_args *args, struct wisp_err *err)
{
    for (unsigned i = 0; i < args->nr_nics; i++)
        if (tap_check(args->nics[i].tap, err) < 0)
            return wisp_err_wrap(err, "--net");
    return 0;
}

static enum chardev_kind console_kind(const struct vmm_args *a)
{
    return a->serial == VMM_SERIAL_STDIO  ? CHARDEV_STDIO
           : a->serial == VMM_SERIAL_FILE ? CHARDEV_FILE
                                          : CHARDEV_NULL;
}

static int run(const struct vmm_args *args, const struct timespec *start)
{
    struct wisp_err err = {0};
    struct chardev *console = NULL;
    if ((args->kernel && check_input_file("--kernel", args->kernel, &err) < 0) ||
        (args->initrd && check_input_file("--initrd", args->initrd, &err) < 0) ||
        check_drive_files(args, &err) < 0 || check_nic_taps(args, &err) < 0 ||
        chardev_open(&console, console_kind(args), args->serial_path, "--serial", &err) < 0) {
        print_error(&err);
        return EXIT_USAGE;
    }
    struct kvm kvm;
    const char *kvm_path = getenv("WISP_KVM_DEVICE");
    if (kvm_open(&kvm, kvm_path && *kvm_path ? kvm_path : "/dev/kvm", &err) < 0) {
        chardev_close(console);
        print_error(&err);
        return EXIT_RUNTIME;
    }
    unsigned max = kvm.max_vcpus < VMM_MAX_CPUS ? kvm.max_vcpus : VMM_MAX_CPUS;
    if (args->cpus > max) {
        wisp_err_set(&err, EINVAL, "--cpus: %u is more than this host's KVM allows (%u)",
                     args->cpus, max);
        chardev_close(console);
        kvm_close(&kvm);
        print_error(&err);
        return EXIT_USAGE;
    }
    struct machine m;
    if (machine_create(&m, args, &kvm, console, start, &err) < 0) {
        print_error(&err);
        return EXIT_RUNTIME;
    }
    int status = machine_run(&m, &err);
    if (!args->async_teardown || machine_teardown_async(&m) < 0)
        machine_destroy(&m);
    wisp_log_flush(LOG_FLUSH_MS);
    if (status < 0) {
        print_error(&err);
        return EXIT_RUNTIME;
    }
    return status;
}

int main(int argc, char *argv[])
{
    struct timespec start;
    machine_note_start(&start); /* first: the reference of --boot-marker */
    /* before anything opens a file: with stdin closed, /dev/kvm would become fd 0 */
    if (wisp_ensure_std_fds() < 0)
        return EXIT_RUNTIME;
    wisp_log_init("wisp-vmm");
    install_fatal_handlers();
    /* one malloc arena: vCPU threads would otherwise each touch a fresh 64 MiB arena */
    mallopt(M_ARENA_MAX, 1);

    struct vmm_args args;
    struct wisp_err err = {0};
    if (vmm_args_parse(argc, argv, &args, &err) < 0) {
        vmm_args_free(&args);
        print_error(&err);
        return EXIT_USAGE;
    }
    if (args.action == VMM_HELP) {
        fputs(vmm_usage_text, stdout);
        return 0;
    }
    if (args.action == VMM_VERSION) {
        printf("wisp-vmm %s\n", WISP_VERSION);
        return 0;
    }
    int status = run(&args, &start);
    vmm_args_free(&args);
    return status;
}
