/* The i8042 keyboard controller at register level (docs/machine.md): the sequence Linux's
 * i8042 and atkbd drivers send while probing, the CTR and its interrupt-enable bit, keyboard
 * reset and ID, malformed sequences, the reset command, and Ctrl-Alt-Del pressed through the
 * API (PUT /actions SendCtrlAltDel): its scancodes and IRQ 1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "libqtest.h"

#define DATA   0x60
#define STATUS 0x64
#define IRQ    1
#define OBF    0x01

struct fixture {
    struct qtest *q;
    char dir[64], api[96];
};

static void cmocka_fail(const char *msg)
{
    fail_msg("%s", msg);
}

static int start(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/wisp-qtest-i8042-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->api, sizeof(f->api), "%s/api.sock", f->dir);
    f->q = qtest_start(qtest_vmm(), "--api-sock", f->api, NULL);
    *state = f;
    return 0;
}

static int stop(void **state)
{
    struct fixture *f = *state;
    qtest_kill(f->q);
    unlink(f->api);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* One byte from the output buffer, which must hold one. */
static uint8_t read_byte(struct qtest *q)
{
    uint8_t st = qtest_inb(q, STATUS);
    if (!(st & OBF))
        fail_msg("the output buffer is empty (status 0x%02x)", st);
    return qtest_inb(q, DATA);
}

static void expect_empty(struct qtest *q)
{
    assert_int_equal(qtest_inb(q, STATUS) & OBF, 0);
}

static uint8_t command(struct qtest *q, uint8_t cmd)
{
    qtest_outb(q, STATUS, cmd);
    return read_byte(q);
}

static void write_ctr(struct qtest *q, uint8_t ctr)
{
    qtest_outb(q, STATUS, 0x60);
    assert_int_equal(qtest_inb(q, STATUS) & 0x08, 0x08); /* the last write was a command */
    qtest_outb(q, DATA, ctr);
    assert_int_equal(qtest_inb(q, STATUS) & 0x08, 0);
}

/* `n` bytes the keyboard answers to `cmd` at 0x60. */
static void kbd_expect(struct qtest *q, uint8_t cmd, const uint8_t *want, unsigned n)
{
    qtest_outb(q, DATA, cmd);
    for (unsigned i = 0; i < n; i++) {
        uint8_t got = read_byte(q);
        if (got != want[i])
            fail_msg("keyboard command 0x%02x: byte %u is 0x%02x, not 0x%02x", cmd, i, got,
                     want[i]);
    }
    expect_empty(q);
}

/* The status code of PUT /actions {"action_type": TYPE} on the API socket, its body in body. */
static int put_action(const char *sock, const char *type, char *body, size_t body_len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    char json[96], req[256];
    int jl = snprintf(json, sizeof(json), "{\"action_type\": \"%s\"}", type);
    int rl = snprintf(req, sizeof(req),
                      "PUT /actions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                      jl, json);
    assert_int_equal(write(fd, req, (size_t)rl), rl);
    char resp[2048];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(resp) - 1 && (n = read(fd, resp + got, sizeof(resp) - 1 - got)) > 0)
        got += (size_t)n;
    resp[got] = 0;
    close(fd);
    int status = 0;
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1)
        fail_msg("no HTTP status in '%s'", resp);
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, body_len, "%s", b ? b + 4 : "");
    return status;
}

/* What Linux's i8042 probe and atkbd's connect send, in their order, with the answers they
 * check: a flush, the self-test, the CTR read twice and written back, the aux loopback (no
 * aux port: the byte comes back without the aux flag), the aux test, the A20 gate, then the
 * keyboard's ID, LEDs, typematic rate, enable. */
static void test_linux_probe(void **state)
{
    struct fixture *f = *state;
    struct qtest *q = f->q;
    assert_int_equal(qtest_inb(q, STATUS), 0x14); /* SYS, not key-locked, buffer empty */
    assert_int_equal(qtest_inb(q, DATA), 0);      /* an empty buffer reads 0 */
    assert_int_equal(command(q, 0xaa), 0x55);     /* controller self-test */
    uint8_t ctr = command(q, 0x20);
    assert_int_equal(ctr, 0x45); /* KBDINT | SYS | XLATE, as a PC BIOS leaves it */
    assert_int_equal(command(q, 0x20), ctr);
    write_ctr(q, (ctr | 0x10) & ~0x01); /* i8042_controller_init: interface and IRQ off */
    assert_int_equal(command(q, 0x20), 0x54);
    qtest_outb(q, STATUS, 0xd3); /* aux loopback */
    qtest_outb(q, DATA, 0x5a);
    assert_int_equal(qtest_inb(q, STATUS) & 0x21, OBF); /* no AUXDATA: no aux port */
    assert_int_equal(qtest_inb(q, DATA), 0x5a);
    assert_int_equal(command(q, 0xa9), 0x01); /* aux interface test: clock line low */
    qtest_outb(q, STATUS, 0xa7);
    assert_int_equal(command(q, 0x20) & 0x20, 0x20);
    qtest_outb(q, STATUS, 0xa8);
    assert_int_equal(command(q, 0x20) & 0x20, 0);
    qtest_outb(q, STATUS, 0xd1); /* the A20 gate */
    qtest_outb(q, DATA, 0xdf);
    assert_int_equal(command(q, 0xd0), 0xdf);
    qtest_outb(q, STATUS, 0xff); /* the null command: nothing */
    expect_empty(q);
    assert_int_equal(command(q, 0xab), 0x00); /* keyboard interface test */
    qtest_outb(q, STATUS, 0xad);
    assert_int_equal(command(q, 0x20) & 0x10, 0x10);
    qtest_outb(q, STATUS, 0xae);
    assert_int_equal(command(q, 0x20) & 0x10, 0);
    write_ctr(q, 0x45); /* i8042_enable_kbd_port */
    expect_empty(q);
    kbd_expect(q, 0xff, (const uint8_t[]){0xfa, 0xaa}, 2);       /* reset: ACK, BAT passed */
    kbd_expect(q, 0xf2, (const uint8_t[]){0xfa, 0xab, 0x41}, 3); /* ID, translated */
    kbd_expect(q, 0xf5, (const uint8_t[]){0xfa}, 1);
    kbd_expect(q, 0xed, (const uint8_t[]){0xfa}, 1); /* LEDs and their parameter */
    kbd_expect(q, 0x07, (const uint8_t[]){0xfa}, 1);
    kbd_expect(q, 0xf3, (const uint8_t[]){0xfa}, 1); /* typematic rate */
    kbd_expect(q, 0x2b, (const uint8_t[]){0xfa}, 1);
    kbd_expect(q, 0xf0, (const uint8_t[]){0xfa}, 1); /* scancode set: ask */
    kbd_expect(q, 0x00, (const uint8_t[]){0xfa, 0x02}, 2);
    kbd_expect(q, 0xf4, (const uint8_t[]){0xfa}, 1);
    kbd_expect(q, 0xee, (const uint8_t[]){0xee}, 1); /* echo */
    write_ctr(q, 0x05);                              /* without translation */
    kbd_expect(q, 0xf2, (const uint8_t[]){0xfa, 0xab, 0x83}, 3);
}

/* With KBDINT set each byte that becomes ready raises IRQ 1 once; with it clear none does, and
 * setting it again signals the byte that waits. */
static void test_irq(void **state)
{
    struct fixture *f = *state;
    struct qtest *q = f->q;
    uint64_t before = qtest_irq_count(q, IRQ);
    qtest_outb(q, DATA, 0xff); /* ACK, BAT: two bytes, two edges as they are read */
    assert_true(qtest_irq_wait(q, IRQ, 5000));
    assert_int_equal(qtest_irq_count(q, IRQ), before + 1);
    assert_int_equal(read_byte(q), 0xfa);
    assert_true(qtest_irq_wait(q, IRQ, 5000));
    assert_int_equal(read_byte(q), 0xaa);
    assert_int_equal(qtest_irq_count(q, IRQ), before + 2);
    write_ctr(q, 0x44); /* KBDINT off */
    qtest_outb(q, DATA, 0xf4);
    assert_int_equal(qtest_inb(q, STATUS) & OBF, OBF);
    assert_int_equal(qtest_irq_count(q, IRQ), before + 2);
    write_ctr(q, 0x45); /* on again: the waiting ACK gets its edge */
    assert_true(qtest_irq_wait(q, IRQ, 5000));
    assert_int_equal(qtest_irq_count(q, IRQ), before + 3);
    assert_int_equal(read_byte(q), 0xfa);
}

/* Nonsense is harmless: unknown commands, parameters without a command, commands cut off by
 * other commands, wide accesses, a flood that overruns the FIFO; the device still works. */
static void test_malformed(void **state)
{
    struct fixture *f = *state;
    struct qtest *q = f->q;
    for (unsigned c = 0; c < 0x100; c++) /* every controller command but the reset */
        if (c != 0xfe && c != 0x60 && c != 0xd1 && c != 0xd2 && c != 0xd3 && c != 0xd4)
            qtest_outb(q, STATUS, (uint8_t)c);
    qtest_outb(q, STATUS, 0x60); /* a data byte expected, a command instead */
    qtest_outb(q, STATUS, 0xd4); /* to the aux device: nothing there */
    qtest_outb(q, DATA, 0x12);
    while (qtest_inb(q, STATUS) & OBF) /* the last answer of the loop above */
        qtest_inb(q, DATA);
    for (unsigned i = 0; i < 64; i++) /* 64 bytes the keyboard refuses (0xfe each) */
        qtest_outb(q, DATA, 0x01);
    unsigned n = 0;
    while ((qtest_inb(q, STATUS) & OBF) && n < 100) {
        assert_int_equal(qtest_inb(q, DATA), 0xfe);
        n++;
    }
    assert_int_equal(n, 16);   /* the FIFO held 16, the rest was lost */
    qtest_outb(q, DATA, 0xf0); /* an invalid scancode set */
    assert_int_equal(read_byte(q), 0xfa);
    qtest_outb(q, DATA, 0x09);
    assert_int_equal(read_byte(q), 0xfe);
    qtest_outb(q, DATA, 0xfe); /* resend: the last byte again */
    assert_int_equal(read_byte(q), 0xfe);
    assert_int_equal(qtest_inw(q, DATA), 0xff00); /* wide: empty 0x60, then 0x61 */
    qtest_outw(q, DATA, 0x12ee);                  /* echo to the keyboard, 0x61 ignored */
    assert_int_equal(read_byte(q), 0xee);
    expect_empty(q);
    write_ctr(q, 0x45);
    kbd_expect(q, 0xf2, (const uint8_t[]){0xfa, 0xab, 0x41}, 3);
    assert_int_equal(qtest_inb(q, 0x62), 0xff);
}

/* PUT /actions SendCtrlAltDel: the four bytes Firecracker sends (left Ctrl, left Alt, then
 * Delete with its 0xe0 prefix), translated to set 1 while XLATE is set and in set 2 without
 * it, each with its IRQ 1; refused with a reason while the guest keeps the keyboard disabled
 * or leaves the buffer full. */
static void test_ctrl_alt_del(void **state)
{
    struct fixture *f = *state;
    struct qtest *q = f->q;
    char body[512];
    uint64_t before = qtest_irq_count(q, IRQ);
    assert_int_equal(put_action(f->api, "SendCtrlAltDel", body, sizeof(body)), 204);
    const uint8_t set1[] = {0x1d, 0x38, 0xe0, 0x53}, set2[] = {0x14, 0x11, 0xe0, 0x71};
    for (unsigned i = 0; i < 4; i++) {
        assert_true(qtest_irq_wait(q, IRQ, 5000));
        assert_int_equal(read_byte(q), set1[i]);
    }
    expect_empty(q);
    assert_int_equal(qtest_irq_count(q, IRQ), before + 4);
    write_ctr(q, 0x05);
    assert_int_equal(put_action(f->api, "SendCtrlAltDel", body, sizeof(body)), 204);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(read_byte(q), set2[i]);
    write_ctr(q, 0x15); /* keyboard interface disabled */
    assert_int_equal(put_action(f->api, "SendCtrlAltDel", body, sizeof(body)), 400);
    assert_non_null(strstr(body, "disabled the i8042's keyboard interface"));
    write_ctr(q, 0x05);
    qtest_outb(q, DATA, 0xf5); /* scanning off */
    assert_int_equal(read_byte(q), 0xfa);
    assert_int_equal(put_action(f->api, "SendCtrlAltDel", body, sizeof(body)), 400);
    assert_non_null(strstr(body, "0xf5"));
    qtest_outb(q, DATA, 0xf4);
    assert_int_equal(read_byte(q), 0xfa);
    for (unsigned i = 0; i < 4; i++) /* 16 bytes nobody reads */
        assert_int_equal(put_action(f->api, "SendCtrlAltDel", body, sizeof(body)), 204);
    assert_int_equal(put_action(f->api, "SendCtrlAltDel", body, sizeof(body)), 400);
    assert_non_null(strstr(body, "full"));
}

/* 0xfe on 0x64 still ends the VM at once with status 0. */
static void test_reset_line(void **state)
{
    struct fixture *f = *state;
    qtest_outb(f->q, STATUS, 0x20); /* a command in between changes nothing */
    qtest_outb(f->q, STATUS, 0xfe);
    assert_int_equal(qtest_wait_exit(f->q, 10000), 0);
    f->q = NULL;
}

int main(void)
{
    qtest_set_fail_handler(cmocka_fail);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_linux_probe, start, stop),
        cmocka_unit_test_setup_teardown(test_irq, start, stop),
        cmocka_unit_test_setup_teardown(test_malformed, start, stop),
        cmocka_unit_test_setup_teardown(test_ctrl_alt_del, start, stop),
        cmocka_unit_test_setup_teardown(test_reset_line, start, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
