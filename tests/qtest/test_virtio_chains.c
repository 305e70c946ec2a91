/* Malformed descriptor chains and rings (virtio 1.2 §2.7.4-§2.7.5, §2.7.13, issue 9's list), on
 * virtio-rng: each is refused without touching memory outside guest RAM, sets
 * DEVICE_NEEDS_RESET with a config interrupt and a log line naming the problem, while
 * wisp-vmm keeps answering; a reset then makes the device usable again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio_qtest.h"

#define QSIZE   8
#define WAIT_MS 5000
#define W       VRING_DESC_F_WRITE
#define N       VRING_DESC_F_NEXT
#define I       VRING_DESC_F_INDIRECT
#define RAM_END 0x8000000ull /* --mem 128 */

struct fixture {
    struct qtest *qt;
    struct vqt_dev dev;
    struct vqt_queue q;
    uint64_t buf; /* 4 KiB of RAM for buffers */
};

/* One malformed request: the features to negotiate, how to build it, what the log must say. */
struct chain_case {
    const char *name;
    uint64_t features;
    /* builds the chain (descriptors, indirect tables) and publishes it (or corrupts the ring) */
    void (*build)(struct fixture *f);
    const char *why;
    bool high_ram;  /* --mem 3584: RAM on both sides of the 3-4 GiB hole */
    uint16_t qsize; /* 0: QSIZE */
};

/* One test: its case, and the wisp-vmm it runs (killed by the teardown if still there). */
struct slot {
    const struct chain_case *c;
    struct qtest *qt;
};

static void cmocka_fail(const char *msg)
{
    fail_msg("%s", msg);
}

static void init_device(struct fixture *f, uint64_t features, uint16_t qsize)
{
    assert_true(vqt_negotiate(&f->dev, VQT_F_VERSION_1 | features));
    vqt_queue_setup(&f->dev, &f->q, 0, qsize ? qsize : QSIZE);
    f->buf = qtest_alloc(f->qt, 4096, 4096);
    vqt_driver_ok(&f->dev);
    assert_int_equal(vqt_status(&f->dev) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

/* The device serves a good request: a writable buffer comes back full. */
static void expect_request_served(struct fixture *f)
{
    struct vqt_queue *q = &f->q;
    uint16_t head = (uint16_t)(q->avail_idx % q->size);
    qtest_memset(f->qt, f->buf, 64, 0);
    vqt_desc(q, head, f->buf, 64, W, 0);
    vqt_avail_push(q, head);
    vqt_kick(q);
    uint32_t id, len;
    assert_true(vqt_wait_used(q, &id, &len, WAIT_MS));
    assert_int_equal(id, head);
    assert_int_equal(len, 64);
    uint8_t data[64], zero[64] = {0};
    qtest_memread(f->qt, f->buf, data, sizeof(data));
    assert_memory_not_equal(data, zero, sizeof(data));
}

static void publish(struct fixture *f, uint16_t head)
{
    vqt_avail_push(&f->q, head);
}

/* --- the malformed chains --- */

static void build_loop(struct fixture *f)
{
    vqt_desc(&f->q, 0, f->buf, 16, W | N, 1);
    vqt_desc(&f->q, 1, f->buf + 16, 16, W | N, 0);
    publish(f, 0);
}

static void build_self_loop(struct fixture *f)
{
    vqt_desc(&f->q, 3, f->buf, 16, W | N, 3);
    publish(f, 3);
}

/* every descriptor of the queue once, then back to the first: longer than the queue */
static void build_longer_than_queue(struct fixture *f)
{
    for (uint16_t i = 0; i < QSIZE; i++)
        vqt_desc(&f->q, i, f->buf + 16 * i, 16, W | N, (uint16_t)((i + 1) % QSIZE));
    publish(f, 0);
}

static void build_next_out_of_range(struct fixture *f)
{
    vqt_desc(&f->q, 0, f->buf, 16, W | N, QSIZE);
    publish(f, 0);
}

static void build_next_far_out_of_range(struct fixture *f)
{
    vqt_desc(&f->q, 0, f->buf, 16, N, 1);
    vqt_desc(&f->q, 1, f->buf + 16, 16, W | N, 0xffff);
    publish(f, 0);
}

static void build_addr_beyond_ram(struct fixture *f)
{
    vqt_desc(&f->q, 0, RAM_END, 16, W, 0);
    publish(f, 0);
}

static void build_addr_ends_beyond_ram(struct fixture *f)
{
    vqt_desc(&f->q, 0, RAM_END - 8, 16, W, 0);
    publish(f, 0);
}

static void build_addr_in_mmio_hole(struct fixture *f)
{
    vqt_desc(&f->q, 0, f->dev.info.base, 0x100, W, 0); /* the device's own registers */
    publish(f, 0);
}

static void build_addr_wraps(struct fixture *f)
{
    vqt_desc(&f->q, 0, 0xfffffffffffffff0ull, 0x20, W, 0);
    publish(f, 0);
}

static void build_across_hole_low(struct fixture *f)
{
    vqt_desc(&f->q, 0, 0xbffff000, 0x2000, W, 0); /* from the end of low RAM into the hole */
    publish(f, 0);
}

static void build_across_hole_high(struct fixture *f)
{
    vqt_desc(&f->q, 0, 0xfffff000, 0x2000, W, 0); /* from the hole into RAM at 4 GiB */
    publish(f, 0);
}

static void build_across_hole_whole(struct fixture *f)
{
    vqt_desc(&f->q, 0, 0xbffff000, 0x40002000, W, 0); /* both RAM regions and the hole */
    publish(f, 0);
}

static void build_readable_after_writable(struct fixture *f)
{
    vqt_desc(&f->q, 0, f->buf, 16, W | N, 1);
    vqt_desc(&f->q, 1, f->buf + 16, 16, 0, 0);
    publish(f, 0);
}

static void build_indirect_without_feature(struct fixture *f)
{
    uint64_t table = f->buf + 0x800;
    vqt_desc_at(f->qt, table, 0, f->buf, 16, W, 0);
    vqt_desc(&f->q, 0, table, 16, I, 0);
    publish(f, 0);
}

static void build_indirect_with_next(struct fixture *f)
{
    uint64_t table = f->buf + 0x800;
    vqt_desc_at(f->qt, table, 0, f->buf, 16, W, 0);
    vqt_desc(&f->q, 0, table, 16, I | N, 1);
    vqt_desc(&f->q, 1, f->buf + 16, 16, W, 0);
    publish(f, 0);
}

static void build_nested_indirect(struct fixture *f)
{
    uint64_t outer = f->buf + 0x800, inner = f->buf + 0x900;
    vqt_desc_at(f->qt, inner, 0, f->buf, 16, W, 0);
    vqt_desc_at(f->qt, outer, 0, inner, 16, I, 0);
    vqt_desc(&f->q, 0, outer, 16, I, 0);
    publish(f, 0);
}

static void build_indirect_len_not_multiple(struct fixture *f)
{
    uint64_t table = f->buf + 0x800;
    vqt_desc_at(f->qt, table, 0, f->buf, 16, W, 0);
    vqt_desc(&f->q, 0, table, 24, I, 0);
    publish(f, 0);
}

static void build_indirect_too_long(struct fixture *f)
{
    uint64_t table = f->buf + 0x800;
    for (uint16_t i = 0; i <= QSIZE; i++)
        vqt_desc_at(f->qt, table, i, f->buf + 16 * i, 16, W | (i < QSIZE ? N : 0),
                    (uint16_t)(i + 1));
    vqt_desc(&f->q, 0, table, 16 * (QSIZE + 1), I, 0);
    publish(f, 0);
}

static void build_indirect_empty(struct fixture *f)
{
    vqt_desc(&f->q, 0, f->buf + 0x800, 0, I, 0);
    publish(f, 0);
}

static void build_indirect_outside_ram(struct fixture *f)
{
    vqt_desc(&f->q, 0, RAM_END - 16, 32, I, 0);
    publish(f, 0);
}

static void build_indirect_next_out_of_table(struct fixture *f)
{
    uint64_t table = f->buf + 0x800;
    vqt_desc_at(f->qt, table, 0, f->buf, 16, W | N, 1);
    vqt_desc_at(f->qt, table, 1, f->buf + 16, 16, W | N, 2); /* the table has 2 entries */
    vqt_desc(&f->q, 0, table, 32, I, 0);
    publish(f, 0);
}

static void build_indirect_loop(struct fixture *f)
{
    uint64_t table = f->buf + 0x800;
    vqt_desc_at(f->qt, table, 0, f->buf, 16, W | N, 1);
    vqt_desc_at(f->qt, table, 1, f->buf + 16, 16, W | N, 0);
    vqt_desc(&f->q, 0, table, 32, I, 0);
    publish(f, 0);
}

static void build_indirect_buffer_outside_ram(struct fixture *f)
{
    uint64_t table = f->buf + 0x800;
    vqt_desc_at(f->qt, table, 0, 0xd0000000, 16, W, 0);
    vqt_desc(&f->q, 0, table, 16, I, 0);
    publish(f, 0);
}

static void build_avail_jump(struct fixture *f)
{
    vqt_desc(&f->q, 0, f->buf, 16, W, 0);
    vqt_avail_set_idx(&f->q, f->q.avail_idx + QSIZE + 1); /* 9 new entries in an 8-entry ring */
}

static void build_avail_jump_backwards(struct fixture *f)
{
    vqt_avail_set_idx(&f->q, f->q.avail_idx - 1); /* 65535 ahead, modulo 2^16 */
}

static void build_head_out_of_range(struct fixture *f)
{
    publish(f, QSIZE);
}

static void build_head_far_out_of_range(struct fixture *f)
{
    publish(f, 0xffff);
}

static void build_too_many_buffers(struct fixture *f)
{
    /* 65 one-byte buffers through an indirect table, more than virtio-rng takes (64) */
    struct vqt_queue *q = &f->q;
    uint64_t table = qtest_alloc(f->qt, 16 * 65, 16);
    for (uint16_t i = 0; i < 65; i++)
        vqt_desc_at(f->qt, table, i, f->buf + i, 1, W | (i < 64 ? N : 0), (uint16_t)(i + 1));
    vqt_desc(q, 0, table, 16 * 65, I, 0);
    publish(f, 0);
}

#define CASE(n, feat, fn, msg)                                                                     \
    {                                                                                              \
        .name = n, .features = feat, .build = fn, .why = msg                                       \
    }
#define CASE_HIGH_RAM(n, fn, msg)                                                                  \
    {                                                                                              \
        .name = n, .build = fn, .why = msg, .high_ram = true                                       \
    }
#define CASE_QSIZE(n, feat, fn, msg, size)                                                         \
    {                                                                                              \
        .name = n, .features = feat, .build = fn, .why = msg, .qsize = size                        \
    }

static const struct chain_case cases[] = {
    CASE("loop", 0, build_loop, "chain longer than the queue (a loop?)"),
    CASE("self-loop", 0, build_self_loop, "descriptor 3: chain longer than the queue"),
    CASE("longer-than-queue", 0, build_longer_than_queue, "chain longer than the queue"),
    CASE("next-out-of-range", 0, build_next_out_of_range,
         "descriptor 0: next index beyond the queue size"),
    CASE("next-far-out-of-range", 0, build_next_far_out_of_range,
         "descriptor 1: next index beyond the queue size"),
    CASE("addr-beyond-ram", 0, build_addr_beyond_ram,
         "buffer [0x8000000, +16) is outside guest RAM"),
    CASE("addr-ends-beyond-ram", 0, build_addr_ends_beyond_ram,
         "buffer [0x7fffff8, +16) is outside guest RAM"),
    CASE("addr-in-mmio-hole", 0, build_addr_in_mmio_hole,
         "buffer [0xd0000000, +256) is outside guest RAM"),
    CASE("addr-wraps", 0, build_addr_wraps,
         "buffer [0xfffffffffffffff0, +32) is outside guest RAM"),
    CASE_HIGH_RAM("across-hole-low", build_across_hole_low,
                  "buffer [0xbffff000, +8192) is outside"),
    CASE_HIGH_RAM("across-hole-high", build_across_hole_high,
                  "buffer [0xfffff000, +8192) is outside"),
    CASE_HIGH_RAM("across-hole-whole", build_across_hole_whole, "buffer [0xbffff000, +1073750016)"),
    CASE("readable-after-writable", 0, build_readable_after_writable,
         "descriptor 1: device-readable buffer after a device-writable one"),
    CASE("indirect-without-feature", 0, build_indirect_without_feature,
         "indirect descriptor, but INDIRECT_DESC not negotiated"),
    CASE("indirect-with-next", VQT_F_INDIRECT, build_indirect_with_next,
         "indirect descriptor with NEXT set"),
    CASE("nested-indirect", VQT_F_INDIRECT, build_nested_indirect, "nested indirect table"),
    CASE("indirect-len-not-multiple", VQT_F_INDIRECT, build_indirect_len_not_multiple,
         "indirect table length is not a multiple of 16 bytes up to the queue size"),
    CASE("indirect-too-long", VQT_F_INDIRECT, build_indirect_too_long,
         "indirect table length is not a multiple of 16 bytes up to the queue size"),
    CASE("indirect-empty", VQT_F_INDIRECT, build_indirect_empty,
         "indirect table length is not a multiple of 16 bytes"),
    CASE("indirect-outside-ram", VQT_F_INDIRECT, build_indirect_outside_ram,
         "indirect table is outside guest RAM"),
    CASE("indirect-next-out-of-table", VQT_F_INDIRECT, build_indirect_next_out_of_table,
         "indirect next index beyond the table"),
    CASE("indirect-loop", VQT_F_INDIRECT, build_indirect_loop, "chain longer than the queue"),
    CASE("indirect-buffer-outside-ram", VQT_F_INDIRECT, build_indirect_buffer_outside_ram,
         "buffer [0xd0000000, +16) is outside guest RAM"),
    CASE("avail-index-jump", 0, build_avail_jump,
         "available index moved from 1 to 10, more than the queue size 8"),
    CASE("avail-index-backwards", 0, build_avail_jump_backwards,
         "available index moved from 1 to 0"),
    CASE("head-out-of-range", 0, build_head_out_of_range, "names head 8, beyond the queue size 8"),
    CASE("head-far-out-of-range", 0, build_head_far_out_of_range, "names head 65535"),
    CASE_QSIZE("too-many-buffers", VQT_F_INDIRECT, build_too_many_buffers,
               "chain has more buffers than the device takes", 128),
};

static void run_case(void **state)
{
    struct slot *slot = *state;
    const struct chain_case *c = slot->c;
    struct fixture f = {0};
    f.qt = slot->qt = c->high_ram ? qtest_start(qtest_vmm(), "--rng", "--mem", "3584", NULL)
                                  : qtest_start(qtest_vmm(), "--rng", NULL);
    vqt_find(f.qt, "virtio-rng", 0, &f.dev);
    init_device(&f, c->features, c->qsize);
    expect_request_served(&f); /* the device works before the bad request */
    (void)qtest_irq_wait(f.qt, f.dev.info.gsi, 0);
    uint16_t used = vqt_used_idx(&f.q);

    c->build(&f);
    vqt_kick(&f.q);
    assert_true(qtest_irq_wait(f.qt, f.dev.info.gsi, WAIT_MS));
    assert_true(vqt_status(&f.dev) & VIRTIO_CONFIG_S_NEEDS_RESET);
    assert_true(vqt_read(&f.dev, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
    assert_int_equal(vqt_used_idx(&f.q), used); /* the bad request was not completed */
    if (!qtest_log_wait(f.qt, c->why, WAIT_MS))
        qtest_fail(f.qt, "wisp-vmm's log does not say '%s'", c->why);
    /* broken until reset: kicked again, the device still takes nothing */
    vqt_kick(&f.q);
    assert_true(qtest_reply_ok(qtest_cmd(f.qt, "memmap")));
    assert_int_equal(vqt_used_idx(&f.q), used);

    assert_true(vqt_reset(&f.dev));
    assert_int_equal(vqt_read(&f.dev, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    init_device(&f, c->features, c->qsize);
    expect_request_served(&f);
    expect_request_served(&f);
    slot->qt = NULL;
    assert_int_equal(qtest_quit(f.qt), 0);
}

static int teardown(void **state)
{
    struct slot *slot = *state;
    qtest_kill(slot->qt);
    slot->qt = NULL;
    return 0;
}

int main(void)
{
    qtest_set_fail_handler(cmocka_fail);
    enum { NR_CASES = sizeof(cases) / sizeof(cases[0]) };
    static struct slot slots[NR_CASES];
    struct CMUnitTest tests[NR_CASES];
    for (size_t i = 0; i < NR_CASES; i++) {
        slots[i].c = &cases[i];
        tests[i] = (struct CMUnitTest){.name = cases[i].name,
                                       .test_func = run_case,
                                       .teardown_func = teardown,
                                       .initial_state = &slots[i]};
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
