#!/usr/bin/env python3
"""wisp-img beside qemu-img on the same files: alternating runs, medians, ratios.

Cases (bench/img/README.md):
  convert raw->qcow2 and qcow2->raw of a 2 GiB image that is half data, half holes;
  `bench` random 4 KiB writes, then reads of what was written, on a fresh qcow2 (allocating)
  and on a preallocated one (preallocation=metadata), queue depth 1 and 32, for each I/O engine
  (threads, io_uring), cache=none.
  The same on tmpfs (RAM, --tmpfs-dir, cache=writeback as tmpfs has no O_DIRECT; convert of
  --tmpfs-size): there the device is not the limit and the per-request CPU path decides.
Ratio = qemu_time / wisp_time (> 1: wisp is faster). Target >= 1.0, goal 1.2.
Big files go under $WISP_CACHE (default /var/cache/wisp) or --dir, and are removed at the end.
"""
import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GIB = 1 << 30
MIB = 1 << 20


LAST_CPU = [0.0]  # user + system seconds of the last command run()


def run(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        sys.exit(f"img-bench: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def warm_memory(size):
    """Touches `size` bytes of fresh memory, then frees it.

    On a VM (this project's development machines are nested KVM guests), a guest page frame
    that was never touched, or that the host took back, costs a host fault the first time
    the kernel uses it, so the page cache a convert fills can take 3-8x longer when the
    allocator happens to hand out such frames. Touching as much memory as the run needs first
    gives both tools frames the host has backed; without it the same command's wall time
    varied 0.35-3 s here.
    """
    if size:
        b = bytearray(size)
        b[::4096] = b"\x01" * (size // 4096)
        del b


def timed(cmd, warm=0):
    os.sync()
    warm_memory(warm)
    t0 = time.monotonic()
    run(cmd)
    return time.monotonic() - t0


def bench_seconds(out):
    m = re.search(r"Run completed in ([0-9.]+) seconds", out)
    if not m:
        sys.exit(f"img-bench: no 'Run completed' line in:\n{out}")
    return float(m.group(1))


def make_half_sparse(path, size):
    """Alternating 1 MiB of random data and 1 MiB holes."""
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 2 * MIB):
            f.seek(off)
            f.write(block)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, name, qemu, wisp, qcpu, wcpu):
        q, w = statistics.median(qemu), statistics.median(wisp)
        qc, wc = statistics.median(qcpu), statistics.median(wcpu)
        cr = qc / wc if wc else float("inf")
        self.rows.append((name, q, w, q / w if w else float("inf"), cr))
        print(f"  {name:<54} qemu {q:8.3f} s   wisp {w:8.3f} s   ratio {q / w:5.2f}   "
              f"cpu ratio {cr:5.2f}", flush=True)

    def print(self):
        print()
        print(f"{'case':<54} {'qemu-img s':>11} {'wisp-img s':>11} {'ratio':>7} {'cpu ratio':>10}")
        print("-" * 97)
        for name, q, w, r, cr in self.rows:
            print(f"{name:<54} {q:11.3f} {w:11.3f} {r:7.2f} {cr:10.2f}")
        ratios = [r for _, _, _, r, _ in self.rows]
        cpu = [cr for _, _, _, _, cr in self.rows]
        print("-" * 97)
        print(f"geometric mean ratio: {statistics.geometric_mean(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}); ratio = qemu_time / wisp_time")
        print(f"geometric mean cpu ratio: {statistics.geometric_mean(cpu):.2f} "
              f"(min {min(cpu):.2f}, max {max(cpu):.2f}); cpu = user + system seconds of the "
              f"whole command")


def convert_cases(a, d, table, size, suffix=""):
    src = os.path.join(d, "src.raw")
    make_half_sparse(src, size)
    qsrc = os.path.join(d, "src.qcow2")
    run([a.qemu_img, "convert", "-O", "qcow2", src, qsrc])
    gib = size / GIB
    for name, inp, fmt in ((f"convert raw->qcow2 ({gib:g} GiB, half holes){suffix}", src, "qcow2"),
                           (f"convert qcow2->raw ({gib:g} GiB, half holes){suffix}", qsrc, "raw")):
        if not re.search(a.case, name):
            continue
        times = {"qemu": [], "wisp": []}
        cpu = {"qemu": [], "wisp": []}
        for i in range(a.runs):
            order = ("qemu", "wisp") if i % 2 == 0 else ("wisp", "qemu")
            for tool in order:
                out = os.path.join(d, f"out.{fmt}")
                exe = a.qemu_img if tool == "qemu" else a.wisp_img
                times[tool].append(timed([exe, "convert", "-O", fmt, inp, out], int(a.warm * size)))
                cpu[tool].append(LAST_CPU[0])
                os.unlink(out)
        table.add(name, times["qemu"], times["wisp"], cpu["qemu"], cpu["wisp"])
    os.unlink(src)
    os.unlink(qsrc)


def bench_cases(a, d, table, cache="none", suffix="", warm=False, full="metadata"):
    """`full`: the preallocation of the "preallocated" cases (metadata on disk; full on tmpfs,
    where metadata preallocation leaves holes that the first write must fill with fresh pages,
    so that the preallocated cases measure overwrites of existing data)."""
    img_size = "1G"
    step = str(4096 * 1021)  # a prime number of 4 KiB blocks: offsets scatter over the disk
    for prealloc in ("off", full):
        label = "fresh qcow2" if prealloc == "off" else "preallocated qcow2"
        for engine in ("threads", "io_uring"):
            for depth in (1, 32):
                count = str(a.count_qd1 if depth == 1 else a.count_qd32)
                names = [f"bench rand 4k {op} {label} {engine} qd{depth}{suffix}"
                         for op in ("write", "read")]
                if not any(re.search(a.case, n) for n in names):
                    continue
                res = {("qemu", "w"): [], ("wisp", "w"): [], ("qemu", "r"): [], ("wisp", "r"): []}
                cpu = {k: [] for k in res}
                for i in range(a.runs):
                    order = ("qemu", "wisp") if i % 2 == 0 else ("wisp", "qemu")
                    for tool in order:
                        img = os.path.join(d, f"b-{tool}.qcow2")
                        run([a.qemu_img, "create", "-q", "-f", "qcow2", "-o",
                             f"preallocation={prealloc}", img, img_size])
                        exe = a.qemu_img if tool == "qemu" else a.wisp_img
                        common = ["-c", count, "-d", str(depth), "-s", "4096", "-S", step,
                                  "-t", cache, "-i", engine, "-f", "qcow2"]
                        os.sync()
                        if warm:  # tmpfs: the pages the writes fill come from fresh memory
                            warm_memory(int(count) * 4096 * 2)
                        res[(tool, "w")].append(bench_seconds(run([exe, "bench", "-w"] + common + [img])))
                        cpu[(tool, "w")].append(LAST_CPU[0])
                        res[(tool, "r")].append(bench_seconds(run([exe, "bench"] + common + [img])))
                        cpu[(tool, "r")].append(LAST_CPU[0])
                        os.unlink(img)
                for op, opname in (("w", "write"), ("r", "read")):
                    table.add(f"bench rand 4k {opname} {label} {engine} qd{depth}{suffix}",
                              res[("qemu", op)], res[("wisp", op)],
                              cpu[("qemu", op)], cpu[("wisp", op)])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wisp-img", required=True)
    p.add_argument("--qemu-img", default="qemu-img")
    p.add_argument("--runs", type=int, default=3, help="runs per tool and case (median)")
    p.add_argument("--size", type=int, default=2 * GIB, help="convert image size in bytes")
    p.add_argument("--count-qd1", type=int, default=4000)
    p.add_argument("--count-qd32", type=int, default=20000)
    p.add_argument("--quick", action="store_true", help="small sizes, 1 run (smoke test)")
    p.add_argument("--only", choices=("convert", "bench", "tmpfs"),
                   help="only the convert or bench cases on disk, or only the tmpfs cases")
    p.add_argument("--tmpfs-dir", default="/dev/shm", help="a tmpfs for the tmpfs cases")
    p.add_argument("--tmpfs-size", type=int, default=GIB, help="convert image size on tmpfs")
    p.add_argument("--tmpfs-count-qd1", type=int, default=50000,
                   help="requests of the depth-1 bench cases on tmpfs")
    p.add_argument("--tmpfs-count-qd32", type=int, default=200000,
                   help="requests of the depth-32 bench cases on tmpfs")
    p.add_argument("--warm", type=float, default=1.0,
                   help="touch this many times the convert size of memory before each convert run "
                        "(0 = off; see warm_memory)")
    p.add_argument("--case", default="", help="only cases whose name matches this regular expression")
    p.add_argument("--dir", default=os.environ.get("WISP_CACHE", "/var/cache/wisp"))
    a = p.parse_args()
    if a.quick:
        a.runs, a.size, a.count_qd1, a.count_qd32 = 1, 128 * MIB, 300, 2000
        a.tmpfs_size, a.tmpfs_count_qd1, a.tmpfs_count_qd32 = 128 * MIB, 2000, 5000
    if not shutil.which(a.qemu_img):
        sys.exit("img-bench: qemu-img not found")
    os.makedirs(a.dir, exist_ok=True)
    d = tempfile.mkdtemp(prefix="img-bench.", dir=a.dir)
    print(f"img-bench: {a.runs} run(s) per case, alternating qemu-img / wisp-img, files in {d}")
    table = Table()
    try:
        if a.only in (None, "convert"):
            convert_cases(a, d, table, a.size)
        if a.only in (None, "bench"):
            bench_cases(a, d, table)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if a.only in (None, "tmpfs"):
        tmpfs_cases(a, table)
    table.print()


def tmpfs_cases(a, table):
    """The same cases with every file in RAM: cache=writeback (no O_DIRECT on tmpfs), so the
    per-request CPU path, not the device, decides; depth-32 runs are longer to get above the
    timer noise."""
    if not os.path.isdir(a.tmpfs_dir):
        print(f"img-bench: {a.tmpfs_dir} missing: tmpfs cases skipped")
        return
    d = tempfile.mkdtemp(prefix="img-bench.", dir=a.tmpfs_dir)
    counts = (a.count_qd1, a.count_qd32)
    a.count_qd1, a.count_qd32 = a.tmpfs_count_qd1, a.tmpfs_count_qd32
    try:
        convert_cases(a, d, table, a.tmpfs_size, " tmpfs")
        bench_cases(a, d, table, "writeback", " tmpfs", warm=a.warm > 0, full="full")
    finally:
        a.count_qd1, a.count_qd32 = counts
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
