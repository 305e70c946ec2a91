#!/usr/bin/env python3
"""wisp-vmm --uid/--gid (docs/security.md, "Privileges"): what the host sees of a VMM that gave
up its privileges, and that the VM it runs still serves its disk and NIC.

    privileges_test.py --vmm PATH --case NAME [--guest ELF]

Cases:
  status  a VM booted from the command line with a drive (root's, mode 0600) and a NIC (root's
          tap): /proc/PID/status shows the unprivileged uid and gid, no supplementary groups,
          no capability (effective, permitted, bounding, ambient), NoNewPrivs 1 and, when the
          binary offers --seccomp, Seccomp 2; an fd the parent passed is not open in it;
          SIGTERM still ends it (status 0)
  blk     the ring-3 virtio-blk guest writes and reads a raw image opened before the drop
  net     the ring-3 virtio-net guest pings the host through a tap opened before the drop
  api     --api-sock: dropped as soon as the socket listens, before any client; what the API
          opens later is opened as the user: a root-only image is refused with a message naming
          it, the user's own image is used (PATCH /drives media change), the VM ends with 0
  usage   --uid without --gid, --uid 0, a non-numeric id, --keep-caps without --uid or with a
          capability that is not a file capability: status 2 and the option named; then
          --keep-caps chown,fowner: every thread of the VMM (API socket listening) is the
          user with exactly CAP_CHOWN and CAP_FOWNER effective, permitted and bounding
"""
import argparse
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "virtio"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "api"))

UID = GID = 40114  # no such user on the test machines: nothing of it exists before the test
DROP = ["--uid", str(UID), "--gid", str(GID)]


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def offers_seccomp(vmm):
    p = subprocess.run([vmm, "--help"], capture_output=True, text=True)
    return "--seccomp" in p.stdout


def check_dropped(vmm, pid):
    """The walls a dropped wisp-vmm shows the host (the main thread's and every thread's)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        s = proc_status(f"{pid}/task/{tid}")
        what = f"thread {tid} ({s.get('Name')})"
        check(s["Uid"].split() == [str(UID)] * 4, f"{what}: Uid {s['Uid']}, expected {UID} x4")
        check(s["Gid"].split() == [str(GID)] * 4, f"{what}: Gid {s['Gid']}, expected {GID} x4")
        check(s.get("Groups", "").strip() == "", f"{what}: supplementary groups {s['Groups']}")
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            check(int(s[cap], 16) == 0, f"{what}: {cap} {s[cap]}, expected 0")
        check(s["NoNewPrivs"] == "1", f"{what}: NoNewPrivs {s['NoNewPrivs']}")
        if offers_seccomp(vmm):
            check(s["Seccomp"] == "2", f"{what}: Seccomp {s['Seccomp']}, expected 2 (filters)")
    return proc_status(pid)


def case_status(vmm, guest, tmp):
    from virtio_test import NetSession, net_args
    img = os.path.join(tmp, "disk.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    os.chmod(img, 0o600)  # root's: only an fd opened before the drop can use it
    marker = open(os.path.join(tmp, "inherited"), "w")
    os.set_inheritable(marker.fileno(), True)
    with NetSession() as s:
        s.taps("wp0")
        cmd = [vmm, "--kernel", guest, "--cmdline", "api.mode=count api.us=100000",
               "--serial", "file:" + os.path.join(tmp, "console"), "--drive", f"path={img}"] + \
            net_args("wisp", [("wp0", None, "")]) + DROP
        print("$ " + " ".join(cmd))
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, pass_fds=(marker.fileno(),))
        try:
            deadline = time.monotonic() + 20
            console = os.path.join(tmp, "console")
            while time.monotonic() < deadline and p.poll() is None:
                if os.path.exists(console) and "count 2" in open(console).read():
                    break
                time.sleep(0.05)
            check(p.poll() is None, f"wisp-vmm ended with status {p.returncode}")
            s = check_dropped(vmm, p.pid)
            print({k: s[k] for k in ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")})
            fds = {fd: os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd")}
            check(marker.name not in fds.values(), f"the inherited fd is still open: {fds}")
            check(any(v == img for v in fds.values()), f"the drive is not open: {fds}")
            p.send_signal(signal.SIGTERM)
            code = p.wait(5)
            check(code == 0, f"status {code} after SIGTERM, expected 0")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def case_blk(vmm, guest, tmp):
    import virtio_test
    virtio_test.blk_rw(vmm, guest, tmp, "raw", wisp_flags=DROP)


def case_net(vmm, guest, tmp):
    import virtio_test as vt
    with vt.NetSession() as s:
        s.taps("wp0")
        mac = "02:00:00:00:00:10"
        status, out, _ = vt.run(vmm, guest, vt.net_args(vmm, [("wp0", mac, "")]) + DROP, [],
                                vt.net_cmdline(f"net.mac0={mac}", "net.pings=4"))
        vt.net_check(s, vmm, status, out)


def case_api(vmm, guest, tmp):
    from apilib import Vmm
    os.chmod(tmp, 0o755)
    kvm = os.path.join(tmp, "kvm")  # /dev/kvm is root's 0600 here: a node the user may open
    st = os.stat("/dev/kvm")
    os.mknod(kvm, 0o600 | stat.S_IFCHR, st.st_rdev)
    os.chown(kvm, UID, GID)
    console = os.path.join(tmp, "vmm.console")
    open(console, "w").close()
    os.chown(console, UID, GID)
    mine, roots = os.path.join(tmp, "mine.img"), os.path.join(tmp, "roots.img")
    for path, text in ((mine, b"IMAGE-B\n"), (roots, b"IMAGE-R\n")):
        with open(path, "wb") as f:
            f.write(text)
            f.truncate(3 << 20)
    os.chmod(roots, 0o600)
    os.chown(mine, UID, GID)
    a = os.path.join(tmp, "a.img")
    with open(a, "wb") as f:
        f.write(b"IMAGE-A\n")
        f.truncate(1 << 20)
    os.chmod(a, 0o644)
    os.environ["WISP_KVM_DEVICE"] = kvm  # a WISP_* variable: kept through the drop
    v = Vmm(vmm, tmp, DROP)
    try:
        # before any client spoke to it: the drop follows listen() at once (under strace, in
        # seccomp_coverage.py, a connect can come first: it waits to be read)
        deadline = time.monotonic() + 5
        while proc_status(v.p.pid)["Uid"].split()[0] == "0" and time.monotonic() < deadline:
            time.sleep(0.01)
        check_dropped(vmm, v.p.pid)
        v.expect("PUT", "/boot-source", {"kernel_image_path": guest, "boot_args": "api.mode=media"})
        v.expect("PUT", "/drives/disk", {"drive_id": "disk", "path_on_host": a,
                                         "is_root_device": False, "is_read_only": True})
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
        v.wait_console(r"^media: 0 IMAGE-A 2048$")
        v.expect("PATCH", "/drives/disk", {"drive_id": "disk", "path_on_host": roots}, 400,
                 [roots, "Permission denied"])
        v.expect("PATCH", "/drives/disk", {"drive_id": "disk", "path_on_host": mine})
        v.wait_console(r"^media: 1 IMAGE-B 6144$")
        code = v.wait_exit()
        check(code == 0, f"the guest's exit status {code}")
    finally:
        v.stop()


def case_usage(vmm, guest, tmp):
    for args, want in ((["--uid", "5"], "--gid: missing"), (["--gid", "5"], "--uid: missing"),
                       (["--uid", "0", "--gid", "5"], "--uid: 0 is root's"),
                       (["--uid", "5", "--gid", "x"], "--gid: 'x' is not a numeric id"),
                       (["--keep-caps", "chown"], "--keep-caps: only with --uid and --gid"),
                       (DROP + ["--keep-caps", "chown,sys_admin"],
                        "--keep-caps: 'sys_admin' is not one of")):
        p = subprocess.run([vmm, "--api-sock", os.path.join(tmp, "s")] + args,
                           capture_output=True, text=True, timeout=10)
        check(p.returncode == 2 and want in p.stderr,
              f"{args}: status {p.returncode}, stderr {p.stderr!r}; expected 2 and {want!r}")
    # with --keep-caps everything is opened as the user: the socket's directory is the user's
    os.chmod(tmp, 0o755)
    own = os.path.join(tmp, "keep")
    os.mkdir(own)
    os.chown(own, UID, GID)
    sock = os.path.join(own, "keep.sock")
    p = subprocess.Popen([vmm, "--api-sock", sock] + DROP + ["--keep-caps", "chown,fowner"],
                         stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        check(p.poll() is None and os.path.exists(sock), f"wisp-vmm --keep-caps: {p.returncode}")
        want = (1 << 0) | (1 << 3)  # CAP_CHOWN, CAP_FOWNER
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            st = proc_status(f"{p.pid}/task/{tid}")
            got = {c: int(st[c], 16) for c in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
            check(st["Uid"].split() == [str(UID)] * 4 and
                  got == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want,
                          "CapAmb": 0} and st["NoNewPrivs"] == "1",
                  f"--keep-caps chown,fowner: thread {tid}: Uid {st['Uid']}, {got}")
        p.send_signal(signal.SIGTERM)
        check(p.wait(5) == 0, f"--keep-caps: status {p.returncode} after SIGTERM")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


CASES = {"status": case_status, "blk": case_blk, "net": case_net, "api": case_api,
         "usage": case_usage}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest")
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    a = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            CASES[a.case](a.vmm, a.guest, tmp)
    except Exception as e:
        if not isinstance(e, Failure) and type(e).__name__ != "Failure":
            raise
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
