#!/usr/bin/env python3
"""Boots the guest kit's Linux kernel (guest/kernel) with an initramfs holding wisp-init and
busybox, runs a shell script in the guest and checks what Linux saw against what the VMM
was asked for. Success is decided by markers on the serial console and the VMM's exit status,
never by timing.

  boot_test.py --vmm PATH|qemu --init PATH [--cpus N] [--mem MIB] [--firmware mptable|acpi]
               [--end exit-port|acpi-reset] [--exit-status N]

--firmware mptable boots with acpi=off, so Linux enumerates CPUs from the MP tables;
--firmware acpi lets Linux use the VMM's ACPI tables (MADT). --end acpi-reset makes the
guest end through the kernel's reboot path with reboot=acpi (the FADT reset register)
instead of the test-exit port; the VMM must then exit 0.
"""
import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest_shell  # noqa: E402  (the guest scripts' retry)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Linux reserves memory the VMM offered (kernel image, struct pages, page tables, initramfs
# until freed): MemTotal is below the e820 total by about that much. With 128-256 MiB and
# this kernel (~6 MiB image, 64 bytes of struct page per 4 KiB page) that is ~8-12 MiB.
MEMTOTAL_TOLERANCE_MIB = 24
# The VMM's e820 map covers --mem except the legacy hole (640 KiB - 1 MiB) and a few
# pages it may keep for boot structures.
E820_TOLERANCE_MIB = 1

# Few processes (each costs seconds under PVM's emulator) and no byte-wise `read` loops over
# long files (one system call per byte). No pipelines: under PVM a busybox pipeline
# (dmesg | grep) sometimes dies with SIGSEGV in a TLS access (docs/guest-kernel.md).
# Each external command is therefore retried (visibly, on stderr) when it dies by a signal;
# a wrong answer is never retried.
GUEST_SCRIPT = guest_shell.retry("wisp-test") + r"""
echo "wisp-test: marker $1"
read -r online </sys/devices/system/cpu/online
echo "wisp-test: cpus $(retry grep -c ^processor /proc/cpuinfo) online $online"
read -r key value unit </proc/meminfo
echo "wisp-test: $key $value $unit"
retry dmesg >/tmp/dmesg.txt
retry grep -E 'BIOS-e820|MP-table|ACPI: APIC|ACPI: Using|smpboot: Allowing' /tmp/dmesg.txt
exit $2
"""


class Failure(Exception):
    pass


def kernel_dir():
    proc = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                          capture_output=True, text=True)
    path = proc.stdout.strip()
    if proc.returncode != 0 or not os.path.isfile(os.path.join(path, "vmlinux")):
        raise Failure(f"the guest kernel is not built (expected {path or '?'}/vmlinux); "
                      "build it with guest/kernel/build.sh (~5-10 min; scripts/test does it)")
    return path


def cmdline_extra():
    out = subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def make_initramfs(tmp, init):
    script = os.path.join(tmp, "wisp-test.sh")
    with open(script, "w") as f:
        f.write(GUEST_SCRIPT)
    out = os.path.join(tmp, "initramfs.cpio")
    subprocess.run([os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", out, "--init", init,
                    "--applets", "sh,cat,grep,dmesg,sed", "--add", f"{script}:/wisp-test.sh"], check=True)
    return out


def vmm_command(args, vmlinux, initrd, cmdline):
    if args.vmm == "qemu":
        acpi = "on" if args.firmware == "acpi" else "off"
        return ["qemu-system-x86_64", "-enable-kvm",
                "-M", f"microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off,acpi={acpi}",
                "-cpu", "host,-arch-capabilities", "-m", str(args.mem), "-smp", str(args.cpus),
                "-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                "-kernel", vmlinux, "-initrd", initrd, "-append", cmdline]
    if not os.path.isfile(args.vmm):
        raise Failure(f"wisp-vmm not found at {args.vmm}; build it (ninja -C <builddir> src/vmm/wisp-vmm)")
    # --debug makes wisp-vmm name the device that ended the VM, so an ACPI reset can be told
    # apart from Linux's fallback to the i8042 reset line.
    return [args.vmm, "--kernel", vmlinux, "--initrd", initrd, "--cmdline", cmdline,
            "--mem", str(args.mem), "--cpus", str(args.cpus), "--serial", "stdio", "--debug"]


def vmm_status(args, rc):
    """The guest's exit status as the VMM reports it (QEMU's isa-debug-exit gives 2V+1)."""
    if args.vmm == "qemu" and rc > 0 and rc % 2 == 1:
        return rc >> 1
    return rc


def find(pattern, text, what):
    m = re.search(pattern, text, re.M)
    if not m:
        raise Failure(f"the console lacks {what} (/{pattern}/)")
    return m


def e820_usable_bytes(console):
    total = 0
    for m in re.finditer(r"BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] usable", console):
        total += int(m.group(2), 16) - int(m.group(1), 16) + 1
    if total == 0:
        raise Failure("dmesg shows no usable e820 range")
    return total


def check(args, marker, console, rc, vmm_log=""):
    if args.firmware == "acpi" and "Run /init as init process" not in console and \
            not re.search(rf"^wisp-test: marker {marker}", console, re.M):
        # With a HW-reduced FADT Linux has no legacy PIC and maps no ISA IRQ by itself: unless
        # the DSDT describes COM1 (PNP0501 with IRQ 4), ttyS0 gets no interrupt and every
        # userspace write to the console is lost while kernel messages still appear.
        print("hint: no userspace output with ACPI: does the DSDT describe COM1 (PNP0501, "
              "IO 0x3f8, IRQ 4)? Compare with --firmware mptable.", file=sys.stderr)
    find(rf"^wisp-test: marker {marker}\s*$", console, "the guest command's marker")
    m = find(r"^wisp-test: cpus (\d+) online (\S+)", console, "the CPU count line")
    cpus, online = int(m.group(1)), m.group(2)
    want_online = "0" if args.cpus == 1 else f"0-{args.cpus - 1}"
    if cpus != args.cpus or online != want_online:
        raise Failure(f"Linux sees {cpus} CPUs (online {online}), the VM has --cpus {args.cpus}")
    mem_total = int(find(r"^wisp-test: MemTotal:\s+(\d+) kB", console, "MemTotal").group(1)) * 1024
    e820 = e820_usable_bytes(console)
    mib = 1 << 20
    if not (args.mem - E820_TOLERANCE_MIB) * mib <= e820 <= args.mem * mib:
        raise Failure(f"e820 usable RAM is {e820 / mib:.2f} MiB for --mem {args.mem}")
    if not e820 - MEMTOTAL_TOLERANCE_MIB * mib <= mem_total <= e820:
        raise Failure(f"MemTotal {mem_total / mib:.2f} MiB is not within {MEMTOTAL_TOLERANCE_MIB} MiB "
                      f"below the e820 total {e820 / mib:.2f} MiB")
    if args.firmware == "mptable":
        find(r"found SMP MP-table", console, "Linux finding the MP table")
    else:
        find(r"^\[[ .0-9]+\] ACPI: APIC ", console, "Linux listing the MADT (ACPI: APIC)")
        find(r"ACPI: Using ACPI \(MADT\) for SMP configuration", console,
             "Linux enumerating CPUs from the MADT")
    find(rf"^wisp-init: exit status {args.exit_status}\s*$", console, "wisp-init's exit status line")
    want_rc = 0 if args.end == "acpi-reset" else args.exit_status
    if args.end == "acpi-reset":
        find(r"reboot: Restarting system", console, "the kernel's reboot message")
        if args.vmm != "qemu":
            find(r"^wisp-vmm: VM ends \(ACPI reset\), exit status 0$", vmm_log,
                 "wisp-vmm reporting that the FADT reset register ended the VM")
    if vmm_status(args, rc) != want_rc:
        raise Failure(f"the VMM exited with {rc}, expected the guest's status {want_rc}")
    print(f"ok: {cpus} CPUs, e820 {e820 / mib:.2f} MiB, MemTotal {mem_total / mib:.2f} MiB, "
          f"exit status {want_rc}")


def run(args):
    kdir = kernel_dir()
    marker = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="wisp-kernel-test.") as tmp:
        initrd = make_initramfs(tmp, args.init)
        cmdline = ["console=ttyS0", "panic=-1", "quiet", cmdline_extra()]
        cmdline.append("reboot=acpi wisp_exit=reboot" if args.end == "acpi-reset" else "reboot=k")
        if args.firmware == "mptable":
            cmdline.append("acpi=off")
        cmdline += ["--", "/bin/sh", "/wisp-test.sh", marker, str(args.exit_status)]
        cmd = vmm_command(args, os.path.join(kdir, "vmlinux"), initrd,
                          " ".join(c for c in cmdline if c))
        print("+", " ".join(cmd), flush=True)
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=args.timeout)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace")
            raise Failure(f"the VM did not end within {args.timeout} s; console:\n{out}")
        console = proc.stdout.decode(errors="replace")
        sys.stdout.write(console)
        vmm_log = proc.stderr.decode(errors="replace")
        sys.stdout.write(vmm_log)
        print(f"(VMM exit status {proc.returncode} after {time.monotonic() - start:.1f} s)")
        check(args, marker, console, proc.returncode, vmm_log)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vmm", required=True, help="path of wisp-vmm, or 'qemu' for the reference")
    p.add_argument("--init", required=True, help="path of wisp-init")
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--mem", type=int, default=128, help="MiB")
    p.add_argument("--firmware", choices=["mptable", "acpi"], default="mptable")
    p.add_argument("--end", choices=["exit-port", "acpi-reset"], default="exit-port")
    p.add_argument("--exit-status", type=int, default=7)
    p.add_argument("--timeout", type=int, default=220)
    args = p.parse_args()
    if args.end == "acpi-reset":
        args.exit_status = 0
    try:
        run(args)
    except (Failure, subprocess.CalledProcessError) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
