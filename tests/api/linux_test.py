#!/usr/bin/env python3
"""The kit's Linux (guest/kernel) configured and started through wisp-vmm's API, with
Firecracker's getting-started sequence replayed by curl (getting_started.sh: logger, boot
source, a root drive, a NIC, InstanceStart), then driven through the API while it runs. One
Linux boot (~10-60 s here) carries every check:

  - Linux mounts the root drive the API gave it (root=/dev/vda rw, as Firecracker adds it),
    and a file it writes there is on the host's image afterwards (debugfs);
  - PATCH /vm Paused: its once-a-second ticks stop (the console does not grow) until Resumed,
    then go on from the next one;
  - PUT /metrics and FlushMetrics: the root drive's counters show Linux's reads;
  - PATCH /drives/data with a new image: Linux sees the new size (a configuration change) and
    reads the new image's bytes;
  - Linux's virtio-balloon driver (docs/memory.md): 16 MiB the guest wrote and freed come back
    to the host by free page reporting within seconds (VmRSS drops, reported_bytes grows);
    PATCH /balloon 64 MiB and Linux inflates (actual_mib 64, its statistics arrive), then
    deflates to 0;
  - Linux's i8042 and atkbd drivers found the i8042 and its keyboard at boot; PUT /actions
    SendCtrlAltDel then reboots the guest (the VT keyboard's ctrl_alt_del(), reboot=k) and
    wisp-vmm exits 0, while the script would have waited for ever (status 7 if it ever ended).

  linux_test.py --vmm WISP_VMM --init WISP_INIT
Success is decided by markers on the console, the answers and the exit status, never by timing.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from apilib import Failure, Vmm, check, run_in_tmp  # noqa: E402

BOOT_TIMEOUT = 300
SCRIPT = r"""
echo "wisp-api: cmdline $(cat /proc/cmdline)"
while read -r dev mnt rest; do [ "$mnt" = / ] && echo "wisp-api: root $dev $rest"; done </proc/mounts
echo "written by the guest" >/guest.txt
sync
read -r s0 </sys/block/vdb/size
echo "wisp-api: vdb $s0"
i=0
while :; do
    read -r s </sys/block/vdb/size
    [ "$s" != "$s0" ] && break
    i=$((i + 1))
    echo "wisp-api: tick $i"
    sleep 1
done
echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/vdb of=/tmp/s0 bs=512 count=1 2>/dev/null
read -r text </tmp/s0
echo "wisp-api: vdb $s $text"
dmesg | grep -E 'i8042|serio|input:' | sed 's/^/wisp-api: dmesg /'
dd if=/dev/zero of=/dev/null bs=16M count=1 2>/dev/null
echo "wisp-api: wrote and freed 16M"
echo "wisp-api: waiting for ctrl-alt-del"
while :; do sleep 1; done
exit 7
"""


def sh(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise Failure(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def kernel():
    path = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                          capture_output=True, text=True).stdout.strip()
    vmlinux = os.path.join(path, "vmlinux")
    if not os.path.isfile(vmlinux):
        raise Failure(f"the guest kernel is not built ({vmlinux}); run guest/kernel/build.sh")
    return vmlinux


def images(tmp, init):
    d = os.path.join(tmp, "root.d")
    os.mkdir(d)
    with open(os.path.join(d, "api.sh"), "w") as f:
        f.write(SCRIPT)
    root = os.path.join(tmp, "root.ext4")
    sh(os.path.join(REPO, "scripts/wisp-mkrootfs"), "-o", root, "-s", "32M", "--busybox",
       "--init", init, d)
    disks = []
    for name, text, size in (("a.img", "IMAGE-A", 1 << 20), ("b.img", "IMAGE-B", 3 << 20)):
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(text.encode() + b"\n")
            f.truncate(size)
        disks.append(path)
    return root, disks


def ticks(v):
    return [int(l.split()[2]) for l in v.lines().splitlines() if l.startswith("wisp-api: tick ")]


def pause_resume(v):
    v.wait_console(r"^wisp-api: tick 2$", BOOT_TIMEOUT)
    v.expect("PATCH", "/vm", {"state": "Paused"})
    check(v.expect("GET", "/", status=200)["state"] == "Paused", "state after Paused")
    before = v.out()
    for _ in range(30):  # three seconds: the guest would tick about three times
        time.sleep(0.1)
    check(v.out() == before, f"Linux printed while paused: {v.out()[len(before):]!r}")
    last = ticks(v)[-1]
    v.expect("PATCH", "/vm", {"state": "Resumed"})
    v.wait_console(rf"^wisp-api: tick {last + 1}$", 60)
    return last


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([l for l in f if l.startswith("VmRSS:")][0].split()[1])


def stats(v):
    return v.expect("GET", "/balloon/statistics", status=200)


def linux_balloon(v, before):
    """The 16 MiB written and freed are reported back (without reporting, VmRSS would stay
    16 MiB above `before`), then an inflate of 64 MiB and a deflate."""
    high = rss_kib(v.p.pid)
    # Linux reports free blocks of 2 MiB (pageblock order) a batch at a time, 2 s apart: the
    # 16 MiB the dd freed come back only where they merge into whole free blocks, which depends
    # on what else the kernel allocated meanwhile. That reporting works at all is asserted
    # (the ring-3 balloon tests assert the RSS drop exactly); how much of the 16 MiB returned
    # within 20 s is printed.
    v.wait_for(lambda: stats(v)["wisp"]["reported_bytes"] > 0, 60,
               "any free page report from Linux")
    deadline = time.monotonic() + 20
    while rss_kib(v.p.pid) > before + (8 << 10) and time.monotonic() < deadline:
        time.sleep(0.5)
    low = rss_kib(v.p.pid)
    v.expect("PATCH", "/balloon", {"amount_mib": 64})
    v.wait_for(lambda: stats(v)["actual_mib"] == 64, 180, "Linux inflating the balloon to 64 MiB")
    s = stats(v)
    check("free_memory" in s and "total_memory" in s, f"no statistics from Linux: {s}")
    v.expect("PATCH", "/balloon", {"amount_mib": 0})
    v.wait_for(lambda: stats(v)["actual_mib"] == 0, 120, "Linux deflating the balloon")
    return (f"VmRSS {before} kB before the guest's dd, {high} kB after, {low} kB after Linux reported {s['wisp']['reported_bytes'] >> 20} "
            f"MiB free; inflated {s['wisp']['inflated_pages']} pages")


def run(args, tmp):
    root, (a, b) = images(tmp, args.init)
    extra = subprocess.run([os.path.join(REPO, "guest/kernel/cmdline-extra")],
                           capture_output=True, text=True, check=True).stdout.strip()
    v = Vmm(args.vmm, tmp)
    try:
        tap = "wlx%d" % (os.getpid() % 10000)
        boot_args = (f"console=ttyS0 reboot=k panic=1 pci=off {extra} init=/sbin/init "
                     "-- /bin/sh /api.sh")
        v.expect("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 160})
        v.expect("PUT", "/balloon", {"amount_mib": 0, "deflate_on_oom": True,
                                     "stats_polling_interval_s": 1})
        v.expect("PUT", "/drives/data", {"drive_id": "data", "path_on_host": a,
                                         "is_root_device": False, "is_read_only": True})
        v.expect("PUT", "/metrics", {"metrics_path": os.path.join(tmp, "metrics.json")})
        sh(os.path.join(HERE, "getting_started.sh"), v.sock, kernel(), root, boot_args, tap,
           os.path.join(tmp, "fc.log"))
        m = v.wait_console(r"^wisp-api: cmdline (.*)$", BOOT_TIMEOUT)
        check(re.search(r"init=/sbin/init root=/dev/vda rw .*-- /bin/sh /api\.sh$", m.group(1)),
              f"root=/dev/vda rw is not among the kernel's arguments: {m.group(1)}")
        m = v.wait_console(r"^wisp-api: root (\S+) (.*)$")
        check(m.group(1) == "/dev/root" or m.group(1) == "/dev/vda", f"root: {m.group(0)}")
        check(" rw" in m.group(2) or m.group(2).startswith("ext4 rw"), f"root: {m.group(0)}")
        v.wait_console(r"^wisp-api: vdb 2048$")
        last = pause_resume(v)
        v.expect("PUT", "/actions", {"action_type": "FlushMetrics"})
        v.wait_for(lambda: os.path.getsize(os.path.join(tmp, "metrics.json")), 5, "metrics")
        with open(os.path.join(tmp, "metrics.json")) as f:
            line = json.loads(f.readlines()[-1])
        check(line["block_rootfs"]["read_count"] > 0, f"no reads of the root drive: {line}")
        v.expect("PATCH", "/drives/data", {"drive_id": "data", "path_on_host": b})
        v.wait_console(r"^wisp-api: vdb 6144 IMAGE-B$", 120)
        before = rss_kib(v.p.pid)  # before the guest's dd (or, at worst, just after it)
        v.wait_console(r"^wisp-api: wrote and freed 16M$", 180)
        balloon = linux_balloon(v, before)
        v.wait_console(r"^wisp-api: waiting for ctrl-alt-del$", 60)
        dmesg = v.lines()
        check(re.search(r"^wisp-api: dmesg .*serio: i8042 KBD port at 0x60,0x64 irq \d+$", dmesg,
                        re.M), "Linux's i8042 driver did not find the keyboard port")
        check(re.search(r"^wisp-api: dmesg .*input: AT Translated Set 2 keyboard", dmesg, re.M),
              "atkbd did not find the keyboard")
        v.expect("PUT", "/actions", {"action_type": "SendCtrlAltDel"})
        code = v.wait_exit(120)
        check(code == 0, f"wisp-vmm exited with {code} after Ctrl-Alt-Del, not 0 (a reboot)")
    finally:
        v.stop()
        print(v.out()[-3000:])
    got = sh("debugfs", "-R", "cat /guest.txt", root).strip()
    check(got == "written by the guest", f"the root image has {got!r} in /guest.txt")
    print(f"paused after tick {last}, resumed at {last + 1}; reads of the root drive in the "
          f"metrics: {line['block_rootfs']['read_count']}; balloon: {balloon}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--init", required=True, help="guest/init/wisp-init")
    args = ap.parse_args()
    args.vmm, args.init = os.path.abspath(args.vmm), os.path.abspath(args.init)
    return run_in_tmp(run, args, dir=os.environ.get("WISP_CACHE", "/var/tmp"))


if __name__ == "__main__":
    sys.exit(main())
