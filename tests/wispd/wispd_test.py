#!/usr/bin/env python3
"""wispd and the wisp CLI with real wisp-vmm processes running a test guest and a real SQLite
registry (docs/wispd.md): lifecycle, restart policies, reattach, the kill -9 crash test, CLI
usage errors.

  wispd_test.py --wispd W --wisp C --vmm V --guest G --case CASE
"""
import argparse
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time

A = None


class Daemon:
    def __init__(self, tmp):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "wispd.sock")
        self.state = os.path.join(tmp, "state")
        self.proc = None
        self.extra = []  # more wispd options
        self.prefix = []  # network_test.py: ip netns exec NS

    def start(self, nofile=None):
        log = open(os.path.join(self.tmp, "wispd.log"), "a")
        pre = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) \
            if nofile else None
        self.proc = subprocess.Popen(self.prefix + [A.wispd, "--socket", self.sock,
                                                    "--state-dir", self.state, "--vmm", A.vmm]
                                     + self.extra, stdout=log, stderr=log, preexec_fn=pre)
        for _ in range(500):
            try:  # a wispd killed with -9 leaves its socket file: wait for one that answers
                with socket.socket(socket.AF_UNIX) as c:
                    c.connect(self.sock)
                return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError("wispd ended: " + open(log.name).read())
            time.sleep(0.01)
        raise AssertionError("wispd's socket did not appear")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(10) == 0

    def wisp(self, *args, check=None, stdin=None):
        r = subprocess.run([A.wisp, "--socket", self.sock] + list(args), input=stdin,
                           capture_output=True, text=True, timeout=60)
        if check is not None and r.returncode != check:
            raise AssertionError(f"wisp {' '.join(args)}: exit {r.returncode}, wanted {check}: "
                                 f"{r.stdout}{r.stderr}")
        return r

    def vms(self):
        return {v["name"]: v for v in json.loads(self.wisp("ls", "--json", check=0).stdout)}

    def define(self, name, policy="no", check=None, **extra):
        d = {"name": name, "memory_mib": 16, "kernel": A.guest, "restart_policy": policy}
        d.update(extra)
        return self.wisp("define", "-", stdin=json.dumps(d), check=check)


def alive(pid):
    """Running, not a zombie (a VM orphaned by a killed wispd is reaped by init, later)."""
    try:
        s = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return s[s.rindex(")") + 2] not in "ZX"


def starttime(pid):
    s = open(f"/proc/{pid}/stat").read()
    return int(s[s.rindex(")") + 2:].split()[19])


def jail_roots(state_dir):
    """(st_dev, st_ino) of each jail's root in this state directory: a process jailed there has
    it as its /proc/PID/root/ (whose link reads "/": it is in its own mount namespace)."""
    base = os.path.join(state_dir, "jail", "wisp-vmm")
    out = set()
    for name in os.listdir(base) if os.path.isdir(base) else []:
        try:
            st = os.stat(os.path.join(base, name, "root"))
            out.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    return out


def vmm_processes(state_dir):
    """pid -> cmdline of the processes that are this state directory's VMs: a wisp-vmm in its
    jail (jailed in-process, the default), a wisp-jailer (wispd --jailer: its VMM is its child)
    or a wisp-vmm (unjailed)."""
    out = {}
    jail = (state_dir + "/jail").encode()
    roots = jail_roots(state_dir)
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
            root = os.stat(f"/proc/{p}/root/") if cmd[0] == b"/wisp-vmm" else None
        except OSError:
            continue
        unjailed = len(cmd) > 2 and cmd[1] == b"--api-sock" and cmd[2].startswith(
            state_dir.encode())
        jailed = (cmd[0].endswith(b"wisp-jailer") and jail in cmd) or \
            (root is not None and (root.st_dev, root.st_ino) in roots)
        if (unjailed or jailed) and alive(int(p)):
            out[int(p)] = cmd
    return out


def console_writers(state_dir):
    """The processes whose stdout is a console log of this state directory: every wisp-vmm of
    it, found even when its jailer is gone: a last resort, for a test that failed half-way."""
    out = []
    logs = os.path.join(state_dir, "logs") + "/"
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and os.readlink(f"/proc/{p}/fd/1").startswith(logs):
                out.append(int(p))
        except OSError:
            pass
    return out


def vmm_of(pid):
    """The wisp-vmm of a VM whose recorded pid is `pid`: under wispd --jailer the jailer's
    child, else pid itself."""
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return pid
    return int(kids[0]) if kids else pid


def cgroup_parents(state_dir):
    """The parents of this wispd's VM cgroups (docs/wispd.md, "cgroups"): wisp-HASH in wispd's
    own cgroup of each v1 hierarchy."""
    h = 5381
    for c in os.path.realpath(state_dir).encode():
        h = (h * 33 + c) & 0xffffffff
    out = []
    for line in open("/proc/self/cgroup"):
        _, ctl, path = line.rstrip("\n").split(":", 2)
        for c in ctl.split(","):
            if c in ("cpu", "cpuacct", "cpuset", "memory", "pids"):
                out.append(f"/sys/fs/cgroup/{c}{path.rstrip('/')}/wisp-{h:08x}")
    return out


def remove_cgroups(state_dir):
    """What a test that killed wispd and its VMs with SIGKILL leaves in the host's cgroups."""
    for parent in cgroup_parents(state_dir):
        if not os.path.isdir(parent):
            continue
        for vm in os.listdir(parent):
            if vm.startswith("vm-"):
                for _ in range(100):  # the killed processes leave their cgroup as they exit
                    try:
                        os.rmdir(os.path.join(parent, vm))
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)
        try:
            os.rmdir(parent)
        except OSError:
            pass


def wait_for(what, fn, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def print_log_tail(tmp):
    """After a failure: the last 40 lines of TMP/wispd.log on stderr, if there is one."""
    log = os.path.join(tmp, "wispd.log")
    if os.path.exists(log):
        sys.stderr.write("--- wispd.log (last 40 lines)\n" + "".join(open(log).readlines()[-40:]))


def case_lifecycle(d):
    d.start()
    d.define("a", check=0)
    assert d.define("a").returncode == 5  # the name is taken
    r = d.wisp("define", "-", stdin='{"name": "b", "kernel": "rel/path"}', check=1)
    assert "absolute path" in r.stderr, r.stderr
    d.wisp("define", "-", stdin='{"name": "nok", "kernel": "/nonexistent/kernel"}', check=0)
    r = d.wisp("start", "nok", check=1)  # wisp-vmm's reason reaches the user
    assert "/nonexistent/kernel" in r.stderr, r.stderr
    assert d.vms()["nok"]["state"] == "stopped"
    d.wisp("rm", "nok", check=0)
    r = d.wisp("define", "-", stdin='{"name": "b", "kernel": "/k", "cpus": 2}', check=1)
    assert "unknown field 'cpus'" in r.stderr, r.stderr
    vm = d.vms()["a"]
    assert vm["state"] == "stopped" and vm["definition"]["vcpus"] == 1
    # create: wisp-vmm's machine options
    d.wisp("create", "m", "--kernel", A.guest, "--mem", "1G", "--cpus", "2", "--drive",
           "path=/tmp/x.img,format=raw,readonly=on", "--net", "tap=tapx", "--restart",
           "always", check=0)
    m = d.vms()["m"]["definition"]
    assert m["memory_mib"] == 1024 and m["vcpus"] == 2 and m["restart_policy"] == "always", m
    assert m["drives"] == [{"id": "rootfs", "path": "/tmp/x.img", "format": "raw",
                            "read_only": True, "root": True}], m
    mac = m["nics"][0].pop("mac")  # every NIC gets a MAC (network_test.py checks them)
    assert m["nics"] == [{"id": "net0", "tap": "tapx"}] and mac.startswith("0a:77:69:"), m
    d.wisp("rm", "m", check=0)
    d.wisp("start", "a", check=0)
    vm = d.vms()["a"]
    assert vm["state"] == "running" and alive(vm["pid"]), vm
    assert d.wisp("start", "a").returncode == 5
    try:
        wait_for("the guest's output",
                 lambda: "idle: ready" in d.wisp("logs", "a", check=0).stdout)
    except AssertionError:
        print("wisp logs a:", repr(d.wisp("logs", "a").stdout), d.vms()["a"])
        raise
    assert d.wisp("logs", "nosuch").returncode == 4
    d.wisp("pause", "a", check=0)
    assert d.vms()["a"]["state"] == "paused"
    d.wisp("resume", "a", check=0)
    assert d.vms()["a"]["state"] == "running"
    pid = d.vms()["a"]["pid"]
    d.wisp("restart", "a", check=0)
    vm = d.vms()["a"]
    assert vm["state"] == "running" and vm["pid"] != pid and not alive(pid), vm
    assert d.wisp("rm", "a").returncode == 5  # running
    d.wisp("stop", "a", check=0)
    vm = d.vms()["a"]
    assert vm["state"] == "stopped" and "status 0" in vm["last_exit"], vm
    d.wisp("start", "a", check=0)
    d.wisp("kill", "a", check=0)
    assert "signal 9" in d.vms()["a"]["last_exit"]
    d.wisp("start", "a", check=0)
    pid = d.vms()["a"]["pid"]
    d.wisp("rm", "-f", "a", check=0)
    assert "a" not in d.vms() and not alive(pid)
    assert d.wisp("show", "a").returncode == 4
    kinds = [json.loads(l)["kind"] for l in d.wisp("events", "--json", check=0).stdout.splitlines()]
    for k in ("define", "start", "pause", "resume", "stop", "remove"):
        assert k in kinds, (k, kinds)
    show = d.wisp("show", "nosuch")
    assert show.returncode == 4 and "no VM named 'nosuch'" in show.stderr
    d.stop()


def case_restart_policy(d):
    d.start()
    for name, policy in (("no", "no"), ("fail", "on-failure"), ("always", "always")):
        d.define(name, policy, check=0)
        d.wisp("start", name, check=0)
    pids = {n: v["pid"] for n, v in d.vms().items()}
    for n in pids:
        os.kill(pids[n], signal.SIGKILL)  # a crash: not asked for through wispd
    for n in ("fail", "always"):
        wait_for(n + " restarted", lambda: d.vms()[n]["state"] == "running"
                 and d.vms()[n]["pid"] != pids[n])
        assert d.vms()[n]["restarts"] == 1
    wait_for("no stopped", lambda: d.vms()["no"]["state"] == "stopped")
    assert d.vms()["no"]["restarts"] == 0 and "signal 9" in d.vms()["no"]["last_exit"]
    # A stop asked for is not a failure: nothing restarts.
    d.wisp("stop", "always", check=0)
    time.sleep(0.5)
    assert d.vms()["always"]["state"] == "stopped"
    events = d.wisp("events", check=0).stdout
    assert "crash" in events and "restart" in events, events
    d.wisp("kill", "fail", check=0)
    d.stop()


def case_reattach(d):
    d.start()
    for i in range(3):
        d.define(f"vm{i}", check=0)
        d.wisp("start", f"vm{i}", check=0)
    d.wisp("pause", "vm2", check=0)
    before = {n: (v["pid"], starttime(v["pid"])) for n, v in d.vms().items()}
    for how in ("kill9", "sigterm"):
        d.kill9() if how == "kill9" else d.stop()
        for n, (pid, st) in before.items():
            assert alive(pid) and starttime(pid) == st, (how, n)
        d.start()
        vms = d.vms()
        for n, (pid, st) in before.items():
            assert vms[n]["pid"] == pid and starttime(pid) == st, (how, n, vms[n])
        assert vms["vm2"]["state"] == "paused" and vms["vm0"]["state"] == "running"
    # The reattached VMs are driven as before, and their end is seen through the pidfd.
    d.wisp("resume", "vm2", check=0)
    d.wisp("stop", "vm0", check=0)
    assert not alive(before["vm0"][0])
    vmm1 = vmm_of(before["vm1"][0])
    os.kill(before["vm1"][0], signal.SIGKILL)  # its VMM (a jailer under --jailer: its VMM too)
    wait_for("vm1 seen ended", lambda: d.vms()["vm1"]["state"] == "stopped")
    wait_for("vm1's VMM ended", lambda: not alive(vmm1), 5)
    # A recorded pid that now belongs to another process is not taken for the VM.
    d.stop()
    d.wisp  # noqa
    import sqlite3
    db = sqlite3.connect(os.path.join(d.state, "wispd.db"))
    other = subprocess.Popen(["sleep", "30"])
    db.execute("UPDATE vms SET pid = ?, state = 'running' WHERE name = 'vm1'", (other.pid,))
    db.commit()
    db.close()
    d.start()
    assert d.vms()["vm1"]["state"] == "stopped" and alive(other.pid)
    other.kill()
    d.wisp("kill", "vm2", check=0)
    d.stop()


def case_crash(d):
    """kill -9 of wispd at >= 20 random moments during define, start, stop and rm; after each,
    a new wispd must show every acknowledged definition, no VM half-started, and exactly the
    wisp-vmm processes its registry names."""
    rng = random.Random(int(os.environ.get("WISPD_CRASH_SEED", "11")))
    acknowledged = set()
    removed = set()
    d.start()
    for i in range(24):
        name = f"c{i}"
        vms = d.vms()
        op = rng.choice(["define", "act", "act", "rm"]) if vms else "define"
        if op == "act":  # start a stopped VM, stop a running one
            target = rng.choice(list(vms))
            op = "start" if vms[target]["state"] == "stopped" else "stop"
        if op == "define":
            args = ["define", "-"]
            stdin = json.dumps({"name": name, "memory_mib": 16, "kernel": A.guest})
        else:
            target = target if op in ("start", "stop") else rng.choice(list(vms))
            args = {"start": ["start"], "stop": ["stop"], "rm": ["rm", "-f"]}[op] + [target]
            stdin = None
        p = subprocess.Popen([A.wisp, "--socket", d.sock] + args, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if stdin:
            p.stdin.write(stdin)
        p.stdin.close()
        time.sleep(rng.uniform(0, 0.06))
        d.kill9()
        rc = p.wait(30)
        if op == "define" and rc == 0:
            acknowledged.add(name)
        if op == "rm" and rc == 0:
            removed.add(args[-1])
        elif op == "rm":  # killed before its answer: the rm may have been committed, or not
            acknowledged.discard(args[-1])
        d.start()
        wait_for("no VM half-way", lambda: all(v["state"] in ("stopped", "running", "paused")
                                               for v in d.vms().values()), 15)
        vms = d.vms()
        missing = (acknowledged - removed) - set(vms)
        assert not missing, f"round {i} ({op}): acknowledged definitions lost: {missing}"
        assert not (removed & set(vms)), f"round {i}: removed VMs back: {removed & set(vms)}"
        running = {v["pid"]: n for n, v in vms.items() if v["state"] != "stopped"}
        for pid, n in running.items():
            assert alive(pid), (i, n)
        # Children forked but not yet exec'd see their pipe end and exit: wait a moment.
        wait_for("only the registry's wisp-vmm processes",
                 lambda: set(vmm_processes(d.state)) == set(running), 5)
        print(f"round {i:2d}: {op:6s} {' '.join(args[1:] if op != 'define' else [name])}: "
              f"exit {rc}, {len(vms)} VMs, {len(running)} running", flush=True)
    for n, v in d.vms().items():
        if v["state"] != "stopped":
            d.wisp("kill", n, check=0)
    d.stop()


def case_hung(d):
    """A wisp-vmm that answers nothing (SIGSTOPped) does not stall wispd: other requests are
    answered meanwhile, the request to it fails at its deadline, and a stop ends it anyway."""
    d.start()
    d.define("h", check=0, stop_timeout_s=1)
    d.define("other", check=0)
    d.wisp("start", "h", check=0)
    pid = d.vms()["h"]["pid"]
    vmm = vmm_of(pid)
    os.kill(vmm, signal.SIGSTOP)
    p = subprocess.Popen([A.wisp, "--socket", d.sock, "pause", "h"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    d.wisp("start", "other", check=0)  # served while the pause waits for the hung VM
    assert d.vms()["other"]["state"] == "running"
    assert p.poll() is None, "the pause was answered before its deadline"
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "did not answer" in err, (p.returncode, err)
    assert d.vms()["h"]["state"] == "running"
    d.wisp("stop", "h", check=0)  # Ctrl-Alt-Del unanswered, SIGTERM pending, then SIGKILL
    assert not alive(pid) and not alive(vmm) and "signal 9" in d.vms()["h"]["last_exit"]
    d.wisp("kill", "other", check=0)
    d.stop()


def case_limits(d):
    """With a small RLIMIT_NOFILE, the start that would pass it is refused up front (exit 6,
    naming the limit), and the VMs already running are not disturbed."""
    d.start(nofile=48)
    lim = json.loads(d.wisp("limits", "--json", check=0).stdout)
    assert lim["nofile"]["soft"] == 48 and lim["nofile"]["hard"] == 48, lim
    left = lim["nofile"]["vms_left"]
    assert 0 < left < 48, lim
    started = 0
    for i in range(48):
        d.define(f"l{i}", check=0)
        r = d.wisp("start", f"l{i}")
        if r.returncode != 0:
            assert r.returncode == 6 and "RLIMIT_NOFILE" in r.stderr, (r.returncode, r.stderr)
            break
        started += 1
    assert started == left, (started, left)
    vms = d.vms()
    assert sum(v["state"] == "running" for v in vms.values()) == started
    assert json.loads(d.wisp("limits", "--json", check=0).stdout)["nofile"]["vms_left"] == 0
    for n, v in vms.items():
        if v["state"] == "running":
            d.wisp("kill", n, check=0)
    d.stop()


def case_registry(d):
    """The registry file: WAL, the schema version, the definition as JSON; a file of a newer
    schema is refused rather than opened."""
    import sqlite3
    d.start()
    d.define("r", check=0, vcpus=2)
    d.stop()
    db = sqlite3.connect(os.path.join(d.state, "wispd.db"))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    name, definition, state = db.execute("SELECT name, definition, state FROM vms").fetchone()
    assert name == "r" and json.loads(definition)["vcpus"] == 2 and state == "stopped"
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    r = subprocess.run([A.wispd, "--socket", d.sock, "--state-dir", d.state, "--vmm", A.vmm],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "newer than this wispd's" in r.stderr, r.stderr


def case_usage(d):
    def run(*args, env=None):
        return subprocess.run(list(args), capture_output=True, text=True, timeout=10,
                              env=env)
    assert run(A.wisp).returncode == 2
    assert run(A.wisp, "bogus").returncode == 2
    assert run(A.wisp, "start").returncode == 2
    assert run(A.wisp, "rm", "-x", "a").returncode == 2
    assert run(A.wisp, "--nope").returncode == 2
    assert run(A.wisp, "create", "x", "--mem", "lots", "--kernel", "/k").returncode == 2
    assert run(A.wisp, "create", "x").returncode == 2  # no --kernel
    assert run(A.wisp, "create", "x", "--kernel", "/k", "--drive", "file=/d").returncode == 2
    assert run(A.wisp, "create", "x", "--kernel", "/k", "--bogus").returncode == 2
    h = run(A.wisp, "--help")
    assert h.returncode == 0 and "Exit status" in h.stdout and "events" in h.stdout
    assert run(A.wispd, "--bogus").returncode == 2
    assert run(A.wispd, "--help").returncode == 0
    r = run(A.wisp, "--socket", os.path.join(d.tmp, "none.sock"), "ls")
    assert r.returncode == 3 and "is wispd running" in r.stderr, r.stderr
    env = dict(os.environ, WISP_SOCKET=os.path.join(d.tmp, "none.sock"))
    assert run(A.wisp, "ls", env=env).returncode == 3
    d.start()
    assert d.wisp("define", "/nonexistent.json").returncode == 2
    assert oct(os.stat(d.sock).st_mode & 0o777) in ("0o600", "0o660")
    d.stop()


def main_with(cases, daemon_class):
    """Runs --case from `cases` (a module's globals) with a daemon_class daemon."""
    global A
    ap = argparse.ArgumentParser()
    for o in ("--wispd", "--wisp", "--vmm", "--guest", "--case"):
        ap.add_argument(o, required=True)
    A = ap.parse_args()
    A.vmm = os.environ.get("WISPD_TEST_VMM", A.vmm)
    for k in ("wispd", "wisp", "vmm", "guest"):  # meson gives build-relative paths
        setattr(A, k, os.path.abspath(getattr(A, k)))
    with tempfile.TemporaryDirectory(prefix="wispd-test-") as tmp:
        d = daemon_class(tmp)
        try:
            cases["case_" + A.case.replace("-", "_")](d)
        except BaseException:
            print_log_tail(tmp)
            raise
        finally:
            if d.proc and d.proc.poll() is None:
                d.proc.kill()
            for pid in vmm_processes(d.state):  # a jailed VM's VMM first: it outlives its jailer
                for p in {vmm_of(pid), pid}:
                    os.kill(p, signal.SIGKILL)
            for pid in console_writers(d.state):
                os.kill(pid, signal.SIGKILL)
            remove_cgroups(d.state)
    print("ok")


def main():
    main_with(globals(), Daemon)


if __name__ == "__main__":
    main()
