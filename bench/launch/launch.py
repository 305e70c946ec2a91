#!/usr/bin/env python3
"""wisp's launch and memory benchmark: wisp-vmm beside QEMU microvm and a raw KVM floor.

Launch: each contender boots the same tiny PVH guest (prints "!" on COM1, writes port 0xf4 to
exit). The contenders run alternately (one run of each per round, the order rotated every round),
and for every run the driver measures, from just before posix_spawn() to the child's exit:
  wall        spawn -> exit (reaped by wait4)
  first byte  spawn -> first byte of the guest's serial output on the child's stdout (a pipe)
  CPU         user + system time of the child (wait4's rusage)

A contender may leave work behind its exit: wisp-vmm hands the VM's teardown to a helper process
that finishes after it (as QEMU's -async-teardown). The driver is a child subreaper, so such
helpers become its children: it waits for them before the next run and also reports
  all exited  spawn -> the last process of the contender exited
  CPU + helpers  CPU of the contender and of the helpers it left

With devices: two more contenders boot the same guests with one virtio-blk drive (a raw file in
tmpfs) and one virtio-net NIC (a tap in a network namespace of the driver's own; needs root):
wisp-vmm and QEMU microvm, both with virtio-mmio devices. The guest does not touch them: what
they cost is the VMM's work to set them up (open the image, start I/O threads, open the tap).

Memory: each contender boots a guest with 128 MiB of RAM that prints and then idles (cli; hlt).
After its first byte and an idle pause, the driver reads /proc/PID/status and /proc/PID/smaps:
  guest-touched  Rss of the guest RAM mapping(s): the mappings at least as large as guest RAM
  overhead       VmRSS - guest-touched (and VmHWM - guest-touched, the peak variant)

Only Python's standard library is used. See docs/benchmarks.md.
"""

import argparse
import ctypes
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

GUEST_MIB = 128
CONTENDERS = ("floor", "wisp", "qemu", "wisp-dev", "qemu-dev", "wisp-noseccomp")
LABELS = {"floor": "raw KVM floor", "wisp": "wisp-vmm", "qemu": "QEMU microvm",
          "wisp-dev": "wisp +blk+net", "qemu-dev": "QEMU +blk+net",
          "wisp-noseccomp": "wisp --seccomp=off"}
DEVICE_CONTENDERS = ("wisp-dev", "qemu-dev")
# The exit status each contender reports for a guest that writes 0 to port 0xf4:
# QEMU's isa-debug-exit exits with (value << 1) | 1.
EXPECTED_STATUS = {"floor": 0, "wisp": 0, "qemu": 1, "wisp-dev": 0, "qemu-dev": 1,
                   "wisp-noseccomp": 0}
DISK_MIB = 64  # the drive of the device contenders: a raw file in tmpfs
TAP = "wlaunch0"  # their NIC's tap, in the driver's own network namespace
# The reference command of the machine's anchors (docs/environment.md), with the kernel appended.
QEMU_ARGS = [
    "-enable-kvm", "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off",
    "-cpu", "host,-arch-capabilities", "-m", str(GUEST_MIB), "-nographic", "-nodefaults",
    "-serial", "stdio", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel",
]
TARGET_WISP_OVER_FLOOR = 2.0  # wisp-vmm median wall <= 2x the floor's
TARGET_QEMU_OVER_WISP = 10.0  # QEMU microvm median wall >= 10x wisp-vmm's
TARGET_OVERHEAD_KIB = 1024  # wisp-vmm VmRSS outside guest RAM <= 1 MiB
TARGET_DEV_OVER_BARE = 1.2  # wisp-vmm with a drive and a NIC: first byte <= 1.2x without


class BenchError(Exception):
    """A failure that ends the benchmark with a message and exit status 1."""


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def become_subreaper():
    """Processes a contender leaves behind are re-parented to us instead of init (prctl(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def on_alarm(signum, frame):
    raise TimeoutError


def reap_leftovers(timeout_s):
    """Waits for every remaining child (helpers a contender left); returns (count, CPU s, end)."""
    count, cpu_s, end_ns = 0, 0.0, time.perf_counter_ns()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        while True:
            _, _, rusage = os.wait4(-1, 0)
            end_ns = time.perf_counter_ns()
            count += 1
            cpu_s += rusage.ru_utime + rusage.ru_stime
    except ChildProcessError:
        return count, cpu_s, end_ns
    except TimeoutError:
        raise BenchError(f"a process left behind by a contender did not exit within {timeout_s} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- running children


def command_for(contender, paths, guest):
    """The argv that boots `guest` (an ELF path) with `contender`, 128 MiB, one vCPU."""
    if contender == "floor":
        return [paths["floor"], "--mem", str(GUEST_MIB), guest]
    if contender in ("wisp", "wisp-dev", "wisp-noseccomp"):
        # --async-teardown: the driver is a reaping subreaper (see reap_leftovers)
        devices = []
        if contender == "wisp-dev":
            devices = ["--drive", f"path={paths['disk']},format=raw", "--net", f"tap={TAP}"]
        return [paths["vmm"], "--kernel", guest, "--mem", str(GUEST_MIB), "--cpus", "1",
                "--serial", "stdio", "--async-teardown"] + devices + (
                    ["--seccomp=off"] if contender == "wisp-noseccomp" else [])
    devices = []
    if contender == "qemu-dev":  # the devices of tests/virtio (modern virtio-mmio)
        devices = ["-global", "virtio-mmio.force-legacy=false",
                   "-drive", f"file={paths['disk']},if=none,id=d0,format=raw",
                   "-device", "virtio-blk-device,drive=d0",
                   "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off",
                   "-device", "virtio-net-device,netdev=n0"]
    return [paths["qemu"]] + QEMU_ARGS[:-1] + devices + QEMU_ARGS[-1:] + [guest]


CLONE_NEWNET = 0x40000000


def setup_devices(paths):
    """For the device contenders: a network namespace of our own (the VMMs inherit it) with the
    tap TAP, and a sparse raw file in /dev/shm (removed by the caller). Nothing in the host's
    namespace is touched; the namespace goes away with this process."""
    if os.geteuid() != 0:
        raise BenchError("the contenders with devices need root (a network namespace and a tap);"
                         " run as root or pick --contenders floor,wisp,qemu")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise BenchError(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
    for argv in (["ip", "tuntap", "add", "dev", TAP, "mode", "tap"],
                 ["ip", "link", "set", TAP, "up"]):
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv)}: {proc.stdout.strip()}")
    fd, paths["disk"] = tempfile.mkstemp(prefix="wisp-launch-bench.", suffix=".raw",
                                         dir="/dev/shm")
    os.ftruncate(fd, DISK_MIB << 20)
    os.close(fd)


class Child:
    """A contender started with posix_spawn: stdin /dev/null, stdout a pipe, stderr a temp file."""

    def __init__(self, argv):
        self.argv = argv
        self.stderr = tempfile.TemporaryFile()
        read_fd, write_fd = os.pipe()
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        actions = [
            (os.POSIX_SPAWN_DUP2, null_fd, 0),
            (os.POSIX_SPAWN_DUP2, write_fd, 1),
            (os.POSIX_SPAWN_DUP2, self.stderr.fileno(), 2),
        ]
        self.start_ns = time.perf_counter_ns()
        try:
            self.pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        except OSError as err:
            os.close(read_fd)
            raise BenchError(f"cannot start {argv[0]}: {err.strerror}") from err
        finally:
            os.close(write_fd)
            os.close(null_fd)
        self.stdout_fd = read_fd
        self.output = bytearray()
        self.first_byte_ns = None

    def read_until(self, deadline_ns, stop_at_first_byte):
        """Reads stdout until EOF (or the first byte); returns False if the deadline passed."""
        while True:
            left = (deadline_ns - time.perf_counter_ns()) / 1e9
            if left <= 0 or not select.select([self.stdout_fd], [], [], left)[0]:
                return False
            data = os.read(self.stdout_fd, 4096)
            now = time.perf_counter_ns()
            if not data:
                return True
            if self.first_byte_ns is None:
                self.first_byte_ns = now
            self.output += data
            if stop_at_first_byte:
                return True

    def reap(self, sig=None, timeout_s=20.0):
        """Sends `sig` if given, waits for the child, then for the helpers it left behind."""
        if sig is not None:
            os.kill(self.pid, sig)
        _, status, rusage = os.wait4(self.pid, 0)
        end_ns = time.perf_counter_ns()
        os.close(self.stdout_fd)
        helpers, helper_cpu_s, settled_ns = reap_leftovers(timeout_s)
        return {"status": status, "rusage": rusage, "end_ns": end_ns, "helpers": helpers,
                "helper_cpu_s": helper_cpu_s, "settled_ns": max(end_ns, settled_ns)}

    def stderr_tail(self, limit=600):
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return text[-limit:] if text else "(nothing on stderr)"


def describe_status(status):
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def launch_once(contender, paths, timeout_s):
    """One measured launch of the exit guest; returns a dict of figures in milliseconds."""
    argv = command_for(contender, paths, paths["guest"])
    child = Child(argv)
    finished = child.read_until(child.start_ns + int(timeout_s * 1e9), stop_at_first_byte=False)
    reaped = child.reap(None if finished else signal.SIGKILL, timeout_s)
    status, rusage = reaped["status"], reaped["rusage"]
    label = LABELS[contender]
    if not finished:
        raise BenchError(f"{label} did not exit within {timeout_s} s: {' '.join(argv)}\n"
                         f"  stderr: {child.stderr_tail()}")
    if not child.output.startswith(b"!") or not (
            os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXPECTED_STATUS[contender]):
        raise BenchError(
            f"{label} did not run the guest as expected: {' '.join(argv)}\n"
            f"  expected output starting with '!' and exit status {EXPECTED_STATUS[contender]},"
            f" got {bytes(child.output[:40])!r} and {describe_status(status)}\n"
            f"  stderr: {child.stderr_tail()}")
    cpu_s = rusage.ru_utime + rusage.ru_stime
    return {
        "wall_ms": (reaped["end_ns"] - child.start_ns) / 1e6,
        "first_byte_ms": (child.first_byte_ns - child.start_ns) / 1e6,
        "all_exited_ms": (reaped["settled_ns"] - child.start_ns) / 1e6,
        "cpu_ms": cpu_s * 1e3,
        "cpu_total_ms": (cpu_s + reaped["helper_cpu_s"]) * 1e3,
        "helpers": reaped["helpers"],
        "user_ms": rusage.ru_utime * 1e3,
        "sys_ms": rusage.ru_stime * 1e3,
    }


# ----------------------------------------------------------------------------- statistics


def percentile(sorted_values, fraction):
    """Linear interpolation between closest ranks (as numpy's default)."""
    pos = (len(sorted_values) - 1) * fraction
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summarize(values):
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p10": percentile(ordered, 0.10),
        "p90": percentile(ordered, 0.90),
        "min": ordered[0],
        "max": ordered[-1],
    }


def run_launches(contenders, paths, runs, warmup, timeout_s):
    """Warm-up rounds, then `runs` rounds; each round runs every contender once, order rotated."""
    samples = {c: [] for c in contenders}
    for round_no in range(warmup + runs):
        shift = round_no % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            result = launch_once(contender, paths, timeout_s)
            if round_no >= warmup:
                samples[contender].append(result)
    report = {}
    for contender in contenders:
        runs_of = samples[contender]
        report[contender] = {
            "command": command_for(contender, paths, paths["guest"]),
            "runs": runs_of,
        }
        for key in ("wall_ms", "first_byte_ms", "all_exited_ms", "cpu_ms", "cpu_total_ms",
                    "user_ms", "sys_ms", "helpers"):
            report[contender][key] = summarize([r[key] for r in runs_of])
    return report


# ----------------------------------------------------------------------------- memory


SMAPS_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def read_status(pid):
    """The Vm*/Rss* lines of /proc/PID/status, in KiB, plus Threads."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key.startswith(("Vm", "Rss")) or key == "Threads":
                fields[key] = int(value.split()[0])
    return fields


def read_smaps(pid):
    """Every mapping of /proc/PID/smaps as a dict: start, perms, name, and its KiB fields."""
    mappings = []
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            header = SMAPS_HEADER.match(line)
            if header:
                mappings.append({"start": header.group(1), "perms": header.group(3),
                                 "name": header.group(4) or "[anon]"})
                continue
            key, _, value = line.partition(":")
            parts = value.split()
            if mappings and len(parts) == 2 and parts[1] == "kB":
                mappings[-1][key] = int(parts[0])
    return mappings


def memory_figures(status, mappings):
    """Guest-touched, overheads and Pss outside guest RAM (KiB) from one snapshot."""
    guest_kib = GUEST_MIB * 1024
    guest = [m for m in mappings if m.get("Size", 0) >= guest_kib]
    others = [m for m in mappings if m.get("Size", 0) < guest_kib]
    touched = sum(m.get("Rss", 0) for m in guest)
    others.sort(key=lambda m: m.get("Rss", 0), reverse=True)
    return {
        "vm_rss_kib": status["VmRSS"],
        "vm_hwm_kib": status["VmHWM"],
        "guest_mappings": len(guest),
        "guest_touched_kib": touched,
        "overhead_rss_kib": status["VmRSS"] - touched,
        "overhead_hwm_kib": status["VmHWM"] - touched,
        "rss_outside_guest_kib": sum(m.get("Rss", 0) for m in others),
        "pss_outside_guest_kib": sum(m.get("Pss", 0) for m in others),
        # Private memory of this one VM: anonymous (and shmem) pages outside guest RAM. The rest
        # of VmRSS is file pages (the binary and its libraries), shared by every VM on the host.
        "anon_outside_guest_kib": status.get("RssAnon", 0) + status.get("RssShmem", 0) - touched,
        "rss_file_kib": status.get("RssFile", 0),
        "threads": status.get("Threads", 0),
        "top_mappings": [
            {"name": m["name"], "perms": m["perms"], "size_kib": m.get("Size", 0),
             "rss_kib": m.get("Rss", 0), "pss_kib": m.get("Pss", 0)}
            for m in others[:12] if m.get("Rss", 0) > 0
        ],
    }


def memory_once(contender, paths, idle_s, timeout_s):
    """Boots the idle guest, waits for its first byte, idles, snapshots /proc, kills it."""
    argv = command_for(contender, paths, paths["idle_guest"])
    child = Child(argv)
    child.read_until(child.start_ns + int(timeout_s * 1e9), stop_at_first_byte=True)
    figures, problem = None, f"did not print a byte within {timeout_s} s"
    if child.first_byte_ns is not None:
        time.sleep(idle_s)
        try:
            figures = memory_figures(read_status(child.pid), read_smaps(child.pid))
        except (OSError, KeyError, ValueError):  # gone, or a zombie without Vm* lines
            problem = "exited before the memory snapshot (it must idle while the guest halts)"
    status = child.reap(signal.SIGKILL, timeout_s)["status"]
    if figures is None:
        raise BenchError(f"{LABELS[contender]} with the idle guest {problem}: {' '.join(argv)}\n"
                         f"  {describe_status(status)}; stderr: {child.stderr_tail()}")
    return figures


def run_memory(contenders, paths, mem_runs, idle_s, timeout_s):
    """`mem_runs` snapshots per contender (alternating); the median of each figure."""
    snapshots = {c: [] for c in contenders}
    for _ in range(mem_runs):
        for contender in contenders:
            snapshots[contender].append(memory_once(contender, paths, idle_s, timeout_s))
    report = {}
    for contender, snaps in snapshots.items():
        numeric = [k for k, v in snaps[0].items() if isinstance(v, int)]
        report[contender] = {k: int(statistics.median(s[k] for s in snaps)) for k in numeric}
        report[contender]["top_mappings"] = snaps[-1]["top_mappings"]
        report[contender]["command"] = command_for(contender, paths, paths["idle_guest"])
    return report


# ----------------------------------------------------------------------------- targets and output


def evaluate(launch, memory):
    """Ratios and the issue's targets, each as {name, value, limit, met}."""
    ratios, targets = {}, []
    wall = {c: launch[c]["wall_ms"]["median"] for c in launch}
    if "wisp" in wall and "floor" in wall:
        ratios["wisp_over_floor"] = wall["wisp"] / wall["floor"]
        targets.append({"name": "wisp-vmm launch <= 2x raw KVM floor (median wall)",
                        "value": ratios["wisp_over_floor"], "limit": TARGET_WISP_OVER_FLOOR,
                        "unit": "x", "met": ratios["wisp_over_floor"] <= TARGET_WISP_OVER_FLOOR})
    if "wisp" in wall and "wisp-noseccomp" in wall:  # issue 14: what the filters cost
        # CPU time: on a busy machine the wall medians of two runs of the same binary differ
        # by more than 1 ms; the fastest walls are printed beside it
        extra = launch["wisp"]["cpu_ms"]["median"] - launch["wisp-noseccomp"]["cpu_ms"]["median"]
        targets.append({"name": "seccomp filters: <= 1 ms more launch time (median CPU; fastest "
                        "wall %+.2f ms)" % (launch["wisp"]["wall_ms"]["min"]
                                            - launch["wisp-noseccomp"]["wall_ms"]["min"]),
                        "value": extra, "limit": 1.0, "unit": "ms", "met": extra <= 1.0})
    if "wisp" in wall and "qemu" in wall:
        ratios["qemu_over_wisp"] = wall["qemu"] / wall["wisp"]
        targets.append({"name": "wisp-vmm launch >= 10x faster than QEMU microvm (median wall)",
                        "value": ratios["qemu_over_wisp"], "limit": TARGET_QEMU_OVER_WISP,
                        "unit": "x", "met": ratios["qemu_over_wisp"] >= TARGET_QEMU_OVER_WISP})
    if "qemu" in wall and "floor" in wall:
        ratios["qemu_over_floor"] = wall["qemu"] / wall["floor"]
    # A contender that hands its teardown to a helper: the ratios until all its processes exited.
    if "wisp" in launch and "floor" in launch and left_helpers(launch):
        done = {c: launch[c]["all_exited_ms"]["median"] for c in launch}
        ratios["wisp_over_floor_all_exited"] = done["wisp"] / done["floor"]
        if "qemu" in done:
            ratios["qemu_over_wisp_all_exited"] = done["qemu"] / done["wisp"]
        total = {c: launch[c]["cpu_total_ms"]["median"] for c in launch}
        ratios["wisp_over_floor_cpu_total"] = total["wisp"] / total["floor"]
    # The fastest run of each approaches what an unloaded machine gives; shown beside the medians.
    if "wisp" in wall and "floor" in wall:
        fastest = {c: launch[c]["wall_ms"]["min"] for c in ("wisp", "floor")}
        ratios["wisp_over_floor_min"] = fastest["wisp"] / fastest["floor"]
    # CPU time is less disturbed than wall time by other load on the machine: shown beside it.
    cpu = {c: launch[c]["cpu_ms"]["median"] for c in launch}
    if "wisp" in cpu and "floor" in cpu and cpu["floor"] > 0:
        ratios["wisp_over_floor_cpu"] = cpu["wisp"] / cpu["floor"]
    if "wisp" in cpu and "qemu" in cpu and cpu["wisp"] > 0:
        ratios["qemu_over_wisp_cpu"] = cpu["qemu"] / cpu["wisp"]
    # With a drive and a NIC: what the devices add to wisp-vmm's launch, and QEMU's beside it.
    first = {c: launch[c]["first_byte_ms"]["median"] for c in launch}
    if "wisp-dev" in first and "wisp" in first:
        ratios["wisp_dev_over_wisp_first_byte"] = first["wisp-dev"] / first["wisp"]
        ratios["wisp_dev_over_wisp"] = wall["wisp-dev"] / wall["wisp"]
        ratios["wisp_dev_over_wisp_cpu"] = cpu["wisp-dev"] / cpu["wisp"]
        targets.append({"name": "wisp-vmm with a drive and a NIC: first byte <= 1.2x wisp-vmm's"
                                " without devices (median)",
                        "value": ratios["wisp_dev_over_wisp_first_byte"],
                        "limit": TARGET_DEV_OVER_BARE, "unit": "x",
                        "met": ratios["wisp_dev_over_wisp_first_byte"] <= TARGET_DEV_OVER_BARE})
    if "wisp-dev" in first and "qemu-dev" in first:
        ratios["qemu_dev_over_wisp_dev_first_byte"] = first["qemu-dev"] / first["wisp-dev"]
        ratios["qemu_dev_over_wisp_dev_cpu"] = cpu["qemu-dev"] / cpu["wisp-dev"]
    if memory and "wisp" in memory:
        overhead = memory["wisp"]["overhead_rss_kib"]
        targets.append({"name": "wisp-vmm RSS outside guest RAM <= 1 MiB (VmRSS - guest-touched)",
                        "value": overhead, "limit": TARGET_OVERHEAD_KIB, "unit": "KiB",
                        "met": overhead <= TARGET_OVERHEAD_KIB})
        if "qemu" in memory and overhead > 0:
            ratios["qemu_over_wisp_overhead"] = memory["qemu"]["overhead_rss_kib"] / overhead
        if "wisp-noseccomp" in memory:  # issue 14
            extra = overhead - memory["wisp-noseccomp"]["overhead_rss_kib"]
            targets.append({"name": "seccomp filters: <= 64 KiB more RSS (VmRSS - guest-touched)",
                            "value": extra, "limit": 64, "unit": "KiB", "met": extra <= 64})
    return ratios, targets


def machine_info():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"kernel": platform.release(), "cpu": model, "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def mib(kib):
    return f"{kib / 1024:.2f}"


def left_helpers(launch):
    """True if some contender left processes behind its exit in some run."""
    return any(figures["helpers"]["max"] > 0 for figures in launch.values())


def print_launch_table(launch, out):
    rows = [("wall_ms", "wall"), ("first_byte_ms", "first byte"), ("cpu_ms", "CPU (user+sys)")]
    if left_helpers(launch):
        rows[2:2] = [("all_exited_ms", "all exited")]
        rows.append(("cpu_total_ms", "CPU + helpers"))
    print(f"{'Launch, ms':<30}{'median':>9}{'p10':>9}{'p90':>9}{'min':>9}{'max':>9}", file=out)
    for contender, figures in launch.items():
        for key, what in rows:
            label = LABELS[contender] if key == "wall_ms" else ""
            s = figures[key]
            print(f"  {label:<14}{what:<14}{s['median']:>9.2f}{s['p10']:>9.2f}{s['p90']:>9.2f}"
                  f"{s['min']:>9.2f}{s['max']:>9.2f}", file=out)
    for contender, figures in launch.items():
        if figures["helpers"]["max"] > 0:
            print(f"  {LABELS[contender]} exits before its work is done: it leaves"
                  f" {figures['helpers']['median']:.0f} helper process(es) per run (VM teardown)"
                  f"; 'all exited' and 'CPU + helpers' include them.", file=out)


def print_memory_table(memory, detail, out):
    columns = (("vm_rss_kib", "VmRSS", ""), ("vm_hwm_kib", "VmHWM", ""),
               ("guest_touched_kib", "guest", "touched"), ("overhead_rss_kib", "overhead", "(RSS)"),
               ("overhead_hwm_kib", "overhead", "(HWM)"),
               ("pss_outside_guest_kib", "Pss", "outside"),
               ("anon_outside_guest_kib", "anon", "outside"), ("rss_file_kib", "file", "pages"))
    head = f"Idle {GUEST_MIB} MiB guest, MiB"
    print(f"{head:<26}" + "".join(f"{c[1]:>9}" for c in columns), file=out)
    print(f"{'':<26}" + "".join(f"{c[2]:>9}" for c in columns), file=out)
    for contender, m in memory.items():
        print(f"  {LABELS[contender]:<24}" + "".join(f"{mib(m[c[0]]):>9}" for c in columns),
              file=out)
    if detail:
        for contender, m in memory.items():
            print(f"  {LABELS[contender]}: largest mappings outside guest RAM (Rss KiB, Pss KiB,"
                  f" size KiB)", file=out)
            for mapping in m["top_mappings"]:
                print(f"    {mapping['rss_kib']:>7}{mapping['pss_kib']:>7}{mapping['size_kib']:>9}"
                      f"  {mapping['perms']}  {mapping['name']}", file=out)


def print_table(result, detail, out=sys.stdout):
    m, cfg = result["machine"], result["config"]
    print(f"wisp launch benchmark, {m['date']}", file=out)
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']},"
          f" load average {' '.join(f'{x:.2f}' for x in m['loadavg'])}", file=out)
    print(f"guest: {cfg['guest']} (prints \"!\", writes 0 to port 0xf4); {cfg['runs']} run(s) per"
          f" contender, interleaved, after {cfg['warmup']} warm-up round(s)", file=out)
    print("wall = spawn -> exit; first byte = spawn -> first serial byte on stdout;"
          " CPU = child's user+sys (wait4);\nall exited / CPU + helpers = the same including"
          " processes the contender left behind (we are their subreaper)", file=out)
    if any(c in DEVICE_CONTENDERS for c in result["launch"]):
        print(f"+blk+net: one virtio-blk drive (a {DISK_MIB} MiB raw file in /dev/shm) and one"
              f" virtio-net NIC (tap {TAP}, own network namespace); the guest does not use them",
              file=out)
    print(file=out)
    print_launch_table(result["launch"], out)
    print(file=out)
    names = {"wisp_over_floor": "wisp-vmm / raw KVM floor, median wall",
             "qemu_over_wisp": "QEMU microvm / wisp-vmm, median wall",
             "qemu_over_floor": "QEMU microvm / raw KVM floor, median wall",
             "wisp_over_floor_min": "wisp-vmm / raw KVM floor, fastest wall",
             "wisp_over_floor_all_exited": "wisp-vmm / raw KVM floor, median all exited",
             "qemu_over_wisp_all_exited": "QEMU microvm / wisp-vmm, median all exited",
             "wisp_over_floor_cpu_total": "wisp-vmm / raw KVM floor, median CPU + helpers",
             "wisp_over_floor_cpu": "wisp-vmm / raw KVM floor, median CPU",
             "qemu_over_wisp_cpu": "QEMU microvm / wisp-vmm, median CPU",
             "qemu_over_wisp_overhead": "QEMU microvm / wisp-vmm, RSS overhead",
             "wisp_dev_over_wisp_first_byte": "wisp +blk+net / wisp-vmm, median first byte",
             "wisp_dev_over_wisp": "wisp +blk+net / wisp-vmm, median wall",
             "wisp_dev_over_wisp_cpu": "wisp +blk+net / wisp-vmm, median CPU",
             "qemu_dev_over_wisp_dev_first_byte": "QEMU +blk+net / wisp +blk+net, first byte",
             "qemu_dev_over_wisp_dev_cpu": "QEMU +blk+net / wisp +blk+net, median CPU"}
    print("Ratios", file=out)
    for key, value in result["ratios"].items():
        print(f"  {names[key]:<44}{value:>8.2f}x", file=out)
    if result["memory"]:
        print(file=out)
        print_memory_table(result["memory"], detail, out)
        print(f"  guest touched = Rss of the mappings >= {GUEST_MIB} MiB; overhead = VmRSS (VmHWM)"
              f" - guest touched;\n  anon outside = RssAnon + RssShmem - guest touched (private"
              f" to this VM); file pages = RssFile\n  (binary and libraries, shared by all VMs);"
              f" median of {cfg['mem_runs']} snapshot(s) after {cfg['idle_seconds']} s idle",
              file=out)
    print(file=out)
    print("Targets", file=out)
    for t in result["targets"]:
        value = (f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:+.2f} ms"
                 if t["unit"] == "ms" else f"{t['value']} KiB")
        print(f"  {'met   ' if t['met'] else 'MISSED'}  {t['name']}: {value}", file=out)
    met = sum(t["met"] for t in result["targets"])
    print(f"Targets: {met} of {len(result['targets'])} met", file=out)


# ----------------------------------------------------------------------------- command line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Launch-time and memory-overhead benchmark of wisp-vmm beside QEMU microvm"
        " and a raw KVM floor (bench/launch/floor.c). Prints a table (or --json); exit status"
        " 0 when the benchmark ran, whether or not the targets were met; 1 when it could not"
        " run (no /dev/kvm, no QEMU, a contender failed to boot the guest); 2 on a usage error.",
        epilog="Example: python3 bench/launch/launch.py --build-dir build"
        " --vmm build/src/vmm/wisp-vmm.  See docs/benchmarks.md.")
    parser.add_argument("--runs", metavar="N", type=positive_int, default=20,
                        help="measured launches per contender (default 20; >= 10 for figures)")
    parser.add_argument("--warmup", metavar="N", type=non_negative_int, default=1,
                        help="unmeasured rounds first (default 1)")
    parser.add_argument("--mem-runs", metavar="N", type=non_negative_int, default=3,
                        help="memory snapshots per contender, median kept (default 3; 0 skips)")
    parser.add_argument("--idle-seconds", metavar="S", type=float, default=0.5,
                        help="idle time before the memory snapshot (default 0.5)")
    parser.add_argument("--timeout", metavar="S", type=float, default=20.0,
                        help="seconds one launch may take before it counts as failed (default 20)")
    parser.add_argument("--build-dir", metavar="DIR", default=None,
                        help="meson build directory holding the floor, the guests and wisp-vmm"
                        " (default: build/ beside bench/)")
    parser.add_argument("--vmm", metavar="PATH",
                        help="wisp-vmm binary (default BUILD/src/vmm/wisp-vmm)")
    parser.add_argument("--qemu", metavar="PATH", default="qemu-system-x86_64",
                        help="QEMU binary (default qemu-system-x86_64 from PATH)")
    parser.add_argument("--floor", metavar="PATH",
                        help="floor binary (default BUILD/bench/launch/wisp-bench-floor)")
    parser.add_argument("--guest", metavar="ELF",
                        help="exit guest ELF (default BUILD/bench/launch/tiny-exit.elf)")
    parser.add_argument("--idle-guest", metavar="ELF",
                        help="idle guest ELF (default BUILD/bench/launch/tiny-idle.elf)")
    parser.add_argument("--contenders", metavar="LIST", type=contender_list, default=None,
                        help="comma-separated subset of floor,wisp,qemu,wisp-dev,qemu-dev (default"
                        " all; as a user other than root, the three without devices)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--detail", action="store_true",
                        help="also list each contender's largest mappings outside guest RAM")
    return parser.parse_args(argv)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def contender_list(text):
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in chosen if c not in CONTENDERS]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise argparse.ArgumentTypeError(f"expected a subset of {','.join(CONTENDERS)}, got {text}")
    return chosen


def resolve_paths(args):
    """Absolute paths of every program and guest, or BenchError naming what is missing."""
    if not os.path.exists("/dev/kvm"):
        raise BenchError("/dev/kvm does not exist: the benchmark needs KVM")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise BenchError("/dev/kvm is not readable and writable by this user")
    build = args.build_dir or os.path.normpath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build"))
    paths = {
        "floor": args.floor or os.path.join(build, "bench", "launch", "wisp-bench-floor"),
        "guest": args.guest or os.path.join(build, "bench", "launch", "tiny-exit.elf"),
        "idle_guest": args.idle_guest or os.path.join(build, "bench", "launch", "tiny-idle.elf"),
        "vmm": args.vmm or os.path.join(build, "src", "vmm", "wisp-vmm"),
        "qemu": shutil.which(args.qemu) or args.qemu,
    }
    program = {"floor": "floor", "wisp": "vmm", "wisp-dev": "vmm", "qemu": "qemu",
               "qemu-dev": "qemu", "wisp-noseccomp": "vmm"}
    needed = ["guest", "idle_guest"] + sorted({program[c] for c in args.contenders})
    hints = {"qemu": "install Debian's qemu-system-x86 or pass --qemu PATH",
             "vmm": "build it (ninja -C BUILD src/vmm/wisp-vmm), pass --vmm PATH, or leave it"
                    " out with --contenders floor,qemu",
             "floor": "build it (ninja -C BUILD bench/launch/wisp-bench-floor) or pass --floor"}
    for key in needed:
        path = paths[key]
        want = os.X_OK if key in ("floor", "vmm", "qemu") else os.R_OK
        if not os.path.isfile(path) or not os.access(path, want):
            raise BenchError(f"{key.replace('_', ' ')} not found at {path}"
                             f" ({hints.get(key, 'build bench/launch or pass its path')})")
        paths[key] = os.path.abspath(path)
    return paths


def main(argv=None):
    args = parse_args(argv)
    if args.contenders is None:
        args.contenders = list(CONTENDERS if os.geteuid() == 0 else CONTENDERS[:3])
        if os.geteuid() != 0:
            print("launch.py: not root: leaving out the contenders with devices (they need a"
                  " network namespace and a tap)", file=sys.stderr)
    paths = {}
    try:
        paths = resolve_paths(args)
        if any(c in DEVICE_CONTENDERS for c in args.contenders):
            setup_devices(paths)
        become_subreaper()
        launch = run_launches(args.contenders, paths, args.runs, args.warmup, args.timeout)
        memory = {}
        if args.mem_runs:
            memory = run_memory(args.contenders, paths, args.mem_runs, args.idle_seconds,
                                args.timeout)
    except BenchError as err:
        print(f"launch.py: {err}", file=sys.stderr)
        return 1
    finally:
        if paths.get("disk"):
            os.unlink(paths["disk"])
    ratios, targets = evaluate(launch, memory)
    result = {
        "machine": machine_info(),
        "config": {"runs": args.runs, "warmup": args.warmup, "mem_runs": args.mem_runs,
                   "idle_seconds": args.idle_seconds, "guest_mib": GUEST_MIB,
                   "guest": os.path.basename(paths["guest"]), "paths": paths},
        "launch": launch,
        "memory": memory,
        "ratios": ratios,
        "targets": targets,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result, args.detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
