/* wisp-vmm's command line: a pure parser that unit tests can call. */
#ifndef WISP_VMM_ARGS_H
#define WISP_VMM_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/rng.h"

#define VMM_DEFAULT_MEM_MIB 128
#define VMM_MIN_MEM_BYTES   (2ULL << 20)
#define VMM_MAX_CPUS        1024 /* also bounded at run time by KVM_CAP_MAX_VCPUS */
#define VMM_MAX_DRIVES      16
#define VMM_MAX_NICS        8

enum vmm_action {
    VMM_RUN,
    VMM_HELP,
    VMM_VERSION,
};

enum vmm_serial {
    VMM_SERIAL_STDIO,
    VMM_SERIAL_FILE,
    VMM_SERIAL_NONE,
};

/* Which device the console host side (--serial) belongs to. */
enum vmm_console {
    VMM_CONSOLE_SERIAL, /* COM1 (ttyS0) */
    VMM_CONSOLE_VIRTIO, /* virtio-console port 0 (hvc0); COM1 then discards its output */
};

struct vmm_args {
    enum vmm_action action;
    const char *kernel;  /* points into argv */
    const char *initrd;  /* NULL if none */
    const char *cmdline; /* NULL if none */
    uint64_t mem_bytes;
    unsigned cpus;
    enum vmm_serial serial;
    const char *serial_path; /* for VMM_SERIAL_FILE, points into argv */
    enum vmm_console console;
    bool rng; /* a virtio-rng device */
    struct virtio_rng_params rng_params;
    struct virtio_blk_params drives[VMM_MAX_DRIVES];
    unsigned nr_drives;
    struct virtio_net_params nics[VMM_MAX_NICS];
    unsigned nr_nics;
    char *storage[VMM_MAX_DRIVES + VMM_MAX_NICS]; /* copies the device options point into */
    unsigned nr_storage;
    bool cmdline_devices;    /* append virtio_mmio.device=... to the kernel command line */
    const char *test_socket; /* --test-socket: the device test protocol instead of vCPUs */
    bool boot_marker;
    bool debug;
    bool async_teardown; /* hand the VM's teardown to a helper process (machine.h) */
};

/*
 * Parses argv[1..argc-1] into *args (defaults first: 128 MiB, 1 vCPU, serial on stdio, devices
 * on the kernel command line). Values point into argv.
 * Accepts "--flag VALUE" and "--flag=VALUE". Returns 0, or -EINVAL with err naming the flag and
 * what is wrong (the caller prints it and exits with status 2). Touches no global state.
 */
int vmm_args_parse(int argc, char *const argv[], struct vmm_args *args, struct wisp_err *err);
/* Frees what vmm_args_parse allocated (also after it failed). */
void vmm_args_free(struct vmm_args *args);

/* The --help text. */
extern const char vmm_usage_text[];

#endif
