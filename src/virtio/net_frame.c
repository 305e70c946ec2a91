/* virtio-net headers and frames (virtio 1.2 §5.1.6): pure functions on the buffers they are
 * given, for the device's data path and for fuzzing. Guest buffers may change while they are
 * read: the header is copied out once and only the copy is checked and used. */
#include <endian.h>
#include <errno.h>
#include <linux/if_tun.h>
#include <string.h>

#include "virtio/net_int.h"

size_t net_iov_to_buf(const struct iovec *iov, unsigned n, size_t offset, void *dst, size_t len)
{
    size_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t take = iov[i].iov_len - offset;
        if (take > len - done)
            take = len - done;
        memcpy((uint8_t *)dst + done, (const uint8_t *)iov[i].iov_base + offset, take);
        done += take;
        offset = 0;
    }
    return done;
}

size_t net_buf_to_iov(const struct iovec *iov, unsigned n, size_t offset, const void *src,
                      size_t len)
{
    size_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t take = iov[i].iov_len - offset;
        if (take > len - done)
            take = len - done;
        memcpy((uint8_t *)iov[i].iov_base + offset, (const uint8_t *)src + done, take);
        done += take;
        offset = 0;
    }
    return done;
}

unsigned net_iov_tail(const struct iovec *iov, unsigned n, size_t skip, struct iovec *out,
                      unsigned max)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n && k < max; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        out[k++] = (struct iovec){.iov_base = (uint8_t *)iov[i].iov_base + skip,
                                  .iov_len = iov[i].iov_len - skip};
        skip = 0;
    }
    return k;
}

static bool has(uint64_t features, unsigned bit)
{
    return (features >> bit) & 1;
}

/* The feature a GSO type needs (§5.1.6.2.1), for transmit (host) or receive (guest). */
static int gso_feature(uint8_t gso_type, bool host)
{
    switch (gso_type) {
    case VIRTIO_NET_HDR_GSO_TCPV4:
        return host ? VIRTIO_NET_F_HOST_TSO4 : VIRTIO_NET_F_GUEST_TSO4;
    case VIRTIO_NET_HDR_GSO_TCPV6:
        return host ? VIRTIO_NET_F_HOST_TSO6 : VIRTIO_NET_F_GUEST_TSO6;
    case VIRTIO_NET_HDR_GSO_UDP:
        return host ? VIRTIO_NET_F_HOST_UFO : VIRTIO_NET_F_GUEST_UFO;
    }
    return -1;
}

static int fail(const char **why, const char *what)
{
    if (why)
        *why = what;
    return -EINVAL;
}

int net_tx_hdr_check(struct virtio_net_hdr_v1 *h, uint64_t features, size_t frame_len,
                     const char **why)
{
    h->flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM; /* DATA_VALID, RSC_INFO: not for transmit */
    if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        if (!has(features, VIRTIO_NET_F_CSUM))
            return fail(why, "a partial checksum, but VIRTIO_NET_F_CSUM was not negotiated");
        uint32_t end = (uint32_t)le16toh(h->csum_start) + le16toh(h->csum_offset) + 2;
        if (end > frame_len)
            return fail(why, "csum_start + csum_offset lies beyond the frame");
    } else {
        h->csum_start = h->csum_offset = 0;
    }
    if (h->gso_type == VIRTIO_NET_HDR_GSO_NONE) {
        h->gso_size = 0;
    } else {
        if (h->gso_type & VIRTIO_NET_HDR_GSO_ECN)
            return fail(why, "GSO with ECN, but VIRTIO_NET_F_HOST_ECN was not negotiated");
        int bit = gso_feature(h->gso_type, true);
        if (bit < 0)
            return fail(why, "an unknown gso_type");
        if (!has(features, (unsigned)bit))
            return fail(why, "a GSO type whose HOST_ feature was not negotiated");
        if (le16toh(h->gso_size) == 0)
            return fail(why, "a GSO frame with gso_size 0");
    }
    if (le16toh(h->hdr_len) > frame_len) /* a hint only (§5.1.6.2.2) */
        h->hdr_len = htole16((uint16_t)frame_len);
    h->num_buffers = 0;
    return 0;
}

int net_tx_parse(const struct iovec *iov, unsigned nr_out, unsigned nr_in, uint64_t features,
                 struct net_tx_frame *f, struct iovec *data, unsigned max_data, const char **why)
{
    if (nr_in)
        return fail(why, "a device-writable buffer in a transmit chain");
    size_t total = 0;
    for (unsigned i = 0; i < nr_out; i++) {
        if (iov[i].iov_len > NET_MAX_LEN - total)
            return fail(why, "longer than 65562 bytes (header and frame)");
        total += iov[i].iov_len;
    }
    if (total < NET_HDR_LEN)
        return fail(why, "shorter than the 12-byte virtio-net header");
    f->len = total - NET_HDR_LEN;
    if (f->len < NET_ETH_HLEN)
        return fail(why, "a frame shorter than an Ethernet header");
    net_iov_to_buf(iov, nr_out, 0, &f->hdr, NET_HDR_LEN);
    int r = net_tx_hdr_check(&f->hdr, features, f->len, why);
    if (r < 0)
        return r;
    unsigned n = net_iov_tail(iov, nr_out, NET_HDR_LEN, data, max_data);
    size_t got = 0;
    for (unsigned i = 0; i < n; i++)
        got += data[i].iov_len;
    if (got != f->len)
        return fail(why, "more buffers than the device takes");
    return (int)n;
}

int net_csum_complete(uint8_t *frame, size_t len, unsigned start, unsigned offset)
{
    if ((size_t)start + offset + 2 > len)
        return -EINVAL;
    uint32_t sum = 0;
    for (size_t i = start; i + 1 < len; i += 2)
        sum += (uint32_t)frame[i] << 8 | frame[i + 1];
    if ((len - start) & 1)
        sum += (uint32_t)frame[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    uint16_t c = (uint16_t)~sum;
    frame[start + offset] = (uint8_t)(c >> 8);
    frame[start + offset + 1] = (uint8_t)c;
    return 0;
}

int net_rx_hdr_fixup(struct virtio_net_hdr_v1 *h, uint8_t *frame, size_t frame_len,
                     uint64_t features, const char **why)
{
    if (h->gso_type != VIRTIO_NET_HDR_GSO_NONE) {
        int bit = gso_feature(h->gso_type & ~VIRTIO_NET_HDR_GSO_ECN, false);
        if (bit < 0 || !has(features, (unsigned)bit) ||
            ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) && !has(features, VIRTIO_NET_F_GUEST_ECN)))
            return fail(why, "a GSO frame of a type the driver did not negotiate");
    }
    if (has(features, VIRTIO_NET_F_GUEST_CSUM)) {
        h->flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
        return 0;
    }
    /* §5.1.6.4.1: without GUEST_CSUM, flags are 0 and the frame is fully checksummed */
    if ((h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
        net_csum_complete(frame, frame_len, le16toh(h->csum_start), le16toh(h->csum_offset)) < 0)
        return fail(why, "a partial checksum beyond the frame");
    h->flags = 0;
    h->csum_start = h->csum_offset = 0;
    return 0;
}

unsigned net_tap_offloads(uint64_t features)
{
    if (!has(features, VIRTIO_NET_F_GUEST_CSUM))
        return 0; /* TSO and UFO need the checksum offload with them */
    return TUN_F_CSUM | (has(features, VIRTIO_NET_F_GUEST_TSO4) ? TUN_F_TSO4 : 0) |
           (has(features, VIRTIO_NET_F_GUEST_TSO6) ? TUN_F_TSO6 : 0) |
           (has(features, VIRTIO_NET_F_GUEST_UFO) ? TUN_F_UFO : 0);
}

uint64_t net_offload_features(unsigned tun_offloads)
{
    if (!(tun_offloads & TUN_F_CSUM))
        return 0;
    uint64_t f = 1ull << VIRTIO_NET_F_CSUM | 1ull << VIRTIO_NET_F_GUEST_CSUM;
    if (tun_offloads & TUN_F_TSO4)
        f |= 1ull << VIRTIO_NET_F_HOST_TSO4 | 1ull << VIRTIO_NET_F_GUEST_TSO4;
    if (tun_offloads & TUN_F_TSO6)
        f |= 1ull << VIRTIO_NET_F_HOST_TSO6 | 1ull << VIRTIO_NET_F_GUEST_TSO6;
    if (tun_offloads & TUN_F_UFO)
        f |= 1ull << VIRTIO_NET_F_HOST_UFO | 1ull << VIRTIO_NET_F_GUEST_UFO;
    return f;
}

void net_default_mac(const char *name, const char *tap, uint8_t mac[6])
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const char *s = name; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    h = (h ^ 0xff) * 0x100000001b3ull; /* a separator: ("ab", "c") != ("a", "bc") */
    for (const char *s = tap; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    mac[0] = 0x02; /* locally administered, unicast */
    for (int i = 1; i < 6; i++)
        mac[i] = (uint8_t)(h >> (8 * (i - 1)));
}
