#!/usr/bin/env python3
"""Error paths of every writing wisp-img subcommand: each one is run once to list its metadata
writes and barriers (WISP_QCOW2_FAULT_LOG, src/block/qcow2_io.c), then once per write with
that write failing (WISP_QCOW2_FAULT=N). Every run must end without a crash, abort or
sanitizer report, name the image when it fails, and leave every image without corruption
(`qemu-img check`) and showing either the state before the command or the state after it
(active disk, snapshot list, snapshot contents); commit and rebase keep what the top shows.
Leaked clusters are counted and reported; with WISP_FAULTS_NO_LEAKS=1 they fail the test.

Usage: qcow2_faults.py WISP_IMG [COMMAND_REGEX]"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import qcow2_damage  # noqa: E402

WISP_IMG = sys.argv[1]
ONLY = re.compile(sys.argv[2]) if len(sys.argv) > 2 else None
SIZE = 8 << 20
failures = []
leaky = []
LOST = [[]]


def run(*cmd, env=None, check=False):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise SystemExit("%s failed: %s" % (" ".join(cmd), p.stderr))
    return p


def qio(img, *cmds):
    args = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    run(*args, img, check=True)


def view(img, snapshot=None):
    out = img + ".view"
    if snapshot:
        cmd = ["qemu-img", "convert", "-U", "-O", "raw", "-l", "snapshot.name=" + snapshot,
               img, out]
    else:
        cmd = ["qemu-img", "dd", "-U", "-O", "raw", "bs=1M", "count=8", "if=" + img,
               "of=" + out]
    if run(*cmd).returncode != 0:
        return None
    with open(out, "rb") as f:
        data = f.read(SIZE)
    os.unlink(out)
    return data


def snapshots(img):
    p = run("qemu-img", "snapshot", "-U", "-l", img)
    return sorted(line.split()[1] for line in p.stdout.splitlines()[2:] if line.split())


def state(img):
    """What a user sees in an image: size, active disk, snapshots and their contents."""
    info = json.loads(run("qemu-img", "info", "-U", "--output=json", img).stdout or "{}")
    snaps = snapshots(img)
    return {"size": info.get("virtual-size"), "active": view(img), "snaps": snaps,
            "snap_data": {s: view(img, s) for s in snaps}}


def qemu_check(img):
    p = run("qemu-img", "check", "-U", "--output=json", img)
    try:
        j = json.loads(p.stdout)
    except ValueError:
        return 10**9, 0
    return j.get("corruptions", 0) + j.get("check-errors", 0), j.get("leaks", 0)


def healthy(d):
    t = os.path.join(d, "img.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", t, "8M", check=True)
    qio(t, "write -P 0x11 0 64k", "write -P 0x44 128k 64k", "write -c -P 0x66 1M 4k")
    run("qemu-img", "snapshot", "-c", "s0", t, check=True)
    qio(t, "write -P 0x55 3M 64k", "write -P 0x77 8k 8k")
    return t


def setup(d, name):
    """Fresh images for a command; returns (argv, images to inspect, the image whose guest view
    must never change or None). LOST[0] = the guest range a damage destroyed."""
    LOST[0] = []
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    img = healthy(d)
    top = os.path.join(d, "top.qcow2")
    if name == "commit":
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b",
            "img.qcow2", "-F", "qcow2", top, check=True)
        qio(top, "write -P 0x99 64k 64k", "write -P 0xaa 5M 600k")
        return [WISP_IMG, "commit", "-q", top], [img, top], top
    if name == "rebase":
        os.rename(img, os.path.join(d, "back.qcow2"))
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b",
            "back.qcow2", "-F", "qcow2", top, check=True)
        qio(top, "write -P 0x99 64k 64k")
        newb = os.path.join(d, "newback.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", newb, "8M", check=True)
        qio(newb, "write -P 0xcc 6M 1M")
        return ([WISP_IMG, "rebase", "-q", "-F", "qcow2", "-b", "newback.qcow2", top],
                [top, newb], top)
    if name == "resize":
        return [WISP_IMG, "resize", "-q", img, "+2G"], [img], None
    if name.startswith("snapshot"):
        flag, snap = {"snapshot-c": ("-c", "s1"), "snapshot-a": ("-a", "s0"),
                      "snapshot-d": ("-d", "s0")}[name]
        return [WISP_IMG, "snapshot", flag, snap, img], [img], None
    if name.startswith("check"):
        damage = {"check-r-leaks": ("refcount-zero", None),
                  "check-r-all": ("refcount-zero", "l2"),
                  "check-r-all-rebuild": ("rt-to", "l2"),
                  "check-r-all-drop": ("l2-unaligned", None)}[name]
        i = qcow2_damage.Image(img)
        if name == "check-r-leaks":  # a leak: a cluster nothing references, refcount 1
            i.set_refcount(i.file_size // i.cs + 1, 1)
        else:
            LOST[0] = qcow2_damage.damage(i, *damage)
        i.f.close()
        mode = "leaks" if name == "check-r-leaks" else "all"
        return [WISP_IMG, "check", "-q", "-r", mode, img], [img], img
    if name == "convert-n":
        src = os.path.join(d, "src.raw")
        with open(src, "wb") as f:
            f.write(bytes(range(256)) * (SIZE // 256))
        return [WISP_IMG, "convert", "-n", "-O", "qcow2", src, img], [img], None
    raise SystemExit(name)


COMMANDS = ["commit", "rebase", "resize", "snapshot-c", "snapshot-a", "snapshot-d",
            "check-r-leaks", "check-r-all", "check-r-all-rebuild", "check-r-all-drop",
            "convert-n"]


def fail(case, msg):
    failures.append("%s: %s" % (case, msg))
    print("FAIL %s: %s" % (case, msg))


def compare(case, name, img, before, after, now, fixed_view):
    if name == "convert-n":  # the target's old content is being replaced
        return
    if fixed_view is not None and img == fixed_view:
        lo, hi = (LOST[0] + [0, 0])[:2]
        a, b = now["active"], before["active"]
        if b is None:  # qemu-img could not read the damaged image: nothing to compare
            return
        if a is None or a[:lo] != b[:lo] or a[hi:] != b[hi:]:
            fail(case, "%s: the guest view changed" % os.path.basename(img))
        return
    if name == "commit":  # the base may hold part of the data: the top view is what counts
        return
    for key in ("size", "active", "snaps"):
        if now[key] not in (before[key], after[key]):
            fail(case, "%s: %s is neither as before nor as after" % (os.path.basename(img), key))
    for s, data in now["snap_data"].items():
        if data not in (before["snap_data"].get(s), after["snap_data"].get(s)):
            fail(case, "%s: snapshot %s holds other data" % (os.path.basename(img), s))


def one_command(d, name):
    argv, imgs, fixed_view = setup(d, name)
    log = os.path.join(tempfile.gettempdir(), "wisp-faults-%d.log" % os.getpid())
    if os.path.exists(log):
        os.unlink(log)
    env = dict(os.environ, WISP_QCOW2_FAULT_LOG=log)
    p = run(*argv, env=env)
    if p.returncode not in (0,):
        fail(name, "fails without a fault: %s" % p.stderr)
        return 0
    with open(log) as f:
        n = len(f.readlines())
    os.unlink(log)
    after = {i: state(i) for i in imgs}
    for k in range(1, n + 1):
        case = "%s fault %d/%d" % (name, k, n)
        argv, imgs, fixed_view = setup(d, name)
        before = {i: state(i) for i in imgs}
        checks_before = {i: qemu_check(i) for i in imgs}
        p = run(*argv, env=dict(os.environ, WISP_QCOW2_FAULT=str(k)))
        err = p.stderr
        if p.returncode >= 128 or p.returncode < 0 or re.search(
                r"Sanitizer|double free|runtime error|Assertion", err):
            fail(case, "crashed (rc=%d): %s" % (p.returncode, err[-500:]))
            continue
        if p.returncode != 0 and not any(os.path.basename(i) in err for i in imgs):
            fail(case, "failed without naming an image: %s" % err.strip())
        for i in imgs:
            corrupt, leaks = qemu_check(i)
            if corrupt > checks_before[i][0]:
                fail(case, "%s: qemu-img check finds %d errors" % (os.path.basename(i), corrupt))
            if leaks > checks_before[i][1]:
                leaky.append("%s %s: %d leaked clusters" % (case, os.path.basename(i), leaks))
            compare(case, name, i, before[i], after[i], state(i), fixed_view)
    return n


def main():
    if not shutil.which("qemu-img"):
        print("qemu-img missing: skipped")
        sys.exit(77)
    d = tempfile.mkdtemp(prefix="wisp-faults-", dir="/var/tmp")
    total = 0
    try:
        for name in COMMANDS:
            if ONLY and not ONLY.search(name):
                continue
            n = one_command(d, name)
            print("%-20s %3d metadata writes and barriers, each made to fail" % (name, n))
            total += n
    finally:
        shutil.rmtree(d, ignore_errors=True)
    for line in leaky:
        print("leak: " + line)
    print("%d faults injected, %d failures, %d runs left leaks" %
          (total, len(failures), len(leaky)))
    if os.environ.get("WISP_FAULTS_NO_LEAKS") and leaky:
        sys.exit(1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
