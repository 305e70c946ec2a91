/* wisp-vmm: one KVM virtual machine per process, from the command line. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/args.h"
#include "vmm/machine.h"
#include "wisp-config.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

static void print_error(const struct wisp_err *err)
{
    char line[sizeof(err->msg) + 16];
    int n = snprintf(line, sizeof(line), "wisp-vmm: %s\n", err->msg);
    if (n > 0)
        (void)device_write_all(STDERR_FILENO, line,
                               (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* The kernel (and initrd) must be readable files: checked before any KVM work so that a typo
 * is a usage error (status 2) and costs nothing. */
static int check_input_file(const char *flag, const char *path, struct wisp_err *err)
{
    struct stat st;
    if (access(path, R_OK) < 0 || stat(path, &st) < 0)
        return wisp_err_sys(err, errno, "%s: %s", flag, path);
    if (S_ISDIR(st.st_mode))
        return wisp_err_sys(err, EISDIR, "%s: %s", flag, path);
    return 0;
}

static int run(const struct vmm_args *args, const struct timespec *start)
{
    struct wisp_err err = {0};
    if (check_input_file("--kernel", args->kernel, &err) < 0 ||
        (args->initrd && check_input_file("--initrd", args->initrd, &err) < 0)) {
        print_error(&err);
        return EXIT_USAGE;
    }
    struct kvm kvm;
    const char *kvm_path = getenv("WISP_KVM_DEVICE");
    if (kvm_open(&kvm, kvm_path && *kvm_path ? kvm_path : "/dev/kvm", &err) < 0) {
        print_error(&err);
        return EXIT_RUNTIME;
    }
    unsigned max = kvm.max_vcpus < VMM_MAX_CPUS ? kvm.max_vcpus : VMM_MAX_CPUS;
    if (args->cpus > max) {
        wisp_err_set(&err, EINVAL, "--cpus: %u is more than this host's KVM allows (%u)",
                     args->cpus, max);
        print_error(&err);
        kvm_close(&kvm);
        return EXIT_USAGE;
    }
    struct machine m;
    if (machine_create(&m, args, &kvm, start, &err) < 0) {
        print_error(&err);
        return EXIT_RUNTIME;
    }
    int status = machine_run(&m, &err);
    if (machine_teardown_async(&m) < 0)
        machine_destroy(&m);
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
    /* one malloc arena: vCPU threads would otherwise each touch a fresh 64 MiB arena */
    mallopt(M_ARENA_MAX, 1);

    struct vmm_args args;
    struct wisp_err err = {0};
    if (vmm_args_parse(argc, argv, &args, &err) < 0) {
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
    return run(&args, &start);
}
