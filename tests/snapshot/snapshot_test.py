#!/usr/bin/env python3
"""Snapshots and restores of real VMs through wisp-vmm's API (docs/snapshot.md), each check what a
user relies on:

  count      a ring-3 guest counting on COM1 is snapshotted mid-run; restored in new processes
             (paused then resumed, and resumed at once) it goes on with the next number
  uffd       the same restore with the Uffd backend through tools/wisp-uffd-handler; a handler
             that goes away ends the VM with a message, it does not hang it
  diff       full snapshot, more counting, diff snapshot (only written pages), merged onto the
             base: the diff restores to where it was
  blk-raw, blk-qcow2
             a snapshot in the middle of virtio-blk writes: every write the guest saw complete
             is in the image, and after the restore the guest reads back what it wrote
  damaged    damaged state files of every kind and wrong requests get a 400 naming the problem;
             the same process then loads the good snapshot; one without the optional DEVX
             section (as a writer without the i8042's state made it) loads and runs too
  sigterm    SIGTERM while a snapshot is written ends wisp-vmm and leaves no partial file
  clones     20 clones of one idle snapshot share its memory (PSS, MemAvailable), each with its
             own tap and qcow2 overlay; each is distinct once it writes
  linux      the kit's Linux (2 vCPUs, console on virtio-console, a NIC), booted once to a shell, restored
             twice on taps of their own: each pings the host, runs a command, and wisp-vmm
             exits with its status (restore time printed, not asserted)

  snapshot_test.py --build-dir DIR --case NAME
"""
import argparse
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snaplib import (Failure, Vmm, guest_mapping, load_body, mem_available_kb,  # noqa: E402
                     read_sections, smaps_rollup, with_crc)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = 77


class Ctx:
    def __init__(self, build, tmp):
        self.tmp = tmp
        self.vmm = os.path.join(build, "src/vmm/wisp-vmm")
        self.img = os.path.join(build, "src/img/wisp-img")
        self.handler = os.path.join(build, "tools/wisp-uffd-handler")
        self.merge = os.path.join(build, "tools/wisp-snapshot-merge")
        self.guest = lambda name: os.path.join(build, "guest", name + ".elf")
        self.init = os.path.join(build, "guest/init/wisp-init")
        self.children = []

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, name, args=(), **kw):
        v = Vmm(self.vmm, self.tmp, name, args, **kw)
        self.children.append(v.p)
        return v

    def kill_all(self):
        """Whatever a failed case left running: a child that keeps the test's stdout open would
        make meson wait for it until the timeout."""
        for p in self.children:
            if p.poll() is None:
                p.kill()
                p.wait()


def snapshot(v, snap, mem, kind="Full"):
    v.expect("PUT", "/snapshot/create",
             {"snapshot_path": snap, "mem_file_path": mem, "snapshot_type": kind})


def pause(v):
    v.expect("PATCH", "/vm", {"state": "Paused"})
    st = v.expect("GET", "/", status=200)
    if st["state"] != "Paused":
        raise Failure(f"GET / after PATCH /vm Paused says {st['state']}")


def counts(text):
    """The numbers of the whole "count N" lines (a last line still being printed is left out)."""
    text = text.replace("\r\n", "\n")  # a "\r" and its "\n" may be on either side of a snapshot
    whole = text[:text.rfind("\n") + 1]
    return [int(n) for n in re.findall(r"^count (\d+)$", whole, re.M)]


def expect_sequence(before, after, what):
    """before + after (the restored VM's output goes on where the first stopped, possibly in the
    middle of a line) holds count 0, 1, 2, ... without a gap or a repeat."""
    n = counts(before + after)
    if n != list(range(len(n))) or len(n) < 2:
        bad = next((i for i, x in enumerate(n) if x != i), None)
        raise Failure(f"{what}: the counting is not continuous (at index {bad}: "
                      f"{n[max(0, (bad or 0) - 3):(bad or 0) + 3]}); the end of the first "
                      f"VM's output: {before[-60:]!r}, the start of the second's: "
                      f"{after[:60]!r}")
    last_before = counts(before)[-1]
    print(f"{what}: {last_before + 1} counted before the snapshot, continued to {n[-1]}")
    return last_before


def boot_counter(c, name, delay_us=1000, extra=()):
    v = c.start(name, ["--kernel", c.guest("snapshot_count"), "--mem", "128", "--cmdline",
                       f"delay_us={delay_us}"] + list(extra))
    v.wait_for(r"^count 150$")
    return v


def snapshot_counter(c, name, extra=()):
    """A counting VM snapshotted mid-run; returns (its output, state file, memory file)."""
    v = boot_counter(c, name, extra=extra)
    got, reply = v.api("PUT", "/snapshot/create",
                       {"snapshot_path": c.path("x.snap"), "mem_file_path": c.path("x.mem")})
    if got != 400 or "paused" not in reply["fault_message"]:
        raise Failure(f"a snapshot of a running VM: {got} {reply}, expected 400 (not paused)")
    pause(v)
    snap, mem = c.path(name + ".snap"), c.path(name + ".mem")
    snapshot(v, snap, mem)
    settle(v)
    if v.end() != 0:
        raise Failure("the snapshotted VM did not end with status 0 on SIGTERM")
    return v.stdout(), snap, mem  # all it printed: it was paused since


def settle(v, quiet=0.5, timeout=20):
    """Waits until a paused VM's output stops growing: its console writer has written what the
    guest printed before the pause. A stopping wisp-vmm drains its writer for a bounded time
    only (it must end within a second), and a writer slowed down (under strace, as
    seccomp-coverage runs this) could otherwise lose the last line to the check."""
    deadline = time.monotonic() + timeout
    last, since = v.stdout(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = v.stdout()
        if now != last:
            last, since = now, time.monotonic()


def case_count(c):
    before, snap, mem = snapshot_counter(c, "src")
    a = c.start("restore-a")
    a.expect("PUT", "/snapshot/load", load_body(snap, mem, resume=False))
    if a.expect("GET", "/", status=200)["state"] != "Paused":
        raise Failure("a snapshot loaded without resume_vm is not Paused")
    time.sleep(0.3)
    if counts(a.stdout()):
        raise Failure("the paused restored VM printed before it was resumed")
    got, reply = a.api("PUT", "/snapshot/load", load_body(snap, mem))
    if got != 400:
        raise Failure(f"a second load into a process with a VM: {got}, expected 400")
    a.expect("PATCH", "/vm", {"state": "Resumed"})
    a.wait_for(r"^count \d*0$", timeout=20)
    time.sleep(0.2)
    first_a = expect_sequence(before, a.stdout(), "restore paused, then resumed")
    a.end()
    b = c.start("restore-b")
    b.expect("PUT", "/snapshot/load", load_body(snap, mem, track_dirty_pages=True))
    b.wait_for(r"^count \d*5$", timeout=20)
    time.sleep(0.2)
    if expect_sequence(before, b.stdout(), "a second restore, resumed at once") != first_a:
        raise Failure("two restores of one snapshot did not start from the same number")
    # a diff needs dirty tracking: the first restore had none
    pause(b)
    snapshot(b, c.path("b.snap"), c.path("b.mem"), "Diff")
    b.end()


def start_handler(c, hs, mem, **kw):
    """tools/wisp-uffd-handler on socket hs, once it listens."""
    h = subprocess.Popen([c.handler, hs, mem], stdout=subprocess.DEVNULL, **kw)
    c.children.append(h)
    deadline = time.monotonic() + 10
    while not os.path.exists(hs):
        if h.poll() is not None or time.monotonic() > deadline:
            raise Failure(f"the handler did not listen on {hs} (status {h.poll()})")
        time.sleep(0.01)
    return h


def case_uffd(c):
    before, snap, mem = snapshot_counter(c, "src")
    hs = c.path("uffd.sock")
    h = start_handler(c, hs, mem, stderr=subprocess.PIPE, text=True)
    v = c.start("restore-uffd")
    v.expect("PUT", "/snapshot/load", load_body(snap, hs, backend="Uffd"))
    v.wait_for(r"^count \d*5$", timeout=20)
    time.sleep(0.2)
    expect_sequence(before, v.stdout(), "a restore served by the Uffd handler")
    v.end()
    try:
        _, herr = h.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        raise Failure("the handler did not end after wisp-vmm had ended (its socket closed)")
    served = re.search(r"served (\d+) pages", herr)
    if not served or int(served.group(1)) == 0:
        raise Failure(f"the handler served no page: {herr}")
    print(f"the handler served {served.group(1)} pages", flush=True)
    # the handler dies under a running VM: the VM ends, status 1, with a message
    h = start_handler(c, hs, mem, stderr=subprocess.DEVNULL)
    v = c.start("restore-uffd-2")
    v.expect("PUT", "/snapshot/load", load_body(snap, hs, backend="Uffd"))
    v.wait_for(r"^count \d+$")
    h.kill()
    h.wait()
    rc = v.wait(10)
    if rc != 1 or "page-fault handler closed its socket" not in v.stderr():
        raise Failure(f"after the handler died: status {rc}, stderr {v.stderr()!r}")


def allocated(path):
    return os.stat(path).st_blocks * 512


def case_diff(c):
    v = c.start("src")
    v.expect("PUT", "/boot-source", {"kernel_image_path": c.guest("snapshot_count"),
                                     "boot_args": "delay_us=1000"})
    v.expect("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128,
                                        "track_dirty_pages": True})
    v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
    v.wait_for(r"^count 100$")
    pause(v)
    base_snap, base_mem = c.path("base.snap"), c.path("base.mem")
    snapshot(v, base_snap, base_mem)
    v.expect("PATCH", "/vm", {"state": "Resumed"})
    n = counts(v.stdout())[-1]
    v.wait_for(rf"^count {n + 200}$")
    pause(v)
    diff_snap, diff_mem = c.path("diff.snap"), c.path("diff.mem")
    snapshot(v, diff_snap, diff_mem, "Diff")
    v.end()
    before = v.stdout()
    full_b, diff_b = allocated(base_mem), allocated(diff_mem)
    print(f"full snapshot: {full_b >> 10} KiB allocated, diff: {diff_b >> 10} KiB "
          f"(both {os.path.getsize(diff_mem) >> 20} MiB long)")
    if os.path.getsize(diff_mem) != 128 << 20 or diff_b * 4 > full_b:
        raise Failure("the diff memory file is not a sparse file of the written pages only")
    merged = c.path("merged.mem")
    shutil.copyfile(base_mem, merged)
    out = subprocess.run([c.merge, diff_snap, diff_mem, merged], capture_output=True, text=True)
    if out.returncode != 0:
        raise Failure(f"wisp-snapshot-merge: {out.stderr}")
    print(out.stdout.strip())
    r = c.start("restore")
    r.expect("PUT", "/snapshot/load", load_body(diff_snap, merged))
    r.wait_for(r"^count \d*5$", timeout=20)
    time.sleep(0.2)
    expect_sequence(before, r.stdout(), "the diff snapshot merged onto its base")
    r.end()


BLOCK = 4096


def pattern_block(block):
    words = []
    for i in range(BLOCK // 8):
        x = ((block * 512 + i) * 0x9e3779b97f4a7c15) & 0xffffffffffffffff
        words.append(x ^ (x >> 31))
    return struct.pack(f"<{BLOCK // 8}Q", *words)


def check_image(c, image, fmt, blocks, what):
    raw = image
    if fmt == "qcow2":
        raw = c.path("image.raw")
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw],
                       check=True, capture_output=True)
    with open(raw, "rb") as f:
        data = f.read()
    for b in blocks:
        if data[b * BLOCK:(b + 1) * BLOCK] != pattern_block(b):
            raise Failure(f"{what}: block {b}, written and completed, is not in the image")
    print(f"{what}: all {len(blocks)} completed writes are in the image")


def case_blk(c, fmt):
    image = c.path("disk." + fmt)
    if fmt == "raw":
        with open(image, "wb") as f:
            f.truncate(16 << 20)
    else:
        subprocess.run([c.img, "create", "-f", "qcow2", image, "16M"], check=True,
                       capture_output=True)
    v = c.start("src", ["--kernel", c.guest("snapshot_blk"), "--mem", "128", "--cmdline",
                        "blk.delay_us=300", "--drive", f"path={image},format={fmt}"])
    v.wait_for(r"^blk wrote 300$")
    pause(v)
    snap, mem = c.path("blk.snap"), c.path("blk.mem")
    snapshot(v, snap, mem)
    v.end()
    before = v.stdout()
    whole = before[:before.rfind("\n") + 1]  # whole lines only
    done = [int(n) for n in re.findall(r"^blk wrote (\d+)$", whole, re.M)]
    check_image(c, image, fmt, done, f"{fmt}: at the snapshot")
    r = c.start("restore")
    r.expect("PUT", "/snapshot/load", load_body(snap, mem))
    rc = r.wait(120)
    out = r.stdout()
    if rc != 0 or not re.search(r"^blk verified 2048$", out, re.M):
        raise Failure(f"{fmt}: the restored guest ended with {rc}: {out[-300:]!r}")
    both = [int(n) for n in re.findall(r"^blk wrote (\d+)$", before + out, re.M)]
    if sorted(set(both)) != list(range(2048)):
        raise Failure(f"{fmt}: writes before and after the snapshot do not cover every block")
    check_image(c, image, fmt, range(2048), f"{fmt}: after the restore")
    print(f"{fmt}: the restored guest read back all 2048 blocks it wrote")


# ---- damaged files ------------------------------------------------------------------------

def damaged_files(c, snap):
    """(name, bytes, part of the expected fault_message) for each kind of damage."""
    good = open(snap, "rb").read()
    secs = read_sections(good)
    out = [("empty", b"", "not a wisp snapshot"),
           ("bad-magic", b"XISPSNAP" + good[8:], "not a wisp snapshot (bad magic)"),
           ("truncated", good[:len(good) // 2], "checksum mismatch"),
           ("flipped-byte", good[:200] + bytes([good[200] ^ 1]) + good[201:], "checksum mismatch"),
           ("newer-version", with_crc(good[:8] + struct.pack("<I", 2) + good[12:]),
            "format version 2")]
    tag, flags, at, length = secs[0]
    big = bytearray(good)
    struct.pack_into("<Q", big, at - 8, 1 << 40)
    out.append(("section-too-long", with_crc(big), "more than the file holds"))
    info = next(s for s in secs if s[0] == "INFO")
    unknown = bytearray(good)
    unknown[info[2] - 16:info[2] - 12] = b"ZZZZ"
    struct.pack_into("<I", unknown, info[2] - 12, 0)  # not optional
    out.append(("unknown-section", with_crc(unknown), "unknown section 'ZZZZ'"))
    dev = next(s for s in secs if s[0] == "DEVC")
    other = bytearray(good)
    name_at = other.index(b"serial0", dev[2])
    other[name_at:name_at + 7] = b"serialX"
    out.append(("device-lacking", with_crc(other), "device serialX (serial) this machine lacks"))
    conf = next(s for s in secs if s[0] == "CONF")
    cpus = bytearray(good)
    struct.pack_into("<I", cpus, conf[2] + 8, 2)
    out.append(("vcpu-count", with_crc(cpus), "1 vCPU sections for a machine of 2 vCPUs"))
    mem = bytearray(good)
    struct.pack_into("<Q", mem, conf[2], 1 << 50)
    out.append(("memory-size", with_crc(mem), "memory size"))
    return out


def case_damaged(c):
    _, snap, mem = snapshot_counter(c, "src")
    v = c.start("restore")
    cases = damaged_files(c, snap)
    for name, data, want in cases:
        path = c.path(name + ".snap")
        with open(path, "wb") as f:
            f.write(data)
        got, reply = v.api("PUT", "/snapshot/load", load_body(path, mem))
        msg = (reply or {}).get("fault_message", "")
        if got != 400 or want not in msg or path not in msg:
            raise Failure(f"{name}: {got} {msg!r}, expected 400 naming the file and {want!r}")
        print(f"{name}: 400 {msg}")
    short = c.path("short.mem")
    with open(mem, "rb") as f, open(short, "wb") as g:
        g.write(f.read(1 << 20))
    wrong = [
        ("missing state file", load_body(c.path("none.snap"), mem), "No such file"),
        ("missing memory file", load_body(snap, c.path("none.mem")), "No such file"),
        ("short memory file", load_body(snap, short), "holds 1048576 bytes"),
        ("unknown NIC", load_body(snap, mem, network_overrides=[
            {"iface_id": "eth9", "host_dev_name": "tap9"}]), "no such network interface"),
        ("unknown drive", load_body(snap, mem, drive_overrides=[
            {"drive_id": "rootfs", "path_on_host": "/x"}]), "no such drive"),
        ("two memory sources", dict(load_body(snap, mem), mem_file_path=mem), "exactly one"),
        ("backend type", load_body(snap, mem, backend="Disk"), "neither File nor Uffd"),
        ("no handler", load_body(snap, c.path("none.sock"), backend="Uffd"), "cannot connect"),
        ("unknown field", dict(load_body(snap, mem), resume=True), "resume"),
    ]
    for name, body, want in wrong:
        got, reply = v.api("PUT", "/snapshot/load", body)
        msg = (reply or {}).get("fault_message", "")
        if got != 400 or want not in msg:
            raise Failure(f"{name}: {got} {msg!r}, expected 400 with {want!r}")
        print(f"{name}: 400 {msg}")
    v.expect("PUT", "/snapshot/load", load_body(snap, mem))
    v.wait_for(r"^count \d+$")
    print(f"after {len(cases) + len(wrong)} refused loads the good snapshot loads and runs")
    v.end()
    # as a wisp-vmm without the i8042's state wrote it: no DEVX section (the format's
    # compatibility rule): it loads, the i8042 as at reset, and the guest runs on
    good = open(snap, "rb").read()
    devx = [x for x in read_sections(good) if x[0] == "DEVX"]
    if len(devx) != 1 or not devx[0][1] & 1:
        raise Failure(f"expected one optional DEVX section (the i8042's), got {devx}")
    tag, flags, at, length = devx[0]
    older = bytearray(good[:at - 16] + good[at + length:])
    struct.pack_into("<I", older, 12, struct.unpack_from("<I", good, 12)[0] - 1)
    path = c.path("older.snap")
    with open(path, "wb") as f:
        f.write(with_crc(older))
    o = c.start("older")
    o.expect("PUT", "/snapshot/load", load_body(path, mem))
    o.wait_for(r"^count \d+$")
    print("a snapshot without the i8042's DEVX section (an older writer's) loads and runs")
    o.end()
    # a process that was configured is not fresh
    w = c.start("configured", ["--kernel", c.guest("snapshot_count")])
    got, reply = w.api("PUT", "/snapshot/load", load_body(snap, mem))
    if got != 400 or "only into" not in reply["fault_message"]:
        raise Failure(f"load into a running VM's process: {got} {reply}")
    w.end()


def case_sigterm(c):
    """SIGTERM while the memory file is written: wisp-vmm ends at once, and leaves either a
    complete snapshot or no file at all (never a temporary or half-written one)."""
    v = c.start("src", ["--kernel", c.guest("snapshot_idle"), "--mem", "256"], stdin=True)
    v.wait_for(r"^idle: ready$")
    v.send("fill 1 32768\n")  # 128 MiB of pages that are not zero: the file takes a while
    v.wait_for(r"^idle: filled 32768 pages", timeout=60)
    pause(v)
    snap, mem = c.path("t.snap"), c.path("t.mem")
    import threading
    t = threading.Thread(target=lambda: v.api("PUT", "/snapshot/create", {
        "snapshot_path": snap, "mem_file_path": mem}), daemon=True)
    t.start()
    time.sleep(0.02)
    t0 = time.monotonic()
    rc = v.end(timeout=10)
    took = time.monotonic() - t0
    left = sorted(os.listdir(c.tmp))
    partial = [f for f in left if ".tmp-" in f]
    print(f"SIGTERM during the snapshot: status {rc} after {took * 1000:.0f} ms; files {left}")
    if rc != 0 or partial:
        raise Failure(f"status {rc}, temporary files left: {partial}")
    if os.path.exists(snap) != os.path.exists(mem):
        raise Failure("one of the two snapshot files is there without the other")


# ---- clones -------------------------------------------------------------------------------

def case_clones(c, n=20):
    base = c.path("base.img")
    with open(base, "wb") as f:
        f.truncate(8 << 20)
    src = c.start("src", ["--kernel", c.guest("snapshot_idle"), "--mem", "128", "--serial",
                          "stdio", "--drive", f"path={base},format=raw,id=disk0",
                          "--net", "tap=wsnp0,id=net0"], stdin=True)
    src.wait_for(r"^idle: ready$")
    time.sleep(0.2)  # asleep in hlt
    pause(src)
    snap, mem = c.path("idle.snap"), c.path("idle.mem")
    snapshot(src, snap, mem)
    src.end()
    mem_sha = hashlib.sha256(open(mem, "rb").read()).hexdigest()
    before = mem_available_kb()
    clones = []
    try:
        for i in range(n):
            ov = c.path(f"overlay{i}.qcow2")
            subprocess.run([c.img, "create", "-f", "qcow2", "-b", base, "-F", "raw", ov],
                           check=True, capture_output=True)
            v = c.start(f"clone{i}", stdin=True)
            v.expect("PUT", "/snapshot/load", load_body(
                snap, mem, network_overrides=[{"iface_id": "net0", "host_dev_name": f"wsnc{i}"}],
                drive_overrides=[{"drive_id": "disk0", "path_on_host": ov}]))
            clones.append(v)
        time.sleep(1.0)
        check_shared(c, clones, before, n)
        check_distinct(clones)
        for i, v in enumerate(clones):
            links = subprocess.run(["ip", "-o", "link", "show", f"wsnc{i}"], capture_output=True,
                                   text=True)
            if links.returncode != 0:
                raise Failure(f"clone {i}: its tap wsnc{i} does not exist")
        if hashlib.sha256(open(mem, "rb").read()).hexdigest() != mem_sha:
            raise Failure("the clones' writes reached the snapshot's memory file")
        for i, v in enumerate(clones):
            v.send("exit 0\n")
        for i, v in enumerate(clones):
            if v.wait(20) != 0:
                raise Failure(f"clone {i} did not end with status 0")
        print(f"{n} clones: own taps, own overlays, the memory file untouched")
    finally:
        for v in clones:
            if v.p.poll() is None:
                v.p.kill()


def check_shared(c, clones, before, n):
    """Each clone reads 64 pages: they are the page cache's, once for all of them."""
    for v in clones:
        v.send("sum 64\n")
    for v in clones:
        v.wait_for(r"^idle: sum 64 0$")
    rss = pss = private = 0
    for v in clones:
        g = guest_mapping(v.p.pid, 100 << 10)
        rss += g.get("Rss", 0)
        pss += g.get("Pss", 0)
        private += g.get("Private_Clean", 0) + g.get("Private_Dirty", 0)
    drop = max(0, before - mem_available_kb())
    print(f"{n} idle clones: guest RAM Rss {rss / n:.0f} KiB, Pss {pss / n:.0f} KiB, private "
          f"{private / n:.0f} KiB per clone; MemAvailable down {drop / n / 1024:.2f} MiB per "
          f"clone (all of wisp-vmm and KVM)")
    if rss == 0 or pss * 2 > rss:
        raise Failure("the clones' guest RAM is not shared (Pss is not well below Rss)")
    if drop / n > 8 << 10:
        raise Failure(f"MemAvailable dropped {drop / n:.0f} KiB per idle clone")


def check_distinct(clones):
    for i, v in enumerate(clones):
        v.send(f"fill {i + 1} 64\n")
    for i, v in enumerate(clones):
        v.wait_for(rf"^idle: filled 64 pages with {i + 1}$")
        v.send("sum 64\n")
    for i, v in enumerate(clones):
        v.wait_for(rf"^idle: sum 64 {(i + 1) * 64 * 4096}$")
    priv = [guest_mapping(v.p.pid, 100 << 10).get("Private_Dirty", 0) for v in clones]
    if min(priv) < 256:
        raise Failure(f"a clone's 64 written pages are not its own: Private_Dirty {priv} KiB")
    print(f"each clone holds its own bytes after writing 64 pages (Private_Dirty {min(priv)}-"
          f"{max(priv)} KiB)")


# ---- Linux ----------------------------------------------------------------------------------

def kernel_dir():
    p = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                       capture_output=True, text=True)
    path = p.stdout.strip()
    return path if p.returncode == 0 and os.path.isfile(os.path.join(path, "vmlinux")) else None


def case_linux(c):
    """Linux on 2 vCPUs with its console on virtio-console (hvc0) and a NIC on a bridge of a network
    namespace of the test's own: booted once, snapshotted at a shell prompt, restored twice, each
    restore on a tap of its own (network_overrides). Each clone reaches the bridge (ping), runs a
    command typed on its console and wisp-vmm exits with the command's status."""
    kdir = kernel_dir()
    if not kdir:
        print("SKIP: the guest kernel is not built (guest/kernel/build.sh)")
        return SKIP
    sys.path.insert(0, os.path.join(REPO, "tests", "virtio"))
    import netns
    netns.enter()
    bridge = netns.Bridge()
    for tap in ("wsnl0", "wsnl1", "wsnl2"):
        bridge.add_tap(tap)
    initrd = c.path("initramfs.cpio")
    subprocess.run([os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", initrd, "--init", c.init,
                    "--applets", "sh,echo,ip,ping"], check=True, capture_output=True)
    extra = subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")], capture_output=True,
                           text=True, check=True).stdout.strip()
    t0 = time.monotonic()
    src = c.start("linux", ["--kernel", os.path.join(kdir, "vmlinux"), "--initrd", initrd, "--mem",
                            "128", "--cpus", "2", "--console", "virtio", "--net", "tap=wsnl0",
                            "--cmdline",
                            f"console=hvc0 reboot=k panic=-1 quiet {extra} -- /bin/sh"],
                  stdin=True)
    src.wait_for(r"# ", timeout=300)
    src.send(f"ip addr add 198.51.100.2/24 dev eth0; ip link set eth0 up; "
             f"ping -c 1 -W 10 {netns.HOST_IP} >/dev/null && echo booted-$((20+22))\n")
    src.wait_for(r"^booted-42", timeout=180)
    boot_s = time.monotonic() - t0
    pause(src)
    snap, mem = c.path("linux.snap"), c.path("linux.mem")
    snapshot(src, snap, mem)
    src.end()
    print(f"Linux booted to a shell and reached the bridge in {boot_s:.1f} s; snapshot taken")
    for i, status in enumerate((7, 9)):
        v = c.start(f"linux-restore{i}", stdin=True)
        t = time.monotonic()
        v.expect("PUT", "/snapshot/load", load_body(snap, mem, network_overrides=[
            {"iface_id": "net0", "host_dev_name": f"wsnl{i + 1}"}]))
        load_ms = (time.monotonic() - t) * 1000
        v.send(f"ping -c 1 -W 10 {netns.HOST_IP} >/dev/null && echo restored-$((100+{i})); "
               f"exit {status}\n")
        rc = v.wait(180)
        if rc != status or f"restored-{100 + i}" not in v.stdout():
            raise Failure(f"restore {i}: status {rc}, expected {status}; output "
                          f"{v.stdout()[-300:]!r}")
        print(f"restore {i}: PUT /snapshot/load answered in {load_ms:.1f} ms (the boot took "
              f"{boot_s:.1f} s); on tap wsnl{i + 1} it reached the bridge, ran the command, and "
              f"wisp-vmm exited with its status {rc}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--case", required=True)
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # a test killed by its timeout still tells
    cases = {"count": case_count, "uffd": case_uffd, "diff": case_diff,
             "blk-raw": lambda c: case_blk(c, "raw"), "blk-qcow2": lambda c: case_blk(c, "qcow2"),
             "damaged": case_damaged, "sigterm": case_sigterm, "clones": case_clones,
             "linux": case_linux}
    with tempfile.TemporaryDirectory(prefix="wisp-snap-", dir="/var/tmp") as tmp:
        c = Ctx(os.path.abspath(a.build_dir), tmp)
        try:
            rc = cases[a.case](c)
        except Failure as e:
            print(f"FAIL: {e}")
            return 1
        finally:
            c.kill_all()
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
