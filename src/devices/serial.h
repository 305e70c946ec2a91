/* The 8250/16550A UART model: registers, FIFOs, interrupts, loopback, transmit flow control. */
#ifndef WISP_DEVICES_SERIAL_H
#define WISP_DEVICES_SERIAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct state_reader;
struct state_writer;

/* Register offsets from the base port (PC16550D datasheet, table 2). */
enum {
    UART_RBR_THR_DLL = 0, /* receive / transmit holding, divisor latch low (DLAB=1) */
    UART_IER_DLM = 1,     /* interrupt enable, divisor latch high (DLAB=1) */
    UART_IIR_FCR = 2,     /* interrupt identification (read) / FIFO control (write) */
    UART_LCR = 3,
    UART_MCR = 4,
    UART_LSR = 5,
    UART_MSR = 6,
    UART_SCR = 7,
    UART_NR_PORTS = 8,
};

#define UART_IER_RDI  0x01 /* received data available */
#define UART_IER_THRI 0x02 /* transmitter holding register empty */
#define UART_IER_RLSI 0x04 /* receiver line status */
#define UART_IER_MSI  0x08 /* modem status */

#define UART_IIR_NO_INT  0x01
#define UART_IIR_MSI     0x00
#define UART_IIR_THRI    0x02
#define UART_IIR_RDI     0x04
#define UART_IIR_RLSI    0x06
#define UART_IIR_TIMEOUT 0x0c
#define UART_IIR_FIFO_ON 0xc0

#define UART_FCR_ENABLE   0x01
#define UART_FCR_CLEAR_RX 0x02
#define UART_FCR_CLEAR_TX 0x04

#define UART_LCR_DLAB 0x80

#define UART_MCR_DTR  0x01
#define UART_MCR_RTS  0x02
#define UART_MCR_OUT1 0x04
#define UART_MCR_OUT2 0x08
#define UART_MCR_LOOP 0x10

#define UART_LSR_DR    0x01
#define UART_LSR_OE    0x02
#define UART_LSR_PE    0x04
#define UART_LSR_FE    0x08
#define UART_LSR_BI    0x10
#define UART_LSR_THRE  0x20
#define UART_LSR_TEMT  0x40
#define UART_LSR_FIFOE 0x80

#define UART_MSR_DCTS 0x01
#define UART_MSR_DDSR 0x02
#define UART_MSR_TERI 0x04
#define UART_MSR_DDCD 0x08
#define UART_MSR_CTS  0x10
#define UART_MSR_DSR  0x20
#define UART_MSR_RI   0x40
#define UART_MSR_DCD  0x80

#define UART_FIFO_SIZE 16

/*
 * Where the UART's outputs go. Callbacks run with the UART's lock held and must not block.
 * tx() takes transmitted bytes (not in loopback) and returns how many it took: fewer means the
 * line is busy (a slow reader); the bytes stay in the transmit FIFO, THRE stays clear as on a
 * real UART whose shift register is still sending, and the backend calls serial_tx_ready()
 * once it has room again.
 */
struct serial_backend {
    size_t (*tx)(void *opaque, const uint8_t *buf, size_t len);
    void (*set_irq)(void *opaque, int level); /* the interrupt line changed level */
    void (*rx_space)(void *opaque);           /* the receive FIFO had room again */
    void *opaque;
};

struct serial;

/* Creates a UART in its reset state; NULL if out of memory. The backend is copied. */
struct serial *serial_create(const struct serial_backend *backend);
void serial_destroy(struct serial *s);
/* Master reset (the MR pin): every register to its reset value, FIFOs emptied, line lowered. */
void serial_reset(struct serial *s);

/* A guest read/write of the register at `offset` (0..7). Thread-safe. */
uint8_t serial_read(struct serial *s, unsigned offset);
void serial_write(struct serial *s, unsigned offset, uint8_t value);

/* Host input: queues up to len bytes into the receive FIFO; returns how many were taken
 * (0 when full; the rest should wait for backend.rx_space). Thread-safe. */
size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len);
/* Bytes the receive FIFO can take now. */
size_t serial_rx_room(struct serial *s);
/* The backend can take output again: the transmit FIFO moves on, THRE and its interrupt
 * follow when it is empty. Thread-safe (takes the UART's lock). */
void serial_tx_ready(struct serial *s);
/* Bytes dropped because the guest wrote THR while the transmit FIFO was full. */
uint64_t serial_tx_overruns(struct serial *s);

/* Snapshots: serial_save appends the registers, both FIFOs and the interrupt state to w;
 * serial_load restores them from r (every value checked: -EINVAL with err) and drives the
 * interrupt line to the level the restored state implies. Thread-safe. */
void serial_save(struct serial *s, struct state_writer *w);
int serial_load(struct serial *s, struct state_reader *r, struct wisp_err *err);

#endif
