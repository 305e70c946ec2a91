#!/usr/bin/env python3
"""Boots Debian's stock 6.1 kernel in wisp-vmm and checks the boot protocols by the kernel's own
early serial output (the kernel cannot reach userspace on every KVM; see docs/guest-kit.md).

    linux_test.py VMM FETCH_SCRIPT CASE

CASE bzimage: vmlinuz through the 64-bit boot protocol; passes when the decompressor prints
    "KASLR disabled: 'nokaslr' on cmdline." (it read our command line from the zero page).
CASE pvh: the ELF vmlinux through its PVH note with 2 vCPUs; passes when the kernel printed its
    version, the command line we gave, exactly the e820 map we asked for, and found the ACPI
    RSDP and MADT.
Each wait is bounded; the VM is stopped with SIGTERM once the markers are seen.
WISP_TEST_VMM, if set, replaces VMM. The kernel comes from $WISP_CACHE/debian-kernel (fetched
with FETCH_SCRIPT when missing).
"""
import os
import re
import select
import signal
import subprocess
import sys
import time

GIB = 1 << 30
MMIO_HOLE_START = 3 * GIB
E820_TYPES = {"usable": 1, "reserved": 2, "ACPI data": 3, "ACPI NVS": 4, "unusable": 5}


class Failure(Exception):
    pass


def kernel_dir(fetch_script):
    d = os.path.join(os.environ.get("WISP_CACHE", "/var/cache/wisp"), "debian-kernel")
    if not (os.path.exists(os.path.join(d, "vmlinuz")) and os.path.exists(os.path.join(d, "vmlinux"))):
        subprocess.run([fetch_script], check=False)
    for f in ("vmlinuz", "vmlinux"):
        if not os.path.exists(os.path.join(d, f)):
            raise Failure(f"{d}/{f} is missing and {fetch_script} could not fetch it")
    return d


def boot_until(cmd, done, deadline_s):
    """Runs cmd, feeding its output to done(text) until it returns True or the deadline passes.
    Returns the output; the VM is stopped with SIGTERM (then SIGKILL) either way."""
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = b""
    start = time.monotonic()
    ok = False
    try:
        while time.monotonic() - start < deadline_s:
            ready, _, _ = select.select([p.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break  # the VMM ended
                out += chunk
                text = out.decode(errors="replace")
                if done(text[: text.rfind("\n") + 1]):  # whole lines only
                    ok = True
                    break
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    text = out.decode(errors="replace").replace("\r\n", "\n")
    print(text)
    elapsed = time.monotonic() - start
    print(f"[{'markers seen' if ok else 'markers NOT seen'} after {elapsed:.1f} s; "
          f"VMM status {p.returncode}]")
    if not ok:
        state = "ended" if elapsed < deadline_s else f"ran {deadline_s} s"
        raise Failure(f"the VM {state} without printing the expected markers")
    return text


def case_bzimage(vmm, kdir):
    marker = "KASLR disabled: 'nokaslr' on cmdline."
    cmd = vmm + ["--kernel", os.path.join(kdir, "vmlinuz"), "--mem", "512", "--cmdline",
                 "earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr"]
    boot_until(cmd, lambda t: marker in t, 90)


def expected_e820(mib):
    size = mib << 20
    low_end = min(size, MMIO_HOLE_START)
    table = [(0, 0x9fc00, 1), (0x9fc00, 0x100000, 2), (0x100000, low_end, 1)]
    if size > MMIO_HOLE_START:
        table.append((1 << 32, (1 << 32) + size - MMIO_HOLE_START, 1))
    return table


def case_pvh(vmm, kdir):
    mib = 512
    cmdline = "console=ttyS0 earlyprintk=serial noxsave"
    cmd = vmm + ["--kernel", os.path.join(kdir, "vmlinux"), "--mem", str(mib), "--cpus", "2",
                 "--cmdline", cmdline]
    markers = ["Linux version", f"Command line: {cmdline}\n", "BIOS-e820:", "ACPI: RSDP",
               "ACPI: APIC"]
    text = boot_until(cmd, lambda t: all(m in t.replace("\r\n", "\n") for m in markers), 120)
    seen = []
    for a, b, kind in re.findall(r"BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] (.+)$", text, re.M):
        seen.append((int(a, 16), int(b, 16) + 1, E820_TYPES.get(kind.strip(), kind.strip())))
    want = expected_e820(mib)
    if seen != want:
        fmt = lambda t: "\n".join(f"  [{a:#x}, {b:#x}) type {ty}" for a, b, ty in t)
        raise Failure(f"Linux saw the e820 map\n{fmt(seen)}\nexpected\n{fmt(want)}")


def main():
    cases = {"bzimage": case_bzimage, "pvh": case_pvh}
    if len(sys.argv) != 4 or sys.argv[3] not in cases:
        print(__doc__, file=sys.stderr)
        return 2
    vmm = os.environ.get("WISP_TEST_VMM", "").split() or [sys.argv[1]]
    try:
        cases[sys.argv[3]](vmm, kernel_dir(sys.argv[2]))
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
