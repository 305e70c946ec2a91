/* The virtio-mmio transport at register level (virtio 1.2 §4.2.2, §4.2.3, §2.1-§2.4), on a
 * virtio-rng device: identification, feature negotiation, the status machine and reset, queue
 * registers, interrupts, and accesses the transport must ignore. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio_qtest.h"

#define S_ACK       VIRTIO_CONFIG_S_ACKNOWLEDGE
#define S_DRIVER    VIRTIO_CONFIG_S_DRIVER
#define S_FEATURES  VIRTIO_CONFIG_S_FEATURES_OK
#define S_DRIVER_OK VIRTIO_CONFIG_S_DRIVER_OK
#define S_NEEDS_RST VIRTIO_CONFIG_S_NEEDS_RESET
#define S_ALL_OK    (S_ACK | S_DRIVER | S_FEATURES | S_DRIVER_OK)
#define RNG_QUEUE   256 /* QueueNumMax of virtio-rng */
#define WAIT_MS     5000

struct fixture {
    struct qtest *qt;
    struct vqt_dev dev;
};

static void cmocka_fail(const char *msg)
{
    fail_msg("%s", msg);
}

static int setup(void **state)
{
    static struct fixture f;
    f.qt = qtest_start(qtest_vmm(), "--rng", NULL);
    vqt_find(f.qt, "virtio-rng", 0, &f.dev);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    qtest_kill(f->qt);
    return 0;
}

/* Takes every interrupt pulse not waited for yet, so the next irq_wait sees only new ones. */
static void drain_irq(struct fixture *f)
{
    (void)qtest_irq_wait(f->qt, f->dev.info.gsi, 0);
}

/* The VMM answers and ends cleanly: what every test checks last. */
static void expect_alive_and_quit(struct fixture *f)
{
    assert_true(qtest_reply_ok(qtest_cmd(f->qt, "memmap")));
    assert_int_equal(qtest_quit(f->qt), 0);
    f->qt = NULL;
}

/* One well-formed request: a 64-byte writable buffer, filled by the device. */
static void expect_request_served(struct fixture *f, struct vqt_queue *q)
{
    uint64_t buf = qtest_alloc(f->qt, 64, 64);
    uint16_t head = (uint16_t)(q->avail_idx % q->size);
    vqt_desc(q, head, buf, 64, VRING_DESC_F_WRITE, 0);
    vqt_avail_push(q, head);
    vqt_kick(q);
    uint32_t id, len;
    assert_true(vqt_wait_used(q, &id, &len, WAIT_MS));
    assert_int_equal(id, head);
    assert_int_equal(len, 64);
    uint8_t data[64], zero[64] = {0};
    qtest_memread(f->qt, buf, data, sizeof(data));
    assert_memory_not_equal(data, zero, sizeof(data));
}

static void test_identification(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976); /* "virt" */
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_VERSION), 2);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_DEVICE_ID), 4);          /* entropy source */
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_VENDOR_ID), 0x50534957); /* "WISP" */
    assert_int_equal(f->dev.info.size, 0x1000);
    /* no shared memory regions: length reads as -1 (§4.2.2) */
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffff);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_SHM_LEN_HIGH), 0xffffffff);
    expect_alive_and_quit(f);
}

/* Offered: VERSION_1, INDIRECT_DESC, EVENT_IDX; nothing beyond the second feature word. */
static void test_features_offered(void **state)
{
    struct fixture *f = *state;
    uint64_t offered = vqt_device_features(&f->dev);
    assert_true(offered & VQT_F_VERSION_1);
    assert_true(offered & VQT_F_INDIRECT);
    assert_true(offered & VQT_F_EVENT_IDX);
    vqt_write(&f->dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    expect_alive_and_quit(f);
}

/* FEATURES_OK is refused without VERSION_1 (a legacy driver) and with a bit the device did not
 * offer (§2.2.2, §3.1.1); the accepted set keeps it. */
static void test_features_ok(void **state)
{
    struct fixture *f = *state;
    assert_false(vqt_negotiate(&f->dev, 0));
    assert_false(vqt_negotiate(&f->dev, VQT_F_INDIRECT));
    uint64_t unoffered = ~vqt_device_features(&f->dev) & 0xffffffffull;
    assert_true(unoffered != 0);
    uint64_t bit = unoffered & -unoffered; /* the lowest bit not offered */
    assert_false(vqt_negotiate(&f->dev, VQT_F_VERSION_1 | bit));
    assert_false(vqt_negotiate(&f->dev, VQT_F_VERSION_1 | (1ull << 40)));
    /* refused FEATURES_OK stays refused until a reset, even if written again */
    vqt_write(&f->dev, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER | S_FEATURES);
    assert_false(vqt_status(&f->dev) & S_FEATURES);
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1 | VQT_F_INDIRECT | VQT_F_EVENT_IDX));
    assert_int_equal(vqt_status(&f->dev), S_ACK | S_DRIVER | S_FEATURES);
    expect_alive_and_quit(f);
}

/* Feature writes after FEATURES_OK are ignored: INDIRECT_DESC written late is not negotiated,
 * so an indirect descriptor is refused as un-negotiated. */
static void test_features_frozen(void **state)
{
    struct fixture *f = *state;
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    vqt_write(&f->dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    vqt_write(&f->dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)VQT_F_INDIRECT);
    struct vqt_queue q;
    vqt_queue_setup(&f->dev, &q, 0, 8);
    vqt_driver_ok(&f->dev);
    assert_int_equal(vqt_status(&f->dev), S_ALL_OK);
    uint64_t table = qtest_alloc(f->qt, 16, 16), buf = qtest_alloc(f->qt, 64, 64);
    vqt_desc_at(f->qt, table, 0, buf, 64, VRING_DESC_F_WRITE, 0);
    vqt_desc(&q, 0, table, 16, VRING_DESC_F_INDIRECT, 0);
    vqt_avail_push(&q, 0);
    vqt_kick(&q);
    assert_true(qtest_irq_wait(f->qt, f->dev.info.gsi, WAIT_MS));
    assert_true(vqt_status(&f->dev) & S_NEEDS_RST);
    qtest_expect_log(f->qt, "INDIRECT_DESC not negotiated", WAIT_MS);
    expect_alive_and_quit(f);
}

/* The status machine: bits accumulate, DRIVER_OK starts the device, 0 resets everything
 * (§2.4, §4.2.3.1): status, interrupt status, queue registers, and the queue itself. */
static void test_status_and_reset(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(vqt_status(&f->dev), 0);
    vqt_write(&f->dev, VIRTIO_MMIO_STATUS, S_ACK);
    assert_int_equal(vqt_status(&f->dev), S_ACK);
    vqt_write(&f->dev, VIRTIO_MMIO_STATUS, S_ACK | S_DRIVER);
    assert_int_equal(vqt_status(&f->dev), S_ACK | S_DRIVER);
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    struct vqt_queue q;
    vqt_queue_setup(&f->dev, &q, 0, 16);
    vqt_driver_ok(&f->dev);
    assert_int_equal(vqt_status(&f->dev), S_ALL_OK);
    expect_request_served(f, &q);
    assert_true(vqt_read(&f->dev, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING);

    assert_true(vqt_reset(&f->dev));
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
    /* the old queue is gone: a request on it is not served */
    drain_irq(f);
    uint16_t used = vqt_used_idx(&q);
    vqt_desc(&q, 1, qtest_alloc(f->qt, 64, 64), 64, VRING_DESC_F_WRITE, 0);
    vqt_avail_push(&q, 1);
    vqt_kick(&q);
    assert_false(qtest_irq_wait(f->qt, f->dev.info.gsi, 100));
    assert_int_equal(vqt_used_idx(&q), used);
    /* and the device works again after a fresh initialisation */
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1 | VQT_F_EVENT_IDX));
    vqt_queue_setup(&f->dev, &q, 0, 16);
    vqt_driver_ok(&f->dev);
    expect_request_served(f, &q);
    expect_alive_and_quit(f);
}

/* DRIVER_OK with a queue the device cannot use sets DEVICE_NEEDS_RESET and raises the config
 * interrupt (§2.1.2); each setup below is one reason. A reset clears it. */
static void needs_reset_at_driver_ok(struct fixture *f, uint16_t size, uint64_t desc,
                                     uint64_t avail, uint64_t used, const char *why)
{
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    drain_irq(f);
    struct vqt_queue q;
    vqt_queue_setup_at(&f->dev, &q, 0, size, desc, avail, used);
    vqt_driver_ok(&f->dev);
    assert_true(qtest_irq_wait(f->qt, f->dev.info.gsi, WAIT_MS));
    assert_int_equal(vqt_status(&f->dev), S_ALL_OK | S_NEEDS_RST);
    assert_int_equal(vqt_ack_interrupt(&f->dev), VIRTIO_MMIO_INT_CONFIG);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    if (!qtest_log_wait(f->qt, why, WAIT_MS))
        qtest_fail(f->qt, "wisp-vmm's log does not say '%s'", why);
    assert_true(vqt_reset(&f->dev));
}

static void test_rings_outside_ram(void **state)
{
    struct fixture *f = *state;
    uint64_t ram = 0x100000;
    needs_reset_at_driver_ok(f, 16, 0xd0000000, ram, ram + 0x1000,
                             "descriptor table [0xd0000000, +256) is outside guest RAM");
    needs_reset_at_driver_ok(f, 16, ram, 0xd0000000, ram + 0x1000,
                             "available ring [0xd0000000, +38) is outside guest RAM");
    needs_reset_at_driver_ok(f, 16, ram, ram + 0x1000, 0x8000000 - 64,
                             "used ring [0x7ffffc0, +134) is outside guest RAM");
    needs_reset_at_driver_ok(f, 16, 0xfffffffffffff000ull, ram, ram + 0x1000, "outside guest RAM");
    needs_reset_at_driver_ok(f, 16, ram + 8, ram + 0x1000, ram + 0x2000,
                             "descriptor table at 0x100008 is not 16-byte aligned");
    needs_reset_at_driver_ok(f, 16, ram, ram + 0x1001, ram + 0x2000,
                             "available ring at 0x101001 is not 2-byte aligned");
    needs_reset_at_driver_ok(f, 12, ram, ram + 0x1000, ram + 0x2000,
                             "size 12 is not a power of two");
    /* a queue size above QueueNumMax reads as 0: refused too */
    needs_reset_at_driver_ok(f, 512, ram, ram + 0x1000, ram + 0x2000, "size 0 is not a power");
    struct vqt_queue q;
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    vqt_queue_setup(&f->dev, &q, 0, 16);
    vqt_driver_ok(&f->dev);
    assert_int_equal(vqt_status(&f->dev), S_ALL_OK);
    expect_request_served(f, &q);
    expect_alive_and_quit(f);
}

/* QueueNumMax per queue, 0 for a queue the device does not have (§4.2.2). */
static void test_queue_num_max(void **state)
{
    struct fixture *f = *state;
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_NUM_MAX), RNG_QUEUE);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_READY, 1); /* ignored: no such queue */
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_READY), 0);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_SEL, 0xffffffff);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 7); /* a queue that does not exist */
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0xffffffff);
    expect_alive_and_quit(f);
}

/* While QueueReady is set, writes to the queue's size and addresses are ignored (§4.2.2.3):
 * the device serves the rings it was given. */
static void test_queue_registers_frozen_when_ready(void **state)
{
    struct fixture *f = *state;
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    struct vqt_queue q;
    vqt_queue_setup(&f->dev, &q, 0, 16);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_READY), 1);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_NUM, 4);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_DESC_LOW, 0xd0000000);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0xd0000000);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_USED_LOW, 0xd0000000);
    vqt_driver_ok(&f->dev);
    assert_int_equal(vqt_status(&f->dev), S_ALL_OK); /* the original rings were mapped */
    for (int i = 0; i < 20; i++) /* more requests than 4 entries: the size is still 16 */
        expect_request_served(f, &q);
    expect_alive_and_quit(f);
}

/* Once the device runs (DRIVER_OK), queue registers are frozen even for a queue that was not
 * ready then: a QueueReady written later must not make a queue that was never mapped look
 * served (no VIRTIO_F_RING_RESET is offered). The queue that was set up keeps working. */
static void test_queue_registers_frozen_after_driver_ok(void **state)
{
    struct fixture *f = *state;
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    struct vqt_queue q;
    vqt_queue_setup(&f->dev, &q, 0, 16);
    vqt_driver_ok(&f->dev);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_SEL, 0);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_READY, 0); /* ignored: the queue stays ready */
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_QUEUE_READY), 1);
    vqt_write(&f->dev, VIRTIO_MMIO_QUEUE_NUM, 4);
    expect_request_served(f, &q);
    assert_int_equal(vqt_status(&f->dev), S_ALL_OK);
    expect_alive_and_quit(f);
}

/* ConfigGeneration is stable while nothing changes (virtio-rng has no configuration), and the
 * configuration space of a device without one reads 0 and ignores writes. */
static void test_config_generation(void **state)
{
    struct fixture *f = *state;
    uint32_t gen = vqt_read(&f->dev, VIRTIO_MMIO_CONFIG_GENERATION);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_CONFIG_GENERATION), gen);
    assert_int_equal(vqt_read(&f->dev, 0x100), 0);
    vqt_write(&f->dev, 0x100, 0xffffffff);
    assert_int_equal(vqt_read(&f->dev, 0x100), 0);
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_CONFIG_GENERATION), gen);
    expect_alive_and_quit(f);
}

/* InterruptStatus: the used-buffer bit after a request, cleared bit by bit by InterruptACK; an
 * ACK of a bit that is not set changes nothing. */
static void test_interrupt_status_ack(void **state)
{
    struct fixture *f = *state;
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1));
    struct vqt_queue q;
    vqt_queue_setup(&f->dev, &q, 0, 16);
    vqt_driver_ok(&f->dev);
    expect_request_served(f, &q);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    vqt_write(&f->dev, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    vqt_write(&f->dev, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_int_equal(vqt_read(&f->dev, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    /* each completed request pulses the line once more */
    uint64_t before = qtest_irq_count(f->qt, f->dev.info.gsi);
    expect_request_served(f, &q);
    assert_true(qtest_irq_count(f->qt, f->dev.info.gsi) > before);
    /* VRING_AVAIL_F_NO_INTERRUPT (no EVENT_IDX): the request is served without a pulse */
    assert_int_equal(vqt_ack_interrupt(&f->dev), VIRTIO_MMIO_INT_VRING);
    qtest_mem_put_u16(f->qt, q.avail, VRING_AVAIL_F_NO_INTERRUPT);
    before = qtest_irq_count(f->qt, f->dev.info.gsi);
    uint16_t used = vqt_used_idx(&q);
    vqt_desc(&q, 5, qtest_alloc(f->qt, 16, 16), 16, VRING_DESC_F_WRITE, 0);
    vqt_avail_push(&q, 5);
    vqt_kick(&q);
    for (int i = 0; i < 1000 && vqt_used_idx(&q) == used; i++)
        ;
    assert_int_equal(vqt_used_idx(&q), (uint16_t)(used + 1));
    assert_int_equal(qtest_irq_count(f->qt, f->dev.info.gsi), before);
    expect_alive_and_quit(f);
}

/* Registers take 32-bit aligned accesses only; others are ignored: reads give 0 and writes
 * change nothing (§4.2.2.2). */
static void test_wrong_width_and_alignment(void **state)
{
    struct fixture *f = *state;
    struct qtest *qt = f->qt;
    uint64_t base = f->dev.info.base;
    assert_int_equal(qtest_readb(qt, base + VIRTIO_MMIO_MAGIC_VALUE), 0);
    assert_int_equal(qtest_readw(qt, base + VIRTIO_MMIO_MAGIC_VALUE), 0);
    assert_int_equal(qtest_readq(qt, base + VIRTIO_MMIO_MAGIC_VALUE), 0);
    assert_int_equal(qtest_readl(qt, base + VIRTIO_MMIO_MAGIC_VALUE + 1), 0);
    assert_int_equal(qtest_readl(qt, base + VIRTIO_MMIO_VERSION + 2), 0);
    qtest_writeb(qt, base + VIRTIO_MMIO_STATUS, S_ACK);
    qtest_writew(qt, base + VIRTIO_MMIO_STATUS, S_ACK);
    qtest_writeq(qt, base + VIRTIO_MMIO_STATUS, S_ACK);
    qtest_writel(qt, base + VIRTIO_MMIO_STATUS + 1, S_ACK);
    assert_int_equal(vqt_status(&f->dev), 0);
    qtest_writel(qt, base + VIRTIO_MMIO_STATUS, S_ACK);
    qtest_writeb(qt, base + VIRTIO_MMIO_STATUS, 0); /* not a reset */
    assert_int_equal(vqt_status(&f->dev), S_ACK);
    /* an access across the end of the window is not the device's */
    assert_int_equal(qtest_readq(qt, base + 0xffc), 0xffffffffffffffffull);
    expect_alive_and_quit(f);
}

int main(void)
{
    qtest_set_fail_handler(cmocka_fail);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_features_offered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_features_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_features_frozen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_and_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rings_outside_ram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_num_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_registers_frozen_when_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_registers_frozen_after_driver_ok, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_config_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupt_status_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_width_and_alignment, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
