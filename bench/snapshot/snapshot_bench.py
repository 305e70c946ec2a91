#!/usr/bin/env python3
"""wisp's snapshot benchmark (docs/benchmarks.md, "Snapshots"): restore latency against a fresh
boot of the same guest, host memory per idle clone, snapshot creation time and file sizes.

Restore latency. guest/snapshot_tick.c writes boot marker 2 and prints "." every 50 us. It is
booted once and snapshotted (128 MiB, 1 vCPU). Then, alternately, for --runs rounds:
  restore  wisp-vmm --api-sock S --boot-marker is spawned (WISP_LAUNCH_NS set just before
           posix_spawn), PUT /snapshot/load {..., "resume_vm": true} is sent as soon as the
           socket exists; measured: spawn -> socket, load request -> answer, and from the
           spawn and from the load request to the guest's first instruction (the first marker
           line, within one 50 us tick of it) and to its first output (the first byte on
           wisp-vmm's stdout, a pipe)
  boot     wisp-vmm --kernel snapshot_tick.elf --boot-marker: spawn -> first instruction of the
           guest's own (marker 1, after the kit's ring-0 start-up) and -> first output
Memory per clone. guest/snapshot_idle.c sleeps in hlt; N clones (N = 1, 10, 100) are restored
from its snapshot, each its own wisp-vmm. After a second: MemAvailable's drop / N (everything:
wisp-vmm, KVM's memory for the VM, page tables; noisy on a busy host), and per process from
smaps_rollup Pss and the private memory, Private_Dirty: heap, stacks, guest pages written since
the restore (Private_Clean, file pages only this process maps, is shown apart: with N = 1 it
is wisp-vmm's own binary, shared as soon as a second wisp-vmm runs).
Creation. Time of PUT /snapshot/create (until both files are written) and the sizes of the state
file and of the memory file (length and blocks allocated) for a full snapshot of the idle guest
and of the counting guest (guest/snapshot_count.c), and a diff of the latter after 0.3 s more.

Targets (issue 10): <= 5 ms restore for a 128 MiB ring-3 guest (load request -> first
instruction), <= 0.3 MiB of private host memory per idle clone. Never fails on a figure.

  snapshot_bench.py --build-dir BUILD [--runs N] [--clones 1,10,100] [--json]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "snapshot"))
from snaplib import Failure, Vmm, api, load_body, mem_available_kb, smaps_rollup  # noqa: E402

MARKER = re.compile(r"boot-marker (\d+) at [\d.]+ ms \(([\d.]+) ms since launch\)")


def ms(ns):
    return ns / 1e6


def first_marker(v, value, timeout=10):
    m = v.wait_for(rf"boot-marker {value} at [\d.]+ ms \(([\d.]+) ms since launch\)", timeout,
                   stream="err")
    return float(m.group(1))


def spawn(b, name, args, boot_marker=True):
    launch = time.monotonic_ns()
    env = {"WISP_LAUNCH_NS": str(launch)}
    v = Vmm(b.vmm, b.tmp, name, list(args) + (["--boot-marker"] if boot_marker else []), env=env)
    return v, launch


def restore_once(b, i, snap, mem):
    v, launch = spawn(b, f"r{i}", [])
    sock_ready = time.monotonic_ns()
    t_req = time.monotonic_ns()
    v.expect("PUT", "/snapshot/load", load_body(snap, mem))
    t_resp = time.monotonic_ns()
    instr_ms = first_marker(v, 2)  # since launch
    v.wait_for(r"\.", 10)
    out_ns = int(v.t_first_out * 1e9)
    v.end()
    return {"spawn_to_socket": ms(sock_ready - launch), "request_to_answer": ms(t_resp - t_req),
            "spawn_to_first_instruction": instr_ms,
            "request_to_first_instruction": instr_ms - ms(t_req - launch),
            "spawn_to_first_output": ms(out_ns - launch),
            "request_to_first_output": ms(out_ns - t_req)}


def boot_once(b, i):
    v, launch = spawn(b, f"b{i}", ["--kernel", b.guest("snapshot_tick"), "--mem", "128"])
    instr_ms = first_marker(v, 1)
    v.wait_for(r"tick", 10)
    out_ns = int(v.t_first_out * 1e9)
    v.end()
    return {"spawn_to_first_instruction": instr_ms, "spawn_to_first_output": ms(out_ns - launch)}


def summary(values):
    v = sorted(values)
    q = lambda f: v[min(len(v) - 1, int(f * len(v)))]
    return {"median": statistics.median(v), "p10": q(0.1), "p90": q(0.9), "min": v[0]}


def make_snapshot(b, name, args, ready, api_config=None):
    """Boots, waits for `ready` on COM1, pauses, snapshots; returns files and creation time."""
    v = Vmm(b.vmm, b.tmp, name, args)
    for method, path, body in api_config or []:
        v.expect(method, path, body)
    v.wait_for(ready, 20)
    time.sleep(0.3)
    v.expect("PATCH", "/vm", {"state": "Paused"})
    snap, mem = os.path.join(b.tmp, name + ".snap"), os.path.join(b.tmp, name + ".mem")
    t = time.monotonic_ns()
    v.expect("PUT", "/snapshot/create", {"snapshot_path": snap, "mem_file_path": mem})
    create_ms = ms(time.monotonic_ns() - t)
    return v, snap, mem, create_ms


def sizes(snap, mem):
    st = os.stat(mem)
    return {"state_bytes": os.path.getsize(snap), "mem_bytes": st.st_size,
            "mem_allocated": st.st_blocks * 512}


def creation(b):
    rows = {}
    v, snap, mem, t = make_snapshot(b, "c-idle", ["--kernel", b.guest("snapshot_idle")],
                                    r"idle: ready")
    v.end()
    rows["full, idle guest"] = dict(sizes(snap, mem), create_ms=t)
    cfg = [("PUT", "/boot-source", {"kernel_image_path": b.guest("snapshot_count"),
                                    "boot_args": "delay_us=1000"}),
           ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128,
                                       "track_dirty_pages": True}),
           ("PUT", "/actions", {"action_type": "InstanceStart"})]
    v, snap, mem, t = make_snapshot(b, "c-count", [], r"count 100", cfg)
    rows["full, counting guest"] = dict(sizes(snap, mem), create_ms=t)
    v.expect("PATCH", "/vm", {"state": "Resumed"})
    time.sleep(0.3)
    v.expect("PATCH", "/vm", {"state": "Paused"})
    dsnap, dmem = os.path.join(b.tmp, "c-diff.snap"), os.path.join(b.tmp, "c-diff.mem")
    t0 = time.monotonic_ns()
    v.expect("PUT", "/snapshot/create", {"snapshot_path": dsnap, "mem_file_path": dmem,
                                         "snapshot_type": "Diff"})
    rows["diff, counting guest (0.3 s later)"] = dict(sizes(dsnap, dmem),
                                                      create_ms=ms(time.monotonic_ns() - t0))
    v.end()
    return rows


def mem_settled():
    samples = []
    for _ in range(3):
        samples.append(mem_available_kb())
        time.sleep(0.2)
    return statistics.median(samples)


def clones(b, n, snap, mem):
    before = mem_settled()
    vs = []
    try:
        for i in range(n):
            v = Vmm(b.vmm, b.tmp, f"k{n}-{i}", [])
            v.expect("PUT", "/snapshot/load", load_body(snap, mem))
            vs.append(v)
        time.sleep(1.0)
        after = mem_settled()
        roll = [smaps_rollup(v.p.pid) for v in vs]
        pte = []
        for v in vs:
            with open(f"/proc/{v.p.pid}/status") as f:
                pte += [int(l.split()[1]) for l in f if l.startswith("VmPTE:")]
    finally:
        for v in vs:
            v.p.kill()
        for v in vs:
            v.p.wait()
    return {"n": n, "memavailable_drop_mib_per_clone": (before - after) / n / 1024,
            "private_mib_per_clone": statistics.median(r.get("Private_Dirty", 0)
                                                       for r in roll) / 1024,
            "private_clean_mib_per_clone": statistics.median(r.get("Private_Clean", 0)
                                                             for r in roll) / 1024,
            "pss_mib_per_clone": statistics.median(r.get("Pss", 0) for r in roll) / 1024,
            "page_tables_kib_per_clone": statistics.median(pte) if pte else 0}


class Bench:
    def __init__(self, build, tmp):
        self.tmp = tmp
        self.vmm = os.path.join(build, "src/vmm/wisp-vmm")
        self.guest = lambda name: os.path.join(build, "guest", name + ".elf")


def print_table(res):
    print(f"Restore latency, 128 MiB ring-3 guest, {res['runs']} runs (ms; median, p10-p90, min)")
    for key, label in [("spawn_to_socket", "spawn -> API socket"),
                       ("request_to_answer", "load request -> 204"),
                       ("request_to_first_instruction", "load request -> first instruction"),
                       ("request_to_first_output", "load request -> first output"),
                       ("spawn_to_first_instruction", "spawn -> first instruction"),
                       ("spawn_to_first_output", "spawn -> first output")]:
        s = res["restore"][key]
        print(f"  restore {label:36s} {s['median']:7.2f}  {s['p10']:6.2f}-{s['p90']:6.2f}  "
              f"{s['min']:6.2f}")
    for key, label in [("spawn_to_first_instruction", "spawn -> first instruction"),
                       ("spawn_to_first_output", "spawn -> first output")]:
        s = res["boot"][key]
        print(f"  boot    {label:36s} {s['median']:7.2f}  {s['p10']:6.2f}-{s['p90']:6.2f}  "
              f"{s['min']:6.2f}")
    r, bt = res["restore"], res["boot"]
    print(f"  ratio fresh boot / restore, spawn -> first output: "
          f"{bt['spawn_to_first_output']['median'] / r['spawn_to_first_output']['median']:.2f}x")
    t = r["request_to_first_instruction"]["median"]
    print(f"  target: restore <= 5 ms (load request -> first instruction): {t:.2f} ms, "
          f"{'met' if t <= 5 else 'missed'}")
    print("Memory per idle clone (MiB)")
    for c in res["clones"]:
        print(f"  N={c['n']:<4} MemAvailable drop {c['memavailable_drop_mib_per_clone']:6.2f}  "
              f"private {c['private_mib_per_clone']:5.2f}  (+ clean file pages no other "
              f"process maps {c['private_clean_mib_per_clone']:4.2f})  Pss "
              f"{c['pss_mib_per_clone']:5.2f}  page tables {c['page_tables_kib_per_clone']:.0f} KiB")
    worst = max(c["private_mib_per_clone"] for c in res["clones"])
    print(f"  target: <= 0.3 MiB private per idle clone: {worst:.2f} MiB, "
          f"{'met' if worst <= 0.3 else 'missed'}")
    print("Snapshot creation (128 MiB guests)")
    for name, s in res["creation"].items():
        print(f"  {name:38s} {s['create_ms']:7.1f} ms  state {s['state_bytes'] / 1024:6.1f} KiB  "
              f"memory {s['mem_bytes'] >> 20} MiB long, {s['mem_allocated'] / 1024:8.0f} KiB "
              f"allocated")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--clones", default="1,10,100")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    # a freshly linked wisp-vmm's pages are dirty in the page cache until written back, and
    # smaps counts dirty file pages that one process maps as Private_Dirty (1.3 MiB at N = 1)
    os.sync()
    with tempfile.TemporaryDirectory(prefix="wisp-snapbench-", dir="/var/tmp") as tmp:
        b = Bench(os.path.abspath(a.build_dir), tmp)
        try:
            v, tsnap, tmem, _ = make_snapshot(b, "tick", ["--kernel", b.guest("snapshot_tick")],
                                              r"tick: ready\r?\n\.+")
            v.end()
            restores, boots = [], []
            restore_once(b, "warm", tsnap, tmem)
            for i in range(a.runs):
                restores.append(restore_once(b, i, tsnap, tmem))
                boots.append(boot_once(b, i))
            v, isnap, imem, _ = make_snapshot(b, "idle", ["--kernel", b.guest("snapshot_idle")],
                                              r"idle: ready")
            v.end()
            res = {"runs": a.runs,
                   "restore": {k: summary([r[k] for r in restores]) for k in restores[0]},
                   "boot": {k: summary([r[k] for r in boots]) for k in boots[0]},
                   "clones": [clones(b, int(n), isnap, imem) for n in a.clones.split(",")],
                   "creation": creation(b),
                   "load": os.getloadavg()}
        except Failure as e:
            print(f"snapshot_bench: {e}")
            return 1
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print_table(res)
        print(f"load average {res['load'][0]:.2f} {res['load'][1]:.2f} {res['load'][2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
