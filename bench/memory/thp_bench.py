#!/usr/bin/env python3
"""bench/memory: the seed-002 pair, a memory-bound ring-3 workload with THP on and off, on 1 and
2 vCPUs.

    thp_bench.py --vmm WISP_VMM --guest BENCH_MEM_ELF [--mib N] [--accesses N] [--runs N] [--json]

The guest (guest/bench_mem.c) writes one word in every 4 KiB page of an N MiB array (the host
backs it: one fault per 4 KiB page, or per 2 MiB huge page with THP), then each vCPU does
dependent random loads over the whole array, timed with the TSC. wisp-vmm runs it with
`--thp on` (madvise(MADV_HUGEPAGE): guest RAM in 2 MiB transparent huge pages) and `--thp off`
(MADV_NOHUGEPAGE: 4 KiB pages), with --cpus 1 and 2. Reported, medians of --runs runs:
the vCPU threads' host CPU time (schedstat) per random load and per 4 KiB page touched, taken
between the guest's phase lines (the figure that does not depend on how much of the host's CPUs
the VM got: this machine's 2 cores are shared), the guest's TSC cycles per load (wall time, so
including time the host ran others), loads per second of wall time, how busy the vCPU threads
were, AnonHugePages at the start of the walk (THP really used or not), and the ratios THP off /
on and 2 vCPUs / 1.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

def vcpu_ns(pid):
    """CPU time (ns) of the process's vCPU threads so far (schedstat: time on a CPU)"""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith("vcpu"):
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def anon_huge_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_once(args, thp, cpus):
    mem = args.mib + 128
    cmd = [args.vmm, "--kernel", args.guest, "--mem", str(mem), "--cpus", str(cpus),
           "--thp", thp, "--cmdline", f"mib={args.mib} accesses={args.accesses}"]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, marks, huge = "", {}, 0
    t_walk = None
    for raw in p.stdout:  # the vCPUs' CPU time at each phase line, as it comes
        line = raw.decode(errors="replace")
        out += line
        now = time.monotonic()
        if "phase touch" in line:
            marks["touch"] = vcpu_ns(p.pid)
        elif "phase walk" in line:
            marks["walk"] = vcpu_ns(p.pid)
            huge = anon_huge_kib(p.pid)
            t_walk = now
        elif "random loads" in line and "end" not in marks:
            marks["end"] = vcpu_ns(p.pid)
            wall_walk = now - t_walk
    p.wait()
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0 or len(marks) != 3:
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{out}{err}")
    touch = int(re.search(r"touch \d+ MiB in (\d+) cycles", out).group(1))
    loads = [int(c) for c in re.findall(r"random loads in (\d+) cycles", out)]
    if len(loads) != cpus:
        sys.exit(f"{' '.join(cmd)}: {len(loads)} CPUs reported, wanted {cpus}\n{out}")
    n = cpus * args.accesses
    walk_ns = marks["end"] - marks["walk"]
    return {
        # host CPU time of the vCPUs per random load and per 4 KiB page touched (the figure
        # that does not depend on how much of the host's CPUs the VM got)
        "cpu_ns_per_load": walk_ns / n,
        "cpu_us_per_page": (marks["walk"] - marks["touch"]) / 1000 / (args.mib * 256),
        "tsc_cycles_per_load": statistics.mean(loads) / args.accesses,
        "tsc_cycles_per_page": touch / (args.mib * 256),
        # loads per second of wall time, all vCPUs together
        "loads_per_s": n / wall_walk,
        "vcpu_busy": walk_ns / 1e9 / wall_walk / cpus,
        "anon_huge_kib": huge,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True, help="build/guest/bench_mem.elf")
    ap.add_argument("--mib", type=int, default=256, help="the array (a power of two)")
    ap.add_argument("--accesses", type=int, default=2000000, help="random loads per vCPU")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = {}
    for run in range(args.runs):  # interleaved, so that the machine's load hits all alike
        for thp in ("on", "off"):
            for cpus in (1, 2):
                res.setdefault((thp, cpus), []).append(run_once(args, thp, cpus))
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in res.items()}
    ratios = {
        "load_cpu_off_on_1cpu": med[("off", 1)]["cpu_ns_per_load"] / med[("on", 1)]["cpu_ns_per_load"],
        "load_cpu_off_on_2cpu": med[("off", 2)]["cpu_ns_per_load"] / med[("on", 2)]["cpu_ns_per_load"],
        "touch_cpu_off_on_1cpu": (med[("off", 1)]["cpu_us_per_page"] /
                                  med[("on", 1)]["cpu_us_per_page"]),
        "load_cpu_2_1_thp_on": med[("on", 2)]["cpu_ns_per_load"] / med[("on", 1)]["cpu_ns_per_load"],
        "load_cpu_2_1_thp_off": (med[("off", 2)]["cpu_ns_per_load"] /
                                 med[("off", 1)]["cpu_ns_per_load"]),
        "loads_per_s_2_1_thp_on": med[("on", 2)]["loads_per_s"] / med[("on", 1)]["loads_per_s"],
        "loads_per_s_2_1_thp_off": med[("off", 2)]["loads_per_s"] / med[("off", 1)]["loads_per_s"],
    }
    if args.json:
        print(json.dumps({"mib": args.mib, "accesses": args.accesses, "runs": args.runs,
                          "medians": {f"thp_{t}_{c}cpu": v for (t, c), v in med.items()},
                          "ratios": ratios}, indent=1))
        return 0
    print(f"bench/memory: {args.mib} MiB array, {args.accesses} dependent random loads per vCPU, "
          f"medians of {args.runs} runs")
    print(f"{'':14} {'vCPU ns/load':>12} {'TSC cyc/load':>12} {'vCPU us/4K touch':>16} "
          f"{'loads/s':>10} {'vCPU busy':>9} {'AnonHuge MiB':>12}")
    for (thp, cpus), m in sorted(med.items()):
        print(f"thp {thp:3} {cpus} vCPU {m['cpu_ns_per_load']:12.0f} "
              f"{m['tsc_cycles_per_load']:12.0f} {m['cpu_us_per_page']:16.1f} "
              f"{m['loads_per_s']:10.0f} {m['vcpu_busy']:9.0%} {m['anon_huge_kib'] / 1024:12.0f}")
    print(f"THP off / on, vCPU time per random load: {ratios['load_cpu_off_on_1cpu']:.2f}x "
          f"(1 vCPU), {ratios['load_cpu_off_on_2cpu']:.2f}x (2 vCPUs); per page touched: "
          f"{ratios['touch_cpu_off_on_1cpu']:.2f}x")
    print(f"2 vCPUs / 1 vCPU, vCPU time per load: {ratios['load_cpu_2_1_thp_on']:.2f}x (THP on), "
          f"{ratios['load_cpu_2_1_thp_off']:.2f}x (THP off); loads per second of wall time: "
          f"{ratios['loads_per_s_2_1_thp_on']:.2f}x (THP on), "
          f"{ratios['loads_per_s_2_1_thp_off']:.2f}x (THP off)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
