"""oci_test.py's cases with real engines: a private containerd (its own root, state and
socket in the test's directory) driven by ctr, and podman with a temporary --root/--runroot,
each running wisp-oci through the same paths the engines use for runc (containerd's runc v2
shim: go-runc; podman: conmon). The busybox image is built locally (mkimage.py)."""
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time

from apilib import Failure, check

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE = "localhost/wisp-busybox:latest"
BOOT_S = 900  # a Linux boot here: 15-50 s idle, minutes under a loaded CI run


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


class Output:
    """Collects a process's stdout on a thread; wait_for(text) polls it."""

    def __init__(self, proc):
        self.proc, self.text, self.lock = proc, "", threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, ""):
            with self.lock:
                self.text += line

    def wait_for(self, what, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if what in self.text:
                    return
            if self.proc.poll() is not None:
                self.thread.join(2)
                break
            time.sleep(0.1)
        with self.lock:
            raise Failure(f"{what!r} did not appear (status {self.proc.poll()}): {self.text!r}")


def make_image(tmp):
    path = os.path.join(tmp, "busybox-oci.tar")
    subprocess.run(["python3", os.path.join(HERE, "mkimage.py"), path, "--name", IMAGE],
                   check=True)
    return path


def proc_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def parent_comm(pid):
    with open(f"/proc/{pid}/status") as f:
        ppid = int([l for l in f if l.startswith("PPid:")][0].split()[1])
    with open(f"/proc/{ppid}/comm") as f:
        return f.read().strip()


def check_gone(what, state, cgroup_base):
    """After delete: no monitor, no VMM, no cgroup, no state directory."""
    wisp = state["wisp"]
    for name, pid in [("monitor", state["pid"]), ("wisp-vmm", wisp.get("vmm_pid"))]:
        end = time.monotonic() + 10
        while pid and proc_alive(pid) and time.monotonic() < end:
            time.sleep(0.1)
        check(not pid or not proc_alive(pid), f"{what}: the {name} (pid {pid}) is still there")
    cg = wisp.get("cgroups_path")
    if cg:
        check(not os.path.exists(f"/sys/fs/cgroup/memory{cg}"), f"{what}: cgroup {cg} is left")
    check(not os.path.exists(cgroup_base), f"{what}: the state directory {cgroup_base} is left")


class Containerd:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "containerd")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "c.sock")
        cfg = os.path.join(self.dir, "config.toml")
        with open(cfg, "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.opt"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = "{self.dir}/debug.sock"
""")
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if os.path.exists(self.sock) and self.ctr("version").returncode == 0:
                return
            time.sleep(0.2)
        raise Failure("containerd did not start: " + open(self.log.name).read()[-2000:])

    def ctr(self, *args, timeout=120):
        return run(["ctr", "-a", self.sock] + list(args), timeout=timeout)

    def close(self):
        # every shim of this containerd (they outlive it otherwise) and the daemon itself
        for t in self.ctr("task", "ls", "-q").stdout.split():
            self.ctr("task", "kill", "-s", "KILL", t)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # this containerd's shims (their command line names its socket), then its mounts
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except (OSError, ValueError):
                continue
            if b"-address" in argv and self.sock.encode() in argv:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with open("/proc/self/mountinfo") as f:
            mounts = [l.split()[4] for l in f if l.split()[4].startswith(self.dir + "/")]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        self.log.close()


def pty_run(argv, rows=33, cols=101, timeout=None):
    """argv under a pty of our own of rows x cols: (everything it wrote, its exit status)."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execvp(argv[0], argv)
    text, end = b"", time.monotonic() + (timeout or BOOT_S)
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        text += data
    if time.monotonic() >= end:
        os.kill(pid, signal.SIGKILL)
    _, wstatus = os.waitpid(pid, 0)
    os.close(fd)
    return text, os.waitstatus_to_exitcode(wstatus)


def case_containerd(args, tmp):
    image = make_image(tmp)
    runc_root = os.path.join(tmp, "wisp-oci")  # the shim adds the namespace: <root>/default
    root = os.path.join(runc_root, "default")
    cd = Containerd(tmp)
    runner = None
    try:
        r = cd.ctr("image", "import", image)
        check(r.returncode == 0, f"ctr image import: {r.stderr}")
        common = ["--runtime", "io.containerd.runc.v2", "--runc-binary", args.oci,
                  "--runc-root", runc_root, "--fifo-dir", os.path.join(tmp, "fifo")]
        script = ('echo hello-from-wisp; trap "echo got-term; exit 42" TERM; '
                  'while :; do sleep 0.2; done')
        runner = subprocess.Popen(["ctr", "-a", cd.sock, "run", "--rm"] + common +
                                  [IMAGE, "c1", "sh", "-c", script],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = Output(runner)
        out.wait_for("hello-from-wisp", BOOT_S)
        st = json.loads(run([args.oci, "--root", root, "state", "c1"]).stdout)
        check(st["status"] == "running" and st["id"] == "c1", f"state: {st}")
        with open(os.path.join(root, "c1", "state.json")) as f:
            st["wisp"] = json.load(f)["wisp"]  # the VMM's pid, the cgroups path
        check(parent_comm(st["pid"]).startswith("containerd-shim"),
              f"the monitor's parent is {parent_comm(st['pid'])}, not the shim")
        # runc's wrong-state errors on a real container
        r = run([args.oci, "--root", root, "start", "c1"])
        check(r.returncode == 1 and "cannot start an already running container" in r.stderr,
              f"start twice: {r.returncode} {r.stderr}")
        r = run([args.oci, "--root", root, "delete", "c1"])
        check(r.returncode == 1 and "that is not stopped: running" in r.stderr,
              f"delete running: {r.returncode} {r.stderr}")
        # a second process, its output and status
        r = cd.ctr("task", "exec", "--exec-id", "e1", "c1", "sh", "-c",
                   "echo from-exec $(hostname); exit 5")
        check(r.returncode == 5 and "from-exec" in r.stdout,
              f"ctr task exec: status {r.returncode}, {r.stdout!r} {r.stderr!r}")
        r = cd.ctr("task", "ps", "c1")
        check(r.returncode == 0 and str(st["pid"]) in r.stdout, f"ctr task ps: {r.stdout!r}")
        # pause stops the VM (wisp-vmm's PATCH /vm Paused), resume lets it go on
        r = cd.ctr("task", "pause", "c1")
        check(r.returncode == 0, f"ctr task pause: {r.stderr}")
        st2 = json.loads(run([args.oci, "--root", root, "state", "c1"]).stdout)
        r = cd.ctr("task", "ls")
        check(st2["status"] == "paused" and "PAUSED" in r.stdout,
              f"after pause: state {st2['status']}, ctr task ls {r.stdout!r}")
        r = run([args.oci, "--root", root, "pause", "c1"])
        check(r.returncode == 1 and "container not running" in r.stderr,
              f"pause twice: {r.returncode} {r.stderr}")
        r = cd.ctr("task", "resume", "c1")
        check(r.returncode == 0, f"ctr task resume: {r.stderr}")
        st2 = json.loads(run([args.oci, "--root", root, "state", "c1"]).stdout)
        check(st2["status"] == "running", f"after resume: {st2['status']}")
        r = cd.ctr("task", "exec", "--exec-id", "e2", "c1", "echo", "after-resume")
        check(r.returncode == 0 and "after-resume" in r.stdout,
              f"exec after resume: status {r.returncode}, {r.stdout!r} {r.stderr!r}")
        # update --resources (ctr 1.6 has no task update: runc's command line, as the shim's
        # Update calls it) bounds the running VM's cgroups: the limit plus the VMM's 64 MiB
        cg = st["wisp"].get("cgroups_path")
        res = os.path.join(tmp, "resources.json")
        with open(res, "w") as f:
            json.dump({"memory": {"limit": 256 << 20}, "cpu": {"quota": 50000,
                                                               "period": 100000}}, f)
        r = run([args.oci, "--root", root, "update", "--resources", res, "c1"])
        check(r.returncode == 0, f"update --resources: {r.returncode} {r.stderr}")
        if cg:
            with open(f"/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes") as f:
                mem = int(f.read())
            cpu = "cpu,cpuacct" if os.path.isdir("/sys/fs/cgroup/cpu,cpuacct") else "cpu"
            with open(f"/sys/fs/cgroup/{cpu}{cg}/cpu.cfs_quota_us") as f:
                quota = int(f.read())
            check(mem == (256 + 64) << 20 and quota == 50000,
                  f"after update: memory.limit_in_bytes {mem}, cpu.cfs_quota_us {quota}")
        # SIGTERM reaches the container's trap; ctr reports the status it chose
        r = cd.ctr("task", "kill", "c1")
        check(r.returncode == 0, f"ctr task kill: {r.stderr}")
        status = runner.wait(60)
        out.thread.join(5)
        check("got-term" in out.text, f"SIGTERM did not reach the trap: {out.text!r}")
        check(status == 42, f"ctr run's status {status}, expected 42 ({out.text!r})")
        check_gone("c1", st, os.path.join(root, "c1"))
        r = run([args.oci, "--root", root, "state", "c1"])
        check(r.returncode == 1 and "container does not exist" in r.stderr, "c1 still known")

        # a terminal: ctr run -t under a pty of our own, with its size
        text, code = pty_run(["ctr", "-a", cd.sock, "run", "--rm", "-t"] + common +
                             [IMAGE, "c2", "sh", "-c", "tty; stty size; exit 3"])
        check(b"/dev/pts/" in text and b"33 101" in text, f"ctr run -t: {text!r}")
        check(code == 3, f"ctr run -t: status {code}, expected 3")
        check(not os.path.exists(os.path.join(root, "c2")), "c2's state directory is left")
    finally:
        if runner and runner.poll() is None:
            runner.kill()
            runner.wait()
        cd.close()


# podman's default network ("podman", what `podman run` uses without --network): a CNI bridge as
# Debian's 87-podman-bridge.conflist makes it, in a private --network-config-dir, on a test
# subnet (203.0.113.0/24) and without its masquerade and firewall plugins: the test touches
# neither the machine's uplink nor its firewall. The bridge plugin's isGateway turns on
# ip_forward, which the test puts back as it was.
PODMAN_GW, PODMAN_PORT = "203.0.113.1", 7103


def podman_network(tmp):
    d = os.path.join(tmp, "cni")
    os.makedirs(d)
    bridge = f"wisp-pbr{os.getpid() % 10000}"
    conf = {"cniVersion": "0.4.0", "name": "podman", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": os.path.join(tmp, "cni-ipam"),
                  "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": "203.0.113.0/24", "gateway": PODMAN_GW}]]}}]}
    with open(os.path.join(d, "87-podman-bridge.conflist"), "w") as f:
        json.dump(conf, f)
    return d, bridge


class GatewayListener:
    """A TCP listener on the bridge's gateway address (the host's side of podman's network):
    what the container sends over one connection."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((PODMAN_GW, PODMAN_PORT))
        self.sock.listen(1)
        self.sock.settimeout(BOOT_S)  # the guest connects once told to
        self.got = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            c, _ = self.sock.accept()
            c.settimeout(60)
            data = b""
            while not data.endswith(b"\n"):
                d = c.recv(100)
                if not d:
                    break
                data += d
            c.close()
            self.got = data.decode()
        except OSError:
            pass

    def close(self):
        self.sock.close()


class Podman:
    def __init__(self, tmp, oci, net_dir=None):
        self.oci_root = os.path.join(tmp, "wisp-oci")
        self.base = ["podman", "--root", os.path.join(tmp, "proot"),
                     "--runroot", os.path.join(tmp, "prun"), "--tmpdir", os.path.join(tmp, "ptmp"),
                     "--runtime", oci, "--runtime-flag", f"root={self.oci_root}",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--storage-driver", "vfs"] + (
                         ["--network-config-dir", net_dir] if net_dir else [])

    def __call__(self, *args, timeout=120):
        return run(self.base + list(args), timeout=timeout)


def case_podman(args, tmp):
    image = make_image(tmp)
    net_dir, bridge = podman_network(tmp)
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        ip_forward = f.read().strip()
    pm = Podman(tmp, args.oci, net_dir)
    runner = listener = None
    netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    try:
        r = pm("load", "-i", image)
        check(r.returncode == 0, f"podman load: {r.stderr}")
        # the bridge exists once the network is first used: podman makes it at the container's
        # start, so the listener binds the gateway address after an address is there
        script = ('GW=$(ip -4 route | awk \'/^default/ {print $3}\'); echo "gateway $GW"; '
                  'ping -c 2 -W 10 "$GW" >/dev/null && echo ping-ok; '
                  'while [ ! -e /tmp/go ] && [ "$n" != 600 ]; do n=$((n+1)); sleep 0.2; done; '
                  f'echo from-podman | nc -w 300 "$GW" {PODMAN_PORT} && echo tcp-done; '
                  'echo hello-podman; trap "echo got-usr1" USR1; '
                  'trap "echo got-term; exit 43" TERM; while :; do sleep 0.2; done')
        runner = subprocess.Popen(pm.base + ["run", "--rm", "--name", "p1",
                                             IMAGE, "sh", "-c", script],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = Output(runner)
        out.wait_for("ping-ok", BOOT_S)
        check(f"gateway {PODMAN_GW}" in out.text, f"the guest's default route: {out.text!r}")
        listener = GatewayListener()
        r = pm("exec", "p1", "touch", "/tmp/go")
        check(r.returncode == 0, f"podman exec touch: {r.stderr}")
        out.wait_for("hello-podman", 120)
        listener.thread.join(60)
        check(listener.got == "from-podman\n" and "tcp-done" in out.text,
              f"the gateway's listener got {listener.got!r}; the container: {out.text!r}")
        cid = pm("inspect", "--format", "{{.Id}}", "p1").stdout.strip()
        st = json.loads(run([args.oci, "--root", pm.oci_root, "state", cid]).stdout)
        check(st["status"] == "running", f"state: {st}")
        with open(os.path.join(pm.oci_root, cid, "state.json")) as f:
            st["wisp"] = json.load(f)["wisp"]
        check(parent_comm(st["pid"]) == "conmon", f"the monitor's parent: {parent_comm(st['pid'])}")
        print(f"p1: restored from a template: {st['wisp'].get('restored')}")
        r = pm("exec", "p1", "sh", "-c", "echo from-exec; exit 6")
        check(r.returncode == 6 and "from-exec" in r.stdout,
              f"podman exec: {r.returncode} {r.stdout!r} {r.stderr!r}")
        r = pm("kill", "--signal", "USR1", "p1")
        check(r.returncode == 0, f"podman kill: {r.stderr}")
        out.wait_for("got-usr1", 60)
        r = pm("stop", "-t", "60", "p1")
        check(r.returncode == 0, f"podman stop: {r.stderr}")
        status = runner.wait(60)
        out.thread.join(5)
        check("got-term" in out.text and status == 43,
              f"podman run after stop: status {status}, {out.text!r}")
        check_gone("p1", st, os.path.join(pm.oci_root, cid))
        r = pm("ps", "-a", "-q")
        check(r.stdout.strip() == "", f"podman ps -a after --rm: {r.stdout!r}")
        # the engine's namespace (podman's netns-UUID) went with the container, and with it
        # wisp-oci's tap and tc filters
        left = {n for n in (set(os.listdir("/run/netns")) if os.path.isdir("/run/netns")
                            else set()) - netns_before if n.startswith("netns-")}
        check(not left, f"podman's network namespaces left: {left}")
        # podman run -it: the container's terminal is the pty wisp-oci's console socket gave
        text, code = pty_run(pm.base + ["run", "--rm", "-it", "--network", "none", IMAGE, "sh",
                                        "-c", "tty; stty size; exit 4"], 41, 97)
        check(b"/dev/pts/" in text and b"41 97" in text, f"podman run -it: {text!r}")
        check(code == 4, f"podman run -it: status {code}, expected 4 ({text!r})")
    finally:
        if listener:
            listener.close()
        if runner and runner.poll() is None:
            runner.kill()
            runner.wait()
        pm("rm", "-f", "-a")
        pm("rmi", "-f", "-a")
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(ip_forward)
        # podman's cgroupfs manager leaves conmon's cgroup behind (empty once conmon ended)
        for ctrl in ["memory", "cpu,cpuacct", "pids", "cpuset"]:
            for d in ["libpod_parent/conmon", "libpod_parent"]:
                try:
                    os.rmdir(f"/sys/fs/cgroup/{ctrl}/{d}")
                except OSError:
                    pass


def wisp_info(root, cid):
    with open(os.path.join(root, cid, "state.json")) as f:
        return json.load(f)["wisp"]


def case_template(args, tmp):
    """VM templates (docs/oci.md "Templates"), in the default cache the other engine tests
    share: two containers of one template, running side by side, each with its own root; a
    damaged template is never used: of two creates started together one boots (the cold-boot
    path) and becomes the new template while the other waits for it (flock) and restores it."""
    image = make_image(tmp)
    runc_root = os.path.join(tmp, "wisp-oci")
    root = os.path.join(runc_root, "default")
    cd = Containerd(tmp)
    runners, outs = {}, {}
    common = ["--runtime", "io.containerd.runc.v2", "--runc-binary", args.oci,
              "--runc-root", runc_root, "--fifo-dir", os.path.join(tmp, "fifo")]

    def start(cid):
        script = (f"echo {cid} > /mine-{cid}; "
                  "echo rand-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')-end; "
                  f"echo {cid}-ready; "
                  "while [ ! -e /go ]; do sleep 0.2; done; echo files: /mine-*; "
                  "while :; do sleep 1; done")
        runners[cid] = subprocess.Popen(["ctr", "-a", cd.sock, "run", "--rm"] + common +
                                        [IMAGE, cid, "sh", "-c", script],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        outs[cid] = Output(runners[cid])

    def rootfs(cid):
        return json.loads(run([args.oci, "--root", root, "state", cid]).stdout)["rootfs"]

    try:
        r = cd.ctr("image", "import", image)
        check(r.returncode == 0, f"ctr image import: {r.stderr}")
        start("a")
        outs["a"].wait_for("a-ready", BOOT_S)
        start("b")
        outs["b"].wait_for("b-ready", BOOT_S)
        ia, ib = wisp_info(root, "a"), wisp_info(root, "b")
        check(ib.get("restored") is True, f"b was not restored from the template: {ib}")
        # b restored the RNG state a (or the template's first container) had at the snapshot:
        # the agent's reseed from the host makes their random bytes differ
        ra, rb = (re.search(r"rand-([0-9a-f]{32})-end", outs[c].text) for c in ("a", "b"))
        check(ra and rb and ra.group(1) != rb.group(1),
              f"/dev/urandom in a and b: {ra and ra.group(1)} {rb and rb.group(1)}")
        check(ia.get("template") == ib.get("template"), f"a and b: other templates {ia} {ib}")
        # the restored VMM is jailed as a booted one (docs/security.md "wisp-oci's jail"): the
        # template's files read-only in its root, the cache out of its reach
        from oci_netns import JAIL_CAPS, find_vmm, status_fields
        vmm = find_vmm(json.loads(run([args.oci, "--root", root, "state", "b"]).stdout)["pid"])
        st = status_fields(vmm) if vmm else {}
        check(vmm and st["Seccomp"] == "2" and st["NoNewPrivs"] == "1" and
              int(st["CapEff"], 16) == JAIL_CAPS and st["Uid"].split()[0] != "0" and
              os.readlink(f"/proc/{vmm}/ns/mnt") != os.readlink("/proc/self/ns/mnt") and
              sorted(os.listdir(f"/proc/{vmm}/root")) ==
              ["api.sock", "console.log", "dev", "proc", "rootfs", "template.mem",
               "template.state", "vsock.sock", "wisp-vmm"],
              f"b's restored wisp-vmm {vmm}: not jailed as documented: {st} "
              f"{os.listdir(f'/proc/{vmm}/root') if vmm else ''}")
        for cid in ["a", "b"]:
            mine = sorted(f for f in os.listdir(rootfs(cid)) if f.startswith("mine-"))
            check(mine == [f"mine-{cid}"], f"{cid}'s root holds {mine}")
            open(os.path.join(rootfs(cid), "go"), "w").close()
        for cid in ["a", "b"]:
            outs[cid].wait_for(f"files: /mine-{cid}\n", 300)
        state = os.path.join(ib["template"], "state")
        old = os.stat(state).st_ino
        with open(state, "r+b") as f:  # the same size: only the load's checksum can tell
            f.seek(os.path.getsize(state) // 2)
            f.write(b"\xde\xad\xbe\xef" * 4)
        for cid in ["a", "b"]:
            cd.ctr("task", "kill", "-s", "KILL", cid)
            runners[cid].wait(60)
        start("c")
        start("d")
        for cid in ["c", "d"]:
            outs[cid].wait_for(f"{cid}-ready", BOOT_S)
        got = sorted([wisp_info(root, "c").get("restored"), wisp_info(root, "d").get("restored")])
        check(got == [False, True], f"after the damage: restored {got}, expected one boot and "
              "one restore")
        check(os.stat(state).st_ino != old and
              os.path.exists(os.path.join(ib["template"], "template.json")),
              "the damaged template was not replaced")
        for cid in ["c", "d"]:
            cd.ctr("task", "kill", "-s", "KILL", cid)
            check(runners[cid].wait(60) == 137, f"{cid}: ctr run's status after SIGKILL")
        for cid in "abcd":
            check(not os.path.exists(os.path.join(root, cid)), f"{cid}'s state directory is left")
    finally:
        for p in runners.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        cd.close()


CASES = {"containerd": case_containerd, "podman": case_podman, "template": case_template}
