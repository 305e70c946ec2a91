"""bench/vsock: host<->guest throughput of wisp-vmm's virtio-vsock and the VMM's CPU per MB.

    vsock_bench.py --vmm WISP_VMM --guest VIRTIO_VSOCK_ELF [--mib N] [--runs N] [--json]

The ring-3 guest (guest/virtio_vsock.c) connects to host port 5000 (a Python echo server at
<uds>_5000) and sends N MiB that come back echoed (so 2N MiB cross the device), then echoes a
host-initiated connection (CONNECT 6000) of N MiB. The guest's driver polls, sends one packet at
a time (at most 4 KiB) and gives 16 KiB of credit: the figures are those of that driver on this
machine's PVM (each notification is an exit), not of Linux's. Time and CPU are taken host-side:
wall time between the first and the last byte at the host socket, and wisp-vmm's user+system
CPU time over the same span, summed over its threads except the vCPUs (the guest polls, so a
vCPU thread is busy all the time; the device's I/O thread "vsock-vsock0" does the work). No QEMU column: QEMU's vsock is vhost-vsock,
which needs /dev/vhost-vsock, absent here (docs/environment.md).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    """CPU seconds of wisp-vmm's threads but its vCPUs (whose time is the polling guest's)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                comm, rest = f.read().split("(", 1)[1].rsplit(")", 1)
        except OSError:
            continue
        if not comm.startswith("vcpu"):
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def wait_line(path, text, timeout, p):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(path, errors="replace") as f:
            if text in f.read():
                return
        if p.poll() is not None:
            break
        time.sleep(0.005)
    with open(path, errors="replace") as f:
        out = f.read()
    sys.exit(f"vsock_bench: '{text}' did not appear (status {p.poll()}); console:\n{out}")


def one_run(args, tmp, n):
    uds = os.path.join(tmp, f"v{n}.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(uds + "_5000")
    srv.listen(1)
    total = args.mib << 20
    console = os.path.join(tmp, f"c{n}.txt")
    p = subprocess.Popen([args.vmm, "--kernel", args.guest, "--serial", "file:" + console,
                          "--vsock", f"cid=3,uds={uds}", "--cmdline",
                          f"vsock.bytes={total} vsock.listen=6000"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    c, _ = srv.accept()
    first = c.recv(65536)
    t0, cpu0 = time.monotonic(), cpu_s(p.pid)
    c.sendall(first)
    got = len(first)
    while got < total:
        b = c.recv(65536)
        if not b:
            break
        got += len(b)
        c.sendall(b)
    c.close()
    t1, cpu1 = time.monotonic(), cpu_s(p.pid)
    wait_line(console, "listening on 6000", 30, p)
    h = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    h.connect(uds)
    h.sendall(b"CONNECT 6000\n")
    while not h.recv(64).endswith(b"\n"):
        pass
    data = os.urandom(total)
    t2, cpu2 = time.monotonic(), cpu_s(p.pid)
    w = threading.Thread(target=h.sendall, args=(data,))
    w.start()
    back = 0
    while back < total:
        b = h.recv(65536)
        if not b:
            break
        back += len(b)
    t3, cpu3 = time.monotonic(), cpu_s(p.pid)
    w.join()
    h.close()
    wait_line(console, "vsock: ok", 30, p)
    p.wait(10)
    srv.close()
    mb = 2 * total / 1e6  # each direction counts: sent and echoed
    return {"guest_mb_s": mb / (t1 - t0), "guest_cpu_ms_per_mb": 1000 * (cpu1 - cpu0) / mb,
            "host_mb_s": mb / (t3 - t2), "host_cpu_ms_per_mb": 1000 * (cpu3 - cpu2) / mb}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--mib", type=int, default=16, help="MiB each way per connection")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wisp-bench-vsock-") as tmp:
        runs = [one_run(args, tmp, i) for i in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    if args.json:
        print(json.dumps({"runs": runs, "median": med}))
        return 0
    print(f"virtio-vsock, {args.mib} MiB each way, median of {args.runs} runs "
          "(MB counted in both directions)")
    print(f"{'connection':<28}{'MB/s':>10}{'VMM CPU ms/MB':>16}")
    print(f"{'guest-initiated (echo)':<28}{med['guest_mb_s']:>10.1f}"
          f"{med['guest_cpu_ms_per_mb']:>16.2f}")
    print(f"{'host-initiated (CONNECT)':<28}{med['host_mb_s']:>10.1f}"
          f"{med['host_cpu_ms_per_mb']:>16.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
