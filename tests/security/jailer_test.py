#!/usr/bin/env python3
"""wisp-jailer (docs/wisp-jailer.md) with real namespaces, a real netns and tap, real KVM.

    jailer_test.py --jailer PATH --vmm PATH --guests DIR --case NAME

Cases:
  whole    a ring-3 guest with a disk (a raw image) and a NIC (a tap in a named netns) started
           through the jailer (--new-pid-ns, --netns, a v1 cgroup, rlimits): from the host,
           every thread of its wisp-vmm has the unprivileged uid, no capability, NoNewPrivs 1
           (Seccomp 2 when wisp-vmm offers --seccomp), /proc/PID/root is the jail, its mount,
           pid, ipc, uts and net namespaces differ from the host's (net: the --netns one), the
           cgroup holds it with the value given; SIGTERM ends it; then the virtio-blk guest
           (writes checked in the image afterwards) and the virtio-net guest (pings through the
           netns' bridge) run through the jailer; after each VM nothing of the jail remains
  hostile  an id with '/' or '..', a symlink in the base directory pointing out, an exec file
           that is not executable, a missing netns, an unknown option, a --file path with '..':
           status 2, a message naming the problem, nothing made
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "virtio"))

UID = GID = 40115
NETNS = f"wispjail{os.getpid()}"
PEER_MAC = "02:00:00:00:01:01"  # netns.py's: what the ring-3 guests talk to


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def sh(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


class Netns:
    """/run/netns/NETNS with br0 (198.51.100.1, PEER_MAC) and a tap wj0 on it."""

    def __enter__(self):
        sh("ip", "netns", "add", NETNS)
        self.path = f"/run/netns/{NETNS}"
        ipn = ["ip", "-n", NETNS]
        sh(*ipn, "link", "add", "br0", "address", PEER_MAC, "type", "bridge")
        sh(*ipn, "addr", "add", "198.51.100.1/24", "dev", "br0")
        sh(*ipn, "link", "set", "br0", "up")
        sh(*ipn, "tuntap", "add", "dev", "wj0", "mode", "tap")
        sh(*ipn, "link", "set", "wj0", "master", "br0", "up")
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def jailer_cmd(a, base, jid, files, vmm_args, extra=()):
    cmd = [a.jailer, "--id", jid, "--exec-file", a.vmm, "--uid", str(UID), "--gid", str(GID),
           "--chroot-base-dir", base] + list(extra)
    for f in files:
        cmd += ["--file", f]
    return cmd + ["--"] + vmm_args


def nothing_left(base, jid, cgroup_dirs=()):
    left = []
    for root, dirs, files in os.walk(base):
        left += [os.path.join(root, n) for n in dirs + files]
    check(not left, f"the jail's files remain: {left}")
    for d in cgroup_dirs:
        check(not os.path.exists(d), f"the cgroup {d} remains")


def proc_status(path):
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def vmm_child(jailer_pid, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kids = []
        for t in os.listdir(f"/proc/{jailer_pid}/task"):
            with open(f"/proc/{jailer_pid}/task/{t}/children") as f:
                kids += f.read().split()
        if kids:
            return int(kids[0])
        time.sleep(0.02)
    raise Failure("the jailer started no process")


def check_threads(pid, seccomp=True, uid=UID, gid=GID):
    """every thread of pid: the unprivileged ids, no capability, NoNewPrivs (and Seccomp 2)"""
    tids = os.listdir(f"/proc/{pid}/task")
    for tid in tids:
        s = proc_status(f"/proc/{pid}/task/{tid}/status")
        what = f"thread {tid} ({s['Name']})"
        check(s["Uid"].split() == [str(uid)] * 4, f"{what}: Uid {s['Uid']}")
        check(s["Gid"].split() == [str(gid)] * 4, f"{what}: Gid {s['Gid']}")
        for cap in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
            check(int(s[cap], 16) == 0, f"{what}: {cap} {s[cap]}")
        check(s["NoNewPrivs"] == "1", f"{what}: NoNewPrivs {s['NoNewPrivs']}")
        if seccomp:
            check(s["Seccomp"] == "2", f"{what}: Seccomp {s['Seccomp']}, expected 2")
    return tids


def check_walls(a, pid, jail_root, netns_path):
    check_threads(pid, "--seccomp" in subprocess.run([a.vmm, "--help"], capture_output=True,
                                                     text=True).stdout)
    s = proc_status(f"/proc/{pid}/status")
    check(s["NSpid"].split()[-1] == "1", f"NSpid {s['NSpid']}: not pid 1 of a new namespace")
    r, j = os.stat(f"/proc/{pid}/root"), os.stat(jail_root)
    check((r.st_dev, r.st_ino) == (j.st_dev, j.st_ino), "/proc/PID/root is not the jail's root")
    check(sorted(os.listdir(f"/proc/{pid}/root")) == ["dev", "disk.raw", "guest.elf", "wisp-vmm"],
          f"the jail holds {sorted(os.listdir(f'/proc/{pid}/root'))}")
    # /dev: a tmpfs of the jail's mount namespace with the two nodes, the VM user's, 0600; the
    # host sees an empty directory
    dev = f"/proc/{pid}/root/dev"
    check(sorted(os.listdir(dev)) == ["kvm", "net"] and os.listdir(dev + "/net") == ["tun"],
          f"the jail's /dev holds {sorted(os.listdir(dev))}")
    for node, host in (("kvm", "/dev/kvm"), ("net/tun", "/dev/net/tun")):
        st, hs = os.stat(f"{dev}/{node}"), os.stat(host)
        check(st.st_rdev == hs.st_rdev and (st.st_uid, st.st_gid) == (UID, GID) and
              st.st_mode & 0o7777 == 0o600, f"the jail's /dev/{node}: {st}")
    check(os.listdir(os.path.join(jail_root, "dev")) == [], "the host sees nodes in the jail's dev")
    for ns in ("mnt", "pid", "ipc", "uts", "net"):
        mine, its = os.readlink(f"/proc/self/ns/{ns}"), os.readlink(f"/proc/{pid}/ns/{ns}")
        check(mine != its, f"namespace {ns}: the VMM's is the host's ({its})")
    n = os.stat(netns_path)
    check(os.stat(f"/proc/{pid}/ns/net").st_ino == n.st_ino, "not in the --netns namespace")
    with open(f"/proc/{pid}/limits") as f:
        check(any(l.startswith("Max open files") and l.split()[3:5] == ["512", "512"]
                  for l in f), "--resource-limit no-file=512 not applied")
    print({k: s[k] for k in ("Uid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp", "NSpid")})


def start(cmd):
    print("$ " + " ".join(cmd))
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish(p, timeout=60):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Failure(f"the jailed VM did not end within {timeout} s")
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    print(out + err + f"exit status {p.returncode}")
    return p.returncode, out.replace("\r\n", "\n"), err


def case_whole(a, tmp):
    import virtio_test as vt
    base = os.path.join(tmp, "base")
    os.mkdir(base)
    cg = "/sys/fs/cgroup/cpu/wisp-vmm/vm-1"
    with Netns() as ns:
        disk = vt.blk_image(tmp, "disk", "raw", 8 << 20)
        os.chmod(disk, 0o600)  # root's: opened in the jail before the drop
        count = os.path.join(a.guests, "api_guest.elf")
        p = start(jailer_cmd(a, base, "vm-1", [count + ":/guest.elf", disk + ":/disk.raw"],
                             ["--kernel", "/guest.elf", "--cmdline", "api.mode=count api.us=50000",
                              "--drive", "path=/disk.raw,format=raw", "--net", "tap=wj0"],
                             ["--new-pid-ns", "--netns", ns.path, "--cgroup", "cpu.shares=512",
                              "--resource-limit", "no-file=512"]))
        try:
            pid = vmm_child(p.pid)
            time.sleep(0.5)
            check(p.poll() is None, f"the jailer ended with status {p.returncode}")
            check_walls(a, pid, os.path.join(base, "wisp-vmm/vm-1/root"), ns.path)
            with open(cg + "/cgroup.procs") as f:
                check(str(pid) in f.read().split(), f"the VMM is not in {cg}")
            with open(cg + "/cpu.shares") as f:
                check(f.read().strip() == "512", "cpu.shares is not 512")
            os.kill(pid, signal.SIGTERM)
        finally:
            code, out, err = finish(p)
        check(code == 0 and "count 2" in out, f"status {code} after SIGTERM; expected 0")
        nothing_left(base, "vm-1", [cg])

        # the disk served: the virtio-blk guest's writes are in the image afterwards
        blk = os.path.join(a.guests, "virtio_blk.elf")
        size = 8 << 20
        p = start(jailer_cmd(a, base, "vm-2", [blk + ":/guest.elf", disk + ":/disk.raw"],
                             ["--kernel", "/guest.elf", "--serial", "stdio", "--cmdline",
                              f"blk.mode=rw blk.sectors={size // 512} "
                              "blk.serial=wisp-serial-12345678 blk.tag=1",
                              "--drive", "path=/disk.raw,format=raw,serial=wisp-serial-12345678",
                              "--net", "tap=wj0"], ["--new-pid-ns", "--netns", ns.path]))
        code, out, _ = finish(p)
        check(code == 0 and "blk: ok" in out, f"the virtio-blk guest: status {code}")
        with open(disk, "rb") as f:
            data = f.read()
        written = (1 << 20) + (1 << 18)
        vt.expect_range(data, 2 << 20, written, vt.blk_pattern(2 << 20, written, vt.GUEST_TAG),
                        "the guest's writes")
        nothing_left(base, "vm-2")

        # the NIC served: ARP and pings with the bridge in the netns
        net = os.path.join(a.guests, "virtio_net.elf")
        mac = "02:00:00:00:00:10"
        p = start(jailer_cmd(a, base, "vm-3", [net + ":/guest.elf", disk + ":/disk.raw"],
                             ["--kernel", "/guest.elf", "--serial", "stdio", "--cmdline",
                              f"net.peer={PEER_MAC} net.retry=1 net.mac0={mac} net.pings=4",
                              "--net", f"tap=wj0,mac={mac}", "--drive", "path=/disk.raw"],
                             ["--netns", ns.path]))
        code, out, _ = finish(p)
        check(code == 0 and "net: ok" in out, f"the virtio-net guest: status {code}")
        nothing_left(base, "vm-3")


def case_hostile(a, tmp):
    base = os.path.join(tmp, "base")
    outside = os.path.join(tmp, "outside")
    os.mkdir(base)
    os.mkdir(outside)
    guest = os.path.join(a.guests, "api_guest.elf")
    plain = os.path.join(tmp, "not-executable")
    with open(plain, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(plain, 0o644)

    def expect_usage(cmd, want, what):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        print(f"$ {' '.join(cmd)}\n{p.stderr}status {p.returncode}")
        check(p.returncode == 2, f"{what}: status {p.returncode}, expected 2")
        check(want in p.stderr, f"{what}: {p.stderr!r} lacks {want!r}")
        check(os.listdir(outside) == [], f"{what}: something was made outside: "
                                         f"{os.listdir(outside)}")

    vmm_args = ["--kernel", "/guest.elf"]
    for jid in ("a/b", "..", "../x", "x" * 65, ""):
        expect_usage(jailer_cmd(a, base, jid, [guest], vmm_args), f"--id '{jid}'", f"id {jid!r}")
        nothing_left(base, jid)
    # a symlink where the exec file's directory would be: refused, nothing made through it
    os.symlink(outside, os.path.join(base, "wisp-vmm"))
    expect_usage(jailer_cmd(a, base, "vm-1", [guest], vmm_args), "symlink", "a symlink")
    os.unlink(os.path.join(base, "wisp-vmm"))
    nothing_left(base, "vm-1")
    cmd = jailer_cmd(a, base, "vm-1", [guest], vmm_args)
    cmd[cmd.index("--exec-file") + 1] = plain
    expect_usage(cmd, "not an executable regular file", "a non-executable exec file")
    nothing_left(base, "vm-1")
    expect_usage(jailer_cmd(a, base, "vm-1", [guest], vmm_args,
                            ["--netns", "/run/netns/wisp-no-such-netns"]),
                 "--netns /run/netns/wisp-no-such-netns", "a missing netns")
    nothing_left(base, "vm-1")
    expect_usage(jailer_cmd(a, base, "vm-1", [guest + ":/a/../../x"], vmm_args), "'..'",
                 "a --file path with '..'")
    expect_usage(jailer_cmd(a, base, "vm-1", [], vmm_args, ["--bogus"]), "--bogus",
                 "an unknown option")
    expect_usage(jailer_cmd(a, base, "vm-1", [], vmm_args, ["--cgroup-version", "3"]),
                 "--cgroup-version", "a cgroup version")
    nothing_left(base, "vm-1")
    expect_usage(jailer_cmd(a, base, "vm-1", [], vmm_args, ["--mount-proc"]),
                 "--mount-proc: only with --new-pid-ns", "--mount-proc without --new-pid-ns")
    expect_usage(jailer_cmd(a, base, "vm-1", [], vmm_args, ["--keep-caps", "CAP_SYS_ADMIN"]),
                 "--keep-caps", "a --keep-caps that is not a list of names")
    expect_usage(jailer_cmd(a, base, "vm-1", [], vmm_args, ["--ro-file", "/dev/null"]),
                 "--ro-file /dev/null: not a regular file", "a --ro-file of a character device")
    nothing_left(base, "vm-1")


CASES = {"whole": case_whole, "hostile": case_hostile}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jailer", required=True)
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guests", required=True, help="the directory of the guest ELFs")
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    a = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            CASES[a.case](a, tmp)
    except Exception as e:
        if type(e).__name__ != "Failure":
            raise
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
