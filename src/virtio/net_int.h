/* virtio-net internals: the device state shared by net.c (device type, configuration,
 * activate/reset) and net_io.c (the data path on the NIC's I/O thread), and the pure header and
 * frame functions of net_frame.c, which touch nothing but the buffers they are given (a fuzz
 * target can call them on any bytes). */
#ifndef WISP_VIRTIO_NET_INT_H
#define WISP_VIRTIO_NET_INT_H

#include <linux/virtio_net.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/err.h"
#include "common/evloop.h"
#include "common/ratelimit.h"
#include "net/tap.h"
#include "virtio/net.h"
#include "virtio/virtio.h"

/* virtio 1.x: the header always has num_buffers (§5.1.6), 12 bytes, in front of every frame */
#define NET_HDR_LEN sizeof(struct virtio_net_hdr_v1)
/* The largest header + frame either way (§5.1.6.3.1: receive buffers of 65562 bytes) */
#define NET_MAX_LEN   65562
#define NET_ETH_HLEN  14
#define NET_RX_QUEUE  0 /* receiveq1 (§5.1.2) */
#define NET_TX_QUEUE  1 /* transmitq1 */
#define NET_QUEUE_MAX 256
/* iovecs one received frame may spread over (several chains with MRG_RXBUF) */
#define NET_RX_MAX_IOV 1024

/* ---- pure functions (net_frame.c) ------------------------------------------------------- */

/* Copies up to len bytes from byte `offset` of the iovec list into dst; returns the count. */
size_t net_iov_to_buf(const struct iovec *iov, unsigned n, size_t offset, void *dst, size_t len);
/* Copies up to len bytes from src into the iovec list from byte `offset`; returns the count. */
size_t net_buf_to_iov(const struct iovec *iov, unsigned n, size_t offset, const void *src,
                      size_t len);
/* The iovecs of iov[0..n) from byte `skip` on, into out[] (at most max); returns the count. */
unsigned net_iov_tail(const struct iovec *iov, unsigned n, size_t skip, struct iovec *out,
                      unsigned max);

/* A checked transmit request: the header to give the tap, and the frame's length. */
struct net_tx_frame {
    struct virtio_net_hdr_v1 hdr; /* a copy of the guest's, checked and normalised */
    size_t len;                   /* bytes of the frame after the header */
};

/*
 * §5.1.6.2: checks a transmit chain of nr_out device-readable and nr_in device-writable
 * buffers against the negotiated features: readable buffers only, at least the header, at most
 * NET_MAX_LEN bytes, a frame of at least an Ethernet header, and a header the device can act on
 * (net_tx_hdr_check). Fills *f and data[] (at most max_data iovecs: the frame without the
 * header). Returns the number of data iovecs, or -EINVAL with *why saying what is wrong: the
 * frame is dropped.
 */
int net_tx_parse(const struct iovec *iov, unsigned nr_out, unsigned nr_in, uint64_t features,
                 struct net_tx_frame *f, struct iovec *data, unsigned max_data, const char **why);
/* §5.1.6.2.2: the header of a frame_len-byte frame: flags the device does not know are
 * ignored (cleared), a partial checksum needs VIRTIO_NET_F_CSUM and must lie in the frame, a
 * GSO type needs its HOST_ feature and a gso_size; hdr_len is bounded by the frame;
 * num_buffers is 0. Returns 0 or -EINVAL with *why. */
int net_tx_hdr_check(struct virtio_net_hdr_v1 *h, uint64_t features, size_t frame_len,
                     const char **why);

/*
 * §5.1.6.4: makes the header the tap put in front of a received frame (frame[0..frame_len),
 * after the header) right for a driver with `features`: without VIRTIO_NET_F_GUEST_CSUM,
 * flags are 0 and a partial checksum is completed here; a GSO type needs its GUEST_ feature;
 * num_buffers is set by the caller. Returns 0, or -EINVAL with *why: the frame is dropped.
 */
int net_rx_hdr_fixup(struct virtio_net_hdr_v1 *h, uint8_t *frame, size_t frame_len,
                     uint64_t features, const char **why);
/* Writes the Internet checksum (RFC 1071) of frame[start..len) at frame[start + offset],
 * the field holding its initial value (the pseudo-header sum, or 0). -EINVAL when out of it. */
int net_csum_complete(uint8_t *frame, size_t len, unsigned start, unsigned offset);

/* The TUN_F_* offloads the tap may use in frames for a driver with `features` (its GUEST_*). */
unsigned net_tap_offloads(uint64_t features);
/* The offload features to offer for a tap that accepts tun_offloads (TUN_F_*). */
uint64_t net_offload_features(unsigned tun_offloads);
/* A locally administered unicast MAC derived from the device name and the tap's name (two
 * NICs of a VM, or of two VMs on one host, have different taps). */
void net_default_mac(const char *name, const char *tap, uint8_t mac[6]);

/* ---- the device ----------------------------------------------------------------------- */

/* A receive chain taken for the frame being placed (held until the frame is complete). */
struct net_rx_slot {
    uint16_t head;
    unsigned iov_first, nr_iov;
    uint64_t cap;
};

struct virtio_net {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_net_params *p;
    struct tap tap;
    uint8_t config[10];      /* §5.1.4: mac, status, max_virtqueue_pairs */
    struct iothread *thread; /* "net-<name>": serves both queues and the tap */
    struct evloop *loop;

    /* Set by activate before serving starts; then owned by the I/O thread until reset. */
    uint64_t features;
    bool rx_ok, tx_ok; /* the queue was ready (mapped) at DRIVER_OK */
    struct token_bucket rx_bucket, tx_bucket;
    struct token_bucket rx_ops_bucket, tx_ops_bucket; /* frames per second */
    struct virtio_net_rate rx_rate, tx_rate;          /* from params, or virtio_net_set_rates */

    /* I/O thread only */
    bool running;
    bool tap_gone; /* the tap went away (EPOLLERR): frames are dropped */
    struct evloop_source *tap_src, *rx_timer, *tx_timer;
    uint32_t tap_events;
    bool rx_wait_buffers; /* no receive buffers: EPOLLIN off until the driver adds some */
    bool rx_wait_tokens, tx_wait_tokens; /* the rate limit's timer is armed */
    bool tx_blocked;                     /* the tap's queue was full: wait for EPOLLOUT */
    struct evloop_call tx_more;          /* transmit continues after a batch */
    /* the frame read from the tap that is not in guest buffers yet (header first) */
    uint8_t *rx_buf;
    size_t rx_len;
    struct net_rx_slot rx_slots[NET_QUEUE_MAX];
    unsigned nr_slots, rx_iov_used;
    uint64_t rx_cap;
    struct iovec rx_iov[NET_RX_MAX_IOV];
    unsigned logged; /* NET_LOGGED_* problems already logged once */

    /* counters (I/O thread) */
    uint64_t rx_frames, rx_bytes, rx_dropped, tx_frames, tx_bytes, tx_dropped;
};

/* net.c: the buckets from rx_rate/tx_rate (I/O thread, or before it serves). */
void net_init_buckets(struct virtio_net *n);
/* net_io.c: the limits changed (I/O thread): frames waiting for tokens look again. */
void net_io_rates_changed(struct virtio_net *n);
/* net_io.c: starts serving (activate) and stops (reset), from the transport's thread. */
int net_io_start(struct virtio_net *n, struct wisp_err *err);
void net_io_stop(struct virtio_net *n);
/* Snapshots: stops serving with nothing of the guest's held (net_io_start serves again). */
void net_io_quiesce(struct virtio_net *n);

#endif
