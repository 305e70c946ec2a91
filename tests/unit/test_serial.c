/* Unit tests of the 8250/16550A model, without KVM: registers, DLAB, IIR priorities, THRE and
 * receive interrupts, the interrupt line (OUT2-gated), FIFO, loopback, Linux's probes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "devices/serial.h"

struct uart_env {
    struct serial *s;
    uint8_t out[256];
    unsigned nout;
    int level;
    int irq_changes;
    int rx_space_calls;
    size_t budget; /* bytes the "line" takes before it is busy; SIZE_MAX = always */
};

static size_t env_tx(void *opaque, const uint8_t *buf, size_t len)
{
    struct uart_env *e = opaque;
    size_t n = len < e->budget ? len : e->budget;
    for (size_t i = 0; i < n && e->nout < sizeof(e->out); i++)
        e->out[e->nout++] = buf[i];
    if (e->budget != SIZE_MAX)
        e->budget -= n;
    return n;
}

static void env_irq(void *opaque, int level)
{
    struct uart_env *e = opaque;
    e->level = level;
    e->irq_changes++;
}

static void env_rx_space(void *opaque)
{
    struct uart_env *e = opaque;
    e->rx_space_calls++;
}

static int setup(void **state)
{
    static struct uart_env env;
    memset(&env, 0, sizeof(env));
    env.budget = SIZE_MAX;
    struct serial_backend be = {env_tx, env_irq, env_rx_space, &env};
    env.s = serial_create(&be);
    *state = &env;
    return env.s ? 0 : -1;
}

static int teardown(void **state)
{
    struct uart_env *e = *state;
    serial_destroy(e->s);
    return 0;
}

#define RD(e, reg)    serial_read((e)->s, (reg))
#define WR(e, reg, v) serial_write((e)->s, (reg), (v))

static void test_reset_values(void **state)
{
    struct uart_env *e = *state;
    assert_int_equal(RD(e, UART_IER_DLM), 0);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_NO_INT);
    assert_int_equal(RD(e, UART_LSR), UART_LSR_THRE | UART_LSR_TEMT);
    assert_int_equal(RD(e, UART_MSR) & 0xf0, UART_MSR_CTS | UART_MSR_DSR | UART_MSR_DCD);
    assert_int_equal(e->level, 0);
}

static void test_transmit_and_scratch(void **state)
{
    struct uart_env *e = *state;
    WR(e, UART_RBR_THR_DLL, 'h');
    WR(e, UART_RBR_THR_DLL, 'i');
    assert_int_equal(e->nout, 2);
    assert_memory_equal(e->out, "hi", 2);
    assert_true(RD(e, UART_LSR) & UART_LSR_THRE);
    WR(e, UART_SCR, 0xa5);
    assert_int_equal(RD(e, UART_SCR), 0xa5);
}

static void test_dlab_divisor_latch(void **state)
{
    struct uart_env *e = *state;
    WR(e, UART_IER_DLM, UART_IER_RDI);
    WR(e, UART_LCR, UART_LCR_DLAB | 0x03);
    WR(e, UART_RBR_THR_DLL, 0x01); /* 115200 baud */
    WR(e, UART_IER_DLM, 0x00);
    assert_int_equal(RD(e, UART_RBR_THR_DLL), 0x01);
    assert_int_equal(RD(e, UART_IER_DLM), 0x00);
    assert_int_equal(e->nout, 0); /* a DLL write is not a transmission */
    WR(e, UART_LCR, 0x03);
    assert_int_equal(RD(e, UART_IER_DLM), UART_IER_RDI); /* IER kept apart from DLM */
    assert_int_equal(RD(e, UART_LCR), 0x03);
}

static void test_thre_interrupt(void **state)
{
    struct uart_env *e = *state;
    WR(e, UART_IER_DLM, UART_IER_THRI);
    /* no OUT2: the interrupt is pending but the PC's line stays low */
    assert_int_equal(e->level, 0);
    WR(e, UART_MCR, UART_MCR_OUT2);
    assert_int_equal(e->level, 1);
    /* reading IIR with THRE as the source clears it and lowers the line */
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_THRI);
    assert_int_equal(e->level, 0);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_NO_INT);
    /* a transmission raises it again */
    WR(e, UART_RBR_THR_DLL, 'x');
    assert_int_equal(e->level, 1);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_THRI);
    /* Linux's UART_BUG_THRE test: re-enabling ETBEI re-asserts THRE */
    WR(e, UART_IER_DLM, 0);
    WR(e, UART_IER_DLM, UART_IER_THRI);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_THRI);
    /* disabling ETBEI lowers the line */
    WR(e, UART_RBR_THR_DLL, 'y');
    assert_int_equal(e->level, 1);
    WR(e, UART_IER_DLM, 0);
    assert_int_equal(e->level, 0);
}

static void test_iir_priorities(void **state)
{
    struct uart_env *e = *state;
    WR(e, UART_MCR, UART_MCR_OUT2);
    WR(e, UART_IER_DLM, UART_IER_RDI | UART_IER_THRI | UART_IER_RLSI | UART_IER_MSI);
    /* THRE pending (enabled while empty); data arrives and takes priority */
    assert_int_equal(serial_receive(e->s, (const uint8_t *)"a", 1), 1);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_RDI);
    /* an overrun (second byte into the 1-byte holding register via loopback) is higher */
    WR(e, UART_MCR, UART_MCR_OUT2 | UART_MCR_LOOP);
    WR(e, UART_RBR_THR_DLL, 'b');
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_RLSI);
    uint8_t lsr = RD(e, UART_LSR); /* reading LSR clears the error */
    assert_true(lsr & UART_LSR_OE);
    assert_true(lsr & UART_LSR_DR);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_RDI);
    assert_int_equal(RD(e, UART_RBR_THR_DLL), 'a');
    /* data gone: THRE (set by the loopback write) is next */
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_THRI);
    /* then modem status: loopback changes of MCR produced delta bits */
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_MSI);
    assert_true(RD(e, UART_MSR) & 0x0f);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_NO_INT);
}

static void test_loopback(void **state)
{
    struct uart_env *e = *state;
    /* Linux autoconfig: MCR = LOOP | RTS | OUT2 (0x1a) must read MSR[7:4] = CTS | DCD (0x90) */
    WR(e, UART_MCR, UART_MCR_LOOP | 0x0a);
    assert_int_equal(RD(e, UART_MSR) & 0xf0, 0x90);
    WR(e, UART_MCR, UART_MCR_LOOP | UART_MCR_DTR | UART_MCR_OUT1);
    assert_int_equal(RD(e, UART_MSR) & 0xf0, UART_MSR_DSR | UART_MSR_RI);
    /* transmitted bytes come back, nothing leaves */
    WR(e, UART_IIR_FCR, UART_FCR_ENABLE);
    WR(e, UART_RBR_THR_DLL, 'L');
    WR(e, UART_RBR_THR_DLL, 'B');
    assert_int_equal(e->nout, 0);
    assert_true(RD(e, UART_LSR) & UART_LSR_DR);
    assert_int_equal(RD(e, UART_RBR_THR_DLL), 'L');
    assert_int_equal(RD(e, UART_RBR_THR_DLL), 'B');
    assert_false(RD(e, UART_LSR) & UART_LSR_DR);
    /* in loopback the interrupt line stays low even with OUT2 */
    WR(e, UART_IER_DLM, UART_IER_THRI);
    assert_int_equal(e->level, 0);
    WR(e, UART_MCR, UART_MCR_OUT2);
    assert_int_equal(e->level, 1);
}

static void test_fifo(void **state)
{
    struct uart_env *e = *state;
    /* without FIFO: one byte of room */
    assert_int_equal(serial_rx_room(e->s), 1);
    WR(e, UART_IIR_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_RX | UART_FCR_CLEAR_TX | 0xc0);
    assert_int_equal(RD(e, UART_IIR_FCR) & 0xc0, UART_IIR_FIFO_ON);
    assert_int_equal(serial_rx_room(e->s), UART_FIFO_SIZE);
    uint8_t in[20];
    for (unsigned i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)('A' + i);
    assert_int_equal(serial_receive(e->s, in, sizeof(in)), UART_FIFO_SIZE);
    assert_int_equal(serial_rx_room(e->s), 0);
    WR(e, UART_MCR, UART_MCR_OUT2);
    WR(e, UART_IER_DLM, UART_IER_RDI);
    /* 16 >= trigger level 14: received data available */
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_FIFO_ON | UART_IIR_RDI);
    assert_int_equal(e->level, 1);
    assert_int_equal(RD(e, UART_RBR_THR_DLL), 'A');
    assert_int_equal(e->rx_space_calls, 1); /* full -> room: the host may send more */
    for (unsigned i = 1; i < 3; i++)
        assert_int_equal(RD(e, UART_RBR_THR_DLL), 'A' + i);
    /* 13 left, below the trigger: character timeout */
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_FIFO_ON | UART_IIR_TIMEOUT);
    /* FCR clear-RX empties it and the line drops */
    WR(e, UART_IIR_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_RX);
    assert_false(RD(e, UART_LSR) & UART_LSR_DR);
    assert_int_equal(e->level, 0);
    /* disabling the FIFO reports no FIFO in IIR */
    WR(e, UART_IIR_FCR, 0);
    assert_int_equal(RD(e, UART_IIR_FCR), UART_IIR_NO_INT);
}

static void test_linux_probe_ier(void **state)
{
    struct uart_env *e = *state;
    /* autoconfig: IER reads back its low nibble only (bit 6 would mean an XScale UART) */
    WR(e, UART_IER_DLM, 0x0f | 0x40);
    assert_int_equal(RD(e, UART_IER_DLM), 0x0f);
    WR(e, UART_IER_DLM, 0);
    assert_int_equal(RD(e, UART_IER_DLM), 0);
    /* LSR and MSR are read-only */
    WR(e, UART_LSR, 0);
    assert_true(RD(e, UART_LSR) & UART_LSR_THRE);
}

static void test_reset_lowers_line(void **state)
{
    struct uart_env *e = *state;
    WR(e, UART_MCR, UART_MCR_OUT2);
    WR(e, UART_IER_DLM, UART_IER_THRI);
    assert_int_equal(e->level, 1);
    serial_reset(e->s);
    assert_int_equal(e->level, 0);
    assert_int_equal(RD(e, UART_MCR), 0);
}

/* A host side that does not drain (a reader that stopped reading): the bytes wait in the
 * 16-byte transmit FIFO, THRE and TEMT stay clear as on a busy line, bytes written beyond the
 * FIFO are lost (and counted), and nothing blocks. When the host has room again the FIFO moves
 * on and the THRE interrupt comes. */
static void test_transmit_back_pressure(void **state)
{
    struct uart_env *e = *state;
    WR(e, UART_IIR_FCR, UART_FCR_ENABLE);
    WR(e, UART_MCR, UART_MCR_OUT2);
    WR(e, UART_IER_DLM, UART_IER_THRI);
    assert_int_equal(RD(e, UART_IIR_FCR) & 0x0f, UART_IIR_THRI); /* clears the pending THRE */
    e->budget = 3;
    for (unsigned i = 0; i < 20; i++)
        WR(e, UART_RBR_THR_DLL, (uint8_t)('a' + i));
    assert_int_equal(e->nout, 3);
    uint8_t lsr = RD(e, UART_LSR);
    assert_false(lsr & UART_LSR_THRE);
    assert_false(lsr & UART_LSR_TEMT);
    assert_int_equal(e->level, 0); /* no THRE interrupt while busy */
    assert_int_equal(serial_tx_overruns(e->s), 20 - 3 - UART_FIFO_SIZE); /* beyond the FIFO */
    /* room for 10 more: still not empty */
    e->budget = 10;
    serial_tx_ready(e->s);
    assert_int_equal(e->nout, 13);
    assert_false(RD(e, UART_LSR) & UART_LSR_THRE);
    assert_int_equal(e->level, 0);
    e->budget = SIZE_MAX;
    serial_tx_ready(e->s);
    assert_int_equal(e->nout, 3 + UART_FIFO_SIZE);
    assert_memory_equal(e->out, "abcdefghijklmnopqrs", 3 + UART_FIFO_SIZE);
    assert_true(RD(e, UART_LSR) & UART_LSR_THRE);
    assert_int_equal(e->level, 1); /* THR empty again: the driver may send more */
    assert_int_equal(RD(e, UART_IIR_FCR) & 0x0f, UART_IIR_THRI);
    /* without FIFO the holding register is one byte */
    WR(e, UART_IIR_FCR, 0);
    e->budget = 0;
    WR(e, UART_RBR_THR_DLL, 'X');
    WR(e, UART_RBR_THR_DLL, 'Y');
    assert_int_equal(serial_tx_overruns(e->s), 20 - 3 - UART_FIFO_SIZE + 1);
    e->budget = SIZE_MAX;
    serial_tx_ready(e->s);
    assert_int_equal(e->out[e->nout - 1], 'X');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reset_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transmit_and_scratch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dlab_divisor_latch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thre_interrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iir_priorities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loopback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_linux_probe_ier, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_lowers_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transmit_back_pressure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
