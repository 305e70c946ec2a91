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
import os
import subprocess
import sys
import tempfile

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


CASES = {"rng": case_rng, "rng-event-idx": case_rng_event_idx, "rng-ratelimit": case_rng_ratelimit}


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
