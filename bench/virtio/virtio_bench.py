#!/usr/bin/env python3
"""wisp's virtio benchmark: the same ring-3 guests under wisp-vmm and under QEMU microvm.

virtio-blk (guest/bench_blk.c): 4 KiB random reads and writes at queue depth 1 and 32, 1 MiB
sequential reads and writes, on one raw file in tmpfs (/dev/shm) that every contender uses in
turn (cache=writeback on both: tmpfs has no O_DIRECT). virtio-net (guest/bench_net.c): frames
sent by the guest come back from a tap that reflects every frame it receives (tc mirred, in a
network namespace of the benchmark's own); round trips per second with 1 and 32 frames in
flight. The guests poll their used rings, so no interrupt is delivered on either VMM.

Each phase sits between marker lines on the guest's serial port (guest/bench.h): "begin", a
pause, "go", the phase, "end" (with the guest's TSC at the phase's start and end), a pause. The
driver timestamps each line as it arrives on the VMM's stdout (a pipe) and right then reads the
CPU time of every thread of the VMM process:
  /proc/PID/task/TID/schedstat, first field (time on a CPU, ns); /proc/PID/task/TID/stat
  utime + stime (clock ticks) where schedstat is missing or with --cpu-source stat.
  vCPU threads: named "vcpuN" (wisp-vmm) or "CPU N/KVM" (QEMU). Their time is the guest's own
    (KVM_RUN) and the exits it takes; the guest spins while it polls, so it is ~100% of the wall
    time on both VMMs and says little about either. Counted from go to end.
  VMM: every other thread (main loop, device I/O threads, block-layer and QEMU worker threads,
    io_uring workers, call_rcu, ...), user and system time: what the VMM costs the host per
    request. Counted from begin to end: the samples fall in the pauses, when it is idle.
Figures per phase: requests (frames) per second and MB/s from the phase's time (the guest's
TSC at its start and end, converted at the rate the lines' arrival times give over the run); VMM CPU per request and vCPU CPU per request from the thread deltas. Beside them, the host
floor (bench/virtio/floor.c): the CPU time per request of plain preadv/pwritev on the same file,
or write + read on the same tap, without a VM: the kernel's share that every VMM pays (the copy,
the tap's path), so that VMM CPU - floor is what the VMM itself adds. Runs alternate
between the contenders (order rotated each round) after one unmeasured warm-up round; medians.
Ratios are wisp-vmm / QEMU. Targets (issue 9): VMM CPU per request <= 0.5x QEMU's, IOPS >= QEMU's.

Only Python's standard library is used. Needs root (network namespace, tap, tc), /dev/kvm and
qemu-system-x86_64. See docs/benchmarks.md.
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
import struct
import subprocess
import sys
import tempfile
import time

GUEST_MIB = 128
DISK_MIB = 256
BLOCK = 4096
MAC = "02:00:00:00:00:10"
TAP = "wbench0"
QEMU_BASE = [
    "-enable-kvm", "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off,acpi=off",
    "-cpu", "host,-arch-capabilities", "-smp", "1", "-m", str(GUEST_MIB), "-nographic",
    "-nodefaults", "-serial", "stdio", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    "-global", "virtio-mmio.force-legacy=false",
    "-name", "bench,debug-threads=on",  # names QEMU's threads ("CPU 0/KVM", "IO io0", ...)
]
# name, operation, KiB per request, queue depth, requests measured (at --scale 1)
BLK_PHASES = [
    ("randread-4k-qd1", "randread", 4, 1, 20000),
    ("randwrite-4k-qd1", "randwrite", 4, 1, 20000),
    ("randread-4k-qd32", "randread", 4, 32, 200000),
    ("randwrite-4k-qd32", "randwrite", 4, 32, 200000),
    ("seqread-1m-qd4", "seqread", 1024, 4, 3000),
    ("seqwrite-1m-qd4", "seqwrite", 1024, 4, 3000),
]
# name, frame bytes, frames in flight, round trips measured (at --scale 1)
NET_PHASES = [
    ("frames-60b-w1", 60, 1, 20000),
    ("frames-60b-w32", 60, 32, 200000),
    ("frames-1514b-w32", 1514, 32, 200000),
]
CONTENDERS = ("wisp", "qemu", "qemu-iothread")
LABELS = {"wisp": "wisp-vmm", "qemu": "QEMU", "qemu-iothread": "QEMU+iothread"}
DESCRIPTIONS = {
    "wisp": "wisp-vmm, its defaults (one I/O thread per device; aio=io_uring)",
    "qemu": "QEMU microvm, its defaults (devices on the main loop; aio=threads)",
    "qemu-iothread": "QEMU microvm, virtio-blk on an iothread (adaptive polling, QEMU's default"
                     " poll-max-ns) with aio=io_uring; blk only (QEMU's virtio-net has no iothread)",
}
GUESTS_OF = {"wisp": ("blk", "net"), "qemu": ("blk", "net"), "qemu-iothread": ("blk",)}
VCPU_THREAD = re.compile(r"^(vcpu\d+|CPU \d+/KVM)$")
# io_uring's kernel workers are named after their TID (iou-wrk-1234): grouped under one name
PER_TID_NAME = re.compile(r"^(iou-wrk|iou-sqp)-\d+$")
TARGET_CPU_RATIO = 0.5  # wisp VMM CPU per request <= 0.5x QEMU's
TARGET_IOPS_RATIO = 1.0  # wisp IOPS >= QEMU's
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure that ends the benchmark with a message and exit status 1."""


# ----------------------------------------------------------------------------- the host side


def sh(*argv):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {p.stderr.strip() or f'status {p.returncode}'}")
    return p.stdout


def make_disk(directory):
    """A raw file of DISK_MIB in tmpfs, each 4 KiB block starting with its number (bench_blk.c)."""
    fd, path = tempfile.mkstemp(prefix="wisp-virtio-bench.", suffix=".raw", dir=directory)
    image = bytearray(DISK_MIB << 20)
    for block in range(len(image) // BLOCK):
        struct.pack_into("<Q", image, block * BLOCK, block)
    with os.fdopen(fd, "wb") as f:
        f.write(image)
    return path


CLONE_NEWNET = 0x40000000


def enter_netns():
    """This process, and every VMM it starts, in a new network namespace with one tap (TAP) that
    sends every frame it receives back to its reader: ingress qdisc, a u32 filter matching
    everything, mirred redirect to the tap's own egress. Nothing in the host's namespace is
    touched; the namespace goes away with the process."""
    if os.geteuid() != 0:
        raise BenchError("the virtio-net phases need root (network namespace, tap, tc);"
                         " run as root or pass --no-net")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise BenchError(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
    for conf in ("all", "default"):  # no IPv6 chatter from the kernel on the tap
        path = f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("1")
    sh("ip", "tuntap", "add", "dev", TAP, "mode", "tap")
    sh("ip", "link", "set", TAP, "up")
    sh("tc", "qdisc", "add", "dev", TAP, "handle", "ffff:", "ingress")
    sh("tc", "filter", "add", "dev", TAP, "parent", "ffff:", "protocol", "all", "u32", "match",
       "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", TAP)


def command_for(contender, paths, guest, cmdline, disk):
    """The argv that boots `guest` ("blk" or "net") with one vCPU, 128 MiB and the one device."""
    elf = paths["blk_guest" if guest == "blk" else "net_guest"]
    extra = paths["drive_keys"].get(contender.split("-")[0], "")
    if contender == "wisp":
        dev = (["--drive", f"path={disk},format=raw{extra}"] if guest == "blk"
               else ["--net", f"tap={TAP},mac={MAC}"])
        return [paths["vmm"], "--kernel", elf, "--mem", str(GUEST_MIB), "--cpus", "1",
                "--cmdline", cmdline] + dev
    if guest == "blk" and contender == "qemu-iothread":
        dev = ["-object", "iothread,id=io0",
               "-drive", f"file={disk},if=none,id=d0,format=raw,aio=io_uring{extra}",
               "-device", "virtio-blk-device,drive=d0,iothread=io0"]
    elif guest == "blk":
        dev = ["-drive", f"file={disk},if=none,id=d0,format=raw{extra}",
               "-device", "virtio-blk-device,drive=d0"]
    else:
        dev = ["-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off",
               "-device", f"virtio-net-device,netdev=n0,mac={MAC}"]
    return [paths["qemu"]] + QEMU_BASE + dev + ["-kernel", elf, "-append", cmdline]


# ----------------------------------------------------------------------------- threads and CPU


def thread_cpu(pid, source):
    """{tid: (name, CPU seconds)} of every thread of pid now."""
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return threads
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(base + "/comm") as f:
                name = f.read().rstrip("\n")
            if source == "schedstat":
                with open(base + "/schedstat") as f:
                    seconds = int(f.read().split()[0]) / 1e9
            else:
                with open(base + "/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited meanwhile
        threads[int(tid)] = (name, seconds)
    return threads


def cpu_between(before, after):
    """vCPU and VMM CPU seconds spent between two thread_cpu() samples, with a breakdown."""
    vcpu = vmm = 0.0
    by_name = {}
    for tid, (name, seconds) in after.items():
        delta = seconds - before.get(tid, (name, 0.0))[1]  # a new thread: all its time
        if VCPU_THREAD.match(name):
            vcpu += delta
        else:
            vmm += delta
        group = PER_TID_NAME.sub(r"\1", name)
        by_name[group] = by_name.get(group, 0.0) + delta
    exited = sorted(before[tid][0] for tid in before if tid not in after)
    return {"vcpu_s": vcpu, "vmm_s": vmm, "by_thread": by_name, "exited_threads": exited,
            "vcpu_threads": sum(1 for n, _ in after.values() if VCPU_THREAD.match(n))}


# ----------------------------------------------------------------------------- one VM


MARKER = re.compile(rb"^bench: (begin|go|end) (\S+)((?: \d+)*)$")
RESULT = re.compile(rb"^bench: result (\S+) (requests|frames) (\d+) bytes (\d+)$")


def read_lines(proc, timeout_s, on_line):
    """Reads the VM's stdout to EOF; on_line(line, arrival time, more) for each line, where
    `more` tells whether later output had already arrived with it."""
    fd, pending, tail = proc.stdout.fileno(), b"", []
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the VM did not end within {timeout_s:.0f} s; its last lines:"
                             f" {b''.join(tail[-5:])!r}")
        if not select.select([fd], [], [], left)[0]:
            continue
        data = os.read(fd, 65536)
        now = time.perf_counter()
        if not data:
            return b"".join(tail)
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            tail.append(line + b"\n")
            on_line(line.rstrip(b"\r"), now, bool(pending))


def run_vm(contender, argv, source, timeout_s):
    """Runs one VM to its end; returns {phase: figures} from its marker lines."""
    marks, results = {}, {}

    def on_line(line, now, more):
        m = MARKER.match(line)
        if m:  # the clock first, then the threads
            tsc = [int(x) for x in m.group(3).split()]
            marks[(m.group(1), m.group(2).decode())] = (now, thread_cpu(proc.pid, source), more,
                                                        tsc)
        r = RESULT.match(line)
        if r:
            results[r.group(1).decode()] = (int(r.group(3)), int(r.group(4)))

    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        output = read_lines(proc, timeout_s, on_line).decode(errors="replace")
        status = proc.wait(timeout=timeout_s)
    except (BenchError, subprocess.TimeoutExpired) as err:
        raise BenchError(f"{' '.join(argv)}: {err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read().decode(errors="replace").strip()
        proc.stdout.close()
        proc.stderr.close()
    # the guests end with guest_exit(0): wisp-vmm exits 0, QEMU's isa-debug-exit 2 * 0 + 1
    expected = 0 if contender == "wisp" else 1
    if status != expected or "bench: ok" not in output:
        raise BenchError(f"the guest failed (exit status {status}, expected {expected}):"
                         f" {' '.join(argv)}\n  output: {output[-800:]}\n  stderr: {stderr[-800:]}")
    return phase_figures(marks, results)


def tsc_rate(marks):
    """Guest TSC ticks per host second, from the TSC each begin and end line carries and the
    time it arrived, the first and the last line read at once (with nothing after it in the same
    read) over the whole run; None when those span less than 0.2 s."""
    points = sorted((m[0], m[3][-1]) for (what, _), m in marks.items()
                    if what in (b"begin", b"end") and m[3] and not m[2])
    if len(points) < 2 or points[-1][0] - points[0][0] < 0.2:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def phase_figures(marks, results):
    """Per phase: the wall time from its start to its end (the guest's TSC, at the rate
    tsc_rate() found; else the arrival of its go and end lines); the VMM's CPU time between the
    samples at its begin and end lines (taken while the guest idles: the VMM has nothing to do
    then); the vCPU's between the samples at go and end (it spins through the pauses)."""
    figures = {}
    rate = tsc_rate(marks)
    for name, (count, nbytes) in results.items():
        begin, go, end = (marks.get((what, name)) for what in (b"begin", b"go", b"end"))
        if not begin or not go or not end:
            raise BenchError(f"phase {name}: a begin, go or end line is missing")
        wall = (end[3][1] - end[3][0]) / rate if rate and len(end[3]) == 2 else end[0] - go[0]
        if wall <= 0:
            raise BenchError(f"phase {name}: its go and end lines arrived together and no guest"
                             " TSC rate is known: too short to time (raise --scale)")
        cpu = cpu_between(begin[1], end[1])
        vcpu = cpu_between(go[1], end[1])  # the vCPU spins through the pause after begin
        cpu["vcpu_s"] = vcpu["vcpu_s"]
        for thread, seconds in vcpu["by_thread"].items():
            if VCPU_THREAD.match(thread):
                cpu["by_thread"][thread] = seconds
        if cpu["vcpu_threads"] == 0:
            raise BenchError("no vCPU thread found (named vcpuN or 'CPU N/KVM'): cannot tell the"
                             " guest's CPU time from the VMM's")
        figures[name] = {
            "count": count, "bytes": nbytes, "wall_s": wall, "wall_host_s": end[0] - go[0],
            "rate": count / wall, "mb_s": nbytes / wall / 1e6,
            "vmm_us": cpu["vmm_s"] / count * 1e6, "vcpu_us": cpu["vcpu_s"] / count * 1e6,
            "vmm_cpu_share": cpu["vmm_s"] / wall,
            "by_thread_us": {k: v / count * 1e6 for k, v in cpu["by_thread"].items()},
            "exited_threads": cpu["exited_threads"],
            # a sample taken after the next line had arrived may include work past the phase
            "late_sample": begin[2] or end[2],  # (go's is taken while the phase runs anyway)
            "clock": "tsc" if rate and len(end[3]) == 2 else "host",
        }
    return figures


# ----------------------------------------------------------------------------- the host floor


FLOOR_LINE = re.compile(r"^floor: cpu_us_per_request (\S+) wall_us_per_request (\S+)$", re.M)


def run_floor(paths, guest, phase, scale, disk):
    """CPU us per request of the phase's system calls without a VM (floor.c)."""
    if guest == "blk":
        name, op, kib, _depth, count = phase
        argv = [paths["floor"], "blk", disk, op, str(kib), str(max(1, int(count * scale)))]
    else:
        name, size, window, count = phase
        argv = [paths["floor"], "net", TAP, str(size), str(window), str(max(1, int(count * scale)))]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    m = FLOOR_LINE.search(p.stdout)
    if p.returncode != 0 or not m:
        raise BenchError(f"{' '.join(argv)}: status {p.returncode}: {p.stderr.strip()}")
    return float(m.group(1))


# ----------------------------------------------------------------------------- the rounds


def guest_cmdline(phases, scale, warmup):
    specs = []
    for i, (name, *fields) in enumerate(phases):
        fields[-1] = max(1, int(fields[-1] * scale))
        specs.append(f"bench.p{i}=" + ",".join(str(x) for x in [name] + fields))
    return " ".join(specs + [f"bench.warmup={warmup}"])


def summarize(runs):
    """Medians over runs of each phase's figures; the runs themselves kept."""
    phases = {}
    for phase in runs[0]:
        per_run = [r[phase] for r in runs]
        summary = {key: statistics.median(r[key] for r in per_run)
                   for key in ("rate", "mb_s", "vmm_us", "vcpu_us", "vmm_cpu_share", "wall_s")}
        names = sorted({n for r in per_run for n in r["by_thread_us"]})
        summary["by_thread_us"] = {n: statistics.median(r["by_thread_us"].get(n, 0.0)
                                                        for r in per_run) for n in names}
        summary["count"] = per_run[0]["count"]
        summary["exited_threads"] = sorted({t for r in per_run for t in r["exited_threads"]})
        summary["late_samples"] = sum(r["late_sample"] for r in per_run)
        summary["host_clock_runs"] = sum(r["clock"] == "host" for r in per_run)
        summary["runs"] = per_run
        phases[phase] = summary
    return phases


def run_rounds(args, paths, disk, guests):
    """One warm-up round, then args.runs rounds: the floor of every phase, then every guest under
    every contender, the contenders' order rotated each round. Returns, per guest,
    {"contenders": {contender: {"command", "phases"}}, "floor": {phase: CPU us per request}}."""
    cmdlines = {"blk": guest_cmdline(BLK_PHASES, args.scale, args.warmup_requests),
                "net": guest_cmdline(NET_PHASES, args.scale, args.warmup_requests)}
    samples = {(g, c): [] for g in guests for c in args.contenders if g in GUESTS_OF[c]}
    floors = {g: {} for g in guests}
    for round_no in range(args.warmup + args.runs):
        measured = round_no >= args.warmup
        for guest in guests if paths.get("floor") else ():
            for phase in BLK_PHASES if guest == "blk" else NET_PHASES:
                us = run_floor(paths, guest, phase, args.scale, disk)
                if measured:
                    floors[guest].setdefault(phase[0], []).append(us)
        shift = round_no % len(args.contenders)
        order = args.contenders[shift:] + args.contenders[:shift]
        for guest in guests:
            for contender in (c for c in order if guest in GUESTS_OF[c]):
                argv = command_for(contender, paths, guest, cmdlines[guest], disk)
                figures = run_vm(contender, argv, args.cpu_source, args.timeout)
                if measured:
                    samples[(guest, contender)].append(figures)
                if args.verbose:
                    print(f"round {round_no} {guest} {contender}: " + ", ".join(
                        f"{n} {f['rate']:.0f}/s {f['vmm_us']:.1f} us" for n, f in figures.items()),
                        file=sys.stderr, flush=True)
    report = {g: {"contenders": {}, "floor": {p: statistics.median(v)
                                              for p, v in floors[g].items()}} for g in guests}
    for (guest, contender), runs in samples.items():
        report[guest]["contenders"][contender] = {
            "command": command_for(contender, paths, guest, cmdlines[guest], disk),
            "phases": summarize(runs)}
    return report


# ----------------------------------------------------------------------------- ratios, targets


def evaluate(report):
    """wisp-vmm / QEMU ratios per guest, QEMU contender and phase, and the issue's targets."""
    ratios, targets = {}, []
    for guest, g in report.items():
        wisp, floor = g["contenders"].get("wisp"), g["floor"]
        for other in (c for c in g["contenders"] if c != "wisp" and wisp):
            for phase, w in wisp["phases"].items():
                q = g["contenders"][other]["phases"][phase]
                r = {"rate": w["rate"] / q["rate"], "vmm_us": w["vmm_us"] / q["vmm_us"]}
                if phase in floor and q["vmm_us"] > floor[phase]:
                    r["above_floor"] = (w["vmm_us"] - floor[phase]) / (q["vmm_us"] - floor[phase])
                ratios.setdefault(guest, {}).setdefault(other, {})[phase] = r
                targets.append({"guest": guest, "phase": phase, "reference": other,
                                "what": "vmm_cpu", "value": r["vmm_us"],
                                "met": r["vmm_us"] <= TARGET_CPU_RATIO})
                targets.append({"guest": guest, "phase": phase, "reference": other,
                                "what": "rate", "value": r["rate"],
                                "met": r["rate"] >= TARGET_IOPS_RATIO})
    return ratios, targets


# ----------------------------------------------------------------------------- output


def machine_info():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"kernel": platform.release(), "cpu": model, "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


UNIT = {"blk": "request", "net": "round trip"}
TABLES = {
    "blk": [("rate", "IOPS (requests/s)", "{:.0f}"), ("mb_s", "MB/s", "{:.1f}")],
    "net": [("rate", "frames/s (round trips: guest -> tap -> guest)", "{:.0f}"),
            ("mb_s", "MB/s (frame bytes, one way)", "{:.1f}")],
}
COL = 14


def print_metric(g, ratios, key, title, fmt, out, floor=False):
    """One table: a row per phase, a column per contender (and the floor), then the ratios of
    wisp-vmm to each QEMU contender for rate and CPU."""
    contenders = list(g["contenders"])
    others = [c for c in contenders if c != "wisp"] if "wisp" in contenders else []
    with_ratio = key in ("rate", "vmm_us") and others
    floor = floor and bool(g["floor"])
    print(f"  {title}", file=out)
    print(f"    {'phase':<20}" + "".join(f"{LABELS[c]:>{COL}}" for c in contenders) +
          (f"{'host floor':>{COL}}" if floor else "") +
          ("".join(f"{'wisp/' + LABELS[o]:>{COL + 5}}" for o in others) if with_ratio else ""),
          file=out)
    for phase in g["contenders"][contenders[0]]["phases"]:
        cells = "".join(f"{fmt.format(g['contenders'][c]['phases'][phase][key]):>{COL}}"
                        for c in contenders)
        if floor:
            cells += f"{fmt.format(g['floor'][phase]):>{COL}}"
        if with_ratio:
            cells += "".join(f"{ratios[o][phase][key]:>{COL + 4}.2f}x" for o in others)
        print(f"    {phase:<20}{cells}", file=out)


def print_above_floor(g, ratios, out):
    contenders = list(g["contenders"])
    others = [c for c in contenders if c != "wisp"] if "wisp" in contenders else []
    print("  VMM CPU above the host floor (VMM - floor), us", file=out)
    print(f"    {'phase':<20}" + "".join(f"{LABELS[c]:>{COL}}" for c in contenders) +
          "".join(f"{'wisp/' + LABELS[o]:>{COL + 5}}" for o in others), file=out)
    for phase, floor in g["floor"].items():
        cells = "".join(f"{g['contenders'][c]['phases'][phase]['vmm_us'] - floor:>{COL}.2f}"
                        for c in contenders)
        for o in others:
            r = ratios[o][phase].get("above_floor")
            cells += f"{r:>{COL + 4}.2f}x" if r is not None else f"{'-':>{COL + 5}}"
        print(f"    {phase:<20}{cells}", file=out)


def print_threads(g, out):
    print("  CPU per request by thread name, us (median; every thread with >= 0.01 us)", file=out)
    for contender, entry in g["contenders"].items():
        for phase, s in entry["phases"].items():
            parts = ", ".join(f"{name} {us:.2f}" for name, us in
                              sorted(s["by_thread_us"].items(), key=lambda kv: -kv[1])
                              if us >= 0.005)
            print(f"    {LABELS[contender]:<14}{phase:<20}{parts}", file=out)


def print_notes(g, out):
    for contender, entry in g["contenders"].items():
        for phase, s in entry["phases"].items():
            if s["late_samples"]:
                print(f"  note: {LABELS[contender]} {phase}: in {s['late_samples']} run(s) the"
                      " threads were sampled after the next line had arrived (a loaded machine):"
                      " the CPU figures may include a little work past the phase", file=out)
            if s["host_clock_runs"]:
                print(f"  note: {LABELS[contender]} {phase}: timed by the arrival of its lines in"
                      f" {s['host_clock_runs']} run(s) (no guest TSC rate)", file=out)
            if s["exited_threads"]:
                print(f"  note: {LABELS[contender]} {phase}: thread(s)"
                      f" {', '.join(s['exited_threads'])} exited during the phase; their time in"
                      " it is not counted", file=out)


def print_targets(result, out):
    print(f"Targets (issue 9), wisp-vmm / QEMU: VMM CPU per request <= {TARGET_CPU_RATIO}x,"
          f" requests (frames) per second >= {TARGET_IOPS_RATIO}x", file=out)
    rows = {}
    for t in result["targets"]:
        rows.setdefault((t["guest"], t["phase"]), []).append(t)
    for (guest, phase), ts in rows.items():
        cells = "  ".join(f"{'CPU' if t['what'] == 'vmm_cpu' else 'rate'} vs"
                          f" {LABELS[t['reference']]} {t['value']:.2f}x"
                          f" {'met' if t['met'] else 'MISSED'}" for t in ts)
        print(f"  {phase:<20}{cells}", file=out)
    met = sum(t["met"] for t in result["targets"])
    print(f"Targets: {met} of {len(result['targets'])} met", file=out)


def print_table(result, detail, out=sys.stdout):
    m, cfg = result["machine"], result["config"]
    print(f"wisp virtio benchmark, {m['date']}", file=out)
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']},"
          f" load average {' '.join(f'{x:.2f}' for x in m['loadavg'])}", file=out)
    print(f"{cfg['runs']} run(s) per contender and guest, interleaved, after {cfg['warmup']}"
          f" warm-up round(s); medians; request counts x{cfg['scale']:g}", file=out)
    for c in cfg["contenders"]:
        print(f"  {LABELS[c]:<14}{DESCRIPTIONS[c]}", file=out)
    print(f"blk: a {DISK_MIB} MiB raw file in {cfg['shm_dir']} (cache=writeback on both);"
          f" net: tap {TAP} reflecting every frame (tc mirred), own network namespace", file=out)
    print(f"CPU: per thread from /proc/PID/task/TID/{cfg['cpu_source']} at the begin and end"
          " lines; vCPU = the threads named vcpuN / 'CPU N/KVM';\n     VMM = every other thread"
          " of the VMM process (main loop, I/O threads, workers), user + system;\n     host"
          " floor = the same system calls without a VM (bench/virtio/floor.c)", file=out)
    print("time: the guest's TSC at each phase's start and end, at the rate the lines' arrival"
          " times give over the run", file=out)
    for guest, g in result["report"].items():
        r = result["ratios"].get(guest, {})
        unit = UNIT[guest]
        print(file=out)
        print("virtio-blk (guest/bench_blk.c)" if guest == "blk"
              else "virtio-net (guest/bench_net.c)", file=out)
        for key, title, fmt in TABLES[guest]:
            print_metric(g, r, key, title, fmt, out)
        print_metric(g, r, "vmm_us", f"VMM CPU per {unit}, us (every thread but the vCPU's)",
                     "{:.2f}", out, floor=True)
        if g["floor"] and r:
            print_above_floor(g, r, out)
        print_metric(g, r, "vcpu_us", f"vCPU thread CPU per {unit}, us (the guest, polling)",
                     "{:.2f}", out)
        if detail:
            print_threads(g, out)
        print_notes(g, out)
    print(file=out)
    print_targets(result, out)


# ----------------------------------------------------------------------------- command line


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


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def contender_list(text):
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in chosen if c not in CONTENDERS]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise argparse.ArgumentTypeError(f"expected a subset of {','.join(CONTENDERS)}, got {text}")
    return chosen


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="virtio_bench.py",
        description="virtio-blk and virtio-net benchmark of wisp-vmm beside QEMU microvm, with the"
        " same ring-3 guests. Prints a table (or --json); exit status 0 when the benchmark ran,"
        " whether or not the targets were met; 1 when it could not run; 2 on a usage error.",
        epilog="Example: python3 bench/virtio/virtio_bench.py --build-dir build --runs 5."
        "  See docs/benchmarks.md.")
    parser.add_argument("--runs", metavar="N", type=positive_int, default=5,
                        help="measured VMs per contender and guest (default 5)")
    parser.add_argument("--warmup", metavar="N", type=non_negative_int, default=1,
                        help="unmeasured rounds first (default 1)")
    parser.add_argument("--scale", metavar="F", type=positive_float, default=1.0,
                        help="multiplies every phase's request count (default 1: ~1-3 s each)")
    parser.add_argument("--warmup-requests", metavar="N", type=non_negative_int, default=64,
                        help="requests the guest runs before each phase's begin line (default 64)")
    parser.add_argument("--contenders", metavar="LIST", type=contender_list,
                        default=["wisp", "qemu", "qemu-iothread"],
                        help=f"comma-separated subset of {','.join(CONTENDERS)} (default all)")
    parser.add_argument("--no-blk", action="store_true", help="leave out the virtio-blk guest")
    parser.add_argument("--no-net", action="store_true", help="leave out the virtio-net guest")
    parser.add_argument("--cpu-source", choices=("schedstat", "stat"), default=None,
                        help="per-thread CPU time from schedstat (ns; the default where it exists)"
                        " or stat (utime + stime, clock ticks)")
    parser.add_argument("--shm-dir", metavar="DIR", default="/dev/shm",
                        help="tmpfs directory for the disk image (default /dev/shm)")
    parser.add_argument("--timeout", metavar="S", type=positive_float, default=300.0,
                        help="seconds one VM may take (default 300)")
    parser.add_argument("--build-dir", metavar="DIR", default=None,
                        help="meson build directory (default: build/ beside bench/)")
    parser.add_argument("--vmm", metavar="PATH", help="wisp-vmm (default BUILD/src/vmm/wisp-vmm)")
    parser.add_argument("--qemu", metavar="PATH", default="qemu-system-x86_64",
                        help="QEMU binary (default qemu-system-x86_64 from PATH)")
    parser.add_argument("--floor", metavar="PATH",
                        help="the host floor program (default BUILD/bench/virtio/"
                        "wisp-bench-virtio-floor; 'none' leaves the floor out)")
    parser.add_argument("--blk-guest", metavar="ELF",
                        help="default BUILD/guest/bench_blk.elf")
    parser.add_argument("--net-guest", metavar="ELF",
                        help="default BUILD/guest/bench_net.elf")
    parser.add_argument("--wisp-drive", metavar="KEYS", default="",
                        help="more keys for wisp-vmm's --drive, e.g. aio=threads")
    parser.add_argument("--qemu-drive", metavar="KEYS", default="",
                        help="more keys for QEMU's -drive, e.g. cache=unsafe")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--json-file", metavar="PATH",
                        help="also write the JSON to PATH (with the table on stdout)")
    parser.add_argument("--detail", action="store_true",
                        help="also break the VMM's CPU time down by thread name")
    parser.add_argument("--verbose", action="store_true", help="one line per VM on stderr")
    args = parser.parse_args(argv)
    if args.no_blk and args.no_net:
        parser.error("--no-blk and --no-net leave nothing to run")
    return args


def resolve_paths(args):
    """Absolute paths of the programs and guests, or BenchError naming what is missing."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise BenchError("/dev/kvm is missing or not readable and writable: the benchmark needs KVM")
    build = args.build_dir or os.path.normpath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build"))
    paths = {
        "vmm": args.vmm or os.path.join(build, "src", "vmm", "wisp-vmm"),
        "qemu": shutil.which(args.qemu) or args.qemu,
        "blk_guest": args.blk_guest or os.path.join(build, "guest", "bench_blk.elf"),
        "net_guest": args.net_guest or os.path.join(build, "guest", "bench_net.elf"),
        "floor": args.floor or os.path.join(build, "bench", "virtio", "wisp-bench-virtio-floor"),
        "drive_keys": {"wisp": "," + args.wisp_drive if args.wisp_drive else "",
                       "qemu": "," + args.qemu_drive if args.qemu_drive else ""},
    }
    needed = ["blk_guest"] * (not args.no_blk) + ["net_guest"] * (not args.no_net)
    needed += ["vmm"] * ("wisp" in args.contenders) + ["floor"] * (args.floor != "none")
    needed += ["qemu"] * any(c.startswith("qemu") for c in args.contenders)
    for key in needed:
        path = paths[key]  # a str: drive_keys is never needed
        want = os.X_OK if key in ("vmm", "qemu", "floor") else os.R_OK
        if not os.path.isfile(path) or not os.access(path, want):
            raise BenchError(f"{key.replace('_', ' ')} not found at {path} (build it with ninja -C"
                             f" BUILD, or pass its path; QEMU is Debian's qemu-system-x86)")
        paths[key] = os.path.abspath(path)
    if args.floor == "none":
        paths["floor"] = None
    return paths


def cpu_source(requested):
    if requested:
        return requested
    return "schedstat" if os.path.exists(f"/proc/self/task/{os.getpid()}/schedstat") else "stat"


def main(argv=None):
    args = parse_args(argv)
    args.cpu_source = cpu_source(args.cpu_source)
    disk = None
    try:
        paths = resolve_paths(args)
        guests = ["blk"] * (not args.no_blk) + ["net"] * (not args.no_net)
        if "net" in guests:
            enter_netns()
        if "blk" in guests:
            disk = make_disk(args.shm_dir)
        report = run_rounds(args, paths, disk, guests)
    except BenchError as err:
        print(f"virtio_bench.py: {err}", file=sys.stderr)
        return 1
    finally:
        if disk:
            os.unlink(disk)
    ratios, targets = evaluate(report)
    result = {
        "machine": machine_info(),
        "config": {"runs": args.runs, "warmup": args.warmup, "scale": args.scale,
                   "contenders": args.contenders, "cpu_source": args.cpu_source,
                   "shm_dir": args.shm_dir, "disk_mib": DISK_MIB, "guest_mib": GUEST_MIB,
                   "paths": paths},
        "report": report,
        "ratios": ratios,
        "targets": targets,
    }
    if args.json_file:
        with open(args.json_file, "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result, args.detail)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
