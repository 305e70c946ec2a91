#!/usr/bin/env python3
"""wisp-oci's tests (suite 'oci'), one case per invocation:

  cli         no VM: usage errors (status 2), every command on an unknown id, create's
              refusals (missing or malformed config.json, a bad id, --systemd-cgroup, a taken
              id), and the state machine's wrong-state calls with runc's errors and status 1,
              on state directories whose monitor is a real process (alive: created, running,
              paused) or gone (stopped)
  containerd  a private containerd and ctr with --runc-binary wisp-oci (one VM each): a
              container that prints, exec, ps, kill SIGTERM reaching its trap, the exit status
              ctr reports, runc's wrong-state errors on a real container, cleanup after delete;
              then a -t terminal
  podman      podman --runtime wisp-oci with a temporary --root/--runroot: run --rm, exec,
              kill, stop, the exit status; cleanup
  netns       no engine: create/start in a netns and veth the test makes, jailed: the
              network both ways, the jail seen through /proc, chown in the rootfs; cleanup

  oci_test.py --oci build/src/oci/wisp-oci --case CASE
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "api"))
from apilib import Failure, check, run_in_tmp  # noqa: E402


def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


class Oci:
    def __init__(self, binary, root):
        self.binary, self.root = binary, root

    def __call__(self, *args, timeout=60, **kw):
        return run([self.binary, "--root", self.root] + list(args), timeout=timeout, **kw)

    def expect(self, args, status, msg):
        r = self(*args)
        check(r.returncode == status,
              f"wisp-oci {' '.join(args)}: status {r.returncode}, expected {status} "
              f"(stderr: {r.stderr.strip()})")
        if msg is not None:
            check(msg in r.stderr, f"wisp-oci {' '.join(args)}: stderr {r.stderr.strip()!r} "
                  f"does not say {msg!r}")
        return r


def write_bundle(path, args=("sh", "-c", "echo hi"), terminal=False, config=None):
    os.makedirs(os.path.join(path, "rootfs"), exist_ok=True)
    cfg = config or {
        "ociVersion": "1.0.2",
        "process": {"terminal": terminal, "user": {"uid": 0, "gid": 0}, "args": list(args),
                    "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "hostname": "wisp",
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)


def start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def fake_container(root, cid, bundle, status, pid, start=None):
    """A state directory as create leaves it, whose monitor is `pid` (a real process, or a pid
    that has ended): the state machine's checks need no VM."""
    d = os.path.join(root, cid)
    os.makedirs(d, mode=0o700)
    state = {"ociVersion": "1.0.2-dev", "id": cid, "pid": pid, "status": status,
             "bundle": bundle, "rootfs": bundle + "/rootfs", "created": "2026-01-01T00:00:00Z",
             "owner": "root", "annotations": {"a": "b"},
             "wisp": {"monitor_start_time": start if start is not None else start_time(pid)}}
    with open(os.path.join(d, "state.json"), "w") as f:
        json.dump(state, f)
    return d


def case_cli(args, tmp):
    root = os.path.join(tmp, "root")
    oci = Oci(args.oci, root)
    # usage errors: status 2, a message naming the problem
    for argv, msg in [([], None), (["bogus"], "no such command"), (["--bogus", "list"], "--bogus"),
                      (["state"], "requires exactly 1"), (["kill"], "requires a container id"),
                      (["start", "a", "b"], "requires exactly 1"),
                      (["--log-format", "xml", "list"], "unknown format")]:
        oci.expect(argv, 2, msg)
    check(oci("--help").returncode == 0 and "Usage: wisp-oci" in oci("--help").stdout, "--help")
    check("exec" in oci("exec", "--help").stdout, "exec --help")
    v = oci("--version")
    check(v.returncode == 0 and v.stdout.startswith("wisp-oci version "), f"--version: {v.stdout}")
    feats = json.loads(oci("features").stdout)
    check(feats["ociVersionMax"] == "1.0.2-dev" and feats["hooks"] == [], f"features: {feats}")
    # unknown ids: runc's message and status 1; delete --force succeeds
    for cmd in [["state"], ["start"], ["kill"], ["delete"], ["pause"], ["resume"], ["ps"],
                ["update", "--resources", "/dev/null"]]:
        oci.expect(cmd + ["nope"], 1, "container does not exist")
    oci.expect(["exec", "nope", "true"], 255, "container does not exist")
    oci.expect(["delete", "--force", "nope"], 0, None)
    r = oci("list", "--format", "json")
    check(r.returncode == 0 and r.stdout.strip() == "null", f"list of none: {r.stdout!r}")
    # create's refusals
    b = os.path.join(tmp, "bundle")
    write_bundle(b)
    oci.expect(["create", "--bundle", os.path.join(tmp, "none"), "c1"], 1, "chdir")
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    oci.expect(["create", "--bundle", empty, "c1"], 1,
               "JSON specification file config.json not found")
    bad = os.path.join(tmp, "bad")
    os.makedirs(os.path.join(bad, "rootfs"))
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write('{"ociVersion": "1.0.2", "process": ')
    oci.expect(["create", "--bundle", bad, "c1"], 1, "malformed JSON")
    for cfg, msg in [({"ociVersion": "1.0.2", "root": {"path": "rootfs"}}, "process: missing"),
                     ({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                       "process": {"args": [], "cwd": "/"}}, "args: must not be empty"),
                     ({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                       "process": {"args": ["sh"], "cwd": "rel"}}, "cwd: must be an absolute"),
                     ({"ociVersion": "1.0.2", "root": {"path": "nowhere"},
                       "process": {"args": ["sh"], "cwd": "/"}}, "root.path"),
                     ({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                       "process": {"args": ["sh"], "cwd": "/"},
                       "hooks": {"prestart": [{"path": "/bin/true"}]}}, "hooks are not supported")]:
        write_bundle(bad, config=cfg)
        oci.expect(["create", "--bundle", bad, "c1"], 1, msg)
    write_bundle(bad, terminal=True)
    oci.expect(["create", "--bundle", bad, "c1"], 1, "cannot allocate tty")
    oci.expect(["create", "--bundle", b, "bad/id"], 1, "invalid container ID format")
    oci.expect(["create", "--bundle", b, ".."], 1, "invalid container ID format")
    oci.expect(["--systemd-cgroup", "create", "--bundle", b, "c1"], 1, "--systemd-cgroup")
    check(not os.path.exists(os.path.join(root, "c1")), "a refused create left its directory")
    # --log --log-format json: the error is a JSON line in the log (containerd reads it) and
    # plain text on stderr (podman shows it)
    log = os.path.join(tmp, "log.json")
    r = oci("--log", log, "--log-format", "json", "start", "nope")
    with open(log) as f:
        entry = json.loads(f.read().splitlines()[-1])
    check(entry["level"] == "error" and entry["msg"] == "container does not exist" and
          "time" in entry, f"log.json: {entry}")
    check(r.stderr.strip() == "container does not exist", f"stderr with --log: {r.stderr!r}")

    # the state machine on state directories whose monitor is a real process
    live = subprocess.Popen(["sleep", "60"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        fake_container(root, "run1", b, "running", live.pid)
        fake_container(root, "crt1", b, "created", live.pid)
        fake_container(root, "pau1", b, "paused", live.pid)
        fake_container(root, "stp1", b, "running", gone.pid, 1)  # its monitor ended: stopped
        st = json.loads(oci("state", "run1").stdout)
        check(st["status"] == "running" and st["pid"] == live.pid and st["bundle"] == b and
              st["annotations"] == {"a": "b"} and st["rootfs"] == b + "/rootfs" and
              list(st)[:5] == ["ociVersion", "id", "pid", "status", "bundle"], f"state: {st}")
        st = json.loads(oci("state", "stp1").stdout)
        check(st["status"] == "stopped" and st["pid"] == 0, f"a stopped container's state: {st}")
        oci.expect(["create", "--bundle", b, "run1"], 1, "container with given ID already exists")
        oci.expect(["start", "run1"], 1, "cannot start an already running container")
        oci.expect(["start", "stp1"], 1, "cannot start a container that has stopped")
        oci.expect(["start", "pau1"], 1, "cannot start a container in the paused state")
        oci.expect(["delete", "run1"], 1, "cannot delete container run1 that is not stopped: running")
        oci.expect(["delete", "pau1"], 1, "cannot delete container pau1 that is not stopped: paused")
        oci.expect(["kill", "stp1"], 1, "container not running")
        oci.expect(["kill", "stp1", "KILL"], 1, "container not running")
        oci.expect(["kill", "run1", "NOSUCH"], 1, 'unknown signal')
        oci.expect(["pause", "stp1"], 1, "container not running")
        oci.expect(["pause", "crt1"], 1, "container not running")
        oci.expect(["resume", "run1"], 1, "container not paused")
        oci.expect(["exec", "stp1", "true"], 255, "cannot exec in a stopped container")
        oci.expect(["exec", "pau1", "true"], 255, "cannot exec in a paused container")
        oci.expect(["ps", "stp1"], 1, "container not running")
        r = oci("ps", "--format", "json", "run1")
        check(json.loads(r.stdout) == [live.pid], f"ps --format json: {r.stdout!r}")
        r = oci("list", "--format", "json")
        listed = {c["id"]: c["status"] for c in json.loads(r.stdout)}
        check(listed == {"run1": "running", "crt1": "created", "pau1": "paused",
                         "stp1": "stopped"}, f"list: {listed}")
        check(oci("list", "-q").stdout.split() == ["crt1", "pau1", "run1", "stp1"], "list -q")
        # delete of a stopped container removes its directory
        oci.expect(["delete", "stp1"], 0, None)
        check(not os.path.exists(os.path.join(root, "stp1")), "delete left the directory")
        oci.expect(["state", "stp1"], 1, "container does not exist")
        # a directory without state.json (a create that died) is removed by delete
        os.makedirs(os.path.join(root, "half"))
        oci.expect(["state", "half"], 1, "container does not exist")
        oci.expect(["delete", "half"], 1, "container does not exist")
        check(not os.path.exists(os.path.join(root, "half")), "delete left a half-made directory")
        # delete --force of a running container kills its monitor
        oci.expect(["delete", "--force", "run1"], 0, None)
        check(live.wait(timeout=10) == -signal.SIGKILL, "delete --force did not kill the monitor")
        check(not os.path.exists(os.path.join(root, "run1")), "delete --force left the directory")
        kill_while_ending(args, root, b)
    finally:
        live.kill()
        live.wait()


def kill_while_ending(args, root, b):
    """kill of a running container whose agent does not answer (its VM gone, its monitor still
    ending it): retried while the monitor lives, given up as soon as it has ended (it was retried
    until the 120 s deadline, which bench/oci's kill then delete of 10 containers hit)."""
    ending = subprocess.Popen(["sleep", "60"])
    k = None
    try:
        fake_container(root, "end1", b, "running", ending.pid)
        k = subprocess.Popen([args.oci, "--root", root, "kill", "end1", "TERM"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        check(k.poll() is None, "kill gave up on the agent while the monitor still ran")
        ending.kill()
        ending.wait()
        t0 = time.monotonic()
        try:
            _, err = k.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            raise Failure("kill went on waiting for the agent after the monitor had ended")
        check(time.monotonic() - t0 < 3 and k.returncode == 1 and "kill end1" in err,
              f"kill after the monitor ended: status {k.returncode} in "
              f"{time.monotonic() - t0:.1f} s, stderr {err.strip()!r}")
    finally:
        ending.kill()
        ending.wait()
        if k and k.poll() is None:
            k.kill()
            k.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oci", required=True)
    ap.add_argument("--case", required=True,
                    choices=["cli", "containerd", "podman", "template", "netns"])
    ap.add_argument("--no-jail", action="store_true",
                    help="netns: skip the jail's checks (a wisp-oci run with \"jail\": false)")
    ap.add_argument("--jailer",
                    help="netns: wisp-oci runs this wisp-jailer (oci.json's \"jailer\", in a "
                         "WISP_OCI_CONFIG of the test's) instead of jailing in-process")
    args = ap.parse_args()
    args.oci = os.path.abspath(args.oci)
    if args.jailer:
        cfg = tempfile.NamedTemporaryFile("w", prefix="wisp-oci-jailer-", suffix=".json",
                                          delete=False)
        json.dump({"jailer": os.path.abspath(args.jailer)}, cfg)
        cfg.close()
        os.environ["WISP_OCI_CONFIG"] = cfg.name
    fn = {"cli": case_cli}.get(args.case)
    if fn is None:
        need = {"containerd": ["containerd", "ctr"], "podman": ["podman", "conmon"],
                "template": ["containerd", "ctr"], "netns": ["ip", "tc", "busybox"]}[args.case]
        missing = [p for p in need if not shutil.which(p)]
        if missing:
            print(f"SKIP: {', '.join(missing)} not installed (scripts/debian-packages.txt)")
            return 77
        kernel = subprocess.run([os.path.join(REPO, "guest/kernel/build.sh"), "--print-path"],
                                capture_output=True)
        if kernel.returncode != 0 and "WISP_OCI_CONFIG" not in os.environ:
            print("SKIP: the kit's kernel is not built (guest/kernel/build.sh)")
            return 77
        from oci_engines import CASES  # the cases with real engines
        from oci_netns import CASES as NETNS_CASES
        fn = {**CASES, **NETNS_CASES}[args.case]
    return run_in_tmp(fn, args, prefix="wisp-oci-")


if __name__ == "__main__":
    sys.exit(main())
