"""The host side of the virtio-net tests (virtio_test.py, cases net-*): a network namespace of
the test's own, with a bridge that answers as 198.51.100.1 and the taps the VMM uses.

enter() moves the test process into a new, anonymous network namespace (unshare(CLONE_NEWNET));
every VMM it starts inherits it. Nothing is made in the host's own namespace, no host interface
or route is touched, and the namespace with its bridge and taps disappears with the test
process whatever way it ends (Bridge.close() also deletes them explicitly). The subnet is
198.51.100.0/24 (TEST-NET-2).
"""
import ctypes
import fcntl
import os
import select
import struct
import subprocess

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000

PEER_MAC = "02:00:00:00:01:01"  # the bridge: what the guest talks to
HOST_IP = "198.51.100.1"
CAPTURE_MAC = "02:00:00:00:09:09"  # frames to it are flooded to the capture tap
CAPTURE_TAP = "wvcap"


class NetError(Exception):
    pass


def ip(*args, check=True):
    p = subprocess.run(["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def enter():
    """This process (and every child from now on) in a new network namespace."""
    if os.geteuid() != 0:
        raise NetError("the virtio-net tests need root (network namespaces, taps, bridges)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise NetError(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
    # no IPv6 autoconfiguration chatter on the bridge (this namespace's sysctls only)
    for conf in ("all", "default"):
        path = f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("1")


class Bridge:
    """br0 (PEER_MAC, HOST_IP/24) in the current namespace, with taps as its ports."""

    def __init__(self):
        self.taps = []
        self.capture_fd = None
        ip("link", "add", "br0", "address", PEER_MAC, "type", "bridge")
        ip("addr", "add", HOST_IP + "/24", "dev", "br0")
        ip("link", "set", "br0", "up")

    def add_tap(self, name):
        """A persistent tap for the VMM to open by name, already a port of the bridge."""
        ip("tuntap", "add", "dev", name, "mode", "tap")
        self.taps.append(name)
        self.attach(name)

    def attach(self, name):
        ip("link", "set", name, "master", "br0", "up")

    def exists(self, name):
        return ip("link", "show", name, check=False).returncode == 0

    def open_capture(self):
        """A tap of the test's own on the bridge, without offloads: the kernel completes any
        partial checksum of a frame before it reaches the reader."""
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        ifr = struct.pack("16sH22x", CAPTURE_TAP.encode(), IFF_TAP | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
        self.capture_fd = fd
        self.attach(CAPTURE_TAP)

    def captured(self, timeout=1.0):
        """The frames the capture tap got so far."""
        frames = []
        while select.select([self.capture_fd], [], [], timeout)[0]:
            try:
                frames.append(os.read(self.capture_fd, 65536))
            except BlockingIOError:
                break
            timeout = 0.2
        return frames

    def neighbours(self):
        """{ip: mac} of the bridge's neighbour table."""
        out = ip("neigh", "show", "dev", "br0").stdout
        table = {}
        for line in out.splitlines():
            words = line.split()
            if "lladdr" in words:
                table[words[0]] = words[words.index("lladdr") + 1]
        return table

    def close(self):
        if self.capture_fd is not None:
            os.close(self.capture_fd)
        for name in self.taps:
            ip("link", "del", name, check=False)
        ip("link", "del", "br0", check=False)


def inet_csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def icmp_echo(dst_mac, src_mac, src_ip, dst_ip, ip_id, seq, size, ident=0x5749):
    """The echo request guest/virtio_net.c builds (payload byte i = seq * 7 + i)."""
    payload = bytes((seq * 7 + i) & 0xFF for i in range(size))
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", inet_csum(icmp)) + icmp[4:]
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ip_id, 0, 64, 1, 0,
                      bytes(map(int, src_ip.split("."))), bytes(map(int, dst_ip.split("."))))
    iph = iph[:10] + struct.pack("!H", inet_csum(iph)) + iph[12:]
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + b"\x08\x00" + iph + icmp
