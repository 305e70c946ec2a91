#!/usr/bin/env python3
"""bench/oci: the time from `ctr run` to the container's exit for a container that prints one
line, and the memory per idle container, for runc, gVisor's runsc (Debian's) and wisp-oci under
the same private containerd (tests/oci's), on this machine.

  oci_bench.py --oci build/src/oci/wisp-oci [--runs 3] [--idle 1,10] [--wisp-idle 1]
               [--template-runs 3] [--template-idle 1,10]

Memory per idle container is the PSS (/proc/PID/smaps_rollup) of the processes the runtime
adds per container: runc's container process; runsc's sandbox and gofer; wisp-oci's monitor
and wisp-vmm (guest RAM the guest touched is in wisp-vmm's). The shim (one per container for
every runtime) is left out of all three. Each cold wisp-oci container is a Linux boot: on this
project's nested machines 15-50 s, so its N stays small. With templates (docs/oci.md
"Templates"; oci.json's "template" switched through $WISP_OCI_CONFIG between the rows) a start
restores the template of the default cache (built first by an untimed run when there is none);
its host-side part, wisp-vmm's start to its PUT /snapshot/load answered (`restore_us` in the
container's state.json), is printed apart from the total, the rest of which is the guest's
work (mounts, the process: ring-0 code, ~2600x slower under PVM here).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "oci"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "api"))
from oci_engines import IMAGE, Containerd, make_image  # noqa: E402


def smaps_kib(pid, field="Pss:"):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(l.split()[1]) for l in f if l.startswith(field))
    except OSError:
        return 0


def descendants(pid):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(p))
            except (OSError, ValueError):
                pass
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def shim_pids(sock):
    pids = []
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"-address" in argv and sock.encode() in argv and b"-id" in argv:
            pids.append(int(p))
    return pids


def time_run(cd, binary, root, name):
    t0 = time.monotonic()
    r = cd.ctr("run", "--rm", "--runc-binary", binary, "--runc-root", root, IMAGE, name,
               "echo", "hi", timeout=600)
    dt = time.monotonic() - t0
    if r.returncode != 0 or "hi" not in r.stdout:
        raise RuntimeError(f"{binary}: ctr run failed: {r.stderr.strip()}")
    return dt


def restore_us(root, name):
    try:
        with open(os.path.join(root, "default", name, "state.json")) as f:
            return json.load(f)["wisp"].get("restore_us")
    except (OSError, ValueError, KeyError):
        return None


def idle_memory(cd, binary, root, n, prefix, restores):
    for i in range(n):
        r = cd.ctr("run", "-d", "--runc-binary", binary, "--runc-root", root, IMAGE,
                   f"{prefix}{i}", "sleep", "100000", timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"{binary}: ctr run -d failed: {r.stderr.strip()}")
        us = restore_us(root, f"{prefix}{i}")
        if us is not None:
            restores.append(us)
    time.sleep(3)
    pids = [p for s in shim_pids(cd.sock) for p in descendants(s)]
    total = sum(smaps_kib(p) for p in pids)
    rss = sum(smaps_kib(p, "Rss:") for p in pids)
    for i in range(n):
        cd.ctr("task", "kill", "-s", "KILL", f"{prefix}{i}")
    time.sleep(2)
    for i in range(n):
        cd.ctr("task", "rm", "-f", f"{prefix}{i}")
        cd.ctr("container", "rm", f"{prefix}{i}")
    return total / n / 1024, rss / n / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oci", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--wisp-runs", type=int, default=1, help="wisp-oci's runs (each a boot)")
    ap.add_argument("--idle", default="1,10")
    ap.add_argument("--wisp-idle", default="1")
    ap.add_argument("--template-runs", type=int, default=3)
    ap.add_argument("--template-idle", default="1,10")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wisp-oci-bench-") as tmp:
        config = os.path.join(tmp, "oci.json")
        os.environ["WISP_OCI_CONFIG"] = config  # containerd, its shims and wisp-oci read it

        def templates(on):
            with open(config, "w") as f:
                json.dump({"template": on}, f)

        runsc = os.path.join(tmp, "runsc-nonet")
        with open(runsc, "w") as f:  # runsc needs its own network off outside a netns
            f.write('#!/bin/sh\nexec /usr/bin/runsc --network=none "$@"\n')
        os.chmod(runsc, 0o755)
        runtimes = [("runc", "/usr/sbin/runc", args.idle, args.runs),
                    ("runsc", runsc, args.idle, args.runs),
                    ("wisp-oci (cold boot)", os.path.abspath(args.oci), args.wisp_idle,
                     args.wisp_runs),
                    ("wisp-oci (template)", os.path.abspath(args.oci), args.template_idle,
                     args.template_runs)]
        image = make_image(tmp)
        cd = Containerd(tmp)
        try:
            cd.ctr("image", "import", image)
            times = {}
            print(f"{'runtime':24} {'ctr run -> exit (median)':>26} {'runs':>5}")
            for label, binary, _, runs in runtimes:
                root = os.path.join(tmp, "root-" + label.split()[0])
                if not runs:
                    continue
                templates("template" in label)
                if "template" in label:
                    time_run(cd, binary, root, "warm")  # builds the template if there is none
                t = [time_run(cd, binary, root, f"t{i}") for i in range(runs)]
                times[label] = statistics.median(t)
                print(f"{label:24} {times[label] * 1000:23.0f} ms {len(t):5}")
            base = times["runc"]
            for label in times:
                print(f"  {label}: {times[label] / base:.1f}x runc")
            print(f"\n{'runtime':24} {'N':>4} {'PSS per idle container':>24} {'RSS':>10}")
            restores = []
            for label, binary, ns, _ in runtimes:
                root = os.path.join(tmp, "root-" + label.split()[0])
                templates("template" in label)
                for n in [int(x) for x in ns.split(",") if x]:
                    mib, rss = idle_memory(cd, binary, root, n, "idle", restores)
                    print(f"{label:24} {n:4} {mib:20.1f} MiB {rss:6.1f} MiB", flush=True)
            if restores:
                print(f"\nwisp-oci (template): host side of a start (wisp-vmm started to its "
                      f"snapshot/load answered), median of {len(restores)}: "
                      f"{statistics.median(restores) / 1000:.1f} ms, "
                      f"{statistics.median(restores) / 1000 / (base * 1000):.2f}x runc's "
                      f"whole ctr run")
        finally:
            cd.close()


if __name__ == "__main__":
    sys.exit(main())
