/*
 * virtio-pmem (virtio 1.2 §5.19, device ID 27): a host file mapped into guest-physical address
 * space above RAM and the MMIO devices, which the guest reads and writes with ordinary loads and
 * stores (Linux: /dev/pmemN, DAX with ext4 -o dax), and one request queue on which the guest
 * asks for its writes to be made durable (a flush: fdatasync of the file).
 *
 * Modes (docs/memory.md): `ro` maps the file MAP_SHARED read-only and registers a read-only KVM
 * memory slot (KVM_MEM_READONLY): the guest's writes exit as MMIO and are dropped (counted,
 * logged once), the file never changes; `cow` maps it MAP_PRIVATE writable: the guest's writes
 * go to private copies of the pages and never reach the file; `rw` maps it MAP_SHARED
 * writable: the guest's writes are the file's. Every VM that maps one file ro or cow shares the
 * pages of the host's page cache (cow: until it writes a page).
 *
 * The file must be a regular file, its size a positive multiple of VIRTIO_PMEM_ALIGN (2 MiB:
 * Linux maps the region with devm_memremap_pages(), whose unit on x86-64 with
 * SPARSEMEM_VMEMMAP is a 2 MiB subsection); the region starts on a VIRTIO_PMEM_BASE_ALIGN (128
 * MiB: a memory section) boundary, so that no other range shares its sections.
 *
 * Threads: register accesses on vCPU threads (the transport); the flush queue is served on the
 * device's own I/O thread, `pmem-<id>`, which does the fdatasync: neither a vCPU nor the main
 * loop ever waits for the disk.
 */
#ifndef WISP_VIRTIO_PMEM_H
#define WISP_VIRTIO_PMEM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "devices/device.h"

#define VIRTIO_PMEM_ALIGN      (2ull << 20)
#define VIRTIO_PMEM_BASE_ALIGN (128ull << 20)
#define VIRTIO_PMEM_MAX_BYTES  (1ull << 40) /* 1 TiB */

enum virtio_pmem_mode {
    VIRTIO_PMEM_RW,  /* MAP_SHARED, writable: the guest's writes reach the file */
    VIRTIO_PMEM_RO,  /* MAP_SHARED, read-only slot: writes are dropped */
    VIRTIO_PMEM_COW, /* MAP_PRIVATE, writable: writes stay in this VM */
};

struct virtio_pmem_params {
    const char *id;   /* NULL: pmemN */
    const char *path; /* the backing file */
    enum virtio_pmem_mode mode;
    bool root_device; /* the API's root_device: root=/dev/pmemN on the kernel command line */
};

/* What a running device reports (GET /vm/config shows the configuration, not these). */
struct virtio_pmem_info {
    uint64_t gpa, size;
    uint64_t flushes, dropped_writes;
};

extern const struct device_ops virtio_pmem_device_ops;

const char *virtio_pmem_mode_name(enum virtio_pmem_mode m);
/* "ro", "cow", "rw" into *out; -EINVAL otherwise. */
int virtio_pmem_mode_parse(const char *s, enum virtio_pmem_mode *out);
/*
 * --pmem's value: path=FILE[,id=ID][,ro|,cow|,rw] into *p; buf (at least strlen(v) + 1 bytes,
 * living as long as p) holds the strings p points to. -EINVAL with err naming the key.
 */
int virtio_pmem_params_parse(const char *v, char *buf, struct virtio_pmem_params *p,
                             struct wisp_err *err);
/* The checks the device makes of its file (it opens for the mode, is a regular file of a
 * positive multiple of 2 MiB), made early (the command line, PUT /pmem): -errno with err
 * naming `what` and the path. */
int virtio_pmem_check_file(const char *what, const char *path, enum virtio_pmem_mode mode,
                           struct wisp_err *err);
void virtio_pmem_get_info(const struct device *dev, struct virtio_pmem_info *out);

#endif
