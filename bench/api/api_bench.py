#!/usr/bin/env python3
"""What wisp-vmm's API costs and how fast it answers (docs/api.md), on this machine:

  launch        spawn -> exit of the tiny guest (bench/launch's tiny-exit), three ways, run
                alternately: --kernel (no API), --kernel with --api-sock (the server costs
                what), and through the API (spawn, wait for the socket, PUT /boot-source,
                PUT /actions InstanceStart: Firecracker's way)
  memory        VmRSS of wisp-vmm with an idling 128 MiB guest (tiny-idle), without and with
                --api-sock
  requests      GET / on one keep-alive connection, and on a new connection each
  pause         PATCH /vm Paused (answered once every vCPU is parked) and Resumed, on a guest
                that counts in ring 3 (guest/api_guest.elf), 1 and 2 vCPUs

Medians (and the 90th percentile where it says); no figure is checked: this prints. Only
Python's standard library is used.

  api_bench.py --vmm WISP_VMM --exit-guest tiny-exit.elf --idle-guest tiny-idle.elf
               --count-guest api_guest.elf [--runs 30]
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


class Conn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def call(conn, method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data!r}")
    return data


def wait_socket(path, p):
    while not os.path.exists(path):
        if p.poll() is not None:
            raise SystemExit("wisp-vmm ended before its socket existed")
        time.sleep(0.0002)


def launch_once(args, mode, tmp):
    sock = os.path.join(tmp, "l.sock")
    cmd = [args.vmm, "--serial", "none", "--mem", "128"]
    if mode != "flags":
        cmd += ["--api-sock", sock]
    if mode != "api":
        cmd += ["--kernel", args.exit_guest]
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    if mode == "api":
        wait_socket(sock, p)
        c = Conn(sock)
        call(c, "PUT", "/boot-source", {"kernel_image_path": args.exit_guest})
        call(c, "PUT", "/actions", {"action_type": "InstanceStart"})
        c.close()
    p.wait()
    return (time.monotonic() - t) * 1e3


def launch(args, tmp):
    modes = ["flags", "flags+api-sock", "api"]
    times = {m: [] for m in modes}
    for i in range(args.runs):
        for m in modes[i % 3:] + modes[:i % 3]:
            times[m].append(launch_once(args, m, tmp))
    base = statistics.median(times["flags"])
    print("launch (spawn -> exit, tiny-exit guest, %d runs each)" % args.runs)
    for m in modes:
        med = statistics.median(times[m])
        print(f"  {m:16s} median {med:6.2f} ms   ratio to --kernel {med / base:4.2f}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory(args, tmp):
    sock = os.path.join(tmp, "m.sock")
    out = {}
    for mode in ("without", "with"):
        rss = []
        for _ in range(5):
            cmd = [args.vmm, "--serial", "none", "--mem", "128", "--kernel", args.idle_guest]
            if mode == "with":
                cmd += ["--api-sock", sock]
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            if mode == "with":
                c = Conn(sock)
                call(c, "GET", "/")  # the server has answered once
                c.close()
            rss.append(rss_kib(p.pid))
            p.terminate()
            p.wait()
        out[mode] = statistics.median(rss)
    print(f"memory (VmRSS, idle 128 MiB guest, median of 5): without the API {out['without']} "
          f"KiB, with --api-sock {out['with']} KiB (+{out['with'] - out['without']} KiB)")


def requests(args, tmp):
    sock = os.path.join(tmp, "r.sock")
    p = subprocess.Popen([args.vmm, "--api-sock", sock], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_socket(sock, p)
    keep, fresh = [], []
    c = Conn(sock)
    for _ in range(2000):
        t = time.monotonic()
        call(c, "GET", "/")
        keep.append((time.monotonic() - t) * 1e6)
    c.close()
    for _ in range(500):
        t = time.monotonic()
        c = Conn(sock)
        call(c, "GET", "/")
        c.close()
        fresh.append((time.monotonic() - t) * 1e6)
    p.terminate()
    p.wait()
    for name, v in (("keep-alive", keep), ("new connection", fresh)):
        v.sort()
        print(f"GET / ({name}, {len(v)} requests): median {statistics.median(v):6.1f} us, "
              f"90th percentile {v[int(len(v) * 0.9)]:6.1f} us")


def pause(args, tmp, cpus):
    sock = os.path.join(tmp, f"p{cpus}.sock")
    p = subprocess.Popen([args.vmm, "--api-sock", sock, "--serial", "none"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_socket(sock, p)
    c = Conn(sock)
    call(c, "PUT", "/machine-config", {"vcpu_count": cpus, "mem_size_mib": 64})
    call(c, "PUT", "/boot-source", {"kernel_image_path": args.count_guest,
                                    "boot_args": "api.mode=count api.us=1000"})
    call(c, "PUT", "/actions", {"action_type": "InstanceStart"})
    time.sleep(0.2)
    paused, resumed = [], []
    for _ in range(100):
        t = time.monotonic()
        call(c, "PATCH", "/vm", {"state": "Paused"})
        paused.append((time.monotonic() - t) * 1e6)
        t = time.monotonic()
        call(c, "PATCH", "/vm", {"state": "Resumed"})
        resumed.append((time.monotonic() - t) * 1e6)
        time.sleep(0.005)
    c.close()
    p.terminate()
    p.wait()
    print(f"PATCH /vm, {cpus} vCPU(s), 100 cycles: Paused median "
          f"{statistics.median(paused):7.1f} us, Resumed median {statistics.median(resumed):6.1f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--exit-guest", required=True)
    ap.add_argument("--idle-guest", required=True)
    ap.add_argument("--count-guest", required=True)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    for k in ("vmm", "exit_guest", "idle_guest", "count_guest"):
        setattr(args, k, os.path.abspath(getattr(args, k)))
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        launch(args, tmp)
        memory(args, tmp)
        requests(args, tmp)
        for cpus in (1, 2):
            pause(args, tmp, cpus)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
