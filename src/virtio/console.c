/* virtio-console (virtio 1.2 §5.3) with one port, port 0, the guest's console (hvc0): the
 * receiveq (0) carries host input, the transmitq (1) guest output. Served on the machine's main
 * loop, where the chardev's input arrives too. Output never blocks: the chardev takes what fits,
 * and a transmit chain it did not take whole is held (not returned to the driver) until the
 * chardev's output thread says room is back, so the driver waits for its used buffers. Input is
 * read from the chardev only into receive buffers the driver posted. */
#include <errno.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <stdlib.h>
#include <string.h>

#include "common/chardev.h"
#include "common/evloop.h"
#include "common/statebuf.h"
#include "virtio/console.h"
#include "virtio/virtio.h"

#define CONSOLE_RXQ        0
#define CONSOLE_TXQ        1
#define CONSOLE_QUEUE_SIZE 256
/* Transmit chains taken per main-loop round before the rest waits for the next one, so that
 * a driver refilling its ring as fast as the device empties it cannot starve the loop. */
#define CONSOLE_TX_BUDGET CONSOLE_QUEUE_SIZE

/* §5.3.4 */
#define CONSOLE_CONFIG_SIZE     12
#define CONSOLE_CONFIG_EMERG_WR 8

/* A chain the device holds between main-loop callbacks. A chain walk visits at most the queue
 * size of descriptors, so iov[] holds any valid chain. */
struct console_chain {
    struct virtq_chain c;
    struct iovec iov[CONSOLE_QUEUE_SIZE];
    bool held;
    unsigned iov_next; /* transmit: the buffer and offset where output resumes */
    size_t offset;
};

struct virtio_console {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_console_params *p;
    struct evloop_call tx_call; /* console_tx_resume on the main loop, posted from any thread */
    /* main-loop thread only */
    bool running; /* between activate and reset */
    struct console_chain rx, tx;
    uint32_t tx_skip; /* bytes of the next transmit chain already written (a snapshot's) */
};

static struct evloop *console_loop(const struct virtio_console *con)
{
    return con->vdev.dev->ctx->main_loop;
}

/* What is left of the held transmit chain's device-readable buffers goes to the chardev
 * (§5.3.6; a device-writable buffer on the transmitq, which §5.3.6.1 forbids the driver, is
 * ignored, and nothing is written back).
 * Returns true when the chardev took all of it. */
static bool tx_write_held(struct virtio_console *con)
{
    struct console_chain *t = &con->tx;
    while (t->iov_next < t->c.nr_out) {
        const struct iovec *v = &t->c.iov[t->iov_next];
        const uint8_t *p = (const uint8_t *)v->iov_base + t->offset;
        size_t left = v->iov_len - t->offset;
        size_t n = con->p->chardev ? chardev_write(con->p->chardev, p, left) : left;
        t->offset += n;
        if (n < left)
            return false; /* full: the chardev calls output_space when room is back */
        t->iov_next++;
        t->offset = 0;
    }
    return true;
}

/* A transmit chain that was given back by a quiesce after part of it was written starts
 * behind those bytes. */
static void tx_skip_written(struct virtio_console *con)
{
    struct console_chain *t = &con->tx;
    uint64_t skip = con->tx_skip;
    con->tx_skip = 0;
    while (skip && t->iov_next < t->c.nr_out) {
        size_t len = t->c.iov[t->iov_next].iov_len;
        if (skip < len) {
            t->offset = (size_t)skip;
            return;
        }
        skip -= len;
        t->iov_next++;
    }
}

/* Main loop: moves transmit chains to the chardev until the ring is empty, the chardev is full
 * (the chain is held) or the round's budget is spent (the rest is posted to the next round). */
static void console_tx(struct virtio_console *con)
{
    struct virtio_dev *vdev = &con->vdev;
    struct virtq *q = &vdev->queues[CONSOLE_TXQ].vq;
    struct wisp_err err = {0};
    bool pushed = false;
    for (unsigned n = 0;; n++) {
        if (!con->tx.held) {
            if (n == CONSOLE_TX_BUDGET) {
                evloop_call_async(console_loop(con), &con->tx_call);
                break;
            }
            int r = virtq_pop(q, &con->tx.c, con->tx.iov, CONSOLE_QUEUE_SIZE, &err);
            if (r < 0)
                virtio_needs_reset(vdev, &err);
            if (r <= 0)
                break;
            con->tx.held = true;
            con->tx.iov_next = 0;
            con->tx.offset = 0;
            tx_skip_written(con);
        }
        if (!tx_write_held(con))
            break;
        con->tx.held = false;
        virtq_push(q, con->tx.c.head, 0);
        pushed = true;
    }
    if (pushed)
        virtio_notify_queue(vdev, q);
}

/* Main loop, posted by the chardev's output thread (output_space) or by a round that ran out
 * of budget. */
static void console_tx_resume(void *opaque)
{
    struct virtio_console *con = opaque;
    if (con->running)
        console_tx(con);
}

/* Takes the next receive chain with room into con->rx; a chain without a device-writable byte
 * (§5.3.6.1 forbids device-readable buffers in a receiveq) fails alone: it is returned empty. */
static bool rx_take(struct virtio_console *con)
{
    struct virtio_dev *vdev = &con->vdev;
    struct virtq *q = &vdev->queues[CONSOLE_RXQ].vq;
    struct wisp_err err = {0};
    bool pushed = false, taken = false;
    for (unsigned n = 0; n < CONSOLE_QUEUE_SIZE && !taken; n++) {
        int r = virtq_pop(q, &con->rx.c, con->rx.iov, CONSOLE_QUEUE_SIZE, &err);
        if (r < 0)
            virtio_needs_reset(vdev, &err);
        if (r <= 0)
            break;
        taken = con->rx.c.in_len > 0;
        if (!taken) {
            virtq_push(q, con->rx.c.head, 0);
            pushed = true;
        }
    }
    if (pushed)
        virtio_notify_queue(vdev, q);
    con->rx.held = taken;
    return taken;
}

/* chardev frontend (main loop): the room of the receive buffer the device holds. */
static size_t console_can_receive(void *opaque)
{
    struct virtio_console *con = opaque;
    if (!con->running || (!con->rx.held && !rx_take(con)))
        return 0;
    return con->rx.c.in_len < SIZE_MAX ? (size_t)con->rx.c.in_len : SIZE_MAX;
}

/* chardev frontend (main loop): at most what can_receive said, into the held receive chain,
 * which goes back to the driver at once with the byte count (§5.3.6: the used buffer is the
 * port's input). */
static void console_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct virtio_console *con = opaque;
    if (!con->running || !con->rx.held)
        return;
    const struct virtq_chain *c = &con->rx.c;
    size_t done = 0;
    for (unsigned i = c->nr_out; i < c->nr_out + c->nr_in && done < len; i++) {
        size_t n = len - done < c->iov[i].iov_len ? len - done : c->iov[i].iov_len;
        memcpy(c->iov[i].iov_base, buf + done, n);
        done += n;
    }
    struct virtq *q = &con->vdev.queues[CONSOLE_RXQ].vq;
    con->rx.held = false;
    virtq_push(q, c->head, (uint32_t)done);
    virtio_notify_queue(&con->vdev, q);
}

/* chardev frontend (the chardev's output thread): room is back; the queue is the main loop's. */
static void console_output_space(void *opaque)
{
    struct virtio_console *con = opaque;
    evloop_call_async(console_loop(con), &con->tx_call);
}

/* Main loop: a queue notification (or the start of serving). New receive buffers let the
 * chardev read input again; new transmit buffers carry output. */
static void console_serve(struct virtio_dev *vdev, unsigned queue)
{
    struct virtio_console *con = (struct virtio_console *)vdev;
    if (queue == CONSOLE_RXQ && con->p->chardev)
        chardev_input_ready(con->p->chardev);
    else if (queue == CONSOLE_TXQ)
        console_tx(con);
}

struct console_start {
    struct virtio_console *con;
    int result;
    struct wisp_err *err;
};

static void console_start_in_loop(void *opaque)
{
    struct console_start *s = opaque;
    struct virtio_console *con = s->con;
    con->rx.held = con->tx.held = false;
    con->running = true;
    s->result = virtio_serve_start(&con->vdev, console_loop(con), console_serve, s->err);
    if (s->result < 0)
        con->running = false;
}

static int console_activate(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_console *con = (struct virtio_console *)vdev;
    struct console_start s = {.con = con, .err = err};
    int r = evloop_call_sync(console_loop(con), console_start_in_loop, &s);
    if (r < 0)
        return wisp_err_set(err, -r, "%s: the main loop has stopped", vdev->dev->name);
    return s.result;
}

/* In the main loop: held chains are forgotten with the queues (§2.4: a reset discards them). */
static void console_stop_in_loop(void *opaque)
{
    struct virtio_console *con = opaque;
    con->running = false;
    con->rx.held = con->tx.held = false;
    virtio_serve_stop(&con->vdev);
}

static void console_reset(struct virtio_dev *vdev)
{
    struct virtio_console *con = (struct virtio_console *)vdev;
    (void)evloop_call_sync(console_loop(con), console_stop_in_loop, con);
}

/* §5.3.4: cols and rows stay 0 (no VIRTIO_CONSOLE_F_SIZE), one port, emerg_wr reads 0. */
static void console_config_read(struct virtio_dev *vdev, uint64_t offset, void *data, unsigned size)
{
    const uint8_t config[CONSOLE_CONFIG_SIZE] = {[4] = 1}; /* max_nr_ports = 1, little-endian */
    for (unsigned i = 0; i < size && offset + i < sizeof(config); i++)
        ((uint8_t *)data)[i] = config[offset + i];
}

/* Emergency write (§5.3.5.1: allowed even on an unconfigured device): the byte written to
 * emerg_wr goes to the chardev at once. Like a byte written into a full UART FIFO, it is lost
 * while the chardev is full. */
static void console_config_write(struct virtio_dev *vdev, uint64_t offset, const void *data,
                                 unsigned size)
{
    struct virtio_console *con = (struct virtio_console *)vdev;
    if (offset > CONSOLE_CONFIG_EMERG_WR || offset + size <= CONSOLE_CONFIG_EMERG_WR)
        return;
    uint8_t c = ((const uint8_t *)data)[CONSOLE_CONFIG_EMERG_WR - offset];
    if (con->p->chardev)
        (void)chardev_write(con->p->chardev, &c, 1);
}

/* In the main loop: the chains the device holds go back to their rings (each is the last one
 * taken from its queue); of a transmit chain partly written, tx_skip keeps the count, so that
 * its bytes are written once, before and after a snapshot. */
static void console_quiesce_in_loop(void *opaque)
{
    struct virtio_console *con = opaque;
    if (con->rx.held)
        virtq_unpop(&con->vdev.queues[CONSOLE_RXQ].vq);
    if (con->tx.held) {
        const struct console_chain *t = &con->tx;
        uint64_t done = t->offset;
        for (unsigned i = 0; i < t->iov_next; i++)
            done += t->c.iov[i].iov_len;
        con->tx_skip = done > UINT32_MAX ? UINT32_MAX : (uint32_t)done;
        virtq_unpop(&con->vdev.queues[CONSOLE_TXQ].vq);
    }
    console_stop_in_loop(con);
}

static int console_quiesce(struct virtio_dev *vdev, struct wisp_err *err)
{
    struct virtio_console *con = (struct virtio_console *)vdev;
    if (evloop_call_sync(console_loop(con), console_quiesce_in_loop, con) < 0)
        return wisp_err_set(err, ECANCELED, "the main loop has stopped");
    return 0;
}

static int console_save(struct virtio_dev *vdev, struct state_writer *w, struct wisp_err *err)
{
    struct virtio_console *con = (struct virtio_console *)vdev;
    state_put_u32(w, con->tx_skip);
    return 0;
}

static int console_load(struct virtio_dev *vdev, struct state_reader *r, struct wisp_err *err)
{
    struct virtio_console *con = (struct virtio_console *)vdev;
    con->tx_skip = state_get_u32(r);
    return 0;
}

static const struct virtio_dev_ops console_ops = {
    .config_read = console_config_read,
    .config_write = console_config_write,
    .activate = console_activate,
    .reset = console_reset,
    .quiesce = console_quiesce,
    .resume = console_activate,
    .save = console_save,
    .load = console_load,
};

static int console_realize(struct device *dev, struct wisp_err *err)
{
    struct virtio_console *con = calloc(1, sizeof(*con));
    if (!con)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = con;
    con->p = dev->params;
    con->tx_call = (struct evloop_call){.fn = console_tx_resume, .opaque = con};
    static const uint16_t sizes[] = {CONSOLE_QUEUE_SIZE, CONSOLE_QUEUE_SIZE};
    int r = virtio_dev_init(&con->vdev, dev, &console_ops, VIRTIO_ID_CONSOLE,
                            1ull << VIRTIO_CONSOLE_F_EMERG_WRITE, 2, sizes, err);
    if (r == 0 && con->p->chardev) {
        struct chardev_frontend fe = {
            .can_receive = console_can_receive,
            .receive = console_receive,
            .output_space = console_output_space,
            .opaque = con,
        };
        chardev_set_frontend(con->p->chardev, &fe);
        if (dev->ctx->main_loop)
            r = chardev_attach_input(con->p->chardev, dev->ctx->main_loop, err);
    }
    return r;
}

static void console_teardown(struct device *dev)
{
    struct virtio_console *con = dev->state;
    if (!con)
        return;
    if (con->p->chardev) /* no more callbacks into this device */
        chardev_set_frontend(con->p->chardev, &(struct chardev_frontend){0});
    virtio_dev_destroy(&con->vdev);
    free(con);
}

const struct device_ops virtio_console_device_ops = {
    .type = "virtio-console",
    .realize = console_realize,
    .reset = virtio_mmio_device_reset,
    .mmio_read = virtio_mmio_read,
    .mmio_write = virtio_mmio_write,
    .teardown = console_teardown,
    .quiesce = virtio_mmio_quiesce,
    .resume = virtio_mmio_resume,
    .save = virtio_mmio_save,
    .load = virtio_mmio_load,
};
