#!/usr/bin/env python3
"""The guest agent (guest/agent/, docs/agent-protocol.md) in the kit's Linux, driven from the
host with wisp-agentctl over virtio-vsock. One boot carries every check (a Linux boot costs
~15-170 s on the PVM-nested CI machines, and each guest process a few seconds):

  - the agent answers HELLO once Linux is up (wisp.agent=1: wisp-init runs it);
  - NETWORK: eth0 (a virtio-net NIC on a tap in a network namespace of the test's own) gets an
    address and is up (the host pings it), a route via a gateway is in the guest's table;
  - CONTAINER_CREATE on a rootfs directory of the initramfs: proc, a tmpfs /dev with runc's
    default nodes, devpts, a tmpfs, a read-only bind mount of a guest directory, a file bound
    over /etc/hosts, the hostname;
  - create/start: the container's process exists after create but runs its program only after
    start (ps shows the agent's fork, then "sleep 1000");
  - an exec'd process: stdout, stderr, exit status 3, env, cwd, uid, gid, groups, umask,
    rlimits and no_new_privs as given; the mounts and the hostname as seen from inside;
  - stdin: the host's bytes reach `cat` and its end of file ends it;
  - setup errors come back: a missing executable, a second container of the same id, start of a
    started process, an unknown container;
  - a pty: `stty size` prints the size given at create, then the size a RESIZE set;
  - ps lists the container's processes with their exec ids;
  - SIGTERM to the container's process: WAIT reports it signaled 15;
  - with virtio-9p in wisp-vmm (--fs): a container whose root is a 9p share, a process
    chrooted in it reading the host's file and writing one the host reads;
  - SHUTDOWN ends the VM: wisp-vmm exits 0.

  agent_test.py --vmm WISP_VMM --init WISP_INIT --agent WISP_AGENT --agentctl WISP_AGENTCTL
Needs root (a network namespace, a tap). Success is decided by what the host reads back.
"""
import argparse
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "virtio"))
import netns  # noqa: E402

GUEST_IP = "198.51.100.2"
TAP = "wagtap0"
BOOT_TIMEOUT = 400
APPLETS = ["sh", "cat", "stty", "sleep"]


class Failure(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failure(what)


class Agent:
    def __init__(self, ctl, uds):
        self.ctl, self.uds = ctl, uds

    def run(self, *args, stdin=None, timeout=120, ok=(0,)):
        cmd = [self.ctl, "--vsock", self.uds, "--timeout", str(timeout), *args]
        t0 = time.monotonic()
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout + 30)
        print(f"$ wisp-agentctl {' '.join(args)} -> {p.returncode} "
              f"({time.monotonic() - t0:.1f} s)\n{p.stdout}{p.stderr}", end="", flush=True)
        if ok is not None and p.returncode not in ok:
            raise Failure(f"wisp-agentctl {' '.join(args)}: status {p.returncode}: "
                          f"{p.stderr.strip()}")
        return p


def rootfs(tmp, name):
    d = os.path.join(tmp, name)
    for sub in ("bin", "proc", "dev", "etc", "mnt"):
        os.makedirs(os.path.join(d, sub))
    shutil.copy("/bin/busybox", os.path.join(d, "bin/busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(d, "bin", a))
    return d


def initramfs(args, tmp):
    shared = os.path.join(tmp, "shared")
    os.mkdir(shared)
    with open(os.path.join(shared, "hello.txt"), "w") as f:
        f.write("hello from a bind mount\n")
    out = os.path.join(tmp, "agent.cpio")
    p = subprocess.run([os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", out, "--init",
                        args.init, "--agent", args.agent, "--no-busybox",
                        "--add", rootfs(tmp, "rootfs") + ":/rootfs", "--add", shared + ":/shared"],
                       capture_output=True, text=True)
    if p.returncode:
        raise Failure(f"wisp-mkinitramfs: {p.stderr.strip()}")
    return out


def has_9p(vmm):
    return "--fs" in subprocess.run([vmm, "--help"], capture_output=True, text=True).stdout


def boot(args, tmp, share):
    kdir = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                          capture_output=True, text=True).stdout.strip()
    vmlinux = os.path.join(kdir, "vmlinux")
    expect(os.path.isfile(vmlinux), f"the guest kernel is not built ({vmlinux})")
    extra = subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")],
                           capture_output=True, text=True, check=True).stdout.strip()
    uds = os.path.join(tmp, "v.sock")
    cmd = [args.vmm, "--kernel", vmlinux, "--initrd", initramfs(args, tmp), "--mem", "256",
           "--cpus", "1", "--vsock", f"cid=3,uds={uds}", "--net", f"tap={TAP}",
           "--cmdline", f"console=ttyS0 reboot=k panic=-1 acpi=off {extra} wisp.agent=1"]
    if share:
        cmd[-2:-2] = ["--fs", f"tag=ctr,path={share}"]
    print("$ " + " ".join(cmd), flush=True)
    console = open(os.path.join(tmp, "console.log"), "w")
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console,
                            stderr=subprocess.STDOUT), uds


def icmp_echo(addr, timeout):
    """One ICMP echo request to addr (a raw socket: no ping binary needed); True on a reply."""
    def csum(b):
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        return ~(s + (s >> 16)) & 0xFFFF
    body = struct.pack("!BBHHH", 8, 0, 0, 0x5157, 1) + b"wisp-agent-test!"
    pkt = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s.sendto(pkt, (addr, 0))
            s.settimeout(2)
            try:
                while True:
                    data, src = s.recvfrom(2048)
                    ihl = (data[0] & 0xF) * 4
                    if src[0] == addr and data[ihl] == 0 and data[ihl + 4:ihl + 6] == b"QW":
                        return True
            except socket.timeout:
                continue
    return False


def check_network(a):
    a.run("network", "--addr", f"eth0={GUEST_IP}/24", "--route",
          "203.0.113.0/24,via=198.51.100.1", "--up", "lo")
    expect(icmp_echo(GUEST_IP, 60), f"the guest's address {GUEST_IP} does not answer ICMP echo")
    p = a.run("network", "--addr", "nosuch0=10.0.0.1/8", ok=(1,))
    expect("no interface 'nosuch0'" in p.stderr, "NETWORK on a missing interface: ENODEV")


CONTAINER = ["--rootfs-path", "/rootfs", "--hostname", "wisp-agent-test",
             "--mount", "proc:proc:/proc", "--mount", "tmpfs:tmpfs:/dev:nosuid,mode=755",
             "--mount", "devpts:devpts:/dev/pts:newinstance,ptmxmode=0666",
             "--mount", "tmpfs::/tmp:nosuid,size=1m",
             "--mount", "bind:/shared:/mnt/shared:rbind,ro", "--default-devices"]

IDENTITY = r"""
echo "env FOO=$FOO cwd=$PWD"
echo "to stderr" >&2
echo -n "nofile "; ulimit -n
echo -n "hard "; ulimit -Hn
echo -n "umask "; umask
while read -r k v rest; do
  case "$k" in Uid:|Gid:|Groups:|NoNewPrivs:) echo "status $k $v $rest";; esac
done </proc/self/status
read -r h </proc/sys/kernel/hostname; echo "hostname $h"
read -r l </etc/hosts; echo "hosts $l"
read -r l </mnt/shared/hello.txt; echo "shared $l"
{ echo x >/mnt/shared/new; } 2>/dev/null && echo "shared writable" || echo "shared read-only"
[ -c /dev/null ] && [ -c /dev/urandom ] && [ -L /dev/fd ] && echo "devices ok"
while read -r ifc dst gw rest; do
  [ "$ifc" = eth0 ] && [ "$dst" = 007100CB ] && echo "route $gw"
done </proc/net/route
exit 3
"""


def check_create_start(a):
    a.run("container-create", "c1", *CONTAINER, "--file", f"/etc/hosts={a.hosts}")
    pid = int(a.run("create", "c1", "--", "sleep", "1000").stdout.strip())
    ps = json.loads(a.run("--json", "ps", "c1").stdout)["processes"]
    mine = [p for p in ps if p["pid"] == pid]
    expect(mine and "sleep" not in mine[0]["cmd"],
           f"after create, before start, pid {pid} must not run sleep yet: {ps}")
    a.run("start", "c1")
    ps = json.loads(a.run("--json", "ps", "c1").stdout)["processes"]
    mine = [p for p in ps if p["pid"] == pid]
    expect(mine and mine[0]["cmd"] == "sleep 1000" and mine[0]["exec_id"] == "",
           f"after start pid {pid} runs 'sleep 1000' as the container's process: {ps}")
    return pid


def check_identity(a):
    p = a.run("run", "c1", "--exec-id", "id1", "--env", "FOO=bar baz", "--env", "PATH=/bin",
              "--cwd", "/tmp/work", "--uid", "1000", "--gid", "1001", "--groups", "10,20",
              "--umask", "027", "--rlimit", "NOFILE=123:456", "--no-new-privileges",
              "--", "sh", "-c", IDENTITY, ok=(3,))
    want = ["env FOO=bar baz cwd=/tmp/work", "nofile 123", "hard 456", "umask 0027",
            "status Uid: 1000 1000 1000 1000", "status Gid: 1001 1001 1001 1001",
            "status Groups: 10 20", "status NoNewPrivs: 1", "hostname wisp-agent-test",
            "hosts 127.0.0.1 wisp-agent-test", "shared hello from a bind mount",
            "shared read-only", "devices ok", "route 016433C6"]
    lines = [re.sub(r"\s+", " ", line).strip() for line in p.stdout.splitlines()]
    missing = [w for w in want if w not in lines]
    expect(not missing, f"the exec'd process printed {lines}; missing {missing}")
    expect(p.stderr.strip() == "to stderr", f"stderr was {p.stderr!r}")


def check_stdin(a):
    data = "line one\nline two from the host's stdin\n"
    p = a.run("run", "c1", "--exec-id", "in1", "--stdin", "--", "cat", stdin=data)
    expect(p.stdout == data, f"stdin through cat came back as {p.stdout!r}")


def check_errors(a):
    p = a.run("create", "c1", "--exec-id", "bad", "--", "/bin/nonexistent", ok=(1,))
    expect("executable '/bin/nonexistent'" in p.stderr and "No such file" in p.stderr,
           "a missing executable is CREATE's error")
    p = a.run("container-create", "c1", "--rootfs-path", "/rootfs", ok=(1,))
    expect("exists" in p.stderr, "a second container c1: EEXIST")
    p = a.run("start", "c1", ok=(1,))
    expect("started already" in p.stderr, "start twice: EALREADY")
    p = a.run("ps", "nosuch", ok=(1,))
    expect("no container 'nosuch'" in p.stderr, "an unknown container: ENOENT")


def read_until(proc, pattern, timeout):
    buf, end = "", time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 1)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096).decode(errors="replace")
            if not chunk:
                break
            buf += chunk
            if re.search(pattern, buf):
                return buf
    raise Failure(f"the terminal never showed /{pattern}/; it showed {buf!r}")


def check_pty(a, init_pid):
    cmd = [a.ctl, "--vsock", a.uds, "--timeout", "120", "run", "c1", "--exec-id", "t1", "-t",
           "--size", "33x101", "--", "sh", "-c", "stty size; read x; stty size"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        out = read_until(proc, r"33 101", 120)
        ps = json.loads(a.run("--json", "ps", "c1").stdout)["processes"]
        ids = {p["exec_id"] for p in ps}
        expect({"", "t1"} <= ids and any(p["pid"] == init_pid for p in ps),
               f"ps lists the container's process and the exec'd t1: {ps}")
        a.run("resize", "c1", "--exec-id", "t1", "40", "120")
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        out += read_until(proc, r"40 120", 120)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"terminal: {out!r}")
    expect(rc == 0, f"the terminal's process ended with {rc}")


def check_signal(a):
    a.run("kill", "c1", "TERM")
    p = a.run("wait", "c1", ok=(143,))
    expect(p.stdout.strip() == "signaled 15", f"WAIT after SIGTERM: {p.stdout!r}")


def check_9p(a, share):
    a.run("container-create", "c9", "--rootfs-tag", "ctr", "--mount", "proc:proc:/proc")
    p = a.run("run", "c9", "--env", "PATH=/bin", "--", "sh", "-c",
              "read -r l </hello9p.txt; echo \"9p $l\"; echo written-in-guest >/from-guest.txt")
    expect("9p hello over 9p" in p.stdout, f"the 9p root's file: {p.stdout!r}")
    with open(os.path.join(share, "from-guest.txt")) as f:
        expect(f.read() == "written-in-guest\n", "the guest's file in the 9p share")
    a.run("delete", "c9")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for opt in ("--vmm", "--init", "--agent", "--agentctl"):
        ap.add_argument(opt, required=True)
    args = ap.parse_args()
    vmm = None
    try:
        netns.enter()
        with tempfile.TemporaryDirectory(dir=os.environ.get("WISP_CACHE", "/var/tmp")) as tmp:
            bridge = netns.Bridge()
            bridge.add_tap(TAP)
            share = rootfs(tmp, "share9p") if has_9p(args.vmm) else None
            if share:
                with open(os.path.join(share, "hello9p.txt"), "w") as f:
                    f.write("hello over 9p\n")
            vmm, uds = boot(args, tmp, share)
            a = Agent(args.agentctl, uds)
            a.hosts = os.path.join(tmp, "hosts")
            with open(a.hosts, "w") as f:
                f.write("127.0.0.1 wisp-agent-test\n")
            try:
                a.run("hello", timeout=BOOT_TIMEOUT)
                check_network(a)
                init_pid = check_create_start(a)
                check_identity(a)
                check_stdin(a)
                check_errors(a)
                check_pty(a, init_pid)
                check_signal(a)
                if share:
                    check_9p(a, share)
                else:
                    print("9p: this wisp-vmm has no --fs; the 9p root check is skipped")
                a.run("shutdown")
                rc = vmm.wait(120)
                expect(rc == 0, f"after SHUTDOWN wisp-vmm exited {rc}, expected 0")
            finally:
                if vmm.poll() is None:
                    vmm.kill()
                    vmm.wait()
                with open(os.path.join(tmp, "console.log"), errors="replace") as f:
                    lines = f.read().splitlines()
                print("--- console (wisp lines, then its end)\n" +
                      "\n".join([ln for ln in lines if ln.startswith("wisp-")] + lines[-15:]))
                bridge.close()
    except (Failure, netns.NetError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
