#!/usr/bin/env python3
"""wispd's networks (docs/wispd.md, "Networks") with everything real: wispd runs inside a
network namespace this test makes (ip netns add; nothing of the host's own links, routes or
firewall is touched), with real bridges, taps, dnsmasq, nftables and wisp-vmm processes; test
subnets are TEST-NET-2/3 (198.51.100.0/24, 203.0.113.0/24). Everything made is deleted at the
end, also on failure.

  network_test.py --wispd W --wisp C --vmm V --guest G --case CASE [--init WISP_INIT]

Cases: subnets (what net create refuses), macs (allocation, clashes, persistence), dnsmasq
(supervision, reattach, taps, NAT, net rm, and a real DHCP and DNS exchange with busybox's
udhcpc in a second namespace), linux (the kit's Linux in two VMs gets its address from dnsmasq
with udhcpc and pings the gateway: two Linux boots at once).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "kernel"))
import guest_shell  # noqa: E402  (the guest script's retry)
import wispd_test  # noqa: E402  (its Daemon, wait_for, alive)
from wispd_test import alive, wait_for  # noqa: E402

A = None
SUBNET = "198.51.100.0/24"
GATEWAY = "198.51.100.1"
MAC_RE = re.compile(r"^0a:77:69(:[0-9a-f]{2}){3}$")


def sh(*cmd, check=True, timeout=60):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def processes(marker):
    """pid -> argv of the live processes whose command line holds `marker` (the state dir), and
    its VMMs jailed in-process (their command line is the jail's)."""
    out = {}
    jailed = wispd_test.vmm_processes(marker)
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if (any(marker.encode() in a for a in argv) or int(p) in jailed) and alive(int(p)):
            out[int(p)] = [a.decode(errors="replace") for a in argv if a]
    return out


class Setup(wispd_test.Daemon):
    """wispd_test's Daemon in a network namespace of the test's own; close() deletes all."""

    def __init__(self, tmp):
        super().__init__(tmp)
        self.ns = f"wnt{os.getpid()}"
        self.extra_ns = []
        # ip netns exec execs wispd itself: self.proc.pid is wispd's pid
        self.prefix = ["ip", "netns", "exec", self.ns]
        sh("ip", "netns", "add", self.ns)
        self.ip("link", "set", "lo", "up")
        for conf in ("all", "default"):  # no IPv6 autoconfiguration chatter on the bridges
            self.run("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")

    def run(self, *cmd, check=True, timeout=60):
        return sh(*self.prefix, *cmd, check=check, timeout=timeout)

    def ip(self, *args, check=True):
        return sh("ip", "-n", self.ns, *args, check=check)

    def links(self):
        """name -> ip -j link's object, in the wispd's namespace."""
        return {l["ifname"]: l for l in json.loads(self.ip("-j", "link", "show").stdout)}

    def nets(self):
        return {n["name"]: n for n in json.loads(self.wisp("net", "ls", "--json", check=0).stdout)}

    def define(self, name, nics, check=0, **extra):
        d = {"name": name, "memory_mib": 16, "kernel": A.guest, "nics": nics}
        d.update(extra)
        return self.wisp("define", "-", stdin=json.dumps(d), check=check)

    def dnsmasqs(self):
        return {p: a for p, a in processes(self.state).items() if "dnsmasq" in a[0]}

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in processes(self.state):  # wisp-vmm (jailers) and dnsmasq processes of this test
            for p in {wispd_test.vmm_of(pid), pid}:  # a jailed VMM first: it outlives its jailer
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in wispd_test.console_writers(self.state):
            os.kill(pid, signal.SIGKILL)
        wispd_test.remove_cgroups(self.state)
        for ns in [self.ns] + self.extra_ns:
            sh("ip", "netns", "del", ns, check=False)


def case_subnets(s):
    s.start()
    for args, code, words in (
            (["--subnet", "198.51.100.0"], 1, "not an IPv4 subnet"),
            (["--subnet", "2001:db8::/64"], 1, "IPv6"),
            (["--subnet", "198.51.100.0/31"], 1, "8 to 30"),
            (["--subnet", "198.51.100.7/24"], 1, "host bits set (198.51.100.0/24?)"),
            (["--subnet", "127.10.0.0/16"], 1, "loopback"),
            (["--subnet", SUBNET, "--gateway", "198.51.101.1"], 1, "not a host address"),
            (["--subnet", SUBNET, "--gateway", "198.51.100.255"], 1, "not a host address"),
            (["--subnet", SUBNET, "--dhcp-range", "198.51.100.1-198.51.100.9"], 1,
             "holds the gateway"),
            (["--subnet", SUBNET, "--dhcp-range", "198.51.100.9-198.51.100.3"], 1,
             "starts after its end"),
            (["--subnet", SUBNET, "--dhcp-range", "198.51.100.9"], 1, "not A-B"),
    ):
        r = s.wisp("net", "create", "bad", *args)
        assert r.returncode == code and words in r.stderr, (args, r.returncode, r.stderr)
    r = s.wisp("net", "create", "waytoolongname", "--subnet", SUBNET)
    assert r.returncode == 1 and "name" in r.stderr, r.stderr
    for args in ([], ["--subnet"], ["--subnet", SUBNET, "--bogus"], ["--subnet", SUBNET, "x"]):
        assert s.wisp("net", "create", "u", *args).returncode == 2, args
    assert s.wisp("net", "bogus").returncode == 2
    assert s.wisp("net").returncode == 2
    assert s.wisp("net", "rm").returncode == 2
    assert s.wisp("net", "rm", "nosuch").returncode == 4
    assert s.wisp("net", "show", "nosuch").returncode == 4
    # The host's own routes and addresses (here: the namespace's) are never overlapped.
    s.ip("link", "add", "wntdummy", "type", "bridge")  # no dummy module here
    s.ip("addr", "add", "203.0.113.1/24", "dev", "wntdummy")
    s.ip("link", "set", "wntdummy", "up")
    s.ip("route", "add", "198.51.100.128/26", "dev", "wntdummy")
    r = s.wisp("net", "create", "h", "--subnet", "203.0.113.128/25")
    assert r.returncode == 5 and "overlaps the host's route 203.0.113.0/24 dev wntdummy" in \
        r.stderr, r.stderr
    r = s.wisp("net", "create", "h", "--subnet", "203.0.0.0/16")
    assert r.returncode == 5 and "203.0.113" in r.stderr, r.stderr
    r = s.wisp("net", "create", "h", "--subnet", SUBNET)
    assert r.returncode == 5 and "198.51.100.128/26" in r.stderr, r.stderr
    s.ip("route", "del", "198.51.100.128/26", "dev", "wntdummy")
    s.wisp("net", "create", "a", "--subnet", SUBNET, check=0)
    r = s.wisp("net", "create", "b", "--subnet", "198.51.100.64/26")
    assert r.returncode == 5 and "overlaps network 'a'" in r.stderr, r.stderr
    assert s.wisp("net", "create", "a", "--subnet", "198.51.0.0/24").returncode == 5  # the name
    # A gateway at the end of the subnet: the default range is below it.
    s.wisp("net", "create", "c", "--subnet", "198.18.0.0/30", "--gateway", "198.18.0.2", check=0)
    c = s.nets()["c"]
    assert c["gateway"] == "198.18.0.2" and c["dhcp_range"] == "198.18.0.1-198.18.0.1", c
    a = s.nets()["a"]
    assert a["gateway"] == GATEWAY and a["dhcp_range"] == "198.51.100.2-198.51.100.254", a
    assert a["bridge"] == "wb-a" and a["state"] == "active" and not a["nat"], a
    for n in ("a", "c"):
        s.wisp("net", "rm", n, check=0)
    assert s.nets() == {}
    assert not [l for l in s.links() if l.startswith("wb-")], s.links()
    s.stop()


def case_macs(s):
    s.start()
    s.wisp("net", "create", "n", "--subnet", SUBNET, check=0)
    macs = set()
    for i in range(6):
        s.define(f"v{i}", [{"id": "a", "network": "n"}, {"id": "b", "network": "n"},
                           {"id": "c", "network": "n"}, {"id": "d", "network": "n"},
                           {"id": "e", "tap": f"wntap{i}"}])
    for v in s.vms().values():
        for nic in v["definition"]["nics"]:
            assert MAC_RE.match(nic["mac"]), nic
            macs.add(nic["mac"])
    assert len(macs) == 30, macs
    taken = s.vms()["v0"]["definition"]["nics"][0]["mac"]
    r = s.define("x", [{"id": "a", "network": "n", "mac": taken.upper()}], check=5)
    assert "is VM 'v0''s" in r.stderr, r.stderr
    r = s.define("x", [{"id": "a", "network": "n", "mac": "0a:00:00:00:00:01"},
                       {"id": "b", "tap": "t", "mac": "0a:00:00:00:00:01"}], check=1)
    assert "another NIC's of this VM" in r.stderr, r.stderr
    for bad in ("01:00:5e:00:00:01", "00:00:00:00:00:00", "0a:00:00:00:00", "0a-00-00-00-00-01",
                "0a:00:00:00:00:0g"):
        r = s.define("x", [{"id": "a", "network": "n", "mac": bad}], check=1)
        assert "not a unicast MAC" in r.stderr, (bad, r.stderr)
    r = s.define("x", [{"id": "a", "network": "n", "tap": "t"}], check=1)
    assert "either tap" in r.stderr, r.stderr
    r = s.define("x", [{"id": "a", "network": "nope"}], check=1)
    assert "no network named 'nope'" in r.stderr, r.stderr
    s.define("mine", [{"id": "a", "network": "n", "mac": "0a:00:00:00:00:01"}])
    assert s.vms()["mine"]["definition"]["nics"][0]["mac"] == "0a:00:00:00:00:01"
    # Persistent: the MACs are the registry's definitions; the set in use is rebuilt from them.
    before = {n: v["definition"]["nics"] for n, v in s.vms().items()}
    s.stop()
    s.start()
    assert {n: v["definition"]["nics"] for n, v in s.vms().items()} == before
    s.define("x", [{"id": "a", "network": "n", "mac": taken}], check=5)
    s.wisp("rm", "v0", check=0)  # its MACs are free again
    s.define("x", [{"id": "a", "network": "n", "mac": taken}], check=0)
    # create --net network=NAME[,mac=..]
    s.wisp("create", "cli", "--kernel", A.guest, "--net", "network=n", "--net",
           "network=n,mac=0a:00:00:00:00:02,id=eth9", check=0)
    nics = s.vms()["cli"]["definition"]["nics"]
    assert nics[0]["network"] == "n" and MAC_RE.match(nics[0]["mac"]) and nics[0]["id"] == "net0"
    assert nics[1] == {"id": "eth9", "network": "n", "mac": "0a:00:00:00:00:02"}, nics
    for args in (["--net", "network=n,tap=t"], ["--net", "mac=0a:00:00:00:00:03"]):
        assert s.wisp("create", "u", "--kernel", A.guest, *args).returncode == 2, args
    s.stop()


def tap_of(vm_id, i):
    return f"wt{vm_id}n{i}"


def vm_id(s, name):
    """The VM's number in the registry (its taps are wtIDnK)."""
    import sqlite3
    db = sqlite3.connect(os.path.join(s.state, "wispd.db"))
    try:
        return db.execute("SELECT id FROM vms WHERE name = ?", (name,)).fetchone()[0]
    finally:
        db.close()


def dhcp_client(s, name, hostname):
    """busybox udhcpc in a namespace of its own on a veth whose peer is a port of the bridge:
    returns (mac, the address it got, dnsmasq's answer for its hostname or None)."""
    ns = f"{s.ns}c"
    sh("ip", "netns", "add", ns)
    s.extra_ns.append(ns)
    s.ip("link", "add", "wntv0", "type", "veth", "peer", "name", "wntv1", "netns", ns)
    s.ip("link", "set", "wntv0", "master", "wb-" + name, "up")
    script = os.path.join(s.tmp, "udhcpc.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface && "
                "echo \"lease $ip $mask $router $dns\"\nexit 0\n")
    os.chmod(script, 0o755)
    inns = ["ip", "netns", "exec", ns]
    sh(*inns, "ip", "link", "set", "wntv1", "up")
    mac = json.loads(sh("ip", "-n", ns, "-j", "link", "show", "wntv1").stdout)[0]["address"]
    r = sh(*inns, "busybox", "udhcpc", "-i", "wntv1", "-n", "-q", "-f", "-t", "10", "-T", "1",
           "-s", script, "-x", f"hostname:{hostname}", timeout=60)
    m = re.search(r"^lease (\S+) (\d+) (\S+) ?(\S*)$", r.stdout, re.M)
    assert m, f"udhcpc got no lease: {r.stdout}{r.stderr}"
    sh(*inns, "busybox", "ping", "-c", "1", "-W", "5", GATEWAY)
    return mac, m.group(1), m.group(2), m.group(3), m.group(4)


def dns_lookup(s, ns, name):
    r = sh("ip", "netns", "exec", ns, "busybox", "nslookup", name, GATEWAY, check=False)
    return re.findall(r"^Address:\s*(198\.51\.100\.\d+)$", r.stdout, re.M)


def case_dnsmasq(s):
    s.start()
    s.wisp("net", "create", "n", "--subnet", SUBNET, "--dns", "--nat", check=0)
    n = s.nets()["n"]
    pid = n["dnsmasq"]["pid"]
    assert n["dnsmasq"]["state"] == "running" and alive(pid), n
    assert set(s.dnsmasqs()) == {pid}, s.dnsmasqs()
    ndir = os.path.join(s.state, "net", "n")
    conf = open(os.path.join(ndir, "dnsmasq.conf")).read()
    assert "interface=wb-n\n" in conf and "dhcp-range=198.51.100.2,198.51.100.254," in conf, conf
    assert n["lease_file"] == os.path.join(ndir, "leases")
    br = s.links()["wb-n"]
    assert br["address"].startswith("0a:77:68:") and "UP" in br["flags"], br
    addrs = json.loads(s.ip("-j", "addr", "show", "dev", "wb-n").stdout)[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet"] == \
        [(GATEWAY, 24)], addrs
    rules = s.run("nft", "list", "table", "ip", "wisp_net_1").stdout
    assert "masquerade" in rules and "198.51.100.0/24" in rules, rules
    assert s.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"

    # DHCP and DNS for real: a client on the bridge gets an address, its name is in DNS.
    mac, addr, mask, router, dns = dhcp_client(s, "n", "client1")
    assert addr.startswith("198.51.100.") and mask == "24" and router == GATEWAY, addr
    assert dns == GATEWAY, dns  # --dns: dnsmasq offers itself as the DNS server
    leases = open(n["lease_file"]).read()
    assert re.search(rf"^\d+ {mac} {re.escape(addr)} client1 ", leases, re.M), leases
    assert dns_lookup(s, f"{s.ns}c", "client1") == [addr]
    assert dns_lookup(s, f"{s.ns}c", "client1.n") == [addr]

    # Supervision: a dnsmasq that dies is started again.
    os.kill(pid, signal.SIGKILL)
    wait_for("dnsmasq restarted", lambda: s.nets()["n"]["dnsmasq"]["pid"] not in (0, pid)
             and s.nets()["n"]["state"] == "active")
    n = s.nets()["n"]
    assert n["dnsmasq"]["restarts"] == 1 and "signal 9" in n["dnsmasq"]["last_exit"], n
    pid = n["dnsmasq"]["pid"]
    assert set(s.dnsmasqs()) == {pid}
    # The lease survives its restart (the lease file), and DNS still knows the client.
    assert dns_lookup(s, f"{s.ns}c", "client1") == [addr]

    # A VM's NICs: taps on the bridge while it runs.
    s.define("vm", [{"id": "eth0", "network": "n"}, {"id": "eth1", "network": "n"}],
             stop_timeout_s=0)  # the idle guest has no Ctrl-Alt-Del: SIGTERM at once
    s.wisp("start", "vm", check=0)
    vid = vm_id(s, "vm")
    links = s.links()
    for i in (0, 1):
        t = links[tap_of(vid, i)]
        assert t.get("master") == "wb-n" and "UP" in t["flags"], t
    vmm_pid = s.vms()["vm"]["pid"]
    # wispd restarts (kill -9, then SIGTERM): the same dnsmasq and VM, reattached.
    for how in ("kill9", "sigterm"):
        s.kill9() if how == "kill9" else s.stop()
        assert alive(pid) and alive(vmm_pid)
        s.start()
        n = s.nets()["n"]
        assert n["dnsmasq"]["pid"] == pid and n["state"] == "active", (how, n)
        assert s.vms()["vm"]["pid"] == vmm_pid and tap_of(vid, 0) in s.links(), how
    assert set(s.dnsmasqs()) == {pid}
    s.wisp("stop", "vm", check=0)
    assert not [l for l in s.links() if l.startswith("wt")], s.links()
    # The VM ends while wispd is away: the next wispd deletes its taps.
    s.wisp("start", "vm", check=0)
    vmm_pid = s.vms()["vm"]["pid"]
    s.kill9()
    assert vmm_pid in wispd_test.vmm_processes(s.state) and \
        wispd_test.vmm_of(vmm_pid) == vmm_pid, "not jailed in-process"
    os.kill(vmm_pid, signal.SIGKILL)  # jailed in-process: the recorded pid is the VMM's
    wait_for("the VM gone", lambda: not alive(vmm_pid))
    s.start()  # (a zombie not yet reaped is reattached, then seen ending at once)
    wait_for("the VM seen stopped", lambda: s.vms()["vm"]["state"] == "stopped")
    assert not [l for l in s.links() if l.startswith("wt")], s.links()

    # In use: refused; --force removes it anyway, and the VM's next start says why it fails.
    r = s.wisp("net", "rm", "n")
    assert r.returncode == 5 and "in use by 1 VM (vm)" in r.stderr, r.stderr
    assert s.nets()["n"]["vms"] == ["vm"]
    s.wisp("net", "rm", "--force", "n", check=0)
    assert not s.dnsmasqs() and not alive(pid), s.dnsmasqs()
    assert "wb-n" not in s.links() and not os.path.exists(ndir)
    assert s.run("nft", "list", "table", "ip", "wisp_net_1", check=False).returncode != 0
    r = s.wisp("start", "vm")
    assert r.returncode == 1 and "no network named 'n'" in r.stderr, r.stderr
    s.wisp("rm", "vm", check=0)

    # An rm cut short by a crash (committed, its dnsmasq not yet ended): the next wispd ends it.
    import sqlite3
    s.wisp("net", "create", "m", "--subnet", "203.0.113.0/24", check=0)
    mpid = s.nets()["m"]["dnsmasq"]["pid"]
    s.stop()
    db = sqlite3.connect(os.path.join(s.state, "wispd.db"))
    db.execute("UPDATE networks SET remove_pending = 1 WHERE name = 'm'")
    db.commit()
    db.close()
    s.start()
    wait_for("the rm finished", lambda: "m" not in s.nets() and not alive(mpid))
    assert "wb-m" not in s.links()
    assert not s.dnsmasqs() and not [l for l in s.links() if l.startswith(("wb-", "wt"))]
    s.stop()


# --- the kit's Linux (two boots at once) ---

GUEST_SCRIPT = guest_shell.retry("wisp-net") + r"""
echo "wisp-net: start $1 $(cat /sys/class/net/eth0/address)"
retry ip link set eth0 up
retry udhcpc -i eth0 -n -q -f -t 20 -T 3 -s /udhcpc.sh -x hostname:$1 || exit 3
retry ping -c 3 -W 10 GATEWAY >/dev/null && echo "wisp-net: ping ok"
"""

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add $ip/$mask dev $interface
echo "wisp-net: lease $ip/$mask router $router"
"""


def case_linux(s):
    kdir = sh(os.path.join(REPO, "guest/kernel/build.sh"), "--print-path", check=False).stdout
    vmlinux = os.path.join(kdir.strip(), "vmlinux")
    if not os.path.isfile(vmlinux):
        raise AssertionError(f"the guest kernel is not built ({vmlinux}); run "
                             "guest/kernel/build.sh (scripts/test does)")
    files = {}
    for name, text in (("net.sh", GUEST_SCRIPT.replace("GATEWAY", GATEWAY)),
                       ("udhcpc.sh", UDHCPC_SCRIPT)):
        files[name] = os.path.join(s.tmp, name)
        with open(files[name], "w") as f:
            f.write(text)
        os.chmod(files[name], 0o755)
    initrd = os.path.join(s.tmp, "initramfs.cpio")
    sh(os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", initrd, "--init", A.init,
       "--applets", "sh,ip,udhcpc,ping,cat,echo", "--add", f"{files['net.sh']}:/net.sh",
       "--add", f"{files['udhcpc.sh']}:/udhcpc.sh")
    extra = sh(os.path.join(REPO, "guest/kernel/cmdline-extra")).stdout.strip()
    s.start()
    s.wisp("net", "create", "lan", "--subnet", SUBNET, "--dns", check=0)
    names = ("vm-a", "vm-b")
    for name in names:
        s.wisp("create", name, "--kernel", vmlinux, "--initrd", initrd, "--mem", "128",
               "--cmdline", f"console=ttyS0 quiet reboot=k panic=-1 acpi=off {extra} -- /bin/sh "
                            f"/net.sh {name}", "--net", "network=lan", check=0)
    macs = {n: s.vms()[n]["definition"]["nics"][0]["mac"] for n in names}
    assert len(set(macs.values())) == 2 and all(MAC_RE.match(m) for m in macs.values()), macs
    t0 = time.monotonic()
    for name in names:
        s.wisp("start", name, check=0)
    ids = {n: vm_id(s, n) for n in names}
    for n in names:
        assert s.links()[tap_of(ids[n], 0)].get("master") == "wb-lan"
    r = s.wisp("net", "rm", "lan")
    assert r.returncode == 5 and "in use by 2 VMs" in r.stderr, r.stderr
    try:
        wait_for("both guests to end", lambda: all(v["state"] == "stopped"
                                                   for v in s.vms().values()), 600)
    finally:
        for n in names:
            print(f"--- {n}'s console:\n" + s.wisp("logs", n).stdout[-3000:])
    print(f"both guests ended after {time.monotonic() - t0:.1f} s")
    leases = open(s.nets()["lan"]["lease_file"]).read()
    got = {}
    for n in names:
        log = s.wisp("logs", n, check=0).stdout.replace("\r\n", "\n")
        vm = s.vms()[n]
        assert vm["last_exit"] == "exited with status 0", (n, vm["last_exit"])
        assert f"wisp-net: start {n} {macs[n]}" in log, f"{n}: the guest's eth0 has another MAC"
        m = re.search(r"^wisp-net: lease (198\.51\.100\.\d+)/24 router (\S+)$", log, re.M)
        assert m and m.group(2) == GATEWAY, f"{n}: no lease from dnsmasq on the console"
        assert re.search(r"^wisp-net: ping ok$", log, re.M), f"{n}: the gateway did not answer"
        got[n] = m.group(1)
        assert re.search(rf"^\d+ {macs[n]} {re.escape(got[n])} {n} ", leases, re.M), \
            (n, leases)
        assert dns_lookup(s, s.ns, n) == [got[n]], n  # dnsmasq learnt the guest's name
    assert got["vm-a"] != got["vm-b"], got
    print(f"leases: {got}, MACs: {macs}")
    assert not [l for l in s.links() if l.startswith("wt")], s.links()
    for n in names:
        s.wisp("rm", n, check=0)
    s.wisp("net", "rm", "lan", check=0)
    assert not s.dnsmasqs() and not [l for l in s.links() if l.startswith(("wb-", "wt"))]
    s.stop()


def main():
    global A
    ap = argparse.ArgumentParser()
    for o in ("--wispd", "--wisp", "--vmm", "--guest", "--case"):
        ap.add_argument(o, required=True)
    ap.add_argument("--init")
    A = wispd_test.A = ap.parse_args()
    for k in ("wispd", "wisp", "vmm", "guest", "init"):  # meson gives build-relative paths
        if getattr(A, k):
            setattr(A, k, os.path.abspath(getattr(A, k)))
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces, bridges, taps)")
        return 77
    with tempfile.TemporaryDirectory(prefix="wispd-net-",
                                     dir=os.environ.get("WISP_CACHE", "/var/tmp")
                                     if A.case == "linux" else None) as tmp:
        s = Setup(tmp)
        try:
            globals()["case_" + A.case](s)
        except BaseException:
            wispd_test.print_log_tail(tmp)
            raise
        finally:
            s.close()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
