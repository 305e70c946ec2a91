#!/usr/bin/env python3
"""The seccomp lists against what wisp-vmm's threads really call (docs/security.md, "seccomp"):
runs the workloads below with wisp-vmm under `strace -f` (tests/security/traced-vmm: the
filters loaded with --seccomp=audit, so a call a list lacks is let through and seen, all in one
run), then seccomp_trace.py checks that every call of every thread is on its kind's list and
that every entry of every list was used or is marked "rare:" with the reason it is kept.

  seccomp_coverage.py --vmm VMM --guests DIR --progs seccomp_progs.c --lists seccomp_lists.c

The workloads are other tests' cases, run with the traced wisp-vmm as their --vmm: ring-3
guests only (no Linux), so that every kind of thread runs within seconds:
  virtio blk-raw             block-io (io_uring), vcpu, writer, main, spawner
  virtio blk-raw-direct      pool workers (aio=threads, O_DIRECT)
  virtio blk-qcow2-async-teardown   a qcow2 image, the --async-teardown helper (teardown)
  virtio blk-discard-qcow2   discard and write-zeroes (fallocate)
  virtio blk-qcow2-sync      aio=sync: the block-io thread's own reads, writes and flushes
  virtio net                 net-io on a tap in a network namespace, ARP and pings
  virtio rng                 virtio-rng (getrandom)
  virtio net-ratelimit       a NIC's rate limits (net-io's timers)
  vsock echo                 vsock connections both ways (accept4, recvmsg, shutdown)
  vsock snapshot             vsock (net-io's unix sockets), the API, PUT /snapshot/create
                             (snapshot), a restore with PUT /snapshot/load
  balloon memfd              virtio-balloon through a --config-file and the API, guest memory on a
                             memfd (its pages given back with fallocate)
  pmem modes                 virtio-pmem rw, cow, ro (pmem-io: a rw device's flushes)
  virtio 9p                  a virtio-9p share's thread (p9-io): the ring-3 guest's 9P session
  privileges api             --uid/--gid (every thread changes its ids), API-configured
                             drives, PATCH /drives (block-io opens the new image)
  snapshot uffd              a restore served by tools/wisp-uffd-handler (userfaultfd, UFFDIO_*)
The tests that take --build-dir get a view of the build tree whose wisp-vmm is the traced one.
Not traced: snapshot-diff (under strace the console's writer falls behind, and the output a
stopping wisp-vmm drains for a bounded time is not all there for its check).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)


def build_view(tmp, build, wrapper):
    """A directory shaped like the build tree whose src/vmm/wisp-vmm is the traced one (for the
    tests that take --build-dir); everything else links to the real build."""
    view = os.path.join(tmp, "build")
    os.makedirs(os.path.join(view, "src", "vmm"))
    os.symlink(wrapper, os.path.join(view, "src", "vmm", "wisp-vmm"))
    for d in ("guest", "tools"):
        os.symlink(os.path.join(build, d), os.path.join(view, d))
    os.makedirs(os.path.join(view, "src", "img"))
    os.symlink(os.path.join(build, "src", "img", "wisp-img"),
               os.path.join(view, "src", "img", "wisp-img"))
    return view


def workloads(guests):
    g = lambda name: os.path.join(guests, name + ".elf")  # noqa: E731
    virtio = os.path.join(TESTS, "virtio", "virtio_test.py")
    snapshot = os.path.join(TESTS, "snapshot", "snapshot_test.py")
    return [
        ("virtio blk-raw", [virtio, "--case", "blk-raw", "--guest", g("virtio_blk")]),
        ("virtio blk-raw-direct", [virtio, "--case", "blk-raw-direct", "--guest", g("virtio_blk")]),
        ("virtio blk-qcow2-async-teardown",
         [virtio, "--case", "blk-qcow2-async-teardown", "--guest", g("virtio_blk")]),
        ("virtio blk-discard-qcow2",
         [virtio, "--case", "blk-discard-qcow2", "--guest", g("virtio_blk")]),
        ("virtio blk-qcow2-sync", [virtio, "--case", "blk-qcow2-sync", "--guest", g("virtio_blk")]),
        ("virtio net", [virtio, "--case", "net", "--guest", g("virtio_net")]),
        ("virtio rng", [virtio, "--case", "rng", "--guest", g("virtio_rng")]),
        ("virtio net-ratelimit", [virtio, "--case", "net-ratelimit", "--guest", g("virtio_net")]),
        ("vsock echo", [os.path.join(TESTS, "virtio", "vsock_test.py"), "--case", "echo",
                        "--guest", g("virtio_vsock")]),
        ("vsock snapshot", [os.path.join(TESTS, "virtio", "vsock_test.py"), "--case", "snapshot",
                            "--guest", g("virtio_vsock")]),
        ("balloon memfd", [os.path.join(TESTS, "guest", "balloon_test.py"), "VMM",
                           g("virtio_balloon"), "memfd"]),
        ("pmem modes", [os.path.join(TESTS, "guest", "pmem_test.py"), "VMM", g("virtio_pmem"),
                        "modes"]),
        ("virtio 9p", [os.path.join(TESTS, "virtio", "p9_guest_test.py"),
                       "--guest", g("virtio_9p")]),
        ("privileges api", [os.path.join(HERE, "privileges_test.py"), "--case", "api",
                            "--guest", g("api_guest")]),
        ("snapshot uffd", [snapshot, "--case", "uffd", "--build-dir", "BUILD"]),
    ]


def tracers(trace_dir):
    """pids of the strace processes writing into trace_dir"""
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"strace") and any(trace_dir.encode() in a for a in argv):
                pids.append(int(p))
    return pids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for opt in ("--vmm", "--guests", "--progs", "--lists"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--keep", help="keep the traces in this directory")
    a = ap.parse_args()
    wrapper = os.path.join(HERE, "traced-vmm")
    with tempfile.TemporaryDirectory(prefix="wisp-seccomp-") as tmp:
        trace_dir = a.keep or tmp
        os.makedirs(trace_dir, exist_ok=True)
        env = dict(os.environ, WISP_TRACE_VMM=os.path.abspath(a.vmm), WISP_TRACE_DIR=trace_dir)
        env.pop("WISP_SECCOMP_TEST", None)
        failed = []
        view = build_view(tmp, os.path.dirname(os.path.abspath(a.guests)), wrapper)
        for name, cmd in workloads(os.path.abspath(a.guests)):
            if "BUILD" not in cmd and "VMM" not in cmd:
                cmd = cmd + ["--vmm", wrapper]
            cmd = [sys.executable] + [wrapper if c == "VMM" else view if c == "BUILD" else c
                                      for c in cmd]
            t0 = time.monotonic()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
            print(f"{name}: status {p.returncode} ({time.monotonic() - t0:.1f} s)")
            if p.returncode != 0:
                failed.append(name)
                print(p.stdout[-2000:] + p.stderr[-2000:])
        deadline = time.monotonic() + 30
        while tracers(trace_dir) and time.monotonic() < deadline:
            time.sleep(0.05)  # the last traces are complete once their strace has ended
        if tracers(trace_dir):
            failed.append("strace did not end within 30 s of its wisp-vmm")
        traces = sorted(os.path.join(trace_dir, f) for f in os.listdir(trace_dir)
                        if f.startswith("vmm."))
        print(f"{len(traces)} traced wisp-vmm runs")
        r = subprocess.run([sys.executable, os.path.join(HERE, "seccomp_trace.py"), a.progs] +
                           traces + ["--lists", a.lists])
        if r.returncode != 0:
            failed.append("the lists and the traces disagree (above)")
    for f in failed:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
