#!/usr/bin/env python3
"""bench/scale: the seed 003 experiment through wispd (docs/benchmarks.md, "Scale").

  scale.py --wispd W --vmm V --guest G --tiny T --floor F [--n 1000] [--mem 16] [--out DIR]

1. Sequential: N idle VMs of MEM MiB (guest G, a ring-3 kit guest that prints on COM1 and
   sleeps in hlt) created one after another through wispd's API, jailed and in their cgroups
   (wispd's defaults). For each: the time of define + start (the API calls), the time from the
   define to the guest's first serial byte (its console log grows), the CPU it cost (its
   cgroup's cpuacct.usage at the first byte, and wispd's own CPU during its creation), and the
   host's MemAvailable after it. A PNG (gnuplot) of creation time and memory against N.
2. Concurrent: N more VMs created by 16 clients at once: VMs per second, per core.
3. Clones: 100 clones of one running VM through POST /v1/vms/{name}/clone.
4. Memory floor: M VMs of the tiny guest T (prints "!", then cli; hlt) through wispd, beside M
   processes of the raw KVM floor F --irqchip (one VM with wisp-vmm's in-kernel irqchip and PIT,
   one vCPU, the same RAM, the same guest): host memory per VM, each side's MemAvailable drop.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "wispd"))
import wispd_api  # noqa: E402
from wispd_api import mem_available_kib  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def call(sock, method, path, body=None, raw=False):
    return wispd_api.call(sock, method, path, body, raw, timeout=120)


def cpu_s(pid):
    s = open(f"/proc/{pid}/stat").read()
    f = s[s.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / TICK


def host_busy_s():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(f) - f[3] - f[4]) / TICK  # all but idle and iowait


def wait_file(path, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if os.stat(path).st_size > 0:
                return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.0002)
    raise RuntimeError(f"{path}: no serial byte within {timeout} s")


def cgroup_usage_ns(vm):
    for c in vm.get("placement", {}).get("cgroups", []):
        if "/cpuacct/" in c:
            try:
                return int(open(c + "/cpuacct.usage").read())
            except OSError:
                return 0
    return 0


class Wispd:
    def __init__(self, a, tmp, name):
        self.dir = os.path.join(tmp, name)
        self.sock = os.path.join(self.dir, "wispd.sock")
        self.state = os.path.join(self.dir, "state")
        os.makedirs(self.dir)
        self.log = open(os.path.join(self.dir, "wispd.log"), "w")
        self.proc = subprocess.Popen([a.wispd, "--socket", self.sock, "--state-dir", self.state,
                                      "--vmm", a.vmm] + a.wispd_args.split(), stdout=self.log,
                                     stderr=self.log)
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                raise RuntimeError(open(self.log.name).read())
            time.sleep(0.01)
        self.ids = {}

    def create(self, name, kernel, mem):
        call(self.sock, "POST", "/v1/vms", {"name": name, "memory_mib": mem, "kernel": kernel,
                                            "stop_timeout_s": 0})
        vm = call(self.sock, "POST", f"/v1/vms/{name}/start")
        return vm

    def console_log(self, vm):
        sock = vm["api_sock"]  # run/ID.sock, or jail/wisp-vmm/vm-ID/root/api.sock
        vid = sock.split("/")[-3][3:] if "/jail/" in sock else os.path.basename(sock)[:-5]
        return os.path.join(self.state, "logs", vid + ".log")

    def end(self):
        """Every VM killed and removed (DELETE /force answers once each is gone), then wispd."""
        for vm in call(self.sock, "GET", "/v1/vms"):
            try:
                call(self.sock, "DELETE", f"/v1/vms/{vm['name']}/force")
            except RuntimeError as e:
                print("  rm:", e)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def cgroup_cycle_us(dirs, rounds=50):
    """What a VM's start and end do to its cgroups (cgroup.c), timed: a vm-bench directory in
    each parent, a limit written where there is one, the pid written (this process, moved back
    at once), rmdir. Median microseconds of `rounds` cycles."""
    times = []
    me = str(os.getpid())
    for _ in range(rounds):
        t0 = time.perf_counter()
        made = []
        for p in dirs:
            d = os.path.join(p, "vm-bench")
            os.mkdir(d)
            made.append((p, d))
            if os.path.exists(d + "/pids.max"):
                open(d + "/pids.max", "w").write("64")
            open(d + "/cgroup.procs", "w").write(me)
        for p, d in made:
            open(p + "/cgroup.procs", "w").write(me)
            os.rmdir(d)
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def sequential(a, tmp):
    w = Wispd(a, tmp, "seq")
    rows = []
    try:
        dirs = call(w.sock, "GET", "/v1/limits").get("placement", {}).get("cgroup_dirs", [])
        cg0 = cgroup_cycle_us(dirs) if dirs else 0
        avail0, busy0 = mem_available_kib(), host_busy_s()
        for i in range(a.n):
            c0 = cpu_s(w.proc.pid)
            t0 = time.perf_counter()
            vm = w.create(f"s{i}", a.guest, a.mem)
            t1 = time.perf_counter()
            tb = wait_file(w.console_log(vm))
            c1 = cpu_s(w.proc.pid)
            rows.append({"n": i + 1, "create_ms": (t1 - t0) * 1e3, "byte_ms": (tb - t0) * 1e3,
                         "vm_cpu_ms": cgroup_usage_ns(vm) / 1e6, "wispd_cpu_ms": (c1 - c0) * 1e3,
                         "mem_used_mib": (avail0 - mem_available_kib()) / 1024,
                         "host_busy_s": host_busy_s() - busy0})
            if (i + 1) % 100 == 0:
                print(f"  {i + 1} VMs: {rows[-1]['create_ms']:.1f} ms, first byte "
                      f"{rows[-1]['byte_ms']:.1f} ms, {rows[-1]['mem_used_mib']:.0f} MiB used",
                      flush=True)
        time.sleep(2)
        idle0 = host_busy_s()
        time.sleep(5)
        idle_pct = (host_busy_s() - idle0) / 5 / os.cpu_count() * 100
        avail1 = mem_available_kib()
        limits = call(w.sock, "GET", "/v1/limits")
        cg1 = cgroup_cycle_us(dirs) if dirs else 0
        wispd_rss = int([l for l in open(f"/proc/{w.proc.pid}/status")
                         if l.startswith("VmRSS")][0].split()[1])
    finally:
        w.end()
    return rows, {"idle_busy_pct": idle_pct, "mem_per_vm_kib": (avail0 - avail1) / a.n,
                  "wispd_rss_kib": wispd_rss, "placement": limits.get("placement", {}),
                  "cgroup_us": (cg0, cg1)}


def concurrent(a, tmp, clients=16):
    w = Wispd(a, tmp, "conc")
    names = [f"c{i}" for i in range(a.n)]
    done, errors = [], []
    lock = threading.Lock()

    def worker(k):
        for name in names[k::clients]:
            try:
                vm = w.create(name, a.guest, a.mem)
                with lock:
                    done.append(vm)
            except Exception as e:  # noqa: BLE001 (counted and printed)
                with lock:
                    errors.append(str(e))

    try:
        busy0, c0 = host_busy_s(), cpu_s(w.proc.pid)
        t0 = time.perf_counter()
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        t1 = time.perf_counter()
        for vm in done:
            wait_file(w.console_log(vm), 30)
        t2 = time.perf_counter()
        busy = host_busy_s() - busy0
        wcpu = cpu_s(w.proc.pid) - c0
    finally:
        w.end()
    return {"n": len(done), "errors": errors[:3], "nr_errors": len(errors), "clients": clients,
            "api_s": t1 - t0, "bytes_s": t2 - t0, "host_busy_s": busy, "wispd_cpu_s": wcpu}


def clones(a, tmp, count=100):
    w = Wispd(a, tmp, "clone")
    try:
        w.create("src", a.guest, a.mem)
        wait_file(w.console_log(call(w.sock, "GET", "/v1/vms/src")))
        t0 = time.perf_counter()
        data = call(w.sock, "POST", "/v1/vms/src/clone", {"count": count, "prefix": "k"},
                    raw=True)
        t1 = time.perf_counter()
        lines = [json.loads(l) for l in data.decode().splitlines() if l.strip()]
        summary = [l for l in lines if "finished" in l or "clones_per_s" in l]
        summary = summary[-1] if summary else lines[-1]
    finally:
        w.end()
    return {"count": count, "wall_s": t1 - t0, "summary": summary}


def memcg_usage(path):
    return int(open(path + "/memory.usage_in_bytes").read())


def own_memcg():
    for line in open("/proc/self/cgroup"):
        _, ctl, path = line.rstrip("\n").split(":", 2)
        if "memory" in ctl.split(","):
            return "/sys/fs/cgroup/memory" + path.rstrip("/")
    return None


def floor_memory(a, tmp, m):
    """m tiny VMs through wispd beside m raw KVM floor processes. Host memory per VM: what its
    memory cgroup is charged (its processes' pages and the kernel's objects made for them: KVM's
    VM, vCPU and irqchip structures, page tables), and MemAvailable's drop (noisy on a shared
    host)."""
    out = {}
    for variant in ("", "--no-jail"):
        wisp_memory(a, tmp, m, variant, out)
    time.sleep(2)
    return floor_side(a, tmp, m, out)


def wisp_memory(a, tmp, m, variant, out):
    saved, a.wispd_args = a.wispd_args, (a.wispd_args + " " + variant).strip()
    w = Wispd(a, tmp, "mem" + variant.replace("-", "_"))
    a.wispd_args = saved
    sfx = "_nojail" if variant else ""
    try:
        r0, base = cpu_s(w.proc.pid), mem_available_kib()
        rss0 = int([l for l in open(f"/proc/{w.proc.pid}/status")
                    if l.startswith("VmRSS")][0].split()[1])
        vms = []
        for i in range(m):
            vm = w.create(f"t{i}", a.tiny, a.mem)
            wait_file(w.console_log(vm))
            vms.append(vm)
        time.sleep(2)
        out["wisp_avail_kib" + sfx] = (base - mem_available_kib()) / m
        cg = [c for vm in vms for c in vm["placement"]["cgroups"] if "/memory/" in c]
        out["wisp_cg_kib" + sfx] = sum(memcg_usage(c) for c in cg) / 1024 / m if cg else 0
        rss1 = int([l for l in open(f"/proc/{w.proc.pid}/status")
                    if l.startswith("VmRSS")][0].split()[1])
        out["wispd_kib" + sfx] = (rss1 - rss0) / m
        del r0
    finally:
        w.end()


def floor_side(a, tmp, m, out):
    procs = []
    own = own_memcg()
    cg = os.path.join(own, f"wisp-scale-floor-{os.getpid()}") if own else None
    if cg:
        os.mkdir(cg)
    base = mem_available_kib()
    try:
        for i in range(m):
            f = open(os.path.join(tmp, f"floor{i}.out"), "wb")
            pre = (lambda: open(cg + "/cgroup.procs", "w").write("0")) if cg else None
            procs.append(subprocess.Popen([a.floor, "--irqchip", "--mem", str(a.mem), a.tiny],
                                          stdout=f, preexec_fn=pre))
            f.close()
        for i in range(m):
            wait_file(os.path.join(tmp, f"floor{i}.out"))
        time.sleep(2)
        out["floor_avail_kib"] = (base - mem_available_kib()) / m
        out["floor_cg_kib"] = memcg_usage(cg) / 1024 / m if cg else float("nan")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if cg:
            for _ in range(100):
                try:
                    os.rmdir(cg)
                    break
                except OSError:
                    time.sleep(0.05)
    return out


def plot(rows, out_dir):
    data = os.path.join(out_dir, "scale.dat")
    with open(data, "w") as f:
        f.write("# n create_ms byte_ms mem_used_mib\n")
        for r in rows:
            f.write(f"{r['n']} {r['create_ms']:.3f} {r['byte_ms']:.3f} {r['mem_used_mib']:.1f}\n")
    png = os.path.join(out_dir, "scale.png")
    script = f"""set terminal pngcairo size 900,540 noenhanced
set output '{png}'
set title 'wispd: {len(rows)} idle 16 MiB VMs created one after another (jailed, a cgroup each)'
set xlabel 'VM number N'
set ylabel 'ms'
set y2label 'host memory used (MiB)'
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key top left
set grid
plot '{data}' using 1:2 with points pt 7 ps 0.3 lc rgb '#1f77b4' title 'define + start (API)', \\
     '{data}' using 1:3 with points pt 7 ps 0.3 lc rgb '#2ca02c' title 'to the first serial byte', \\
     '{data}' using 1:4 axes x1y2 with lines lw 2 lc rgb '#d62728' title 'host memory used'
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        script = script.replace("pngcairo", "png")
        r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    return png if r.returncode == 0 else f"(gnuplot failed: {r.stderr.strip()})"


def med(rows, key, lo, hi):
    return statistics.median(r[key] for r in rows[lo:hi])


def main():
    ap = argparse.ArgumentParser()
    for o in ("--wispd", "--vmm", "--guest", "--tiny", "--floor"):
        ap.add_argument(o, required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--mem", type=int, default=16)
    ap.add_argument("--floor-n", type=int, default=200)
    ap.add_argument("--out", default=os.getcwd())
    ap.add_argument("--wispd-args", default="", help="more wispd options (--no-jail)")
    ap.add_argument("--skip", default="", help="comma-separated: concurrent,clones,floor")
    a = ap.parse_args()
    for k in ("wispd", "vmm", "guest", "tiny", "floor"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    os.makedirs(a.out, exist_ok=True)
    skip = set(a.skip.split(","))
    tmp = tempfile.mkdtemp(prefix="wisp-scale-")
    try:
        print(f"bench/scale: {a.n} VMs of {a.mem} MiB, guest {os.path.basename(a.guest)}, "
              f"{os.cpu_count()} CPUs", flush=True)
        rows, seq = sequential(a, tmp)
        n = len(rows)
        print(f"\nsequential ({seq['placement'].get('cgroups')} cgroups, jail "
              f"{seq['placement'].get('jail')}):")
        print(f"{'VM #':>6} {'create ms':>10} {'1st byte ms':>12} {'VM CPU ms':>10} "
              f"{'wispd CPU ms':>13} {'mem used MiB':>13}")
        for k in sorted({1, 10, 100, 500, 1000, n}):
            if k <= n:
                r = rows[k - 1]
                print(f"{k:6d} {r['create_ms']:10.2f} {r['byte_ms']:12.2f} {r['vm_cpu_ms']:10.2f} "
                      f"{r['wispd_cpu_ms']:13.1f} {r['mem_used_mib']:13.1f}")
        for lo, hi in ((0, 10), (10, 100), (100, 1000), (1000, n)):
            hi = min(hi, n)
            if hi > lo:
                print(f"  VMs {lo + 1:4d}-{hi:4d}: median create {med(rows, 'create_ms', lo, hi):.2f}"
                      f" ms, first byte {med(rows, 'byte_ms', lo, hi):.2f} ms, VM CPU "
                      f"{med(rows, 'vm_cpu_ms', lo, hi):.2f} ms")
        if n >= 20:
            r1 = rows[n - 1]["byte_ms"] / rows[9]["byte_ms"]
            rm = med(rows, "byte_ms", n - 10, n) / med(rows, "byte_ms", 9, 19)
            rc = med(rows, "create_ms", n - 10, n) / med(rows, "create_ms", 9, 19)
            print(f"  first byte: VM #{n} / VM #10 = {r1:.2f}; median of the last 10 / median of "
                  f"#10-#19 = {rm:.2f} (target <= 1.2); create: {rc:.2f}")
        print(f"  per VM: {seq['mem_per_vm_kib']:.0f} KiB of host memory (MemAvailable), wispd "
              f"RSS {seq['wispd_rss_kib']} KiB with {n} VMs; host busy with {n} idle VMs: "
              f"{seq['idle_busy_pct']:.1f} % of the CPUs")
        print(f"  a VM's cgroups made, joined and removed ({len(seq['placement'].get('cgroup_dirs', []))}"
              f" hierarchies), median of 50: {seq['cgroup_us'][0]:.0f} us with no VM, "
              f"{seq['cgroup_us'][1]:.0f} us beside {n} VMs' cgroups")
        busy = rows[-1]["host_busy_s"]
        print(f"  host CPU busy over the run: {busy:.1f} s for {n} VMs ({busy / n * 1e3:.1f} ms a "
              f"VM, every process on the host)")
        print("  plot:", plot(rows, a.out))
        if "concurrent" not in skip:
            c = concurrent(a, tmp)
            rate = c["n"] / c["api_s"]
            print(f"\nconcurrent: {c['n']} VMs by {c['clients']} clients in {c['api_s']:.2f} s "
                  f"(all first bytes at {c['bytes_s']:.2f} s): {rate:.1f} VMs/s, "
                  f"{rate / os.cpu_count():.1f} VMs/s per core (Firecracker: 5 per core per s), "
                  f"{c['api_s'] / c['n'] * 1e3:.2f} ms a VM; host busy {c['host_busy_s']:.1f} s, "
                  f"wispd {c['wispd_cpu_s']:.1f} s; errors {c['nr_errors']} {c['errors']}")
        if "clones" not in skip:
            k = clones(a, tmp)
            s = k["summary"]
            errs = sorted({c.get("error", "")[:160] for c in s.get("clones", []) if c.get("error")})
            print(f"\nclones: {k['count']} from one snapshot in {k['wall_s']:.2f} s: "
                  f"{s.get('running')} running, {s.get('failed')} failed, snapshot "
                  f"{s.get('snapshot_ms')} ms, {s.get('clones_per_s', 0):.1f} clones/s"
                  + (f"; errors: {errs[:3]}" if errs else ""))
        if "floor" not in skip:
            f = floor_memory(a, tmp, a.floor_n)
            print(f"\nmemory floor ({a.floor_n} VMs of the tiny guest, {a.mem} MiB), charged to "
                  f"each side's memory cgroups: wisp {f['wisp_cg_kib']:.0f} KiB a VM (its jailed "
                  f"wisp-vmm; with --jailer its jailer too) + wispd {f['wispd_kib']:.0f} KiB; raw KVM with the same irqchip "
                  f"{f['floor_cg_kib']:.0f} KiB: "
                  f"{f['wisp_cg_kib'] + f['wispd_kib'] - f['floor_cg_kib']:+.0f} KiB (target <= "
                  f"+64). MemAvailable drops: wisp {f['wisp_avail_kib']:.0f}, floor "
                  f"{f['floor_avail_kib']:.0f} KiB a VM; without the jail (wispd --no-jail): "
                  f"{f['wisp_cg_kib_nojail']:.0f} + {f['wispd_kib_nojail']:.0f} KiB, "
                  f"{f['wisp_cg_kib_nojail'] + f['wispd_kib_nojail'] - f['floor_cg_kib']:+.0f} KiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
