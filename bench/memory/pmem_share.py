#!/usr/bin/env python3
"""bench/memory: host memory for N VMs that read one image through virtio-pmem, shared (one
file mapped ro by all) against private copies (a copy of the file per VM), the seed-001 point
that a DAX image is in the host's page cache once instead of once per VM.

    pmem_share.py --vmm WISP_VMM --guest VIRTIO_PMEM_ELF [--n N] [--mib M] [--json]

Each VM (the ring-3 guest guest/virtio_pmem.c, 32 MiB of RAM, hold=1) reads all of the M MiB
image and then sleeps. Reported per layout: the sum over the N processes of their Pss (the
shares of every page they map: the image's page cache pages split between the VMs that map
them, guest RAM, the VMM), the image mappings' part of it, and per VM. The private layout's N
files are on the same file system as the shared one (page cache either way); they are created
before the VMs start and removed at the end.
"""
import argparse
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time

M64 = (1 << 64) - 1
SEED = 12345


def make_image(path, mib):
    with open(path, "wb") as f:
        for p in range(mib * 256):
            v = ((p + 1) * 0x9E3779B97F4A7C15 & M64) ^ SEED
            f.write(struct.pack("<Q", p) + struct.pack("<Q", v) * 511)


def smaps(pid, path):
    """(Pss of the whole process, Pss of the mapping of path), kB"""
    whole, mapping, cur = 0, 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:
                cur = len(parts) >= 6 and parts[5] == path
            elif parts and parts[0] == "Pss:":
                whole += int(parts[1])
                mapping += int(parts[1]) if cur else 0
    return whole, mapping


def measure(args, images):
    procs = []
    try:
        for img in images:
            procs.append(subprocess.Popen(
                [args.vmm, "--kernel", args.guest, "--mem", "32", "--pmem", f"path={img},ro",
                 "--cmdline", f"mode=ro seed={SEED} size_mib={args.mib} hold=1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        for p in procs:
            out = b""
            while b"pmem: holding" not in out:
                line = p.stdout.readline()
                if not line:
                    sys.exit(f"a VM ended early: {out.decode(errors='replace')}")
                out += line
        figures = [smaps(p.pid, img) for p, img in zip(procs, images)]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
    return {"pss_total_kib": sum(w for w, _ in figures),
            "image_pss_total_kib": sum(m for _, m in figures),
            "pss_per_vm_kib": sum(w for w, _ in figures) / len(figures)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True, help="build/guest/virtio_pmem.elf")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as d:
        shared = os.path.join(d, "shared.img")
        make_image(shared, args.mib)
        copies = []
        for i in range(args.n):
            copies.append(os.path.join(d, f"copy{i}.img"))
            subprocess.run(["cp", shared, copies[-1]], check=True)
        res = {"shared": measure(args, [shared] * args.n), "private": measure(args, copies)}
    ratio = res["private"]["pss_total_kib"] / res["shared"]["pss_total_kib"]
    if args.json:
        print(json.dumps({"n": args.n, "mib": args.mib, "layouts": res, "private_over_shared":
                          ratio}, indent=1))
        return 0
    print(f"bench/memory pmem: {args.n} VMs each reading a {args.mib} MiB image (32 MiB RAM each)")
    print(f"{'layout':10} {'Pss, all VMs':>14} {'of it images':>14} {'per VM':>10}")
    for k, v in res.items():
        print(f"{k:10} {v['pss_total_kib'] / 1024:11.1f} MiB {v['image_pss_total_kib'] / 1024:10.1f}"
              f" MiB {v['pss_per_vm_kib'] / 1024:6.1f} MiB")
    print(f"private copies / one shared image, host memory of the {args.n} VMs: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
