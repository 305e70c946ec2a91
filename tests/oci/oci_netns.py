"""oci_test.py's case 'netns': wisp-oci create/start with no engine, in a network namespace
and veth the test makes (198.51.100.0/24, a documentation subnet), jailed as wisp-oci jails by
default. One Linux boot checks: the guest has the veth's MAC, address and route (the tc-redirect
path, docs/oci.md "Network"); traffic both ways (ping and a TCP connection from the guest to
the peer, a TCP connection from the peer to the guest); the VMM's /proc/PID/status and
namespaces show the jail (docs/security.md "wisp-oci's jail"); the container creates and chowns
files in its rootfs; after delete no tap, tc filter, cgroup, socket, jail, mount or state
directory of the container is left."""
import json
import os
import shutil
import subprocess
import time

from apilib import Failure, check
from oci_engines import proc_alive

BOOT_S = 900  # a Linux boot here: 15-50 s idle, minutes under a loaded CI run
HOST_IP, GUEST_IP = "198.51.100.1", "198.51.100.2"
OUT_PORT, IN_PORT = 7101, 7102
APPLETS = ["sh", "ip", "ping", "nc", "touch", "chown", "mkdir", "stat", "cat", "echo", "sleep",
           "grep", "ls"]
# The documented set (docs/security.md): CAP_CHOWN 0, CAP_DAC_OVERRIDE 1, CAP_FOWNER 3,
# CAP_FSETID 4 for a writable share.
JAIL_CAPS = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4)

GUEST_SCRIPT = f"""
ip -o link show eth0 | grep -q "link/ether $WANT_MAC" && echo MAC-OK
ip -o -4 addr show eth0 | grep -q "inet {GUEST_IP}/24" && echo ADDR-OK
ip -4 route | grep -q "default via {HOST_IP}" && echo ROUTE-OK
ping -c 2 -W 10 {HOST_IP} >/dev/null && echo PING-OK
echo guest-to-host | nc -w 300 {HOST_IP} {OUT_PORT} && echo TCP-OUT-DONE
touch /made-in-guest && chown 1234:4321 /made-in-guest && mkdir /dir-in-guest &&
  chown 55:66 /dir-in-guest && echo CHOWN-OK
echo LISTENING
nc -l -p {IN_PORT} > /from-host
echo "GOT:$(cat /from-host)"
exit 7
"""

# Runs in the peer namespace: accepts the guest's connection, then connects to the guest's
# listener (retrying until it listens), and prints what it got as JSON.
PEER = f"""
import json, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{HOST_IP}", {OUT_PORT})); s.listen(1); s.settimeout({BOOT_S})
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(60); got = b""
while not got.endswith(b"\\n"):
    d = c.recv(100)
    if not d: break
    got += d
c.close()
sent = False
end = time.monotonic() + 300
while time.monotonic() < end and not sent:
    try:
        o = socket.create_connection(("{GUEST_IP}", {IN_PORT}), timeout=5)
        o.sendall(b"host-to-guest\\n"); o.close(); sent = True
    except OSError:
        time.sleep(0.5)
print(json.dumps({{"got": got.decode(), "sent": sent}}), flush=True)
"""


def sh(*cmd, check_rc=True):
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if check_rc and r.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def status_fields(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def find_vmm(monitor):
    """The wisp-vmm process under the monitor (its child; a jailer's under oci.json's "jailer")."""
    todo = [monitor]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == "wisp-vmm":
                    return p
        except FileNotFoundError:
            continue
        todo += children(p)
    return None


def make_rootfs(path):
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy("/bin/busybox", os.path.join(path, "bin", "busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(path, "bin", a))
    for d in ["proc", "sys", "dev", "tmp"]:
        os.makedirs(os.path.join(path, d))


def wait_text(path, what, timeout, proc=None):
    end = time.monotonic() + timeout
    text = ""
    while time.monotonic() < end:
        with open(path) as f:
            text = f.read()
        if what in text:
            return text
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    raise Failure(f"{what!r} did not appear in the container's output: {text!r}")


def check_jail(vmm, netns, jail_root):
    """The VMM's /proc as docs/security.md says a jailed wisp-oci VMM looks."""
    st = status_fields(vmm)
    check(st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", f"wisp-vmm {vmm}: Seccomp "
          f"{st['Seccomp']}, NoNewPrivs {st['NoNewPrivs']}")
    uid = st["Uid"].split()
    check(uid[0] != "0" and len(set(uid)) == 1, f"wisp-vmm {vmm}: Uid {st['Uid']}")
    for k in ["CapEff", "CapPrm", "CapBnd"]:
        check(int(st[k], 16) == JAIL_CAPS, f"wisp-vmm {vmm}: {k} {st[k]}, documented "
              f"{JAIL_CAPS:016x}")
    check(int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0,
          f"wisp-vmm {vmm}: CapInh {st['CapInh']} CapAmb {st['CapAmb']}")
    for task in os.listdir(f"/proc/{vmm}/task"):  # every thread, the 9p server's among them
        t = status_fields(f"{vmm}/task/{task}")
        check(int(t["CapEff"], 16) == JAIL_CAPS and t["Seccomp"] == "2",
              f"wisp-vmm thread {task}: CapEff {t['CapEff']} Seccomp {t['Seccomp']}")
    r, j = os.stat(f"/proc/{vmm}/root"), os.stat(jail_root)
    check((r.st_dev, r.st_ino) == (j.st_dev, j.st_ino),
          f"wisp-vmm {vmm}: /proc/PID/root is not the jail's root {jail_root}")
    inside = sorted(os.listdir(f"/proc/{vmm}/root"))
    check(os.path.exists(f"/proc/{vmm}/root/rootfs/bin/busybox") and
          set(inside) <= {"wisp-vmm", "vmlinux", "initrd", "rootfs", "dev", "proc", "api.sock",
                          "vsock.sock", "console.log"},
          f"wisp-vmm {vmm}: its root holds {inside}, not the jail's files")
    # its /proc: the pids of its own pid namespace (itself, pid 1) and nothing else (no sys)
    proc = sorted(os.listdir(f"/proc/{vmm}/root/proc"))
    check([p for p in proc if p.isdigit()] == ["1"] and "sys" not in proc,
          f"wisp-vmm {vmm}: its /proc shows {proc}")
    for ns in ["mnt", "pid", "ipc", "uts"]:
        check(os.readlink(f"/proc/{vmm}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"),
              f"wisp-vmm {vmm}: its {ns} namespace is the host's")
    want = os.stat(f"/run/netns/{netns}").st_ino
    check(os.stat(f"/proc/{vmm}/ns/net").st_ino == want,
          f"wisp-vmm {vmm}: not in the container's network namespace")


def case_netns(args, tmp):
    tag = f"wo{os.getpid() % 100000}"
    ns_c, ns_p = f"{tag}-c", f"{tag}-p"
    root = os.path.join(tmp, "state")
    bundle = os.path.join(tmp, "bundle")
    cgroup = f"/wisp-oci-test-{tag}"
    cid = f"net-{tag}"
    out_path = os.path.join(tmp, "out.txt")
    peer = monitor = None
    made_ns = []
    try:
        for ns in [ns_c, ns_p]:
            sh("ip", "netns", "add", ns)
            made_ns.append(ns)
        sh("ip", "link", "add", f"{tag}a", "netns", ns_c, "type", "veth", "peer", "name",
           f"{tag}b", "netns", ns_p)
        sh("ip", "-n", ns_c, "link", "set", f"{tag}a", "name", "eth0")
        sh("ip", "-n", ns_c, "addr", "add", f"{GUEST_IP}/24", "dev", "eth0")
        sh("ip", "-n", ns_p, "addr", "add", f"{HOST_IP}/24", "dev", f"{tag}b")
        for ns, dev in [(ns_c, "eth0"), (ns_c, "lo"), (ns_p, f"{tag}b"), (ns_p, "lo")]:
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns_c, "route", "add", "default", "via", HOST_IP)
        mac = json.loads(sh("ip", "-n", ns_c, "-j", "link", "show", "eth0").stdout)[0]["address"]

        make_rootfs(os.path.join(bundle, "rootfs"))
        cfg = {"ociVersion": "1.0.2",
               "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", GUEST_SCRIPT],
                           "env": ["PATH=/bin", f"WANT_MAC={mac}"], "cwd": "/"},
               "root": {"path": "rootfs"}, "hostname": "netns",
               "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
               "linux": {"cgroupsPath": cgroup,
                         "namespaces": [{"type": "pid"}, {"type": "mount"},
                                        {"type": "network", "path": f"/run/netns/{ns_c}"}]}}
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(cfg, f)

        peer = subprocess.Popen(["ip", "netns", "exec", ns_p, "python3", "-c", PEER],
                                stdout=subprocess.PIPE, text=True)
        check(peer.stdout.readline().strip() == "listening", "the peer's listener did not start")
        oci = [args.oci, "--root", root]
        pid_file = os.path.join(tmp, "pid")
        # the monitor keeps create's stdout and stderr as the container's: files, not pipes
        err_path = os.path.join(tmp, "err.txt")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            r = subprocess.run(oci + ["create", "--bundle", bundle, "--pid-file", pid_file, cid],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=BOOT_S)
        with open(err_path) as f:
            check(r.returncode == 0, f"wisp-oci create: {r.returncode} {f.read().strip()}")
        with open(pid_file) as f:
            monitor = int(f.read())
        with open(os.path.join(root, cid, "state.json")) as f:
            wisp = json.load(f)["wisp"]
        vmm = find_vmm(monitor)
        check(vmm is not None, f"no wisp-vmm under the monitor {monitor}")
        if not args.no_jail:
            check("jail_root" in wisp, f"state.json has no jail: {wisp}")
            check_jail(vmm, ns_c, os.path.join(root, cid, wisp["jail_root"]))
            # jailed in-process: the monitor is the VMM's parent, no jailer waits between them;
            # under oci.json's "jailer", that program is
            with open(f"/proc/{vmm}/status") as f:
                ppid = int([l for l in f if l.startswith("PPid:")][0].split()[1])
            with open(f"/proc/{ppid}/comm") as f:
                parent = f.read().strip()
            if args.jailer:
                check(parent == "wisp-jailer", f"wisp-vmm {vmm}'s parent is {parent}, not the "
                      f"jailer of oci.json")
            else:
                check(ppid == monitor, f"wisp-vmm {vmm}'s parent is {ppid} ({parent}), not the "
                      f"monitor {monitor}")
        r = subprocess.run(oci + ["start", cid], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"wisp-oci start: {r.stderr.strip()}")
        text = wait_text(out_path, "LISTENING", BOOT_S)
        for word in ["MAC-OK", "ADDR-OK", "ROUTE-OK", "PING-OK", "TCP-OUT-DONE", "CHOWN-OK"]:
            check(word in text, f"the guest did not print {word}: {text!r}")
        line = peer.stdout.readline()
        peer.wait(60)
        got = json.loads(line)
        check(got == {"got": "guest-to-host\n", "sent": True}, f"the peer: {got}")
        text = wait_text(out_path, "GOT:host-to-guest", 120)
        end = time.monotonic() + 60
        while proc_alive(monitor) and time.monotonic() < end:
            time.sleep(0.2)
        st = json.loads(subprocess.run(oci + ["state", cid], capture_output=True,
                                       text=True).stdout)
        check(st["status"] == "stopped", f"state after the exit: {st}")
        # the guest's files, on the host: made and chowned through the jailed 9p server
        rootfs = os.path.join(bundle, "rootfs")
        for name, ids in [("made-in-guest", (1234, 4321)), ("dir-in-guest", (55, 66))]:
            s = os.lstat(os.path.join(rootfs, name))
            check((s.st_uid, s.st_gid) == ids, f"{name}: owned by {s.st_uid}:{s.st_gid}, "
                  f"the guest chowned it to {ids[0]}:{ids[1]}")
        r = subprocess.run(oci + ["delete", cid], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"wisp-oci delete: {r.stderr.strip()}")
        # nothing of the container left
        for pid, what in [(monitor, "monitor"), (vmm, "wisp-vmm")]:
            check(not proc_alive(pid), f"the {what} (pid {pid}) is still there")
        links = json.loads(sh("ip", "-n", ns_c, "-j", "link", "show").stdout)
        check([l["ifname"] for l in links] == ["lo", "eth0"], f"links left in the netns: "
              f"{[l['ifname'] for l in links]}")
        q = sh("tc", "-n", ns_c, "qdisc", "show", "dev", "eth0").stdout
        check("ingress" not in q, f"the ingress qdisc (and its filter) is left on eth0: {q}")
        f = sh("tc", "-n", ns_c, "filter", "show", "dev", "eth0", "ingress",
               check_rc=False).stdout
        check(f.strip() == "", f"a tc filter is left on eth0: {f}")
        for ctrl in ["memory", "cpu,cpuacct", "pids", "cpuset"]:
            check(not os.path.exists(f"/sys/fs/cgroup/{ctrl}{cgroup}"),
                  f"cgroup {ctrl}{cgroup} is left")
        check(not os.path.exists(os.path.join(root, cid)), "the state directory is left")
        with open("/proc/self/mountinfo") as f:
            mounts = [l for l in f if root in l or bundle in l]
        check(mounts == [], f"mounts of the jail are left: {mounts}")
        r = sh("ip", "netns", "list")
        check(not any(l.split()[0] not in (ns_c, ns_p) and tag in l
                      for l in r.stdout.splitlines()), f"netns left: {r.stdout}")
        # the guest's connection's data went one way, the peer's the other
        check("GOT:host-to-guest" in text, f"the guest did not get the peer's data: {text!r}")
    finally:
        if monitor and proc_alive(monitor):
            os.kill(monitor, 9)
        subprocess.run([args.oci, "--root", root, "delete", "--force", cid], capture_output=True)
        if peer and peer.poll() is None:
            peer.kill()
            peer.wait()
        for ns in made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for ctrl in ["memory", "cpu,cpuacct", "pids", "cpuset"]:
            try:
                os.rmdir(f"/sys/fs/cgroup/{ctrl}{cgroup}")
            except OSError:
                pass


CASES = {"netns": case_netns}
