/* virtio-vsock at register level (virtio 1.2 §5.10) with real unix sockets on the host side
 * (docs/vsock.md): a host client's "CONNECT <port>\n" becomes a REQUEST the driver answers, then
 * "OK <port>\n"; a driver's REQUEST to port P reaches a listener at <uds>_P; bytes go both ways
 * byte-exact with credit (the device sends no more than the driver's buf_alloc allows, and resets
 * a driver that sends more than its own); malformed packets (wrong cids, bad lengths, unknown
 * ops, data before a connection) are dropped or answered with RST, and the device goes on. */
#include <errno.h>
#include <linux/virtio_vsock.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "virtio_qtest.h"

#define RXQ     0
#define TXQ     1
#define EVQ     2
#define QSIZE   64
#define WAIT_MS 5000
#define CID     7
#define HDR     44
#define RXBUF   (HDR + 4096)
#define NRX     32
#define W       VRING_DESC_F_WRITE

struct fixture {
    char dir[64], uds[96];
    struct qtest *qt;
    struct vqt_dev dev;
    struct vqt_queue rx, tx, ev;
    uint64_t rxbuf, txbuf, evbuf;
    unsigned tx_slot;
};

struct pkt {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
};

static void cmocka_fail(const char *msg)
{
    fail_msg("%s", msg);
}

static void put_hdr(uint8_t *b, const struct pkt *p)
{
    memcpy(b, &p->src_cid, 8);
    memcpy(b + 8, &p->dst_cid, 8);
    memcpy(b + 16, &p->src_port, 4);
    memcpy(b + 20, &p->dst_port, 4);
    memcpy(b + 24, &p->len, 4);
    memcpy(b + 28, &p->type, 2);
    memcpy(b + 30, &p->op, 2);
    memcpy(b + 32, &p->flags, 4);
    memcpy(b + 36, &p->buf_alloc, 4);
    memcpy(b + 40, &p->fwd_cnt, 4);
}

static void get_hdr(const uint8_t *b, struct pkt *p)
{
    memcpy(&p->src_cid, b, 8);
    memcpy(&p->dst_cid, b + 8, 8);
    memcpy(&p->src_port, b + 16, 4);
    memcpy(&p->dst_port, b + 20, 4);
    memcpy(&p->len, b + 24, 4);
    memcpy(&p->type, b + 28, 2);
    memcpy(&p->op, b + 30, 2);
    memcpy(&p->flags, b + 32, 4);
    memcpy(&p->buf_alloc, b + 36, 4);
    memcpy(&p->fwd_cnt, b + 40, 4);
}

static bool wait_used(struct vqt_queue *q, uint32_t *id, uint32_t *len, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited += 20) {
        if (vqt_used_idx(q) != q->last_used)
            return vqt_wait_used(q, id, len, 0);
        qtest_irq_wait(q->dev->qt, q->dev->info.gsi, 20);
    }
    return vqt_used_idx(q) != q->last_used && vqt_wait_used(q, id, len, 0);
}

/* Receive buffer i (descriptor i) back on the available ring. */
static void rx_post(struct fixture *f, unsigned i)
{
    vqt_desc(&f->rx, (uint16_t)i, f->rxbuf + (uint64_t)i * RXBUF, RXBUF, W, 0);
    vqt_avail_push(&f->rx, (uint16_t)i);
    vqt_kick(&f->rx);
}

/* The next packet the device put in a receive buffer (payload into data); false if none came. */
static bool rx_next(struct fixture *f, struct pkt *p, uint8_t *data, unsigned ms)
{
    uint32_t id, len;
    if (!wait_used(&f->rx, &id, &len, ms))
        return false;
    assert_true(id < NRX);
    assert_true(len >= HDR && len <= RXBUF);
    uint8_t b[RXBUF];
    qtest_memread(f->qt, f->rxbuf + (uint64_t)id * RXBUF, b, len);
    get_hdr(b, p);
    assert_int_equal(p->len, len - HDR);
    if (data)
        memcpy(data, b + HDR, p->len);
    rx_post(f, id);
    return true;
}

/* A packet from the driver, header and payload in one readable buffer; waits for it back. */
static void tx_send(struct fixture *f, const struct pkt *p, const void *data, uint32_t len)
{
    uint8_t b[HDR + 65536];
    assert_true(len <= 65536);
    put_hdr(b, p);
    memcpy(b + HDR, data, len);
    unsigned slot = f->tx_slot++ % QSIZE;
    uint64_t gpa = f->txbuf + (uint64_t)slot * (HDR + 65536);
    qtest_memwrite(f->qt, gpa, b, HDR + len);
    vqt_desc(&f->tx, (uint16_t)slot, gpa, HDR + len, 0, 0);
    vqt_avail_push(&f->tx, (uint16_t)slot);
    vqt_kick(&f->tx);
    uint32_t id, used;
    assert_true(wait_used(&f->tx, &id, &used, WAIT_MS));
    assert_int_equal(id, slot);
}

static struct pkt guest_pkt(uint16_t op, uint32_t guest_port, uint32_t host_port, uint32_t len)
{
    return (struct pkt){.src_cid = CID,
                        .dst_cid = 2,
                        .src_port = guest_port,
                        .dst_port = host_port,
                        .len = len,
                        .type = VIRTIO_VSOCK_TYPE_STREAM,
                        .op = op,
                        .buf_alloc = 65536};
}

static int unix_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static int unix_listen(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    return fd;
}

static size_t read_some(int fd, uint8_t *buf, size_t len, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return 0;
    ssize_t n = read(fd, buf, len);
    return n > 0 ? (size_t)n : 0;
}

static void read_exact(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        size_t n = read_some(fd, buf + got, len - got, WAIT_MS);
        assert_true(n > 0);
        got += n;
    }
}

static void pattern(uint8_t *b, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 31 + seed + (i >> 8));
}

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    *state = &f;
    snprintf(f.dir, sizeof(f.dir), "/tmp/wisp-vsock-qt.XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.uds, sizeof(f.uds), "%s/v.sock", f.dir);
    char arg[160];
    snprintf(arg, sizeof(arg), "cid=%u,uds=%s", CID, f.uds);
    f.qt = qtest_start(qtest_vmm(), "--vsock", arg, NULL);
    vqt_find(f.qt, "virtio-vsock", 0, &f.dev);
    f.rxbuf = qtest_alloc(f.qt, (uint64_t)NRX * RXBUF, 4096);
    f.txbuf = qtest_alloc(f.qt, (uint64_t)QSIZE * (HDR + 65536), 4096);
    f.evbuf = qtest_alloc(f.qt, 4096, 4096);
    assert_true(vqt_negotiate(&f.dev, VQT_F_VERSION_1));
    vqt_queue_setup(&f.dev, &f.rx, RXQ, QSIZE);
    vqt_queue_setup(&f.dev, &f.tx, TXQ, QSIZE);
    vqt_queue_setup(&f.dev, &f.ev, EVQ, QSIZE);
    vqt_driver_ok(&f.dev);
    for (unsigned i = 0; i < NRX; i++)
        rx_post(&f, i);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    qtest_kill(f->qt);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    (void)system(cmd);
    return 0;
}

static void test_config(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_DEVICE_ID), 19);
    assert_int_equal(qtest_readl(f->qt, f->dev.info.base + 0x100), CID);
    assert_int_equal(qtest_readl(f->qt, f->dev.info.base + 0x104), 0);
    assert_int_equal(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

/* The host connects and asks for guest port 5000; the driver accepts; data both ways. */
static void test_host_initiated(void **state)
{
    struct fixture *f = *state;
    int fd = unix_connect(f->uds);
    assert_int_equal(write(fd, "CONNECT 5000\n", 13), 13);
    struct pkt p;
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_REQUEST);
    assert_int_equal(p.dst_port, 5000);
    assert_int_equal(p.src_cid, 2);
    assert_int_equal(p.dst_cid, CID);
    uint32_t host_port = p.src_port;
    struct pkt resp = guest_pkt(VIRTIO_VSOCK_OP_RESPONSE, 5000, host_port, 0);
    tx_send(f, &resp, NULL, 0);
    char line[32] = {0}, want[32];
    snprintf(want, sizeof(want), "OK %u\n", host_port);
    read_exact(fd, (uint8_t *)line, strlen(want));
    assert_string_equal(line, want);

    /* guest -> host: 100 KiB in 4 KiB packets, byte-exact */
    static uint8_t out[100 << 10], in[100 << 10];
    pattern(out, sizeof(out), 1);
    for (size_t off = 0; off < sizeof(out); off += 4096) {
        struct pkt rw = guest_pkt(VIRTIO_VSOCK_OP_RW, 5000, host_port, 4096);
        tx_send(f, &rw, out + off, 4096);
    }
    read_exact(fd, in, sizeof(out));
    assert_memory_equal(in, out, sizeof(out));

    /* host -> guest: 64 KiB, while the driver's buf_alloc is 65536 */
    pattern(out, 65536, 2);
    assert_int_equal(write(fd, out, 65536), 65536);
    size_t got = 0;
    while (got < 65536) {
        assert_true(rx_next(f, &p, in + got, WAIT_MS));
        if (p.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE)
            continue;
        assert_int_equal(p.op, VIRTIO_VSOCK_OP_RW);
        assert_int_equal(p.src_port, host_port);
        got += p.len;
    }
    assert_int_equal(got, 65536);
    assert_memory_equal(in, out, 65536);
    /* the credit is used up: more host bytes stay in the socket until the driver's fwd_cnt moves */
    assert_int_equal(write(fd, out, 8192), 8192);
    close(fd); /* and the host is gone before the guest could take them: they still arrive */
    assert_false(rx_next(f, &p, in, 300));
    struct pkt credit = guest_pkt(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5000, host_port, 0);
    credit.fwd_cnt = 65536;
    tx_send(f, &credit, NULL, 0);
    got = 0;
    while (got < 8192) {
        assert_true(rx_next(f, &p, in + got, WAIT_MS));
        assert_int_equal(p.op, VIRTIO_VSOCK_OP_RW);
        got += p.len;
    }
    assert_memory_equal(in, out, 8192);

    /* then the host's end: SHUTDOWN, and the driver's RST ends it */
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_SHUTDOWN);
    struct pkt rst = guest_pkt(VIRTIO_VSOCK_OP_RST, 5000, host_port, 0);
    tx_send(f, &rst, NULL, 0);
}

/* The driver connects to host port 6000: the listener at <uds>_6000 gets it. */
static void test_guest_initiated(void **state)
{
    struct fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s_6000", f->uds);
    int lfd = unix_listen(path);
    struct pkt req = guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 1234, 6000, 0);
    tx_send(f, &req, NULL, 0);
    struct pkt p;
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RESPONSE);
    assert_int_equal(p.src_port, 6000);
    assert_int_equal(p.dst_port, 1234);
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    static uint8_t out[300 << 10], in[300 << 10];
    pattern(out, sizeof(out), 3);
    struct pkt rw = guest_pkt(VIRTIO_VSOCK_OP_RW, 1234, 6000, 60000);
    tx_send(f, &rw, out, 60000);
    read_exact(fd, in, 60000);
    assert_memory_equal(in, out, 60000);
    assert_int_equal(write(fd, "pong", 4), 4);
    do
        assert_true(rx_next(f, &p, in, WAIT_MS));
    while (p.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE);
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RW);
    assert_int_equal(p.len, 4);
    assert_memory_equal(in, "pong", 4);

    /* the host does not read: the device takes 256 KiB of credit, then resets the driver that
     * sends beyond it */
    uint32_t sent = 60000;
    bool reset = false;
    for (unsigned i = 0; i < 40 && !reset; i++) {
        rw = guest_pkt(VIRTIO_VSOCK_OP_RW, 1234, 6000, 32768);
        tx_send(f, &rw, out, 32768);
        sent += 32768;
        while (rx_next(f, &p, NULL, 100)) {
            if (p.op == VIRTIO_VSOCK_OP_RST)
                reset = true;
        }
    }
    assert_true(reset);
    assert_true(sent > (256u << 10));
    close(fd);
    close(lfd);
    unlink(path);

    /* nobody listens at <uds>_6001: RST */
    req = guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 1235, 6001, 0);
    tx_send(f, &req, NULL, 0);
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RST);
    assert_int_equal(p.dst_port, 1235);
}

/* Malformed packets: dropped (wrong cids, lengths) or RST (unknown op, type, RW without a
 * connection); the device never needs a reset and still connects afterwards. */
static void test_malformed(void **state)
{
    struct fixture *f = *state;
    struct pkt p, bad;
    bad = guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 1, 7000, 0);
    bad.src_cid = CID + 1;
    tx_send(f, &bad, NULL, 0);
    bad = guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 1, 7000, 0);
    bad.dst_cid = 3;
    tx_send(f, &bad, NULL, 0);
    bad = guest_pkt(VIRTIO_VSOCK_OP_RW, 1, 7000, 4096); /* len beyond the 100-byte buffer */
    uint8_t junk[100] = {0};
    bad.len = 4096;
    {
        uint8_t b[HDR + 100];
        put_hdr(b, &bad);
        uint64_t gpa = f->txbuf;
        qtest_memwrite(f->qt, gpa, b, sizeof(b));
        vqt_desc(&f->tx, 0, gpa, sizeof(b), 0, 0);
        vqt_avail_push(&f->tx, 0);
        vqt_kick(&f->tx);
        uint32_t id, len;
        assert_true(wait_used(&f->tx, &id, &len, WAIT_MS));
        f->tx_slot = 1;
    }
    tx_send(f, &bad, junk, 10); /* len 4096 with 10 bytes given */
    {
        uint8_t b[20] = {0}; /* shorter than a header */
        qtest_memwrite(f->qt, f->txbuf, b, sizeof(b));
        vqt_desc(&f->tx, 0, f->txbuf, sizeof(b), 0, 0);
        vqt_avail_push(&f->tx, 0);
        vqt_kick(&f->tx);
        uint32_t id, len;
        assert_true(wait_used(&f->tx, &id, &len, WAIT_MS));
    }
    assert_false(rx_next(f, &p, NULL, 300)); /* all of those: dropped, no answer */

    bad = guest_pkt(42, 2, 7000, 0); /* unknown op */
    tx_send(f, &bad, NULL, 0);
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RST);
    assert_int_equal(p.dst_port, 2);
    bad = guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 3, 7000, 0);
    bad.type = VIRTIO_VSOCK_TYPE_SEQPACKET;
    tx_send(f, &bad, NULL, 0);
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RST);
    bad = guest_pkt(VIRTIO_VSOCK_OP_RW, 4, 7000, 5); /* data before any connection */
    tx_send(f, &bad, "hello", 5);
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RST);
    assert_int_equal(p.dst_port, 4);
    bad = guest_pkt(VIRTIO_VSOCK_OP_RESPONSE, 5, 7000, 0); /* a RESPONSE to nothing */
    tx_send(f, &bad, NULL, 0);
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RST);
    bad = guest_pkt(VIRTIO_VSOCK_OP_RST, 6, 7000, 0); /* an RST to nothing: no answer */
    tx_send(f, &bad, NULL, 0);
    assert_false(rx_next(f, &p, NULL, 300));

    /* bad host lines are closed; the device goes on */
    int fd = unix_connect(f->uds);
    assert_int_equal(write(fd, "CONNECT x\n", 10), 10);
    uint8_t b[8];
    assert_int_equal(read_some(fd, b, sizeof(b), WAIT_MS), 0);
    close(fd);
    assert_int_equal(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    char path[128];
    snprintf(path, sizeof(path), "%s_7001", f->uds);
    int lfd = unix_listen(path);
    struct pkt req = guest_pkt(VIRTIO_VSOCK_OP_REQUEST, 9, 7001, 0);
    tx_send(f, &req, NULL, 0);
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RESPONSE);
    close(lfd);
}

/* A REQUEST the driver never answers: after 2 s the host client is closed without a line and
 * the driver gets an RST for it. */
static void test_request_timeout(void **state)
{
    struct fixture *f = *state;
    int fd = unix_connect(f->uds);
    assert_int_equal(write(fd, "CONNECT 5555\n", 13), 13);
    struct pkt p;
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_REQUEST);
    uint32_t host_port = p.src_port;
    uint8_t b[8];
    assert_int_equal(read_some(fd, b, sizeof(b), WAIT_MS), 0); /* closed, no OK */
    assert_true(rx_next(f, &p, NULL, WAIT_MS));
    assert_int_equal(p.op, VIRTIO_VSOCK_OP_RST);
    assert_int_equal(p.src_port, host_port);
    assert_int_equal(p.dst_port, 5555);
    close(fd);
}

/* Many host connections at once, each answered on its own port. */
static void test_many(void **state)
{
    struct fixture *f = *state;
    enum { N = 20 };
    int fds[N];
    uint32_t ports[N];
    for (unsigned i = 0; i < N; i++) {
        fds[i] = unix_connect(f->uds);
        char line[32];
        int n = snprintf(line, sizeof(line), "CONNECT %u\n", 8000 + i);
        assert_int_equal(write(fds[i], line, (size_t)n), n);
    }
    for (unsigned i = 0; i < N; i++) {
        struct pkt p;
        assert_true(rx_next(f, &p, NULL, WAIT_MS));
        assert_int_equal(p.op, VIRTIO_VSOCK_OP_REQUEST);
        unsigned k = p.dst_port - 8000;
        assert_true(k < N);
        ports[k] = p.src_port;
        struct pkt resp = guest_pkt(VIRTIO_VSOCK_OP_RESPONSE, p.dst_port, p.src_port, 0);
        tx_send(f, &resp, NULL, 0);
    }
    for (unsigned i = 0; i < N; i++) {
        char line[32] = {0}, want[32];
        snprintf(want, sizeof(want), "OK %u\n", ports[i]);
        read_exact(fds[i], (uint8_t *)line, strlen(want));
        assert_string_equal(line, want);
        char msg[16];
        snprintf(msg, sizeof(msg), "conn%02u", i);
        struct pkt rw = guest_pkt(VIRTIO_VSOCK_OP_RW, 8000 + i, ports[i], 6);
        tx_send(f, &rw, msg, 6);
        char got[8] = {0};
        read_exact(fds[i], (uint8_t *)got, 6);
        assert_memory_equal(got, msg, 6);
        close(fds[i]);
    }
}

int main(void)
{
    qtest_set_fail_handler(cmocka_fail);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_initiated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_initiated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_timeout, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
