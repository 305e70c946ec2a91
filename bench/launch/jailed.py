#!/usr/bin/env python3
"""Launch time and memory of wisp-vmm with the privilege drop (--uid/--gid) and through
wisp-jailer, beside plain wisp-vmm (docs/benchmarks.md, "Jailed launch"). Prints figures and
ratios; never fails on them.

    jailed.py --spawn wisp-bench-spawn --vmm PATH --jailer PATH --guest tiny-exit.elf
              --idle-guest tiny-idle.elf [--runs N] [--vmm-arg=ARG]... [--chroot-base-dir DIR]

Contenders (128 MiB, one vCPU, the tiny PVH guests of bench/launch, no --async-teardown so that
each one's wall time includes the VM's teardown alike):
  bare    wisp-vmm --kernel G --mem 128 --serial stdio --seccomp off (no wall at all)
  plain   wisp-vmm --kernel G --mem 128 --serial stdio (seccomp on, the default)
  drop    the same with --uid 40116 --gid 40116
  jailed  wisp-jailer --id bench-N --exec-file wisp-vmm --uid 40116 --gid 40116 --file G:/g.elf
          --new-pid-ns -- --kernel /g.elf --mem 128 --serial stdio (the jail made and removed
          in each run)
  in-proc the same jail made in-process, as wispd makes it (libwisp_jail in the launcher: no
          jailer exec, no reaper process)
Every launch is timed by wisp-bench-spawn, a C parent (vfork and exec; in-proc its fork-like
clone into the namespaces), so no contender pays the spawner's cost differently.
Wall: spawn until the launcher reaped its child (jailed: after the jail was removed). First
byte: spawn until the guest's "!" arrives. Memory: the idle guest, after 0.5 s, VmRSS of the
wisp-vmm process minus the guest RAM mapping's Rss (the jailer's own RSS listed apart).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ID = 40116


def command(kind, a, guest, base, n):
    """wisp-bench-spawn's command line for one launch of `kind`."""
    vmm = ["--mem", "128", "--serial", "stdio"] + a.vmm_arg
    if kind == "bare":
        argv = [a.vmm, "--kernel", guest] + vmm + ["--seccomp", "off"]
    elif kind == "plain":
        argv = [a.vmm, "--kernel", guest] + vmm
    elif kind == "drop":
        argv = [a.vmm, "--kernel", guest] + vmm + ["--uid", str(ID), "--gid", str(ID)]
    else:
        argv = [a.jailer, "--id", f"bench-{n}", "--exec-file", a.vmm, "--uid", str(ID), "--gid",
                str(ID), "--chroot-base-dir", base, "--new-pid-ns", "--file", guest + ":/g.elf",
                "--", "--kernel", "/g.elf"] + vmm
    return [a.spawn] + (["--in-process"] if kind == "in-proc" else []) + ["--"] + argv


def spawn(argv):
    """Starts wisp-bench-spawn: (its process, the launched pid, ms to the first byte)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    w = p.stdout.readline().split()
    if len(w) < 6 or w[0] != "pid" or w[5] != "ok":
        sys.exit(f"{' '.join(argv)}: {' '.join(w) or 'no first byte'}")
    return p, int(w[1]), float(w[3])


def finish(p, argv, any_status=False):
    w = p.stdout.readline().split()
    p.wait()
    if len(w) < 4 or w[0] != "wall_ms" or (w[3] != "0" and not any_status):
        sys.exit(f"{' '.join(argv)}: ended {' '.join(w)}")
    return float(w[1])


def launch_once(argv):
    p, _, first = spawn(argv)
    return finish(p, argv), first


def vmm_pid(pid, kind):
    if kind != "jailed":
        return pid
    for _ in range(200):
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    sys.exit("the jailer started no VMM")


def rss_outside(pid):
    total = guest = 0
    with open(f"/proc/{pid}/smaps") as f:
        size = 0
        for line in f:
            w = line.split()
            if w[0] == "Size:":
                size = int(w[1])
            elif w[0] == "Rss:" and size >= 128 * 1024:
                guest += int(w[1])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                total = int(line.split()[1])
    return total - guest, total


def memory_once(kind, a, base, n):
    argv = command(kind, a, a.idle_guest, base, n)
    p, launched, _ = spawn(argv)
    time.sleep(0.5)
    pid = vmm_pid(launched, kind)
    outside, _ = rss_outside(pid)
    jailer = rss_outside(launched)[1] if kind == "jailed" else 0
    os.kill(pid, 15)
    finish(p, argv, any_status=True)
    return outside, jailer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for opt in ("--spawn", "--vmm", "--jailer", "--guest", "--idle-guest"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--chroot-base-dir",
                    help="the jails' base directory (default: one in the temporary directory, "
                         "on /tmp's file system; a tmpfs one makes the jail's files bind mounts)")
    ap.add_argument("--vmm-arg", action="append", default=[],
                    help="one more wisp-vmm argument for every contender (repeatable)")
    a = ap.parse_args()
    kinds = ["bare", "plain", "drop", "jailed", "in-proc"]
    wall = {k: [] for k in kinds}
    first = {k: [] for k in kinds}
    mem = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        base = a.chroot_base_dir or os.path.join(tmp, "jails")
        n = 0
        for r in range(a.runs + 1):  # round 0: warm-up
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
            for k in order:
                n += 1
                w, f = launch_once(command(k, a, a.guest, base, n))
                if r:
                    wall[k].append(w)
                    first[k].append(f)
        for r in range(3):
            for k in kinds:
                n += 1
                mem[k].append(memory_once(k, a, base, n))
        left = os.listdir(os.path.join(base, "wisp-vmm")) if os.path.exists(
            os.path.join(base, "wisp-vmm")) else []
    med = {k: statistics.median(wall[k]) for k in kinds}
    fb = {k: statistics.median(first[k]) for k in kinds}
    rss = {k: statistics.median(m[0] for m in mem[k]) for k in kinds}
    print(f"{a.runs} interleaved rounds; medians (min) in ms; RSS outside guest RAM in KiB")
    print(f"{'':8} {'wall':>14} {'first byte':>14} {'RSS outside':>12} "
          f"{'vs bare: first byte median (min), RSS':>40}")
    for k in kinds:
        extra = "" if k == "bare" else \
            f"{fb[k] - fb['bare']:+.2f} ms ({min(first[k]) - min(first['bare']):+.2f}), " \
            f"{rss[k] - rss['bare']:+.0f} KiB"
        print(f"{k:8} {med[k]:8.2f} ({min(wall[k]):.2f}) {fb[k]:8.2f} ({min(first[k]):.2f}) "
              f"{rss[k]:12.0f} {extra:>40}")
    jr = statistics.median(m[1] for m in mem["jailed"])
    print(f"the jailer (reaper) itself while the VM runs: VmRSS {jr:.0f} KiB "
          "(in-proc: no such process)")
    print(f"jails left behind: {len(left)}")
    print("targets: seccomp+drop+jailer <= 1 ms more launch than bare, <= 64 KiB more RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
