#!/usr/bin/env python3
"""Linux's virtio_pmem and DAX on wisp-vmm's virtio-pmem (docs/memory.md), in one boot of the
guest kit's kernel with its root file system on pmem (no initramfs):

  /dev/pmem0  the root: an ext4 image from scripts/wisp-mkrootfs --dax --busybox --init (wisp-init
              as /sbin/init, the script, the host's file), mapped ro and booted with
              root=/dev/pmem0 ro rootflags=dax; Linux says it mounted root from pmem0's device
              number, /proc/mounts shows / ro with dax, the guest reads the host's file and runs
              busybox from it
  /dev/pmem1  another --dax image mapped rw: the guest mounts it -o dax, writes a file and
              syncs (Linux's virtio_pmem sends a flush request); the host reads the file back
              with debugfs after the VM ended

The ro image must be unchanged afterwards. Success is decided by markers on the console, the
exit status and the host's reads, never by timing.

  pmem_linux_test.py --vmm PATH --init WISP_INIT
"""
import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest_shell  # noqa: E402  (the guest script's retry)

TIMEOUT = 540
HELLO = "hello from the host on a DAX pmem image"

# busybox sh from the pmem root (read-only: nothing written but /rw); every line the host checks
# starts with "wisp-pmem:". No pipelines (PVM's busybox TLS crash, docs/guest-kernel.md); the
# kernel's own pmem and DAX messages are on the console already.
GUEST_SCRIPT = guest_shell.retry("wisp-pmem") + r"""
retry ls /dev/pmem0 /dev/pmem1 >/dev/null && echo "wisp-pmem: devices ok"
read -r devno </sys/block/pmem0/dev
echo "wisp-pmem: pmem0 is $devno"
echo "wisp-pmem: file $(retry cat /hello.txt)"
retry mount -t ext4 -o dax /dev/pmem1 /rw && echo "wisp-pmem: rw mounted"
while read -r dev dir fs opts rest; do
    case $dir in /|/rw) echo "wisp-pmem: mount $dir $dev $fs $opts";; esac
done </proc/mounts
echo "written by the guest through DAX" > /rw/guest.txt && retry sync && echo "wisp-pmem: rw synced"
retry umount /rw && echo "wisp-pmem: rw unmounted"
echo "wisp-pmem: done"
"""


class Failure(Exception):
    pass


def sh(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def kernel_path():
    p = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                       capture_output=True, text=True)
    path = os.path.join(p.stdout.strip(), "vmlinux")
    if p.returncode != 0 or not os.path.isfile(path):
        raise Failure(f"the guest kernel is not built ({path}); run guest/kernel/build.sh")
    return path


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(args, tmp):
    d, r = os.path.join(tmp, "root.d"), os.path.join(tmp, "rw.d")
    os.makedirs(os.path.join(d, "rw"))
    os.mkdir(r)
    for where in (d, r):
        with open(os.path.join(where, "hello.txt"), "w") as f:
            f.write(HELLO + "\n")
    with open(os.path.join(d, "pmem.sh"), "w") as f:
        f.write(GUEST_SCRIPT)
    ro, rw = os.path.join(tmp, "root.pmem"), os.path.join(tmp, "rw.pmem")
    mk = os.path.join(REPO, "scripts/wisp-mkrootfs")
    sh(mk, "-o", ro, "--dax", "--busybox", "--init", args.init, "-s", "8M", d)
    sh(mk, "-o", rw, "--dax", "-s", "8M", r)
    for img in (ro, rw):
        if os.path.getsize(img) % (2 << 20):
            raise Failure(f"wisp-mkrootfs --dax: {img} is not a multiple of 2 MiB")
        if "Block size:               4096" not in sh("dumpe2fs", "-h", img):
            raise Failure(f"wisp-mkrootfs --dax: {img} does not have 4 KiB blocks")
    ro_before = digest(ro)
    extra = subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")],
                           capture_output=True, text=True, check=True).stdout.strip()
    # rootwait: the root device appears when virtio_pmem's probe registers its region
    cmd = [args.vmm, "--kernel", kernel_path(), "--mem", "192",
           "--pmem", f"path={ro},ro", "--pmem", f"path={rw},rw",
           "--cmdline", f"console=ttyS0 reboot=k panic=-1 acpi=off root=/dev/pmem0 ro "
                        f"rootfstype=ext4 rootflags=dax rootwait init=/sbin/init {extra} -- "
                        "/bin/sh /pmem.sh"]
    print("$ " + " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"the guest did not end within {TIMEOUT} s; console:\n"
                      f"{(e.stdout or b'').decode(errors='replace')}")
    out = p.stdout.decode(errors="replace").replace("\r\n", "\n")
    err = p.stderr.decode(errors="replace")
    print(out + err + f"exit status {p.returncode}")
    for pattern, what in ((r"^wisp-pmem: devices ok$", "/dev/pmem0 and /dev/pmem1"),
                          (rf"^wisp-pmem: file {HELLO}$", "the host's file read through DAX"),
                          (r"^wisp-pmem: mount / \S+ ext4 ro,\S*\bdax\b",
                           "the root mounted ro with dax in /proc/mounts"),
                          (r"^wisp-pmem: rw mounted$", "/dev/pmem1 mounted -o dax"),
                          (r"^wisp-pmem: mount /rw /dev/pmem1 ext4 rw,\S*\bdax\b",
                           "dax for /dev/pmem1 in /proc/mounts"),
                          (r"^wisp-pmem: rw synced$", "the rw image written and synced"),
                          (r"^wisp-pmem: done$", "the end of the script")):
        if not re.search(pattern, out, re.M):
            raise Failure(f"the console lacks {what} (/{pattern}/)")
    devno = re.search(r"^wisp-pmem: pmem0 is (\d+:\d+)$", out, re.M)
    root = re.search(r"VFS: Mounted root \(ext4 filesystem\) readonly on device (\d+:\d+)", out)
    if not devno or not root or devno.group(1) != root.group(1):
        raise Failure(f"the root is not /dev/pmem0: Linux mounted root from "
                      f"{root and root.group(1)}, pmem0 is {devno and devno.group(1)}")
    if digest(ro) != ro_before:
        raise Failure("the ro image changed")
    sh("e2fsck", "-fn", rw)
    got = sh("debugfs", "-R", "cat /guest.txt", rw).strip()
    if got != "written by the guest through DAX":
        raise Failure(f"the rw image's /guest.txt reads {got!r} on the host")
    if "read-only region" in err:
        print("note: the guest wrote to the ro region (dropped): " +
              err.split("read-only region")[1].split("\n")[0])
    print("ok: the root on /dev/pmem0 (ro, DAX), /dev/pmem1 (rw, DAX), the guest's file is in the "
          "rw image")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--init", required=True)
    args = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(args, tmp)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
