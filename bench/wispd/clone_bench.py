#!/usr/bin/env python3
"""Clones through wispd (docs/wispd.md, "Snapshots and clones"): `wisp clone SRC --count N` of
an idle 16 MiB guest (guest/snapshot_idle.elf) for each N, the snapshot time, the clones' rate
(clones per second after the snapshot) and the wall time per clone, with the memory the host
gave them; against Firecracker's published rate (5 microVMs per core per second). Every clone
is checked to be running. Figures only: nothing here asserts a time.

  clone_bench.py --wispd W --wisp C --vmm V --guest G [--counts 10,100] [--runs 3]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def mem_available_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    for o in ("--wispd", "--wisp", "--vmm", "--guest"):
        ap.add_argument(o, required=True)
    ap.add_argument("--counts", default="10,100")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    counts = [int(c) for c in a.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="clone-bench-") as tmp:
        sock = os.path.join(tmp, "wispd.sock")
        log = open(os.path.join(tmp, "wispd.log"), "w")
        d = subprocess.Popen([os.path.abspath(a.wispd), "--socket", sock, "--state-dir",
                              os.path.join(tmp, "state"), "--vmm", os.path.abspath(a.vmm)],
                             stdout=log, stderr=log)

        def wisp(*args, check=True):
            r = subprocess.run([os.path.abspath(a.wisp), "--socket", sock] + list(args),
                               capture_output=True, text=True, timeout=600)
            if check and r.returncode:
                sys.exit(f"wisp {' '.join(args)}: {r.returncode}: {r.stderr}")
            return r
        try:
            for _ in range(500):
                try:
                    with socket.socket(socket.AF_UNIX) as c:
                        c.connect(sock)
                    break
                except OSError:
                    time.sleep(0.01)
            defn = {"name": "src", "memory_mib": 16, "kernel": os.path.abspath(a.guest),
                    "stop_timeout_s": 0}
            subprocess.run([os.path.abspath(a.wisp), "--socket", sock, "define", "-"],
                           input=json.dumps(defn), text=True, check=True, capture_output=True)
            wisp("start", "src")
            time.sleep(0.5)
            print(f"{'N':>5} {'snapshot ms':>12} {'clones/s':>9} {'ms/clone':>9} "
                  f"{'MemAvail KiB/clone':>19} {'vs FC 5/core/s':>15}")
            cores = os.cpu_count() or 1
            for n in counts:
                rates, snaps, mems = [], [], []
                for run in range(a.runs):
                    before = mem_available_kib()
                    r = wisp("clone", "src", "--count", str(n), "--prefix", f"c{n}r{run}",
                             "--json")
                    s = json.loads(r.stdout)
                    assert s["running"] == n and s["failed"] == 0, s
                    vms = {v["name"]: v for v in json.loads(wisp("ls", "--json").stdout)}
                    assert all(vms[f"c{n}r{run}-{i}"]["state"] == "running"
                               for i in range(1, n + 1))
                    time.sleep(0.2)
                    mems.append((before - mem_available_kib()) / n)
                    rates.append(s["clones_per_s"])
                    snaps.append(s["snapshot_ms"])
                    for i in range(1, n + 1):
                        wisp("rm", "-f", f"c{n}r{run}-{i}")
                rate = statistics.median(rates)
                print(f"{n:5d} {statistics.median(snaps):12.0f} {rate:9.1f} {1000 / rate:9.2f} "
                      f"{statistics.median(mems):19.0f} {rate / (5 * cores):14.1f}x")
            print(f"(medians of {a.runs} runs; {cores} cores shared with other work; the "
                  "Firecracker column is clones/s over 5 per core per second)")
        finally:
            for v in json.loads(wisp("ls", "--json", check=False).stdout or "[]"):
                wisp("rm", "-f", v["name"], check=False)
            d.send_signal(signal.SIGTERM)
            d.wait(10)


if __name__ == "__main__":
    main()
