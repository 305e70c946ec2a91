#!/usr/bin/env python3
"""Guest RAM backends and policies (docs/memory.md): every backend boots the same guest, the
backend is visible in GET /vm/config, hugetlbfs without reserved pages is a clear error before
the guest runs, and KSM merges the identical pages of 10 idle guests started with --ksm on.

    mem_backends_test.py VMM HELLO_ELF IDLE_ELF CASE

CASE is one of: backends, hugetlbfs, api, ksm, ksm-clones (10 clones restored from one
snapshot with --ksm on merge the pages they wrote alike), thp (--thp on gives guest RAM
transparent huge pages, --thp off none), snapshot (a VM on each shared backend is
snapshotted and restored with its memory intact). The hugetlbfs and ksm cases change
/proc/sys/vm/nr_hugepages and /sys/kernel/mm/ksm/* (root) and put the old values back; without
root they are skipped (exit 77). Exits 0 on success, 1 with a message on failure.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT = 60
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
KSM = "/sys/kernel/mm/ksm/"
HELLO = "hello from the wisp guest kit"


class Failure(Exception):
    pass


def run(vmm, kernel, *flags):
    cmd = [vmm, "--kernel", kernel] + list(flags)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=TIMEOUT)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    print(f"$ {' '.join(cmd)}\n{out}{err}exit status {p.returncode}")
    return p.returncode, out, err


def read(path):
    with open(path) as f:
        return f.read().strip()


def write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def boots(vmm, hello, *flags):
    rc, out, err = run(vmm, hello, *flags)
    if rc != 0 or HELLO not in out:
        raise Failure(f"{' '.join(flags)}: the guest did not run (exit {rc}): {err.strip()}")


def case_backends(vmm, hello, idle):
    with tempfile.TemporaryDirectory() as d:
        ram = os.path.join(d, "ram")
        for flags in (["--mem-backend", "anon"], ["--mem-backend", "memfd"],
                      ["--mem-backend", "file=" + ram],
                      ["--mem-backend", "anon", "--thp", "on", "--ksm", "on", "--prefault", "on"],
                      ["--mem-backend", "memfd", "--thp", "off", "--prefault", "on"]):
            boots(vmm, hello, *flags)
        if os.path.getsize(ram) != 128 << 20:
            raise Failure(f"file backend: {ram} is {os.path.getsize(ram)} bytes, not 128 MiB")
    for flags, want in ((["--mem-backend", "tmpfs"], "is not anon, memfd"),
                        (["--mem-backend", "file="], "is not anon, memfd"),
                        (["--thp", "maybe"], "is not on or off"),
                        (["--mem-backend", "memfd", "--ksm", "on"], "KSM merges private")):
        rc, out, err = run(vmm, hello, *flags)
        if rc == 0 or want not in err or HELLO in out:
            raise Failure(f"{' '.join(flags)}: wanted an error with '{want}', got exit {rc}")


def case_hugetlbfs(vmm, hello, idle):
    old = read(NR_HUGEPAGES)
    try:
        write(NR_HUGEPAGES, 0)
        rc, out, err = run(vmm, hello, "--mem-backend", "hugetlbfs")
        if rc == 0 or "nr_hugepages" not in err or "64 huge pages" not in err or HELLO in out:
            raise Failure(f"hugetlbfs with no huge pages: wanted a clear error, got exit {rc}")
        write(NR_HUGEPAGES, 64)
        if int(read(NR_HUGEPAGES)) < 64:
            print(f"only {read(NR_HUGEPAGES)} huge pages could be reserved: the boot is skipped")
            return
        boots(vmm, hello, "--mem-backend", "hugetlbfs")
        with tempfile.TemporaryDirectory() as mnt:
            subprocess.run(["mount", "-t", "hugetlbfs", "none", mnt], check=True)
            try:
                boots(vmm, hello, "--mem-backend", "hugetlbfs=" + mnt)
                if os.listdir(mnt):
                    raise Failure(f"hugetlbfs={mnt}: left {os.listdir(mnt)} behind")
            finally:
                subprocess.run(["umount", mnt], check=True)
    finally:
        write(NR_HUGEPAGES, old)


def http_get(sock_path, path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(65536)
    s.close()
    return json.loads(body)


def case_api(vmm, hello, idle):
    with tempfile.TemporaryDirectory() as d:
        cfg, sock = os.path.join(d, "vm.json"), os.path.join(d, "api.sock")
        with open(cfg, "w") as f:
            json.dump({"boot-source": {"kernel_image_path": idle},
                       "machine-config": {"vcpu_count": 1, "mem_size_mib": 64,
                                          "mem_backend": "memfd", "thp": "off",
                                          "prefault": True}}, f)
        p = subprocess.Popen([vmm, "--config-file", cfg, "--api-sock", sock],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            line = p.stdout.readline().decode()
            if "idle: ready" not in line:
                raise Failure(f"the idle guest did not start: {line!r}")
            while not os.path.exists(sock):
                time.sleep(0.05)
            mc = http_get(sock, "/vm/config")["machine-config"]
            print("GET /vm/config machine-config:", mc)
            want = {"mem_backend": "memfd", "thp": "off", "ksm": False, "prefault": True,
                    "huge_pages": "None"}
            for k, v in want.items():
                if mc.get(k) != v:
                    raise Failure(f"GET /vm/config: machine-config.{k} is {mc.get(k)!r}, not {v!r}")
            with open(f"/proc/{p.pid}/maps") as f:
                if "memfd:wisp-guest-ram" not in f.read():
                    raise Failure("the VMM maps no memfd:wisp-guest-ram")
        finally:
            p.kill()
            p.wait()


def case_snapshot(vmm, hello, idle):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "snapshot"))
    import snaplib
    for backend in ("memfd", "file=RAM"):
        with tempfile.TemporaryDirectory() as d:
            b = backend.replace("RAM", os.path.join(d, "ram"))
            v = snaplib.Vmm(vmm, d, "src", ["--kernel", idle, "--mem", "64", "--mem-backend", b],
                            stdin=True)
            try:
                v.wait_for(r"^idle: ready$")
                v.send("fill 7 2048\n")
                v.wait_for(r"^idle: filled 2048 pages")
                v.send("sum 2048\n")
                want = v.wait_for(r"^idle: sum 2048 (\d+)\n").group(1)
                v.expect("PATCH", "/vm", {"state": "Paused"})
                snap, mem = os.path.join(d, "t.snap"), os.path.join(d, "t.mem")
                v.expect("PUT", "/snapshot/create", {"snapshot_path": snap, "mem_file_path": mem})
            finally:
                v.end()
            w = snaplib.Vmm(vmm, d, "dst", [], stdin=True)
            try:
                w.expect("PUT", "/snapshot/load", snaplib.load_body(snap, mem))
                w.send("sum 2048\n")
                got = w.wait_for(r"^idle: sum 2048 (\d+)\n").group(1)
                print(f"{b}: sum {want} before the snapshot, {got} after the restore")
                if got != want:
                    raise Failure(f"{b}: the restored guest's pages sum to {got}, not {want}")
            finally:
                w.end()


def anon_huge_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    raise Failure("no AnonHugePages in smaps_rollup")


def case_thp(vmm, hello, idle):
    mode = read("/sys/kernel/mm/transparent_hugepage/enabled")
    if "[never]" in mode:
        print(f"THP is off on this host ({mode}): skipped")
        sys.exit(77)
    for thp in ("on", "off"):
        p = subprocess.Popen([vmm, "--kernel", idle, "--mem", "128", "--thp", thp],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            if "idle: ready" not in p.stdout.readline().decode():
                raise Failure("the idle guest did not start")
            p.stdin.write(b"fill 3 8192\n")  # 32 MiB from 32 MiB up: 2 MiB-aligned
            p.stdin.flush()
            if "filled" not in p.stdout.readline().decode():
                raise Failure("the idle guest did not fill its pages")
            kib = anon_huge_kib(p.pid)
            print(f"--thp {thp}: AnonHugePages {kib} kB after 32 MiB written")
            if thp == "on" and kib < 16 << 10:
                raise Failure(f"--thp on: only {kib} kB of 32 MiB in transparent huge pages")
            if thp == "off" and kib:
                raise Failure(f"--thp off: {kib} kB in transparent huge pages")
        finally:
            p.kill()
            p.wait()


def ksm_counter(name):
    return int(read(KSM + name))


class KsmSettings:
    """ksmd stopped with everything unmerged (run 2: no count left from earlier merges; with 0,
    pages_sharing keeps what it said when ksmd stopped), and its settings put back at the end."""
    NAMES = ("pages_to_scan", "sleep_millisecs", "run")

    def __enter__(self):
        self.old = {n: read(KSM + n) for n in self.NAMES}
        write(KSM + "run", 2)
        return self

    def __exit__(self, *exc):
        write(KSM + "run", 2)
        for n in self.NAMES:
            write(KSM + n, self.old[n])


def wait_merged(pages, what):
    """Starts ksmd with a fast scan and waits until it merged 9 of 10 guests' `pages`
    identical pages (at least 90% of them)."""
    before = ksm_counter("pages_sharing")
    write(KSM + "pages_to_scan", 20000)
    write(KSM + "sleep_millisecs", 10)
    write(KSM + "run", 1)
    want = before + 9 * pages * 9 // 10
    deadline = time.monotonic() + 180  # a bound on the wait, not a timed assertion
    while ksm_counter("pages_sharing") < want and time.monotonic() < deadline:
        time.sleep(0.5)
    after = ksm_counter("pages_sharing")
    print(f"{what}: pages_sharing {before} -> {after} (wanted >= {want}); "
          f"pages_shared {ksm_counter('pages_shared')}")
    if after < want:
        raise Failure(f"KSM merged {after - before} pages of {what}' identical {pages} pages "
                      f"each, wanted >= {want - before}")


def case_ksm(vmm, hello, idle):
    vms = []
    pages = 4096  # 16 MiB of one byte value in each guest
    try:
        with KsmSettings():
            for i in range(10):
                vms.append(subprocess.Popen([vmm, "--kernel", idle, "--mem", "64", "--ksm", "on"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            for p in vms:
                if "idle: ready" not in p.stdout.readline().decode():
                    raise Failure("an idle guest did not start")
                p.stdin.write(f"fill 90 {pages}\n".encode())
                p.stdin.flush()
            for p in vms:
                line = p.stdout.readline().decode()
                if "filled" not in line:
                    raise Failure(f"an idle guest did not fill its pages: {line!r}")
            wait_merged(pages, "10 guests")
    finally:
        for p in vms:
            p.kill()
            p.wait()


def case_ksm_clones(vmm, hello, idle):
    """10 clones restored from one snapshot with --ksm on: their memory is the snapshot file's
    page cache until written; the 16 MiB each then writes with one byte value become private
    copies, identical across the clones, and KSM merges them."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "snapshot"))
    import snaplib
    pages, clones = 4096, []
    with tempfile.TemporaryDirectory() as d:
        snap, mem = os.path.join(d, "t.snap"), os.path.join(d, "t.mem")
        src = snaplib.Vmm(vmm, d, "src", ["--kernel", idle, "--mem", "64"], stdin=True)
        try:
            src.wait_for(r"^idle: ready$")
            src.expect("PATCH", "/vm", {"state": "Paused"})
            src.expect("PUT", "/snapshot/create", {"snapshot_path": snap, "mem_file_path": mem})
        finally:
            src.end()
        try:
            with KsmSettings():
                for i in range(10):
                    v = snaplib.Vmm(vmm, d, f"clone{i}", ["--ksm", "on"], stdin=True)
                    clones.append(v)
                    v.expect("PUT", "/snapshot/load", snaplib.load_body(snap, mem))
                    mc = v.api("GET", "/vm/config")[1]["machine-config"]
                    if mc.get("ksm") is not True:
                        raise Failure(f"clone {i}: machine-config.ksm is {mc.get('ksm')!r}")
                for v in clones:
                    v.send(f"fill 90 {pages}\n")
                for v in clones:
                    v.wait_for(r"^idle: filled \d+ pages with 90$")
                wait_merged(pages, "10 clones")
        finally:
            for v in clones:
                v.end()


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    vmm, hello, idle, case = sys.argv[1:]
    cases = {"backends": case_backends, "hugetlbfs": case_hugetlbfs, "api": case_api,
             "ksm": case_ksm, "ksm-clones": case_ksm_clones, "thp": case_thp,
             "snapshot": case_snapshot}
    if case not in cases:
        print(f"unknown case {case}", file=sys.stderr)
        return 2
    if case in ("hugetlbfs", "ksm", "ksm-clones") and os.geteuid() != 0:
        print("needs root (it changes host memory settings): skipped")
        return 77
    try:
        cases[case](vmm, hello, idle)
    except Exception as e:  # ours, and snaplib's Failure
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
