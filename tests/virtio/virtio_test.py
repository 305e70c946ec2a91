#!/usr/bin/env python3
"""Boots a ring-3 virtio test guest (guest/virtio_*.c) in wisp-vmm, or in QEMU microvm as the
reference, with the devices its case needs, and checks the guest's verdict (exit status 0 and its
"ok" line) plus what the host can see (file contents, frames, console bytes).

    virtio_test.py --vmm PATH|qemu --guest ELF --case NAME

The guest finds its devices from virtio_mmio.device= on its command line: wisp-vmm writes them
(--cmdline-devices on, the default), QEMU microvm with acpi=off adds the same. Each case is a
function below returning the device arguments for either VMM, the guest command line and a
check run after the guest ended. Exits 0 on success, 1 with a message on failure.
"""
import argparse
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 60


class Failure(Exception):
    pass


class Skip(Exception):  # meson's SKIP (status 77): what the case needs is not on this machine
    pass


QEMU = ["qemu-system-x86_64", "-enable-kvm",
        "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off,acpi=off",
        "-cpu", "host,-arch-capabilities", "-m", "128", "-nographic", "-nodefaults",
        "-serial", "stdio", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
        "-global", "virtio-mmio.force-legacy=false"]


def run(vmm, elf, wisp_args, qemu_args, cmdline):
    if vmm == "qemu":
        cmd = QEMU + qemu_args + ["-kernel", elf, "-append", cmdline]
    else:
        cmd = [vmm, "--kernel", elf, "--mem", "128", "--cmdline", cmdline] + wisp_args
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"{' '.join(cmd)} did not end within {TIMEOUT} s; output:\n"
                      f"{(e.stdout or b'').decode(errors='replace')}")
    out = p.stdout.decode(errors="replace").replace("\r\n", "\n")
    err = p.stderr.decode(errors="replace")
    print(f"$ {' '.join(cmd)}\n{out}{err}exit status {p.returncode}")
    # QEMU's isa-debug-exit reports 2V+1
    status = p.returncode >> 1 if vmm == "qemu" and p.returncode % 2 == 1 else p.returncode
    return status, out, err


def expect_ok(status, out, prefix):
    if status != 0:
        raise Failure(f"the guest ended with status {status}, expected 0")
    if not any(line.startswith(prefix + " ok") for line in out.split("\n")):
        raise Failure(f"the serial output lacks the line '{prefix} ok ...'")


def case_rng(vmm, elf, tmp):
    status, out, _ = run(vmm, elf, ["--rng"], ["-device", "virtio-rng-device"], "")
    expect_ok(status, out, "rng:")


def case_rng_event_idx(vmm, elf, tmp):
    # VIRTIO_F_RING_EVENT_IDX (bit 29) and INDIRECT_DESC (28), as Linux negotiates them
    status, out, _ = run(vmm, elf, ["--rng"], ["-device", "virtio-rng-device"],
                         f"virtio.features={(1 << 29) | (1 << 28)}")
    expect_ok(status, out, "rng:")


def case_rng_ratelimit(vmm, elf, tmp):
    # 1000 bytes/s with a burst of 100: a 4 KiB request gets at most what the bucket holds
    if vmm == "qemu":
        qemu = ["-object", "rng-random,id=r0,filename=/dev/urandom",
                "-device", "virtio-rng-device,rng=r0,max-bytes=100,period=1000"]
    else:
        qemu = []
    status, out, _ = run(vmm, elf, ["--rng=bps=1000,burst=100"], qemu, "rng.expect=100")
    expect_ok(status, out, "rng:")


# ---- virtio-console (guest/virtio_console.c): the console's host side is stdio ----

def console_cmd(vmm, elf, tmp, cmdline):
    """wisp-vmm --console virtio (stdio serves hvc0; COM1 is discarded), or QEMU with a
    virtconsole on stdio and COM1 in tmp/com1.log."""
    if vmm == "qemu":
        i = QEMU.index("-serial")
        return (QEMU[:i + 1] + [f"file:{tmp}/com1.log"] + QEMU[i + 2:] +
                ["-chardev", "stdio,id=c0", "-device", "virtio-serial-device",
                 "-device", "virtconsole,chardev=c0", "-kernel", elf, "-append", cmdline])
    return [vmm, "--kernel", elf, "--mem", "128", "--console", "virtio", "--cmdline",
            cmdline + " console.strict=1"]


def console_run(vmm, cmd, stdin_data=b"", stall=0.0, chunk=65536, pause=0.0):
    """Runs cmd with stdin_data on a pipe (written by a thread, then closed); stdout is not
    read for `stall` seconds, then read `chunk` bytes at a time with `pause` between reads.
    Returns (status, stdout bytes, stderr text)."""
    print(f"$ {' '.join(cmd)}")
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)

    def feed():
        try:
            p.stdin.write(stdin_data)
            p.stdin.close()
        except BrokenPipeError:
            pass
    errs = []
    threads = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=lambda: errs.append(p.stderr.read()), daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT
    time.sleep(stall)
    out = bytearray()
    while time.monotonic() < deadline:
        if not select.select([p.stdout], [], [], 0.5)[0]:
            continue
        data = os.read(p.stdout.fileno(), chunk)
        if not data:
            break
        out += data
        time.sleep(pause)
    try:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise Failure(f"the VM did not end within {TIMEOUT} s; {len(out)} bytes of output, "
                      f"ending {bytes(out[-200:])!r}")
    threads[1].join(5)
    err = (errs[0] if errs else b"").decode(errors="replace")
    status = p.returncode >> 1 if vmm == "qemu" and p.returncode % 2 == 1 else p.returncode
    print(f"{len(out)} bytes on stdout, ending {bytes(out[-80:])!r}\n{err}exit status "
          f"{p.returncode}")
    return status, bytes(out), err


def console_pattern(n):
    """The stream guest/virtio_console.c computes: every byte value occurs."""
    return bytes((i * 31 + (i >> 8) + (i >> 16)) & 0xff for i in range(n))


def expect_bytes(got, want, what):
    if got == want:
        return
    at = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
              min(len(got), len(want)))
    raise Failure(f"{what}: {len(got)} bytes, expected {len(want)}; they differ from byte {at}: "
                  f"got {got[at:at + 40]!r}, expected {want[at:at + 40]!r}")


def case_console_output(vmm, elf, tmp):
    # 384 KiB: six times the 64 KiB output buffer. Nobody reads for a second, so the pipe
    # (64 KiB) and the buffer fill and the device must hold the guest's chains, then the test
    # reads 4 KiB at a time. Every byte must arrive, in order; COM1's line must not.
    n = 384 * 1024
    cmd = console_cmd(vmm, elf, tmp, f"console.case=output console.bytes={n}")
    status, out, _ = console_run(vmm, cmd, stall=1.0, chunk=4096, pause=0.002)
    if b"com1:" in out:
        raise Failure("with --console virtio, COM1's output reached stdout")
    want = b"emerg\n" + console_pattern(n) + f"console: ok output {n}\n".encode()
    if status != 0:
        raise Failure(f"the guest ended with status {status}, expected 0")
    if vmm != "qemu":
        expect_bytes(out, want, "the virtio console's output")
        return
    # QEMU's virtconsole drops what its chardev does not take at once (hw/char/virtio-console.c,
    # flush_buf: "silently dropping console data on EAGAIN"), even with a fast reader: the
    # reference shows the guest's side (every chain used, its verdict on COM1), not the bytes.
    print(f"QEMU delivered {len(out)} of {len(want)} bytes")
    if not out.startswith(b"emerg\n"):
        raise Failure("QEMU's output does not start with the emergency write")
    com1 = open(f"{tmp}/com1.log").read()
    if "com1: this line" not in com1 or "console: ok output" not in com1:
        raise Failure("the guest's COM1 lines are missing from QEMU's COM1 log")


def case_console_input(vmm, elf, tmp):
    # 100000 bytes through a pipe on stdin, written at once (more than the pipe holds) while
    # the guest has posted no receive buffer yet: they must wait, then arrive byte-exact.
    n = 100000
    cmd = console_cmd(vmm, elf, tmp, f"console.case=input console.bytes={n}")
    status, out, _ = console_run(vmm, cmd, stdin_data=console_pattern(n))
    expect_bytes(out, f"console: ok input {n}\n".encode(), "the virtio console's output")
    if status != 0:
        raise Failure(f"the guest ended with status {status}, expected 0")


def case_console_malformed(vmm, elf, tmp):
    # Bad transmit chains: each one sets DEVICE_NEEDS_RESET, and after a reset the console
    # works again; a device-writable buffer on the transmitq is ignored.
    cmd = console_cmd(vmm, elf, tmp, "console.case=malformed")
    status, out, err = console_run(vmm, cmd)
    lines = ["malformed start", "readable part", "after out-of-RAM", "after loop",
             "after bad head"] + (["after avail jump"] if vmm != "qemu" else []) + ["ok malformed"]
    expect_bytes(out, "".join(f"console: {s}\n" for s in lines).encode(),
                 "the virtio console's output")
    if status != 0:
        raise Failure(f"the guest ended with status {status}, expected 0")
    if vmm != "qemu":
        for needle in ["outside guest RAM", "chain longer than the queue", "beyond the queue size",
                       "more than the queue size"]:
            if not any("needs reset" in line and needle in line for line in err.split("\n")):
                raise Failure(f"wisp-vmm's stderr lacks a 'device needs reset: ...{needle}' line")


def case_console_flood(vmm, elf, tmp):
    # The guest transmits forever into a pipe nobody reads: SIGTERM still ends the VM at once
    # (wisp-vmm gives the buffered output 0.5 s, then exits), with status 0.
    cmd = console_cmd(vmm, elf, tmp, "console.case=flood")
    print(f"$ {' '.join(cmd)}")
    r, w = os.pipe()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        time.sleep(1.0)  # long enough to fill the pipe, the output buffer and the ring
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise Failure("SIGTERM did not end the VM within 5 s (killed)")
        dt = time.monotonic() - t0
    finally:
        os.close(r)
    print(f"exit status {p.returncode} {dt * 1000:.0f} ms after SIGTERM")
    if p.returncode != 0 or dt >= 1.0:
        raise Failure(f"status {p.returncode} {dt * 1000:.0f} ms after SIGTERM; expected 0 "
                      f"within a second")


# ---- virtio-net (guest/virtio_net.c) through taps on a bridge in a namespace (netns.py) ----

class NetSession:
    """The test's namespace and bridge, and the NICs' taps; deleted on the way out."""

    def __enter__(self):
        import netns
        self.ns = netns
        try:
            netns.enter()
            self.bridge = netns.Bridge()
        except netns.NetError as e:
            raise Failure(str(e))
        return self

    def __exit__(self, *exc):
        self.bridge.close()

    def taps(self, *names):
        try:
            for name in names:
                self.bridge.add_tap(name)
        except self.ns.NetError as e:
            raise Failure(str(e))


def net_args(vmm, nics):
    """Device options for NICs given as (tap, mac or None, extra wisp-vmm keys)."""
    args = []
    for i, (tap, mac, extra) in enumerate(nics):
        if vmm == "qemu":
            args += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no,vhost=off",
                     "-device", f"virtio-net-device,netdev=n{i}" + (f",mac={mac}" if mac else "")]
        else:
            args += ["--net", f"tap={tap}" + (f",mac={mac}" if mac else "") + extra]
    return args


def net_cmdline(*extra):
    """net.retry=1 always: a tap's carrier change reaches the bridge through the kernel's
    linkwatch, which runs at most once a second, so a port whose previous VM has just closed
    it (a case's second run) may drop a first ARP request sent within that second."""
    import netns
    retry = [] if any(e.startswith("net.retry=") for e in extra) else ["net.retry=1"]
    return " ".join([f"net.peer={netns.PEER_MAC}", *retry, *extra])


def net_check(s, vmm, status, out, nics=1, neighbours=True):
    """The guest's verdict, and what the host kernel saw: each NIC's MAC (from its config
    space) in the bridge's neighbour table for its address."""
    expect_ok(status, out, "net:")
    if vmm != "qemu" and "num_buffers 0" in out:
        raise Failure("num_buffers was 0 without MRG_RXBUF (virtio 1.2 §5.1.6.4.1: 1)")
    if not neighbours:
        return
    table = s.bridge.neighbours()
    seen = set()
    for line in out.split("\n"):
        w = line.split()
        if len(w) >= 6 and w[0] == "net:" and w[1].startswith("nic") and w[2] == "mac":
            if table.get(w[5]) != w[3]:
                raise Failure(f"the host's neighbour table has {table.get(w[5])} for {w[5]}, "
                              f"not the guest's MAC {w[3]}: {table}")
            seen.add(w[1])
    if len(seen) != nics:
        raise Failure(f"{len(seen)} NICs reported, expected {nics}")


def case_net(vmm, elf, tmp):
    # ARP and ICMP echo with the host kernel, byte-exact, several frames; the MAC from config
    with NetSession() as s:
        s.taps("wv0")
        mac = "02:00:00:00:00:10"
        status, out, _ = run(vmm, elf, *[net_args(vmm, [("wv0", mac, "")])] * 2,
                             net_cmdline(f"net.mac0={mac}", "net.pings=8"))
        net_check(s, vmm, status, out)


def case_net_mrg(vmm, elf, tmp):
    # echo replies of 1442 bytes into 128-byte buffers: each spans 12 (VIRTIO_NET_F_MRG_RXBUF),
    # more than the 32-entry ring holds for 8 replies at once
    with NetSession() as s:
        s.taps("wv0")
        status, out, _ = run(vmm, elf, *[net_args(vmm, [("wv0", None, "")])] * 2,
                             net_cmdline("net.mrg=1", "net.rxbuf=128", "net.pings=8",
                                         "net.size=1400"))
        net_check(s, vmm, status, out)
        if "came in 12 buffers" not in out:
            raise Failure("no frame was spread over several receive buffers")


def case_net_event_idx(vmm, elf, tmp):
    # the same with VIRTIO_F_RING_EVENT_IDX and INDIRECT_DESC, as Linux negotiates them: the
    # device asks for the driver's notification (avail_event) when it runs out of buffers
    # in the middle of a frame
    with NetSession() as s:
        s.taps("wv0")
        status, out, _ = run(vmm, elf, *[net_args(vmm, [("wv0", None, "")])] * 2,
                             net_cmdline("net.mrg=1", "net.rxbuf=128", "net.pings=8",
                                         "net.size=1400", f"virtio.features={(1 << 29) | (1 << 28)}"))
        net_check(s, vmm, status, out)


def case_net_two(vmm, elf, tmp):
    # two NICs on two taps: one MAC given, the other derived (wisp-vmm) or QEMU's default
    with NetSession() as s:
        s.taps("wv0", "wv1")
        nics = [("wv0", "02:00:00:00:00:10", ""), ("wv1", None, "")]
        status, out, _ = run(vmm, elf, *[net_args(vmm, nics)] * 2,
                             net_cmdline("net.nics=2", "net.mac0=02:00:00:00:00:10"))
        net_check(s, vmm, status, out, nics=2)


def case_net_csum(vmm, elf, tmp):
    # VIRTIO_NET_F_CSUM: echo requests with NEEDS_CSUM and an empty ICMP checksum are answered
    # (the host took the header), and the capture tap gets a frame whose checksum the host
    # completed, byte-exact
    with NetSession() as s:
        s.taps("wv0")
        s.bridge.open_capture()
        mac = "02:00:00:00:00:10"
        status, out, _ = run(vmm, elf, *[net_args(vmm, [("wv0", mac, "")])] * 2,
                             net_cmdline("net.csum=1", f"net.mac0={mac}"))
        net_check(s, vmm, status, out)
        ns = s.ns
        want = ns.icmp_echo(ns.CAPTURE_MAC, mac, "198.51.100.10", "198.51.100.99", 0x99, 99, 100)
        got = [f for f in s.bridge.captured() if f[:6] == ns.mac_bytes(ns.CAPTURE_MAC)]
        if got != [want]:
            raise Failure(f"the capture tap got {[f.hex() for f in got]}, expected [{want.hex()}]")


def case_net_ratelimit(vmm, elf, tmp):
    # 10000 bytes/s with a 1000-byte burst, transmit then receive: 8 frames of 1042 bytes all
    # arrive (nothing dropped), and take at least (8 * 1042 - 1000) / 10000 s ~ 0.73 s
    # (a lower bound: a slow machine cannot fail it). QEMU has no limiter: the plain verdict.
    with NetSession() as s:
        s.taps("wv0")
        for d in ("tx", "rx"):
            t0 = time.monotonic()
            status, out, _ = run(vmm, elf, net_args(vmm, [("wv0", None, f",{d}-bps=10000,"
                                                            f"{d}-burst=1000")]),
                                 net_args(vmm, [("wv0", None, "")]),
                                 net_cmdline("net.pings=8", "net.size=1000"))
            dt = time.monotonic() - t0
            net_check(s, vmm, status, out)
            print(f"{d} limited: {dt:.2f} s")
            if vmm != "qemu" and dt < 0.5:
                raise Failure(f"8 frames took {dt:.2f} s at {d}-bps=10000: not limited")


def case_net_vhost(vmm, elf, tmp):
    # vhost=on is refused before the VM starts (status 2): no vhost-net data path yet (and
    # this machine has no /dev/vhost-net, where QEMU fails too); vhost=auto moves frames in
    # user space
    with NetSession() as s:
        s.taps("wv0")
        if vmm == "qemu":
            on = ["-netdev", "tap,id=n0,ifname=wv0,script=no,downscript=no,vhost=on",
                  "-device", "virtio-net-device,netdev=n0"]
        else:
            on = ["--net", "tap=wv0,vhost=on"]
        status, out, err = run(vmm, elf, on, on, net_cmdline())
        if vmm != "qemu" and (status != 2 or "vhost=on" not in err or "net:" in out):
            raise Failure(f"vhost=on: status {status}, expected 2 and a message naming it")
        if vmm != "qemu" and "/dev/vhost-net" not in err:
            raise Failure(f"vhost=on: the message does not name /dev/vhost-net: {err!r}")
        if vmm != "qemu":  # rate limits cannot apply to frames the kernel moves
            status, out, err = run(vmm, elf, ["--net", "tap=wv0,vhost=on,rx-bps=100000"], [],
                                   net_cmdline())
            if status != 2 or "rate limits" not in err or "net:" in out:
                raise Failure(f"vhost=on,rx-bps: status {status}, expected 2 naming the limits")
        if vmm == "qemu" and not os.path.exists("/dev/vhost-net") and status == 0:
            raise Failure("QEMU started with vhost=on without /dev/vhost-net")
        status, out, _ = run(vmm, elf, net_args(vmm, [("wv0", None, ",vhost=auto")]),
                             net_args(vmm, [("wv0", None, "")]), net_cmdline())
        net_check(s, vmm, status, out)


def case_net_vhost_on(vmm, elf, tmp):
    # the ring-3 net guest with vhost=on, where /dev/vhost-net exists (SKIP, status 77,
    # elsewhere). wisp-vmm's vhost data path is not built yet, so this fails on such a machine
    # until it is: it is the test that data path has to pass.
    if not os.path.exists("/dev/vhost-net"):
        raise Skip("/dev/vhost-net does not exist on this machine")
    with NetSession() as s:
        s.taps("wv0")
        status, out, _ = run(vmm, elf, net_args(vmm, [("wv0", None, ",vhost=on")]),
                             net_args(vmm, [("wv0", None, "")]), net_cmdline())
        net_check(s, vmm, status, out)


def case_net_malformed(vmm, elf, tmp):
    # (wisp-vmm) unusable receive chains come back with length 0; malformed transmit chains
    # come back with length 0 and their frames never reach the host (the capture tap sees only
    # the good frame after them); an available index beyond the ring sets DEVICE_NEEDS_RESET,
    # logged once, and the NIC works again after the driver's reset
    with NetSession() as s:
        s.taps("wv0")
        s.bridge.open_capture()
        mac = "02:00:00:00:00:10"
        status, out, err = run(vmm, elf, *[net_args(vmm, [("wv0", mac, "")])] * 2,
                               net_cmdline("net.malformed=1", "net.pings=2"))
        net_check(s, vmm, status, out)
        for want in ["2 unusable receive chains returned unused", "DEVICE_NEEDS_RESET after",
                     "the NIC works again"]:
            if want not in out:
                raise Failure(f"the guest did not print '{want}'")
        for want in ["transmit frame dropped", "device needs reset"]:
            if want not in err:
                raise Failure(f"wisp-vmm did not log '{want}'")
        ns = s.ns
        good = ns.icmp_echo(ns.CAPTURE_MAC, mac, "198.51.100.10", "198.51.100.99", 0x99, 99, 100)
        got = [f for f in s.bridge.captured() if f[:6] == ns.mac_bytes(ns.CAPTURE_MAC)]
        if got != [good]:
            raise Failure(f"the capture tap got {[f.hex() for f in got]}, expected only the "
                          f"good frame {good.hex()}")


def net_start(vmm, elf, nics, cmdline, prefix=()):
    """run() without waiting, for cases that act while the VM runs."""
    if vmm == "qemu":
        cmd = QEMU + net_args(vmm, nics) + ["-kernel", elf, "-append", cmdline]
    else:
        cmd = [vmm, "--kernel", elf, "--mem", "128", "--cmdline", cmdline] + net_args(vmm, nics)
    cmd = list(prefix) + cmd
    print(f"$ {' '.join(cmd)}")
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def net_finish(vmm, p):
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise Failure(f"the VM did not end within {TIMEOUT} s")
    out = out.decode(errors="replace").replace("\r\n", "\n")
    err = err.decode(errors="replace")
    print(f"{out}{err}exit status {p.returncode}")
    status = p.returncode >> 1 if vmm == "qemu" and p.returncode % 2 == 1 else p.returncode
    return status, out, err


def case_net_tap_create(vmm, elf, tmp):
    # a tap that does not exist is created (the VMM may: root); the test puts it on the bridge
    # once it appears, the guest repeats its ARP request until answered; the tap is gone after
    with NetSession() as s:
        p = net_start(vmm, elf, [("wvnew", "02:00:00:00:00:10", "")],
                      net_cmdline("net.pings=2"))
        try:
            deadline = time.monotonic() + 10
            while not s.bridge.exists("wvnew") and time.monotonic() < deadline and \
                    p.poll() is None:
                time.sleep(0.01)
            if s.bridge.exists("wvnew"):
                s.bridge.attach("wvnew")
        finally:
            status, out, _ = net_finish(vmm, p)
        # the tap went away with the VM, and the kernel may forget the neighbours learnt on it
        # (sometimes before the table is read): the guest's byte-exact replies are the proof
        net_check(s, vmm, status, out, neighbours=False)
        if s.bridge.exists("wvnew"):
            raise Failure("the tap the VMM created is still there after it ended")


def case_net_tap_denied(vmm, elf, tmp):
    # without CAP_NET_ADMIN a missing tap cannot be created: a clear error naming it
    with NetSession():
        drop = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"]
        p = net_start(vmm, elf, [("wvmissing", None, "")], net_cmdline(), prefix=drop)
        status, out, err = net_finish(vmm, p)
        if "wvmissing" not in err or "net:" in out:  # (QEMU fails with 1, as a guest passes)
            raise Failure(f"status {status}; expected a failure naming the tap before the guest")
        # a tap that cannot be had is a usage error (status 2), found before any KVM work
        if vmm != "qemu" and (status != 2 or "--net: tap 'wvmissing' does not exist, and "
                              "wisp-vmm may not create it" not in err):
            raise Failure("expected status 2 and '--net: tap 'wvmissing' does not exist, and "
                          "wisp-vmm may not create it'")


# ---- virtio-blk (guest/virtio_blk.c): images made here, checked on the host after the VM ----

MIB = 1 << 20
GUEST_TAG = 0x77  # the guest's own pattern (guest/virtio_blk.c)


def blk_pattern(offset, length, tag):
    """The bytes guest/virtio_blk.c's pattern_word() gives [offset, offset + length)."""
    mask = (1 << 64) - 1
    words = []
    for off in range(offset, offset + length, 8):
        x = ((off ^ (tag << 56)) * 0x9e3779b97f4a7c15) & mask
        words.append(x ^ (x >> 29))
    return struct.pack(f"<{len(words)}Q", *words)


def sh(*cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: status {p.returncode}\n{p.stdout.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


def blk_image(tmp, name, fmt, size, tag=1, fill=False):
    """An image of `size` bytes holding the host pattern `tag` in its first MiB, the rest zero
    (sparse) or, with fill, 0xa5 (allocated). qcow2 images are converted from that raw file."""
    raw = os.path.join(tmp, name + ".raw")
    with open(raw, "wb") as f:
        f.write(blk_pattern(0, MIB, tag))
        if fill:
            f.write(b"\xa5" * (size - MIB))
        f.truncate(size)
    if fmt == "raw":
        return raw
    path = os.path.join(tmp, name + ".qcow2")
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path)
    os.unlink(raw)
    return path


def blk_contents(tmp, path, fmt):
    """The guest-visible bytes of an image after the VM ended; a qcow2 must check clean."""
    if fmt == "raw":
        with open(path, "rb") as f:
            return f.read()
    sh("qemu-img", "check", path)
    raw = path + ".out.raw"
    sh("qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, raw)
    with open(raw, "rb") as f:
        return f.read()


def blk_drive_args(vmm, drives):
    """Device arguments for drives: dicts with path, fmt (None: probed by wisp), serial, and
    wisp / qemu / qdev extras."""
    args = []
    for i, d in enumerate(drives):
        if vmm == "qemu":
            fmt = f",format={d['fmt']}" if d["fmt"] else ""
            args += ["-drive", f"file={d['path']},if=none,id=d{i}{fmt}" + d.get("qemu", ""),
                     "-device", f"virtio-blk-device,drive=d{i},serial={d['serial']}"
                     + d.get("qdev", "")]
        else:
            fmt = f",format={d['fmt']}" if d["fmt"] else ""
            args += ["--drive", f"path={d['path']}{fmt},serial={d['serial']}" + d.get("wisp", "")]
    return args


def blk_strict(vmm):
    """Where QEMU answers a malformed request differently, the guest checks wisp's answer."""
    return "" if vmm == "qemu" else " blk.strict=1"


def blk_run(vmm, elf, drives, cmdline, wisp_flags=()):
    args = blk_drive_args(vmm, drives)
    return run(vmm, elf, args + list(wisp_flags) if vmm != "qemu" else [],
               args if vmm == "qemu" else [], cmdline)


def expect_range(data, start, length, want, what):
    got = data[start:start + length]
    if got != want:
        at = next(i for i in range(min(len(got), len(want))) if got[i] != want[i])
        raise Failure(f"{what}: the image differs at byte {start + at}")


def blk_rw(vmm, elf, tmp, fmt, wisp_extra="", qemu_extra="", cmdline="", wisp_flags=()):
    # 8 MiB; the host's pattern in the first MiB; the guest writes its own at 2 MiB..3.25 MiB
    size = 8 * MIB
    path = blk_image(tmp, "disk", fmt, size)
    drive = {"path": path, "fmt": fmt, "serial": "wisp-serial-12345678", "wisp": wisp_extra,
             "qemu": qemu_extra}
    status, out, _ = blk_run(vmm, elf, [drive], f"blk.mode=rw blk.sectors={size // 512} "
                             f"blk.serial=wisp-serial-12345678 blk.tag=1" + cmdline, wisp_flags)
    expect_ok(status, out, "blk:")
    data = blk_contents(tmp, path, fmt)
    if len(data) != size:
        raise Failure(f"the image is {len(data)} bytes, not {size}")
    expect_range(data, 0, MIB, blk_pattern(0, MIB, 1), "the host's pattern")
    expect_range(data, MIB, MIB, bytes(MIB), "the unwritten MiB")
    written = MIB + MIB // 4
    expect_range(data, 2 * MIB, written, blk_pattern(2 * MIB, written, GUEST_TAG),
                 "the guest's writes")
    expect_range(data, 2 * MIB + written, size - 2 * MIB - written,
                 bytes(size - 2 * MIB - written), "the end of the disk")


def case_blk_raw(vmm, elf, tmp):
    blk_rw(vmm, elf, tmp, "raw")


def case_blk_qcow2(vmm, elf, tmp):
    blk_rw(vmm, elf, tmp, "qcow2")


def case_blk_raw_direct(vmm, elf, tmp):
    # O_DIRECT through the thread pool: 512-byte requests go through the block layer's bounce;
    # the guest does not negotiate FLUSH, so every write is followed by a flush
    blk_rw(vmm, elf, tmp, "raw", ",cache=none,aio=threads", ",cache=none,aio=threads",
           " blk.noflush=1")


def case_blk_qcow2_async_teardown(vmm, elf, tmp):
    # writes the guest never flushed still reach a qcow2 image when the VM ends with
    # --async-teardown: the drive is closed (metadata written) before the helper takes over
    blk_rw(vmm, elf, tmp, "qcow2", cmdline=" blk.skipflush=1",
           wisp_flags=() if vmm == "qemu" else ("--async-teardown",))


def case_blk_qcow2_sync(vmm, elf, tmp):
    blk_rw(vmm, elf, tmp, "qcow2", ",cache=writethrough,aio=sync", ",cache=writethrough")


# guest/virtio_blk.c's discard mode, in MiB of the disk: D discarded, Z1 write-zeroes with
# UNMAP, Z2 write-zeroes without, M discarded in segments.
DISCARD_D, DISCARD_Z1, DISCARD_Z2, DISCARD_M = 4 * MIB, 5 * MIB, 6 * MIB, 7 * MIB


def blk_discard(vmm, elf, tmp, fmt):
    size = 8 * MIB
    path = blk_image(tmp, "disk", fmt, size, fill=True)
    drive = {"path": path, "fmt": fmt, "serial": "d", "qemu": ",discard=unmap"}
    status, out, _ = blk_run(vmm, elf, [drive], "blk.mode=discard")
    expect_ok(status, out, "blk:")
    data = blk_contents(tmp, path, fmt)
    expect_range(data, 0, MIB, blk_pattern(0, MIB, 1), "the host's pattern")
    expect_range(data, DISCARD_Z1, 2 * MIB, bytes(2 * MIB), "the written zeroes")
    return path


def case_blk_discard_raw(vmm, elf, tmp):
    path = blk_discard(vmm, elf, tmp, "raw")
    # D, Z1 and M are holes; Z2 stays allocated (SEEK_DATA may call an unwritten extent a
    # hole, so its allocation is read from st_blocks)
    with open(path, "rb") as f:
        try:
            next_data = os.lseek(f.fileno(), DISCARD_D, os.SEEK_DATA)
        except OSError:
            next_data = 8 * MIB
        try:
            after_m = os.lseek(f.fileno(), DISCARD_M, os.SEEK_DATA)
        except OSError:
            after_m = 8 * MIB
    if next_data < DISCARD_Z2 or after_m < 8 * MIB:
        raise Failure(f"discarded ranges are not holes: data at {next_data} and {after_m}")
    allocated = os.stat(path).st_blocks * 512
    want = 8 * MIB - 3 * MIB
    print(f"allocated {allocated} bytes, expected about {want}")
    if not want - 64 * 1024 <= allocated <= want + 256 * 1024:
        raise Failure(f"{allocated} bytes allocated, expected {want} (Z2 must stay allocated)")


def case_blk_discard_qcow2(vmm, elf, tmp):
    path = blk_discard(vmm, elf, tmp, "qcow2")
    extents = json.loads(sh("qemu-img", "map", "--output=json", path))

    def overlapping(start, length):
        return [e for e in extents if e["start"] < start + length and
                start < e["start"] + e["length"]]
    for name, start in (("D", DISCARD_D), ("Z1", DISCARD_Z1), ("M", DISCARD_M)):
        if any(e.get("data") or "offset" in e for e in overlapping(start, MIB)):
            raise Failure(f"range {name} still has host clusters: {overlapping(start, MIB)}")
    z2 = overlapping(DISCARD_Z2, MIB)  # zero clusters, or clusters of zeroes: allocated
    if not all("offset" in e for e in z2):
        raise Failure(f"write-zeroes without UNMAP must keep its clusters: {z2}")


def case_blk_readonly(vmm, elf, tmp):
    path = blk_image(tmp, "disk", "raw", 4 * MIB)
    before = open(path, "rb").read()
    mtime = os.stat(path).st_mtime_ns
    drive = {"path": path, "fmt": "raw", "serial": "ro", "wisp": ",readonly=on",
             "qemu": ",readonly=on"}
    status, out, _ = blk_run(vmm, elf, [drive], "blk.mode=ro blk.serial=ro" + blk_strict(vmm))
    expect_ok(status, out, "blk:")
    if open(path, "rb").read() != before or os.stat(path).st_mtime_ns != mtime:
        raise Failure("the read-only image changed")


def case_blk_two(vmm, elf, tmp):
    # a raw image whose format wisp must guess (with the warning), and a qcow2
    a = blk_image(tmp, "a", "raw", 4 * MIB, tag=1)
    b = blk_image(tmp, "b", "qcow2", 4 * MIB, tag=2)
    drives = [{"path": a, "fmt": None, "serial": "wisp-a"},
              {"path": b, "fmt": "qcow2", "serial": "wisp-b", "wisp": ",id=data"}]
    status, out, err = blk_run(vmm, elf, drives,
                               "blk.mode=two blk.serial=wisp-a blk.serial2=wisp-b blk.probed=1")
    expect_ok(status, out, "blk:")
    if vmm != "qemu" and (f"wisp-vmm: blk0: image format was not specified for '{a}' and "
                          "probing guessed raw") not in err:
        raise Failure("no warning about the guessed format on stderr")
    for path, fmt, tag in ((a, "raw", 1), (b, "qcow2", 2)):
        data = blk_contents(tmp, path, fmt)
        expect_range(data, 100 * 512, 4096, blk_pattern(100 * 512, 4096, GUEST_TAG + tag),
                     f"{path}: the guest's write")
    # the refused qcow2 header never reached the guessed raw image; the write after it did
    expect_range(blk_contents(tmp, a, "raw"), 0, 4096, blk_pattern(0, 4096, GUEST_TAG + 1),
                 f"{a}: sector 0")


def case_blk_mq(vmm, elf, tmp):
    path = blk_image(tmp, "disk", "raw", 8 * MIB)
    drive = {"path": path, "fmt": "raw", "serial": "mq", "wisp": ",queues=4",
             "qdev": ",num-queues=4"}
    status, out, _ = blk_run(vmm, elf, [drive], "blk.mode=mq blk.queues=4")
    expect_ok(status, out, "blk:")
    data = blk_contents(tmp, path, "raw")
    for q in range(4):
        off = (4096 + 128 * q) * 512
        expect_range(data, off, 65536, blk_pattern(off, 65536, GUEST_TAG), f"queue {q}'s write")


def case_blk_throttle(vmm, elf, tmp):
    # 24 reads in flight at 20 IOPS with a burst of 2: the token buckets cannot let them finish
    # in less than (24 - 2 - 1) / 20 s. A lower bound cannot fail on a slow machine.
    path = blk_image(tmp, "disk", "raw", 4 * MIB)
    drive = {"path": path, "fmt": "raw", "serial": "t", "wisp": ",iops=20,iops-burst=2,bps=1G",
             "qemu": ",throttling.iops-total=20"}
    start = time.monotonic()
    status, out, _ = blk_run(vmm, elf, [drive], "blk.mode=many blk.count=24")
    elapsed = time.monotonic() - start
    expect_ok(status, out, "blk:")
    print(f"24 requests at 20 IOPS: the VM ran {elapsed:.2f} s")
    if vmm != "qemu" and elapsed < 21 / 20:
        raise Failure(f"24 requests at 20 IOPS took {elapsed:.2f} s, less than {21 / 20} s")


def case_blk_malformed(vmm, elf, tmp):
    path = blk_image(tmp, "disk", "raw", 4 * MIB)
    drive = {"path": path, "fmt": "raw", "serial": "m"}
    status, out, err = blk_run(vmm, elf, [drive], "blk.mode=malformed" + blk_strict(vmm))
    expect_ok(status, out, "blk:")
    if vmm != "qemu" and err.count("wisp-vmm: blk0: device needs reset: ") != 4:
        raise Failure("expected four 'device needs reset' lines on stderr")


def case_blk_missing_image(vmm, elf, tmp):
    # a usage error (status 2), found before any KVM work
    path = os.path.join(tmp, "missing.raw")
    status, out, err = run(vmm, elf, ["--drive", f"path={path},format=raw"], [], "")
    if status != 2 or f"wisp-vmm: --drive: {path}: No such file or directory" not in err:
        raise Failure(f"status {status}, expected 2 with a message naming --drive and {path}")
    if out:
        raise Failure("the guest ran")


def case_blk_corrupt_qcow2(vmm, elf, tmp):
    # a runtime error (status 1) naming the drive and the image, before any vCPU runs
    path = blk_image(tmp, "bad", "qcow2", 4 * MIB)
    with open(path, "r+b") as f:
        f.seek(20)  # cluster_bits
        f.write(struct.pack(">I", 40))
    status, out, err = run(vmm, elf, ["--drive", f"path={path},format=qcow2,id=data"], [],
                           "blk.mode=rw")
    if status != 1 or f"wisp-vmm: data: {path}: " not in err:
        raise Failure(f"status {status}, expected 1 with a message naming data and {path}")
    if out:
        raise Failure("the guest ran")


CASES = {"rng": case_rng, "rng-event-idx": case_rng_event_idx, "rng-ratelimit": case_rng_ratelimit,
         "console-output": case_console_output, "console-input": case_console_input,
         "console-malformed": case_console_malformed, "console-flood": case_console_flood,
         "net": case_net, "net-mrg": case_net_mrg, "net-event-idx": case_net_event_idx,
         "net-two": case_net_two,
         "net-csum": case_net_csum, "net-ratelimit": case_net_ratelimit,
         "net-vhost": case_net_vhost, "net-vhost-on": case_net_vhost_on,
         "net-tap-create": case_net_tap_create,
         "net-tap-denied": case_net_tap_denied, "net-malformed": case_net_malformed}
CASES.update({"blk-raw": case_blk_raw, "blk-qcow2": case_blk_qcow2,
              "blk-raw-direct": case_blk_raw_direct, "blk-qcow2-sync": case_blk_qcow2_sync,
              "blk-qcow2-async-teardown": case_blk_qcow2_async_teardown,
              "blk-discard-raw": case_blk_discard_raw, "blk-discard-qcow2": case_blk_discard_qcow2,
              "blk-readonly": case_blk_readonly, "blk-two": case_blk_two, "blk-mq": case_blk_mq,
              "blk-throttle": case_blk_throttle, "blk-malformed": case_blk_malformed,
              "blk-missing-image": case_blk_missing_image,
              "blk-corrupt-qcow2": case_blk_corrupt_qcow2})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True, help="path to wisp-vmm, or 'qemu'")
    ap.add_argument("--guest", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    a = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            CASES[a.case](a.vmm, a.guest, tmp)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except Skip as e:
        print(f"SKIP: {e}")
        return 77
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
