/*
 * 8250/16550A UART as Linux's 8250 driver expects it (PC16550D datasheet): divisor latch,
 * 16-byte receive FIFO, THRE / received-data / line-status / modem-status interrupts with the
 * IIR priorities of table 4, loopback (MCR bit 4), and a PC-style interrupt line gated by OUT2.
 * Transmission takes no time while the backend takes the bytes; when it does not (its reader is
 * slow), they wait in the 16-byte transmit FIFO and THRE stays clear until the backend has room
 * (serial_tx_ready), so a driver waits as it would for a slow line and the guest never blocks.
 */
#include "devices/serial.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/statebuf.h"

struct serial {
    pthread_mutex_t lock;
    struct serial_backend be;
    uint8_t ier, lcr, mcr, lsr, msr, scr, fcr;
    uint8_t dll, dlm;
    bool thr_ipending; /* THRE interrupt latched (cleared by IIR read or THR write) */
    bool irq_level;    /* last level given to be.set_irq */
    uint8_t rx[UART_FIFO_SIZE];
    unsigned rx_head, rx_count;
    uint8_t tx[UART_FIFO_SIZE];
    unsigned tx_head, tx_count;
    uint64_t tx_overruns;
};

static bool serial_fifo_enabled(const struct serial *s)
{
    return s->fcr & UART_FCR_ENABLE;
}

static unsigned serial_rx_capacity(const struct serial *s)
{
    return serial_fifo_enabled(s) ? UART_FIFO_SIZE : 1;
}

static unsigned serial_rx_trigger(const struct serial *s)
{
    static const unsigned levels[4] = {1, 4, 8, 14}; /* FCR bits 7:6 */
    return serial_fifo_enabled(s) ? levels[s->fcr >> 6] : 1;
}

/* The pending interrupt of highest priority (datasheet table 4), as IIR bits 3:0. */
static uint8_t serial_pending(const struct serial *s)
{
    if ((s->ier & UART_IER_RLSI) &&
        (s->lsr & (UART_LSR_OE | UART_LSR_PE | UART_LSR_FE | UART_LSR_BI)))
        return UART_IIR_RLSI;
    if ((s->ier & UART_IER_RDI) && s->rx_count) {
        /* Below the trigger level the FIFO reports a character timeout; we have no timer,
         * so the four character times are taken as already elapsed. */
        return s->rx_count >= serial_rx_trigger(s) || !serial_fifo_enabled(s) ? UART_IIR_RDI
                                                                              : UART_IIR_TIMEOUT;
    }
    if ((s->ier & UART_IER_THRI) && s->thr_ipending)
        return UART_IIR_THRI;
    if ((s->ier & UART_IER_MSI) && (s->msr & 0x0f))
        return UART_IIR_MSI;
    return UART_IIR_NO_INT;
}

/* On a PC the UART's INTR pin reaches the PIC through a buffer enabled by OUT2; in loopback
 * the OUT2 pin is disconnected, so the line stays low. */
static void serial_update_irq(struct serial *s)
{
    bool level = serial_pending(s) != UART_IIR_NO_INT && (s->mcr & UART_MCR_OUT2) &&
                 !(s->mcr & UART_MCR_LOOP);
    if (level != s->irq_level) {
        s->irq_level = level;
        if (s->be.set_irq)
            s->be.set_irq(s->be.opaque, level);
    }
}

static void serial_clear_rx(struct serial *s)
{
    bool was_full = s->rx_count == serial_rx_capacity(s);
    s->rx_head = s->rx_count = 0;
    s->lsr &= ~(UART_LSR_DR | UART_LSR_FIFOE);
    if (was_full && s->be.rx_space)
        s->be.rx_space(s->be.opaque);
}

/* Appends one byte; a full FIFO (or holding register) sets the overrun error instead. */
static void serial_push_rx(struct serial *s, uint8_t byte)
{
    if (s->rx_count == serial_rx_capacity(s)) {
        s->lsr |= UART_LSR_OE;
        return;
    }
    s->rx[(s->rx_head + s->rx_count) % UART_FIFO_SIZE] = byte;
    s->rx_count++;
    s->lsr |= UART_LSR_DR;
}

static uint8_t serial_pop_rx(struct serial *s)
{
    if (!s->rx_count)
        return 0;
    bool was_full = s->rx_count == serial_rx_capacity(s);
    uint8_t byte = s->rx[s->rx_head];
    s->rx_head = (s->rx_head + 1) % UART_FIFO_SIZE;
    s->rx_count--;
    if (!s->rx_count)
        s->lsr &= ~UART_LSR_DR;
    if (was_full && s->be.rx_space)
        s->be.rx_space(s->be.opaque);
    return byte;
}

/* Modem status inputs: in loopback they follow MCR (DTR->DSR, RTS->CTS, OUT1->RI,
 * OUT2->DCD); otherwise a present, ready peer (CTS, DSR, DCD). */
static uint8_t serial_modem_inputs(const struct serial *s)
{
    if (!(s->mcr & UART_MCR_LOOP))
        return UART_MSR_CTS | UART_MSR_DSR | UART_MSR_DCD;
    uint8_t v = 0;
    if (s->mcr & UART_MCR_RTS)
        v |= UART_MSR_CTS;
    if (s->mcr & UART_MCR_DTR)
        v |= UART_MSR_DSR;
    if (s->mcr & UART_MCR_OUT1)
        v |= UART_MSR_RI;
    if (s->mcr & UART_MCR_OUT2)
        v |= UART_MSR_DCD;
    return v;
}

/* Latches the delta bits for changed inputs (TERI only on RI's trailing edge). */
static void serial_update_msr(struct serial *s)
{
    uint8_t now = serial_modem_inputs(s), old = s->msr & 0xf0, delta = 0;
    if ((now ^ old) & UART_MSR_CTS)
        delta |= UART_MSR_DCTS;
    if ((now ^ old) & UART_MSR_DSR)
        delta |= UART_MSR_DDSR;
    if ((old & UART_MSR_RI) && !(now & UART_MSR_RI))
        delta |= UART_MSR_TERI;
    if ((now ^ old) & UART_MSR_DCD)
        delta |= UART_MSR_DDCD;
    s->msr = now | (s->msr & 0x0f) | delta;
}

static void serial_reset_locked(struct serial *s)
{
    s->ier = s->lcr = s->mcr = s->scr = s->fcr = 0;
    s->dll = 0x0c; /* 9600 baud from the 1.8432 MHz clock, what firmware leaves */
    s->dlm = 0;
    s->lsr = UART_LSR_THRE | UART_LSR_TEMT;
    s->msr = serial_modem_inputs(s);
    s->thr_ipending = false;
    s->rx_head = s->rx_count = 0;
    s->tx_head = s->tx_count = 0;
    serial_update_irq(s);
}

struct serial *serial_create(const struct serial_backend *backend)
{
    struct serial *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->be = *backend;
    serial_reset_locked(s);
    return s;
}

void serial_destroy(struct serial *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void serial_reset(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    serial_reset_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static uint8_t serial_read_locked(struct serial *s, unsigned offset)
{
    bool dlab = s->lcr & UART_LCR_DLAB;
    uint8_t v;
    switch (offset) {
    case UART_RBR_THR_DLL:
        return dlab ? s->dll : serial_pop_rx(s);
    case UART_IER_DLM:
        return dlab ? s->dlm : s->ier;
    case UART_IIR_FCR:
        v = serial_pending(s);
        if (v == UART_IIR_THRI)
            s->thr_ipending = false; /* reading IIR with THRE as the source clears it */
        return v | (serial_fifo_enabled(s) ? UART_IIR_FIFO_ON : 0);
    case UART_LCR:
        return s->lcr;
    case UART_MCR:
        return s->mcr;
    case UART_LSR:
        v = s->lsr;
        s->lsr &= ~(UART_LSR_OE | UART_LSR_PE | UART_LSR_FE | UART_LSR_BI | UART_LSR_FIFOE);
        return v;
    case UART_MSR:
        v = s->msr;
        s->msr &= 0xf0; /* reading MSR clears the delta bits */
        return v;
    case UART_SCR:
        return s->scr;
    }
    return 0xff;
}

uint8_t serial_read(struct serial *s, unsigned offset)
{
    pthread_mutex_lock(&s->lock);
    uint8_t v = serial_read_locked(s, offset);
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return v;
}

/* Hands the transmit FIFO to the backend; when it is empty, THR is free again (THRE, TEMT
 * and the THRE interrupt). */
static void serial_tx_flush(struct serial *s)
{
    while (s->tx_count) {
        unsigned run =
            s->tx_count < UART_FIFO_SIZE - s->tx_head ? s->tx_count : UART_FIFO_SIZE - s->tx_head;
        size_t n = s->be.tx ? s->be.tx(s->be.opaque, s->tx + s->tx_head, run) : run;
        if (n > run)
            n = run;
        s->tx_head = (s->tx_head + (unsigned)n) % UART_FIFO_SIZE;
        s->tx_count -= (unsigned)n;
        if (n < run)
            break; /* the line is busy: serial_tx_ready() continues */
    }
    if (s->tx_count)
        return;
    if (!(s->lsr & UART_LSR_THRE))
        s->thr_ipending = true; /* THR became empty */
    s->lsr |= UART_LSR_THRE | UART_LSR_TEMT;
}

static unsigned serial_tx_capacity(const struct serial *s)
{
    return serial_fifo_enabled(s) ? UART_FIFO_SIZE : 1;
}

static void serial_write_thr(struct serial *s, uint8_t value)
{
    if (s->mcr & UART_MCR_LOOP) {
        serial_push_rx(s, value);
        s->lsr |= UART_LSR_THRE | UART_LSR_TEMT;
        s->thr_ipending = true;
        return;
    }
    if (s->tx_count >= serial_tx_capacity(s)) {
        s->tx_overruns++; /* written while THR was full: the byte is lost, as on hardware */
        return;
    }
    s->tx[(s->tx_head + s->tx_count) % UART_FIFO_SIZE] = value;
    s->tx_count++;
    s->lsr &= ~(UART_LSR_THRE | UART_LSR_TEMT);
    s->thr_ipending = false;
    serial_tx_flush(s);
}

static void serial_write_ier(struct serial *s, uint8_t value)
{
    uint8_t old = s->ier;
    s->ier = value & 0x0f; /* bits 7:4 are zero on a 16550A (Linux probes bit 6) */
    /* Enabling ETBEI while THR is empty raises THRE again; Linux's UART_BUG_THRE test
     * relies on it. */
    if ((s->ier & ~old & UART_IER_THRI) && (s->lsr & UART_LSR_THRE))
        s->thr_ipending = true;
}

static void serial_clear_tx(struct serial *s)
{
    s->tx_head = s->tx_count = 0;
    if (!(s->lsr & UART_LSR_THRE))
        s->thr_ipending = true;
    s->lsr |= UART_LSR_THRE | UART_LSR_TEMT;
}

static void serial_write_fcr(struct serial *s, uint8_t value)
{
    if ((value ^ s->fcr) & UART_FCR_ENABLE) {
        serial_clear_rx(s); /* changing the FIFO mode empties both FIFOs */
        serial_clear_tx(s);
        s->fcr = value & UART_FCR_ENABLE;
    }
    if (!(value & UART_FCR_ENABLE))
        return; /* the other bits need FIFO enable set in the same write */
    if (value & UART_FCR_CLEAR_RX)
        serial_clear_rx(s);
    if (value & UART_FCR_CLEAR_TX)
        serial_clear_tx(s);
    s->fcr = value & 0xc1; /* trigger level and enable; clear bits self-reset */
}

static void serial_write_locked(struct serial *s, unsigned offset, uint8_t value)
{
    bool dlab = s->lcr & UART_LCR_DLAB;
    switch (offset) {
    case UART_RBR_THR_DLL:
        if (dlab)
            s->dll = value;
        else
            serial_write_thr(s, value);
        break;
    case UART_IER_DLM:
        if (dlab)
            s->dlm = value;
        else
            serial_write_ier(s, value);
        break;
    case UART_IIR_FCR:
        serial_write_fcr(s, value);
        break;
    case UART_LCR:
        s->lcr = value;
        break;
    case UART_MCR:
        s->mcr = value & 0x1f;
        serial_update_msr(s);
        break;
    case UART_SCR:
        s->scr = value;
        break;
    default: /* LSR and MSR are read-only (writes are for factory tests) */
        break;
    }
}

void serial_write(struct serial *s, unsigned offset, uint8_t value)
{
    pthread_mutex_lock(&s->lock);
    serial_write_locked(s, offset, value);
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&s->lock);
    size_t n = 0;
    while (n < len && s->rx_count < serial_rx_capacity(s))
        serial_push_rx(s, buf[n++]);
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return n;
}

void serial_tx_ready(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    serial_tx_flush(s);
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

uint64_t serial_tx_overruns(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->tx_overruns;
    pthread_mutex_unlock(&s->lock);
    return n;
}

size_t serial_rx_room(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    size_t room = serial_rx_capacity(s) - s->rx_count;
    pthread_mutex_unlock(&s->lock);
    return room;
}

/* State layout (docs/snapshot.md, "serial"): the registers, the latched THRE interrupt, each
 * FIFO as head, count and its 16 bytes, the overrun count. */
void serial_save(struct serial *s, struct state_writer *w)
{
    pthread_mutex_lock(&s->lock);
    const uint8_t regs[] = {s->ier, s->lcr, s->mcr, s->lsr, s->msr, s->scr, s->fcr, s->dll, s->dlm};
    state_put_bytes(w, regs, sizeof(regs));
    state_put_u8(w, s->thr_ipending);
    state_put_u8(w, (uint8_t)s->rx_head);
    state_put_u8(w, (uint8_t)s->rx_count);
    state_put_bytes(w, s->rx, sizeof(s->rx));
    state_put_u8(w, (uint8_t)s->tx_head);
    state_put_u8(w, (uint8_t)s->tx_count);
    state_put_bytes(w, s->tx, sizeof(s->tx));
    state_put_u64(w, s->tx_overruns);
    pthread_mutex_unlock(&s->lock);
}

/* The values a 16550A can hold: reserved bits clear, FIFO positions inside the FIFO. */
static const char *serial_state_problem(const struct serial *s)
{
    if (s->ier & 0xf0 || s->mcr & 0xe0 || (s->fcr & ~0xc1))
        return "a register holds bits a 16550A does not have";
    if (s->rx_head >= UART_FIFO_SIZE || s->tx_head >= UART_FIFO_SIZE)
        return "a FIFO position is beyond the FIFO";
    if (s->rx_count > serial_rx_capacity(s) || s->tx_count > serial_tx_capacity(s))
        return "a FIFO holds more bytes than it can";
    return NULL;
}

int serial_load(struct serial *s, struct state_reader *r, struct wisp_err *err)
{
    struct serial n = {0};
    uint8_t regs[9];
    state_get_bytes(r, regs, sizeof(regs));
    n.ier = regs[0], n.lcr = regs[1], n.mcr = regs[2], n.lsr = regs[3], n.msr = regs[4];
    n.scr = regs[5], n.fcr = regs[6], n.dll = regs[7], n.dlm = regs[8];
    n.thr_ipending = state_get_bool(r);
    n.rx_head = state_get_u8(r);
    n.rx_count = state_get_u8(r);
    state_get_bytes(r, n.rx, sizeof(n.rx));
    n.tx_head = state_get_u8(r);
    n.tx_count = state_get_u8(r);
    state_get_bytes(r, n.tx, sizeof(n.tx));
    n.tx_overruns = state_get_u64(r);
    const char *why = r->bad ? NULL : serial_state_problem(&n);
    if (why)
        state_reader_fail(r, why);
    if (r->bad)
        return state_reader_done(r, "serial", err);
    pthread_mutex_lock(&s->lock);
    s->ier = n.ier, s->lcr = n.lcr, s->mcr = n.mcr, s->lsr = n.lsr, s->msr = n.msr;
    s->scr = n.scr, s->fcr = n.fcr, s->dll = n.dll, s->dlm = n.dlm;
    s->thr_ipending = n.thr_ipending;
    memcpy(s->rx, n.rx, sizeof(s->rx));
    s->rx_head = n.rx_head, s->rx_count = n.rx_count;
    memcpy(s->tx, n.tx, sizeof(s->tx));
    s->tx_head = n.tx_head, s->tx_count = n.tx_count;
    s->tx_overruns = n.tx_overruns;
    s->irq_level = false; /* the line of a new machine is low: raised again below if due */
    if (s->tx_count)
        serial_tx_flush(s); /* bytes that waited for a slow reader go to this host side */
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}
