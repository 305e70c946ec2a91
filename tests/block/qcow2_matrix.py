#!/usr/bin/env python3
"""Every write-capable wisp-img subcommand on a matrix of damaged qcow2 images (docs/qcow2.md
"What is validated"). For each (damage, command) the outcome must be one of:
  - an error: exit status 1, a message naming the image, and every file byte-for-byte as it was;
  - success: `qemu-img check` finds nothing (no new corruption, no leak) and every guest byte of
    the active state (and of snapshot s0) is what the command should produce, compared with raw
    copies; only the guest range the damage itself destroyed may differ.
Then the library itself, without wisp-img's check before writing: qcow2_tool writes, zeroes,
discards and snapshots on every damaged image must fail with a message naming it or work, and
never lose data outside the destroyed range or damage the metadata further.

Usage: qcow2_matrix.py WISP_IMG QCOW2_TOOL [DAMAGE_REGEX]"""
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

WISP_IMG, TOOL = sys.argv[1], sys.argv[2]
ONLY = re.compile(sys.argv[3]) if len(sys.argv) > 3 else None
MB = 1 << 20
SIZE = 8 * MB
KINDS_META = ["header", "l1", "l2", "rt", "rb", "snap-table", "snap-l1", "snap-l2"]
DAMAGES = (
    [("refcount-zero", k) for k in KINDS_META + ["data", "compressed"]]
    + [("l2-unaligned", None), ("l2-beyond", None), ("l2-reserved", None), ("l2-crossed", None)]
    + [("l2-to", k) for k in KINDS_META]
    + [("l1-unaligned", None), ("l1-beyond", None), ("l1-reserved", None), ("l1-crossed", None)]
    + [("l1-to", k) for k in ["header", "l1", "rt", "rb", "snap-table", "snap-l1", "data"]]
    + [("rt-to", k) for k in ["header", "l1", "l2", "snap-table", "snap-l1", "snap-l2", "data"]]
    + [("rt-unaligned", None), ("rt-beyond", None)]
    + [("snap-l1-to", k) for k in ["header", "l1", "rt", "rb", "data"]]
    + [("corrupt-bit", None)]
)

failures = []
outcomes = {}  # command -> [errors, successes]


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


def raw_of(img, snapshot=None):
    """Guest bytes (the first 8 MiB) as qemu-img reads them (None if it cannot)."""
    out = img + (".s.raw" if snapshot else ".raw")
    if snapshot:
        cmd = ["qemu-img", "convert", "-U", "-O", "raw", "-l", "snapshot.name=" + snapshot,
               img, out]
    else:
        cmd = ["qemu-img", "dd", "-U", "-O", "raw", "bs=1M", "count=8", "if=" + img,
               "of=" + out]
    p = run(*cmd)
    if p.returncode != 0:
        return None
    with open(out, "rb") as f:
        data = f.read(SIZE)
    os.unlink(out)
    return data


def qemu_check(img):
    p = run("qemu-img", "check", "-U", "--output=json", img)
    try:
        j = json.loads(p.stdout)
    except ValueError:
        return {"corruptions": 10**9, "leaks": 0, "rc": p.returncode}
    return {"corruptions": j.get("corruptions", 0) + j.get("check-errors", 0),
            "leaks": j.get("leaks", 0), "rc": p.returncode}


def readall(path):
    with open(path, "rb") as f:
        return f.read()


def same_outside(a, b, lost):
    if a is None or b is None or len(a) != len(b):
        return False
    lo, hi = (lost + [0, 0])[:2] if lost else (0, 0)
    return a[:lo] == b[:lo] and a[hi:] == b[hi:]


def fail(case, msg):
    failures.append("%s: %s" % (case, msg))
    print("FAIL %s: %s" % (case, msg))


def make_images(d):
    """target.qcow2 (4 KiB clusters, data, a compressed cluster, snapshot s0, data changed
    after it), a backing chain for commit/rebase, and a raw source for convert -n."""
    t = os.path.join(d, "target.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", t, "8M", check=True)
    qio(t, "write -P 0x11 0 64k", "write -P 0x44 128k 64k", "write -c -P 0x66 1M 4k",
        "write -P 0x22 2M 64k")
    run("qemu-img", "snapshot", "-c", "s0", t, check=True)
    qio(t, "write -P 0x55 3M 64k", "write -P 0x77 8k 8k", "write -P 0x88 2M 8k")
    src = os.path.join(d, "src.raw")
    with open(src, "wb") as f:
        f.write(bytes(range(256)) * (SIZE // 256))
    return t, src


def commands(d, target):
    """(name, argv) of every write-capable subcommand, on target (or top.qcow2 above it)."""
    top = os.path.join(d, "top.qcow2")
    return [
        ("commit", [WISP_IMG, "commit", "-q", top]),
        ("rebase", [WISP_IMG, "rebase", "-q", "-F", "qcow2", "-b", "newback.qcow2", top]),
        ("resize", [WISP_IMG, "resize", "-q", target, "+2G"]),
        ("snapshot-c", [WISP_IMG, "snapshot", "-c", "s1", target]),
        ("snapshot-a", [WISP_IMG, "snapshot", "-a", "s0", target]),
        ("snapshot-d", [WISP_IMG, "snapshot", "-d", "s0", target]),
        ("check-r-leaks", [WISP_IMG, "check", "-r", "leaks", target]),
        ("check-r-all", [WISP_IMG, "check", "-r", "all", target]),
        ("convert-n", [WISP_IMG, "convert", "-n", "-O", "qcow2", os.path.join(d, "src.raw"),
                       target]),
    ]


def setup_chain(d, name, target):
    """commit: top.qcow2 over the (damaged) target; rebase: the (damaged) target is top.qcow2
    itself, over back.qcow2, rebased onto newback.qcow2."""
    top = os.path.join(d, "top.qcow2")
    for f in ("top.qcow2", "back.qcow2", "newback.qcow2"):
        p = os.path.join(d, f)
        if os.path.exists(p):
            os.unlink(p)
    if name == "commit":
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b",
            "target.qcow2", "-F", "qcow2", top, check=True)
        qio(top, "write -P 0x99 64k 64k", "write -P 0xaa 5M 128k")
        return top
    if name == "rebase":
        back = os.path.join(d, "back.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", back, "8M", check=True)
        qio(back, "write -P 0xbb 4M 1M")
        newb = os.path.join(d, "newback.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", newb, "8M", check=True)
        qio(newb, "write -P 0xcc 6M 1M")
        shutil.copy(os.path.join(d, "target.qcow2"), top)
        run("qemu-img", "rebase", "-u", "-F", "qcow2", "-b", "back.qcow2", top, check=True)
        return top
    return None


def one_case(d, base_img, src, dmg, arg, name, argv):
    case = "%s %s: %s" % (dmg, arg or "", name)
    target = os.path.join(d, "target.qcow2")
    shutil.copy(base_img, target)
    healthy = raw_of(target)
    healthy_s0 = raw_of(target, "s0")
    top = setup_chain(d, name, target)
    victim = top if name == "rebase" else target
    img = qcow2_damage.Image(victim)
    lost = qcow2_damage.damage(img, dmg, arg)
    img.f.close()
    view = raw_of(top) if top else None  # commit and rebase keep what the top shows
    files = [p for p in (target, top) if p]
    snap = {p: readall(p) for p in files}
    before_check = qemu_check(victim)
    p = run(*argv)
    if p.returncode >= 128 or "Sanitizer" in p.stderr or "double free" in p.stderr:
        fail(case, "crashed: rc=%d %s" % (p.returncode, p.stderr[-400:]))
        return
    outcomes.setdefault(name, [0, 0])[p.returncode == 0] += 1
    for f in files:
        if os.path.getsize(f) > 64 * MB:
            fail(case, "%s grew to %d bytes" % (f, os.path.getsize(f)))
            return
    if p.returncode != 0:
        if os.path.basename(victim) not in p.stderr:
            fail(case, "error without the image's name: %s" % p.stderr.strip())
        for f in files:
            if readall(f) != snap[f]:
                fail(case, "failed (rc=%d) but %s changed: %s" % (p.returncode, f,
                                                                  p.stderr.strip()))
        return
    after = qemu_check(victim)
    # leaks the damage made (an entry that now reads as unallocated) may stay, except after -r
    max_leaks = 0 if name.startswith("check") else before_check["leaks"]
    if after["corruptions"] or after["leaks"] > max_leaks:
        fail(case, "succeeded but qemu-img check finds %d errors, %d leaks (before: %d, %d)" %
             (after["corruptions"], after["leaks"], before_check["corruptions"],
              before_check["leaks"]))
        return
    if name == "check-r-all":  # repaired: the other commands take it again
        p = run(WISP_IMG, "snapshot", "-c", "after-repair", target)
        if p.returncode != 0 or qemu_check(target)["corruptions"]:
            fail(case, "repaired image refused by snapshot -c: %s" % p.stderr.strip())
    if name in ("commit", "rebase"):
        got = raw_of(target if name == "commit" else top)
        if not same_outside(got, view, lost):
            fail(case, "succeeded but the committed / rebased data differs")
        return
    want = healthy
    if name == "resize":  # the first 8 MiB stay; qemu-img maps nothing past them
        m = json.loads(run("qemu-img", "map", "-U", "--output=json", target).stdout)
        if any(e["data"] and e["start"] >= SIZE for e in m):
            fail(case, "data appeared past the old end after resize")
    elif name == "snapshot-a":
        want = healthy_s0
    elif name == "convert-n":
        want = readall(src)
    got = raw_of(target)
    if not same_outside(got, want, lost if name != "convert-n" else []):
        fail(case, "succeeded but guest data outside the damaged range %s differs" % lost)
    if name not in ("snapshot-d", "resize") and not dmg.startswith("snap-") and \
            "snap" not in (arg or ""):
        s0 = raw_of(target, "s0")
        if name != "snapshot-a" and not same_outside(s0, healthy_s0, lost):
            fail(case, "succeeded but snapshot s0 differs")


# Damage only a full check can see: a refcount too low for the references (a data cluster's
# refcount zeroed, two L2 entries naming one cluster) or a refcount table entry naming a data
# cluster. The library guards metadata that the tables name; wisp-img checks before it writes
# (the matrix above); the library alone may reuse such a data cluster (as QEMU would).
CHECK_ONLY = {("refcount-zero", "data"), ("refcount-zero", "compressed"), ("l2-crossed", None),
              ("rt-to", "data")}


def library_case(d, base_img, dmg, arg):
    """qcow2_tool (the library, no check first): writes, then a snapshot, on the damaged image."""
    case = "%s %s: library" % (dmg, arg or "")
    if (dmg, arg) in CHECK_ONLY:
        return
    target = os.path.join(d, "lib.qcow2")
    shutil.copy(base_img, target)
    healthy = raw_of(target)
    img = qcow2_damage.Image(target)
    lost = qcow2_damage.damage(img, dmg, arg)
    img.f.close()
    before = qemu_check(target)
    want = bytearray(healthy)
    ops = [("write", 0x1000, 0x3000, 0x31), ("write", 0x300000, 0x10000, 0x32),
           ("write", 0x5f0000, 0x20000, 0x33), ("zero", 0x20000, 0x10000, None),
           ("discard", 0x200000, 0x10000, None)]
    failed = False
    for op, off, n, pat in ops:
        argv = [TOOL, op, target, str(off), str(n)] + ([str(pat)] if pat is not None else [])
        p = run(*argv)
        if p.returncode >= 128 or "Sanitizer" in p.stderr:
            fail(case, "%s crashed: %s" % (op, p.stderr[-300:]))
            return
        if p.returncode != 0:
            if os.path.basename(target) not in p.stderr:
                fail(case, "%s failed without naming the image: %s" % (op, p.stderr))
            failed = True
            break
        if op == "write":
            want[off:off + n] = bytes([pat]) * n
        elif op == "zero":
            want[off:off + n] = bytes(n)
        elif op == "discard":
            want[off:off + n] = bytes(n)
    after = qemu_check(target)
    if after["corruptions"] > before["corruptions"] and dmg != "corrupt-bit":
        fail(case, "qemu-img check: %d errors after, %d before" %
             (after["corruptions"], before["corruptions"]))
    got = raw_of(target)
    if got is None:
        if before["rc"] == 0:
            fail(case, "qemu-img can no longer read the image")
        return
    if not failed and not same_outside(got, bytes(want), lost):
        fail(case, "guest data differs after the writes succeeded")
    elif failed and healthy is not None:
        # per 4 KiB block: the old bytes or the written ones, nothing else
        lo, hi = (lost + [0, 0])[:2] if lost else (0, 0)
        for b in range(0, len(got), 4096):
            blk = got[b:b + 4096]
            if lo <= b < hi or blk == healthy[b:b + 4096] or blk == bytes(want[b:b + 4096]):
                continue
            fail(case, "guest block at 0x%x holds neither old nor new data" % b)
            break


def main():
    if not shutil.which("qemu-img"):
        print("qemu-img missing: skipped")
        sys.exit(77)
    d = tempfile.mkdtemp(prefix="wisp-matrix-", dir="/var/tmp")
    try:
        base_img, src = make_images(d)
        base_copy = os.path.join(d, "pristine.qcow2")
        shutil.copy(base_img, base_copy)
        cmds = commands(d, os.path.join(d, "target.qcow2"))
        n = 0
        for dmg, arg in DAMAGES:
            label = "%s %s" % (dmg, arg or "")
            if ONLY and not ONLY.search(label):
                continue
            for name, argv in cmds:
                one_case(d, base_copy, src, dmg, arg, name, argv)
                n += 1
            library_case(d, base_copy, dmg, arg)
            n += 1
        for name, (e, ok) in outcomes.items():
            print("%-14s %3d refused (image unchanged), %3d done (checked)" % (name, e, ok))
        print("%d cases, %d failures" % (n, len(failures)))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
