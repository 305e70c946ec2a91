/* The client side of wisp-vmm's device test protocol (docs/qtest.md): starts wisp-vmm with
 * --test-socket in a fresh temporary directory, connects, and turns each protocol command into
 * a C call, so that a device test is a few lines of register accesses. */
#ifndef WISP_TESTS_LIBQTEST_H
#define WISP_TESTS_LIBQTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * A running wisp-vmm under test. Every call that talks to it either gets the answer it expects
 * or fails the test through the failure handler (default: print the reason and the VMM's
 * stderr, then abort()); calls that may legitimately get "ERR ..." return the reply instead
 * (qtest_cmd). wisp-vmm is started with --serial none; it gets SIGKILL if the test process dies.
 *
 * Call order: qtest_start() -> commands ... -> qtest_quit() (or qtest_wait_exit() when the VM
 * ends on its own, or qtest_kill() from a teardown). Each of the three frees the handle.
 */
struct qtest;

/* Called with a message when a command fails; must not return (cmocka's fail_msg does not). */
void qtest_set_fail_handler(void (*fn)(const char *msg));
/* Fails the test with a message (and wisp-vmm's stderr when q is not NULL). */
void qtest_fail(const struct qtest *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
/* The VMM binary: $WISP_VMM (the meson test sets it). */
const char *qtest_vmm(void);

/* Spawns `vmm` with the NULL-terminated extra arguments and connects. */
struct qtest *qtest_start(const char *vmm, ...) __attribute__((sentinel));
struct qtest *qtest_startv(const char *vmm, const char *const *args);
/* Sends quit, waits for wisp-vmm to exit; returns its exit status (128 + signal if killed). */
int qtest_quit(struct qtest *q);
/* Waits up to timeout_ms for wisp-vmm to exit by itself; returns its status. */
int qtest_wait_exit(struct qtest *q, unsigned timeout_ms);
/* SIGKILL and clean up; NULL is fine (a teardown after a failure). */
void qtest_kill(struct qtest *q);

pid_t qtest_pid(const struct qtest *q);
const char *qtest_socket_path(const struct qtest *q);
/* A second connection to the socket (the caller closes it), for one-client-at-a-time tests. */
int qtest_connect_extra(const struct qtest *q);
/* Closes the connection and opens a new one (wisp-vmm keeps running between clients). */
void qtest_reconnect(struct qtest *q);

/* One command line (printf format, without newline) -> its reply line (without newline),
 * valid until the next call. */
const char *qtest_cmd(struct qtest *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends raw bytes (may hold several lines, or an unterminated one) and reads one reply line. */
void qtest_send_raw(struct qtest *q, const void *data, size_t len);
const char *qtest_recv_line(struct qtest *q);
/* True if the reply starts with "OK" (followed by the end or a space). */
bool qtest_reply_ok(const char *reply);

/* Register accesses through the machine's buses (RAM addresses read/write RAM). */
uint8_t qtest_readb(struct qtest *q, uint64_t addr);
uint16_t qtest_readw(struct qtest *q, uint64_t addr);
uint32_t qtest_readl(struct qtest *q, uint64_t addr);
uint64_t qtest_readq(struct qtest *q, uint64_t addr);
void qtest_writeb(struct qtest *q, uint64_t addr, uint8_t v);
void qtest_writew(struct qtest *q, uint64_t addr, uint16_t v);
void qtest_writel(struct qtest *q, uint64_t addr, uint32_t v);
void qtest_writeq(struct qtest *q, uint64_t addr, uint64_t v);
uint8_t qtest_inb(struct qtest *q, uint16_t port);
uint16_t qtest_inw(struct qtest *q, uint16_t port);
uint32_t qtest_inl(struct qtest *q, uint16_t port);
void qtest_outb(struct qtest *q, uint16_t port, uint8_t v);
void qtest_outw(struct qtest *q, uint16_t port, uint16_t v);
void qtest_outl(struct qtest *q, uint16_t port, uint32_t v);

/* Guest RAM (fails the test outside RAM; use qtest_cmd to see the ERR). */
void qtest_memread(struct qtest *q, uint64_t gpa, void *buf, size_t len);
void qtest_memwrite(struct qtest *q, uint64_t gpa, const void *buf, size_t len);
void qtest_memset(struct qtest *q, uint64_t gpa, size_t len, uint8_t byte);
/* Little-endian values in guest RAM. */
uint16_t qtest_mem_u16(struct qtest *q, uint64_t gpa);
uint32_t qtest_mem_u32(struct qtest *q, uint64_t gpa);
void qtest_mem_put_u16(struct qtest *q, uint64_t gpa, uint16_t v);
void qtest_mem_put_u32(struct qtest *q, uint64_t gpa, uint32_t v);
void qtest_mem_put_u64(struct qtest *q, uint64_t gpa, uint64_t v);
/* A bump allocator of guest RAM from 1 MiB up (nothing is loaded there without --kernel);
 * `align` a power of two. The memory is zeroed. */
uint64_t qtest_alloc(struct qtest *q, uint64_t size, uint64_t align);

/* Interrupts: pulses seen on an irqfd line, waiting for the next one (false on timeout), and
 * the level of a line driven by set_irq (COM1's IRQ 4). */
uint64_t qtest_irq_count(struct qtest *q, unsigned gsi);
bool qtest_irq_wait(struct qtest *q, unsigned gsi, unsigned timeout_ms);
int qtest_irq_level(struct qtest *q, unsigned gsi);

/* The machine's virtio-mmio windows (the `devices` command). */
struct qtest_device {
    char name[40], type[40];
    uint64_t base, size;
    unsigned gsi;
};
unsigned qtest_devices(struct qtest *q, struct qtest_device *out, unsigned max);
/* The nth (0-based) device of `type` ("virtio-rng"); false if there is none. */
bool qtest_find_device(struct qtest *q, const char *type, unsigned nth, struct qtest_device *out);

/* wisp-vmm's stderr so far (a NUL-terminated copy the caller frees). */
char *qtest_log(const struct qtest *q);
/* Waits up to timeout_ms for `needle` to appear on wisp-vmm's stderr (its log is asynchronous). */
bool qtest_log_wait(const struct qtest *q, const char *needle, unsigned timeout_ms);
/* The same, failing the test (with the log) when it does not appear. */
void qtest_expect_log(const struct qtest *q, const char *needle, unsigned timeout_ms);

#endif
