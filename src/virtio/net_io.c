/* virtio-net's data path (virtio 1.2 §5.1.6), on the NIC's I/O thread: transmit chains go to
 * the tap as they are (the header checked, the frame written from guest memory), frames read
 * from the tap go into receive chains (spread over several with VIRTIO_NET_F_MRG_RXBUF).
 *
 * Nothing here blocks: the tap is non-blocking and watched on the thread's loop, EPOLLIN only
 * while the driver has receive buffers (otherwise frames stay in the tap, whose queue the kernel
 * bounds), EPOLLOUT only after the tap refused a frame. At most one received frame waits here,
 * for more buffers. The rate limits are token buckets that may go into debt: a frame is sent
 * (or read) when the bucket is out of debt and then charged, so nothing is dropped by the
 * limiter; in debt, a timer on the loop ends the wait. */
#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "devices/device.h"
#include "virtio/net_int.h"

#define NET_RX_BUDGET 64  /* frames per callback, so that one direction cannot starve the other */
#define NET_TX_BUDGET 256 /* chains per callback, then the loop runs once before more */

enum net_logged {
    NET_LOGGED_TX_DROP = 1u << 0,
    NET_LOGGED_RX_DROP = 1u << 1,
    NET_LOGGED_RX_CHAIN = 1u << 2,
    NET_LOGGED_TAP_ERROR = 1u << 3,
};

/* One line per kind of problem and device: a guest cannot fill the log. */
static void net_log_once(struct virtio_net *n, enum net_logged kind, const char *what,
                         const char *why)
{
    if (n->logged & kind)
        return;
    n->logged |= kind;
    wisp_log("%s: %s: %s (further ones are counted, not logged)", n->vdev.dev->name, what, why);
}

static struct virtq *rx_queue(struct virtio_net *n)
{
    return &n->vdev.queues[NET_RX_QUEUE].vq;
}

static struct virtq *tx_queue(struct virtio_net *n)
{
    return &n->vdev.queues[NET_TX_QUEUE].vq;
}

/* Until both buckets (bytes, frames) are out of debt. */
static void arm_wait(struct evloop_source *timer, struct token_bucket *tb, struct token_bucket *ops)
{
    uint64_t ns = token_bucket_wait_ns(tb, 0), ops_ns = token_bucket_wait_ns(ops, 0);
    if (ops_ns > ns)
        ns = ops_ns;
    (void)evloop_timer_arm(timer, ns ? ns : 1000, 0); /* 0 would disarm it */
}

/* EPOLLIN while a frame can be taken, EPOLLOUT while a frame waits for room in the tap. */
static void update_events(struct virtio_net *n)
{
    if (!n->tap_src)
        return;
    uint32_t ev = 0;
    if (n->running && n->rx_ok && !n->rx_len && !n->rx_wait_buffers && !n->rx_wait_tokens)
        ev |= EPOLLIN;
    if (n->running && n->tx_blocked)
        ev |= EPOLLOUT;
    if (ev != n->tap_events && evloop_fd_modify(n->tap_src, ev) == 0)
        n->tap_events = ev;
}

/* The tap is unusable (deleted, detached): stop watching it; guest frames are dropped. */
static void tap_failed(struct virtio_net *n, const char *what, int e)
{
    wisp_log("%s: tap '%s': %s: %s; the NIC has no host side any more, its frames are dropped",
             n->vdev.dev->name, n->tap.name, what, strerror(e));
    n->tap_gone = true;
    n->tx_blocked = false;
    evloop_source_remove(n->tap_src);
    n->tap_src = NULL;
}

/* ---- transmit ---------------------------------------------------------------------------- */

/* Sends one chain's frame. Returns 1 when the chain is done (sent or dropped), 0 when the tap
 * is full (the chain is given back to the ring and EPOLLOUT awaited). */
static int tx_one(struct virtio_net *n, const struct virtq_chain *c)
{
    struct iovec data[NET_QUEUE_MAX + 1];
    struct net_tx_frame f;
    const char *why = NULL;
    int nd =
        net_tx_parse(c->iov, c->nr_out, c->nr_in, n->features, &f, data + 1, NET_QUEUE_MAX, &why);
    if (nd < 0) {
        n->tx_dropped++;
        net_log_once(n, NET_LOGGED_TX_DROP, "transmit frame dropped", why);
        return 1;
    }
    if (n->tap_gone) {
        n->tx_dropped++;
        return 1;
    }
    data[0] = (struct iovec){.iov_base = &f.hdr, .iov_len = NET_HDR_LEN};
    ssize_t w = tap_writev(&n->tap, data, nd + 1);
    if (w == -EAGAIN) {
        virtq_unpop(tx_queue(n));
        n->tx_blocked = true;
        return 0;
    }
    if (w < 0) { /* -EIO: the tap is down; -EINVAL: the kernel refused the frame */
        n->tx_dropped++;
        net_log_once(n, NET_LOGGED_TAP_ERROR, "transmit frame dropped by the tap",
                     w == -EIO ? "the tap is down (ip link set <tap> up)" : strerror(-w));
        return 1;
    }
    (void)token_bucket_try(&n->tx_bucket, f.len); /* out of debt: always charged */
    (void)token_bucket_try(&n->tx_ops_bucket, 1);
    n->tx_frames++;
    n->tx_bytes += f.len;
    return 1;
}

/* §5.1.6.2: transmits what the driver made available, in batches. */
static void net_tx(struct virtio_net *n)
{
    struct virtq *q = tx_queue(n);
    if (!n->running || !n->tx_ok || n->tx_blocked || n->tx_wait_tokens)
        return;
    struct iovec iov[NET_QUEUE_MAX];
    struct wisp_err err = {0};
    bool pushed = false;
    virtq_disable_notify(q);
    for (unsigned done = 0;; done++) {
        if (done == NET_TX_BUDGET) { /* more later, after the loop's other work */
            evloop_call_async(n->loop, &n->tx_more);
            break;
        }
        if (!token_bucket_try(&n->tx_bucket, 0) || !token_bucket_try(&n->tx_ops_bucket, 0)) {
            n->tx_wait_tokens = true;
            arm_wait(n->tx_timer, &n->tx_bucket, &n->tx_ops_bucket);
            break;
        }
        struct virtq_chain c;
        int r = virtq_pop(q, &c, iov, NET_QUEUE_MAX, &err);
        if (r < 0) {
            virtio_needs_reset(&n->vdev, &err);
            break;
        }
        if (r == 0) {
            if (!virtq_enable_notify(q))
                break;
            virtq_disable_notify(q); /* chains came meanwhile */
            continue;
        }
        if (!tx_one(n, &c))
            break;
        virtq_push(q, c.head, 0); /* nothing written into a transmit chain */
        pushed = true;
    }
    if (pushed)
        virtio_notify_queue(&n->vdev, q);
}

/* ---- receive ----------------------------------------------------------------------------- */

static void rx_forget(struct virtio_net *n)
{
    n->rx_len = 0;
    n->nr_slots = n->rx_iov_used = 0;
    n->rx_cap = 0;
}

/* The frame cannot go into the buffers the driver gave: dropped, its chains returned empty
 * (a used length of 0 is a buffer the driver drops, §5.1.6.4). */
static void rx_drop_held(struct virtio_net *n, const char *why, bool *pushed)
{
    for (unsigned i = 0; i < n->nr_slots; i++)
        virtq_push(rx_queue(n), n->rx_slots[i].head, 0);
    *pushed |= n->nr_slots > 0;
    n->rx_dropped++;
    net_log_once(n, NET_LOGGED_RX_DROP, "received frame dropped", why);
    rx_forget(n);
}

/* Copies the waiting frame into its chains and returns them (§5.1.6.4: num_buffers chains,
 * the header in the first). */
static void rx_deliver(struct virtio_net *n, bool *pushed)
{
    struct virtio_net_hdr_v1 *h = (struct virtio_net_hdr_v1 *)n->rx_buf;
    h->num_buffers = htole16((uint16_t)n->nr_slots);
    size_t off = 0;
    for (unsigned i = 0; i < n->nr_slots; i++) {
        const struct net_rx_slot *s = &n->rx_slots[i];
        size_t take = n->rx_len - off < s->cap ? n->rx_len - off : s->cap;
        net_buf_to_iov(&n->rx_iov[s->iov_first], s->nr_iov, 0, n->rx_buf + off, take);
        virtq_push(rx_queue(n), s->head, (uint32_t)take);
        off += take;
    }
    *pushed = true;
    size_t frame = n->rx_len - NET_HDR_LEN;
    (void)token_bucket_try(&n->rx_bucket, frame);
    (void)token_bucket_try(&n->rx_ops_bucket, 1);
    n->rx_frames++;
    n->rx_bytes += frame;
    rx_forget(n);
}

/*
 * Takes receive chains until the waiting frame fits, then delivers it. Without MRG_RXBUF one
 * chain must hold header and frame (§5.1.6.3.1), otherwise the frame is dropped and the chain
 * kept for the next. Returns 1 (delivered or dropped), 0 (waiting for buffers), -1 (the ring is
 * broken: DEVICE_NEEDS_RESET).
 */
static int rx_place(struct virtio_net *n, bool *pushed)
{
    struct virtq *q = rx_queue(n);
    bool mrg = virtio_has_feature(&n->vdev, VIRTIO_NET_F_MRG_RXBUF);
    struct wisp_err err = {0};
    while (n->rx_cap < n->rx_len) {
        if (!mrg && n->nr_slots == 1) {
            virtq_unpop(q); /* the last chain taken: kept for a smaller frame */
            n->nr_slots = 0;
            rx_drop_held(n, "larger than the receive buffer (no VIRTIO_NET_F_MRG_RXBUF)", pushed);
            return 1;
        }
        if (n->nr_slots == q->size || n->nr_slots == NET_QUEUE_MAX ||
            n->rx_iov_used == NET_RX_MAX_IOV) {
            rx_drop_held(n, "larger than all receive buffers of the ring", pushed);
            return 1;
        }
        struct virtq_chain c;
        int r = virtq_pop(q, &c, &n->rx_iov[n->rx_iov_used], NET_RX_MAX_IOV - n->rx_iov_used, &err);
        if (r == -E2BIG) {
            rx_drop_held(n, "spread over more buffers than the device takes", pushed);
            return 1;
        }
        if (r < 0) {
            virtio_needs_reset(&n->vdev, &err);
            rx_forget(n);
            return -1;
        }
        if (r == 0) {
            if (virtq_enable_notify(q))
                continue;
            n->rx_wait_buffers = true;
            return 0;
        }
        if (c.nr_out || c.in_len < NET_HDR_LEN) { /* §5.1.6.3.1: writable, header-sized */
            virtq_push(q, c.head, 0);
            *pushed = true;
            net_log_once(n, NET_LOGGED_RX_CHAIN, "receive chain returned unused",
                         c.nr_out ? "it has device-readable buffers"
                                  : "it is shorter than the virtio-net header");
            continue;
        }
        n->rx_slots[n->nr_slots++] = (struct net_rx_slot){
            .head = c.head, .iov_first = n->rx_iov_used, .nr_iov = c.nr_in, .cap = c.in_len};
        n->rx_iov_used += c.nr_in;
        n->rx_cap += c.in_len;
    }
    rx_deliver(n, pushed);
    return 1;
}

enum rx_fetch { RX_NONE, RX_FRAME, RX_DROPPED };

/* Reads one frame from the tap when the driver has buffers and the rate limit allows. */
static enum rx_fetch rx_fetch(struct virtio_net *n)
{
    if (n->tap_gone || n->rx_wait_buffers || n->rx_wait_tokens)
        return RX_NONE;
    if (!token_bucket_try(&n->rx_bucket, 0) || !token_bucket_try(&n->rx_ops_bucket, 0)) {
        n->rx_wait_tokens = true;
        arm_wait(n->rx_timer, &n->rx_bucket, &n->rx_ops_bucket);
        return RX_NONE;
    }
    struct virtq *q = rx_queue(n);
    if (!virtq_has_avail(q) && !virtq_enable_notify(q)) {
        n->rx_wait_buffers = true; /* frames stay in the tap */
        return RX_NONE;
    }
    ssize_t len = tap_read(&n->tap, n->rx_buf, NET_MAX_LEN + 1);
    if (len == -EAGAIN)
        return RX_NONE;
    if (len < 0) {
        tap_failed(n, "read", (int)-len);
        return RX_NONE;
    }
    const char *why = "longer than 65562 bytes";
    if ((size_t)len <= NET_MAX_LEN) {
        why = "shorter than an Ethernet header";
        if ((size_t)len >= NET_HDR_LEN + NET_ETH_HLEN &&
            net_rx_hdr_fixup((struct virtio_net_hdr_v1 *)n->rx_buf, n->rx_buf + NET_HDR_LEN,
                             (size_t)len - NET_HDR_LEN, n->features, &why) == 0) {
            n->rx_len = (size_t)len;
            return RX_FRAME;
        }
    }
    n->rx_dropped++;
    net_log_once(n, NET_LOGGED_RX_DROP, "frame from the tap dropped", why);
    return RX_DROPPED;
}

/* §5.1.6.4: moves frames from the tap into the receive queue, in batches. */
static void net_rx(struct virtio_net *n)
{
    if (!n->running || !n->rx_ok)
        return;
    bool pushed = false;
    for (unsigned i = 0; i < NET_RX_BUDGET; i++) {
        if (!n->rx_len) {
            enum rx_fetch f = rx_fetch(n);
            if (f == RX_NONE)
                break;
            if (f == RX_DROPPED)
                continue;
        }
        if (rx_place(n, &pushed) <= 0)
            break;
    }
    if (pushed)
        virtio_notify_queue(&n->vdev, rx_queue(n));
}

/* ---- loop callbacks ----------------------------------------------------------------------- */

static void tap_event(void *opaque, uint32_t events)
{
    struct virtio_net *n = opaque;
    if (events & (EPOLLERR | EPOLLHUP)) {
        tap_failed(n, "poll", EIO);
        net_tx(n); /* waiting transmit chains are dropped now */
        return;
    }
    if (events & EPOLLOUT) {
        n->tx_blocked = false;
        net_tx(n);
    }
    if (events & EPOLLIN)
        net_rx(n);
    update_events(n);
}

static void net_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_net *n = (struct virtio_net *)vdev;
    if (queue == NET_RX_QUEUE) {
        if (n->rx_wait_buffers) { /* buffers came: no more notifications needed for now */
            n->rx_wait_buffers = false;
            virtq_disable_notify(rx_queue(n));
        }
        net_rx(n);
    } else if (queue == NET_TX_QUEUE) {
        net_tx(n);
    }
    update_events(n);
}

static void rx_timer_fired(void *opaque)
{
    struct virtio_net *n = opaque;
    n->rx_wait_tokens = false;
    net_rx(n);
    update_events(n);
}

static void tx_timer_fired(void *opaque)
{
    struct virtio_net *n = opaque;
    n->tx_wait_tokens = false;
    net_tx(n);
    update_events(n);
}

void net_io_rates_changed(struct virtio_net *n)
{
    if (n->rx_wait_tokens && n->rx_timer) /* the timers fire at once and look again */
        (void)evloop_timer_arm(n->rx_timer, 1000, 0);
    if (n->tx_wait_tokens && n->tx_timer)
        (void)evloop_timer_arm(n->tx_timer, 1000, 0);
}

static void tx_more(void *opaque)
{
    struct virtio_net *n = opaque;
    net_tx(n);
    update_events(n);
}

/* ---- start and stop ------------------------------------------------------------------------ */

struct start_call {
    struct virtio_net *n;
    int result;
    struct wisp_err *err;
};

static void stop_in_loop(void *opaque)
{
    struct virtio_net *n = opaque;
    n->running = false;
    evloop_source_remove(n->tap_src);
    evloop_source_remove(n->rx_timer);
    evloop_source_remove(n->tx_timer);
    n->tap_src = n->rx_timer = n->tx_timer = NULL;
    n->tap_events = 0;
    n->rx_wait_buffers = n->rx_wait_tokens = n->tx_wait_tokens = n->tx_blocked = false;
    rx_forget(n); /* a frame that waited for buffers is lost with the reset */
}

static void start_in_loop(void *opaque)
{
    struct start_call *c = opaque;
    struct virtio_net *n = c->n;
    n->tx_more = (struct evloop_call){.fn = tx_more, .opaque = n};
    int r =
        n->tap_gone ? 0 : evloop_add_fd(n->loop, n->tap.fd, 0, tap_event, n, &n->tap_src, c->err);
    if (r == 0)
        r = evloop_add_timer(n->loop, rx_timer_fired, n, &n->rx_timer, c->err);
    if (r == 0)
        r = evloop_add_timer(n->loop, tx_timer_fired, n, &n->tx_timer, c->err);
    c->result = r;
    if (r < 0)
        stop_in_loop(n);
    else
        n->running = true;
}

int net_io_start(struct virtio_net *n, struct wisp_err *err)
{
    struct start_call c = {.n = n, .err = err};
    int r = evloop_call_sync(n->loop, start_in_loop, &c);
    if (r < 0)
        return wisp_err_set(err, -r, "%s: the I/O thread has stopped", n->vdev.dev->name);
    if (c.result < 0)
        return c.result;
    r = virtio_serve_start(&n->vdev, n->loop, net_serve, err);
    if (r < 0)
        (void)evloop_call_sync(n->loop, stop_in_loop, n);
    return r;
}

void net_io_stop(struct virtio_net *n)
{
    (void)evloop_call_sync(n->loop, stop_in_loop, n);
    virtio_serve_stop(&n->vdev);
}

/* In the I/O thread: receive chains held for a frame that waited for more buffers go back empty
 * (the frame is dropped, as a full ring would drop it); a transmit chain is never half-sent
 * (tx_one sends a whole frame or gives the chain back); the tap and timers are let go. */
static void quiesce_in_loop(void *opaque)
{
    struct virtio_net *n = opaque;
    bool pushed = false;
    if (n->nr_slots)
        rx_drop_held(n, "a snapshot was taken while it waited for receive buffers", &pushed);
    if (pushed)
        virtio_notify_queue(&n->vdev, rx_queue(n));
    stop_in_loop(n);
}

void net_io_quiesce(struct virtio_net *n)
{
    (void)evloop_call_sync(n->loop, quiesce_in_loop, n);
    virtio_serve_stop(&n->vdev);
}
