#!/usr/bin/env python3
"""Damages a qcow2 image in one precise way (for the block tests: the write-command matrix and
the regression tests of docs/qcow2.md "What is validated").

  qcow2_damage.py IMG info                 prints the metadata layout as JSON
  qcow2_damage.py IMG DAMAGE [ARG]         applies DAMAGE, prints {"guest": [start, end]}: the
                                           guest range whose content the damage makes unknown

Damages (KIND is header, l1, l2, rt, rb, data, snap-table, snap-l1, snap-l2, compressed):
  refcount-zero KIND      the refcount of the first cluster of KIND becomes 0
  l2-unaligned            the first data L2 entry moves 512 bytes into its cluster
  l2-beyond               the first data L2 entry points 1 TiB past the end of the file
  l2-to KIND              the first data L2 entry points at the first cluster of KIND
  l2-crossed              the second data L2 entry points at the first one's cluster
  l2-reserved             a reserved bit of the first data L2 entry is set
  l1-unaligned | l1-beyond | l1-to KIND | l1-crossed | l1-reserved   the same for L1 entry 0
  rt-to KIND | rt-unaligned | rt-beyond                              refcount table entry 0
  snap-l1-to KIND         the first entry of the first snapshot's L1 table
  corrupt-bit             sets the corrupt bit (incompatible feature bit 1)
"""
import json
import struct
import sys

OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63
COMPRESSED = 1 << 62


class Image:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "r+b")
        h = self.read(0, 104)
        (magic, self.version, _, _, self.cluster_bits, self.size, _, self.l1_size,
         self.l1_offset, self.rt_offset, self.rt_clusters, self.nb_snapshots,
         self.snapshots_offset) = struct.unpack(">IIQIIQIIQQIIQ", h[:72])
        assert magic == 0x514649FB, "not qcow2"
        self.refcount_order = struct.unpack(">I", h[96:100])[0] if self.version >= 3 else 4
        self.incompat_off = 72
        self.cs = 1 << self.cluster_bits
        self.file_size = self.f.seek(0, 2)

    def read(self, off, n):
        self.f.seek(off)
        return self.f.read(n).ljust(n, b"\0")

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(data)

    def u64(self, off):
        return struct.unpack(">Q", self.read(off, 8))[0]

    def put64(self, off, v):
        self.write(off, struct.pack(">Q", v))

    # --- tables ---
    def l1(self):
        return [self.u64(self.l1_offset + 8 * i) for i in range(self.l1_size)]

    def l2_tables(self):
        return [e & OFFSET_MASK for e in self.l1() if e & OFFSET_MASK]

    def data_entries(self):
        """(entry offset, entry, guest offset) of allocated, uncompressed data clusters."""
        out = []
        for i, e in enumerate(self.l1()):
            l2 = e & OFFSET_MASK
            if not l2:
                continue
            for j in range(self.cs // 8):
                d = self.u64(l2 + 8 * j)
                if d & OFFSET_MASK and not d & COMPRESSED:
                    g = ((i << (self.cluster_bits - 3)) + j) << self.cluster_bits
                    out.append((l2 + 8 * j, d, g))
        return out

    def compressed_entries(self):
        out = []
        for i, e in enumerate(self.l1()):
            l2 = e & OFFSET_MASK
            for j in range(self.cs // 8 if l2 else 0):
                d = self.u64(l2 + 8 * j)
                if d & COMPRESSED:
                    x = 62 - (self.cluster_bits - 8)
                    out.append(d & ((1 << x) - 1))
        return out

    def rt(self):
        n = self.rt_clusters * self.cs // 8
        return [self.u64(self.rt_offset + 8 * i) & ~0x1FF for i in range(n)]

    def snapshots(self):
        out, pos = [], self.snapshots_offset
        for _ in range(self.nb_snapshots):
            l1_off, l1_size, id_len, name_len = struct.unpack(">QIHH", self.read(pos, 16))
            extra = struct.unpack(">I", self.read(pos + 36, 4))[0]
            out.append((l1_off, l1_size))
            pos = (pos + 40 + extra + id_len + name_len + 7) & ~7
        return out

    def first(self, kind):
        """Host offset of the first cluster of a kind of metadata (or data)."""
        if kind == "header":
            return 0
        if kind == "l1":
            return self.l1_offset
        if kind == "l2":
            return self.l2_tables()[0]
        if kind == "rt":
            return self.rt_offset
        if kind == "rb":
            return [r for r in self.rt() if r][0]
        if kind == "data":
            return self.data_entries()[0][1] & OFFSET_MASK
        if kind == "compressed":
            return self.compressed_entries()[0] & ~(self.cs - 1)
        if kind == "snap-table":
            return self.snapshots_offset
        if kind == "snap-l1":
            return self.snapshots()[0][0]
        if kind == "snap-l2":
            l1_off, l1_size = self.snapshots()[0]
            for i in range(l1_size):
                e = self.u64(l1_off + 8 * i) & OFFSET_MASK
                if e:
                    return e
        raise SystemExit("no %s in this image" % kind)

    # --- refcounts ---
    def set_refcount(self, cluster, value):
        bits = 1 << self.refcount_order
        per_rb = self.cs * 8 // bits
        rb = self.rt()[cluster // per_rb]
        assert rb, "no refcount block"
        i = cluster % per_rb
        if bits >= 8:
            nb = bits // 8
            self.write(rb + i * nb, value.to_bytes(nb, "big"))
        else:
            byte_off = rb + i * bits // 8
            shift = (i * bits) % 8
            b = self.read(byte_off, 1)[0]
            mask = ((1 << bits) - 1) << shift
            self.write(byte_off, bytes([(b & ~mask) | ((value << shift) & mask)]))

    def info(self):
        return {
            "cluster_size": self.cs, "file_size": self.file_size, "l1_offset": self.l1_offset,
            "l1": self.l1(), "rt_offset": self.rt_offset, "rt": [r for r in self.rt() if r],
            "snapshots": self.snapshots(), "data": [(e, d, g) for e, d, g in self.data_entries()],
        }


def guest_of_l1(img, i):
    span = img.cs * (img.cs // 8)
    return [i * span, min((i + 1) * span, img.size)]


def damage(img, what, arg):
    cs = img.cs
    whole = [0, img.size]
    if what == "corrupt-bit":
        v = img.u64(img.incompat_off)
        img.put64(img.incompat_off, v | 2)
        return []
    if what == "refcount-zero":
        img.set_refcount(img.first(arg) // cs, 0)
        return []
    if what.startswith("l2-"):
        ents = img.data_entries()
        eoff, e, g = ents[0]
        lost = [g, g + cs]
        if what == "l2-unaligned":
            img.put64(eoff, e + 512)
        elif what == "l2-beyond":
            img.put64(eoff, COPIED | ((img.file_size + (1 << 40)) & ~(cs - 1)))
        elif what == "l2-to":
            img.put64(eoff, COPIED | img.first(arg))
        elif what == "l2-crossed":
            eoff2, _, g2 = ents[1]
            img.put64(eoff2, e)
            lost = [min(g, g2), max(g, g2) + cs]
        elif what == "l2-reserved":
            img.put64(eoff, e | 0x2)
        else:
            raise SystemExit("unknown damage " + what)
        return lost
    if what.startswith("l1-"):
        l1 = img.l1()
        e = l1[0]
        lost = guest_of_l1(img, 0)
        if what == "l1-unaligned":
            img.put64(img.l1_offset, e + 512)
        elif what == "l1-beyond":
            img.put64(img.l1_offset, COPIED | ((img.file_size + (1 << 40)) & ~(cs - 1)))
        elif what == "l1-to":
            img.put64(img.l1_offset, COPIED | img.first(arg))
        elif what == "l1-crossed":
            img.put64(img.l1_offset + 8, e)
            lost = [0, guest_of_l1(img, 1)[1]]
        elif what == "l1-reserved":
            img.put64(img.l1_offset, e | 0x100)
        else:
            raise SystemExit("unknown damage " + what)
        return lost
    if what.startswith("rt-"):
        if what == "rt-to":
            img.put64(img.rt_offset, img.first(arg))
        elif what == "rt-unaligned":
            img.put64(img.rt_offset, img.rt()[0] + 512 * (cs > 512))
        elif what == "rt-beyond":
            img.put64(img.rt_offset, (img.file_size + (1 << 40)) & ~(cs - 1))
        else:
            raise SystemExit("unknown damage " + what)
        return []
    if what == "snap-l1-to":
        l1_off, _ = img.snapshots()[0]
        img.put64(l1_off, img.first(arg))
        return whole  # the snapshot's content; the active state is not touched
    raise SystemExit("unknown damage " + what)


def main():
    img = Image(sys.argv[1])
    what = sys.argv[2]
    if what == "info":
        print(json.dumps(img.info()))
        return
    lost = damage(img, what, sys.argv[3] if len(sys.argv) > 3 else None)
    img.f.close()
    print(json.dumps({"guest": lost}))


if __name__ == "__main__":
    main()
