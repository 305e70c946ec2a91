#!/usr/bin/env python3
"""bench/boot: where the time of a Linux boot goes, phase by phase, from boot-time markers.

Boots the guest kit's kernel (guest/kernel/build.sh) with an initramfs of wisp-init and
busybox's `true` under `wisp-vmm --boot-marker`, --runs times, and splits each boot into:

  launch -> wisp-vmm main()   exec and dynamic start-up (WISP_LAUNCH_NS vs. the marker's "at")
  main() -> kernel start      VMM set-up and the kernel's first instructions, up to its clock's
                              zero (= host time of init's marker minus init's CLOCK_BOOTTIME)
  kernel start -> init        the kernel's boot (init's CLOCK_BOOTTIME at its first marker)
  init -> command done        wisp-init mounting /proc, /sys, /dev and running the command
  command done -> VMM exit    reboot path, VM teardown, process exit

The kernel's clock zero is the first printk timestamp (Linux starts printk time with
sched_clock at zero), so "kernel start" is the earliest printk time on the host's clock.
Prints a table (median, min, max per phase) and, with --png, a bar chart drawn by gnuplot.
Never fails on timing. On a host where KVM is PVM (kvm_pvm, pvm_native=Y) the guest kernel
runs through an instruction emulator: only the VMM phases are meaningful there, and the
output says so.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHASES = ["launch -> wisp-vmm main()", "main() -> kernel start", "kernel start -> init",
          "init -> command done", "command done -> VMM exit"]


class Failure(Exception):
    pass


def on_pvm():
    try:
        with open("/sys/module/kvm_pvm/parameters/pvm_native") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def kernel_path():
    proc = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                          capture_output=True, text=True)
    path = os.path.join(proc.stdout.strip(), "vmlinux")
    if proc.returncode != 0 or not os.path.isfile(path):
        raise Failure("the guest kernel is not built: run guest/kernel/build.sh")
    return path


def one_boot(vmm, vmlinux, initrd, cmdline, cpus, mem, timeout):
    env = dict(os.environ)
    launch = time.monotonic_ns()
    env["WISP_LAUNCH_NS"] = str(launch)
    proc = subprocess.run([vmm, "--kernel", vmlinux, "--initrd", initrd, "--cmdline", cmdline,
                           "--cpus", str(cpus), "--mem", str(mem), "--serial", "stdio",
                           "--boot-marker"], env=env, capture_output=True, timeout=timeout)
    end_ms = (time.monotonic_ns() - launch) / 1e6
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    marks = {}
    for m in re.finditer(r"boot-marker (\d+) at ([0-9.]+) ms \(([0-9.]+) ms since launch\)", err):
        marks[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))
    t = re.search(r"wisp-init: boot-time init=([0-9.]+) done=([0-9.]+)", out)
    if proc.returncode != 0 or 1 not in marks or 2 not in marks or not t:
        raise Failure(f"boot failed (exit {proc.returncode}); console:\n{out}\n{err}")
    main_ms = marks[1][1] - marks[1][0]  # launch -> main()
    init_host = marks[1][1]
    done_host = marks[2][1]
    kernel_start = init_host - float(t.group(1)) * 1000
    return [main_ms, kernel_start - main_ms, init_host - kernel_start, done_host - init_host,
            end_ms - done_host]


def table(rows, pvm):
    lines = [f"{'phase':<28} {'median ms':>11} {'min ms':>11} {'max ms':>11}"]
    for i, name in enumerate(PHASES):
        col = [r[i] for r in rows]
        lines.append(f"{name:<28} {statistics.median(col):>11.2f} {min(col):>11.2f} {max(col):>11.2f}")
    totals = [sum(r) for r in rows]
    lines.append(f"{'total (launch -> exit)':<28} {statistics.median(totals):>11.2f} "
                 f"{min(totals):>11.2f} {max(totals):>11.2f}")
    if pvm:
        lines.append("")
        lines.append("NOTE: this host's KVM is PVM (kvm_pvm, pvm_native=Y): guest kernel code runs through")
        lines.append("an instruction emulator (~2,600x slower). Only 'launch -> wisp-vmm main()' is meaningful")
        lines.append("here; the kernel phases are a target for hardware KVM, not a measurement of wisp.")
        lines.append("'main() -> kernel start' includes the kernel's first (emulated) instructions.")
    return "\n".join(lines)


def plot(rows, png):
    if not shutil.which("gnuplot"):
        print("bench/boot: gnuplot not found; no chart (apt-get install gnuplot-nox)", file=sys.stderr)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as f:
        for i, name in enumerate(PHASES):
            f.write(f"\"{name}\" {statistics.median([r[i] for r in rows]) / 1000:.6f}\n")
        data = f.name
    script = f"""
set terminal pngcairo size 900,420 noenhanced
set output '{png}'
set title 'wisp boot phases (median of {len(rows)} runs)'
set style fill solid 0.7
set boxwidth 0.6
set ylabel 'seconds'
set logscale y
set xtics rotate by -20
set grid ytics
plot '{data}' using 0:2:xtic(1) with boxes notitle
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        print(f"chart: {png}")
    finally:
        os.unlink(data)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vmm", default=os.path.join(REPO, "build/src/vmm/wisp-vmm"))
    p.add_argument("--init", default=None, help="wisp-init (default: found under build*/)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--mem", type=int, default=128, help="MiB")
    p.add_argument("--png", default=None, help="write a bar chart (gnuplot) to this file")
    p.add_argument("--timeout", type=int, default=300, help="seconds per boot")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    try:
        if not os.path.isfile(args.vmm):
            raise Failure(f"wisp-vmm not found at {args.vmm} (--vmm PATH)")
        vmlinux = kernel_path()
        extra = subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")],
                               capture_output=True, text=True, check=True).stdout.strip()
        cmdline = " ".join(x for x in ["console=ttyS0 panic=-1 quiet reboot=k acpi=off", extra,
                                       "-- /bin/true"] if x)
        with tempfile.TemporaryDirectory(prefix="wisp-bench-boot.") as tmp:
            initrd = os.path.join(tmp, "initramfs.cpio")
            mk = [os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", initrd, "--applets", "true"]
            if args.init:
                mk += ["--init", args.init]
            subprocess.run(mk, check=True)
            rows = []
            for i in range(args.runs):
                rows.append(one_boot(args.vmm, vmlinux, initrd, cmdline, args.cpus, args.mem,
                                     args.timeout))
                print(f"run {i + 1}/{args.runs}: {sum(rows[-1]) / 1000:.2f} s", file=sys.stderr)
    except (Failure, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        print(f"bench/boot: {e}", file=sys.stderr)
        return 1
    print(f"wisp-vmm boot phases: {args.cpus} vCPU, {args.mem} MiB, vmlinux via PVH, "
          f"uncompressed initramfs, command /bin/true, {args.runs} runs")
    print(table(rows, on_pvm()))
    if args.png:
        plot(rows, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
