#!/usr/bin/env python3
"""Smoke test of the virtio benchmark (meson test bench-virtio-smoke, suite virtio).

Runs virtio_bench.py once with one measured run and small request counts, the table on stdout
and the JSON in a file, and fails unless every guest ran under every contender and the table and
the JSON hold every figure (rates, MB/s, VMM and vCPU CPU per request, the host floor, ratios,
targets). It never judges the figures: performance is read from the benchmark, not asserted.
Usage: smoke.py VIRTIO_BENCH_PY [virtio_bench.py arguments...]
"""

import json
import os
import subprocess
import sys
import tempfile

TABLE_LINES = ("virtio-blk (guest/bench_blk.c)", "virtio-net (guest/bench_net.c)",
               "IOPS (requests/s)", "frames/s", "VMM CPU per request", "VMM CPU per round trip",
               "host floor", "VMM CPU above the host floor", "vCPU thread CPU per request",
               "randread-4k-qd32", "seqwrite-1m-qd4", "frames-60b-w32", "wisp/QEMU", "Targets:")
FIGURES = ("rate", "mb_s", "vmm_us", "vcpu_us", "wall_s")


def main():
    bench_py, args = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.json")
        argv = [sys.executable, bench_py, "--runs", "1", "--warmup", "0", "--scale", "0.02",
                "--json-file", path] + args
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=220)
        if proc.returncode != 0:
            sys.exit(f"FAIL: {' '.join(argv)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
        table = proc.stdout
        with open(path) as f:
            result = json.load(f)
    missing = [line for line in TABLE_LINES if line not in table]
    if missing:
        sys.exit(f"FAIL: the table lacks {missing}:\n{table}")
    for guest in ("blk", "net"):
        g = result["report"][guest]
        want = {c for c in result["config"]["contenders"] if guest == "blk" or c != "qemu-iothread"}
        if set(g["contenders"]) != want:
            sys.exit(f"FAIL: {guest}: contenders {sorted(g['contenders'])}")
        for contender, entry in g["contenders"].items():
            for phase, s in entry["phases"].items():
                if not all(s[k] > 0 for k in FIGURES) or len(s["runs"]) != 1:
                    sys.exit(f"FAIL: {guest} {contender} {phase}: figures missing: {s}")
                if phase not in g["floor"] or not g["floor"][phase] > 0:
                    sys.exit(f"FAIL: {guest} {phase}: no host floor")
        if len(g["contenders"]["wisp"]["phases"]) != (6 if guest == "blk" else 3):
            sys.exit(f"FAIL: {guest}: phases {list(g['contenders']['wisp']['phases'])}")
    if not result["targets"] or not result["ratios"]["blk"]:
        sys.exit("FAIL: no ratios or targets evaluated")
    print(table)


if __name__ == "__main__":
    main()
