/* virtio-pmem (pmem.h): the file's mapping and memory slot, the config space, the flush queue. */
#include "virtio/pmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus/bus.h"
#include "common/evloop.h"
#include "common/log.h"
#include "common/parse.h"
#include "common/statebuf.h"
#include "devices/resources.h"
#include "kvm/kvm.h"
#include "virtio/virtio.h"

#define VIRTIO_ID_PMEM     27
#define PMEM_QUEUE_SIZE    64
#define PMEM_MAX_IOV       16
#define PMEM_REQ_FLUSH     0
#define PMEM_STATE_VERSION 1
#define PMEM_MAX_KEYS      8

struct virtio_pmem {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_pmem_params *p;
    int fd;
    uint8_t *hva;
    uint64_t gpa, size;
    struct iothread *io;
    bool region_on_bus;
    atomic_uint_fast64_t flushes, dropped_writes;
    atomic_bool logged_write;
};

const char *virtio_pmem_mode_name(enum virtio_pmem_mode m)
{
    return m == VIRTIO_PMEM_RO ? "ro" : m == VIRTIO_PMEM_COW ? "cow" : "rw";
}

int virtio_pmem_mode_parse(const char *s, enum virtio_pmem_mode *out)
{
    static const enum virtio_pmem_mode modes[] = {VIRTIO_PMEM_RW, VIRTIO_PMEM_RO, VIRTIO_PMEM_COW};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (!strcmp(s, virtio_pmem_mode_name(modes[i]))) {
            *out = modes[i];
            return 0;
        }
    return -EINVAL;
}

int virtio_pmem_params_parse(const char *v, char *buf, struct virtio_pmem_params *p,
                             struct wisp_err *err)
{
    struct kv_item kv[PMEM_MAX_KEYS];
    int n = parse_kv_list(v, buf, kv, PMEM_MAX_KEYS);
    if (n < 0)
        return wisp_err_set(err, EINVAL, "--pmem: '%.64s' is not a list of key=value (at most %d)",
                            v, PMEM_MAX_KEYS);
    *p = (struct virtio_pmem_params){.mode = VIRTIO_PMEM_RW};
    bool mode_given = false;
    for (int i = 0; i < n; i++) {
        enum virtio_pmem_mode m;
        if (!strcmp(kv[i].key, "path") || !strcmp(kv[i].key, "id")) {
            if (!kv[i].value || !*kv[i].value)
                return wisp_err_set(err, EINVAL, "--pmem: %s needs a value", kv[i].key);
            *(kv[i].key[0] == 'p' ? &p->path : &p->id) = kv[i].value;
        } else if (virtio_pmem_mode_parse(kv[i].key, &m) == 0) {
            if (kv[i].value)
                return wisp_err_set(err, EINVAL, "--pmem: %s takes no value", kv[i].key);
            if (mode_given && m != p->mode)
                return wisp_err_set(err, EINVAL, "--pmem: give one of ro, cow and rw");
            p->mode = m;
            mode_given = true;
        } else {
            return wisp_err_set(err, EINVAL, "--pmem: unknown key '%s' (path, id, ro, cow, rw)",
                                kv[i].key);
        }
    }
    if (!p->path)
        return wisp_err_set(err, EINVAL, "--pmem: path=FILE is required");
    if (p->id && strlen(p->id) > 32)
        return wisp_err_set(err, EINVAL, "--pmem: id '%.40s...' is longer than 32 characters",
                            p->id);
    return 0;
}

void virtio_pmem_get_info(const struct device *dev, struct virtio_pmem_info *out)
{
    const struct virtio_pmem *pm = dev->state;
    *out = (struct virtio_pmem_info){
        .gpa = pm->gpa,
        .size = pm->size,
        .flushes = atomic_load(&pm->flushes),
        .dropped_writes = atomic_load(&pm->dropped_writes),
    };
}

/* ---- the config space (§5.19.4): le64 start, le64 size, read-only ---------------------- */

static void pmem_config_read(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size)
{
    const struct virtio_pmem *pm = (const struct virtio_pmem *)vdev;
    uint8_t cfg[16];
    memcpy(cfg, &pm->gpa, 8); /* little-endian host */
    memcpy(cfg + 8, &pm->size, 8);
    memset(data, 0, size);
    if (offset < sizeof(cfg) && size <= sizeof(cfg) - offset)
        memcpy(data, cfg + offset, size);
}

static void pmem_config_write(struct virtio_dev *vdev, uint64_t offset, const void *data,
                              unsigned size)
{
    /* read-only: ignored */
}

/* ---- the request queue (§5.19.6): le32 type in, le32 ret out --------------------------- */

/* Copies the first n bytes of the chain's readable (or writable) buffers; false if shorter. */
static bool chain_copy(const struct virtq_chain *c, bool writable, void *buf, size_t n, bool out)
{
    unsigned first = writable ? c->nr_out : 0, count = writable ? c->nr_in : c->nr_out;
    size_t done = 0;
    for (unsigned i = first; i < first + count && done < n; i++) {
        size_t k = c->iov[i].iov_len < n - done ? c->iov[i].iov_len : n - done;
        if (out)
            memcpy(c->iov[i].iov_base, (const uint8_t *)buf + done, k);
        else
            memcpy((uint8_t *)buf + done, c->iov[i].iov_base, k);
        done += k;
    }
    return done == n;
}

/* One request: 0 (done) or 1 (failed: an unknown type, or the file could not be synced). */
static uint32_t pmem_request(struct virtio_pmem *pm, const struct virtq_chain *c)
{
    uint32_t type;
    if (!chain_copy(c, false, &type, 4, false)) {
        if (pm->vdev.dev->ctx->debug)
            wisp_log("%s: a request without its 4-byte type", pm->vdev.dev->name);
        return 1;
    }
    if (type != PMEM_REQ_FLUSH) {
        if (pm->vdev.dev->ctx->debug)
            wisp_log("%s: unknown request type %u", pm->vdev.dev->name, type);
        return 1;
    }
    atomic_fetch_add(&pm->flushes, 1);
    /* ro: the file never changes; cow: the guest's writes are this VM's and never durable */
    if (pm->p->mode != VIRTIO_PMEM_RW)
        return 0;
    if (fdatasync(pm->fd) == 0)
        return 0;
    wisp_log("%s: flush of %s failed: %s", pm->vdev.dev->name, pm->p->path, strerror(errno));
    return 1;
}

static void pmem_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_pmem *pm = (struct virtio_pmem *)vdev;
    struct virtq *q = &vdev->queues[queue].vq;
    struct iovec iov[PMEM_MAX_IOV];
    struct virtq_chain c;
    struct wisp_err err = {0};
    bool pushed = false;
    for (;;) {
        int r = virtq_pop(q, &c, iov, PMEM_MAX_IOV, &err);
        if (r == 0)
            break;
        if (r == 1 && c.in_len < 4) {
            r = wisp_err_set(&err, EINVAL, "%s: request %u has no 4 writable bytes for its status",
                             vdev->dev->name, c.head);
        }
        if (r < 0) {
            virtio_needs_reset(vdev, &err);
            break;
        }
        uint32_t ret = pmem_request(pm, &c);
        chain_copy(&c, true, &ret, 4, true);
        virtq_push(q, c.head, 4);
        pushed = true;
    }
    if (pushed)
        virtio_notify_queue(vdev, q);
}

static int pmem_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_pmem *pm = (struct virtio_pmem *)vdev;
    return virtio_serve_start(vdev, iothread_loop(pm->io), pmem_serve, err);
}

static void pmem_reset(struct virtio_dev *vdev)
{
    virtio_serve_stop(vdev); /* waits for a flush being served */
}

static int pmem_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    virtio_serve_stop(vdev); /* every request is completed when served: none is held */
    return 0;
}

static int pmem_resume(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_pmem *pm = (struct virtio_pmem *)vdev;
    return virtio_serve_start(vdev, iothread_loop(pm->io), pmem_serve, err);
}

/* The snapshot records what the guest was given (mode, where, how large); the file's contents
 * are not copied (docs/snapshot.md): a restore maps the same file again. A cow view's private
 * pages would be lost, so its snapshot is refused. */
static int pmem_save(struct virtio_dev *vdev, struct state_writer *w, struct wisp_err *err)
{
    struct virtio_pmem *pm = (struct virtio_pmem *)vdev;
    if (pm->p->mode == VIRTIO_PMEM_COW)
        return wisp_err_set(err, ENOTSUP,
                            "a cow pmem device's private writes are not saved in a snapshot "
                            "(use ro or rw)");
    state_put_u8(w, PMEM_STATE_VERSION);
    state_put_u8(w, (uint8_t)pm->p->mode);
    state_put_u64(w, pm->gpa);
    state_put_u64(w, pm->size);
    return 0;
}

static int pmem_load(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err)
{
    struct virtio_pmem *pm = (struct virtio_pmem *)vdev;
    uint8_t version = state_get_u8(r), mode = state_get_u8(r);
    uint64_t gpa = state_get_u64(r), size = state_get_u64(r);
    if (r->bad || version != PMEM_STATE_VERSION)
        return wisp_err_set(err, EINVAL, "truncated or unknown pmem state");
    if (mode != pm->p->mode || gpa != pm->gpa || size != pm->size)
        return wisp_err_set(err, EINVAL,
                            "the snapshot's pmem region is %s at 0x%llx (%llu MiB), this one "
                            "%s at 0x%llx (%llu MiB): was %s changed?",
                            mode <= VIRTIO_PMEM_COW ? virtio_pmem_mode_name(mode) : "?",
                            (unsigned long long)gpa, (unsigned long long)(size >> 20),
                            virtio_pmem_mode_name(pm->p->mode), (unsigned long long)pm->gpa,
                            (unsigned long long)(pm->size >> 20), pm->p->path);
    return 0;
}

static const struct virtio_dev_ops pmem_ops = {
    .config_read = pmem_config_read,
    .config_write = pmem_config_write,
    .activate = pmem_activate,
    .reset = pmem_reset,
    .quiesce = pmem_quiesce,
    .resume = pmem_resume,
    .save = pmem_save,
    .load = pmem_load,
};

/* ---- the region ------------------------------------------------------------------------- */

/* A guest write to a read-only region: KVM exits with it as MMIO. Dropped: the file and the
 * mapping stay as they are. */
static void region_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
    struct virtio_pmem *pm = opaque;
    atomic_fetch_add(&pm->dropped_writes, 1);
    if (!atomic_exchange(&pm->logged_write, true))
        wisp_log("%s: the guest wrote to its read-only region at +0x%llx: dropped (further "
                 "writes are counted, not logged)",
                 pm->vdev.dev->name, (unsigned long long)offset);
}

static const struct bus_ops region_ops = {.write = region_write};

/* Opens the file for the mode and checks it (pmem.h); returns the fd, or -errno with err. */
static int open_checked(const char *what, const char *path, enum virtio_pmem_mode mode,
                        uint64_t *size_out, struct wisp_err *err)
{
    bool rw = mode == VIRTIO_PMEM_RW;
    int fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s: cannot open %s%s", what, path,
                            rw ? " for reading and writing" : "");
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0)
        r = wisp_err_sys(err, errno, "%s: %s", what, path);
    else if (!S_ISREG(st.st_mode))
        r = wisp_err_set(err, EINVAL, "%s: %s is not a regular file", what, path);
    uint64_t size = r == 0 ? (uint64_t)st.st_size : 0;
    if (r == 0 && (size == 0 || size % VIRTIO_PMEM_ALIGN || size > VIRTIO_PMEM_MAX_BYTES))
        r = wisp_err_set(
            err, EINVAL,
            "%s: %s is %llu bytes: a pmem image must be a positive multiple of 2 MiB "
            "(Linux maps the region in 2 MiB units) up to 1 TiB; e.g. truncate -s "
            "%lluM %s",
            what, path, (unsigned long long)size,
            (unsigned long long)((size + VIRTIO_PMEM_ALIGN - 1) / VIRTIO_PMEM_ALIGN * 2), path);
    if (r < 0) {
        close(fd);
        return r;
    }
    *size_out = size;
    return fd;
}

int virtio_pmem_check_file(const char *what, const char *path, enum virtio_pmem_mode mode,
                           struct wisp_err *err)
{
    uint64_t size;
    int fd = open_checked(what, path, mode, &size, err);
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

static int open_file(struct virtio_pmem *pm, const struct device *dev, struct wisp_err *err)
{
    bool rw = pm->p->mode == VIRTIO_PMEM_RW;
    pm->fd = open_checked(dev->name, pm->p->path, pm->p->mode, &pm->size, err);
    if (pm->fd < 0)
        return pm->fd;
    /* rw: one writer, no reader beside it; ro and cow: any number of readers. An OFD lock
     * (QEMU locks images the same way), held as long as the fd is open. */
    struct flock fl = {.l_type = rw ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET};
    if (fcntl(pm->fd, F_OFD_SETLK, &fl) < 0)
        return wisp_err_sys(err, errno, "%s: %s is in use (%s)", dev->name, pm->p->path,
                            rw ? "a rw pmem device needs it alone" : "another VM maps it rw");
    return 0;
}

static int map_region(struct virtio_pmem *pm, const struct device *dev, struct wisp_err *err)
{
    int prot = pm->p->mode == VIRTIO_PMEM_RO ? PROT_READ : PROT_READ | PROT_WRITE;
    int flags = pm->p->mode == VIRTIO_PMEM_COW ? MAP_PRIVATE | MAP_NORESERVE : MAP_SHARED;
    void *p = mmap(NULL, pm->size, prot, flags, pm->fd, 0);
    if (p == MAP_FAILED)
        return wisp_err_sys(err, errno, "%s: cannot map %s (%llu MiB)", dev->name, pm->p->path,
                            (unsigned long long)(pm->size >> 20));
    pm->hva = p;
    const struct device_ctx *ctx = dev->ctx;
    int r =
        resources_alloc_high(ctx->res, pm->size, VIRTIO_PMEM_BASE_ALIGN, dev->name, &pm->gpa, err);
    if (r < 0)
        return r;
    bool ro = pm->p->mode == VIRTIO_PMEM_RO;
    unsigned slot;
    if (ctx->vm && (r = kvm_vm_add_slot(ctx->vm, pm->gpa, pm->size, pm->hva, ro, &slot, err)) < 0)
        return wisp_err_wrap(err, "%s", dev->name);
    if (ro) {
        r = bus_register(ctx->mmio, pm->gpa, pm->size, dev->name, &region_ops, pm, err);
        pm->region_on_bus = r == 0;
    }
    return r;
}

static int pmem_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_pmem *pm = calloc(1, sizeof(*pm));
    if (!pm)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = pm;
    pm->p = dev->params;
    pm->fd = -1;
    atomic_init(&pm->flushes, 0);
    atomic_init(&pm->dropped_writes, 0);
    atomic_init(&pm->logged_write, false);
    int r = open_file(pm, dev, err);
    if (r == 0)
        r = map_region(pm, dev, err);
    char name[48]; /* iothread_start shows the first 15 characters */
    snprintf(name, sizeof(name), "pmem-%s",
             !strncmp(dev->name, "pmem", 4) && dev->name[4] ? dev->name + 4 : dev->name);
    if (r == 0 && (r = iothread_start(&pm->io, name, err)) < 0)
        wisp_err_wrap(err, "%s", dev->name);
    if (r < 0)
        return r;
    static const uint16_t sizes[] = {PMEM_QUEUE_SIZE};
    return virtio_dev_init(&pm->vdev, dev, &pmem_ops, VIRTIO_ID_PMEM, 0, 1, sizes, err);
}

static void pmem_teardown(struct device *dev)
{
    struct virtio_pmem *pm = dev->state;
    if (!pm)
        return;
    if (pm->vdev.dev)
        virtio_dev_destroy(&pm->vdev);
    iothread_stop(pm->io);
    /* the memory slot stays until the VM goes (deleting it waits for KVM to synchronise); no
     * vCPU runs any more, and KVM's MMU notifier drops its mappings of the unmapped range */
    if (pm->hva)
        munmap(pm->hva, pm->size);
    if (pm->fd >= 0)
        close(pm->fd);
    free(pm);
    dev->state = NULL;
}

const struct device_ops virtio_pmem_device_ops = {
    .type = "virtio-pmem",
    .realize = pmem_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = pmem_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
    .save_optional = true,
};
