/* Unit tests of the pieces snapshots are made of, without KVM: the state writer and reader
 * (common/statebuf.h), the UART's state (serial_save/serial_load) and guest memory's dirty-page
 * bitmap. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/statebuf.h"
#include "devices/serial.h"
#include "kvm/guest_mem.h"

static void test_round_trip(void **state)
{
    struct state_writer w;
    state_writer_init(&w);
    state_put_u8(&w, 0xab);
    state_put_u16(&w, 0x1234);
    state_put_u32(&w, 0xdeadbeef);
    state_put_u64(&w, 0x0123456789abcdefull);
    state_put_str(&w, "blk0");
    state_put_str(&w, NULL);
    uint32_t blob[3] = {1, 2, 3};
    state_put_blob(&w, blob, sizeof(blob));
    assert_int_equal(state_writer_error(&w, "test", NULL), 0);
    /* little-endian whatever the host */
    assert_int_equal(w.buf[1], 0x34);
    assert_int_equal(w.buf[2], 0x12);

    struct state_reader r;
    state_reader_init(&r, w.buf, w.len);
    assert_int_equal(state_get_u8(&r), 0xab);
    assert_int_equal(state_get_u16(&r), 0x1234);
    assert_int_equal(state_get_u32(&r), 0xdeadbeef);
    assert_true(state_get_u64(&r) == 0x0123456789abcdefull);
    bool is_null;
    char *s = state_get_str(&r, 64, &is_null);
    assert_string_equal(s, "blk0");
    assert_false(is_null);
    free(s);
    assert_null(state_get_str(&r, 64, &is_null));
    assert_true(is_null);
    uint32_t back[3];
    state_get_blob(&r, back, sizeof(back));
    assert_memory_equal(back, blob, sizeof(blob));
    assert_int_equal(state_reader_done(&r, "test", NULL), 0);
    state_writer_free(&w);
}

static void test_reader_bounds(void **state)
{
    uint8_t bytes[6] = {5, 0, 0, 0, 'a', 'b'}; /* a 5-byte blob with 2 bytes present */
    struct state_reader r;
    struct wisp_err err = {0};
    state_reader_init(&r, bytes, sizeof(bytes));
    bool is_null;
    assert_null(state_get_str(&r, 64, &is_null));
    assert_true(r.bad);
    assert_int_equal(state_get_u32(&r), 0); /* later gets read zeroes */
    assert_int_equal(state_reader_done(&r, "thing", &err), -EINVAL);
    assert_non_null(strstr(err.msg, "thing: the data ends early at byte 4"));

    /* a blob of the wrong size for its structure */
    uint8_t two[6] = {2, 0, 0, 0, 1, 2};
    uint32_t v;
    state_reader_init(&r, two, sizeof(two));
    state_get_blob(&r, &v, sizeof(v));
    assert_true(r.bad);
    assert_int_equal(v, 0);
    assert_int_equal(state_reader_done(&r, "x", &err), -EINVAL);
    assert_non_null(strstr(err.msg, "wrong size at byte 0"));

    /* a length beyond the bound is refused before anything is read */
    uint8_t big[4] = {0xff, 0xff, 0xff, 0x7f};
    size_t n;
    state_reader_init(&r, big, sizeof(big));
    assert_null(state_get_blob_ptr(&r, 1 << 20, &n));
    assert_true(r.bad);

    /* bytes left over are an error too */
    uint8_t one[2] = {1, 2};
    state_reader_init(&r, one, sizeof(one));
    state_get_u8(&r);
    assert_int_equal(state_reader_done(&r, "y", &err), -EINVAL);
    assert_non_null(strstr(err.msg, "1 bytes left over"));
    /* a flag must be 0 or 1 */
    uint8_t flag = 7;
    state_reader_init(&r, &flag, 1);
    state_get_bool(&r);
    assert_true(r.bad);
}

struct uart_env {
    uint8_t out[64];
    unsigned nout;
    int level;
};

static size_t env_tx(void *opaque, const uint8_t *buf, size_t len)
{
    struct uart_env *e = opaque;
    for (size_t i = 0; i < len && e->nout < sizeof(e->out); i++)
        e->out[e->nout++] = buf[i];
    return len;
}

static void env_irq(void *opaque, int level)
{
    ((struct uart_env *)opaque)->level = level;
}

/* A UART with a driver's settings and received bytes continues in a new one: the same
 * registers, the same bytes in its FIFO, the interrupt line raised again. */
static void test_serial_round_trip(void **state)
{
    struct uart_env a = {0}, b = {0};
    struct serial_backend be_a = {env_tx, env_irq, NULL, &a}, be_b = {env_tx, env_irq, NULL, &b};
    struct serial *s = serial_create(&be_a), *t = serial_create(&be_b);
    serial_write(s, UART_LCR, UART_LCR_DLAB);
    serial_write(s, UART_RBR_THR_DLL, 1); /* 115200 baud */
    serial_write(s, UART_LCR, 0x03);
    serial_write(s, UART_IIR_FCR, UART_FCR_ENABLE | 0x80); /* FIFO, trigger level 8 */
    serial_write(s, UART_MCR, UART_MCR_OUT2 | UART_MCR_DTR | UART_MCR_RTS);
    serial_write(s, UART_IER_DLM, UART_IER_RDI);
    serial_write(s, UART_SCR, 0x5a);
    serial_receive(s, (const uint8_t *)"hello", 5);
    assert_int_equal(a.level, 1);

    struct state_writer w;
    state_writer_init(&w);
    serial_save(s, &w);
    struct state_reader r;
    state_reader_init(&r, w.buf, w.len);
    assert_int_equal(serial_load(t, &r, NULL), 0);
    assert_int_equal(state_reader_done(&r, "serial", NULL), 0);
    assert_int_equal(b.level, 1); /* the restored line is raised on the new machine */
    assert_int_equal(serial_read(t, UART_SCR), 0x5a);
    assert_int_equal(serial_read(t, UART_LCR), 0x03);
    assert_int_equal(serial_read(t, UART_IIR_FCR) & 0x0f, UART_IIR_TIMEOUT); /* 5 < 8 */
    char got[6] = {0};
    for (int i = 0; i < 5; i++)
        got[i] = (char)serial_read(t, UART_RBR_THR_DLL);
    assert_string_equal(got, "hello");
    assert_int_equal(b.level, 0);
    serial_write(t, UART_RBR_THR_DLL, '!');
    assert_int_equal(b.nout, 1);

    /* a damaged state is refused and leaves the UART as it was */
    w.buf[9 + 1] = 17; /* rx_head beyond the FIFO */
    state_reader_init(&r, w.buf, w.len);
    struct wisp_err err = {0};
    assert_int_equal(serial_load(t, &r, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "FIFO position"));
    assert_int_equal(serial_read(t, UART_SCR), 0x5a);
    state_writer_free(&w);
    serial_destroy(s);
    serial_destroy(t);
}

/* The VMM's own writes are remembered page by page, in the region they fall in. */
static void test_dirty_bitmap(void **state)
{
    struct guest_mem mem;
    assert_int_equal(guest_mem_layout(&mem, 64 << 20, NULL), 0);
    guest_mem_mark_dirty(&mem, 0x1000, 8); /* not tracked: nothing happens */
    assert_int_equal(guest_mem_track_dirty(&mem, false, NULL), 0);
    guest_mem_mark_dirty(&mem, 0x1ff8, 16);         /* pages 1 and 2 */
    guest_mem_mark_dirty(&mem, (64 << 20) - 1, 99); /* the last page, clipped at the end */
    guest_mem_mark_dirty(&mem, 64 << 20, 4096);     /* outside RAM: ignored */
    uint64_t words = guest_mem_bitmap_words(&mem, 0);
    assert_int_equal(words, (64 << 20) / 4096 / 64);
    uint64_t *bm = calloc(words, sizeof(uint64_t));
    guest_mem_take_dirty(&mem, 0, bm);
    assert_true(bm[0] == 0x6);
    assert_true(bm[words - 1] == 1ull << 63);
    memset(bm, 0, words * sizeof(uint64_t));
    guest_mem_take_dirty(&mem, 0, bm); /* taking clears */
    assert_true(bm[0] == 0);
    free(bm);
    guest_mem_destroy(&mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_reader_bounds),
        cmocka_unit_test(test_serial_round_trip),
        cmocka_unit_test(test_dirty_bitmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
