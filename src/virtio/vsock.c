/* virtio-vsock (virtio 1.2 §5.10): the device type, its configuration (guest_cid), and the
 * packets on its three queues: every packet the guest transmits is checked (header length,
 * payload length, src_cid = guest_cid, dst_cid = host, stream type, a known op) before it
 * touches a connection; packets to the guest are built here. The host side (sockets) is in
 * vsock_conn.c; the thread model is in vsock_int.h. */
#include <endian.h>
#include <errno.h>
#include <linux/virtio_ids.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/statebuf.h"
#include "devices/device.h"
#include "virtio/vsock_int.h"

#define VSOCK_LOG_LINES 8

/* Copies len bytes at `skip` of the chain's first `nr` iovecs into dst; false if too short. */
static bool iov_read(const struct iovec *iov, unsigned nr, uint64_t skip, void *dst, size_t len)
{
    uint8_t *d = dst;
    for (unsigned i = 0; i < nr && len; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        size_t n = iov[i].iov_len - skip < len ? iov[i].iov_len - skip : len;
        memcpy(d, (const uint8_t *)iov[i].iov_base + skip, n);
        d += n, len -= n, skip = 0;
    }
    return len == 0;
}

static bool iov_write(const struct iovec *iov, unsigned nr, const void *src, size_t len)
{
    const uint8_t *s = src;
    for (unsigned i = 0; i < nr && len; i++) {
        size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(iov[i].iov_base, s, n);
        s += n, len -= n;
    }
    return len == 0;
}

static void vsock_bad_packet(struct virtio_vsock *vs, const char *why, uint32_t op)
{
    vs->packets_dropped++;
    if (vs->log_budget) {
        vs->log_budget--;
        wisp_log("%s: dropped a packet from the guest (op %u): %s%s", vs->vdev.dev->name, op, why,
                 vs->log_budget ? "" : " (no more such lines)");
    }
}

/* A header from us to the guest about connection (host_port, guest_port). */
static void vsock_fill_hdr(struct virtio_vsock *vs, struct virtio_vsock_hdr *h, uint32_t host_port,
                           uint32_t guest_port, uint16_t op)
{
    memset(h, 0, sizeof(*h));
    h->src_cid = htole64(VSOCK_HOST_CID);
    h->dst_cid = htole64(vs->guest_cid);
    h->src_port = htole32(host_port);
    h->dst_port = htole32(guest_port);
    h->type = htole16(VIRTIO_VSOCK_TYPE_STREAM);
    h->op = htole16(op);
}

static void vsock_conn_credit_hdr(struct vsock_conn *c, struct virtio_vsock_hdr *h)
{
    h->buf_alloc = htole32(VSOCK_BUF_ALLOC);
    h->fwd_cnt = htole32(c->fwd_cnt);
    c->fwd_cnt_sent = c->fwd_cnt;
}

void vsock_queue_pending(struct vsock_conn *c, unsigned what)
{
    struct virtio_vsock *vs = c->vs;
    c->pending |= what;
    if (!c->on_ctl) {
        c->on_ctl = true;
        c->ctl_next = NULL;
        if (vs->ctl_tail)
            vs->ctl_tail->ctl_next = c;
        else
            vs->ctl_head = c;
        vs->ctl_tail = c;
    }
}

void vsock_queue_stray_rst(struct virtio_vsock *vs, uint32_t host_port, uint32_t guest_port)
{
    if (vs->stray_len == VSOCK_STRAY_MAX) /* tx stops before this happens; never grows */
        return;
    unsigned i = (vs->stray_head + vs->stray_len++) % VSOCK_STRAY_MAX;
    vs->stray[i] = (struct vsock_stray){.src_port = host_port, .dst_port = guest_port};
}

/* One header-only packet into the next receive chain; false when there is none. */
static bool vsock_rx_put_hdr(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h)
{
    struct virtq *q = &vs->vdev.queues[VSOCK_RX_QUEUE].vq;
    struct iovec iov[VSOCK_MAX_IOV];
    struct virtq_chain ch;
    struct wisp_err err = {0};
    for (;;) {
        int r = virtq_pop(q, &ch, iov, VSOCK_MAX_IOV, &err);
        if (r < 0) {
            virtio_needs_reset(&vs->vdev, &err);
            return false;
        }
        if (r == 0)
            return false;
        if (ch.in_len >= VSOCK_HDR_LEN) {
            iov_write(iov + ch.nr_out, ch.nr_in, h, VSOCK_HDR_LEN);
            virtq_push(q, ch.head, VSOCK_HDR_LEN);
            return true;
        }
        virtq_push(q, ch.head, 0); /* too small for a header: given back unused */
    }
}

static unsigned lowest_bit(unsigned v)
{
    return v & -v;
}

/* The next control packet of the first connection on the control list. */
static bool vsock_rx_one_control(struct virtio_vsock *vs)
{
    struct vsock_conn *c = vs->ctl_head;
    unsigned what = lowest_bit(c->pending);
    static const uint16_t ops[] = {VIRTIO_VSOCK_OP_REQUEST, VIRTIO_VSOCK_OP_RESPONSE,
                                   VIRTIO_VSOCK_OP_CREDIT_UPDATE, VIRTIO_VSOCK_OP_SHUTDOWN,
                                   VIRTIO_VSOCK_OP_RST};
    unsigned idx = (unsigned)__builtin_ctz(what);
    struct virtio_vsock_hdr h;
    uint32_t told = c->fwd_cnt_sent;
    vsock_fill_hdr(vs, &h, c->host_port, c->guest_port, ops[idx]);
    vsock_conn_credit_hdr(c, &h);
    if (what == VSOCK_SEND_SHUTDOWN)
        h.flags = htole32(VIRTIO_VSOCK_SHUTDOWN_SEND);
    if (!vsock_rx_put_hdr(vs, &h)) {
        c->fwd_cnt_sent = told; /* not sent after all */
        return false;
    }
    c->pending &= ~what;
    if (!c->pending || what == VSOCK_SEND_RST) {
        vs->ctl_head = c->ctl_next;
        if (!vs->ctl_head)
            vs->ctl_tail = NULL;
        c->on_ctl = false;
        if (what == VSOCK_SEND_RST)
            vsock_conn_free(c);
        else
            vsock_conn_update_events(c);
    }
    return true;
}

static void vsock_tx_run(struct virtio_vsock *vs);

void vsock_rx_run(struct virtio_vsock *vs)
{
    if (!vs->serving)
        return;
    bool pushed = false;
    for (;;) {
        if (vs->stray_len) {
            const struct vsock_stray *s = &vs->stray[vs->stray_head];
            struct virtio_vsock_hdr h;
            vsock_fill_hdr(vs, &h, s->src_port, s->dst_port, VIRTIO_VSOCK_OP_RST);
            if (!vsock_rx_put_hdr(vs, &h))
                break;
            vs->stray_head = (vs->stray_head + 1) % VSOCK_STRAY_MAX;
            vs->stray_len--;
        } else if (vs->ctl_head) {
            if (!vsock_rx_one_control(vs))
                break;
        } else {
            break;
        }
        pushed = true;
    }
    if (pushed)
        virtio_notify_queue(&vs->vdev, &vs->vdev.queues[VSOCK_RX_QUEUE].vq);
    if (vs->stray_len || vs->ctl_head)
        vs->rx_starved = true;
    if (vs->tx_blocked && vs->stray_len < VSOCK_STRAY_MAX) {
        vs->tx_blocked = false;
        vsock_tx_run(vs);
    }
}

int vsock_rx_data(struct vsock_conn *c)
{
    struct virtio_vsock *vs = c->vs;
    struct virtq *q = &vs->vdev.queues[VSOCK_RX_QUEUE].vq;
    struct iovec iov[VSOCK_MAX_IOV + 1], data[VSOCK_MAX_IOV + 1];
    struct virtq_chain ch;
    struct wisp_err err = {0};
    int r = virtq_pop(q, &ch, iov, VSOCK_MAX_IOV, &err);
    if (r < 0) {
        virtio_needs_reset(&vs->vdev, &err);
        return -1;
    }
    if (r == 0)
        return -1;
    if (ch.in_len <= VSOCK_HDR_LEN) {
        virtq_push(q, ch.head, 0);
        virtio_notify_queue(&vs->vdev, q);
        return 1;
    }
    /* the writable part after the header, at most the credit and one packet's payload */
    uint64_t room = ch.in_len - VSOCK_HDR_LEN, credit = vsock_conn_peer_credit(c);
    if (room > credit)
        room = credit;
    if (room > VSOCK_MAX_PAYLOAD)
        room = VSOCK_MAX_PAYLOAD;
    if (room == 0) { /* no credit: the caller stops reading until some comes */
        virtq_unpop(q);
        return 0;
    }
    unsigned nd = 0;
    uint64_t skip = VSOCK_HDR_LEN, left = room;
    for (unsigned i = ch.nr_out; i < ch.nr_out + ch.nr_in && left; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        size_t n = iov[i].iov_len - skip < left ? iov[i].iov_len - skip : left;
        data[nd++] = (struct iovec){(uint8_t *)iov[i].iov_base + skip, n};
        left -= n, skip = 0;
    }
    ssize_t n = readv(c->fd, data, (int)nd);
    if (n <= 0) {
        virtq_unpop(q);
        if (n == 0) {
            c->host_eof = true;
            vsock_queue_pending(c, VSOCK_SEND_SHUTDOWN);
        } else if (errno != EAGAIN && errno != EINTR) {
            vsock_conn_close(c, true);
        }
        return 0;
    }
    struct virtio_vsock_hdr h;
    vsock_fill_hdr(vs, &h, c->host_port, c->guest_port, VIRTIO_VSOCK_OP_RW);
    vsock_conn_credit_hdr(c, &h);
    h.len = htole32((uint32_t)n);
    iov_write(iov + ch.nr_out, ch.nr_in, &h, VSOCK_HDR_LEN);
    virtq_push(q, ch.head, VSOCK_HDR_LEN + (uint32_t)n);
    virtio_notify_queue(&vs->vdev, q);
    c->tx_cnt += (uint32_t)n;
    vs->bytes_to_guest += (uint64_t)n;
    return 1;
}

/* A REQUEST, or a packet for a connection: the op's effect. hdr fields are host-endian. */
static void vsock_tx_packet(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h,
                            const struct iovec *iov, unsigned nr)
{
    uint16_t op = h->op;
    uint32_t host_port = h->dst_port, guest_port = h->src_port;
    struct vsock_conn *c = vsock_conn_find(vs, host_port, guest_port);
    if (op == VIRTIO_VSOCK_OP_REQUEST) {
        if (c) {
            vsock_bad_packet(vs, "REQUEST for a connection that exists", op);
            vsock_conn_close(c, true);
            return;
        }
        vsock_conn_guest_request(vs, host_port, guest_port);
        c = vsock_conn_find(vs, host_port, guest_port);
        if (c) {
            c->peer_buf_alloc = h->buf_alloc;
            c->peer_fwd_cnt = h->fwd_cnt;
        }
        return;
    }
    if (!c || c->state == VSOCK_CONN_CLOSED || c->state == VSOCK_CONN_LINE) {
        if (op != VIRTIO_VSOCK_OP_RST) {
            vsock_bad_packet(vs, "no such connection", op);
            vsock_queue_stray_rst(vs, host_port, guest_port);
        }
        return;
    }
    c->peer_buf_alloc = h->buf_alloc;
    c->peer_fwd_cnt = h->fwd_cnt;
    switch (op) {
    case VIRTIO_VSOCK_OP_RESPONSE:
        if (c->state != VSOCK_CONN_REQUESTED) {
            vsock_bad_packet(vs, "RESPONSE to no REQUEST", op);
            vsock_conn_close(c, true);
        } else {
            vsock_conn_accepted(c);
        }
        return;
    case VIRTIO_VSOCK_OP_RST:
        vsock_conn_close(c, false);
        return;
    case VIRTIO_VSOCK_OP_SHUTDOWN:
        vsock_conn_guest_shutdown(c, h->flags);
        return;
    case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        vsock_queue_pending(c, VSOCK_SEND_CREDIT);
        break;
    case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        break;
    case VIRTIO_VSOCK_OP_RW:
        if (c->state != VSOCK_CONN_OPEN || c->guest_shut_send) {
            vsock_bad_packet(vs, "data on a connection that is not open for it", op);
            vsock_conn_close(c, true);
            return;
        }
        if (!vsock_conn_from_guest(c, iov, nr, VSOCK_HDR_LEN, h->len)) {
            vsock_bad_packet(vs, "more data than the credit it was given", op);
            vsock_conn_close(c, true);
            return;
        }
        break;
    }
    vsock_conn_update_events(c); /* new credit may let host data flow */
}

/* Checks a transmitted chain (§5.10.6); returns the header host-endian, or false (dropped). */
static bool vsock_tx_check(struct virtio_vsock *vs, const struct virtq_chain *ch,
                           struct virtio_vsock_hdr *h)
{
    struct virtio_vsock_hdr raw;
    if (ch->out_len < VSOCK_HDR_LEN || !iov_read(ch->iov, ch->nr_out, 0, &raw, VSOCK_HDR_LEN)) {
        vsock_bad_packet(vs, "shorter than a header", 0);
        return false;
    }
    *h = (struct virtio_vsock_hdr){
        .src_cid = le64toh(raw.src_cid),
        .dst_cid = le64toh(raw.dst_cid),
        .src_port = le32toh(raw.src_port),
        .dst_port = le32toh(raw.dst_port),
        .len = le32toh(raw.len),
        .type = le16toh(raw.type),
        .op = le16toh(raw.op),
        .flags = le32toh(raw.flags),
        .buf_alloc = le32toh(raw.buf_alloc),
        .fwd_cnt = le32toh(raw.fwd_cnt),
    };
    const char *why = NULL;
    if (h->src_cid != vs->guest_cid)
        why = "src_cid is not the guest's cid";
    else if (h->dst_cid != VSOCK_HOST_CID)
        why = "dst_cid is not the host (2)";
    else if (h->len > ch->out_len - VSOCK_HDR_LEN)
        why = "len is beyond the buffers";
    else if (h->len > VSOCK_MAX_PAYLOAD)
        why = "len is above 64 KiB";
    if (why) { /* not addressed to a connection we could reset: dropped */
        vsock_bad_packet(vs, why, h->op);
        return false;
    }
    if (h->type != VIRTIO_VSOCK_TYPE_STREAM)
        why = "not a stream packet";
    else if (h->op < VIRTIO_VSOCK_OP_REQUEST || h->op > VIRTIO_VSOCK_OP_CREDIT_REQUEST)
        why = "unknown op";
    else if (h->len && h->op != VIRTIO_VSOCK_OP_RW)
        why = "payload on a control packet";
    if (why) {
        vsock_bad_packet(vs, why, h->op);
        if (h->op != VIRTIO_VSOCK_OP_RST) {
            struct vsock_conn *c = vsock_conn_find(vs, h->dst_port, h->src_port);
            if (c)
                vsock_conn_close(c, true);
            else
                vsock_queue_stray_rst(vs, h->dst_port, h->src_port);
        }
        return false;
    }
    return true;
}

static void vsock_tx_run(struct virtio_vsock *vs)
{
    if (!vs->serving)
        return;
    struct virtq *q = &vs->vdev.queues[VSOCK_TX_QUEUE].vq;
    struct iovec iov[VSOCK_MAX_IOV];
    struct virtq_chain ch;
    struct wisp_err err = {0};
    bool pushed = false;
    for (;;) {
        if (vs->stray_len >= VSOCK_STRAY_MAX - 1) { /* each packet adds at most one */
            vs->tx_blocked = true;
            break;
        }
        int r = virtq_pop(q, &ch, iov, VSOCK_MAX_IOV, &err);
        if (r < 0) {
            virtio_needs_reset(&vs->vdev, &err);
            break;
        }
        if (r == 0)
            break;
        struct virtio_vsock_hdr h;
        if (vsock_tx_check(vs, &ch, &h))
            vsock_tx_packet(vs, &h, iov, ch.nr_out);
        virtq_push(q, ch.head, 0);
        pushed = true;
    }
    if (pushed)
        virtio_notify_queue(&vs->vdev, q);
    vsock_rx_run(vs);
}

/* §5.10.6.7: after a restore every connection is gone; the driver is told so. */
static void vsock_event_run(struct virtio_vsock *vs)
{
    if (!vs->serving || !vs->reset_event)
        return;
    struct virtq *q = &vs->vdev.queues[VSOCK_EVENT_QUEUE].vq;
    struct iovec iov[VSOCK_MAX_IOV];
    struct virtq_chain ch;
    struct wisp_err err = {0};
    int r = virtq_pop(q, &ch, iov, VSOCK_MAX_IOV, &err);
    if (r < 0)
        virtio_needs_reset(&vs->vdev, &err);
    if (r <= 0)
        return;
    uint32_t id = htole32(VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
    bool ok = ch.in_len >= sizeof(id) && iov_write(iov + ch.nr_out, ch.nr_in, &id, sizeof(id));
    virtq_push(q, ch.head, ok ? sizeof(id) : 0);
    virtio_notify_queue(&vs->vdev, q);
    if (ok)
        vs->reset_event = false;
}

static void vsock_rx_refilled(struct virtio_vsock *vs)
{
    vs->rx_starved = false;
    vsock_rx_run(vs);
    for (struct vsock_conn *c = vs->conns; c; c = c->next)
        vsock_conn_update_events(c);
}

static void vsock_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_vsock *vs = (struct virtio_vsock *)vdev;
    if (queue == VSOCK_RX_QUEUE)
        vsock_rx_refilled(vs);
    else if (queue == VSOCK_TX_QUEUE)
        vsock_tx_run(vs);
    else
        vsock_event_run(vs);
}

/* §5.10.4: guest_cid, le64, read-only. */
static void vsock_config_read(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size)
{
    const struct virtio_vsock *vs = (const struct virtio_vsock *)vdev;
    uint64_t cid = htole64(vs->guest_cid);
    if (offset >= sizeof(cid))
        return;
    size_t len = sizeof(cid) - offset < size ? sizeof(cid) - offset : size;
    memcpy(data, (const uint8_t *)&cid + offset, len);
}

static void vsock_set_serving(void *opaque)
{
    struct virtio_vsock *vs = opaque;
    vs->serving = true;
    vsock_host_pause(vs, false);
}

static void vsock_stop_serving(void *opaque)
{
    struct virtio_vsock *vs = opaque;
    vs->serving = false;
    vsock_host_pause(vs, true);
}

static int vsock_start(struct virtio_vsock *vs, struct wisp_err *err)
{
    if (evloop_call_sync(vs->loop, vsock_set_serving, vs) < 0)
        return wisp_err_set(err, ECANCELED, "%s: the I/O thread has stopped", vs->vdev.dev->name);
    int r = virtio_serve_start(&vs->vdev, vs->loop, vsock_serve, err);
    if (r < 0)
        (void)evloop_call_sync(vs->loop, vsock_stop_serving, vs);
    return r;
}

static int vsock_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_vsock *vs = (struct virtio_vsock *)vdev;
    if (vs->restored) {
        vs->restored = false;
        vs->reset_event = true;
    }
    return vsock_start(vs, err);
}

static void vsock_reset_in_loop(void *opaque)
{
    struct virtio_vsock *vs = opaque;
    vs->serving = false;
    vsock_conn_drop_all(vs); /* the driver forgot them too */
    vs->stray_len = 0;
    vs->rx_starved = vs->tx_blocked = vs->reset_event = false;
    vsock_host_pause(vs, false); /* host clients may connect again; they wait for the driver */
}

static void vsock_reset(struct virtio_dev *vdev)
{
    struct virtio_vsock *vs = (struct virtio_vsock *)vdev;
    virtio_serve_stop(vdev);
    (void)evloop_call_sync(vs->loop, vsock_reset_in_loop, vs);
}

/* Nothing is in flight between callbacks: quiescing stops the queues and the sockets. */
static int vsock_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_vsock *vs = (struct virtio_vsock *)vdev;
    virtio_serve_stop(vdev);
    (void)evloop_call_sync(vs->loop, vsock_stop_serving, vs);
    return 0;
}

static int vsock_resume(struct virtio_dev *vdev, struct wisp_err *err)
{
    return vsock_start((struct virtio_vsock *)vdev, err);
}

/* Connections are not saved (Firecracker's rule): a restored device has none, and its driver
 * gets a TRANSPORT_RESET event, at which it reads guest_cid again (Linux's
 * virtio_vsock_update_guest_cid): so a clone may be given another cid (vsock_override). */
static int vsock_save(struct virtio_dev *vdev, struct state_writer *w, struct wisp_err *err)
{
    state_put_u64(w, ((const struct virtio_vsock *)vdev)->guest_cid);
    return 0;
}

static int vsock_load(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err)
{
    struct virtio_vsock *vs = (struct virtio_vsock *)vdev;
    (void)state_get_u64(r); /* the snapshot's cid; the configuration's (maybe overridden) stands */
    vs->restored = true;
    return 0;
}

static const struct virtio_dev_ops vsock_ops = {
    .config_read = vsock_config_read,
    .activate = vsock_activate,
    .reset = vsock_reset,
    .quiesce = vsock_quiesce,
    .resume = vsock_resume,
    .save = vsock_save,
    .load = vsock_load,
};

static void vsock_listen_in_loop(void *opaque)
{
    struct virtio_vsock *vs = opaque;
    vsock_host_pause(vs, false);
}

static int vsock_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_vsock *vs = calloc(1, sizeof(*vs));
    if (!vs)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = vs;
    vs->p = dev->params;
    vs->guest_cid = vs->p->guest_cid;
    vs->listen_fd = -1;
    vs->next_local_port = VSOCK_LOCAL_PORT0;
    vs->log_budget = VSOCK_LOG_LINES;
    if (vs->guest_cid < VSOCK_MIN_GUEST_CID || vs->guest_cid > VSOCK_MAX_GUEST_CID)
        return wisp_err_set(err, EINVAL, "%s: guest_cid %llu is outside %u..%u", dev->name,
                            (unsigned long long)vs->guest_cid, VSOCK_MIN_GUEST_CID,
                            VSOCK_MAX_GUEST_CID);
    int r = vsock_host_listen(vs, err);
    if (r < 0)
        return r;
    char thread[48]; /* shown as its first 15 characters */
    snprintf(thread, sizeof(thread), "vsock-%s", dev->name);
    r = iothread_start(&vs->thread, thread, err);
    if (r < 0)
        return r;
    vs->loop = iothread_loop(vs->thread);
    static const uint16_t sizes[] = {VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE};
    r = virtio_dev_init(&vs->vdev, dev, &vsock_ops, VIRTIO_ID_VSOCK, 0, 3, sizes, err);
    if (r < 0)
        return r;
    (void)evloop_call_sync(vs->loop, vsock_listen_in_loop, vs);
    return 0;
}

static void vsock_teardown_in_loop(void *opaque)
{
    struct virtio_vsock *vs = opaque;
    vsock_conn_drop_all(vs);
    vsock_host_pause(vs, true);
}

static void vsock_teardown(struct device *dev)
{
    struct virtio_vsock *vs = dev->state;
    if (!vs)
        return;
    if (vs->vdev.dev)
        virtio_dev_destroy(&vs->vdev); /* resets the device: the queues are let go */
    if (vs->loop)
        (void)evloop_call_sync(vs->loop, vsock_teardown_in_loop, vs);
    iothread_stop(vs->thread);
    vsock_host_unlisten(vs);
    free(vs);
    dev->state = NULL;
}

const struct device_ops virtio_vsock_device_ops = {
    .type = "virtio-vsock",
    .realize = vsock_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = vsock_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
};
