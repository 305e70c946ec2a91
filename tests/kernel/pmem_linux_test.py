#!/usr/bin/env python3
"""Linux's virtio_pmem and DAX on wisp-vmm's virtio-pmem (docs/memory.md), in one boot of the
guest kit's kernel with an initramfs (wisp-init + busybox):

  /dev/pmem0  an ext4 image from scripts/wisp-mkrootfs --dax, mapped ro: the guest mounts it
              -o ro,dax and reads the host's file; /proc/mounts must show dax for it
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
TIMEOUT = 540
APPLETS = "sh,cat,mount,umount,mkdir,grep,dmesg,echo,sync,ls"
HELLO = "hello from the host on a DAX pmem image"

# busybox sh; every line the host checks starts with "wisp-pmem:"
GUEST_SCRIPT = r"""
ls /dev/pmem0 /dev/pmem1 >/dev/null && echo "wisp-pmem: devices ok"
mkdir -p /ro /rw
mount -t ext4 -o ro,dax /dev/pmem0 /ro && echo "wisp-pmem: ro mounted"
echo "wisp-pmem: file $(cat /ro/hello.txt)"
grep pmem /proc/mounts | while read dev dir fs opts rest; do echo "wisp-pmem: mount $dev $opts"; done
mount -t ext4 -o dax /dev/pmem1 /rw && echo "wisp-pmem: rw mounted"
echo "written by the guest through DAX" > /rw/guest.txt && sync && echo "wisp-pmem: rw synced"
umount /rw && echo "wisp-pmem: rw unmounted"
dmesg | grep -i -e dax -e pmem | while read line; do echo "wisp-pmem: dmesg $line"; done
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
    d = os.path.join(tmp, "ro.d")
    os.mkdir(d)
    with open(os.path.join(d, "hello.txt"), "w") as f:
        f.write(HELLO + "\n")
    ro, rw = os.path.join(tmp, "ro.pmem"), os.path.join(tmp, "rw.pmem")
    mk = os.path.join(REPO, "scripts/wisp-mkrootfs")
    sh(mk, "-o", ro, "--dax", "-s", "8M", d)
    sh(mk, "-o", rw, "--dax", "-s", "8M", os.path.join(tmp, "ro.d"))
    for img in (ro, rw):
        if os.path.getsize(img) % (2 << 20):
            raise Failure(f"wisp-mkrootfs --dax: {img} is not a multiple of 2 MiB")
        if "Block size:               4096" not in sh("dumpe2fs", "-h", img):
            raise Failure(f"wisp-mkrootfs --dax: {img} does not have 4 KiB blocks")
    ro_before = digest(ro)
    script = os.path.join(tmp, "pmem.sh")
    with open(script, "w") as f:
        f.write(GUEST_SCRIPT)
    initrd = os.path.join(tmp, "initramfs.cpio")
    sh(os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", initrd, "--init", args.init,
       "--applets", APPLETS, "--add", f"{script}:/pmem.sh")
    extra = subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")],
                           capture_output=True, text=True, check=True).stdout.strip()
    cmd = [args.vmm, "--kernel", kernel_path(), "--initrd", initrd, "--mem", "192",
           "--pmem", f"path={ro},ro", "--pmem", f"path={rw},rw",
           "--cmdline", f"console=ttyS0 reboot=k panic=-1 acpi=off {extra} -- /bin/sh /pmem.sh"]
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
                          (r"^wisp-pmem: ro mounted$", "the ro image mounted -o ro,dax"),
                          (rf"^wisp-pmem: file {HELLO}$", "the host's file read through DAX"),
                          (r"^wisp-pmem: mount /dev/pmem0 \S*\bdax\b", "dax in /proc/mounts"),
                          (r"^wisp-pmem: rw synced$", "the rw image written and synced"),
                          (r"^wisp-pmem: done$", "the end of the script")):
        if not re.search(pattern, out, re.M):
            raise Failure(f"the console lacks {what} (/{pattern}/)")
    if digest(ro) != ro_before:
        raise Failure("the ro image changed")
    sh("e2fsck", "-fn", rw)
    got = sh("debugfs", "-R", "cat /guest.txt", rw).strip()
    if got != "written by the guest through DAX":
        raise Failure(f"the rw image's /guest.txt reads {got!r} on the host")
    if "read-only region" in err:
        print("note: the guest wrote to the ro region (dropped): " +
              err.split("read-only region")[1].split("\n")[0])
    print("ok: DAX on /dev/pmem0 (ro) and /dev/pmem1 (rw), the guest's file is in the rw image")


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
