/* i8042 keyboard controller with a PS/2 keyboard behind it: the status and command port 0x64,
 * the data port 0x60, the controller commands Linux's i8042 driver uses to probe and set it up,
 * the keyboard commands atkbd sends, a 16-byte output FIFO and IRQ 1 (an edge through an
 * irqfd, as Firecracker's). The keyboard has no keys but the three Ctrl-Alt-Del presses that
 * i8042_send_ctrl_alt_del() queues; the aux port has nothing behind it. Command 0xfe pulses
 * the CPU reset line: the VM ends with status 0. Port accesses come from vCPU threads, the
 * key presses from the main loop: one mutex, held only to change the state, never across an
 * interrupt or a stop request. Every byte sequence a guest writes leaves a state the next byte
 * can come from. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/legacy.h"
#include "devices/resources.h"
#include "common/statebuf.h"

#define I8042_CMD_OFFSET 4 /* command/status port = data port + 4 (0x64) */
#define I8042_KBD_GSI    1
#define I8042_FIFO       16

/* status register */
#define STR_OBF     0x01 /* output buffer full: a byte waits at 0x60 */
#define STR_SYS     0x04 /* system flag (the CTR's copy) */
#define STR_CMD     0x08 /* the last write was to 0x64 (a command), not to 0x60 */
#define STR_UNLOCKS 0x10 /* keyboard not inhibited by the key lock */

/* controller configuration byte (CTR) */
#define CTR_KBDINT 0x01 /* IRQ 1 when a keyboard byte is ready */
#define CTR_SYS    0x04
#define CTR_KBDDIS 0x10 /* keyboard interface disabled */
#define CTR_AUXDIS 0x20
#define CTR_XLATE  0x40 /* translate the keyboard's set 2 into set 1 */
#define CTR_RESET  (CTR_KBDINT | CTR_SYS | CTR_XLATE) /* what a PC BIOS leaves */

/* controller commands (port 0x64) */
#define CMD_READ_CTR   0x20
#define CMD_WRITE_CTR  0x60
#define CMD_AUX_DIS    0xa7
#define CMD_AUX_EN     0xa8
#define CMD_AUX_TEST   0xa9
#define CMD_SELF_TEST  0xaa
#define CMD_KBD_TEST   0xab
#define CMD_KBD_DIS    0xad
#define CMD_KBD_EN     0xae
#define CMD_READ_OUTP  0xd0
#define CMD_WRITE_OUTP 0xd1
#define CMD_WRITE_KBD  0xd2 /* next data byte comes back as if from the keyboard */
#define CMD_WRITE_AUX  0xd3 /* ... as if from the aux port (here: no aux port, see below) */
#define CMD_TO_AUX     0xd4 /* next data byte goes to the aux device (none: dropped) */
#define CMD_RESET      0xfe /* pulse output port bit 0: the CPU reset line */

/* keyboard commands (port 0x60) and answers */
#define KBD_SET_LEDS  0xed
#define KBD_ECHO      0xee
#define KBD_SCANSET   0xf0
#define KBD_GET_ID    0xf2
#define KBD_TYPEMATIC 0xf3
#define KBD_ENABLE    0xf4
#define KBD_DISABLE   0xf5
#define KBD_DEFAULTS  0xf6
#define KBD_RESEND    0xfe
#define KBD_RESET     0xff
#define KBD_ACK       0xfa
#define KBD_BAT_OK    0xaa
#define KBD_NAK       0xfe

#define OUTP_RESET 0x03 /* reset line high (not asserted), A20 on */

struct i8042 {
    pthread_mutex_t lock;
    struct device *dev;
    int irq_fd; /* irqfd on IRQ 1: each write is one edge */
    /* controller */
    uint8_t ctr, outp;
    uint8_t pending; /* a command waiting for its data byte at 0x60, or 0 */
    bool last_cmd;   /* STR_CMD */
    uint8_t fifo[I8042_FIFO];
    uint8_t head, count;
    bool signalled; /* the byte at the head has had its interrupt */
    /* keyboard */
    uint8_t kbd_pending; /* a keyboard command waiting for its parameter, or 0 */
    bool scanning;
    uint8_t set, leds, typematic, last_sent;
};

static void kbd_defaults(struct i8042 *k)
{
    k->scanning = true;
    k->set = 2;
    k->leds = 0;
    k->typematic = 0x2b; /* 10.9 cps, 500 ms */
    k->kbd_pending = 0;
}

static void reset_state(struct i8042 *k)
{
    k->ctr = CTR_RESET;
    k->outp = OUTP_RESET;
    k->pending = 0;
    k->last_cmd = false;
    k->head = k->count = 0;
    k->signalled = false;
    k->last_sent = 0;
    kbd_defaults(k);
}

static bool push(struct i8042 *k, uint8_t b)
{
    if (k->count == I8042_FIFO)
        return false; /* the byte is lost, as a keyboard's would be on overrun */
    k->fifo[(k->head + k->count) % I8042_FIFO] = b;
    k->count++;
    return true;
}

static void kbd_send(struct i8042 *k, uint8_t b)
{
    k->last_sent = b;
    push(k, b);
}

/* A controller answer replaces whatever waited: it is what the guest reads next. */
static void reply(struct i8042 *k, uint8_t b)
{
    k->head = k->count = 0;
    k->signalled = false;
    push(k, b);
}

/* Whether the byte now at the head needs its interrupt (called with the lock held; the caller
 * writes the irqfd after unlocking). */
static bool take_irq(struct i8042 *k)
{
    if (!k->count || k->signalled || !(k->ctr & CTR_KBDINT))
        return false;
    k->signalled = true;
    return true;
}

static void raise_irq(struct i8042 *k)
{
    uint64_t one = 1;
    /* non-blocking; the counter cannot overflow in practice (2^64 - 2 edges) */
    if (k->irq_fd >= 0 && write(k->irq_fd, &one, sizeof(one)) < 0)
        return;
}

static uint8_t status(const struct i8042 *k)
{
    return (k->count ? STR_OBF : 0) | (k->ctr & CTR_SYS) | (k->last_cmd ? STR_CMD : 0) |
           STR_UNLOCKS;
}

static uint8_t read_data(struct i8042 *k)
{
    if (!k->count)
        return 0;
    uint8_t b = k->fifo[k->head];
    k->head = (k->head + 1) % I8042_FIFO;
    k->count--;
    k->signalled = false;
    return b;
}

/* The keyboard's parameter byte for a command that needs one. */
static void kbd_param(struct i8042 *k, uint8_t b)
{
    uint8_t cmd = k->kbd_pending;
    k->kbd_pending = 0;
    if (cmd == KBD_SET_LEDS) {
        k->leds = b & 0x07;
    } else if (cmd == KBD_TYPEMATIC) {
        k->typematic = b & 0x7f;
    } else if (b > 3) { /* KBD_SCANSET: 0 asks, 1-3 choose */
        kbd_send(k, KBD_NAK);
        return;
    }
    kbd_send(k, KBD_ACK);
    if (cmd == KBD_SCANSET && b == 0)
        kbd_send(k, k->set);
    else if (cmd == KBD_SCANSET)
        k->set = b;
}

static void kbd_write(struct i8042 *k, uint8_t b)
{
    if (k->kbd_pending) {
        kbd_param(k, b);
        return;
    }
    switch (b) {
    case KBD_SET_LEDS:
    case KBD_SCANSET:
    case KBD_TYPEMATIC:
        k->kbd_pending = b;
        kbd_send(k, KBD_ACK);
        break;
    case KBD_ECHO:
        kbd_send(k, KBD_ECHO);
        break;
    case KBD_GET_ID:
        kbd_send(k, KBD_ACK);
        kbd_send(k, 0xab);
        kbd_send(k, k->ctr & CTR_XLATE ? 0x41 : 0x83); /* MF2; 0x41 through the translation */
        break;
    case KBD_ENABLE:
        k->scanning = true;
        kbd_send(k, KBD_ACK);
        break;
    case KBD_DISABLE:
    case KBD_DEFAULTS:
        kbd_defaults(k);
        k->scanning = b == KBD_DEFAULTS;
        kbd_send(k, KBD_ACK);
        break;
    case KBD_RESEND:
        push(k, k->last_sent);
        break;
    case KBD_RESET:
        kbd_defaults(k);
        kbd_send(k, KBD_ACK);
        kbd_send(k, KBD_BAT_OK);
        break;
    default:
        if (b >= 0xf7) /* set 3's per-key modes: accepted, nothing to change */
            kbd_send(k, KBD_ACK);
        else
            kbd_send(k, KBD_NAK);
        break;
    }
}

static void data_write(struct i8042 *k, uint8_t b)
{
    uint8_t cmd = k->pending;
    k->pending = 0;
    k->last_cmd = false;
    switch (cmd) {
    case CMD_WRITE_CTR:
        k->ctr = b;
        break;
    case CMD_WRITE_OUTP:
        k->outp = b; /* the A20 gate Linux sets; the reset line is only 0xfe's (see docs) */
        break;
    case CMD_WRITE_KBD:
    case CMD_WRITE_AUX:
        /* no aux port: 0xd3's byte comes back without the aux flag, so Linux's loopback test
         * finds no aux port at once instead of waiting for IRQ 12 */
        reply(k, b);
        break;
    case CMD_TO_AUX:
        break; /* no aux device */
    default:
        kbd_write(k, b);
        break;
    }
}

/* Returns true when the command resets the machine. */
static bool command(struct i8042 *k, uint8_t c)
{
    k->pending = 0;
    k->last_cmd = true;
    switch (c) {
    case CMD_READ_CTR:
        reply(k, k->ctr);
        break;
    case CMD_WRITE_CTR:
    case CMD_WRITE_OUTP:
    case CMD_WRITE_KBD:
    case CMD_WRITE_AUX:
    case CMD_TO_AUX:
        k->pending = c;
        break;
    case CMD_AUX_DIS:
        k->ctr |= CTR_AUXDIS;
        break;
    case CMD_AUX_EN:
        k->ctr &= ~CTR_AUXDIS;
        break;
    case CMD_AUX_TEST:
        reply(k, 0x01); /* aux clock line stuck low: nothing connected */
        break;
    case CMD_SELF_TEST:
        k->ctr |= CTR_SYS;
        reply(k, 0x55);
        break;
    case CMD_KBD_TEST:
        reply(k, 0x00);
        break;
    case CMD_KBD_DIS:
        k->ctr |= CTR_KBDDIS;
        break;
    case CMD_KBD_EN:
        k->ctr &= ~CTR_KBDDIS;
        break;
    case CMD_READ_OUTP:
        reply(k, k->outp);
        break;
    case CMD_RESET:
        return true;
    default:
        break; /* other commands (0xff, the null command, among them) do nothing */
    }
    return false;
}

static int i8042_realize(struct device *dev, struct wisp_err *err)
{
    const struct i8042_params *p = dev->params;
    const struct device_ctx *ctx = dev->ctx;
    struct i8042 *k = calloc(1, sizeof(*k));
    if (!k)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", dev->name);
    dev->state = k;
    k->dev = dev;
    k->irq_fd = -1;
    pthread_mutex_init(&k->lock, NULL);
    reset_state(k);
    int r = ctx->res ? resources_claim_gsi(ctx->res, I8042_KBD_GSI, dev->name, err) : 0;
    if (r == 0 && ctx->attach_irqfd) {
        if ((k->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
            return wisp_err_sys(err, errno, "%s: eventfd", dev->name);
        r = ctx->attach_irqfd(ctx->opaque, I8042_KBD_GSI, k->irq_fd, true, err);
        if (r < 0) {
            close(k->irq_fd);
            k->irq_fd = -1;
        }
    }
    /* One range data..command: port 0x61 (NMI status / speaker) is served by KVM's in-kernel
     * PIT and never reaches us; 0x62/0x63 read as all ones. */
    return r < 0 ? r : device_register_pio(dev, p->base, I8042_CMD_OFFSET + 1, err);
}

static void i8042_reset(struct device *dev)
{
    struct i8042 *k = dev->state;
    pthread_mutex_lock(&k->lock);
    reset_state(k);
    pthread_mutex_unlock(&k->lock);
}

/* Wider accesses are byte accesses of consecutive ports, as on the ISA bus. */
static void i8042_in(struct device *dev, uint64_t offset, void *data, unsigned size)
{
    struct i8042 *k = dev->state;
    uint8_t *p = data;
    bool irq = false;
    memset(data, 0xff, size);
    pthread_mutex_lock(&k->lock);
    for (unsigned i = 0; i < size; i++) {
        if (offset + i == 0) {
            p[i] = read_data(k);
            irq = take_irq(k) || irq; /* the next byte gets its own edge */
        } else if (offset + i == I8042_CMD_OFFSET) {
            p[i] = status(k);
        }
    }
    pthread_mutex_unlock(&k->lock);
    if (irq)
        raise_irq(k);
}

static void i8042_out(struct device *dev, uint64_t offset, const void *data, unsigned size)
{
    struct i8042 *k = dev->state;
    const uint8_t *p = data;
    bool irq = false, reset = false;
    pthread_mutex_lock(&k->lock);
    for (unsigned i = 0; i < size; i++) {
        if (offset + i == 0)
            data_write(k, p[i]);
        else if (offset + i == I8042_CMD_OFFSET)
            reset = command(k, p[i]) || reset;
    }
    irq = take_irq(k);
    pthread_mutex_unlock(&k->lock);
    if (irq)
        raise_irq(k);
    if (reset)
        dev->ctx->request_stop(dev->ctx->opaque, 0, "i8042 reset (0xfe to port 0x64)");
}

/* Set 2 make codes as Firecracker sends them (left Ctrl, left Alt, Delete: no releases, the
 * guest reboots), or their set 1 translation when the controller translates. */
int i8042_send_ctrl_alt_del(struct device *dev, struct wisp_err *err)
{
    static const uint8_t set2[] = {0x14, 0x11, 0xe0, 0x71}, set1[] = {0x1d, 0x38, 0xe0, 0x53};
    struct i8042 *k = dev->state;
    int r = 0;
    pthread_mutex_lock(&k->lock);
    if (k->ctr & CTR_KBDDIS)
        r = wisp_err_set(err, EAGAIN, "the guest disabled the i8042's keyboard interface");
    else if (!k->scanning)
        r = wisp_err_set(err, EAGAIN, "the guest disabled the keyboard (command 0xf5)");
    else if (I8042_FIFO - k->count < (int)sizeof(set2))
        r = wisp_err_set(err, ENOSPC,
                         "the i8042's output buffer is full (%u bytes the guest has not read)",
                         k->count);
    for (unsigned i = 0; r == 0 && i < sizeof(set2); i++)
        kbd_send(k, k->ctr & CTR_XLATE ? set1[i] : set2[i]);
    bool irq = take_irq(k);
    pthread_mutex_unlock(&k->lock);
    if (irq)
        raise_irq(k);
    return r;
}

static void i8042_teardown(struct device *dev)
{
    struct i8042 *k = dev->state;
    if (!k)
        return;
    if (k->irq_fd >= 0) {
        if (dev->ctx->attach_irqfd)
            dev->ctx->attach_irqfd(dev->ctx->opaque, I8042_KBD_GSI, k->irq_fd, false, NULL);
        close(k->irq_fd);
    }
    pthread_mutex_destroy(&k->lock);
    free(k);
    dev->state = NULL;
}

/* docs/snapshot.md: the controller, the FIFO (oldest byte first), the keyboard. */
static int i8042_save(struct device *dev, struct state_writer *w, struct wisp_err *err)
{
    struct i8042 *k = dev->state;
    pthread_mutex_lock(&k->lock);
    state_put_u8(w, k->ctr);
    state_put_u8(w, k->outp);
    state_put_u8(w, k->pending);
    state_put_u8(w, k->last_cmd);
    state_put_u8(w, k->count);
    for (unsigned i = 0; i < k->count; i++)
        state_put_u8(w, k->fifo[(k->head + i) % I8042_FIFO]);
    state_put_u8(w, k->signalled);
    state_put_u8(w, k->kbd_pending);
    state_put_u8(w, k->scanning);
    state_put_u8(w, k->set);
    state_put_u8(w, k->leds);
    state_put_u8(w, k->typematic);
    state_put_u8(w, k->last_sent);
    pthread_mutex_unlock(&k->lock);
    return 0;
}

static const char *state_problem(const struct i8042 *n)
{
    if (n->pending && n->pending != CMD_WRITE_CTR && n->pending != CMD_WRITE_OUTP &&
        n->pending != CMD_WRITE_KBD && n->pending != CMD_WRITE_AUX && n->pending != CMD_TO_AUX)
        return "a pending controller command that takes no data byte";
    if (n->kbd_pending && n->kbd_pending != KBD_SET_LEDS && n->kbd_pending != KBD_SCANSET &&
        n->kbd_pending != KBD_TYPEMATIC)
        return "a pending keyboard command that takes no parameter";
    if (n->set < 1 || n->set > 3)
        return "a scancode set other than 1, 2 or 3";
    return NULL;
}

static int i8042_load(struct device *dev, struct state_reader *r, struct wisp_err *err)
{
    struct i8042 *k = dev->state;
    struct i8042 n = {0};
    n.ctr = state_get_u8(r);
    n.outp = state_get_u8(r);
    n.pending = state_get_u8(r);
    n.last_cmd = state_get_bool(r);
    n.count = state_get_u8(r);
    if (n.count > I8042_FIFO)
        state_reader_fail(r, "more bytes in the output FIFO than it holds");
    for (unsigned i = 0; !r->bad && i < n.count; i++)
        n.fifo[i] = state_get_u8(r);
    n.signalled = state_get_bool(r);
    n.kbd_pending = state_get_u8(r);
    n.scanning = state_get_bool(r);
    n.set = state_get_u8(r);
    n.leds = state_get_u8(r);
    n.typematic = state_get_u8(r);
    n.last_sent = state_get_u8(r);
    const char *why = r->bad ? NULL : state_problem(&n);
    if (why)
        state_reader_fail(r, why);
    if (r->bad)
        return state_reader_done(r, dev->name, err);
    pthread_mutex_lock(&k->lock);
    k->ctr = n.ctr;
    k->outp = n.outp;
    k->pending = n.pending;
    k->last_cmd = n.last_cmd;
    memcpy(k->fifo, n.fifo, sizeof(k->fifo));
    k->head = 0;
    k->count = n.count;
    k->signalled = n.signalled;
    k->kbd_pending = n.kbd_pending;
    k->scanning = n.scanning;
    k->set = n.set;
    k->leds = n.leds;
    k->typematic = n.typematic;
    k->last_sent = n.last_sent;
    pthread_mutex_unlock(&k->lock);
    return 0;
}

const struct device_ops i8042_device_ops = {
    .type = "i8042",
    .realize = i8042_realize,
    .reset = i8042_reset,
    .pio_in = i8042_in,
    .pio_out = i8042_out,
    .teardown = i8042_teardown,
    .save = i8042_save,
    .load = i8042_load,
    .save_optional = true,
};
