/* The device test protocol (docs/qtest.md): with --test-socket PATH, wisp-vmm builds the machine
 * but runs no vCPU and serves text commands on a unix socket instead (register accesses through
 * the buses, guest RAM, interrupt lines), so tests drive devices at register level (QEMU's
 * qtest idea). */
#ifndef WISP_VMM_QTEST_H
#define WISP_VMM_QTEST_H

#include <stdbool.h>

#include "common/err.h"

struct machine;
struct qtest;

/*
 * Everything runs on the machine's main thread, in its event loop, except qtest_set_irq()
 * (any thread). Nothing here blocks: the socket is non-blocking, output waits in a buffer,
 * irq_wait waits on the loop (the interrupt's eventfd or a timer), never in a call.
 * Call order:
 *   qtest_create()       before the devices are realized: the machine's attach_irqfd hook hands
 *                        their interrupt eventfds to qtest_attach_irqfd() instead of KVM, its
 *                        set_irq hook reports line levels to qtest_set_irq()
 *   qtest_listen()       once the machine is built: binds PATH (mode 0600; an existing PATH is
 *                        refused) and serves one client at a time
 *   ... the main loop runs until `quit` or another end of the VM ...
 *   qtest_destroy()      after the devices are torn down (they detach their eventfds first):
 *                        the last replies are flushed without waiting, PATH is removed
 */
int qtest_create(struct qtest **out, struct machine *m, const char *path, struct wisp_err *err);
int qtest_listen(struct qtest *q, struct wisp_err *err);
void qtest_destroy(struct qtest *q);

/* The machine's hooks in test mode (devices/device.h, attach_irqfd and set_irq). */
int qtest_attach_irqfd(struct qtest *q, unsigned gsi, int fd, bool assign, struct wisp_err *err);
void qtest_set_irq(struct qtest *q, unsigned gsi, int level);

#endif
