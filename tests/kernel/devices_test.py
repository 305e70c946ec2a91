#!/usr/bin/env python3
"""Linux's own virtio drivers on wisp-vmm's devices: the guest kit's kernel (guest/kernel) boots
with disks, a NIC, a virtio console and a virtio-rng, runs a script, and the host checks what
the guest saw and what reached the host. Two boots share all the checks (each Linux boot costs
~10-50 s on the PVM-nested CI machines):

  --discovery cmdline   acpi=off: Linux finds the devices on its command line
                        (virtio_mmio.device=, written by wisp-vmm); an initramfs with wisp-init
                        and busybox; a raw ext4 data disk and a qcow2 ext4 data disk (a file the
                        host wrote is read, a file the guest writes is read back by the host with
                        debugfs), a NIC in a network namespace of the test's own (ping and TCP
                        both ways, byte-exact), hvc0 as the console (--console virtio), /dev/hwrng,
                        virtio-vsock (a static helper in the initramfs connects to host port
                        5000, i.e. <uds>_5000, an echo server, and takes a host CONNECT 6000).
  --discovery acpi      ACPI on and --cmdline-devices off: Linux finds the devices through the
                        DSDT (LNRO0005); the root file system is an ext4 image in a qcow2 file on
                        virtio-blk (root=/dev/vda, no initramfs), ttyS0 as the console, the NIC
                        answering ping.

  devices_test.py --vmm PATH --init WISP_INIT --discovery cmdline|acpi [--vsock-helper BIN]

Success is decided by markers on the console, the VMM's exit status and the host's own reads,
never by timing. Needs root (taps, a network namespace), qemu-img and e2fsprogs (debugfs).
"""
import argparse
import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "virtio"))
import netns  # noqa: E402  (the virtio tests' namespace and bridge)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest_shell  # noqa: E402  (the guest script's retry and stamp)

GUEST_IP = "198.51.100.2"
GUEST_MAC = "02:00:00:00:02:02"
TAP = "wktap0"
# Each direction's TCP data: 1 MiB took ~50 s of emulated ring 0 (host to guest, under load);
# 256 KiB is still some 180 full-size segments each way.
TCP_BYTES = 256 << 10
PORT_TO_HOST, PORT_TO_GUEST = 7001, 7002
# the boot may share the cores with another (meson runs two tests at once) and other load:
# under both the cmdline boot reached only its ping at 300 s; meson's limit is 400
TIMEOUT = 380

APPLETS = "sh,cat,ls,mount,umount,ip,ping,nc,md5sum,head,od,echo,sync,readlink,wc,mkdir"

# The guest's script (busybox sh). Few processes (each costs seconds under PVM's emulator);
# every line the host checks starts with "wisp-dev:". Commands that die by a signal (PVM's busybox
# TLS crash, docs/guest-kernel.md) are retried; wrong answers never are. "wisp-dev-t:" lines
# time the steps (guest uptime). The blob the guest sends over TCP is the host's, in the
# initramfs (/blob): read from /dev/hwrng (Linux's hw_random reads a few cache lines per
# virtio-rng request) it cost minutes of emulated ring 0; /dev/hwrng is proven by its 16 bytes.
GUEST_SCRIPT = guest_shell.retry("wisp-dev") + guest_shell.stamp("wisp-dev") + r"""
echo "wisp-dev: start $1"
for d in /sys/bus/virtio/devices/*; do
    read -r id <$d/device
    drv=$(retry readlink $d/driver)
    echo "wisp-dev: virtio ${drv##*/} $id"
done
echo "wisp-dev: platform" $(retry ls /sys/bus/platform/devices)
stamp devices
if [ "$1" = cmdline ]; then
    mkdir -p /mnt/a /mnt/b
    retry mount -t ext4 /dev/vda /mnt/a && echo "wisp-dev: vda $(cat /mnt/a/hello.txt)"
    echo "written by the guest on vda" >/mnt/a/guest.txt
    retry umount /mnt/a
    retry mount -t ext4 /dev/vdb /mnt/b && echo "wisp-dev: vdb $(cat /mnt/b/hello.txt)"
    echo "written by the guest on vdb" >/mnt/b/guest.txt
    sync
    retry umount /mnt/b
    stamp disks
    read -r rng </sys/class/misc/hw_random/rng_current
    retry head -c 16 /dev/hwrng >/tmp/r
    echo "wisp-dev: hwrng $rng" $(retry od -An -tx1 /tmp/r)
fi
stamp hwrng
retry ip addr add GUEST_IP/24 dev eth0
retry ip link set eth0 up
retry ping -c 3 -W 5 HOST_IP >/tmp/ping.txt && echo "wisp-dev: ping ok"
stamp ping
if [ "$1" = cmdline ]; then
    retry nc HOST_IP PORT_TO_HOST </blob
    stamp tcp-out
    retry nc -l -p PORT_TO_GUEST >/tmp/in
    stamp tcp-in
    set -- $(retry md5sum /tmp/in)
    echo "wisp-dev: received $1 $(retry wc -c </tmp/in)"
    [ -x /bin/wisp-vsock-helper ] && /bin/wisp-vsock-helper 5000 6000
    stamp vsock
fi
echo "wisp-dev: done"
"""


class Failure(Exception):
    pass


def sh(*cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def kernel_dir():
    p = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                       capture_output=True, text=True)
    path = p.stdout.strip()
    if p.returncode != 0 or not os.path.isfile(os.path.join(path, "vmlinux")):
        raise Failure(f"the guest kernel is not built ({path or '?'}/vmlinux); run "
                      "guest/kernel/build.sh (scripts/test does)")
    return path


def cmdline_extra():
    return subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")],
                          capture_output=True, text=True, check=True).stdout.strip()


def script_text():
    s = GUEST_SCRIPT.replace("GUEST_IP", GUEST_IP).replace("HOST_IP", netns.HOST_IP)
    return s.replace("PORT_TO_HOST", str(PORT_TO_HOST)).replace("PORT_TO_GUEST",
                                                                str(PORT_TO_GUEST))


def data_disk(tmp, name, fmt, text):
    """An ext4 image holding hello.txt, as raw or converted to qcow2 with qemu-img."""
    d = os.path.join(tmp, name + ".d")
    os.mkdir(d)
    with open(os.path.join(d, "hello.txt"), "w") as f:
        f.write(text + "\n")
    raw = os.path.join(tmp, name + ".raw")
    sh(os.path.join(REPO, "scripts/wisp-mkrootfs"), "-o", raw, "-s", "16M", d)
    if fmt == "raw":
        return raw
    out = os.path.join(tmp, name + ".qcow2")
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out)
    return out


def read_guest_file(image, fmt, tmp, name):
    """The guest's file from an image, read on the host (qemu-img for qcow2, then debugfs)."""
    raw = image
    if fmt == "qcow2":
        sh("qemu-img", "check", image)
        raw = os.path.join(tmp, name + ".back.raw")
        sh("qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw)
    sh("e2fsck", "-fn", raw)
    return sh("debugfs", "-R", "cat /guest.txt", raw).strip()


def root_disk(tmp, init):
    """A qcow2 ext4 root file system: busybox, wisp-init as /sbin/init, the script."""
    d = os.path.join(tmp, "root.d")
    for sub in ("bin", "sbin", "proc", "sys", "dev", "tmp", "mnt"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    sh("cp", "/bin/busybox", os.path.join(d, "bin/busybox"))
    for a in APPLETS.split(","):
        os.symlink("busybox", os.path.join(d, "bin", a))
    with open(os.path.join(d, "dev.sh"), "w") as f:
        f.write(script_text())
    raw = os.path.join(tmp, "root.raw")
    sh(os.path.join(REPO, "scripts/wisp-mkrootfs"), "-o", raw, "-s", "32M", "--init", init, d)
    out = os.path.join(tmp, "root.qcow2")
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out)
    return out


def initramfs(tmp, init, blob, vsock_helper=None):
    script = os.path.join(tmp, "dev.sh")
    with open(script, "w") as f:
        f.write(script_text())
    blob_path = os.path.join(tmp, "blob")
    with open(blob_path, "wb") as f:
        f.write(blob)
    out = os.path.join(tmp, "initramfs.cpio")
    sh(os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", out, "--init", init,
       "--applets", APPLETS, "--add", f"{script}:/dev.sh", "--add", f"{blob_path}:/blob",
       *(["--add", f"{vsock_helper}:/bin/wisp-vsock-helper"] if vsock_helper else []))
    return out


class TcpPeer:
    """The host side of the TCP transfers: receives the guest's /blob (TCP_BYTES of random data
    the host put in the initramfs), then sends other TCP_BYTES to the guest's nc -l (both
    directions byte-exact: the host compares what it got, the guest prints the md5 of its)."""

    def __init__(self, blob):
        self.blob = blob
        self.received = b""
        self.sent = os.urandom(TCP_BYTES)
        self.error = None
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((netns.HOST_IP, PORT_TO_HOST))
        self.srv.listen(1)
        self.srv.settimeout(TIMEOUT)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.srv.accept()
            with conn:
                while chunk := conn.recv(65536):
                    self.received += chunk
            for _ in range(200):  # the guest's nc -l starts right after its nc exits
                try:
                    c = socket.create_connection((GUEST_IP, PORT_TO_GUEST), timeout=10)
                except OSError:
                    threading.Event().wait(0.5)
                    continue
                # connected: a send that stalls (the guest's kernel is slow under PVM) is an
                # error of its own, never a reason to connect again (nc -l took one connection)
                with c:
                    c.settimeout(TIMEOUT)
                    c.sendall(self.sent)
                return
            self.error = "could not connect to the guest's nc -l"
        except OSError as e:
            self.error = str(e)


class VsockPeer:
    """The host side of the vsock checks: an echo server at <uds>_5000, and a host client that
    asks for guest port 6000 (retrying while nothing listens there: the guest resets it)."""

    def __init__(self, tmp):
        self.uds = os.path.join(tmp, "v.sock")
        self.ok_line = None
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.uds + "_5000")
        self.srv.listen(1)
        self.srv.settimeout(TIMEOUT)
        threading.Thread(target=self.echo, daemon=True).start()
        threading.Thread(target=self.connect, daemon=True).start()

    def echo(self):
        try:
            c, _ = self.srv.accept()
            with c:
                while chunk := c.recv(65536):
                    c.sendall(chunk)
        except OSError:
            pass

    def connect(self):
        for _ in range(2 * TIMEOUT):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(30)
                    s.connect(self.uds)
                    s.sendall(b"CONNECT 6000\n")
                    line = s.recv(64)
                    if line.startswith(b"OK "):
                        self.ok_line = line
                        s.sendall(b"hello from the host over vsock\n")
                        return
            except OSError:
                pass
            threading.Event().wait(0.5)


def boot(args, tmp):
    k = kernel_dir()
    peer = None
    bridge = netns.Bridge()
    bridge.add_tap(TAP)
    cmd = [args.vmm, "--kernel", os.path.join(k, "vmlinux"), "--mem", "192", "--cpus", "1",
           "--net", f"tap={TAP},mac={GUEST_MAC}", "--rng"]
    extra = cmdline_extra()
    disks = {}
    if args.discovery == "cmdline":
        disks["vda"] = ("raw", data_disk(tmp, "a", "raw", "hello from the host on vda"))
        disks["vdb"] = ("qcow2", data_disk(tmp, "b", "qcow2", "hello from the host on vdb"))
        vsock = VsockPeer(tmp) if args.vsock_helper else None
        if vsock:
            cmd += ["--vsock", f"cid=3,uds={vsock.uds}"]
        peer = TcpPeer(os.urandom(TCP_BYTES))
        cmd += ["--initrd", initramfs(tmp, args.init, peer.blob, args.vsock_helper),
                "--console", "virtio",
                "--drive", f"path={disks['vda'][1]},format=raw",
                "--drive", f"path={disks['vdb'][1]},format=qcow2",
                "--cmdline", f"console=hvc0 reboot=k panic=-1 acpi=off {extra} -- /bin/sh "
                             "/dev.sh cmdline"]
    else:
        root = root_disk(tmp, args.init)
        cmd += ["--drive", f"path={root},format=qcow2", "--cmdline-devices", "off",
                "--cmdline", f"console=ttyS0 reboot=k panic=-1 root=/dev/vda rootfstype=ext4 rw "
                             f"init=/sbin/init {extra} -- /bin/sh /dev.sh acpi"]
    if args.discovery == "cmdline":
        peer.vsock = vsock
    print("$ " + " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"the guest did not end within {TIMEOUT} s; console:\n"
                      f"{(e.stdout or b'').decode(errors='replace')}")
    out = p.stdout.decode(errors="replace").replace("\r\n", "\n")
    print(out + p.stderr.decode(errors="replace") + f"exit status {p.returncode}")
    return p.returncode, out, disks, peer


def expect(out, pattern, what):
    m = re.search(pattern, out, re.M)
    if not m:
        raise Failure(f"the console lacks {what} (/{pattern}/)")
    return m


def check(args, rc, out, disks, peer, tmp):
    if rc != 0:
        raise Failure(f"wisp-vmm exited with {rc}, expected 0 (the script's status)")
    expect(out, r"^wisp-dev: done$", "the end of the script")
    for driver, dev_id in (("virtio_blk", 2), ("virtio_net", 1), ("virtio_rng", 4)):
        expect(out, rf"^wisp-dev: virtio {driver} 0x{dev_id:04x}$", f"a {driver} device")
    platform = expect(out, r"^wisp-dev: platform (.*)$", "the platform devices").group(1)
    if args.discovery == "acpi":
        if "LNRO0005" not in platform or "virtio-mmio." in platform:
            raise Failure(f"with --cmdline-devices off the devices must come from ACPI "
                          f"(LNRO0005) only; platform devices: {platform}")
    else:
        if "virtio-mmio." not in platform:
            raise Failure(f"with acpi=off the devices must come from the command line; "
                          f"platform devices: {platform}")
        expect(out, r"^wisp-dev: virtio virtio_console 0x0003$", "the virtio console")
        expect(out, r"^wisp-dev: vda hello from the host on vda$", "the raw disk's file")
        expect(out, r"^wisp-dev: vdb hello from the host on vdb$", "the qcow2 disk's file")
        for name, (fmt, image) in disks.items():
            got = read_guest_file(image, fmt, tmp, name)
            if got != f"written by the guest on {name}":
                raise Failure(f"{name} ({fmt}): the host reads {got!r} from the guest's file")
        expect(out, r"^wisp-dev: hwrng virtio_rng\.0( [0-9a-f]{2}){16}$", "/dev/hwrng bytes")
        peer.thread.join(60)
        if peer.error:
            raise Failure(f"TCP: {peer.error}")
        want = f"{hashlib.md5(peer.sent).hexdigest()} {TCP_BYTES}"
        got = expect(out, r"^wisp-dev: received (.*)$", "the guest's md5 of the host's data")
        if got.group(1).strip() != want:
            raise Failure(f"TCP host -> guest: the guest got {got.group(1)}, the host sent {want}")
        if peer.received != peer.blob:
            raise Failure(f"TCP guest -> host: {len(peer.received)} bytes, md5 "
                          f"{hashlib.md5(peer.received).hexdigest()}; the guest's /blob has "
                          f"{TCP_BYTES}, md5 {hashlib.md5(peer.blob).hexdigest()}")
    expect(out, r"^wisp-dev: ping ok$", "ping answered by the host")
    if args.discovery == "cmdline" and args.vsock_helper:
        expect(out, r"^wisp-dev: virtio vmw_vsock_virtio_transport 0x0013$", "the vsock device")
        expect(out, r"^wisp-dev: vsock echo hello from linux over vsock$",
               "the guest's connection to <uds>_5000, echoed")
        expect(out, r"^wisp-dev: vsock got hello from the host over vsock$",
               "the host's CONNECT 6000")
        if not (peer.vsock.ok_line or b"").startswith(b"OK "):
            raise Failure(f"CONNECT 6000 was answered {peer.vsock.ok_line!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--init", required=True, help="guest/init/wisp-init")
    ap.add_argument("--discovery", required=True, choices=("cmdline", "acpi"))
    ap.add_argument("--vsock-helper", help="tests/kernel/wisp-vsock-helper (cmdline boot)")
    args = ap.parse_args()
    try:
        netns.enter()
        with tempfile.TemporaryDirectory(dir=os.environ.get("WISP_CACHE", "/var/tmp")) as tmp:
            rc, out, disks, peer = boot(args, tmp)
            check(args, rc, out, disks, peer, tmp)
    except (Failure, netns.NetError) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
