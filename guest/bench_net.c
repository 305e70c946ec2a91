/* The virtio-net benchmark guest (virtio 1.2 §5.1; bench/virtio, docs/benchmarks.md): frames
 * sent on the first NIC come back unchanged (the host reflects every frame its tap receives) and
 * are counted, with a window of frames in flight; each phase sits between the marker lines of
 * bench.h. The driver polls both used rings and takes no interrupts: VIRTIO_F_EVENT_IDX is
 * negotiated, as Linux does, and used_event stays 0 (one interrupt per 65536 used buffers,
 * §2.7.10); notifications go out only when the device's avail_event asks for them.
 *
 * Frames: to the NIC's own MAC from 02:00:00:00:00:fe, EtherType 0x88b5 (IEEE local
 * experimental), then a magic number, the run number and the frame's sequence number; each
 * frame is sent as one descriptor holding the 12-byte header and the frame, as Linux sends a
 * linear frame. Every frame that comes back is checked: length, magic, run, order. Before the
 * first phase, probe frames go out until one comes back (the first frames after a tap comes up
 * may be dropped); once the path works, a lost frame stalls the guest, which then fails.
 *
 * Command line:
 *   bench.pN=NAME,BYTES,WINDOW,COUNT  phase N: frames of BYTES bytes (60..1514), at most
 *                    WINDOW of them sent and not yet back (1..128), COUNT round trips measured
 *   bench.warmup=N   round trips before the begin marker of each phase (default 64)
 * Prints "bench: ok" at the end. */
#include "bench.h"
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_NET 1
#define F_MAC         5
#define F_MRG_RXBUF   15
#define F_STATUS      16
#define F_EVENT_IDX   29
#define HDR_LEN       12
#define QUEUE_SIZE    256
#define BUF_LEN       2048
#define FRAME_MIN     60
#define FRAME_MAX     1514
#define MAX_WINDOW    128
#define ETHERTYPE     0x88b5
#define MAGIC         0x57424e54u /* "WBNT" */
#define PROBES        100
#define PROBE_TICKS   200000000ull /* 70-200 ms at 1-3 GHz */

struct phase {
    struct bench_spec spec;
    uint32_t bytes;
    unsigned window;
    uint64_t count;
};

struct net {
    struct gvirtio_dev d;
    struct gvirtq rx, tx;
    uint8_t mac[6];
    bool mrg;
    uint32_t run;      /* counts runs: a frame of an earlier one is an error */
    uint64_t expected; /* sequence number of the next frame to come back */
    uint64_t ignored;  /* frames that were not ours, or late probes */
};

static uint8_t rx_bufs[QUEUE_SIZE][BUF_LEN] __attribute__((aligned(4096)));
static uint8_t tx_bufs[QUEUE_SIZE][BUF_LEN] __attribute__((aligned(4096)));

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Posts the receive buffer of the next free descriptor: chains of one descriptor, so the head
 * is the descriptor and names the buffer. */
static void rx_post(struct net *n)
{
    uint16_t head = n->rx.free_head;
    GUEST_ASSERT(n->rx.num_free > 0 && head < QUEUE_SIZE);
    struct gbuf b = {rx_bufs[head], BUF_LEN};
    GUEST_ASSERT(gvirtq_add(&n->rx, &b, 0, 1) == head);
}

static void net_open(struct net *n)
{
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_NET, 0, &n->d));
    uint64_t want = 1ull << F_MAC | 1ull << F_STATUS | 1ull << F_MRG_RXBUF | 1ull << F_EVENT_IDX;
    GUEST_ASSERT(gvirtio_init(&n->d, want));
    GUEST_ASSERT(n->d.features & (1ull << F_MAC));
    GUEST_ASSERT(n->d.features & (1ull << F_EVENT_IDX));
    n->mrg = n->d.features & (1ull << F_MRG_RXBUF);
    for (unsigned i = 0; i < 6; i++)
        n->mac[i] = gvirtio_config8(&n->d, i);
    GUEST_ASSERT(gvirtq_setup(&n->d, &n->rx, 0, QUEUE_SIZE));
    GUEST_ASSERT(gvirtq_setup(&n->d, &n->tx, 1, QUEUE_SIZE));
    memset(rx_bufs, 0, sizeof(rx_bufs)); /* every page touched before anything is measured */
    memset(tx_bufs, 0, sizeof(tx_bufs));
    for (unsigned i = 0; i < QUEUE_SIZE; i++)
        rx_post(n);
    gvirtio_driver_ok(&n->d);
    GUEST_ASSERT_EQ(gvirtio_status(&n->d) & 0x40, 0); /* no DEVICE_NEEDS_RESET */
    gvirtq_kick(&n->rx);
    guest_printf("bench: net mac %02x:%02x:%02x:%02x:%02x:%02x features 0x%lx\n", n->mac[0],
                 n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5],
                 (unsigned long)n->d.features);
}

static void phase_parse(struct phase *p)
{
    p->bytes = (uint32_t)bench_field_u64(&p->spec, 0, FRAME_MIN, FRAME_MAX);
    p->window = (unsigned)bench_field_u64(&p->spec, 1, 1, MAX_WINDOW);
    p->count = bench_field_u64(&p->spec, 2, 1, 1ull << 40);
}

/* Frame `seq` of the current run as one descriptor: header, Ethernet header, payload. */
static void tx_add(struct net *n, const struct phase *p, uint64_t seq)
{
    static const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0xfe};
    uint16_t head = n->tx.free_head;
    GUEST_ASSERT(n->tx.num_free > 0 && head < QUEUE_SIZE);
    uint8_t *b = tx_bufs[head];
    memset(b, 0, HDR_LEN); /* no offloads (§5.1.6.2) */
    uint8_t *f = b + HDR_LEN;
    memcpy(f, n->mac, 6);
    memcpy(f + 6, src, 6);
    put16(f + 12, ETHERTYPE);
    uint32_t magic = MAGIC;
    memcpy(f + 14, &magic, 4);
    memcpy(f + 18, &n->run, 4);
    memcpy(f + 22, &seq, 8);
    struct gbuf g = {b, HDR_LEN + p->bytes};
    GUEST_ASSERT(gvirtq_add(&n->tx, &g, 1, 0) == head);
}

/* Gives finished transmit chains back to the free list (§5.1.6.2.1: used length 0). */
static void tx_reap(struct net *n)
{
    uint16_t head;
    uint32_t len;
    while (gvirtq_get_used(&n->tx, &head, &len))
        GUEST_ASSERT(head < QUEUE_SIZE);
}

/* Checks one frame that came back: the next one of this run (true); a frame that is not ours or
 * one of an earlier run (a late probe) is ignored (false); anything else fails the guest. */
static bool rx_check(struct net *n, const struct phase *p, const uint8_t *b, uint32_t len)
{
    uint16_t nbuf = (uint16_t)(b[10] | b[11] << 8);
    uint32_t magic, run;
    uint64_t seq;
    memcpy(&magic, b + HDR_LEN + 14, 4);
    memcpy(&run, b + HDR_LEN + 18, 4);
    memcpy(&seq, b + HDR_LEN + 22, 8);
    const uint8_t *type = b + HDR_LEN + 12;
    if (len < HDR_LEN + FRAME_MIN || type[0] != ETHERTYPE >> 8 || type[1] != (ETHERTYPE & 0xff) ||
        magic != MAGIC || run < n->run) {
        n->ignored++; /* not ours (the host's own traffic), or a late probe */
        return false;
    }
    if (len != HDR_LEN + p->bytes || magic != MAGIC || run != n->run || seq != n->expected ||
        (n->mrg && nbuf != 1) || memcmp(b + HDR_LEN, n->mac, 6))
        guest_fail(__FILE__, __LINE__,
                   "phase %s: frame %lu expected; got %u bytes, magic 0x%x, run %u, frame %lu, "
                   "%u buffers",
                   p->spec.name, (unsigned long)n->expected, len, magic, run, (unsigned long)seq,
                   nbuf);
    n->expected++;
    return true;
}

/* Takes every frame that came back, gives its buffer back; returns how many. */
static unsigned rx_reap(struct net *n, const struct phase *p)
{
    unsigned got = 0;
    uint16_t head;
    uint32_t len;
    while (gvirtq_get_used(&n->rx, &head, &len)) {
        GUEST_ASSERT(head < QUEUE_SIZE);
        got += rx_check(n, p, rx_bufs[head], len);
        rx_post(n);
    }
    if (got)
        gvirtq_kick(&n->rx);
    return got;
}

/* `count` round trips with at most p->window frames out. */
static void run(struct net *n, const struct phase *p, uint64_t count)
{
    uint64_t sent = 0, back = 0, progress = rdtsc();
    n->run++;
    n->expected = 0;
    while (back < count) {
        tx_reap(n);
        bool added = false;
        while (sent - back < p->window && sent < count && n->tx.num_free > 0) {
            tx_add(n, p, sent++);
            added = true;
        }
        if (added)
            gvirtq_kick(&n->tx);
        unsigned got = rx_reap(n, p);
        if (got) {
            back += got;
            progress = rdtsc();
        } else {
            cpu_relax();
            bench_check_stall(progress, p->spec.name);
        }
    }
}

/* The first frames after a tap's carrier comes up may be dropped (the kernel activates the tap's
 * queue asynchronously): probes go out, one at a time, until one comes back. */
static void path_check(struct net *n)
{
    struct phase probe = {.spec = {.name = "probe"}, .bytes = FRAME_MIN, .window = 1};
    for (unsigned try = 1; try <= PROBES; try++) {
        n->run++;
        n->expected = 0;
        tx_reap(n);
        tx_add(n, &probe, 0);
        gvirtq_kick(&n->tx);
        for (uint64_t start = rdtsc(); rdtsc() - start < PROBE_TICKS;) {
            if (rx_reap(n, &probe)) {
                guest_printf("bench: net path ok after %u probe(s)\n", try);
                return;
            }
            cpu_relax();
        }
    }
    guest_fail(__FILE__, __LINE__, "none of %u probe frames came back", PROBES);
}

void guest_main(void)
{
    static struct net n;
    net_open(&n);
    path_check(&n);
    uint64_t warmup = guest_cmdline_u64("bench.warmup", 64);
    unsigned count = 0;
    struct phase p;
    for (; bench_spec_get(count, &p.spec); count++) {
        phase_parse(&p);
        run(&n, &p, warmup);
        uint64_t start = bench_begin(p.spec.name);
        run(&n, &p, p.count);
        bench_end(p.spec.name, start);
        guest_printf("bench: result %s frames %lu bytes %lu\n", p.spec.name, (unsigned long)p.count,
                     (unsigned long)(p.count * p.bytes));
    }
    GUEST_ASSERT(count > 0);
    guest_printf("bench: ok %u phases, %lu other frame(s) ignored\n", count,
                 (unsigned long)n.ignored);
}
