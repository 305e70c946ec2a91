#!/usr/bin/env python3
"""wispd's placement and isolation (docs/wispd.md, "Placement and isolation") with real wispd,
wisp-vmm (and wisp-jailer) processes and the host's real cgroups:

  cgroups   a VM's cgroups made with the definition's limits written, its processes in them,
            removed when it ends; vCPU and VMM pinning seen in /proc/PID/task/*/status
  jail      VMs jailed by default, in-process (the unprivileged uid, /proc/PID/root is the jail,
            new pid and mount namespaces, no process between wispd and the VMM), the jail gone
            at the end; "jail": false and --no-jail
  jail-exec the same with an external wisp-jailer (wispd --jailer PATH)
  reattach  a kill -9 of wispd keeps the jailed VM, its cgroups and jail; the new wispd stops
            it and removes both; a killed VMM's end is seen (reattach-exec: under --jailer, a
            killed jailer's orphaned VMM is killed through the cgroup)
  cgroups-v2  --cgroups v2 on a cgroup2 mount: the VM placed there, a limit its controller
            lacks refused at the start
  refused   placement and limits that do not check out are refused at define, naming the field

  placement_test.py --wispd W --wisp C --vmm V --guest G --case CASE
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wispd_test as W  # noqa: E402  (Daemon, alive, vmm_of, wait_for, the arguments)

JAIL_UID = 10100


def tasks(pid):
    """thread name -> Cpus_allowed_list of each thread of pid."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{t}/comm").read().strip()
            st = open(f"/proc/{pid}/task/{t}/status").read()
        except OSError:
            continue
        out.setdefault(comm, []).append(
            [line.split()[1] for line in st.splitlines() if line.startswith("Cpus_allowed_list")][0])
    return out


def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return line.split()[1:]
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def vm(d, name):
    return json.loads(d.wisp("show", name, "--json", check=0).stdout)


def read(path):
    return open(path).read().strip()


def case_cgroups(d):
    d.start()
    ncpu = os.cpu_count()
    last = str(ncpu - 1)
    d.define("a", check=0, vcpus=2,
             limits={"memory_mib": 64, "pids": 40, "cpu_percent": 50, "cpu_weight": 200},
             placement={"vcpu_cpus": [last, "0"], "vmm_cpus": "0"})
    d.wisp("start", "a", check=0)
    v = vm(d, "a")
    cg = v["placement"]["cgroups"]
    assert cg and v["placement"]["jailed"], v
    by = {c.split("/sys/fs/cgroup/")[1].split("/")[0]: c for c in cg}
    pid, vmm = v["pid"], W.vmm_of(v["pid"])
    assert vmm == pid and v["placement"]["jailer"] == "in-process", v
    for c in cg:  # the VMM, from before its exec
        procs = {int(x) for x in read(c + "/cgroup.procs").split()}
        assert {pid, vmm} <= procs, (c, procs, pid, vmm)
        assert os.path.basename(c) == f"vm-{v['id'] if 'id' in v else 1}", c
    assert read(by["memory"] + "/memory.limit_in_bytes") == str(64 << 20)
    assert read(by["pids"] + "/pids.max") == "40"
    assert read(by["cpu"] + "/cpu.cfs_quota_us") == "50000"
    assert read(by["cpu"] + "/cpu.cfs_period_us") == "100000"
    assert read(by["cpu"] + "/cpu.shares") == str(200 * 1024 // 100)
    assert open(f"/proc/{vmm}/cgroup").read().count("/vm-") >= len(cg)
    # pinning: each vCPU on its list, every other thread of the VMM on vmm_cpus
    t = W.wait_for("both vCPU threads", lambda: (lambda x: x if "vcpu1" in x else None)(tasks(vmm)))
    assert t["vcpu0"] == [last] and t["vcpu1"] == ["0"], t
    others = [c for n, cs in t.items() if not n.startswith("vcpu") and not n.startswith("kvm")
              for c in cs]
    assert others and all(c == "0" for c in others), t
    # stop: the cgroups go with the VM (and wispd removes its jail)
    d.wisp("kill", "a", check=0)
    assert not W.alive(vmm)
    for c in cg:
        assert not os.path.exists(c), c
    # placement.cpus: the VM's cpuset, so every thread of it stays there
    d.define("c", check=0, placement={"cpus": last})
    d.wisp("start", "c", check=0)
    v = vm(d, "c")
    cs = [c for c in v["placement"]["cgroups"] if "/cpuset/" in c][0]
    assert read(cs + "/cpuset.cpus") == last, read(cs + "/cpuset.cpus")
    t = tasks(W.vmm_of(v["pid"]))
    assert all(c == last for n, cs_ in t.items() if not n.startswith("kvm") for c in cs_), t
    d.wisp("rm", "-f", "c", check=0)
    # a VM with nothing asked for still gets its cgroups (accounting, kill), without limits
    d.define("b", check=0)
    d.wisp("start", "b", check=0)
    cg = vm(d, "b")["placement"]["cgroups"]
    mem = [c for c in cg if "/memory/" in c][0]
    assert int(read(mem + "/memory.limit_in_bytes")) > 1 << 50  # unlimited
    assert W.alive(W.vmm_of(vm(d, "b")["pid"]))
    d.wisp("rm", "-f", "b", check=0)
    for c in cg:
        assert not os.path.exists(c), c
    lim = json.loads(d.wisp("limits", "--json", check=0).stdout)["placement"]
    assert lim["cgroups"] == "v1" and lim["jail"], lim
    # favordynmods (docs/wispd.md, "cgroups"): on while wispd runs, through its hidden named
    # hierarchy, which every process's /proc/PID/cgroup lists while it exists
    assert lim["favordynmods"].startswith("on"), lim
    if "held by wispd" in lim["favordynmods"]:
        assert "name=wisp-dynmods:" in read(f"/proc/{d.proc.pid}/cgroup"), lim
    parents = lim["cgroup_dirs"]
    if len(lim["numa_nodes"]) == 1:
        assert "no-op" in lim["numa"], lim
        assert "one node" in open(os.path.join(d.tmp, "wispd.log")).read()
    d.stop()
    for p in parents:  # wispd's parents go with the last VM's cgroup at its end
        assert not os.path.exists(p), p


def jailer_path():
    """wisp-jailer in the build tree, beside wisp-vmm's directory (for wispd --jailer)."""
    return os.path.normpath(os.path.join(os.path.dirname(W.A.vmm), "../../tools/wisp-jailer"))


def case_jail(d, jailer=None):
    """Jailed in-process (the default), or by an external wisp-jailer (jailer)."""
    d.extra = ["--jailer", jailer] if jailer else []
    d.start()
    d.define("j", check=0, stop_timeout_s=1)
    d.define("open", check=0, jail=False)
    d.wisp("start", "j", check=0)
    d.wisp("start", "open", check=0)
    v = vm(d, "j")
    vmm = W.vmm_of(v["pid"])
    if jailer:  # the recorded pid is the jailer's, which waits outside for its VMM
        assert vmm != v["pid"] and v["placement"]["jailer"] == "wisp-jailer", v
        assert status(v["pid"], "PPid") == [str(d.proc.pid)]
    else:  # no process between wispd and the VMM
        assert vmm == v["pid"] and v["placement"]["jailer"] == "in-process", v
        assert status(vmm, "PPid") == [str(d.proc.pid)]
        assert status(vmm, "NSsid")[-1] == "1"  # its own session, as its pid 1
    root = os.path.join(d.state, "jail", "wisp-vmm", "vm-1", "root")
    assert v["api_sock"] == root + "/api.sock", v
    assert status(vmm, "Uid") == [str(JAIL_UID)] * 4, status(vmm, "Uid")
    assert status(vmm, "CapEff") == ["0000000000000000"]
    assert status(vmm, "NoNewPrivs") == ["1"] and status(vmm, "Seccomp") == ["2"]
    assert status(vmm, "NSpid")[-1] == "1"  # pid 1 of its own pid namespace
    r, j = os.stat(f"/proc/{vmm}/root/"), os.stat(root)
    assert (r.st_dev, r.st_ino) == (j.st_dev, j.st_ino), "its / is not the jail"
    for ns in ("mnt", "pid", "ipc", "uts"):
        assert os.readlink(f"/proc/{vmm}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    assert sorted(os.listdir(root)) == ["api.sock", "dev", "kernel", "wisp-vmm"], os.listdir(root)
    assert b"ready" in open(os.path.join(d.state, "logs", "1.log"), "rb").read() or \
        W.wait_for("the guest's console", lambda: b"ready" in open(
            os.path.join(d.state, "logs", "1.log"), "rb").read())
    o = vm(d, "open")
    assert not o["placement"]["jailed"] and W.vmm_of(o["pid"]) == o["pid"]
    assert status(o["pid"], "Uid")[0] == "0"
    d.wisp("pause", "j", check=0)  # driven through the socket in its jail
    d.wisp("resume", "j", check=0)
    d.wisp("stop", "j", check=0)
    assert not W.alive(vmm)
    assert not os.path.exists(os.path.dirname(root)), "the jail is left"
    d.wisp("kill", "open", check=0)
    # a kill: the VM, then its jail
    d.wisp("start", "j", check=0)
    vmm = W.vmm_of(vm(d, "j")["pid"])
    d.wisp("kill", "j", check=0)
    assert not W.alive(vmm)
    assert not os.path.exists(os.path.dirname(root)), "the jail is left after a kill"
    d.stop()
    if jailer:
        return
    # wispd --no-jail: every VM unjailed
    d.extra = ["--no-jail"]
    d.start()
    d.wisp("start", "j", check=0)
    v = vm(d, "j")
    assert not v["placement"]["jailed"] and status(v["pid"], "Uid")[0] == "0", v
    assert v["placement"]["cgroups"], v
    d.wisp("kill", "j", check=0)
    d.stop()


def case_jail_exec(d):
    case_jail(d, jailer_path())


def case_reattach(d, jailer=None):
    d.extra = ["--jailer", jailer] if jailer else []
    d.start()
    d.define("r", check=0, limits={"pids": 64}, stop_timeout_s=1)
    d.define("k", check=0)
    d.wisp("start", "r", check=0)
    d.wisp("start", "k", check=0)
    v, k = vm(d, "r"), vm(d, "k")
    vmm, kvmm = W.vmm_of(v["pid"]), W.vmm_of(k["pid"])
    d.kill9()
    d.start()
    v2 = vm(d, "r")
    assert v2["state"] == "running" and v2["pid"] == v["pid"], v2
    assert v2["placement"]["jailed"] and v2["placement"]["cgroups"] == v["placement"]["cgroups"]
    pids = [c for c in v2["placement"]["cgroups"] if "/pids/" in c][0]
    assert read(pids + "/pids.max") == "64"
    d.wisp("pause", "r", check=0)
    d.wisp("resume", "r", check=0)
    d.wisp("stop", "r", check=0)
    assert not W.alive(vmm)
    for c in v2["placement"]["cgroups"]:
        assert not os.path.exists(c), c
    assert not os.path.exists(os.path.join(d.state, "jail", "wisp-vmm", "vm-1"))
    # the recorded pid killed by someone (a VMM; under --jailer its jailer): wispd sees the end
    # and kills what is left in the cgroup
    os.kill(k["pid"], signal.SIGKILL)
    W.wait_for("k seen ended", lambda: vm(d, "k")["state"] == "stopped")
    W.wait_for("k's orphaned VMM killed", lambda: not W.alive(kvmm), 5)
    d.wisp("rm", "k", check=0)
    for c in k["placement"]["cgroups"]:
        W.wait_for("k's cgroups removed", lambda: not os.path.exists(c), 5)
    assert not os.path.exists(os.path.join(d.state, "jail", "wisp-vmm", "vm-2"))
    d.stop()


def case_cgroups_v2(d):
    """--cgroups v2 where the unified hierarchy has no controller (this machine): the VMs are
    placed in their cgroup2 cgroup for accounting, and a limit is refused at the start, naming
    its controller. Skipped where no cgroup2 is mounted."""
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if " - cgroup2 " in l]
    if not mounts:
        print("skipped: no cgroup2 mounted")
        return
    d.extra = ["--cgroups", "v2"]
    d.start()
    lim = json.loads(d.wisp("limits", "--json", check=0).stdout)["placement"]
    assert lim["cgroups"] == "v2" and len(lim["cgroup_dirs"]) == 1, lim
    assert lim["cgroup_dirs"][0].startswith(mounts[0] + "/"), lim
    ctl = read(mounts[0] + "/cgroup.controllers").split()
    d.define("p", check=0, stop_timeout_s=1)
    d.wisp("start", "p", check=0)
    v = vm(d, "p")
    (cg,) = v["placement"]["cgroups"]
    assert cg == lim["cgroup_dirs"][0] + "/vm-1", (cg, lim)
    procs = {int(x) for x in read(cg + "/cgroup.procs").split()}
    assert {v["pid"], W.vmm_of(v["pid"])} <= procs, procs
    d.define("q", check=0, limits={"pids": 64})
    r = d.wisp("start", "q")
    if "pids" not in ctl:
        assert r.returncode == 1 and "the pids controller" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stderr
        d.wisp("kill", "q", check=0)
    d.wisp("stop", "p", check=0)
    assert not os.path.exists(cg), cg
    d.stop()
    assert not os.path.exists(lim["cgroup_dirs"][0])


def case_refused(d):
    d.start()
    for extra, want in (
            ({"placement": {"vcpu_cpus": ["0-x"]}}, "placement.vcpu_cpus[0]: '0-x' is not a CPU list"),
            ({"placement": {"vcpu_cpus": ["0", "0"]}}, "2 lists for 1 vCPUs"),
            ({"placement": {"cpus": "0", "vmm_cpus": "1"}}, "not within placement.cpus"),
            ({"placement": {"numa": "near"}}, "placement.numa: 'near'"),
            ({"placement": {"pin": "0"}}, "unknown field 'pin'"),
            ({"limits": {"memory_mib": 8}}, "limits.memory_mib: 8 is below memory_mib 16"),
            ({"limits": {"pids": 2}}, "limits.pids: at least 8"),
            ({"limits": {"cpu_weight": 0}}, "cpu_percent and cpu_weight start at 1"),
            ({"jail": "yes"}, "jail")):
        r = d.define("x", **extra)
        assert r.returncode == 1 and want in r.stderr, (extra, r.stderr)
    # a CPU the host does not have: the start fails with wisp-vmm's reason, nothing left
    d.define("far", check=0, placement={"vcpu_cpus": ["1000"]})
    r = d.wisp("start", "far", check=1)
    assert "vcpu0: --vcpu-affinity 1000" in r.stderr, r.stderr
    W.wait_for("the failed start's jail removed", lambda: not os.path.exists(
        os.path.join(d.state, "jail", "wisp-vmm", "vm-1")), 5)
    dirs = json.loads(d.wisp("limits", "--json", check=0).stdout)["placement"]["cgroup_dirs"]
    assert dirs
    for c in dirs:
        W.wait_for("its cgroups removed", lambda: not os.path.exists(c + "/vm-1"), 5)
    d.stop()


def case_reattach_exec(d):
    case_reattach(d, jailer_path())


if __name__ == "__main__":
    case_reattach_jailed = case_reattach
    W.main_with(globals(), W.Daemon)
