#!/usr/bin/env python3
"""bench/wispd: create + start time through wispd as the number of VMs grows (the seed 003
experiment: libvirt's creation time grew with N; wispd's should not), and memory per idle VM.

  wispd_bench.py --wispd W --vmm V --guest G [--n 1000] [--mem 16]

VMs are defined and started one after another with the API (POST /v1/vms, POST
/v1/vms/NAME/start, which answers once wisp-vmm has taken InstanceStart); the time of each
pair is printed for VM #1, #10, #100, #1000 and as medians of windows, with the ratio
#N/#10. Memory: the sum of the wisp-vmm processes' Pss (smaps_rollup) over N, and the host's
MemAvailable drop over N.
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

from wispd_api import call, mem_available_kib


def pss_kib(pid):
    try:
        f = open(f"/proc/{pid}/smaps_rollup")
    except FileNotFoundError:
        return 0
    for line in f:
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wispd", required=True)
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--mem", type=int, default=16)
    a = ap.parse_args()
    need = a.n * (a.mem + 4) * 1024
    if mem_available_kib() < need:
        a.n = max(1, mem_available_kib() // ((a.mem + 4) * 1024))
        print(f"(memory: N lowered to {a.n})")
    subprocess.run(["sync"])
    with tempfile.TemporaryDirectory(prefix="wispd-bench-") as tmp:
        sock = os.path.join(tmp, "wispd.sock")
        log = open(os.path.join(tmp, "wispd.log"), "w")
        d = subprocess.Popen([a.wispd, "--socket", sock, "--state-dir", tmp + "/state",
                              "--vmm", a.vmm], stdout=log, stderr=log)
        pids = []
        try:
            while not os.path.exists(sock):
                time.sleep(0.01)
            avail0 = mem_available_kib()
            times = []
            for i in range(a.n):
                name = f"b{i}"
                t0 = time.perf_counter()
                call(sock, "POST", "/v1/vms", {"name": name, "memory_mib": a.mem,
                                               "kernel": a.guest})
                t1 = time.perf_counter()
                vm = call(sock, "POST", f"/v1/vms/{name}/start")
                t2 = time.perf_counter()
                times.append((t1 - t0, t2 - t1))
                pids.append(vm["pid"])
            time.sleep(1)
            avail1 = mem_available_kib()
            pss = sum(pss_kib(p) for p in pids)
            states = {}
            for vm in call(sock, "GET", "/v1/vms"):
                states.setdefault(vm["state"], []).append(vm["last_exit"])
            if set(states) != {"running"}:
                print("not all running: " + ", ".join(
                    f"{k}: {len(v)} ({v[0]})" for k, v in states.items()))
            total = [x + y for x, y in times]
            print(f"wispd: {a.n} VMs of {a.mem} MiB (guest {os.path.basename(a.guest)}), "
                  f"defined and started one after another")
            print(f"{'VM #':>8} {'define ms':>10} {'start ms':>10} {'total ms':>10}")
            for k in sorted({1, 10, 100, 1000, a.n}):
                if k <= a.n:
                    print(f"{k:8d} {times[k-1][0]*1e3:10.2f} {times[k-1][1]*1e3:10.2f} "
                          f"{total[k-1]*1e3:10.2f}")
            print("median total ms by window:")
            for lo, hi in ((0, 10), (10, 100), (100, 1000), (1000, a.n)):
                hi = min(hi, a.n)
                if hi > lo:
                    w = total[lo:hi]
                    print(f"  VMs {lo+1:4d}-{hi:4d}: median {statistics.median(w)*1e3:7.2f} "
                          f"(define {statistics.median([t[0] for t in times[lo:hi]])*1e3:.2f}, "
                          f"start {statistics.median([t[1] for t in times[lo:hi]])*1e3:.2f})")
            if a.n >= 100:
                r = statistics.median(total[a.n - 10:]) / statistics.median(total[:10])
                print(f"ratio median(last 10) / median(first 10): {r:.2f}")
            print(f"memory per VM: Pss of wisp-vmm {pss / a.n:.0f} KiB, "
                  f"host MemAvailable drop {(avail0 - avail1) / a.n:.0f} KiB, "
                  f"wispd Pss {pss_kib(d.pid)} KiB")
        finally:
            for p in pids:
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            d.terminate()
            d.wait()


if __name__ == "__main__":
    main()
