#!/usr/bin/env python3
"""Smoke test of the launch benchmark (meson test bench-launch-smoke, suite guest).

Runs launch.py once in table mode and once with --json, one measured run each, and fails unless
every contender booted the guest and the table and the JSON hold every figure. It never judges
the figures themselves: performance is read from the benchmark, not asserted by tests.
Usage: smoke.py LAUNCH_PY [launch.py arguments...]
"""

import json
import os
import subprocess
import sys

TABLE_LINES = ("Launch, ms", "first byte", "CPU (user+sys)", "Ratios", "Idle 128 MiB guest",
               "overhead", "Targets:")


def run(launch_py, extra):
    argv = [sys.executable, launch_py, "--runs", "1", "--warmup", "0", "--mem-runs", "1",
            "--idle-seconds", "0.1"] + extra
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=150)
    if proc.returncode != 0:
        sys.exit(f"FAIL: {' '.join(argv)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def main():
    launch_py, args = sys.argv[1], sys.argv[2:]
    table = run(launch_py, args)
    missing = [line for line in TABLE_LINES if line not in table]
    labels = ["raw KVM floor", "wisp-vmm", "QEMU microvm"]
    if os.geteuid() == 0:  # the contenders with a drive and a NIC need root (a tap)
        labels += ["wisp +blk+net", "QEMU +blk+net", "first byte <= 1.2x"]
    for label in labels:
        if "--contenders" not in args and label not in table:
            missing.append(label)
    if missing:
        sys.exit(f"FAIL: the table lacks {missing}:\n{table}")

    result = json.loads(run(launch_py, args + ["--json"]))
    for contender, figures in result["launch"].items():
        if len(figures["runs"]) != 1 or not figures["wall_ms"]["median"] > 0:
            sys.exit(f"FAIL: no launch figures for {contender}: {figures}")
        if not 0 < figures["first_byte_ms"]["median"] <= figures["wall_ms"]["median"]:
            sys.exit(f"FAIL: first byte not within the launch of {contender}: {figures}")
        memory = result["memory"][contender]
        if memory["guest_mappings"] < 1 or memory["vm_rss_kib"] <= 0:
            sys.exit(f"FAIL: no guest RAM mapping found for {contender}: {memory}")
    if "wisp" in result["launch"] and not result["targets"]:
        sys.exit("FAIL: no targets evaluated")
    print(table)


if __name__ == "__main__":
    main()
