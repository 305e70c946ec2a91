/* virtio-net at register level (virtio 1.2 §5.1) on a real tap that wisp-vmm creates: frames
 * the driver transmits reach the host byte-exact through a packet socket on the tap, malformed
 * transmit chains are returned (used length 0) without a byte reaching the tap, frames the host
 * sends arrive in receive buffers byte-exact, unusable receive chains are returned unused, and a
 * malformed ring sets DEVICE_NEEDS_RESET. Needs root (CAP_NET_ADMIN) and `ip`: skipped without. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "virtio_qtest.h"

#define RXQ       0
#define TXQ       1
#define QSIZE     16
#define WAIT_MS   5000
#define ETHERTYPE 0x88b5 /* IEEE local experimental: nothing else on the tap uses it */
#define HDR       12     /* struct virtio_net_hdr_v1 */
#define FRAME     60
#define R         0
#define W         VRING_DESC_F_WRITE

struct fixture {
    char tap[16];
    struct qtest *qt;
    struct vqt_dev dev;
    struct vqt_queue rx, tx;
    int host; /* AF_PACKET socket on the tap */
    uint64_t buf, rxbuf;
    unsigned next_id; /* payload id of the next well-formed frame */
};

struct seg {
    uint64_t gpa;
    uint32_t len;
    uint16_t flags;
};

static void cmocka_fail(const char *msg)
{
    fail_msg("%s", msg);
}

static void make_frame(uint8_t *f, size_t len, unsigned id)
{
    memset(f, 0, len);
    memset(f, 0xff, 6);                               /* broadcast */
    memcpy(f + 6, "\x02\x00\x00\x00\x00\xaa", 6);     /* source */
    f[12] = ETHERTYPE >> 8, f[13] = ETHERTYPE & 0xff; /* type */
    memcpy(f + 14, &id, sizeof(id));                  /* payload: the frame's id, then a pattern */
    for (size_t i = 14 + sizeof(id); i < len; i++)
        f[i] = (uint8_t)(i * 7);
}

/* The next frame of ETHERTYPE the tap's host side received (not one it sent), or -1. */
static ssize_t host_recv(struct fixture *f, uint8_t *buf, size_t len, int timeout_ms)
{
    for (;;) {
        struct pollfd p = {.fd = f->host, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0)
            return -1;
        struct sockaddr_ll from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(f->host, buf, len, 0, (struct sockaddr *)&from, &fl);
        if (n >= 14 && from.sll_pkttype != PACKET_OUTGOING && buf[12] == ETHERTYPE >> 8 &&
            buf[13] == (ETHERTYPE & 0xff))
            return n;
    }
}

static void host_send(struct fixture *f, const uint8_t *frame, size_t len)
{
    struct sockaddr_ll to = {.sll_family = AF_PACKET,
                             .sll_protocol = htons(ETH_P_ALL),
                             .sll_ifindex = (int)if_nametoindex(f->tap),
                             .sll_halen = 6};
    memset(to.sll_addr, 0xff, 6);
    assert_int_equal(sendto(f->host, frame, len, 0, (struct sockaddr *)&to, sizeof(to)),
                     (ssize_t)len);
}

static void open_host_side(struct fixture *f)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd),
             "echo 1 > /proc/sys/net/ipv6/conf/%s/disable_ipv6 2>/dev/null; "
             "ip link set dev %s up",
             f->tap, f->tap);
    assert_int_equal(system(cmd), 0);
    f->host = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    assert_true(f->host >= 0);
    struct sockaddr_ll a = {.sll_family = AF_PACKET,
                            .sll_protocol = htons(ETH_P_ALL),
                            .sll_ifindex = (int)if_nametoindex(f->tap)};
    assert_true(a.sll_ifindex > 0);
    assert_int_equal(bind(f->host, (struct sockaddr *)&a, sizeof(a)), 0);
}

/* Negotiates `features` (offered ones only) and sets up both queues. */
static void init_device(struct fixture *f, uint64_t features)
{
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1 | features));
    vqt_queue_setup(&f->dev, &f->rx, RXQ, QSIZE);
    vqt_queue_setup(&f->dev, &f->tx, TXQ, QSIZE);
    vqt_driver_ok(&f->dev);
    assert_int_equal(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    f.host = -1;
    *state = &f;
    if (geteuid() != 0 || system("command -v ip >/dev/null") != 0)
        return 0; /* a tap needs CAP_NET_ADMIN: the tests skip */
    snprintf(f.tap, sizeof(f.tap), "wqt%u", (unsigned)getpid() % 100000);
    char net[64];
    snprintf(net, sizeof(net), "tap=%s", f.tap);
    f.qt = qtest_start(qtest_vmm(), "--net", net, NULL);
    vqt_find(f.qt, "virtio-net", 0, &f.dev);
    f.buf = qtest_alloc(f.qt, 0x20000, 4096);
    f.rxbuf = qtest_alloc(f.qt, 0x10000, 4096);
    open_host_side(&f);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->host >= 0)
        close(f->host);
    qtest_kill(f->qt);
    return 0;
}

/* Puts a chain of n buffers on queue q (descriptors from a rotating base), kicks, and waits for
 * it to come back; returns the used length. */
static uint32_t submit(struct vqt_queue *q, const struct seg *s, unsigned n)
{
    uint16_t base = (uint16_t)(q->avail_idx * 4 % QSIZE);
    for (unsigned i = 0; i < n; i++)
        vqt_desc(q, (uint16_t)(base + i), s[i].gpa, s[i].len,
                 (uint16_t)(s[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
                 (uint16_t)(base + i + 1));
    vqt_avail_push(q, base);
    vqt_kick(q);
    uint32_t id, len;
    assert_true(vqt_wait_used(q, &id, &len, WAIT_MS));
    assert_int_equal(id, base);
    return len;
}

static void put_hdr(struct fixture *f, uint64_t gpa, uint8_t flags, uint8_t gso_type,
                    uint16_t gso_size, uint16_t csum_start, uint16_t csum_offset)
{
    uint8_t h[HDR] = {flags, gso_type};
    memcpy(h + 4, &gso_size, 2);
    memcpy(h + 6, &csum_start, 2);
    memcpy(h + 8, &csum_offset, 2);
    qtest_memwrite(f->qt, gpa, h, sizeof(h));
}

/* A well-formed frame goes out and the host receives exactly it. */
static void expect_tx_works(struct fixture *f)
{
    uint8_t frame[FRAME], got[2048];
    make_frame(frame, sizeof(frame), f->next_id++);
    put_hdr(f, f->buf, 0, 0, 0, 0, 0);
    qtest_memwrite(f->qt, f->buf + 0x100, frame, sizeof(frame));
    struct seg s[2] = {{f->buf, HDR, R}, {f->buf + 0x100, FRAME, R}};
    assert_int_equal(submit(&f->tx, s, 2), 0); /* nothing is written into a transmit chain */
    ssize_t n = host_recv(f, got, sizeof(got), WAIT_MS);
    assert_int_equal(n, FRAME);
    assert_memory_equal(got, frame, FRAME);
}

static void test_tx(void **state)
{
    struct fixture *f = *state;
    if (!f->qt)
        skip();
    init_device(f, 0);
    expect_tx_works(f);
    /* header and frame in one buffer */
    uint8_t frame[FRAME], got[2048];
    make_frame(frame, sizeof(frame), f->next_id++);
    put_hdr(f, f->buf, 0, 0, 0, 0, 0);
    qtest_memwrite(f->qt, f->buf + HDR, frame, sizeof(frame));
    struct seg one = {f->buf, HDR + FRAME, R};
    assert_int_equal(submit(&f->tx, &one, 1), 0);
    assert_int_equal(host_recv(f, got, sizeof(got), WAIT_MS), FRAME);
    assert_memory_equal(got, frame, FRAME);
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

/* One malformed transmit chain: its header and buffers. */
struct bad_tx {
    const char *what;
    uint8_t flags, gso_type;
    uint16_t gso_size, csum_start, csum_offset;
    uint32_t hdr_len, frame_len; /* bytes of the two buffers */
    uint16_t frame_flags;
};

/* Each malformed chain comes back with used length 0 and sends nothing; the next well-formed
 * frame is the next one the host sees. */
static void run_bad_tx(struct fixture *f, const struct bad_tx *b, size_t n)
{
    uint8_t got[2048];
    for (size_t i = 0; i < n; i++) {
        uint8_t frame[FRAME];
        make_frame(frame, sizeof(frame), 9999);
        qtest_memset(f->qt, f->buf + 0x100, 0x10000, 0);
        qtest_memwrite(f->qt, f->buf + 0x100, frame, sizeof(frame));
        put_hdr(f, f->buf, b[i].flags, b[i].gso_type, b[i].gso_size, b[i].csum_start,
                b[i].csum_offset);
        struct seg s[2] = {{f->buf, b[i].hdr_len, R},
                           {f->buf + 0x100, b[i].frame_len, b[i].frame_flags}};
        if (submit(&f->tx, s, b[i].frame_len ? 2 : 1) != 0)
            fail_msg("%s: used length is not 0", b[i].what);
        assert_int_equal(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        expect_tx_works(f); /* the dropped frame (id 9999) never arrived before it */
    }
    assert_true(host_recv(f, got, sizeof(got), 50) < 0); /* nothing else arrived */
}

static void test_tx_malformed(void **state)
{
    struct fixture *f = *state;
    if (!f->qt)
        skip();
    uint64_t offered = vqt_device_features(&f->dev);
    init_device(f, 0);
    static const struct bad_tx plain[] = {
        {"a device-writable buffer in a transmit chain", 0, 0, 0, 0, 0, HDR, FRAME, W},
        {"shorter than the 12-byte virtio-net header", 0, 0, 0, 0, 0, 8, 0, R},
        {"a frame shorter than an Ethernet header", 0, 0, 0, 0, 0, HDR, 10, R},
        {"longer than 65562 bytes", 0, 0, 0, 0, 0, HDR, 65551, R},
        {"a partial checksum, but VIRTIO_NET_F_CSUM was not negotiated", 1, 0, 0, 34, 6, HDR, FRAME,
         R},
        {"a GSO type whose HOST_ feature was not negotiated", 0, 1, 1448, 0, 0, HDR, FRAME, R},
        {"an unknown gso_type", 0, 7, 1448, 0, 0, HDR, FRAME, R},
        {"GSO with ECN", 0, 0x81, 1448, 0, 0, HDR, FRAME, R},
    };
    run_bad_tx(f, plain, sizeof(plain) / sizeof(plain[0]));
    /* the first drop is logged with its reason (later ones are counted) */
    qtest_expect_log(f->qt, "transmit frame dropped: a device-writable buffer", WAIT_MS);
    uint64_t offload = (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_HOST_TSO4);
    if ((offered & offload) == offload) { /* the tap takes offloads: their header checks */
        assert_true(vqt_reset(&f->dev));
        init_device(f, offload);
        static const struct bad_tx offloaded[] = {
            {"csum_start + csum_offset lies beyond the frame", 1, 0, 0, 58, 6, HDR, FRAME, R},
            {"a GSO frame with gso_size 0", 1, 1, 0, 34, 16, HDR, FRAME, R},
        };
        run_bad_tx(f, offloaded, sizeof(offloaded) / sizeof(offloaded[0]));
    }
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

/* Posts one receive chain of the given buffers on the rx queue (does not wait). */
static uint16_t post_rx(struct fixture *f, const struct seg *s, unsigned n)
{
    struct vqt_queue *q = &f->rx;
    uint16_t base = (uint16_t)(q->avail_idx * 4 % QSIZE);
    for (unsigned i = 0; i < n; i++)
        vqt_desc(q, (uint16_t)(base + i), s[i].gpa, s[i].len,
                 (uint16_t)(s[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
                 (uint16_t)(base + i + 1));
    vqt_avail_push(q, base);
    vqt_kick(q);
    return base;
}

/* A frame the host sends arrives in the receive buffer behind a virtio-net header. */
static void expect_rx_works(struct fixture *f, size_t len)
{
    uint8_t frame[1514], got[HDR + 1514];
    make_frame(frame, len, f->next_id++);
    qtest_memset(f->qt, f->rxbuf, 2048, 0xee);
    struct seg s = {f->rxbuf, 2048, W};
    uint16_t head = post_rx(f, &s, 1);
    host_send(f, frame, len);
    uint32_t id, used;
    assert_true(vqt_wait_used(&f->rx, &id, &used, WAIT_MS));
    assert_int_equal(id, head);
    assert_int_equal(used, HDR + len);
    qtest_memread(f->qt, f->rxbuf, got, HDR + len);
    static const uint8_t hdr[HDR] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}; /* num_buffers 1 */
    assert_memory_equal(got, hdr, HDR);
    assert_memory_equal(got + HDR, frame, len);
}

static void test_rx(void **state)
{
    struct fixture *f = *state;
    if (!f->qt)
        skip();
    init_device(f, 0);
    expect_rx_works(f, FRAME);
    expect_rx_works(f, 1514);
    expect_tx_works(f); /* both directions at once */
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

/* Receive chains the device cannot use come back unused (length 0) and the frame goes into the
 * next usable one; a frame larger than the buffer (no MRG_RXBUF) is dropped and the buffer
 * kept for the next frame. */
static void test_rx_malformed(void **state)
{
    struct fixture *f = *state;
    if (!f->qt)
        skip();
    init_device(f, 0);
    struct seg readable = {f->rxbuf + 0x8000, 2048, R}, tiny = {f->rxbuf + 0x9000, 8, W};
    uint16_t h1 = post_rx(f, &readable, 1), h2 = post_rx(f, &tiny, 1);
    uint8_t frame[FRAME], got[HDR + FRAME];
    make_frame(frame, sizeof(frame), f->next_id++);
    host_send(f, frame, sizeof(frame));
    uint32_t id, used;
    assert_true(vqt_wait_used(&f->rx, &id, &used, WAIT_MS));
    assert_int_equal(id, h1);
    assert_int_equal(used, 0);
    assert_true(vqt_wait_used(&f->rx, &id, &used, WAIT_MS));
    assert_int_equal(id, h2);
    assert_int_equal(used, 0);
    qtest_expect_log(f->qt, "receive chain returned unused: it has device-readable buffers",
                     WAIT_MS);
    /* a usable buffer now gets the waiting frame */
    struct seg good = {f->rxbuf, 2048, W};
    uint16_t h3 = post_rx(f, &good, 1);
    assert_true(vqt_wait_used(&f->rx, &id, &used, WAIT_MS));
    assert_int_equal(id, h3);
    assert_int_equal(used, HDR + FRAME);
    qtest_memread(f->qt, f->rxbuf, got, sizeof(got));
    assert_memory_equal(got + HDR, frame, FRAME);
    /* too large for a 40-byte buffer: dropped; the buffer then takes a 28-byte frame */
    struct seg small = {f->rxbuf + 0xa000, HDR + 28, W};
    uint16_t h4 = post_rx(f, &small, 1);
    make_frame(frame, sizeof(frame), 9999);
    host_send(f, frame, sizeof(frame));
    qtest_expect_log(f->qt, "larger than the receive buffer", WAIT_MS);
    make_frame(frame, 28, f->next_id++);
    host_send(f, frame, 28);
    assert_true(vqt_wait_used(&f->rx, &id, &used, WAIT_MS));
    assert_int_equal(id, h4);
    assert_int_equal(used, HDR + 28);
    qtest_memread(f->qt, f->rxbuf + 0xa000, got, HDR + 28);
    assert_memory_equal(got + HDR, frame, 28);
    assert_int_equal(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    expect_rx_works(f, FRAME);
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

/* A malformed transmit ring (a loop) sets DEVICE_NEEDS_RESET; after a reset frames flow. */
static void test_ring_loop(void **state)
{
    struct fixture *f = *state;
    if (!f->qt)
        skip();
    init_device(f, 0);
    (void)qtest_irq_wait(f->qt, f->dev.info.gsi, 0);
    vqt_desc(&f->tx, 0, f->buf, HDR, VRING_DESC_F_NEXT, 1);
    vqt_desc(&f->tx, 1, f->buf + 0x100, FRAME, VRING_DESC_F_NEXT, 0);
    vqt_avail_push(&f->tx, 0);
    vqt_kick(&f->tx);
    assert_true(qtest_irq_wait(f->qt, f->dev.info.gsi, WAIT_MS));
    assert_true(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET);
    qtest_expect_log(f->qt, "chain longer than the queue", WAIT_MS);
    assert_true(vqt_reset(&f->dev));
    init_device(f, 0);
    expect_tx_works(f);
    expect_rx_works(f, FRAME);
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

int main(void)
{
    qtest_set_fail_handler(cmocka_fail);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tx_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rx_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_loop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
