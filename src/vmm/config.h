/* The configuration of the VM wisp-vmm runs (see vm_config). */
#ifndef WISP_VMM_CONFIG_H
#define WISP_VMM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "kvm/guest_mem.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/pmem.h"
#include "virtio/p9.h"
#include "virtio/rng.h"
#include "virtio/vsock.h"
#include "vmm/privileges.h"

#define VMM_DEFAULT_MEM_MIB 128
#define VMM_MIN_MEM_BYTES   (2ULL << 20)
#define VMM_MAX_CPUS        1024 /* also bounded at run time by KVM_CAP_MAX_VCPUS */
#define VMM_MAX_DRIVES      16
#define VMM_MAX_NICS        8
#define VMM_MAX_PMEM        8
#define VMM_MAX_FS          8

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

/* Firecracker's TokenBucket: `size` tokens, refilled in refill_time_ms; one_time_burst extra
 * tokens at the start. size or refill_time_ms 0: no limit. */
struct fc_token_bucket {
    uint64_t size, one_time_burst, refill_time_ms;
};
/* Firecracker's RateLimiter: bytes (bandwidth) and operations (ops), each optional. */
struct fc_rate_limiter {
    bool has_bandwidth, has_ops;
    struct fc_token_bucket bandwidth, ops;
};

/* What the API and --config-file say about a drive beyond its virtio_blk_params. */
struct vm_drive_api {
    bool is_root_device; /* the kernel gets root=/dev/vdX (or PARTUUID=) unless it has root= */
    const char *partuuid;
    bool has_rate_limiter; /* rate_limiter was given (its limits are in the params) */
    struct fc_rate_limiter rate_limiter;
};

/* The same for a NIC: the rate limiters as they were given (their limits are in the params). */
struct vm_nic_api {
    bool has_rx, has_tx;
    struct fc_rate_limiter rx, tx;
};

/* Firecracker's resources that are not the machine (docs/api.md). */
struct vm_api_config {
    const char *id;       /* --id: the instance id (GET /); NULL: "anonymous-instance" */
    const char *api_sock; /* --api-sock: serve the API there */
    bool has_api_sock_fd; /* --api-sock-fd: serve it on an inherited listening socket */
    int api_sock_fd;
    const char *config_file; /* --config-file: configured (and booted) from it */
    const char *boot_args;   /* PUT /boot-source boot_args; cmdline is built from it at start */
    struct vm_drive_api drives[VMM_MAX_DRIVES]; /* beside drives[] */
    struct vm_nic_api nics[VMM_MAX_NICS];       /* beside nics[] */
    bool rng_rate_limited;                      /* entropy's rate_limiter was given */
    struct fc_rate_limiter rng_rate_limiter;
    bool logger_set;
    const char *log_path; /* NULL: stderr */
    int log_level;        /* enum wisp_log_level */
    bool log_show_level, log_show_origin;
    const char *metrics_path;
};

/*
 * The machine's configuration: what the command line (vmm_args_parse), a --config-file or the
 * API (docs/api.md) describe, and from which vmm_start() builds the machine. Strings point into
 * argv or into copies the configuration owns (vm_config_strdup); vm_config_free frees those.
 */
struct vm_config {
    enum vmm_action action;
    const char *kernel;  /* points into argv */
    const char *initrd;  /* NULL if none */
    const char *cmdline; /* NULL if none */
    uint64_t mem_bytes;
    struct guest_mem_options mem; /* --mem-backend, --thp, --ksm, --prefault */
    unsigned cpus;
    const char *vcpu_affinity; /* --vcpu-affinity: CPU lists split by '/', one a vCPU */
    enum vmm_serial serial;
    const char *serial_path;  /* for VMM_SERIAL_FILE, points into argv */
    uint64_t console_log_max; /* --console-log-max: bytes of a file's end kept (0: all) */
    enum vmm_console console;
    bool rng; /* a virtio-rng device */
    struct virtio_rng_params rng_params;
    struct virtio_blk_params drives[VMM_MAX_DRIVES];
    unsigned nr_drives;
    struct virtio_net_params nics[VMM_MAX_NICS];
    unsigned nr_nics;
    struct virtio_pmem_params pmems[VMM_MAX_PMEM]; /* --pmem, PUT /pmem/{id}, "pmem" */
    unsigned nr_pmems;
    bool vsock; /* a virtio-vsock device (--vsock, PUT /vsock); uds_path owned or in argv */
    struct virtio_vsock_params vsock_params;
    struct virtio_9p_params fs[VMM_MAX_FS]; /* virtio-9p shares (--fs, PUT /fs/{id}) */
    unsigned nr_fs;
    bool balloon; /* a virtio-balloon device (PUT /balloon, --config-file's "balloon") */
    struct virtio_balloon_params balloon_params;
    char **owned; /* copies this configuration's strings point into (vm_config_strdup) */
    unsigned nr_owned, cap_owned;
    bool cmdline_devices;    /* append virtio_mmio.device=... to the kernel command line */
    const char *test_socket; /* --test-socket: the device test protocol instead of vCPUs */
    bool boot_marker;
    bool debug;
    bool async_teardown;              /* hand the VM's teardown to a helper process (machine.h) */
    bool track_dirty_pages;           /* KVM's dirty log, for diff snapshots (machine-config) */
    struct vmm_privileges privileges; /* --uid/--gid (vmm/privileges.h) */
    int seccomp;                      /* --seccomp: enum vmm_seccomp_mode (0: on) */
    /* the API's and --config-file's own resources (docs/api.md) */
    struct vm_api_config api;
};

/* Defaults: 128 MiB, 1 vCPU, serial on stdio, devices on the kernel command line. */
void vm_config_init(struct vm_config *cfg);
/* A copy of s (or of its first len bytes, len >= 0) that lives as long as cfg; NULL (err set)
 * when out of memory. */
char *vm_config_strdup(struct vm_config *cfg, const char *s, struct wisp_err *err);
/* Sets *slot to a copy of s (NULL: to NULL) and frees the copy *slot held if cfg owned it:
 * for values the API sets again and again. -ENOMEM with err. */
int vm_config_set_string(struct vm_config *cfg, const char **slot, const char *s,
                         struct wisp_err *err);
/* Frees the copies the configuration owns (also after a failed parse). */
void vm_config_free(struct vm_config *cfg);
/* Checks that need the whole configuration (two devices with one id). -EINVAL with err. */
int vm_config_check(const struct vm_config *cfg, struct wisp_err *err);
/* The vsock device's optional part of a snapshot's configuration, after the NICs
 * (api_vsock.c): absent reads as no vsock device. */
struct state_writer;
struct state_reader;
void vm_vsock_config_write(const struct vm_config *cfg, struct state_writer *w);
void vm_vsock_config_read(struct vm_config *cfg, struct state_reader *r);
/* The balloon's optional part, before the vsock's (api_balloon.c): tagged 'B', absent reads as
 * no balloon. */
void vm_balloon_config_write(const struct vm_config *cfg, struct state_writer *w);
void vm_balloon_config_read(struct vm_config *cfg, struct state_reader *r);
/* The pmem devices' part, after the balloon's (api_pmem.c): tagged 'P', absent reads as none. */
void vm_pmem_config_write(const struct vm_config *cfg, struct state_writer *w);
void vm_pmem_config_read(struct vm_config *cfg, struct state_reader *r);
/* The virtio-9p shares' part, after the pmem devices' (api_fs.c): tagged 'F', absent reads as
 * none. */
void vm_fs_config_write(const struct vm_config *cfg, struct state_writer *w);
void vm_fs_config_read(struct vm_config *cfg, struct state_reader *r);
/* fs_overrides at a snapshot's load: the share named by fs_id (or, when NULL, by its tag) gets
 * the directory `path` (checked: a directory), and read_only when it is 0 or 1 (-1: the
 * snapshot's). Returns the share's index, or -errno. */
int vm_fs_override(struct vm_config *cfg, const char *fs_id, const char *tag, const char *path,
                   int read_only, struct wisp_err *err);
/* The name of pmem device i (its id, or pmemN) into buf. */
const char *vm_pmem_name(const struct vm_config *cfg, unsigned i, char *buf, size_t len);
/* --mem-backend's value (anon, memfd, file=PATH, hugetlbfs[=MOUNT]) into cfg->mem; `where`
 * names the option in messages. -EINVAL with err. */
int vm_config_mem_backend(struct vm_config *cfg, const char *v, const char *where,
                          struct wisp_err *err);
/* "on" or "off" into *out. -EINVAL with err. */
int vm_config_mem_switch(const char *v, const char *where, enum guest_mem_switch *out,
                         struct wisp_err *err);

#endif
