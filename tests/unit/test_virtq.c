/* Unit tests of src/virtio/virtq.c on a guest_mem without KVM: chains the way Linux builds them
 * (an indirect table kmalloc'd at 8-byte alignment), and EVENT_IDX's avail_event. The malformed
 * cases are covered at register level by tests/qtest and by fuzz/virtq_fuzz. */
#include <errno.h>
#include <linux/virtio_ring.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kvm/guest_mem.h"
#include "virtio/virtq.h"

#define QSIZE 8
#define DESC  0x1000
#define AVAIL 0x2000
#define USED  0x3000

static void put_desc(struct guest_mem *m, uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    struct vring_desc d = {.addr = addr, .len = len, .flags = flags, .next = next};
    assert_int_equal(guest_mem_write(m, gpa, &d, sizeof(d)), 0);
}

static void publish(struct guest_mem *m, uint16_t slot, uint16_t head)
{
    assert_int_equal(guest_mem_write(m, AVAIL + 4 + 2ull * slot, &head, 2), 0);
    uint16_t idx = (uint16_t)(slot + 1);
    assert_int_equal(guest_mem_write(m, AVAIL + 2, &idx, 2), 0);
}

static void setup_queue(struct guest_mem *m, struct virtq *q, uint64_t features)
{
    assert_int_equal(guest_mem_create(m, 1 << 20, NULL), 0);
    *q = (struct virtq){.name = "test",
                        .size = QSIZE,
                        .ready = true,
                        .desc_gpa = DESC,
                        .avail_gpa = AVAIL,
                        .used_gpa = USED};
    assert_int_equal(virtq_activate(q, m, features, NULL), 0);
}

/* Linux's indirect tables come from kmalloc (8-byte aligned): they must be accepted. */
static void test_indirect_table_8_byte_aligned(void **state)
{
    struct guest_mem m;
    struct virtq q;
    setup_queue(&m, &q, 1ull << VIRTIO_RING_F_INDIRECT_DESC);
    const uint64_t table = 0x4008; /* 8 mod 16 */
    put_desc(&m, table, 0x5000, 16, VRING_DESC_F_NEXT, 1);
    put_desc(&m, table + 16, 0x6000, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
    put_desc(&m, table + 32, 0x7000, 1, VRING_DESC_F_WRITE, 0);
    put_desc(&m, DESC, table, 48, VRING_DESC_F_INDIRECT, 0);
    publish(&m, 0, 0);
    struct iovec iov[8];
    struct virtq_chain c;
    struct wisp_err err = {0};
    assert_int_equal(virtq_pop(&q, &c, iov, 8, &err), 1);
    assert_int_equal(c.nr_out, 1);
    assert_int_equal(c.nr_in, 2);
    assert_int_equal(c.out_len, 16);
    assert_int_equal(c.in_len, 513);
    assert_ptr_equal(iov[0].iov_base, gpa_to_hva(&m, 0x5000, 16));
    assert_ptr_equal(iov[2].iov_base, gpa_to_hva(&m, 0x7000, 1));
    guest_mem_destroy(&m);
}

/* With EVENT_IDX each pop moves avail_event past what it took (§2.7.10). */
static void test_event_idx_moves_avail_event(void **state)
{
    struct guest_mem m;
    struct virtq q;
    setup_queue(&m, &q, 1ull << VIRTIO_RING_F_EVENT_IDX);
    struct iovec iov[2];
    struct virtq_chain c;
    for (uint16_t i = 0; i < 3; i++) {
        put_desc(&m, DESC + 16ull * i, 0x5000, 8, VRING_DESC_F_WRITE, 0);
        publish(&m, i, i);
        assert_int_equal(virtq_pop(&q, &c, iov, 2, NULL), 1);
        uint16_t avail_event;
        assert_int_equal(guest_mem_read(&m, USED + 4 + 8 * QSIZE, &avail_event, 2), 0);
        assert_int_equal(avail_event, i + 1);
    }
    assert_int_equal(virtq_pop(&q, &c, iov, 2, NULL), 0);
    guest_mem_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_indirect_table_8_byte_aligned),
        cmocka_unit_test(test_event_idx_moves_avail_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
