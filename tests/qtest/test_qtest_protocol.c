/* The device test protocol itself (docs/qtest.md): the socket, every command's replies,
 * malformed lines, guest RAM bounds, the legacy devices through the port bus, interrupt lines,
 * one client at a time, and how wisp-vmm ends. */
#include <errno.h>
#include <signal.h>
#include <linux/virtio_mmio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "libqtest.h"

#define RNG_GSI 5 /* the first virtio line (docs/machine.md) */

static void cmocka_fail(const char *msg)
{
    fail_msg("%s", msg);
}

static int start_rng(void **state)
{
    *state = qtest_start(qtest_vmm(), "--rng", NULL);
    return 0;
}

static int stop(void **state)
{
    qtest_kill(*state);
    return 0;
}

static void expect_err(struct qtest *q, const char *reply, const char *needle)
{
    if (strncmp(reply, "ERR ", 4) || !strstr(reply, needle))
        fail_msg("expected 'ERR ...%s...', got '%s'", needle, reply);
}

/* The socket is the owner's only (0600) and is gone when wisp-vmm ends. */
static void test_socket_permissions(void **state)
{
    struct qtest *q = *state;
    struct stat st;
    assert_int_equal(stat(qtest_socket_path(q), &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_uid, getuid());
    char path[4096];
    snprintf(path, sizeof(path), "%s", qtest_socket_path(q));
    assert_int_equal(qtest_quit(q), 0);
    *state = NULL;
    assert_int_equal(access(path, F_OK), -1);
}

/* Every malformed line gets one "ERR <reason>" reply, and the next command is answered. */
static void test_malformed_lines(void **state)
{
    struct qtest *q = *state;
    static const char *const cases[][2] = {
        {"", "empty line"},
        {"   ", "empty line"},
        {"frobnicate 1", "unknown command 'frobnicate'"},
        {"readl", "usage: readl ADDR"},
        {"readl 1 2", "usage: readl ADDR"},
        {"writel 0x1000", "usage: writel ADDR VALUE"},
        {"readl 0x1000 1 2 3 4 5", "too many arguments"},
        {"readl banana", "address 'banana' is not a number"},
        {"readl -1", "is not a number"},
        {"readl 0x1ffffffffffffffff", "is not a number"},
        {"writeb 0x1000 0x100", "value 0x100 does not fit in 1 byte"},
        {"writew 0x1000 65536", "does not fit in 2 bytes"},
        {"writel 0x1000 0x100000000", "does not fit in 4 bytes"},
        {"outb 0x10000 0", "must end at or below 0xffff"},
        {"inl 0xfffe", "must end at or below 0xffff"},
        {"memread 0x1000 0", "length 0: 1 to"},
        {"memread 0x1000 1048577", "1 to 1048576 bytes"},
        {"memwrite 0x1000 abc", "3 hex digits, not whole bytes"},
        {"memwrite 0x1000 zz", "'z' at position 0 is not a hex digit"},
        {"memset 0x1000 16 256", "does not fit in 1 byte"},
        {"irq_count 64", "GSI 64 is beyond the machine's lines"},
        {"irq_wait 4 10", "GSI 4 has no interrupt eventfd"},
        {"irq_wait 5 600001", "at most 600000"},
        {"irq_level x", "GSI 'x' is not a number"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_err(q, qtest_cmd(q, "%s", cases[i][0]), cases[i][1]);
    /* a NUL byte and a carriage return do not confuse the parser */
    qtest_send_raw(q, "readl\0 0x1000\n", 14);
    expect_err(q, qtest_recv_line(q), "usage: readl ADDR");
    qtest_send_raw(q, "memmap\r\n", 8);
    assert_true(qtest_reply_ok(qtest_recv_line(q)));
    assert_int_equal(qtest_quit(q), 0);
    *state = NULL;
}

/* A line longer than the limit gets one ERR; the connection stays usable. */
static void test_overlong_line(void **state)
{
    struct qtest *q = *state;
    size_t len = 3u << 20;
    char *line = malloc(len + 1);
    assert_non_null(line);
    memset(line, 'a', len);
    line[len] = '\n';
    qtest_send_raw(q, line, len + 1);
    free(line);
    expect_err(q, qtest_recv_line(q), "line longer than");
    assert_int_equal(qtest_readl(q, 0x1000), 0);
    assert_int_equal(qtest_quit(q), 0);
    *state = NULL;
}

/* Several commands in one write are answered in order. */
static void test_pipelined(void **state)
{
    struct qtest *q = *state;
    static const char batch[] = "memwrite 0x2000 0102030405060708\nreadb 0x2000\nreadw 0x2000\n"
                                "readl 0x2000\nreadq 0x2000\nbogus\nreadb 0x2007\n";
    qtest_send_raw(q, batch, sizeof(batch) - 1);
    assert_string_equal(qtest_recv_line(q), "OK");
    assert_string_equal(qtest_recv_line(q), "OK 0x1");
    assert_string_equal(qtest_recv_line(q), "OK 0x201");
    assert_string_equal(qtest_recv_line(q), "OK 0x4030201");
    assert_string_equal(qtest_recv_line(q), "OK 0x807060504030201");
    expect_err(q, qtest_recv_line(q), "unknown command");
    assert_string_equal(qtest_recv_line(q), "OK 0x8");
}

/* Guest RAM: memwrite/memread/memset and register-width accesses see the same bytes; ranges
 * outside RAM or across the 3-4 GiB hole are refused. */
static void test_guest_ram(void **state)
{
    struct qtest *q = qtest_start(qtest_vmm(), "--mem", "3584", NULL); /* RAM above 4 GiB too */
    *state = q;
    assert_string_equal(qtest_cmd(q, "memmap"), "OK 2 0x0 0xc0000000 0x100000000 0x20000000");
    uint8_t buf[4096], back[4096];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    qtest_memwrite(q, 0x10000, buf, sizeof(buf));
    qtest_memread(q, 0x10000, back, sizeof(back));
    assert_memory_equal(buf, back, sizeof(buf));
    qtest_writeq(q, 0x10008, 0x1122334455667788ull);
    assert_int_equal(qtest_mem_u32(q, 0x10008), 0x55667788);
    assert_int_equal(qtest_readw(q, 0x1000e), 0x1122);
    qtest_memset(q, 0x10000, 4096, 0x5a);
    assert_int_equal(qtest_readl(q, 0x10ffc), 0x5a5a5a5a);
    /* the last bytes of each region, and the first above 4 GiB */
    qtest_writel(q, 0xbffffffc, 0xcafef00d);
    assert_int_equal(qtest_readl(q, 0xbffffffc), 0xcafef00d);
    qtest_memset(q, 0x11ffffff0, 16, 0xee);
    assert_int_equal(qtest_readq(q, 0x11ffffff8), 0xeeeeeeeeeeeeeeeeull);
    qtest_memwrite(q, 0x100000000, "\x42", 1);
    assert_int_equal(qtest_readb(q, 0x100000000), 0x42);
    expect_err(q, qtest_cmd(q, "memread 0xbffffffe 4"), "is not guest RAM");
    expect_err(q, qtest_cmd(q, "memread 0xfffffffe 4"), "is not guest RAM");
    expect_err(q, qtest_cmd(q, "memset 0xbffff000 0x40001000 0"), "is not guest RAM");
    expect_err(q, qtest_cmd(q, "memwrite 0x11ffffffe 000000"), "is not guest RAM");
    expect_err(q, qtest_cmd(q, "memread 0xfffffffffffffff0 32"), "is not guest RAM");
    expect_err(q, qtest_cmd(q, "memread 0xd0000000 4"), "is not guest RAM");
    /* nothing was written outside: the bytes next to the refused ranges are intact */
    assert_int_equal(qtest_readl(q, 0xbffffffc), 0xcafef00d);
    assert_int_equal(qtest_quit(q), 0);
    *state = NULL;
}

/* Unclaimed MMIO and ports read all ones, writes are dropped (docs/machine.md). */
static void test_unclaimed(void **state)
{
    struct qtest *q = *state;
    assert_int_equal(qtest_readl(q, 0xe0000000), 0xffffffff);
    assert_int_equal(qtest_readq(q, 0xe0000000), 0xffffffffffffffffull);
    qtest_writel(q, 0xe0000000, 0);
    assert_int_equal(qtest_readl(q, 0xe0000000), 0xffffffff);
    assert_int_equal(qtest_inb(q, 0x300), 0xff);
    assert_int_equal(qtest_inw(q, 0x300), 0xffff);
    assert_int_equal(qtest_inl(q, 0x300), 0xffffffff);
    qtest_outl(q, 0x300, 0x12345678);
}

/* The legacy devices answer on the port bus as a vCPU would see them: the i8042 status, the
 * UART's registers, and COM1 bytes reach the --serial file. */
static void test_legacy_ports(void **state)
{
    char dir[] = "/tmp/wisp-qtest-com1-XXXXXX", file[64], arg[96];
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof(file), "%s/com1", dir);
    snprintf(arg, sizeof(arg), "file:%s", file);
    struct qtest *q = qtest_start(qtest_vmm(), "--serial", arg, NULL);
    *state = q;
    assert_int_equal(qtest_inb(q, 0x64), 0x14);  /* i8042 status: SYS, not key-locked */
    assert_int_equal(qtest_inb(q, 0x3fd), 0x60); /* LSR: THRE | TEMT */
    qtest_outb(q, 0x3ff, 0xa5);                  /* scratch register */
    assert_int_equal(qtest_inb(q, 0x3ff), 0xa5);
    for (const char *s = "qtest\n"; *s; s++)
        qtest_outb(q, 0x3f8, (uint8_t)*s);
    assert_int_equal(qtest_quit(q), 0); /* the console is flushed at the end */
    *state = NULL;
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    char got[16] = {0};
    assert_int_equal(fread(got, 1, sizeof(got) - 1, f), 6);
    fclose(f);
    assert_string_equal(got, "qtest\n");
    unlink(file);
    rmdir(dir);
}

/* irq_level follows a set_irq line: COM1's THR-empty interrupt on IRQ 4, gated by OUT2. */
static void test_irq_level(void **state)
{
    struct qtest *q = *state;
    assert_int_equal(qtest_irq_level(q, 4), 0);
    qtest_outb(q, 0x3f9, 0x02);                 /* IER: THR empty */
    assert_int_equal(qtest_irq_level(q, 4), 0); /* OUT2 clear: the line stays low */
    qtest_outb(q, 0x3fc, 0x08);                 /* MCR: OUT2 */
    assert_int_equal(qtest_irq_level(q, 4), 1);
    assert_int_equal(qtest_inb(q, 0x3fa) & 0x0f, 0x02); /* IIR: THRI, reading clears it */
    assert_int_equal(qtest_irq_level(q, 4), 0);
    qtest_outb(q, 0x3f9, 0x00);
    assert_int_equal(qtest_irq_level(q, 4), 0);
}

/* irq_count and irq_wait on a virtio line: nothing pending times out; a pulse is counted and
 * answers exactly one wait. */
static void test_irq_wait(void **state)
{
    struct qtest *q = *state;
    assert_int_equal(qtest_irq_count(q, RNG_GSI), 0);
    assert_false(qtest_irq_wait(q, RNG_GSI, 20));
    assert_string_equal(qtest_cmd(q, "irq_wait %u 0", RNG_GSI), "ERR timeout");
    /* a config interrupt: DRIVER_OK with a queue whose rings are not in RAM */
    struct qtest_device d;
    assert_true(qtest_find_device(q, "virtio-rng", 0, &d));
    assert_int_equal(d.gsi, RNG_GSI);
    qtest_writel(q, d.base + VIRTIO_MMIO_STATUS, 0);
    qtest_writel(q, d.base + VIRTIO_MMIO_STATUS, 1 | 2);
    qtest_writel(q, d.base + VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    qtest_writel(q, d.base + VIRTIO_MMIO_DRIVER_FEATURES, 1); /* VERSION_1 (bit 32) */
    qtest_writel(q, d.base + VIRTIO_MMIO_STATUS, 1 | 2 | 8);
    qtest_writel(q, d.base + VIRTIO_MMIO_QUEUE_NUM, 16);
    qtest_writel(q, d.base + VIRTIO_MMIO_QUEUE_DESC_LOW, 0xd0000000); /* in the MMIO hole */
    qtest_writel(q, d.base + VIRTIO_MMIO_QUEUE_READY, 1);
    qtest_writel(q, d.base + VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
    assert_true(qtest_irq_wait(q, RNG_GSI, 5000));
    assert_int_equal(qtest_irq_count(q, RNG_GSI), 1);
    assert_false(qtest_irq_wait(q, RNG_GSI, 20)); /* that pulse was answered already */
}

/* `devices` lists the virtio-mmio windows as the command line and ACPI describe them. */
static void test_devices(void **state)
{
    struct qtest *q = qtest_start(qtest_vmm(), NULL);
    assert_string_equal(qtest_cmd(q, "devices"), "OK 0");
    assert_int_equal(qtest_quit(q), 0);
    q = qtest_start(qtest_vmm(), "--rng", NULL);
    *state = q;
    assert_string_equal(qtest_cmd(q, "devices"), "OK 1 rng0 virtio-rng 0xd0000000 0x1000 5");
    struct qtest_device d;
    assert_true(qtest_find_device(q, "virtio-rng", 0, &d));
    assert_false(qtest_find_device(q, "virtio-rng", 1, &d));
    assert_false(qtest_find_device(q, "virtio-blk", 0, &d));
}

/* One client at a time: a second connection is told so and closed; after the first client
 * leaves, wisp-vmm serves the next one. */
static void test_one_client(void **state)
{
    struct qtest *q = *state;
    qtest_writel(q, 0x3000, 0x600d);
    int fd = qtest_connect_extra(q);
    char buf[128] = {0};
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    assert_string_equal(buf, "ERR busy: another client is connected (one at a time)\n");
    assert_int_equal(recv(fd, buf, sizeof(buf), 0), 0); /* closed */
    close(fd);
    assert_int_equal(qtest_readl(q, 0x3000), 0x600d);
    qtest_reconnect(q);
    assert_int_equal(qtest_readl(q, 0x3000), 0x600d); /* the same machine */
}

/* The test-exit port ends wisp-vmm with the written status, as in a normal run. */
static void test_exit_port(void **state)
{
    struct qtest *q = *state;
    qtest_send_raw(q, "outb 0xf4 7\n", 12);
    assert_int_equal(qtest_wait_exit(q, 10000), 7);
    *state = NULL;
}

/* The server never blocks the main loop: with replies piling up unread (a client that does not
 * read) and with an irq_wait pending, wisp-vmm still ends at once on SIGTERM, with status 0. */
static void test_never_blocks(void **state)
{
    struct qtest *q = *state;
    static const char cmd[] = "memread 0x100000 1048576\n"; /* 2 MiB of reply each */
    for (int i = 0; i < 16; i++)
        qtest_send_raw(q, cmd, sizeof(cmd) - 1);
    qtest_send_raw(q, "irq_wait 5 600000\n", 18);
    usleep(100000);
    kill(qtest_pid(q), SIGTERM);
    assert_int_equal(qtest_wait_exit(q, 5000), 0);
    *state = NULL;
}

/* `reset` resets every device: a virtio device's Status goes back to 0. */
static void test_reset(void **state)
{
    struct qtest *q = *state;
    struct qtest_device d;
    assert_true(qtest_find_device(q, "virtio-rng", 0, &d));
    qtest_writel(q, d.base + VIRTIO_MMIO_STATUS, 1 | 2);
    assert_int_equal(qtest_readl(q, d.base + VIRTIO_MMIO_STATUS), 3);
    assert_string_equal(qtest_cmd(q, "reset"), "OK");
    assert_int_equal(qtest_readl(q, d.base + VIRTIO_MMIO_STATUS), 0);
}

/* A socket path that exists is refused (never replaced), naming the path; exit status 1. */
static void test_existing_path(void **state)
{
    char dir[] = "/tmp/wisp-qtest-path-XXXXXX", path[64], cmd[512];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/taken", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "'%s' --serial none --test-socket '%s' 2>&1", qtest_vmm(), path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[512] = {0};
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    int st = pclose(p);
    assert_true(n > 0);
    assert_non_null(strstr(out, path));
    assert_non_null(strstr(out, "exists"));
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    struct stat s;
    assert_int_equal(stat(path, &s), 0);
    assert_true(S_ISREG(s.st_mode)); /* untouched */
    unlink(path);
    rmdir(dir);
}

/* With --kernel, the machine is built as for a run: the firmware tables are in RAM. */
static void test_with_kernel(void **state)
{
    const char *elf = getenv("QTEST_GUEST_ELF");
    if (!elf || !*elf)
        skip();
    struct qtest *q = qtest_start(qtest_vmm(), "--kernel", elf, "--rng", NULL);
    *state = q;
    char sig[9] = {0};
    qtest_memread(q, 0xe0000, sig, 8);
    assert_string_equal(sig, "RSD PTR ");
}

int main(void)
{
    qtest_set_fail_handler(cmocka_fail);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_socket_permissions, start_rng, stop),
        cmocka_unit_test_setup_teardown(test_malformed_lines, start_rng, stop),
        cmocka_unit_test_setup_teardown(test_overlong_line, start_rng, stop),
        cmocka_unit_test_setup_teardown(test_pipelined, start_rng, stop),
        cmocka_unit_test_teardown(test_guest_ram, stop),
        cmocka_unit_test_setup_teardown(test_unclaimed, start_rng, stop),
        cmocka_unit_test_teardown(test_legacy_ports, stop),
        cmocka_unit_test_setup_teardown(test_irq_level, start_rng, stop),
        cmocka_unit_test_setup_teardown(test_irq_wait, start_rng, stop),
        cmocka_unit_test_teardown(test_devices, stop),
        cmocka_unit_test_setup_teardown(test_one_client, start_rng, stop),
        cmocka_unit_test_setup_teardown(test_exit_port, start_rng, stop),
        cmocka_unit_test_setup_teardown(test_never_blocks, start_rng, stop),
        cmocka_unit_test_setup_teardown(test_reset, start_rng, stop),
        cmocka_unit_test(test_existing_path),
        cmocka_unit_test_teardown(test_with_kernel, stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
