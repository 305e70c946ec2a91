#!/usr/bin/env python3
"""The whole sandbox around a Linux guest (docs/security.md): wisp-jailer starts wisp-vmm (seccomp
on, the default) with the guest kit's kernel, an initramfs, a raw ext4 data disk and a NIC on a
tap in a network namespace the test makes (the tap has 198.51.100.1/24). One Linux boot:

  - while it boots, from the host: every thread of wisp-vmm has the unprivileged uid and gid, no
    capability (CapEff, CapPrm, CapBnd 0), NoNewPrivs 1 and Seccomp 2; /proc/PID/root is the
    jail's root; its mnt, pid, ipc and uts namespaces are not the host's and its net namespace is
    the test's; it is pid 1 of its pid namespace and in the jail's cgroup;
  - the guest reads the host's file from the disk (/dev/vda) and pings the tap's address through
    virtio-net, the host sees the script's markers and status 0;
  - after the VM ends nothing of the jail remains: no directory under the base, no cgroup, no
    mount that names the base.

  jailer_linux_test.py --jailer PATH --vmm PATH --init WISP_INIT

Needs root, the guest kit's kernel (guest/kernel/build.sh), busybox and e2fsprogs. ~15-60 s here.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "kernel"))
import guest_shell  # noqa: E402  (the guest script's retry)
import devices_test as dt  # noqa: E402  (the kit's kernel, images, command line)
import jailer_test as jt  # noqa: E402  (the walls as the ring-3 jailer test checks them)

UID = GID = 40117
NETNS = f"wjlinux{os.getpid()}"
TAP, TAP_IP, GUEST_IP = "wjl0", "198.51.100.1", "198.51.100.2"
CGROUP = "/sys/fs/cgroup/cpu/wisp-vmm/linux-1"
TIMEOUT = 540  # a Linux boot takes 15-60 s idle here, over 300 s under a load of 10

SCRIPT = guest_shell.retry("wisp-jail") + r"""
mkdir -p /mnt/a
retry mount -t ext4 /dev/vda /mnt/a && echo "wisp-jail: vda $(cat /mnt/a/hello.txt)"
retry umount /mnt/a
retry ip addr add GUEST_IP/24 dev eth0
retry ip link set eth0 up
retry ping -c 3 -W 5 TAP_IP >/tmp/ping.txt && echo "wisp-jail: ping ok"
echo "wisp-jail: done"
"""


Failure, check, status_of = jt.Failure, jt.check, jt.proc_status


def check_walls(pid, jail_root, netns_path):
    end = time.monotonic() + 20  # the drop comes once the devices are open, before the vCPUs
    while status_of(f"/proc/{pid}/status")["Uid"].split()[0] == "0":
        check(time.monotonic() < end, "wisp-vmm did not drop to the unprivileged user in 20 s")
        time.sleep(0.01)
    tids = jt.check_threads(pid, uid=UID, gid=GID)
    s = status_of(f"/proc/{pid}/status")
    check(s["NSpid"].split()[-1] == "1", f"NSpid {s['NSpid']}: not pid 1 of its namespace")
    r, j = os.stat(f"/proc/{pid}/root"), os.stat(jail_root)
    check((r.st_dev, r.st_ino) == (j.st_dev, j.st_ino), "/proc/PID/root is not the jail's root")
    for ns in ("mnt", "pid", "ipc", "uts", "net"):
        mine, its = os.readlink(f"/proc/self/ns/{ns}"), os.readlink(f"/proc/{pid}/ns/{ns}")
        check(mine != its, f"namespace {ns}: wisp-vmm's is the host's ({its})")
    check(os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns_path).st_ino,
          "wisp-vmm is not in the test's network namespace")
    with open(CGROUP + "/cgroup.procs") as f:
        check(str(pid) in f.read().split(), f"wisp-vmm is not in {CGROUP}")
    print(f"walls: {len(tids)} threads, Uid {s['Uid']}, CapEff {s['CapEff']}, NoNewPrivs "
          f"{s['NoNewPrivs']}, Seccomp {s['Seccomp']}, NSpid {s['NSpid']}, root = the jail, "
          f"mnt/pid/ipc/uts/net namespaces its own")


def end(p):
    """Ends the jailer the way that lets it remove the jail: SIGTERM (it forwards it to wisp-vmm,
    which ends within a second), SIGKILL only if that fails; returns its output."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()


def nothing_left(base):
    left = [os.path.join(r, n) for r, ds, fs in os.walk(base) for n in ds + fs]
    check(not left, f"the jail's files remain: {left}")
    check(not os.path.exists(CGROUP), f"the cgroup {CGROUP} remains")
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if base in line]
    check(not mounts, f"mounts of the jail remain: {mounts}")


def run(a, tmp):
    kdir = dt.kernel_dir()
    disk = dt.data_disk(tmp, "a", "raw", "hello from the host through the jail")
    os.chmod(disk, 0o600)  # root's: wisp-vmm opens it before its drop
    script = os.path.join(tmp, "jail.sh")
    with open(script, "w") as f:
        f.write(SCRIPT.replace("GUEST_IP", GUEST_IP).replace("TAP_IP", TAP_IP))
    initrd = os.path.join(tmp, "initramfs.cpio")
    dt.sh(os.path.join(REPO, "scripts/wisp-mkinitramfs"), "-o", initrd, "--init", a.init,
          "--applets", "sh,cat,mount,umount,ip,ping,mkdir,echo", "--add", f"{script}:/jail.sh")
    base = os.path.join(tmp, "jails")
    os.mkdir(base)
    dt.sh("ip", "netns", "add", NETNS)
    try:
        ipn = ["ip", "-n", NETNS]
        dt.sh(*ipn, "tuntap", "add", "dev", TAP, "mode", "tap")
        dt.sh(*ipn, "addr", "add", TAP_IP + "/24", "dev", TAP)
        dt.sh(*ipn, "link", "set", TAP, "up")
        dt.sh(*ipn, "link", "set", "lo", "up")
        cmd = [a.jailer, "--id", "linux-1", "--exec-file", a.vmm, "--uid", str(UID), "--gid",
               str(GID), "--chroot-base-dir", base, "--netns", f"/run/netns/{NETNS}",
               "--new-pid-ns", "--cgroup", "cpu.shares=512",
               "--file", os.path.join(kdir, "vmlinux") + ":/vmlinux", "--file", initrd + ":/initrd",
               "--file", disk + ":/disk.raw", "--",
               "--kernel", "/vmlinux", "--initrd", "/initrd", "--mem", "192", "--cpus", "1",
               "--drive", "path=/disk.raw,format=raw", "--net", f"tap={TAP},mac=02:00:00:00:03:03",
               "--cmdline", f"console=ttyS0 reboot=k panic=-1 acpi=off {dt.cmdline_extra()} -- "
                            "/bin/sh /jail.sh"]
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            try:
                pid = jt.vmm_child(p.pid)
                check_walls(pid, os.path.join(base, "wisp-vmm/linux-1/root"),
                            f"/run/netns/{NETNS}")
            except (Failure, OSError) as e:  # say what the jailer and wisp-vmm said
                out, err = end(p)
                raise Failure(f"{e}; status {p.returncode}; stderr: "
                              f"{err.decode(errors='replace')[-2000:]}; console: "
                              f"{out.decode(errors='replace')[-2000:]}")
            out, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            out, err = end(p)
            raise Failure(f"the jailed Linux did not end within {TIMEOUT} s; console:\n"
                          f"{out.decode(errors='replace')[-3000:]}")
        finally:
            if p.poll() is None:
                end(p)
        out = out.decode(errors="replace").replace("\r\n", "\n")
        print(out[-3000:] + err.decode(errors="replace") +
              f"exit status {p.returncode} after {time.monotonic() - t0:.1f} s")
        check(p.returncode == 0, f"the jailer ended with status {p.returncode}, expected 0")
        check("wisp-jail: vda hello from the host through the jail" in out,
              "the guest did not read the host's file from the disk")
        check("wisp-jail: ping ok" in out, f"the guest's pings to the tap's {TAP_IP} failed")
        check("wisp-jail: done" in out, "the guest's script did not end")
        nothing_left(base)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jailer", required=True)
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--init", required=True)
    a = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            run(a, tmp)
    except (Failure, dt.Failure) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
