#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/virtq_fuzz.c into fuzz/corpus/virtq/ (the input layout is
described at the top of virtq_fuzz.c): well-formed chains of each kind, and one of each
malformed kind the walker must refuse.

    fuzz/virtq_seeds.py [DIR]
"""
import os
import struct
import sys

AVAIL, USED, REGION1 = 0x1000, 0x2000, 0x10000
NEXT, WRITE, INDIRECT = 1, 2, 4
F_INDIRECT, F_EVENT_IDX = 1, 2


def seed(log2_size, feats, descs, heads, max_iov=63, writes=0, avail_idx=None, extra=None,
         script=b"", parser=0):
    size = 1 << log2_size
    ram = bytearray(0x4000 + 0x1000)  # region 0 and the start of region 1
    for i, (addr, length, flags, nxt) in enumerate(descs):
        struct.pack_into("<QIHH", ram, 16 * i, addr, length, flags, nxt)
    for i, h in enumerate(heads):
        struct.pack_into("<H", ram, AVAIL + 4 + 2 * (i % size), h)
    struct.pack_into("<H", ram, AVAIL + 2, len(heads) if avail_idx is None else avail_idx)
    for gpa, blob in (extra or {}).items():
        off = gpa if gpa < 0x4000 else 0x4000 + gpa - REGION1
        ram[off:off + len(blob)] = blob
    # trailing zeros add nothing (the target pads guest RAM with zeros)
    return bytes([log2_size, feats, max_iov, writes | parser << 3]) + bytes(ram).rstrip(b"\0") + \
        script


def table(entries):
    return b"".join(struct.pack("<QIHH", *e) for e in entries)


SEEDS = {
    "one-writable": seed(3, 0, [(0x3000, 64, WRITE, 0)], [0]),
    "out-out-in": seed(4, F_EVENT_IDX, [(0x3000, 16, NEXT, 1), (0x3010, 16, NEXT, 2),
                                        (0x3100, 512, WRITE, 0)], [0]),
    "indirect-4": seed(3, F_INDIRECT, [(REGION1, 64, INDIRECT, 0)], [0], extra={
        REGION1: table([(0x3000, 16, NEXT, 1), (0x3010, 16, NEXT, 2), (REGION1 + 0x100, 32,
                        WRITE | NEXT, 3), (REGION1 + 0x200, 32, WRITE, 0)])}),
    "direct-then-indirect": seed(3, F_INDIRECT, [(0x3000, 16, NEXT, 1), (0x3800, 32, INDIRECT, 0)],
                                 [0], extra={0x3800: table([(0x3100, 8, WRITE | NEXT, 1),
                                                            (0x3200, 8, WRITE, 0)])}),
    "four-chains": seed(2, 0, [(0x3000 + 0x40 * i, 0x40, WRITE, 0) for i in range(4)],
                        [0, 1, 2, 3]),
    "full-ring-256": seed(8, F_EVENT_IDX, [(REGION1 + 16 * i, 16, WRITE, 0) for i in range(256)],
                          list(range(256))),
    "zero-length": seed(3, 0, [(0x3000, 0, NEXT, 1), (0x3000, 8, WRITE, 0)], [0]),
    "loop": seed(3, 0, [(0x3000, 16, WRITE | NEXT, 1), (0x3010, 16, WRITE | NEXT, 0)], [0]),
    "next-out-of-range": seed(3, 0, [(0x3000, 16, WRITE | NEXT, 8)], [0]),
    "across-gap": seed(3, 0, [(0x3ff0, 0x20, WRITE, 0)], [0]),
    "beyond-ram": seed(3, 0, [(REGION1 + 0x3ff8, 16, WRITE, 0)], [0]),
    "wraps": seed(3, 0, [(0xfffffffffffffff8, 16, WRITE, 0)], [0]),
    "readable-after-writable": seed(3, 0, [(0x3000, 16, WRITE | NEXT, 1), (0x3010, 16, 0, 0)],
                                    [0]),
    "indirect-unnegotiated": seed(3, 0, [(REGION1, 16, INDIRECT, 0)], [0],
                                  extra={REGION1: table([(0x3000, 16, WRITE, 0)])}),
    "indirect-nested": seed(3, F_INDIRECT, [(REGION1, 16, INDIRECT, 0)], [0], extra={
        REGION1: table([(REGION1 + 0x100, 16, INDIRECT, 0)]),
        REGION1 + 0x100: table([(0x3000, 16, WRITE, 0)])}),
    "indirect-with-next": seed(3, F_INDIRECT, [(REGION1, 16, INDIRECT | NEXT, 1),
                                               (0x3000, 16, WRITE, 0)], [0],
                               extra={REGION1: table([(0x3000, 16, WRITE, 0)])}),
    "indirect-bad-len": seed(3, F_INDIRECT, [(REGION1, 24, INDIRECT, 0)], [0]),
    "indirect-loop": seed(3, F_INDIRECT, [(REGION1, 32, INDIRECT, 0)], [0], extra={
        REGION1: table([(0x3000, 16, WRITE | NEXT, 1), (0x3010, 16, WRITE | NEXT, 0)])}),
    "avail-jump": seed(3, 0, [(0x3000, 16, WRITE, 0)], [0], avail_idx=9),
    "head-out-of-range": seed(3, 0, [], [8]),
    "too-many-iov": seed(4, 0, [(0x3000 + i, 1, WRITE | NEXT, i + 1) for i in range(15)] +
                         [(0x3100, 1, WRITE, 0)], [0], max_iov=3),
    "guest-writes": seed(3, F_EVENT_IDX, [(0x3000 + 0x40 * i, 0x40, WRITE, 0) for i in range(8)],
                         list(range(8)), writes=7,
                         script=struct.pack("<HB", AVAIL + 2, 12) * 3 +
                         struct.pack("<HB", AVAIL + 4, 0x7f) * 4),
}

# Device requests (the parser chosen by header byte 3): virtio-blk header at 0x3000 (type,
# reserved, sector), data at 0x3200, status at 0x3f00; virtio-net header + frame at 0x3000.
BLK, NET_TX, NET_RX = 1, 2, 3
RO, HUGE = 4, 8                     # blk flags in header byte 1
CSUM, GUEST_CSUM = 4, 8             # net flags in header byte 1


def blk_hdr(rtype, sector):
    return {0x3000: struct.pack("<IIQ", rtype, 0, sector)}


def blk(name, rtype, sector, data, flags=0, extra=None, data_flags=None):
    descs = [(0x3000, 16, NEXT, 1)]
    if data:
        wr = rtype in (0, 8) if data_flags is None else data_flags
        descs.append((0x3200, data, (WRITE if wr else 0) | NEXT, 2))
    descs.append((0x3f00, 1, WRITE, 0))
    x = blk_hdr(rtype, sector)
    x.update(extra or {})
    SEEDS["blk-" + name] = seed(3, flags, descs, [0], extra=x, parser=BLK)


def eth_frame(payload_len=46):
    return bytes(range(6)) + bytes(range(6, 12)) + b"\x08\x00" + bytes(payload_len)


def net_hdr(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, 0)


blk("read", 0, 4, 1024)
blk("write", 1, 2040, 4096)
blk("flush", 4, 0, 0)
blk("get-id", 8, 0, 20)
blk("discard", 11, 0, 16, extra={0x3200: struct.pack("<QII", 8, 64, 0)})
blk("write-zeroes-unmap", 13, 0, 32, extra={0x3200: struct.pack("<QII", 0, 8, 1) +
                                             struct.pack("<QII", 2000, 48, 1)})
blk("read-beyond-disk", 0, 2047, 1024)
blk("read-huge-sector", 0, 0xffffffffffffff00, 512, flags=HUGE)
blk("write-read-only", 1, 0, 512, flags=RO)
blk("read-with-readable-data", 0, 0, 512, data_flags=False)
blk("unsupported-type", 99, 0, 512)
SEEDS["blk-no-status"] = seed(3, 0, [(0x3000, 16, 0, 0)], [0], extra=blk_hdr(0, 0), parser=BLK)
SEEDS["blk-short-header"] = seed(3, 0, [(0x3000, 8, NEXT, 1), (0x3f00, 1, WRITE, 0)], [0],
                                 parser=BLK)
for name, flags, hdr, frame in [
        ("net-tx", 0, net_hdr(), eth_frame()),
        ("net-tx-csum", CSUM, net_hdr(1, 0, 0, 0, 34, 6), eth_frame(60)),
        ("net-tx-csum-unnegotiated", 0, net_hdr(1, 0, 0, 0, 34, 6), eth_frame(60)),
        ("net-tx-tso", CSUM | 16, net_hdr(1, 1, 54, 1448, 34, 16), eth_frame(1500)),
        ("net-tx-runt", 0, net_hdr(), b"\x01\x02"),
        ("net-rx-csum", 0, net_hdr(1, 0, 0, 0, 34, 6), eth_frame(60)),
        ("net-rx-csum-beyond", 0, net_hdr(1, 0, 0, 0, 4000, 6), eth_frame(60)),
        ("net-rx-guest-csum", GUEST_CSUM, net_hdr(3), eth_frame())]:
    parser = NET_RX if name.startswith("net-rx") else NET_TX
    SEEDS[name] = seed(3, flags, [(0x3000, 12, NEXT, 1), (0x3100, len(frame), 0, 0)], [0],
                       extra={0x3000: hdr, 0x3100: frame}, parser=parser)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                             "corpus", "virtq")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
