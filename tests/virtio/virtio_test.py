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
import struct
import subprocess
import sys
import tempfile
import time

TIMEOUT = 60


class Failure(Exception):
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


CASES = {"rng": case_rng, "rng-event-idx": case_rng_event_idx, "rng-ratelimit": case_rng_ratelimit}
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
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
