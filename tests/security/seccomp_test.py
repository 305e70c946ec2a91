#!/usr/bin/env python3
"""The seccomp walls of wisp-vmm (docs/security.md): with the test-only trigger
WISP_SECCOMP_TEST=KIND, the first thread of that kind makes a call its filter forbids (execve;
a vCPU also socket()) right after loading its filter. Under --seccomp=log wisp-vmm must exit
with status 159 and the documented line naming the thread and the call; under --seccomp=on
(the default) the kernel must kill it with SIGSYS; under --seccomp=off the call just fails and
the VM runs to its end. Also: /proc/PID/status shows "Seccomp: 2" in every thread.

  seccomp_test.py --vmm VMM --demo DEMO_ELF --idle IDLE_ELF
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

CALLS = {"vcpu": ("socket", 41)}  # the others try execve (59)


def run(vmm, args, env_kind, timeout=60):
    env = dict(os.environ)
    env.pop("WISP_SECCOMP_TEST", None)
    if env_kind:
        env["WISP_SECCOMP_TEST"] = env_kind
    p = subprocess.run([vmm] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=timeout)
    return p.returncode, p.stderr.decode(errors="replace")


def check_kind(vmm, kind, args, failures, on_kills=True, log_rc=159):
    name, nr = CALLS.get(kind, ("execve", 59))
    want = "wisp-vmm: seccomp: the %s thread made a forbidden system call: %s (%d)" % (kind, name, nr)
    rc, err = run(vmm, args + ["--seccomp=log"], kind)
    if rc != log_rc or want not in err:
        failures.append("%s, --seccomp=log: status %d, stderr %r (want %d and %r)" % (kind, rc, err[-300:], log_rc, want))
    else:
        print("ok: %s, log: %s" % (kind, want))
    if on_kills:
        rc, err = run(vmm, args, kind)
        if rc != -signal.SIGSYS:
            failures.append("%s, --seccomp=on: status %d (want killed by SIGSYS), stderr %r" % (kind, rc, err[-300:]))
        else:
            print("ok: %s, on: killed by SIGSYS" % kind)
    rc, err = run(vmm, args + ["--seccomp=off"], kind)
    if rc != 0:
        failures.append("%s, --seccomp=off: status %d (want 0), stderr %r" % (kind, rc, err[-300:]))


def check_status(vmm, idle, failures):
    p = subprocess.Popen([vmm, "--kernel", idle, "--serial", "none"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        tids = os.listdir("/proc/%d/task" % p.pid)
        bad = []
        for tid in tids:
            with open("/proc/%d/task/%s/status" % (p.pid, tid)) as f:
                st = f.read()
            comm = open("/proc/%d/task/%s/comm" % (p.pid, tid)).read().strip()
            if not re.search(r"^Seccomp:\s+2$", st, re.M) or not re.search(r"^NoNewPrivs:\s+1$", st, re.M):
                bad.append(comm)
        if bad or len(tids) < 2:
            failures.append("threads without a filter: %s (of %d)" % (bad, len(tids)))
        else:
            print("ok: Seccomp: 2 and NoNewPrivs: 1 in all %d threads" % len(tids))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--demo", required=True)
    ap.add_argument("--idle", required=True)
    a = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        disk = os.path.join(tmp, "disk.img")
        with open(disk, "wb") as f:
            f.write(b"Hello from the demo disk.\n")
            f.truncate(1 << 20)
        base = ["--kernel", a.demo, "--mem", "64"]
        for kind in ("main", "spawner", "vcpu", "writer"):
            check_kind(a.vmm, kind, base, failures)
        check_kind(a.vmm, "block-io", base + ["--drive", "path=%s,format=raw" % disk], failures)
        check_kind(a.vmm, "pool", base + ["--drive", "path=%s,format=raw,aio=threads" % disk], failures)
        check_kind(a.vmm, "p9-io", base + ["--fs", "tag=share,path=%s" % tmp], failures)
        tap = "wscmp%d" % (os.getpid() % 10000)
        if subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"]).returncode == 0:
            try:
                check_kind(a.vmm, "net-io", base + ["--net", "tap=" + tap], failures)
            finally:
                subprocess.run(["ip", "link", "del", tap])
        else:
            failures.append("cannot create the tap %s" % tap)
        # the helper is a process of its own that outlives wisp-vmm (which ends with 0): its line
        # is checked under log; under on its death is silent
        check_kind(a.vmm, "teardown", base + ["--async-teardown"], failures, on_kills=False, log_rc=0)
    check_status(a.vmm, a.idle, failures)
    for f in failures:
        print("FAIL: " + f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
