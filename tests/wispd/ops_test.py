#!/usr/bin/env python3
"""wispd's operations with real wisp-vmm processes (docs/wispd.md, docs/wisp.md): console logs
and their bound, a console nobody reads, console attach, logs across a wispd restart, the event
stream, stats, snapshot/restore/clone, import-libvirt, wisp run.

  ops_test.py --wispd W --wisp C --vmm V --guest G --case CASE
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import wispd_test as wt
from wispd_test import alive, wait_for

LOG_MAX = 16384  # the test wispd's --console-log-max


class OpsDaemon(wt.Daemon):
    def start(self, nofile=None):
        log = open(os.path.join(self.tmp, "wispd.log"), "a")
        self.proc = subprocess.Popen([wt.A.wispd, "--socket", self.sock, "--state-dir", self.state,
                                      "--vmm", wt.A.vmm, "--console-log-max", str(LOG_MAX)],
                                     stdout=log, stderr=log)
        wait_for("wispd's socket", self._answers, 10)

    def _answers(self):
        try:
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(self.sock)
            return True
        except OSError:
            if self.proc.poll() is not None:
                raise AssertionError("wispd ended: " + open(os.path.join(self.tmp, "wispd.log")).read())
            return False

    def log_path(self, name):
        sock = self.vms()[name]["api_sock"]  # run/ID.sock, or jail/wisp-vmm/vm-ID/root/api.sock
        vid = sock.split("/")[-3][3:] if "/jail/" in sock else os.path.basename(sock)[:-5]
        return os.path.join(self.state, "logs", vid + ".log")


def attach(d, name, replay=None):
    """A raw console connection (what `wisp console` does): the socket, after the 101."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.sock)
    q = f"?replay={replay}" if replay is not None else ""
    s.sendall(f"POST /v1/vms/{name}/console{q} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
              "Upgrade: wisp-console\r\nContent-Length: 0\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        assert b, head
        head += b
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def recv_until(s, needle, timeout=10):
    s.settimeout(0.2)
    got = b""
    end = time.monotonic() + timeout
    while needle not in got and time.monotonic() < end:
        try:
            b = s.recv(65536)
            if not b:
                break
            got += b
        except socket.timeout:
            pass
    assert needle in got, (needle, got[-300:])
    return got


def last_line_number(text):
    nums = [int(l.split()[2]) for l in text.splitlines() if l.startswith("idle: line ")
            and len(l.split()) > 2 and l.split()[2].isdigit()]
    return nums[-1] if nums else 0


def case_console(d):
    d.start()
    # 1. a bounded log: a guest printing ~40 KiB (more than 1.5 x the 16 KiB cap)
    d.define("big", cmdline="print=400", stop_timeout_s=0, check=0)
    d.wisp("start", "big", check=0)
    wait_for("big's output", lambda: "idle: ready" in d.wisp("logs", "big", check=0).stdout)
    out = d.wisp("logs", "big", check=0).stdout
    assert LOG_MAX <= len(out) <= LOG_MAX * 3 // 2 + 4096, len(out)
    assert "idle: line 1 of 400" not in out and "idle: line 400 of 400" in out, out[:200]
    st = os.stat(d.log_path("big"))
    assert st.st_size > 30000 and st.st_blocks * 512 <= LOG_MAX * 3 // 2 + 8192, \
        (st.st_size, st.st_blocks)
    tail = d.wisp("logs", "--tail", "2", "big", check=0).stdout
    assert tail == "idle: printed 400\nidle: ready\n", repr(tail)
    assert d.wisp("logs", "--tail", "x", "big").returncode == 2
    # 2. console attach: scrollback first, input reaches the guest, two readers at once
    c1 = attach(d, "big", replay=200)
    recv_until(c1, b"idle: ready")
    c2 = attach(d, "big")
    c1.sendall(b"echo-from-c1\r")
    recv_until(c1, b"unknown command 'echo-from-c1'")
    recv_until(c2, b"unknown command 'echo-from-c1'")
    c2.close()
    # the CLI: input through a pipe, Ctrl-] detaches
    p = subprocess.Popen([wt.A.wisp, "--socket", d.sock, "console", "--replay", "0", "big"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    p.stdin.write(b"via-cli\r")
    p.stdin.flush()
    recv_until(c1, b"unknown command 'via-cli'")
    time.sleep(0.3)
    p.stdin.write(b"\x1d")
    p.stdin.flush()
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0 and b"unknown command 'via-cli'" in out and b"detached" in err, \
        (p.returncode, out, err)
    assert d.wisp("console", "nosuch").returncode == 4
    # logs -f: follows until the VM ends
    f = subprocess.Popen([wt.A.wisp, "--socket", d.sock, "logs", "-f", "--tail", "0", "big"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    c1.sendall(b"followed\r")
    recv_until(c1, b"unknown command 'followed'")
    c1.sendall(b"exit 0\r")
    out, err = f.communicate(timeout=10)
    assert f.returncode == 0 and b"unknown command 'followed'" in out, (out, err)
    c1.settimeout(5)
    while c1.recv(4096):  # the console ends with the VM
        pass
    c1.close()
    wait_for("big stopped", lambda: d.vms()["big"]["state"] == "stopped")
    # 3. a flood nobody reads, and a console that never reads: the VM goes on
    d.define("flood", cmdline="flood=1", stop_timeout_s=0, check=0)
    d.wisp("start", "flood", check=0)
    stuck = attach(d, "flood", replay=0)  # never read: its socket fills up
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_for("flood's output", lambda: last_line_number(d.wisp("logs", "flood").stdout) > 0)
    n1 = last_line_number(d.wisp("logs", "flood").stdout)
    time.sleep(1.5)
    out = d.wisp("logs", "flood", check=0).stdout
    n2 = last_line_number(out)
    assert n2 > n1 + 50, (n1, n2)
    assert len(out) <= LOG_MAX * 3 // 2 + 4096, len(out)
    t = time.monotonic()
    d.wisp("stop", "flood", check=0)
    assert time.monotonic() - t < 5
    stuck.close()
    # 4. logs across a wispd restart (kill -9), and a console after it
    d.wisp("start", "big", check=0)
    wait_for("big's output", lambda: "idle: ready" in d.wisp("logs", "big", check=0).stdout)
    before = d.wisp("logs", "big", check=0).stdout
    d.kill9()
    d.start()
    assert d.wisp("logs", "big", check=0).stdout == before
    c = attach(d, "big", replay=0)
    c.sendall(b"after-restart\r")
    recv_until(c, b"unknown command 'after-restart'")
    c.close()
    assert "after-restart" in d.wisp("logs", "big", check=0).stdout
    d.wisp("rm", "-f", "big", check=0)
    d.wisp("rm", "flood", check=0)
    assert not [f for f in os.listdir(os.path.join(d.state, "run")) if f.endswith(".in")]
    d.stop()


def case_events(d):
    d.start()
    s = subprocess.Popen([wt.A.wisp, "--socket", d.sock, "events", "-f", "--json"],
                         stdout=subprocess.PIPE)
    time.sleep(0.3)
    d.define("e", policy="on-failure", stop_timeout_s=0, check=0)
    d.wisp("start", "e", check=0)
    d.wisp("stop", "e", check=0)
    d.wisp("start", "e", check=0)
    pid = d.vms()["e"]["pid"]
    os.kill(pid, signal.SIGKILL)  # a crash, then the restart policy
    wait_for("e restarted", lambda: (lambda v: v["state"] == "running" and v["pid"] != pid)(
        d.vms()["e"]))  # one look: two could see the old run's state and the new run's pid
    d.wisp("rm", "-f", "e", check=0)
    # rm -f of a running VM: killed and removed, one "remove" (no "stop")
    want = ["define", "start", "stop", "start", "crash", "restart", "start", "remove"]
    got, buf = [], b""
    end = time.monotonic() + 10
    while len(got) < len(want) and time.monotonic() < end:
        if not select.select([s.stdout], [], [], 0.2)[0]:
            continue
        buf += os.read(s.stdout.fileno(), 65536)
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            e = json.loads(line)
            assert set(e) == {"id", "time_ms", "vm", "kind", "event"}, e
            got.append(e)
    s.kill()
    s.wait()
    kinds = [e["kind"] for e in got]
    assert kinds == want, kinds
    ids = [e["id"] for e in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    # the stream from the API itself: a plain HTTP client, after=N replays from N
    c = socket.socket(socket.AF_UNIX)
    c.connect(d.sock)
    c.sendall(f"GET /v1/events?follow=1&after={ids[0] - 1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    recv_until(c, b'"kind":"remove"')
    c.close()
    assert d.wisp("events", "-x").returncode == 2
    d.stop()


def case_stats(d):
    d.start()
    d.define("s", cmdline="flood=1", stop_timeout_s=0, check=0)
    assert d.wisp("stats", "s").returncode == 5  # stopped
    assert d.wisp("stats", "nosuch").returncode == 4
    d.wisp("start", "s", check=0)
    time.sleep(0.5)
    a = json.loads(d.wisp("stats", "--json", "s", check=0).stdout)
    time.sleep(0.5)
    b = json.loads(d.wisp("stats", "s", "--json", check=0).stdout)
    assert a["name"] == "s" and a["state"] == "running" and a["pid"] == d.vms()["s"]["pid"], a
    # a flooding guest burns CPU: its usage grows between the two
    assert 0 < a["cpu"]["usage_ns"] < b["cpu"]["usage_ns"], (a["cpu"], b["cpu"])
    assert b["time_ms"] > a["time_ms"]
    assert 256 * 1024 < b["memory"]["bytes"] < 256 << 20, b["memory"]
    # a jailed VMM has no /proc to read its own RSS from (0): its cgroup's memory above holds it
    jailed = d.vms()["s"]["placement"]["jailed"]
    assert b["vmm"]["memory"]["guest_mib"] == 16 and (b["vmm"]["memory"]["rss_kib"] > 0) != jailed, b
    for k in ("read_bytes", "write_bytes", "read_count", "write_count", "flush_count"):
        assert b["block"][k] == 0, b["block"]  # no drive
    for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
        assert b["net"][k] == 0, b["net"]
    text = d.wisp("stats", "s", check=0).stdout
    assert text.startswith("NAME") and "\ns " in text and "MiB" in text, text
    d.wisp("rm", "-f", "s", check=0)
    d.stop()


def console_says(d, name, command, needle):
    c = attach(d, name, replay=0)
    c.sendall(command.encode() + b"\r")
    got = recv_until(c, needle.encode())
    c.close()
    return got


def case_clone(d):
    d.start()
    d.define("a", stop_timeout_s=0, memory_mib=40, check=0)  # the guest's fill area is at 32 MiB
    d.wisp("start", "a", check=0)
    wait_for("a ready", lambda: "idle: ready" in d.wisp("logs", "a", check=0).stdout)
    console_says(d, "a", "fill 7 3", "idle: filled 3 pages with 7")
    snap = os.path.join(d.tmp, "snap")
    os.mkdir(snap)
    r = json.loads(d.wisp("snapshot", "--json", "a", snap, check=0).stdout)
    assert r["state"] == snap + "/state" and os.path.getsize(snap + "/memory") == 40 << 20, r
    assert json.load(open(snap + "/vm.json"))["name"] == "a"
    assert d.vms()["a"]["state"] == "running"  # resumed after the snapshot
    console_says(d, "a", "fill 9 3", "idle: filled 3 pages with 9")  # a goes on by itself
    # restore into a new VM: the snapshot's memory, not a's of now
    d.wisp("restore", "b", snap, check=0)
    assert d.vms()["b"]["state"] == "running"
    console_says(d, "b", "sum 3", f"idle: sum 3 {7 * 3 * 4096}")
    # a file snapshot (FILE, FILE.mem, FILE.json) and a restore into a stopped VM
    d.wisp("snapshot", "b", os.path.join(d.tmp, "b.snap"), check=0)
    d.wisp("stop", "b", check=0)
    d.wisp("restore", "b", os.path.join(d.tmp, "b.snap"), check=0)
    console_says(d, "b", "sum 3", f"idle: sum 3 {7 * 3 * 4096}")
    # clone 5: each running, each its own VM
    out = d.wisp("clone", "a", "--count", "5", "--prefix", "c", "--json", check=0).stdout
    summary = json.loads(out)
    assert summary["running"] == 5 and summary["failed"] == 0, summary
    assert [c["name"] for c in summary["clones"]] == [f"c-{i}" for i in range(1, 6)] or \
        sorted(c["name"] for c in summary["clones"]) == [f"c-{i}" for i in range(1, 6)], summary
    vms = d.vms()
    clones = [vms[f"c-{i}"] for i in range(1, 6)]
    assert all(c["state"] == "running" and alive(c["pid"]) for c in clones), clones
    assert len({c["pid"] for c in clones}) == 5 and len({c["api_sock"] for c in clones}) == 5
    for i, c in enumerate(clones, 1):  # a's memory at the snapshot, then each its own
        console_says(d, c["name"], "sum 3", f"idle: sum 3 {9 * 3 * 4096}")
        console_says(d, c["name"], f"fill {i} 3", f"idle: filled 3 pages with {i}")
    for i, c in enumerate(clones, 1):
        console_says(d, c["name"], "sum 3", f"idle: sum 3 {i * 3 * 4096}")
    console_says(d, "a", "sum 3", f"idle: sum 3 {9 * 3 * 4096}")
    # a vsock device: each clone its own socket and cid (wisp-vmm's device has it, so the guest
    # reads it at the TRANSPORT_RESET of its restore)
    d.define("v", stop_timeout_s=0, vsock={"guest_cid": 7, "uds_path": "/v.sock"}, check=0)
    d.define("vn", stop_timeout_s=0, jail=False,
             vsock={"guest_cid": 9, "uds_path": os.path.join(d.tmp, "vn.sock")}, check=0)
    d.wisp("start", "vn", check=0)
    d.wisp("clone", "vn", "--count", "1", check=0)  # unjailed: a socket path of its own
    vs = d.vms()["vn-1"]["definition"]["vsock"]
    assert vs["guest_cid"] == 10 and vs["uds_path"] == os.path.join(d.state, "run", "vn-1.vsock"), vs
    assert os.path.exists(vs["uds_path"])
    d.wisp("start", "v", check=0)
    d.wisp("clone", "v", "--count", "2", check=0)
    vms = d.vms()
    for i in (1, 2):
        vs = vms[f"v-{i}"]["definition"]["vsock"]
        assert vs["guest_cid"] == 7 + i and vs["uds_path"] == "/v.sock", vs  # the jail's path
        conf = api_get(vms[f"v-{i}"]["api_sock"], "/vm/config")
        assert conf["vsock"]["guest_cid"] == 7 + i, conf["vsock"]
    # ksm and an ro pmem image: the boot's and the clones' wisp-vmm have both (the clones' by
    # --ksm on, as a restore sends no machine-config; the pmem device from the snapshot)
    pm = os.path.join(d.tmp, "shared.img")
    open(pm, "wb").truncate(2 << 20)
    d.define("k", stop_timeout_s=0, ksm=True, pmem=[{"id": "pm0", "path": pm, "mode": "ro"}],
             check=0)
    d.wisp("start", "k", check=0)
    d.wisp("clone", "k", "--count", "1", check=0)
    for n in ("k", "k-1"):
        conf = api_get(d.vms()[n]["api_sock"], "/vm/config")
        assert conf["machine-config"]["ksm"] is True, (n, conf["machine-config"])
        assert [(p["id"], p["mode"]) for p in conf["pmem"]] == [("pm0", "ro")], (n, conf["pmem"])
    for bad, words in (([{"id": "p", "path": "rel"}], "not absolute"),
                       ([{"id": "p", "path": pm, "mode": "wo"}], "not ro, cow or rw"),
                       ([{"id": "p"}], "path")):
        r = d.define("kb", pmem=bad)
        assert r.returncode != 0 and words in r.stderr, (bad, r.stderr)
    # refusals
    assert d.wisp("clone", "a", "--count", "2", "--prefix", "c").returncode == 5  # c-1 exists
    assert d.wisp("clone", "a", "--count", "0").returncode == 2
    assert d.wisp("clone", "a").returncode == 2
    assert d.wisp("clone", "nosuch", "--count", "1").returncode == 4
    d.wisp("stop", "b", check=0)
    assert d.wisp("clone", "b", "--count", "1").returncode == 5  # stopped
    assert d.wisp("snapshot", "b", snap).returncode == 5
    r = d.wisp("restore", "z", os.path.join(d.tmp, "nosnap"))
    assert r.returncode == 1 and "nosnap" in r.stderr, r.stderr
    kinds = [json.loads(l)["kind"] for l in d.wisp("events", "--json", check=0).stdout.splitlines()]
    assert "snapshot" in kinds
    for n in list(d.vms()):
        d.wisp("rm", "-f", n, check=0)
    d.stop()


def api_get(sock, path):
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock)
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    got = b""
    while b := c.recv(65536):
        got += b
    c.close()
    return json.loads(got.split(b"\r\n\r\n", 1)[1])


def case_clone_own(d):
    """What each clone gets of its own (docs/wispd.md, "Snapshots and clones"): a new MAC per
    NIC (its definition's, and its device's through the restore's network override), and for a
    writable drive a qcow2 overlay on a copy of the source's image as the snapshot saw it: the
    kit's snapshot_blk guest, cloned in the middle of its writes, finishes them in each clone
    and verifies every block (the early ones read through the overlay's backing file), while
    the source writes on in its own image. Jailed (the default) and unjailed."""
    d.start()
    # MACs: an unjailed VM (wisp-vmm makes the clones' taps itself) with two NICs
    d.define("m", stop_timeout_s=0, jail=False, check=0,
             nics=[{"id": "net0", "tap": "wdfm0"}, {"id": "net1", "tap": "wdfm1"}])
    d.wisp("start", "m", check=0)
    src = [n["mac"] for n in d.vms()["m"]["definition"]["nics"]]
    d.wisp("clone", "m", "--count", "3", check=0)
    vms = d.vms()
    seen = set(src)
    for i in (1, 2, 3):
        v = vms[f"m-{i}"]
        macs = [n["mac"] for n in v["definition"]["nics"]]
        assert len(macs) == 2 and not seen & set(macs), (macs, seen)
        seen |= set(macs)
        conf = api_get(v["api_sock"], "/vm/config")  # the restored device offers the new MAC
        got = {n["iface_id"]: n["guest_mac"] for n in conf["network-interfaces"]}
        assert got == {"net0": macs[0], "net1": macs[1]}, (got, macs)
    for n in list(d.vms()):
        d.wisp("rm", "-f", n, check=0)
    blk = os.path.join(os.path.dirname(wt.A.guest), "snapshot_blk.elf")
    for jail in (True, False):
        name = "bj" if jail else "bn"
        img = os.path.join(d.tmp, name + ".img")
        open(img, "wb").truncate(2 << 20)  # the guest's 400 blocks of 4 KiB, and room
        os.chown(img, 10100, 10100)  # a jailed VMM opens its drives as the jail's uid
        d.define(name, stop_timeout_s=0, jail=jail, kernel=blk, memory_mib=32,
                 cmdline="blk.delay_us=1500 blk.blocks=400", drives=[{"id": "rootfs", "path": img}], check=0)
        d.wisp("start", name, check=0)
        wait_for(name + " writing",
                 lambda: "blk wrote 100" in d.wisp("logs", name, check=0).stdout, 20)
        out = d.wisp("clone", name, "--count", "2", "--json", check=0).stdout
        summary = json.loads(out)
        assert summary["running"] == 2, summary
        vms = d.vms()
        for i in (1, 2):
            dr = vms[f"{name}-{i}"]["definition"]["drives"][0]
            assert dr["path"].endswith(f"/{name}-{i}.rootfs.qcow2") and dr["format"] == "qcow2"
            head = open(dr["path"], "rb").read(4096)
            assert head[:4] == b"QFI\xfb" and b"backing-rootfs" in head, head[:64]
            assert dr["backing"] == os.path.join(os.path.dirname(dr["path"]), "backing-rootfs")
        for v in [name, f"{name}-1", f"{name}-2"]:  # each finishes and verifies all its blocks
            wait_for(v + " verified", lambda: "blk verified 400"
                     in d.wisp("logs", v, check=0).stdout, 60)
            wait_for(v + " ended", lambda: d.vms()[v]["state"] == "stopped", 10)
            assert d.vms()[v]["last_exit"] == "exited with status 0", d.vms()[v]
        # the clones wrote into their overlays, not into the source's image or the copy
        for i in (1, 2):
            assert os.path.getsize(vms[f"{name}-{i}"]["definition"]["drives"][0]["path"]) > 256 << 10
        d.wisp("rm", f"{name}-1", check=0)  # a removed clone's overlay goes with it
        assert not os.path.exists(vms[f"{name}-1"]["definition"]["drives"][0]["path"])
    # a qcow2 source with a backing file of its own is refused, naming it
    base = os.path.join(d.tmp, "base.img")
    open(base, "wb").truncate(1 << 20)
    top = os.path.join(d.tmp, "top.qcow2")
    img_tool = os.path.join(os.path.dirname(wt.A.wispd), "..", "img", "wisp-img")
    subprocess.run([img_tool, "create", "-f", "qcow2", "-b", base, "-F", "raw", top], check=True,
                   capture_output=True)
    os.chown(top, 10100, 10100)
    os.chown(base, 10100, 10100)
    d.define("q", stop_timeout_s=0, jail=False, drives=[{"id": "rootfs", "path": top}], check=0)
    d.wisp("start", "q", check=0)
    r = d.wisp("clone", "q", "--count", "1")
    assert r.returncode == 1 and "backing file of its own" in r.stderr, r.stderr
    for n in list(d.vms()):
        d.wisp("rm", "-f", n, check=0)
    d.stop()


LIBVIRT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libvirt")
BAD_XML = {  # file -> what the refusal must name
    "graphics.xml": "<devices><graphics>", "disk-block.xml": "<disk type='block'>",
    "loader.xml": "<os><loader>", "truncated.xml": "not well-formed XML",
    "no-name.xml": "<name>: missing", "unit.xml": "unit 'parsecs'", "xen.xml": "type='xen'",
    "no-kernel.xml": "no <kernel>", "shares.xml": "<cputune><shares>",
    "entities.xml": "entity",
}


def case_libvirt(d):
    r = d.wisp("import-libvirt", "--print", os.path.join(LIBVIRT, "domain.xml"), check=0)
    v = json.loads(r.stdout)
    assert v == {
        "name": "vm-0042", "memory_mib": 64, "vcpus": 2,
        "kernel": "/var/lib/images/vmlinux", "initrd": "/var/lib/images/initrd.img",
        "cmdline": "console=ttyS0 root=/dev/vda rw panic=1", "console": "serial",
        "restart_policy": "on-failure",
        "drives": [{"id": "vda", "path": "/var/lib/images/vm-0042.qcow2", "format": "qcow2",
                    "root": True},
                   {"id": "vdb", "path": "/var/lib/images/data.raw", "format": "raw",
                    "root": False, "read_only": True}],
        "nics": [{"id": "net0", "tap": "tap42", "mac": "52:54:00:12:34:56"}],
        "placement": {"vcpu_cpus": ["0", "1"], "vmm_cpus": "0-1"}}, v
    assert "not attached to bridge 'br0'" in r.stderr, r.stderr
    for f, why in BAD_XML.items():
        r = d.wisp("import-libvirt", "--print", os.path.join(LIBVIRT, "bad", f))
        assert r.returncode == 1 and why in r.stderr and not r.stdout, (f, r.returncode, r.stderr)
    assert d.wisp("import-libvirt").returncode == 2
    assert d.wisp("import-libvirt", "/nonexistent.xml").returncode == 2
    # into wispd: a domain of the test guest, defined, started, its console read
    xml = os.path.join(d.tmp, "idle.xml")
    open(xml, "w").write(f"""<domain type='kvm'><name>lv</name><memory unit='KiB'>16384</memory>
      <vcpu>1</vcpu><os><type>hvm</type><kernel>{wt.A.guest}</kernel><cmdline>print=2</cmdline></os>
      <devices><serial type='pty'><target port='0'/></serial></devices></domain>""")
    d.start()
    d.wisp("import-libvirt", xml, check=0)
    vm = d.vms()["lv"]
    assert vm["definition"]["memory_mib"] == 16 and vm["definition"]["console"] == "serial", vm
    d.wisp("start", "lv", check=0)
    wait_for("lv's output", lambda: "idle: ready" in d.wisp("logs", "lv", check=0).stdout)
    assert "idle: line 2 of 2" in d.wisp("logs", "lv").stdout
    assert d.wisp("import-libvirt", xml).returncode == 5  # the name is taken
    d.wisp("rm", "-f", "lv", check=0)
    d.stop()


def case_run(d):
    def run(*args, stdin=b""):
        return subprocess.run([wt.A.wisp] + list(args), input=stdin, capture_output=True,
                              timeout=60)
    guest = ["--kernel", wt.A.guest, "--mem", "16", "--cmdline", "print=1"]
    # without a daemon: wisp-vmm in the foreground, the guest's status is wisp's
    r = run("--socket", os.path.join(d.tmp, "none.sock"), "run", *guest, stdin=b"exit 4\r")
    assert r.returncode == 4 and b"idle: ready" in r.stdout and b"foreground" in r.stderr, r
    # with one: create, start, attach; --rm removes it at its end
    d.start()
    r = run("--socket", d.sock, "run", "--rm", "r1", *guest, stdin=b"exit 3\r")
    assert r.returncode == 3 and b"idle: line 1 of 1" in r.stdout, r
    assert b"exited with status 3" in r.stderr, r.stderr
    assert "r1" not in d.vms()
    # without --rm it stays, stopped; a name taken is exit 5; Ctrl-] leaves it running
    r = run("--socket", d.sock, "run", "r2", *guest, stdin=b"exit 0\r")
    assert r.returncode == 0 and d.vms()["r2"]["state"] == "stopped", r
    assert run("--socket", d.sock, "run", "r2", *guest).returncode == 5
    p = subprocess.Popen([wt.A.wisp, "--socket", d.sock, "run", "r3"] + guest,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for("r3 running", lambda: d.vms().get("r3", {}).get("state") == "running")
    wait_for("r3's output", lambda: "idle: ready" in d.wisp("logs", "r3").stdout)
    p.stdin.write(b"\x1d")
    p.stdin.flush()
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0 and b"goes on" in err and d.vms()["r3"]["state"] == "running", err
    assert run("--socket", d.sock, "run", "r4", "--mem", "16").returncode == 2  # no --kernel
    # hvc0: a virtio console's output is the VM's console too
    vc = os.path.join(os.path.dirname(wt.A.guest), "virtio_console.elf")
    r = run("--socket", d.sock, "run", "--rm", "vc", "--kernel", vc, "--mem", "16", "--console",
            "virtio", "--cmdline", "console.case=output console.bytes=100")
    assert r.returncode == 0 and b"console: ok output 100" in r.stdout, r
    d.wisp("rm", "-f", "r3", check=0)
    d.wisp("rm", "r2", check=0)
    d.stop()


def case_help(d):
    """wisp --help and each verb's --help: the synopsis, the options, the exit status."""
    r = subprocess.run([wt.A.wisp, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "EXIT STATUS" in r.stdout, r.stdout
    verbs = ["define", "create", "ls", "show", "start", "stop", "kill", "restart", "pause",
             "resume", "rm", "logs", "console", "events", "stats", "snapshot", "restore",
             "clone", "run", "import-libvirt", "limits"]
    for v in verbs:
        assert v in r.stdout, v
        h = subprocess.run([wt.A.wisp, v, "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and h.stdout.startswith("usage: wisp") and v in h.stdout \
            and "Exit status" in h.stdout, (v, h.stdout)


def main():
    wt.main_with(globals(), OpsDaemon)


if __name__ == "__main__":
    main()
