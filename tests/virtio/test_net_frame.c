/* Unit tests of virtio-net's header and frame functions (src/virtio/net_frame.c): what a
 * transmit chain must be to reach the tap, how a received header is made right for the driver,
 * the checksum completion, the iovec helpers and the default MAC. */
#include <endian.h>
#include <errno.h>
#include <linux/if_tun.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio/net_int.h"

#define F(bit) (1ull << (bit))

static uint8_t frame[NET_MAX_LEN + 16];

/* A transmit chain of one buffer: header + `len` frame bytes. */
static struct iovec chain(struct virtio_net_hdr_v1 h, size_t len)
{
    memcpy(frame, &h, sizeof(h));
    for (size_t i = 0; i < len; i++)
        frame[NET_HDR_LEN + i] = (uint8_t)i;
    return (struct iovec){.iov_base = frame, .iov_len = NET_HDR_LEN + len};
}

static int parse(const struct iovec *iov, unsigned n, uint64_t features, struct net_tx_frame *f,
                 const char **why)
{
    struct iovec data[8];
    return net_tx_parse(iov, n, 0, features, f, data, 8, why);
}

static void test_tx_plain_frame(void **state)
{
    struct virtio_net_hdr_v1 h = {.flags = 0xfe, .num_buffers = htole16(3)}; /* unknown flags */
    struct iovec iov = chain(h, 60);
    struct net_tx_frame f;
    struct iovec data[4];
    const char *why = NULL;
    assert_int_equal(net_tx_parse(&iov, 1, 0, 0, &f, data, 4, &why), 1);
    assert_int_equal(f.len, 60);
    assert_int_equal(f.hdr.flags, 0); /* ignored: cleared before the tap sees them */
    assert_int_equal(f.hdr.num_buffers, 0);
    assert_ptr_equal(data[0].iov_base, frame + NET_HDR_LEN);
    assert_int_equal(data[0].iov_len, 60);
}

static void test_tx_header_split_over_buffers(void **state)
{
    struct virtio_net_hdr_v1 h = {
        .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = htole16(34), .csum_offset = htole16(2)};
    chain(h, 100);
    /* 5 + 5 + 10 + rest: the header ends inside the third buffer */
    struct iovec iov[4] = {{frame, 5}, {frame + 5, 5}, {frame + 10, 10}, {frame + 20, 92}};
    struct net_tx_frame f;
    struct iovec data[4];
    const char *why = NULL;
    int n = net_tx_parse(iov, 4, 0, F(VIRTIO_NET_F_CSUM), &f, data, 4, &why);
    assert_int_equal(n, 2);
    assert_int_equal(f.len, 100);
    assert_int_equal(le16toh(f.hdr.csum_start), 34);
    assert_ptr_equal(data[0].iov_base, frame + 12);
    assert_int_equal(data[0].iov_len, 8);
    assert_int_equal(data[1].iov_len, 92);
}

static void expect_refused(const struct iovec *iov, unsigned n, unsigned nr_in, uint64_t features,
                           const char *why_part)
{
    struct net_tx_frame f;
    struct iovec data[8];
    const char *why = NULL;
    assert_int_equal(net_tx_parse(iov, n, nr_in, features, &f, data, 8, &why), -EINVAL);
    assert_non_null(why);
    assert_non_null(strstr(why, why_part));
}

static void test_tx_malformed_chains(void **state)
{
    struct virtio_net_hdr_v1 h = {0};
    struct iovec iov = chain(h, 60);
    expect_refused(&iov, 1, 1, 0, "device-writable");
    struct iovec tiny = {frame, 11};
    expect_refused(&tiny, 1, 0, 0, "shorter than the 12-byte");
    struct iovec runt = {frame, NET_HDR_LEN + 13};
    expect_refused(&runt, 1, 0, 0, "shorter than an Ethernet header");
    struct iovec big = {frame, NET_MAX_LEN + 1};
    expect_refused(&big, 1, 0, 0, "longer than 65562");
    /* lengths that would wrap a size_t sum */
    struct iovec wrap[2] = {{frame, 40}, {frame, SIZE_MAX - 20}};
    expect_refused(wrap, 2, 0, 0, "longer than 65562");
    struct iovec many[10];
    for (int i = 0; i < 10; i++)
        many[i] = (struct iovec){frame, i == 0 ? NET_HDR_LEN : 8};
    expect_refused(many, 10, 0, 0, "more buffers");
}

static void test_tx_checksum_and_gso_need_their_features(void **state)
{
    struct net_tx_frame f;
    const char *why = NULL;
    struct virtio_net_hdr_v1 csum = {
        .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = htole16(34), .csum_offset = htole16(2)};
    struct iovec iov = chain(csum, 60);
    assert_int_equal(parse(&iov, 1, 0, &f, &why), -EINVAL);
    assert_non_null(strstr(why, "VIRTIO_NET_F_CSUM"));
    assert_int_equal(parse(&iov, 1, F(VIRTIO_NET_F_CSUM), &f, &why), 1);
    csum.csum_start = htole16(59); /* 59 + 2 + 2 > 60 */
    iov = chain(csum, 60);
    assert_int_equal(parse(&iov, 1, F(VIRTIO_NET_F_CSUM), &f, &why), -EINVAL);
    csum.csum_start = htole16(0xffff), csum.csum_offset = htole16(0xffff); /* no u16 wrap */
    iov = chain(csum, 60);
    assert_int_equal(parse(&iov, 1, F(VIRTIO_NET_F_CSUM), &f, &why), -EINVAL);

    uint64_t tso = F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4);
    struct virtio_net_hdr_v1 gso = {.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
                                    .gso_type = VIRTIO_NET_HDR_GSO_TCPV4,
                                    .hdr_len = htole16(5000),
                                    .gso_size = htole16(1448),
                                    .csum_start = htole16(34),
                                    .csum_offset = htole16(16)};
    iov = chain(gso, 3000);
    assert_int_equal(parse(&iov, 1, F(VIRTIO_NET_F_CSUM), &f, &why), -EINVAL);
    assert_int_equal(parse(&iov, 1, tso, &f, &why), 1);
    assert_int_equal(le16toh(f.hdr.hdr_len), 3000); /* a hint, bounded by the frame */
    gso.gso_type = VIRTIO_NET_HDR_GSO_TCPV6;
    iov = chain(gso, 3000);
    assert_int_equal(parse(&iov, 1, tso, &f, &why), -EINVAL);
    gso.gso_type = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN;
    iov = chain(gso, 3000);
    assert_int_equal(parse(&iov, 1, tso, &f, &why), -EINVAL);
    gso.gso_type = 2; /* no such type */
    iov = chain(gso, 3000);
    assert_int_equal(parse(&iov, 1, ~0ull, &f, &why), -EINVAL);
    gso.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    gso.gso_size = 0;
    iov = chain(gso, 3000);
    assert_int_equal(parse(&iov, 1, tso, &f, &why), -EINVAL);
}

/* RFC 1071's example, as a frame whose checksum field (at 8) starts at 0. */
static void test_checksum_completion(void **state)
{
    uint8_t f[10] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0, 0};
    assert_int_equal(net_csum_complete(f, sizeof(f), 0, 8), 0);
    assert_int_equal(f[8] << 8 | f[9], (uint16_t)~0xddf2);
    uint8_t odd[5] = {0x12, 0x34, 0, 0, 0x56}; /* odd length: the last byte padded */
    assert_int_equal(net_csum_complete(odd, sizeof(odd), 0, 2), 0);
    assert_int_equal(odd[2] << 8 | odd[3], (uint16_t) ~(0x1234 + 0x5600));
    assert_int_equal(net_csum_complete(odd, sizeof(odd), 2, 2), -EINVAL);
    assert_int_equal(net_csum_complete(odd, sizeof(odd), 0xffffffffu, 2), -EINVAL);
}

static void test_rx_header_for_the_driver(void **state)
{
    const char *why = NULL;
    uint8_t f[64] = {0};
    f[40] = 0xab;
    struct virtio_net_hdr_v1 h = {.flags = VIRTIO_NET_HDR_F_DATA_VALID};
    assert_int_equal(net_rx_hdr_fixup(&h, f, sizeof(f), 0, &why), 0);
    assert_int_equal(h.flags, 0); /* §5.1.6.4.1: 0 without GUEST_CSUM */
    h = (struct virtio_net_hdr_v1){
        .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = htole16(34), .csum_offset = htole16(2)};
    assert_int_equal(net_rx_hdr_fixup(&h, f, sizeof(f), 0, &why), 0);
    assert_int_equal(h.flags, 0);
    assert_int_equal(f[36] << 8 | f[37], (uint16_t)~0xab00); /* completed here */
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
    assert_int_equal(net_rx_hdr_fixup(&h, f, sizeof(f), F(VIRTIO_NET_F_GUEST_CSUM), &why), 0);
    assert_int_equal(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID);
    h = (struct virtio_net_hdr_v1){.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .csum_start = htole16(63)};
    assert_int_equal(net_rx_hdr_fixup(&h, f, sizeof(f), 0, &why), -EINVAL);
    h = (struct virtio_net_hdr_v1){.gso_type = VIRTIO_NET_HDR_GSO_TCPV4};
    assert_int_equal(net_rx_hdr_fixup(&h, f, sizeof(f), F(VIRTIO_NET_F_GUEST_CSUM), &why), -EINVAL);
    assert_int_equal(net_rx_hdr_fixup(&h, f, sizeof(f),
                                      F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO4),
                                      &why),
                     0);
}

static void test_iov_helpers(void **state)
{
    uint8_t a[3], b[5], out[8];
    struct iovec iov[2] = {{a, 3}, {b, 5}};
    assert_int_equal(net_buf_to_iov(iov, 2, 2, "wxyz", 4), 4);
    assert_int_equal(a[2], 'w');
    assert_memory_equal(b, "xyz", 3);
    assert_int_equal(net_iov_to_buf(iov, 2, 2, out, 8), 6); /* only 6 bytes from offset 2 */
    assert_memory_equal(out, "wxyz", 4);
    assert_int_equal(net_buf_to_iov(iov, 2, 9, "q", 1), 0);
    struct iovec tail[2];
    assert_int_equal(net_iov_tail(iov, 2, 3, tail, 2), 1);
    assert_ptr_equal(tail[0].iov_base, b);
    assert_int_equal(net_iov_tail(iov, 2, 1, tail, 1), 1); /* cut at max */
    assert_int_equal(tail[0].iov_len, 2);
}

static void test_default_mac_and_features(void **state)
{
    uint8_t m0[6], m1[6], again[6];
    net_default_mac("net0", "tap0", m0);
    net_default_mac("net1", "tap1", m1);
    net_default_mac("net0", "tap0", again);
    assert_int_equal(m0[0] & 3, 2); /* locally administered, unicast */
    assert_memory_not_equal(m0, m1, 6);
    assert_memory_equal(m0, again, 6);
    assert_int_equal(net_offload_features(0), 0);
    assert_int_equal(net_offload_features(TUN_F_CSUM | TUN_F_TSO4),
                     F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_HOST_TSO4) |
                         F(VIRTIO_NET_F_GUEST_TSO4));
    assert_int_equal(net_tap_offloads(F(VIRTIO_NET_F_GUEST_TSO4)), 0); /* needs GUEST_CSUM */
    assert_int_equal(net_tap_offloads(F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO6) |
                                      F(VIRTIO_NET_F_HOST_TSO4)),
                     TUN_F_CSUM | TUN_F_TSO6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tx_plain_frame),
        cmocka_unit_test(test_tx_header_split_over_buffers),
        cmocka_unit_test(test_tx_malformed_chains),
        cmocka_unit_test(test_tx_checksum_and_gso_need_their_features),
        cmocka_unit_test(test_checksum_completion),
        cmocka_unit_test(test_rx_header_for_the_driver),
        cmocka_unit_test(test_iov_helpers),
        cmocka_unit_test(test_default_mac_and_features),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
