/* virtio-vsock from ring 3 (virtio 1.2 §5.10): a driver of one connection at a time, polling.
 * vsock.mode=1: connects to host port vsock.port (wisp-vmm: <uds>_<port>, where the test's
 * echo server is), sends vsock.bytes of a pattern and checks the echo byte-exact, with a
 * buf_alloc of 16 KiB so the echo is more than the credit allows and flows on CREDIT_UPDATEs;
 * then listens on port vsock.listen and echoes one host-initiated connection (CONNECT) back
 * until the host closes. vsock.mode=2 (snapshots): prints "vsock: ready", waits for a
 * TRANSPORT_RESET event (after a restore), then connects as in mode 1. Prints "vsock: ok". */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_VSOCK 19
#define HDR             44
#define NRX             16
#define RXLEN           (HDR + 4096)
#define BUF_ALLOC       16384
#define RING            (BUF_ALLOC + 4096)
#define OP_REQUEST      1
#define OP_RESPONSE     2
#define OP_RST          3
#define OP_SHUTDOWN     4
#define OP_RW           5
#define OP_CREDIT       6

struct hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static struct gvirtio_dev dev;
static struct gvirtq rxq, txq, evq;
static uint8_t *rxbuf[NRX];
static int rx_of_head[256];
static uint64_t cid;

struct conn {
    uint32_t local, peer;
    uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
    uint32_t fwd_cnt, fwd_sent, rx_cnt;
    bool open, peer_shut, reset;
    uint8_t ring[RING]; /* received, not yet consumed (echo mode) */
    uint32_t ring_len;
};
static struct conn c;

static void rx_add(unsigned i)
{
    struct gbuf b = {rxbuf[i], RXLEN};
    int head = gvirtq_add(&rxq, &b, 0, 1);
    GUEST_ASSERT(head >= 0 && head < 256);
    rx_of_head[head] = (int)i;
}

static void tx(uint16_t op, uint32_t flags, const void *data, uint32_t len)
{
    static struct hdr h;
    h = (struct hdr){.src_cid = cid,
                     .dst_cid = 2,
                     .src_port = c.local,
                     .dst_port = c.peer,
                     .len = len,
                     .type = 1,
                     .op = op,
                     .flags = flags,
                     .buf_alloc = BUF_ALLOC,
                     .fwd_cnt = c.fwd_cnt};
    static uint8_t payload[4096];
    GUEST_ASSERT(len <= sizeof(payload));
    memcpy(payload, data, len);
    struct gbuf b[2] = {{&h, HDR}, {payload, len}};
    GUEST_ASSERT(gvirtq_add(&txq, b, len ? 2 : 1, 0) >= 0);
    gvirtq_kick(&txq);
    uint16_t head;
    uint32_t used;
    GUEST_ASSERT(gvirtq_wait_used(&txq, &head, &used, 5000));
    c.fwd_sent = c.fwd_cnt;
    if (op == OP_RW)
        c.tx_cnt += len;
}

static uint32_t credit(void)
{
    uint32_t used = c.tx_cnt - c.peer_fwd_cnt;
    return used >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - used;
}

/* One received packet for the connection into h/data; false if none within timeout_ms. */
static bool rx(struct hdr *h, uint8_t *data, unsigned timeout_ms)
{
    uint16_t head;
    uint32_t len;
    if (!gvirtq_wait_used(&rxq, &head, &len, timeout_ms))
        return false;
    int i = rx_of_head[head];
    GUEST_ASSERT(len >= HDR && len <= RXLEN);
    memcpy(h, rxbuf[i], HDR);
    GUEST_ASSERT_EQ(h->len, len - HDR);
    GUEST_ASSERT_EQ(h->src_cid, 2);
    GUEST_ASSERT_EQ(h->dst_cid, cid);
    if (data)
        memcpy(data, rxbuf[i] + HDR, h->len);
    rx_add((unsigned)i);
    gvirtq_kick(&rxq);
    if (h->dst_port == c.local && h->src_port == c.peer) {
        c.peer_buf_alloc = h->buf_alloc;
        c.peer_fwd_cnt = h->fwd_cnt;
    }
    return true;
}

static uint8_t pattern(uint64_t i)
{
    return (uint8_t)(i * 131 + (i >> 9) + 7);
}

/* Takes what arrived for the connection: data into the ring (counted in fwd_cnt only when
 * consumed), the peer's shutdown and reset. */
static void poll_rx(unsigned timeout_ms)
{
    static uint8_t data[4096];
    struct hdr h;
    while (rx(&h, data, timeout_ms)) {
        timeout_ms = 0;
        if (h.dst_port != c.local || h.src_port != c.peer)
            continue;
        if (h.op == OP_RW) {
            c.rx_cnt += h.len; /* the device keeps to the credit it was last told */
            GUEST_ASSERT(c.rx_cnt - c.fwd_sent <= BUF_ALLOC && c.ring_len + h.len <= RING);
            memcpy(c.ring + c.ring_len, data, h.len);
            c.ring_len += h.len;
        } else if (h.op == OP_SHUTDOWN) {
            c.peer_shut = true;
        } else if (h.op == OP_RST) {
            c.reset = true;
        }
    }
}

static void consumed(uint32_t n)
{
    memmove(c.ring, c.ring + n, c.ring_len - n);
    c.ring_len -= n;
    c.fwd_cnt += n;
    if (c.fwd_cnt - c.fwd_sent >= 4096)
        tx(OP_CREDIT, 0, NULL, 0);
}

static void wait_reset(void)
{
    for (unsigned i = 0; i < 500 && !c.reset; i++)
        poll_rx(10);
    GUEST_ASSERT(c.reset);
}

/* Guest-initiated: sends `total` pattern bytes to host port `port` and checks the echo. */
static void connect_echo(uint32_t port, uint64_t total)
{
    memset(&c, 0, sizeof(c));
    c.local = 1024 + (uint32_t)guest_cmdline_u64("vsock.attempt", 0), c.peer = port;
    tx(OP_REQUEST, 0, NULL, 0);
    struct hdr h;
    GUEST_ASSERT(rx(&h, NULL, 5000));
    GUEST_ASSERT_EQ(h.op, OP_RESPONSE);
    static uint8_t chunk[4096];
    uint64_t sent = 0, got = 0;
    while (got < total) {
        uint32_t n = credit();
        if (n > 4096)
            n = 4096;
        if (n > total - sent)
            n = (uint32_t)(total - sent);
        if (n) {
            for (uint32_t i = 0; i < n; i++)
                chunk[i] = pattern(sent + i);
            tx(OP_RW, 0, chunk, n);
            sent += n;
        }
        poll_rx(n ? 0 : 10);
        GUEST_ASSERT(!c.reset);
        for (uint32_t i = 0; i < c.ring_len; i++)
            if (c.ring[i] != pattern(got + i)) {
                guest_printf("vsock: byte %lu differs\n", (unsigned long)(got + i));
                GUEST_ASSERT(0);
            }
        got += c.ring_len;
        consumed(c.ring_len);
        GUEST_ASSERT(!c.peer_shut || got == total); /* the host may close once it has all */
    }
    tx(OP_SHUTDOWN, 3, NULL, 0);
    wait_reset();
    guest_printf("vsock: guest-initiated %lu bytes echoed\n", (unsigned long)total);
}

/* Host-initiated: accepts one connection on `port` and echoes it until the host closes. */
static void listen_echo(uint32_t port)
{
    memset(&c, 0, sizeof(c));
    guest_printf("vsock: listening on %u\n", port);
    struct hdr h;
    do
        GUEST_ASSERT(rx(&h, NULL, 30000));
    while (h.op != OP_REQUEST || h.dst_port != port);
    c.local = port, c.peer = h.src_port;
    c.peer_buf_alloc = h.buf_alloc, c.peer_fwd_cnt = h.fwd_cnt;
    tx(OP_RESPONSE, 0, NULL, 0);
    uint64_t echoed = 0;
    while (!(c.peer_shut && c.ring_len == 0)) {
        poll_rx(c.ring_len ? 0 : 10);
        GUEST_ASSERT(!c.reset);
        uint32_t n = credit();
        if (n > c.ring_len)
            n = c.ring_len;
        if (n > 4096)
            n = 4096;
        if (n) {
            tx(OP_RW, 0, c.ring, n);
            echoed += n;
            consumed(n);
        }
    }
    tx(OP_RST, 0, NULL, 0);
    guest_printf("vsock: host-initiated %lu bytes echoed\n", (unsigned long)echoed);
}

static void wait_transport_reset(void)
{
    guest_printf("vsock: ready\n");
    uint16_t head;
    uint32_t len;
    while (!gvirtq_wait_used(&evq, &head, &len, 1000)) {
    }
    GUEST_ASSERT_EQ(len, 4);
    guest_printf("vsock: transport reset, cid %lu\n", (unsigned long)gvirtio_config64(&dev, 0));
}

void guest_main(void)
{
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_VSOCK, 0, &dev));
    GUEST_ASSERT(gvirtio_init(&dev, 0));
    GUEST_ASSERT(gvirtq_setup(&dev, &rxq, 0, 64));
    GUEST_ASSERT(gvirtq_setup(&dev, &txq, 1, 64));
    GUEST_ASSERT(gvirtq_setup(&dev, &evq, 2, 8));
    cid = gvirtio_config64(&dev, 0);
    guest_printf("vsock: cid %lu\n", (unsigned long)cid);
    for (unsigned i = 0; i < NRX; i++) {
        rxbuf[i] = gvirtio_alloc(RXLEN, 4096);
        rx_add(i);
    }
    static uint32_t event[4];
    struct gbuf e = {event, sizeof(event)};
    GUEST_ASSERT(gvirtq_add(&evq, &e, 0, 1) >= 0);
    gvirtio_driver_ok(&dev);
    gvirtq_kick(&rxq);
    gvirtq_kick(&evq);
    uint32_t port = (uint32_t)guest_cmdline_u64("vsock.port", 5000);
    uint64_t bytes = guest_cmdline_u64("vsock.bytes", 1 << 20);
    if (guest_cmdline_u64("vsock.mode", 1) == 2)
        wait_transport_reset();
    connect_echo(port, bytes);
    uint32_t listen = (uint32_t)guest_cmdline_u64("vsock.listen", 0);
    if (listen)
        listen_echo(listen);
    guest_printf("vsock: ok\n");
}
