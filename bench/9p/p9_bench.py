#!/usr/bin/env python3
"""bench/9p: virtio-9p read throughput of wisp-vmm's in-process 9P2000.L server beside QEMU's
virtio-9p (-fsdev local,security_model=passthrough) on the same machine.

    p9_bench.py --vmm WISP_VMM --guest VIRTIO_9P_ELF [--rounds N] [--runs N] [--json]

The ring-3 guest (guest/virtio_9p.c, tests/virtio/p9_guest_test.py --bench) reads a 16 MiB host
file N times with Treads of msize (128 KiB) one at a time, polling, and prints the TSC cycles it
took per MiB: each Tread is a notification, the server's pread and copies, and the used-ring
update, so the figure is the device's round trip at full guest speed (no Linux in the way). The
MiB/s column converts with the host's nominal TSC rate (/proc/cpuinfo). Median of --runs runs,
wisp-vmm's and QEMU's interleaved.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEST = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "virtio", "p9_guest_test.py")


def tsc_mhz():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    return 0.0


def one(vmm, guest, rounds):
    p = subprocess.run([sys.executable, TEST, "--vmm", vmm, "--guest", guest, "--bench",
                        str(rounds)], capture_output=True, text=True, timeout=300)
    m = re.search(r"p9: bench read (\d+) MiB, (\d+) cycles per MiB", p.stdout)
    if p.returncode != 0 or not m:
        sys.exit(f"p9_bench: {vmm}: the guest failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return int(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    mhz = tsc_mhz()
    res, samples = {}, {"wisp-vmm": [], "qemu": []}
    for _ in range(a.runs):  # interleaved: a change of the machine's load hits both alike
        samples["wisp-vmm"].append(one(a.vmm, a.guest, a.rounds))
        samples["qemu"].append(one("qemu", a.guest, a.rounds))
    for name in samples:
        cycles = statistics.median(samples[name])
        res[name] = {"cycles_per_mib": cycles,
                     "mib_per_s": round(mhz * 1e6 / cycles, 1) if mhz else None}
    res["ratio_wisp_to_qemu"] = round(res["qemu"]["cycles_per_mib"] /
                                      res["wisp-vmm"]["cycles_per_mib"], 2)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"virtio-9p sequential read, 16 MiB x {a.rounds}, Treads of 128 KiB, median of {a.runs}"
          f" (TSC {mhz:.0f} MHz)")
    print(f"{'':10} {'cycles/MiB':>12} {'MiB/s':>8}")
    for name in ("wisp-vmm", "qemu"):
        r = res[name]
        print(f"{name:10} {r['cycles_per_mib']:>12.0f} {r['mib_per_s'] or 0:>8.1f}")
    print(f"wisp-vmm / QEMU throughput: {res['ratio_wisp_to_qemu']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
