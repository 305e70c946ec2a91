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
#include "vmm/api.h"
#include "vmm/args.h"
#include "vmm/machine.h"
#include "vmm/privileges.h"
#include "vmm/seccomp.h"
#include "vmm/vmm.h"
#include "wisp-config.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2
/* Time the last messages get to reach a slow stderr before the process exits anyway. */
#define LOG_FLUSH_MS 500

static void print_error(const struct wisp_err *err)
{
    wisp_log_error("%s", err->msg);
    wisp_log_flush(LOG_FLUSH_MS);
}

/* Signals that end the process without passing through vmm_run (a crash, or one the
 * main loop does not read): the terminal goes back to how it was, then the signal's own
 * action (core dump or termination) follows. SIGINT/SIGTERM/SIGHUP/SIGQUIT end the VM in order
 * through the main loop's signalfd instead (vmm.c). */
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

/* The VM from the configuration: booted at once when it names a kernel (flags or a config
 * file), else configured and started through the API (--api-sock). */
static int run(struct vm_config *cfg, const struct timespec *start)
{
    struct wisp_err err = {0};
    struct vmm v;
    struct vmm_api api = {0};
    if (vmm_init(&v, cfg, start, &err) < 0 || vmm_api_start(&api, &v, &err) < 0 ||
        (!cfg->kernel && !cfg->test_socket && vmm_privileges_drop(&cfg->privileges, &err) < 0)) {
        vmm_destroy(&v);
        print_error(&err);
        return EXIT_RUNTIME;
    }
    bool usage = false;
    if ((cfg->kernel || cfg->test_socket) &&
        (vm_config_prepare_start(cfg, &err) < 0 || vmm_start(&v, &usage, &err) < 0)) {
        vmm_api_stop(&api);
        vmm_destroy(&v);
        print_error(&err);
        return usage ? EXIT_USAGE : EXIT_RUNTIME;
    }
    int status = vmm_run(&v);
    vmm_api_stop(&api);
    vmm_destroy(&v);
    wisp_log_flush(LOG_FLUSH_MS);
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

    struct vm_config args;
    struct wisp_err err = {0};
    if (vmm_args_parse(argc, argv, &args, &err) < 0) {
        vm_config_free(&args);
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
    if (args.api.has_api_sock_fd)
        args.privileges.keep_fd = args.api.api_sock_fd;
    if (vmm_privileges_prepare(&args.privileges, &err) < 0) {
        vm_config_free(&args);
        print_error(&err);
        return EXIT_RUNTIME;
    }
    /* before the VM is built and any client is read; every thread after has its filter */
    if (vmm_seccomp_setup(args.seccomp, &err) < 0) {
        vm_config_free(&args);
        print_error(&err);
        return EXIT_RUNTIME;
    }
    int status = run(&args, &start);
    vm_config_free(&args);
    return status;
}
