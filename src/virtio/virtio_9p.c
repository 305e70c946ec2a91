/* virtio-9p (virtio 1.2 §5.16 is reserved; Linux's net/9p/trans_virtio.c is the driver): one
 * request queue, the mount tag in the configuration space (VIRTIO_9P_MOUNT_TAG), and the
 * 9P2000.L server of p9_server.c behind it. Thread model: the queue is served on the device's
 * own I/O thread ("9p-<name>"), one request at a time, so a file system call that blocks holds
 * up only this share, never a vCPU or the main loop. A request's readable buffers are copied
 * into one buffer, the reply is built in another and copied into the writable buffers; a
 * Tread's data is read straight into the writable buffers (p9_server_read_direct).
 *
 * Snapshots (docs/9p.md, "Snapshots"): a share is saved while its session holds no fid (the
 * guest's driver probed the device but nothing is mounted, or everything was unmounted): the
 * transport and the queue are saved, the session is not (without a fid the next request can
 * only be a Tversion or a Tattach, which start anew). A fid is an open host file descriptor,
 * which a snapshot cannot carry: with any, the snapshot is refused. */
#include <endian.h>
#include <errno.h>
#include <linux/virtio_9p.h>
#include <linux/virtio_ids.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/evloop.h"
#include "common/log.h"
#include "virtio/p9.h"
#include "virtio/virtio.h"

#define P9_QUEUE_SIZE 1024
#define P9_MAX_IOV    P9_QUEUE_SIZE

struct virtio_9p {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_9p_params *p;
    struct p9_server *server; /* only the I/O thread touches it */
    struct iothread *thread;
    struct evloop *loop;
    uint8_t *req, *reply; /* P9_MAX_MSIZE each */
    struct iovec *iov;    /* P9_MAX_IOV */
    uint64_t requests;
};

int p9_check_tag(const char *tag, const char *where, struct wisp_err *err)
{
    size_t n = strlen(tag);
    if (n == 0 || n > P9_TAG_MAX)
        return wisp_err_set(err, EINVAL, "%s: the tag must have 1 to %u characters", where,
                            P9_TAG_MAX);
    if (strspn(tag, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != n)
        return wisp_err_set(err, EINVAL, "%s: tag '%s': only letters, digits, '_', '.', '-'", where,
                            tag);
    return 0;
}

static size_t gather(const struct iovec *iov, unsigned nr, uint8_t *dst, size_t cap)
{
    size_t done = 0;
    for (unsigned i = 0; i < nr && done < cap; i++) {
        size_t n = iov[i].iov_len < cap - done ? iov[i].iov_len : cap - done;
        memcpy(dst + done, iov[i].iov_base, n);
        done += n;
    }
    return done;
}

static void scatter(const struct iovec *iov, unsigned nr, const uint8_t *src, size_t len)
{
    for (unsigned i = 0; i < nr && len; i++) {
        size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(iov[i].iov_base, src, n);
        src += n, len -= n;
    }
}

static void p9_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_9p *fs = (struct virtio_9p *)vdev;
    struct virtq *q = &vdev->queues[0].vq;
    struct virtq_chain c;
    struct wisp_err err = {0};
    for (;;) {
        int r = virtq_pop(q, &c, fs->iov, P9_MAX_IOV, &err);
        if (r < 0) {
            virtio_needs_reset(vdev, &err);
            return;
        }
        if (r == 0)
            break;
        size_t len = gather(c.iov, c.nr_out, fs->req, P9_MAX_MSIZE);
        size_t cap = c.in_len < P9_MAX_MSIZE ? (size_t)c.in_len : P9_MAX_MSIZE;
        size_t n = p9_server_read_direct(fs->server, fs->req, len, c.iov + c.nr_out, c.nr_in, cap);
        if (!n) {
            n = p9_server_handle(fs->server, fs->req, len, fs->reply, cap);
            scatter(c.iov + c.nr_out, c.nr_in, fs->reply, n);
        }
        virtq_push(q, c.head, (uint32_t)n);
        fs->requests++;
        virtio_notify_queue(vdev, q); /* a reply may wake a waiting task at once */
    }
}

/* struct virtio_9p_config: tag_len (le16) and the tag, read-only. */
static void p9_config_read(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size)
{
    const struct virtio_9p *fs = (const struct virtio_9p *)vdev;
    uint8_t cfg[2 + P9_TAG_MAX];
    size_t n = strlen(fs->p->tag);
    uint16_t len = htole16((uint16_t)n);
    memcpy(cfg, &len, 2);
    memcpy(cfg + 2, fs->p->tag, n);
    if (offset >= 2 + n)
        return;
    size_t k = 2 + n - offset < size ? 2 + n - offset : size;
    memcpy(data, cfg + offset, k);
}

static int p9_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_9p *fs = (struct virtio_9p *)vdev;
    return virtio_serve_start(vdev, fs->loop, p9_serve, err);
}

static void p9_reset_in_loop(void *opaque)
{
    struct virtio_9p *fs = opaque;
    p9_server_reset(fs->server);
}

static void p9_reset(struct virtio_dev *vdev)
{
    struct virtio_9p *fs = (struct virtio_9p *)vdev;
    virtio_serve_stop(vdev);
    (void)evloop_call_sync(fs->loop, p9_reset_in_loop, fs);
}

/* The queue is served one request at a time on the I/O thread: once virtio_serve_stop()
 * returns nothing is in flight, and the session is only read here while nothing serves it. */
static int p9_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_9p *fs = (struct virtio_9p *)vdev;
    virtio_serve_stop(vdev);
    unsigned fids = p9_server_nr_fids(fs->server);
    if (fids)
        return wisp_err_set(err, EBUSY,
                            "a virtio-9p share cannot be snapshotted while the guest holds "
                            "%u fid%s on it (they are open host file descriptors): take the "
                            "snapshot before the guest mounts tag %s, or after it unmounts it",
                            fids, fids == 1 ? "" : "s", fs->p->tag);
    return 0;
}

static int p9_resume(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_9p *fs = (struct virtio_9p *)vdev;
    return virtio_serve_start(vdev, fs->loop, p9_serve, err);
}

static const struct virtio_dev_ops p9_ops = {
    .config_read = p9_config_read,
    .activate = p9_activate,
    .reset = p9_reset,
    .quiesce = p9_quiesce,
    .resume = p9_resume,
};

static int p9_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_9p *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = fs;
    fs->p = dev->params;
    int r = p9_check_tag(fs->p->tag, dev->name, err);
    if (r < 0)
        return r;
    fs->req = malloc(P9_MAX_MSIZE);
    fs->reply = malloc(P9_MAX_MSIZE);
    fs->iov = calloc(P9_MAX_IOV, sizeof(*fs->iov));
    if (!fs->req || !fs->reply || !fs->iov)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    /* each fid holds an fd: allow as many as the hard limit does */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &nofile);
    }
    r = p9_server_create(&fs->server, fs->p->path, fs->p->read_only, err);
    if (r < 0)
        return wisp_err_wrap(err, "%s", dev->name);
    char thread[48]; /* shown as its first 15 characters */
    snprintf(thread, sizeof(thread), "9p-%s", dev->name);
    r = iothread_start(&fs->thread, thread, err);
    if (r < 0)
        return r;
    fs->loop = iothread_loop(fs->thread);
    static const uint16_t sizes[] = {P9_QUEUE_SIZE};
    return virtio_dev_init(&fs->vdev, dev, &p9_ops, VIRTIO_ID_9P, 1ull << VIRTIO_9P_MOUNT_TAG, 1,
                           sizes, err);
}

static void p9_teardown(struct device *dev)
{
    struct virtio_9p *fs = dev->state;
    if (!fs)
        return;
    if (fs->vdev.dev)
        virtio_dev_destroy(&fs->vdev);
    iothread_stop(fs->thread);
    p9_server_destroy(fs->server);
    free(fs->req);
    free(fs->reply);
    free(fs->iov);
    free(fs);
    dev->state = NULL;
}

const struct device_ops virtio_9p_device_ops = {
    .type = "virtio-9p",
    .realize = p9_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = p9_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
};
