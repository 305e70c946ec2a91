#!/usr/bin/env python3
"""Boots a test guest of guest/ in wisp-vmm and checks what the user relies on: the serial output,
the exit status, the memory map, the vCPUs, the reports of exceptions and of bad kernel files.

    guest_test.py VMM GUEST_ELF CASE [ARG]

CASE is one of: hello, demo, exit, reset, memmap MIB, smp N, exception KIND[-apN], badfile.
WISP_TEST_VMM, if set, replaces VMM (a command taking wisp-vmm's flags, for trying the guests
under another VMM while developing). Exits 0 on success, 1 with a message on failure.
"""
import os
import re
import subprocess
import sys
import tempfile

TIMEOUT = 60
GIB = 1 << 30
MMIO_HOLE_START = 3 * GIB
E820_RAM, E820_RESERVED = 1, 2


class Failure(Exception):
    pass


def run_vmm(vmm, kernel, *flags, timeout=TIMEOUT):
    cmd = vmm + ["--kernel", kernel] + list(flags)
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        raise Failure(f"{' '.join(cmd)} did not end within {timeout} s; output:\n{out}")
    out = p.stdout.decode(errors="replace").replace("\r\n", "\n")
    err = p.stderr.decode(errors="replace")
    print(f"$ {' '.join(cmd)}\n{out}{err}exit status {p.returncode}")
    return p.returncode, out, err


def expect_status(rc, want, what):
    if rc != want:
        raise Failure(f"{what}: exit status {rc}, expected {want}")


def expect_line(out, line):
    if line not in out.split("\n"):
        raise Failure(f"the serial output lacks the line {line!r}")


def case_hello(vmm, elf, _):
    rc, out, _ = run_vmm(vmm, elf, "--mem", "64", "--cmdline", "greeting=hi answer=42")
    expect_status(rc, 0, "hello guest")
    expect_line(out, "hello from the wisp guest kit")
    expect_line(out, "cmdline: greeting=hi answer=42")


def case_demo(vmm, elf, _):
    rc, out, _ = run_vmm(vmm, elf, "--mem", "64")
    expect_status(rc, 0, "demo guest")
    if "Hello from a wisp guest!" not in out or not re.search(r"^memory map \(\d+ entries\):$", out, re.M):
        raise Failure("the demo guest did not print its greeting and memory map")
    # with a disk (the text of its sector 0 is printed), as scripts/setup boots it
    with tempfile.TemporaryDirectory() as tmp:
        disk = os.path.join(tmp, "demo-disk.img")
        with open(disk, "wb") as f:
            f.write(b"Hello from the demo disk.\n")
            f.truncate(1 << 20)
        rc, out, _ = run_vmm(vmm, elf, "--mem", "64", "--drive", f"path={disk},format=raw")
        expect_status(rc, 0, "demo guest with a disk")
        if not re.search(r'^virtio-blk at 0xd0000000: 1024 KiB; sector 0 says: '
                         r'"Hello from the demo disk\."$', out, re.M):
            raise Failure("the demo guest did not print its disk's first sector")


def case_exit(vmm, elf, _):
    for code in (42, 1, 0, 200):
        rc, out, _ = run_vmm(vmm, elf, "--mem", "64", "--cmdline", f"exit={code}")
        expect_line(out, f"exit_status: exiting with {code}")
        expect_status(rc, code, f"guest writing {code} to the test-exit port")


def case_reset(vmm, elf, _):
    rc, out, _ = run_vmm(vmm, elf, "--mem", "64", timeout=20)
    expect_line(out, "reset: writing 0xfe to port 0x64")
    if "still running" in out:
        raise Failure("the VM kept running after the i8042 reset request")
    expect_status(rc, 0, "i8042 reset")


def expected_e820(mib):
    size = mib << 20
    low_end = min(size, MMIO_HOLE_START)
    table = [(0, 0x9fc00, E820_RAM), (0x9fc00, 0x100000, E820_RESERVED),
             (0x100000, low_end, E820_RAM)]
    if size > MMIO_HOLE_START:
        table.append((1 << 32, (1 << 32) + size - MMIO_HOLE_START, E820_RAM))
    return table


def case_memmap(vmm, elf, arg):
    mib = int(arg)
    rc, out, _ = run_vmm(vmm, elf, "--mem", str(mib))
    expect_status(rc, 0, "memmap guest")
    expect_line(out, "memmap: end")
    if not re.search(r"^memcheck: [1-9]\d* probes ok$", out, re.M):
        raise Failure("the guest could not write and read back its RAM (no 'memcheck' line)")
    seen = [(int(a, 16), int(b, 16), int(t))
            for a, b, t in re.findall(r"^e820: 0x([0-9a-f]+) 0x([0-9a-f]+) (\d+)$", out, re.M)]
    count = re.search(r"^memmap: (\d+) entries$", out, re.M)
    if not count or int(count.group(1)) != len(seen):
        raise Failure("the guest printed a different number of entries than it announced")
    want = expected_e820(mib)
    if sorted(seen) != want:
        fmt = lambda t: "\n".join(f"  [{a:#x}, {b:#x}) type {ty}" for a, b, ty in t)
        raise Failure(f"--mem {mib}: the guest saw\n{fmt(sorted(seen))}\nexpected\n{fmt(want)}")


def case_smp(vmm, elf, arg):
    n = int(arg)
    rc, out, _ = run_vmm(vmm, elf, "--mem", "64", "--cpus", str(n))
    expect_status(rc, 0, f"smp guest with {n} vCPUs")
    expect_line(out, f"smp: {n} cpus described, {n} online")
    ins = re.findall(r"^smp: cpu (\d+) checked in: apic id (\d+)", out, re.M)
    cpus = sorted(int(c) for c, _ in ins)
    apics = {int(a) for _, a in ins}
    if cpus != list(range(n)) or len(apics) != n:
        raise Failure(f"expected cpus 0..{n - 1} to check in with distinct APIC ids, got {ins}")
    expect_line(out, f"smp: all {n} cpus checked in with distinct apic ids")


def case_exception(vmm, elf, arg):
    """arg: ud, gp or pf on the BSP; KIND-apN for the same on CPU N of N + 1 vCPUs."""
    vectors = {"ud": 6, "gp": 13, "pf": 14}
    kind, _, ap = arg.partition("-ap")
    cpu = int(ap) if ap else 0
    rc, out, _ = run_vmm(vmm, elf, "--mem", "64", "--cpus", str(cpu + 1), "--cmdline",
                         f"fault={kind} cpu={cpu}")
    where = re.search(r"^exception: expect fault '\w+' at rip (0x[0-9a-f]+)", out, re.M)
    if not where:
        raise Failure("the guest did not announce the faulting address")
    report = re.search(r"^guest: EXCEPTION vector (\d+) .* on cpu (\d+) in ring 3: "
                       r"rip (0x[0-9a-f]+) error", out, re.M)
    if not report:
        raise Failure("no exception report on the serial port")
    got = (int(report.group(1)), int(report.group(2)), report.group(3))
    if got != (vectors[kind], cpu, where.group(1)):
        raise Failure(f"reported vector {got[0]} on cpu {got[1]} at {got[2]}, expected "
                      f"{vectors[kind]} on cpu {cpu} at {where.group(1)}")
    expect_status(rc, 3, "guest taking an exception")


def case_badfile(vmm, elf, _):
    data = open(elf, "rb").read()
    with tempfile.TemporaryDirectory(prefix="wisp-badfile-") as d:
        bad = {
            "empty.elf": b"",
            "header-only.elf": data[:64],
            "truncated.elf": data[: len(data) // 3],
            "garbage.elf": bytes((i * 131 + 7) & 0xff for i in range(8192)),
        }
        for name, content in bad.items():
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(content)
            rc, out, err = run_vmm(vmm, path, "--mem", "64", timeout=20)
            if rc <= 0 or rc >= 128:
                raise Failure(f"{name}: exit status {rc}, expected a clean failure (1..127)")
            if name not in err:
                raise Failure(f"{name}: the error message does not name the file:\n{err}")


CASES = {"hello": case_hello, "demo": case_demo, "exit": case_exit, "reset": case_reset, "memmap": case_memmap,
         "smp": case_smp, "exception": case_exception, "badfile": case_badfile}


def main():
    if len(sys.argv) < 4 or sys.argv[3] not in CASES:
        print(__doc__, file=sys.stderr)
        return 2
    vmm = os.environ.get("WISP_TEST_VMM", "").split() or [sys.argv[1]]
    try:
        CASES[sys.argv[3]](vmm, sys.argv[2], sys.argv[4] if len(sys.argv) > 4 else None)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
