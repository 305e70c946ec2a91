#!/usr/bin/env python3
"""virtio-9p through Linux's own 9p client (trans=virtio, 9P2000.L): one boot of the guest kit's
kernel whose root file system is a 9p share (root=root rootfstype=9p), with wisp-init as
/sbin/init running tests/kernel/wisp-9p-helper, which mounts two more shares and checks them:

  data   read-write: ".." from the share's root, absolute and relative symlinks pointing out of
         the share (never followed on the host), a rename race (the host swaps race/d between a
         directory and a symlink to "/" while the guest walks through it: the file beside the
         share is never reached), file contents, modes, owners (chown), user.* xattrs (and
         trusted.* refused), readdir of 2000 entries, rename, unlink, rmdir, hard links both
         ways, a symlink and a FIFO made by the guest
  ro     the same directory kind shared with ro: every change refused with EROFS

The host then checks what the guest did: the file's bytes, mode, owner, xattr, names.

  p9_test.py --vmm PATH --init WISP_INIT --helper WISP_9P_HELPER

Needs root (chown to other users, the share's owners). Success is decided by the helper's lines
on the console, wisp-vmm's exit status (the helper's failure count) and the host's own reads.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 450
MSIZE = 262144


from devices_test import Failure, cmdline_extra, kernel_dir  # noqa: E402  (the kit's kernel)


def make_root(tmp, init, helper):
    root = os.path.join(tmp, "root")
    for sub in ("sbin", "bin", "proc", "sys", "dev", "mnt", "tmp"):
        os.makedirs(os.path.join(root, sub))
    shutil.copy(init, os.path.join(root, "sbin/init"))
    shutil.copy(helper, os.path.join(root, "bin/wisp-9p-helper"))
    return root


def make_data(tmp):
    outside = os.path.join(tmp, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("SECRET beside the share\n")
    d = os.path.join(tmp, "data")
    os.mkdir(d)
    hello = os.path.join(d, "hello.txt")
    with open(hello, "w") as f:
        f.write("hello from the host\n")
    os.chmod(hello, 0o751)
    os.chown(hello, 4321, 8765)
    os.setxattr(hello, "user.host", b"from-host")
    os.mkdir(os.path.join(d, "big"))
    for i in range(2000):
        open(os.path.join(d, "big", f"f{i:04d}"), "w").close()
    os.symlink(outside, os.path.join(d, "abs"))
    os.symlink("../outside", os.path.join(d, "rel"))
    os.symlink("/", os.path.join(d, "rootlink"))
    os.makedirs(os.path.join(d, "race", "d"))
    with open(os.path.join(d, "race", "d", "inside"), "w") as f:
        f.write("inside the share\n")
    open(os.path.join(d, "doomed"), "w").close()
    os.mkdir(os.path.join(d, "doomdir"))
    open(os.path.join(d, "hl1"), "w").close()
    os.link(os.path.join(d, "hl1"), os.path.join(d, "hl2"))
    ro = os.path.join(tmp, "ro")
    os.mkdir(ro)
    with open(os.path.join(ro, "ro.txt"), "w") as f:
        f.write("read-only\n")
    return d, ro, outside


class Swapper:
    """Swaps race/d between the real directory and a symlink to "/" until stopped."""

    def __init__(self, data):
        self.d = os.path.join(data, "race", "d")
        self.real = os.path.join(data, "race", "d.real")
        self.tmp_link = os.path.join(data, "race", "d.link")
        self.stop = threading.Event()
        self.swaps = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.002):  # the directory for 2 ms, the symlink for 1 ms
            os.rename(self.d, self.real)
            os.symlink("/", self.tmp_link)
            os.rename(self.tmp_link, self.d)
            self.stop.wait(0.001)
            os.unlink(self.d)
            os.rename(self.real, self.d)
            self.swaps += 1

    def end(self):
        self.stop.set()
        self.thread.join()


def boot(args, tmp):
    k = kernel_dir()
    root = make_root(tmp, args.init, args.helper)
    data, ro, outside = make_data(tmp)
    swapper = Swapper(data)
    cmd = [args.vmm, "--kernel", os.path.join(k, "vmlinux"), "--mem", "160", "--cpus", "1",
           "--fs", f"tag=root,path={root}", "--fs", f"tag=data,path={data}",
           "--fs", f"tag=ro,path={ro},ro",
           "--cmdline", f"console=ttyS0 reboot=k panic=-1 acpi=off root=root rootfstype=9p "
                        f"rootflags=trans=virtio,version=9p2000.L,msize={MSIZE} rw "
                        f"init=/sbin/init {cmdline_extra()} -- /bin/wisp-9p-helper {outside} "
                        f"{MSIZE}"]
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    lines = []

    def pump():  # the console as it comes: a hang shows where it stopped
        for raw in p.stdout:
            line = raw.decode(errors="replace").replace("\r", "")
            lines.append(line)
            print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = p.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise Failure(f"the guest did not end within {TIMEOUT} s")
    finally:
        swapper.end()
        reader.join(10)
    out = "".join(lines)
    print(f"exit status {rc}")
    print(f"host: race/d swapped {swapper.swaps} times")
    return rc, out, data


CHECKS = ("rootfs mount-data mount-ro dotdot-guest dotdot-server symlink-read symlink-abs "
          "symlink-rel symlink-root race read write mode-host owner-host chmod chown xattr-host "
          "xattr-set xattr-list xattr-remove xattr-trusted readdir rename unlink link-guest "
          "link-host symlink-mkfifo ro-read ro-create ro-mkdir ro-chmod ro-write "
          "ro-unlink").split()


def check(rc, out, data):
    failed = [c for c in CHECKS if not re.search(rf"^wisp-9p: {c} ok", out, re.M)]
    if failed:
        raise Failure(f"the guest's checks failed or did not run: {' '.join(failed)}")
    if not re.search(r"^wisp-9p: done 0$", out, re.M) or rc != 0:
        raise Failure(f"the helper did not end cleanly (wisp-vmm exit status {rc})")
    f = os.path.join(data, "newdir", "renamed.txt")
    if os.path.exists(os.path.join(data, "guest.txt")) or not os.path.isfile(f):
        raise Failure("the guest's rename is not on the host")
    want = bytearray()
    for b in range(16):
        want += bytes(((b * 65536 + j) * 7) & 0xff for j in range(65536))
    with open(f, "rb") as fh:
        got = fh.read()
    if hashlib.sha256(got).digest() != hashlib.sha256(bytes(want[:1000000])).digest():
        raise Failure(f"the guest's file holds {len(got)} bytes that differ from what it wrote")
    st = os.lstat(f)
    if (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (0o640, 1234, 5678):
        raise Failure(f"mode/owner on the host: {st.st_mode & 0o7777:o} {st.st_uid}:{st.st_gid}")
    if os.getxattr(f, "user.wisp") != b"guest-value":
        raise Failure("the guest's user.wisp xattr is not on the host")
    if os.stat(os.path.join(data, "hard.txt")).st_ino != st.st_ino or st.st_nlink != 2:
        raise Failure("the guest's hard link is not one on the host")
    if os.path.exists(os.path.join(data, "doomed")) or os.path.exists(
            os.path.join(data, "doomdir")):
        raise Failure("the guest's unlink/rmdir did not reach the host")
    if os.readlink(os.path.join(data, "glink")) != "../somewhere":
        raise Failure("the guest's symlink is not on the host")
    import stat as st_mod
    if not st_mod.S_ISFIFO(os.lstat(os.path.join(data, "gfifo")).st_mode):
        raise Failure("the guest's FIFO is not on the host")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--init", required=True, help="guest/init/wisp-init")
    ap.add_argument("--helper", required=True, help="tests/kernel/wisp-9p-helper")
    args = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("WISP_CACHE", "/var/tmp")) as tmp:
            rc, out, data = boot(args, tmp)
            check(rc, out, data)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
