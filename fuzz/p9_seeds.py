#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/p9_fuzz.c into fuzz/corpus/p9/ (the input layout is described
at the top of p9_fuzz.c): sessions over the target's share (fid 0 is its root, attached by the
target) that reach each message's success path, and a few that must be refused.

    fuzz/p9_seeds.py [DIR]
"""
import os
import struct
import sys

T = dict(statfs=8, lopen=12, lcreate=14, symlink=16, mknod=18, rename=20, readlink=22,
         getattr=24, setattr=26, xattrwalk=30, xattrcreate=32, readdir=40, fsync=50, lock=52,
         getlock=54, link=70, mkdir=72, renameat=74, unlinkat=76, version=100, attach=104,
         flush=108, walk=110, read=116, write=118, clunk=120, remove=122)


def s(text):
    b = text.encode()
    return struct.pack("<H", len(b)) + b


def msg(kind, body=b"", tag=1):
    return struct.pack("<IBH", 7 + len(body), T[kind], tag) + body


def walk(fid, newfid, *names):
    return msg("walk", struct.pack("<IIH", fid, newfid, len(names)) + b"".join(s(n) for n in names))


SEEDS = {
    "read-file": [walk(0, 1, "file"), msg("lopen", struct.pack("<II", 1, 0)),
                  msg("read", struct.pack("<IQI", 1, 0, 100)), msg("clunk", struct.pack("<I", 1))],
    "getattr-statfs": [walk(0, 1, "dir", "inner"), msg("getattr", struct.pack("<IQ", 1, 0x7ff)),
                       msg("statfs", struct.pack("<I", 0))],
    "dotdot": [walk(0, 1, "..", "..", "file"), walk(0, 2, "dir", "..", "dir")],
    "symlinks": [walk(0, 1, "abs", "secret"), walk(0, 2, "rel"),
                 msg("readlink", struct.pack("<I", 2)), walk(0, 3, "abs")],
    "create-write": [walk(0, 1), msg("lcreate", struct.pack("<I", 1) + s("new") +
                                     struct.pack("<III", 0o2, 0o644, 0)),
                     msg("write", struct.pack("<IQI", 1, 0, 5) + b"hello"),
                     msg("fsync", struct.pack("<II", 1, 0)),
                     msg("setattr", struct.pack("<IIIIIQQQQQ", 1, 0x1 | 0x8 | 0x30, 0o600, 0, 0,
                                                3, 0, 0, 0, 0)),
                     msg("unlinkat", struct.pack("<I", 0) + s("new") + struct.pack("<I", 0))],
    "readdir": [walk(0, 1, "dir"), msg("lopen", struct.pack("<II", 1, 0o200000)),
                msg("readdir", struct.pack("<IQI", 1, 0, 4096)),
                msg("readdir", struct.pack("<IQI", 1, 1, 40))],
    "xattr": [walk(0, 1, "file"), msg("xattrcreate", struct.pack("<I", 1) + s("user.k") +
                                      struct.pack("<QI", 3, 0)),
              msg("write", struct.pack("<IQI", 1, 0, 3) + b"abc"), msg("clunk", struct.pack("<I", 1)),
              walk(0, 2, "file"), msg("xattrwalk", struct.pack("<II", 2, 3) + s("user.k")),
              msg("read", struct.pack("<IQI", 3, 0, 10)),
              msg("xattrwalk", struct.pack("<II", 2, 4) + s(""))],
    "tree-ops": [msg("mkdir", struct.pack("<I", 0) + s("d2") + struct.pack("<II", 0o755, 0)),
                 msg("symlink", struct.pack("<I", 0) + s("l2") + s("/etc") + struct.pack("<I", 0)),
                 msg("mknod", struct.pack("<I", 0) + s("p2") + struct.pack("<IIII", 0o10600, 0, 0, 0)),
                 walk(0, 1, "file"), msg("link", struct.pack("<II", 0, 1) + s("hard")),
                 msg("renameat", struct.pack("<I", 0) + s("hard") + struct.pack("<I", 0) + s("hard2")),
                 walk(0, 2, "hard2"), msg("rename", struct.pack("<II", 2, 0) + s("hard3")),
                 msg("remove", struct.pack("<I", 2)),
                 msg("unlinkat", struct.pack("<I", 0) + s("d2") + struct.pack("<I", 0x200)),
                 msg("unlinkat", struct.pack("<I", 0) + s("l2") + struct.pack("<I", 0)),
                 msg("unlinkat", struct.pack("<I", 0) + s("p2") + struct.pack("<I", 0))],
    "locks": [walk(0, 1, "file"), msg("lopen", struct.pack("<II", 1, 2)),
              msg("lock", struct.pack("<IBIQQI", 1, 1, 0, 0, 0, 1) + s("c")),
              msg("getlock", struct.pack("<IBQQI", 1, 0, 0, 0, 1) + s("c")),
              msg("flush", struct.pack("<H", 1))],
    "refused": [walk(0, 1, "a/b"), walk(0, 1, "."), walk(0, 1, ""),
                msg("walk", struct.pack("<IIH", 0, 1, 17)),
                msg("mkdir", struct.pack("<I", 0) + s("..") + struct.pack("<II", 0o755, 0)),
                struct.pack("<IBH", 3, 110, 1), msg("version", struct.pack("<I", 100) + s("9P2000.L"))],
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "p9")
    os.makedirs(out, exist_ok=True)
    for name, msgs in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([4]) + b"".join(msgs))


if __name__ == "__main__":
    main()
