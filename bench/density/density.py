#!/usr/bin/env python3
"""Density, the seed-000 experiment reproduced (docs/benchmarks.md, "Density"): N VMs each
serving a small site with busybox httpd, their addresses by DHCP from wispd's bridge (`wisp net
create`), made by restoring one snapshot of one booted template (the slow Linux boot of this
machine is paid once); the host memory they use (as `free` reports it: MemTotal - MemAvailable,
and the sum of their processes' Pss) against N, with KSM off and on, with the rootfs in the
initramfs or shared read-only through virtio-pmem with DAX; beside QEMU microvm running the same
kernel and initramfs (one boot, migrated to a file, then N `-incoming` loads of it: QEMU's
clone), and beside plain busybox httpd processes (the container-like floor). Every VM and
process is checked to serve its page (an HTTP GET from the host over the bridge, the page and
the instance's own name). Figures only: nothing here asserts a size.

  density.py --wispd W --wisp C --vmm V --init WISP_INIT [--kernel VMLINUX]
             [--steps 1,10,25,50,100] [--passes floor,wisp,wisp-dax,qemu] [--ksm off,on]
             [--out DIR] [--json] [--plot PNG]

Runs as root (a network namespace, a bridge, taps). KSM's settings (/sys/kernel/mm/ksm) are
restored at the end. A clone gets its own MAC and address: wispd's restores keep the template's
MAC (docs/snapshot.md, "Staying unique after cloning"), so the benchmark types one short command
on each clone's console (`c MAC NAME`, a function of its /srv.sh), which sets the new MAC, writes the name the site serves
and asks dnsmasq for a lease.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "wispd"))
import wispd_api  # noqa: E402

SUBNET, GATEWAY = "198.51.100.0/24", "198.51.100.1"
NET = "dens"
GUEST_MIB = 128
KSM = "/sys/kernel/mm/ksm"
KSM_KEYS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes")

SRV_SH = r"""
mount -t tmpfs -o size=1m tmpfs /run
[ -e /sys/class/net/eth0 ] || echo "density: no eth0"
ip link set lo up
ip link set eth0 up
echo template > /run/name.txt
[ -L /www/name.txt ] || ln -s /run/name.txt /www/name.txt
httpd -p 80 -h /www
udhcpc -i eth0 -n -q -f -t 30 -T 3 -s /udhcpc.sh -x hostname:template >/dev/null 2>&1 \
  || echo "density: no lease"
# a clone's new identity, typed on its console as `c MAC NAME`: a shell function and
# ifconfig, so few programs are started (each exec is slow under this machine's emulated ring 0)
c() {
    ifconfig eth0 0.0.0.0 hw ether $1
    echo $2 > /run/name.txt
    udhcpc -i eth0 -n -q -f -t 100 -T 3 -s /udhcpc.sh -x hostname:$2 >/dev/null 2>&1 \
      || echo "density: no lease $2"
}
echo "density: ready"
while read -r cmd; do eval "$cmd"; done
"""

UDHCPC_SH = """#!/bin/sh
[ "$1" = bound ] || exit 0
ifconfig $interface $ip netmask $subnet
echo "density: lease $ip" > /dev/console
"""

INDEX = """<!doctype html><html><head><title>wisp density</title></head><body>
<h1>A small site</h1><p>Served by busybox httpd in one of N instances (bench/density).</p>
""" + "".join(f"<p>Paragraph {i}: the quick brown fox jumps over the lazy dog.</p>\n"
              for i in range(40)) + "</body></html>\n"

A = None


def sh(*cmd, check=True, timeout=120, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return p


def save(results):
    """density.json in --out after every measurement, so an interrupted run keeps its rows."""
    if A.out:
        os.makedirs(A.out, exist_ok=True)
        with open(os.path.join(A.out, "density.json"), "w") as f:
            json.dump(results, f, indent=1)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def meminfo():
    out = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        out[k] = int(v.split()[0])
    return out


class Memcg:
    """A v1 memory cgroup below the benchmark's own, holding the benchmark and so every process
    it starts (wispd and its VMs, QEMU, httpd): its usage counts their pages, the page cache
    they brought in first and the kernel memory made for them (page tables, KVM's structures,
    stacks), and nothing of the other sessions on the machine, unlike `free`."""

    def __init__(self):
        self.path = None
        rel = next((l.split(":", 2)[2].strip() for l in open("/proc/self/cgroup")
                    if l.split(":")[1] == "memory"), None)
        root = "/sys/fs/cgroup/memory"
        if rel is None or not os.path.isdir(root):
            log("no v1 memory cgroup here: the cgroup column stays empty")
            return
        self.parent = os.path.join(root + rel.rstrip("/"))
        self.path = os.path.join(self.parent, f"wisp-density-{os.getpid()}")
        os.mkdir(self.path)
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def kib(self):
        if not self.path:
            return 0
        return int(open(os.path.join(self.path, "memory.usage_in_bytes")).read()) // 1024

    def close(self):
        if not self.path:
            return
        with open(os.path.join(self.parent, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.2)
        log(f"could not remove {self.path}")


MEMCG = None


def used_kib():
    """`free`'s "used" (procps-ng 4: total - available), KiB."""
    m = meminfo()
    return m["MemTotal"] - m["MemAvailable"]


def pss_kib(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    """pid and all its descendants."""
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def ksm_read():
    return {k: open(f"{KSM}/{k}").read().strip() for k in KSM_KEYS + ("pages_sharing",
                                                                      "pages_shared")
            if os.path.exists(f"{KSM}/{k}")}


def ksm_set(run, **kv):
    for k, v in kv.items():
        with open(f"{KSM}/{k}", "w") as f:
            f.write(str(v))
    with open(f"{KSM}/run", "w") as f:
        f.write(str(run))


def freed(results, key, before, n):
    """What `used` fell by when the series' N instances were removed (seconds apart, so less
    of the other sessions' noise than the deltas from the series' start; the seed's "delta
    observed on the host when stopping")."""
    time.sleep(3)
    after = settle(False)
    f = results.setdefault("freed", {})[key] = {"n": n, "freed_kib": before - after,
                                                 "per_instance_kib": (before - after) / max(n, 1)}
    log(f"{key}: removing the {n} freed {f['freed_kib'] / 1024:.1f} MiB "
        f"({f['per_instance_kib'] / 1024:.2f} MiB each)")
    save(results)


def ksm_mode(ksm):
    """off: what was merged unmerged (run 2), then ksmd stopped; on: ksmd scanning fast."""
    if ksm == "off":
        ksm_set(2)
        time.sleep(2)
        ksm_set(0)
    else:
        ksm_set(1, pages_to_scan=A.ksm_pages, sleep_millisecs=20)
    time.sleep(2)


def settle(ksm_on, quiet_s=10, limit_s=180):
    """free's "used", KiB, as the seed read it once it had settled: with KSM on, first until
    pages_sharing has moved by under 1% for quiet_s (or limit_s passed); then the median of
    readings every 0.5 s over quiet_s (other sessions on this machine move `used` by tens of
    MiB within seconds; the Pss sums are the steadier figure)."""
    t0 = time.monotonic()
    hist = []
    while ksm_on:
        ps = int(open(f"{KSM}/pages_sharing").read())
        hist.append((time.monotonic(), ps))
        window = [h[1] for h in hist if h[0] >= hist[-1][0] - quiet_s]
        if hist[-1][0] - hist[0][0] >= quiet_s and max(window) - min(window) <= \
                0.01 * max(window) + 64:
            break
        if time.monotonic() - t0 > limit_s:
            log(f"  KSM not settled after {limit_s} s (pages_sharing {ps}); measuring anyway")
            break
        time.sleep(1)
    us = []
    t1 = time.monotonic()
    while time.monotonic() - t1 < quiet_s:
        us.append(used_kib())
        time.sleep(0.5)
    return statistics.median(us)


class Netns:
    def __init__(self):
        self.name = f"wdens{os.getpid()}"
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        for conf in ("all", "default"):
            self.run("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")

    def run(self, *cmd, **kw):
        return sh("ip", "netns", "exec", self.name, *cmd, **kw)

    def get(self, ip, path, port=80):
        r = self.run("curl", "-s", "-m", "20", f"http://{ip}:{port}{path}", check=False,
                     timeout=60)
        return r.stdout if r.returncode == 0 else None

    def close(self):
        sh("ip", "netns", "del", self.name, check=False)


def check_serves(ns, ip, name, port=80):
    page = ns.get(ip, "/index.html", port)
    own = ns.get(ip, "/name.txt", port)
    return page == INDEX and own is not None and own.strip() == name


def build_guest(tmp):
    files = {"srv.sh": SRV_SH, "udhcpc.sh": UDHCPC_SH}
    root = os.path.join(tmp, "root")
    os.makedirs(os.path.join(root, "www"))
    with open(os.path.join(root, "www", "index.html"), "w") as f:
        f.write(INDEX)
    os.symlink("/run/name.txt", os.path.join(root, "www", "name.txt"))
    for name, text in files.items():
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(root, name), 0o755)
    applets = "sh,ip,ifconfig,udhcpc,httpd,cat,echo,mount,ln"
    initrd = os.path.join(tmp, "initramfs.cpio")
    adds = []
    for name in list(files) + ["www/index.html"]:
        adds += ["--add", f"{os.path.join(root, name)}:/{name}"]
    sh(os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", initrd, "--init", A.init,
       "--applets", applets, *adds)
    dax = os.path.join(tmp, "rootfs.pmem")
    sh(os.path.join(REPO, "scripts/wisp-mkrootfs"), "-o", dax, "--dax", "--busybox",
       "--init", A.init, root)
    return initrd, dax


# QEMU microvm's one virtio-mmio transport in use with one -device (QEMU 7.2): its own
# auto-kernel-cmdline would append this after the "--" that ends the kernel's words (to init)
QEMU_MMIO = "virtio_mmio.device=512@0xfeb00e00:12"


def kernel_cmdline(dax, devices=""):
    """The kit's command line, the same for both VMMs; wisp-init runs /srv.sh (after "--")."""
    extra = sh(os.path.join(REPO, "guest/kernel/cmdline-extra")).stdout.strip()
    root = "root=/dev/pmem0 ro rootflags=dax rootfstype=ext4 " if dax else ""
    return (f"console=ttyS0 quiet reboot=k panic=-1 acpi=off {root}{extra} {devices}"
            f" -- /bin/sh /srv.sh")


def wait_line(path, pattern, timeout, what, skip=None):
    """The first match of pattern in the file (after the first match of skip, when given)."""
    t0 = time.monotonic()
    rx = re.compile(pattern, re.M)
    while time.monotonic() - t0 < timeout:
        try:
            text = open(path, errors="replace").read().replace("\r\n", "\n")
        except OSError:
            text = ""
        if skip:
            k = re.search(skip, text, re.M)
            text = text[k.end():] if k else ""
        m = rx.search(text)
        if m:
            return m
        time.sleep(0.5)
    raise RuntimeError(f"{what}: no /{pattern}/ in {path} after {timeout} s:\n{text[-2000:]}")


def mac_of(i, kind):
    return "0a:77:6a:%02x:%02x:%02x" % (kind, i >> 8, i & 0xff)


# ---- wisp ----------------------------------------------------------------------------------

class Wispd:
    def __init__(self, tmp, ns):
        self.tmp, self.ns = tmp, ns
        self.sock = os.path.join(tmp, "wispd.sock")
        self.state = os.path.join(tmp, "state")
        self.logf = open(os.path.join(tmp, "wispd.log"), "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, os.path.abspath(A.wispd), "--socket", self.sock,
             "--state-dir", self.state, "--vmm", os.path.abspath(A.vmm)],
            stdout=self.logf, stderr=self.logf)
        for _ in range(1000):
            try:
                with socket.socket(socket.AF_UNIX) as c:
                    c.connect(self.sock)
                break
            except OSError:
                time.sleep(0.01)
        self.call("POST", "/v1/networks", {"name": NET, "subnet": SUBNET})

    def call(self, method, path, body=None, timeout=120):
        return wispd_api.call(self.sock, method, path, body, timeout=timeout)

    def vms(self):
        return {v["name"]: v for v in self.call("GET", "/v1/vms")}

    def vm_id(self, name):
        """The VM's number in the registry: its files are logs/ID.log and run/ID.in."""
        import sqlite3
        db = sqlite3.connect(f"file:{os.path.join(self.state, 'wispd.db')}?mode=ro", uri=True)
        try:
            return db.execute("SELECT id FROM vms WHERE name = ?", (name,)).fetchone()[0]
        finally:
            db.close()

    def console(self, name):
        return os.path.join(self.state, "logs", f"{self.vm_id(name)}.log")

    def type(self, name, text):
        fd = os.open(os.path.join(self.state, "run", f"{self.vm_id(name)}.in"),
                     os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, text.encode())
        os.close(fd)

    def close(self):
        try:
            for n in self.vms():
                try:
                    self.call("DELETE", f"/v1/vms/{n}/force", timeout=30)
                except RuntimeError:
                    pass
            self.call("DELETE", f"/v1/networks/{NET}/force", timeout=30)
        except (OSError, RuntimeError) as e:
            log(f"cleanup: {e}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def lease_of(console, timeout, what, required=True, after=False):
    """The address the guest's udhcpc got (its script prints it on the console); None for a
    clone that got none in time (counted as not serving) unless required; after: only a line
    after the console's first "no lease" counts."""
    try:
        m = wait_line(console, r"^density: (lease (\S+)|no lease.*)$", timeout, what,
                      skip=r"^density: no lease.*$" if after else None)
    except RuntimeError:
        if required:
            raise
        log(f"  {what}: no lease in {timeout} s")
        return None
    if not m.group(2):
        if required:
            tail = open(console, errors="replace").read()[-1500:]
            raise RuntimeError(f"{what}: {m.group(0)}; the console's end:\n{tail}")
        log(f"  {what}: {m.group(0)}")
    return m.group(2)


def steps(label, counts, kind, add, pids, remove, ns, results):
    """Instances added up to each N of counts (add(names) -> [(name, console, type)]), each
    given its own MAC and name on its console, checked to serve its page, and the host's memory
    measured at each N with KSM off and then on (the same instances: ksmd merges, is measured,
    then unmerges them before the next N); what their removal frees at the end."""
    if A.ksm != ["untouched"]:
        ksm_mode("off")
    base = settle(False, quiet_s=5, limit_s=60)
    base_cg = MEMCG.kib()
    rows = {"off": [], "on": []}
    names, ips, t_all = [], {}, time.monotonic()
    try:
        for n in counts:
            t0 = time.monotonic()
            new = add([f"c{i}" for i in range(len(names) + 1, n + 1)])
            restore_s = time.monotonic() - t0
            for name, _, type_ in new:
                type_(f"c {mac_of(int(name[1:]), kind)} {name}\n")
            for name, console, type_ in new:
                ips[name] = lease_of(console, A.clone_timeout, f"{label}: {name}", False)
                if not ips[name]:  # a guest starved of CPU misses udhcpc's timeouts: once more
                    type_(f"c {mac_of(int(name[1:]), kind)} {name}\n")
                    ips[name] = lease_of(console, A.clone_timeout, f"{label}: {name} (again)",
                                         False, after=True)
            up_s = time.monotonic() - t0
            names += [x[0] for x in new]
            bad = [nm for nm, a in ips.items() if not a or not check_serves(ns, a, nm)]
            for ksm in (["off"] if A.ksm == ["untouched"] else A.ksm):
                if ksm != "off":
                    ksm_mode(ksm)
                used = settle(ksm == "on")
                cg = MEMCG.kib() - base_cg
                row = {"n": n, "used_kib": used - base, "per_vm_kib": (used - base) / n,
                       "cg_kib": cg, "cg_per_vm_kib": cg / n,
                       "pss_kib": pss_kib(pids()), "restore_s": restore_s, "up_s": up_s,
                       "failed": bad, "pages_sharing": int(open(f"{KSM}/pages_sharing").read())}
                row["pss_per_vm_kib"] = row["pss_kib"] / n
                rows[ksm].append(row)
                results["series"][f"{label}, KSM {ksm}"] = rows[ksm]
                save(results)
                log(f"{label}, KSM {ksm}: N={n}: cgroup {cg / n / 1024:.2f} MiB each, "
                    f"used +{row['used_kib'] / 1024:.1f} MiB "
                    f"({row['per_vm_kib'] / 1024:.2f} MiB each), Pss "
                    f"{row['pss_per_vm_kib'] / 1024:.2f} MiB each, {len(new)} started in "
                    f"{restore_s:.1f} s, up in {up_s:.1f} s, serving {n - len(bad)}/{n}, "
                    f"pages_sharing {row['pages_sharing']}")
            if "on" in A.ksm:
                ksm_mode("off")
            if A.ksm == ["untouched"]:
                log(f"{label}: KSM left as it is (QEMU with mem-merge=off: never merged)")
    finally:
        before = settle(False)
        remove()
        freed(results, label, before, len(names))
        log(f"{label}: done in {time.monotonic() - t_all:.0f} s")


def wisp_pass(d, kernel, initrd, dax, results):
    """One template booted, snapshotted; then for each KSM setting clones by restore up to the
    largest step, measured at each step; the clones removed between settings."""
    label = "wisp-dax" if dax else "wisp"
    defn = {"name": f"tmpl-{label}", "memory_mib": GUEST_MIB, "kernel": kernel,
            "cmdline": kernel_cmdline(dax), "nics": [{"id": "eth0", "network": NET}],
            "ksm": True, "stop_timeout_s": 0}
    if dax:
        defn["pmem"] = [{"id": "root", "path": dax, "mode": "ro"}]
    else:
        defn["initrd"] = initrd
    d.call("POST", "/v1/vms", defn)
    t0 = time.monotonic()
    d.call("POST", f"/v1/vms/{defn['name']}/start")
    con = d.console(defn["name"])
    ip = lease_of(con, A.boot_timeout, f"{label} template")
    wait_line(con, r"^density: ready$", 60, f"{label} template")
    boot_s = time.monotonic() - t0
    assert check_serves(d.ns, ip, "template"), f"{label}: the template does not serve its page"
    log(f"{label}: template booted and serving at {ip} after {boot_s:.0f} s")
    snap = os.path.join(d.tmp, f"snap-{label}")
    os.mkdir(snap)
    t0 = time.monotonic()
    d.call("POST", f"/v1/vms/{defn['name']}/snapshot", {"path": snap}, timeout=300)
    snap_s = time.monotonic() - t0
    results.setdefault("templates", {})[label] = {"boot_s": boot_s, "snapshot_s": snap_s,
                                                   "memory_file_kib": os.stat(os.path.join(
                                                       snap, "memory")).st_blocks // 2}
    tmpl_pids = set(children(d.proc.pid))
    made = []

    def add(names):
        for name in names:
            d.call("POST", f"/v1/vms/{name}/restore", {"from": snap}, timeout=120)
            made.append(name)
        return [(nm, d.console(nm), lambda t, nm=nm: d.type(nm, t)) for nm in names]

    def remove():
        for name in made:
            d.call("DELETE", f"/v1/vms/{name}/force", timeout=60)

    steps(label, A.steps, 1 if dax else 0, add,
          lambda: [p for p in children(d.proc.pid) if p not in tmpl_pids], remove, d.ns, results)
    d.call("DELETE", f"/v1/vms/{defn['name']}/force", timeout=60)
    shutil.rmtree(snap, ignore_errors=True)


# ---- QEMU microvm --------------------------------------------------------------------------

class Qemu:
    def __init__(self, tmp, ns, name, kernel, initrd, incoming=None):
        self.name, self.ns = name, ns
        self.tap = f"q{name}"[:15]
        self.log = os.path.join(tmp, f"{name}.serial")
        self.sock = os.path.join(tmp, f"{name}.con")
        self.qmp = os.path.join(tmp, f"{name}.qmp")
        sh("ip", "-n", ns.name, "tuntap", "add", "dev", self.tap, "mode", "tap")
        sh("ip", "-n", ns.name, "link", "set", self.tap, "master", f"wb-{NET}", "up")
        cmd = ["ip", "netns", "exec", ns.name, A.qemu, "-enable-kvm", "-M",
               "microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off,acpi=off,"
               "auto-kernel-cmdline=off" + (",mem-merge=off" if A.ksm == ["untouched"] else ""),
               "-cpu", "host,-arch-capabilities", "-m", str(GUEST_MIB), "-nographic",
               "-nodefaults", "-no-reboot",
               "-chardev", f"socket,id=con,path={self.sock},server=on,wait=off,logfile={self.log}",
               "-serial", "chardev:con", "-qmp", f"unix:{self.qmp},server=on,wait=off",
               "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
               "-device", f"virtio-net-device,netdev=n0,mac={mac_of(0, 0xee)}",
               "-kernel", kernel, "-initrd", initrd, "-append", kernel_cmdline(False, QEMU_MMIO)]
        if incoming:
            cmd += ["-incoming", f"exec:cat {incoming}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def qmp_cmd(self, *cmds):
        for _ in range(200):
            if os.path.exists(self.qmp):
                break
            time.sleep(0.05)
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.qmp)
        f = s.makefile("rw")
        f.readline()
        out = []
        for c in (("qmp_capabilities", {}),) + cmds:
            f.write(json.dumps({"execute": c[0], "arguments": c[1]}) + "\n")
            f.flush()
            while True:
                r = json.loads(f.readline())
                if "return" in r or "error" in r:
                    out.append(r)
                    break
        s.close()
        return out[1:]

    def type(self, text):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.sock)
        s.sendall(text.encode())
        time.sleep(0.2)
        s.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        sh("ip", "-n", self.ns.name, "link", "del", self.tap, check=False)


def qemu_pass(d, tmp, kernel, initrd, results):
    t0 = time.monotonic()
    tmpl = Qemu(tmp, d.ns, "tmpl", kernel, initrd)
    try:
        ip = lease_of(tmpl.log, A.boot_timeout, "qemu template")
        wait_line(tmpl.log, r"^density: ready$", 60, "qemu template")
        boot_s = time.monotonic() - t0
        assert check_serves(d.ns, ip, "template"), "qemu: the template does not serve its page"
        log(f"qemu: template booted and serving at {ip} after {boot_s:.0f} s")
        mig = os.path.join(tmp, "qemu.mig")
        tmpl.qmp_cmd(("stop", {}), ("migrate", {"uri": f"exec:cat > {mig}"}))
        for _ in range(600):
            st = tmpl.qmp_cmd(("query-migrate", {}))[0]["return"].get("status")
            if st in ("completed", "failed"):
                break
            time.sleep(0.1)
        assert st == "completed", f"qemu: migration to a file: {st}"
    finally:
        tmpl.close()
    results.setdefault("templates", {})["qemu"] = {"boot_s": boot_s,
                                                   "memory_file_kib": os.path.getsize(mig) // 1024}
    vms = []

    def add(names):
        new = [Qemu(tmp, d.ns, nm, kernel, initrd, incoming=mig) for nm in names]
        vms.extend(new)
        for q in new:
            for _ in range(600):
                try:
                    st = q.qmp_cmd(("query-status", {}))[0]["return"]["status"]
                except (OSError, KeyError, ValueError):
                    st = None
                if st in ("paused", "running"):
                    break
                time.sleep(0.1)
            if st != "running":
                q.qmp_cmd(("cont", {}))
        return [(q.name, q.log, q.type) for q in new]

    def remove():
        for q in vms:
            q.close()

    steps("qemu", A.qemu_steps, 2, add, lambda: [p for q in vms for p in children(q.proc.pid)],
          remove, d.ns, results)
    os.unlink(mig)


# ---- plain processes -----------------------------------------------------------------------

def floor_pass(d, tmp, results):
    www = os.path.join(tmp, "floor")
    procs, rows = [], []
    base = settle(False, quiet_s=5, limit_s=60)
    base_cg = MEMCG.kib()
    try:
        for n in A.steps:
            for i in range(len(procs) + 1, n + 1):
                site = os.path.join(www, str(i))
                os.makedirs(site)
                with open(os.path.join(site, "index.html"), "w") as f:
                    f.write(INDEX)
                with open(os.path.join(site, "name.txt"), "w") as f:
                    f.write(f"p{i}\n")
                procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", d.ns.name, A.busybox, "httpd", "-f", "-p",
                     f"{GATEWAY}:{20000 + i}", "-h", site]))
            time.sleep(1)
            bad = [i for i in range(1, n + 1)
                   if not check_serves(d.ns, GATEWAY, f"p{i}", port=20000 + i)]
            used = settle(False)
            cg = MEMCG.kib() - base_cg
            row = {"n": n, "used_kib": used - base, "per_vm_kib": (used - base) / n,
                   "cg_kib": cg, "cg_per_vm_kib": cg / n,
                   "pss_kib": pss_kib([p.pid for p in procs]), "failed": bad}
            row["pss_per_vm_kib"] = row["pss_kib"] / n
            rows.append(row)
            results["series"]["busybox httpd processes"] = rows
            save(results)
            log(f"processes: N={n}: cgroup {cg / n:.0f} KiB each, used +{row['used_kib'] / 1024:.1f} MiB, Pss "
                f"{row['pss_per_vm_kib']:.0f} KiB each, serving {n - len(bad)}/{n}")
    finally:
        before = settle(False)
        for p in procs:
            p.kill()
            p.wait()
        freed(results, "busybox httpd processes", before, len(procs))
    results["series"]["busybox httpd processes"] = rows


# ---- report --------------------------------------------------------------------------------

def report(results):
    print("\nHost memory against N (used: free's used over the baseline; Pss: the instances' "
          "processes)")
    print(f"{'series':34} {'N':>4} {'cgroup MiB/inst':>15} {'used MiB':>9} {'MiB/inst':>9} "
          f"{'Pss MiB/inst':>12} {'up s':>6} {'serving':>8}")
    for key, rows in results["series"].items():
        for r in rows:
            print(f"{key:34} {r['n']:4d} {r.get('cg_per_vm_kib', 0) / 1024:15.2f} "
                  f"{r['used_kib'] / 1024:9.1f} {r['per_vm_kib'] / 1024:9.2f} "
                  f"{r['pss_per_vm_kib'] / 1024:12.2f} {r.get('up_s', 0):6.1f} "
                  f"{r['n'] - len(r['failed']):4d}/{r['n']}")
    if results.get("freed"):
        print("\nFreed when the N instances were removed (used before - after)")
        for key, f in results["freed"].items():
            print(f"{key:34} {f['n']:4d} {f['freed_kib'] / 1024:9.1f} MiB "
                  f"{f['per_instance_kib'] / 1024:9.2f} MiB each")
    s = results["series"]
    ratios = {}

    def at(key, n):
        return next((r for r in s.get(key, []) if r["n"] == n), None)
    top = max(A.steps)
    floor = at("busybox httpd processes", top)
    qtop = max(A.qemu_steps)
    for key in [k for k in s if k.startswith("wisp")]:
        w = at(key, top)
        q = at(f"qemu, KSM {key.split('KSM ')[-1]}", qtop)
        for fig, name in (("cg_per_vm_kib", "cgroup"), ("pss_per_vm_kib", "Pss")):
            if w and q and w.get(fig):
                ratios[f"qemu (N={qtop}) / {key} (N={top}), {name} per instance"] = \
                    q[fig] / w[fig]
            if w and floor and floor.get(fig):
                ratios[f"{key} / processes (N={top}), {name} per instance"] = w[fig] / floor[fig]
    results["ratios"] = ratios
    print("\nRatios (targets at N = 100 with KSM and DAX: QEMU / wisp >= 10, wisp / processes "
          "<= 2)")
    for k, v in ratios.items():
        print(f"  {k:70} {v:7.2f}x")
    for k, t in results.get("templates", {}).items():
        print(f"template {k}: {json.dumps(t)}")


def plot(results, png):
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    dat = os.path.join(os.path.dirname(os.path.abspath(png)), "density.dat")
    keys = list(results["series"])
    with open(dat, "w") as f:
        for k in keys:
            f.write(f"# {k}\n")
            for r in results["series"][k]:
                f.write(f"{r['n']} {r.get('cg_per_vm_kib', 0) / 1024:.3f} "
                        f"{r['per_vm_kib'] / 1024:.3f} {r['pss_per_vm_kib'] / 1024:.3f}\n")
            f.write("\n\n")
    plots = ", ".join(f"'{dat}' index {i} using 1:2 with linespoints title '{k}'"
                      for i, k in enumerate(keys))
    script = f"""set terminal png size 1000,600
set output '{png}'
set title 'Host memory per instance (memory cgroup usage / N), busybox httpd sites'
set xlabel 'instances N'
set ylabel 'MiB per instance'
set logscale y
set key top right
set grid
plot {plots}
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def main():
    global A
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for o in ("--wispd", "--wisp", "--vmm", "--init"):
        ap.add_argument(o)
    ap.add_argument("--kernel", help="the kit's vmlinux (default: guest/kernel/build.sh's)")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--steps", default="1,10,25,50,100")
    ap.add_argument("--qemu-steps", help="default: --steps")
    ap.add_argument("--passes", default="floor,wisp,wisp-dax,qemu")
    ap.add_argument("--ksm", default="off,on",
                    help="off,on; or `untouched`: KSM's settings are not changed and QEMU runs "
                         "with mem-merge=off (its pages are never merged), for a QEMU pass "
                         "beside another run that switches KSM; its series is KSM off")
    ap.add_argument("--ksm-pages", type=int, default=4000, help="pages_to_scan while KSM is on")
    ap.add_argument("--boot-timeout", type=int, default=900)
    ap.add_argument("--clone-timeout", type=int, default=600)
    ap.add_argument("--out", help="a directory for density.json, density.dat, density.png")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--report-only", metavar="JSON",
                    help="print the tables and draw the plot (into --out) of an earlier run")
    A = ap.parse_args()
    A.steps = [int(x) for x in A.steps.split(",")]
    A.qemu_steps = [int(x) for x in (A.qemu_steps or ",".join(map(str, A.steps))).split(",")]
    A.ksm = A.ksm.split(",")
    passes = A.passes.split(",")
    if not A.report_only and not (A.wispd and A.wisp and A.vmm and A.init):
        ap.error("--wispd, --wisp, --vmm and --init are required")
    if A.report_only:
        results = json.load(open(A.report_only))
        A.steps, A.qemu_steps = results["steps"], results["qemu_steps"]
        report(results)
        if A.out:
            plot(results, os.path.join(A.out, "density.png"))
        return 0
    if os.geteuid() != 0:
        print("density.py: needs root (a network namespace, a bridge, taps, KSM's settings)",
              file=sys.stderr)
        return 2
    kernel = A.kernel or os.path.join(
        sh(os.path.join(REPO, "guest/kernel/build.sh"), "--print-path").stdout.strip(), "vmlinux")
    A.init = os.path.abspath(A.init)
    ksm_saved = ksm_read()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("density.py: SIGTERM"))  # clean up too
    results = {"series": {}, "steps": A.steps, "qemu_steps": A.qemu_steps,
               "guest_mib": GUEST_MIB, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                time.gmtime())}
    global MEMCG
    MEMCG = Memcg()
    tmp = tempfile.mkdtemp(prefix="density-", dir="/var/tmp")
    ns = Netns()
    d = None
    try:
        initrd, dax = build_guest(tmp)
        d = Wispd(tmp, ns)
        for p in passes:  # in the order given
            if p == "floor":
                floor_pass(d, tmp, results)
            elif p == "wisp":
                wisp_pass(d, kernel, initrd, None, results)
            elif p == "wisp-dax":
                wisp_pass(d, kernel, initrd, dax, results)
            elif p == "qemu":
                qemu_pass(d, tmp, kernel, initrd, results)
    finally:
        if d:
            d.close()
        ns.close()
        MEMCG.close()
        if A.ksm != ["untouched"]:
            if ksm_saved["run"] == "0":
                ksm_set(2)  # unmerge what this run merged, then stop
                time.sleep(2)
            ksm_set(ksm_saved["run"], pages_to_scan=ksm_saved["pages_to_scan"],
                    sleep_millisecs=ksm_saved["sleep_millisecs"])
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        save(results)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    if A.out and results["series"]:
        plot(results, os.path.join(A.out, "density.png"))
    if A.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
