#!/usr/bin/env python3
"""wispd's automatic balloon (docs/memory.md, "The automatic balloon") with a real wispd, real
jailed wisp-vmm processes and guest/balloon_auto.c: simulated host pressure (wispd's
--reclaim psi=FILE: a file in PSI's format the test writes) makes wispd inflate the opted-in
idle VM up to its floor and leave the opted-out one alone, and the VMM's RSS drops; the guest's
own pressure (its statistics) and its deflate on OOM get memory back; the end of the pressure
deflates. The real /proc/pressure/memory gets a PSI trigger.

  reclaim_test.py --wispd W --wisp C --vmm V --guest G --case CASE
"""
import json
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "snapshot"))
import ops_test  # noqa: E402
import snaplib  # noqa: E402
import wispd_test as wt  # noqa: E402

CALM = "some avg10=0.00 avg60=0.00 avg300=0.00 total=100\nfull avg10=0.00 avg60=0.00 " \
       "avg300=0.00 total=0\n"
PRESSURE = "some avg10=42.00 avg60=20.00 avg300=5.00 total=9000000\nfull avg10=10.00 " \
           "avg60=5.00 avg300=1.00 total=100000\n"


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_for(what, fn, timeout=20):
    """As wispd_test's, but looking every 0.1 s: each look is a request to wispd and one from
    it to the VMM, and the guests' statistics come once a second anyway."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def balloon(d, name):
    """The stats' balloon (GET /v1/vms/NAME/stats, what `wisp stats --json` prints)."""
    return snaplib.api(d.sock, "GET", f"/v1/vms/{name}/stats")[1].get("balloon")


def console_log(d, name):
    c = socket.socket(socket.AF_UNIX)
    c.connect(d.sock)
    c.sendall(f"GET /v1/vms/{name}/log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
              .encode())
    got = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        got += b
    c.close()
    return got.decode(errors="replace")


def events(d, kind):
    out = []
    for line in d.wisp("events", "--json", check=0).stdout.splitlines():
        e = json.loads(line)
        if e["kind"] == kind:
            out.append(e)
    return out


def say(d, name, command, needle):
    ops_test.console_says(d, name, command, needle)


def case_psi_trigger(d):
    """The host's own PSI file: a trigger (some 200 ms in 2 s) on wispd's loop."""
    d.start()
    r = snaplib.api(d.sock, "GET", "/v1/reclaim")[1]
    assert r["source"] == "psi-trigger" and r["config"]["psi"] == "/proc/pressure/memory", r
    assert "PSI trigger on /proc/pressure/memory" in open(os.path.join(d.tmp, "wispd.log")).read()
    d.stop()
    d.extra = ["--reclaim", "off"]
    d.start()
    assert snaplib.api(d.sock, "GET", "/v1/reclaim")[1] == {"source": "off"}
    d.stop()


def case_auto(d):
    psi = os.path.join(d.tmp, "pressure")
    open(psi, "w").write(CALM)
    d.extra = ["--reclaim", f"psi={psi},interval_ms=200,calm_s=1,step_mib=48,holdoff_s=2,"
               "window_s=2"]
    d.start()
    r = snaplib.api(d.sock, "GET", "/v1/reclaim")[1]
    assert r["source"] == "psi-file" and not r["pressure"], r
    auto = {"auto": True, "auto_min_mib": 48, "auto_margin_mib": 16}
    # what define refuses (status 2 of wisp: a 400)
    for bad in ({"auto": True, "stats_polling_interval_s": 0}, {"auto_min_mib": 8},
                {"auto": True, "auto_min_mib": 100, "amount_mib": 40}, {"auto": 1}):
        r = d.define("bad", memory_mib=128, balloon=bad)
        assert r.returncode != 0 and "balloon" in r.stderr, (bad, r.stderr)
    d.define("idle", memory_mib=128, stop_timeout_s=0, balloon=auto, check=0)
    d.define("off", memory_mib=128, stop_timeout_s=0, check=0,
             balloon={"amount_mib": 0, "deflate_on_oom": True, "stats_polling_interval_s": 1})
    filled = d.vms()["idle"]["definition"]["balloon"]
    assert filled == dict(auto, amount_mib=0, deflate_on_oom=True, stats_polling_interval_s=1), \
        filled
    for n in ("idle", "off"):
        d.wisp("start", n, check=0)
    for n in ("idle", "off"):
        wait_for(n + " ready", lambda: "auto: stats 2" in console_log(d, n))
    vms = d.vms()
    vmm = wt.vmm_of(vms["idle"]["pid"])
    off_sock = vms["off"]["api_sock"]
    time.sleep(1)  # calm: nothing moves
    assert balloon(d, "idle")["target_mib"] == 0 and balloon(d, "off") is None
    before = rss_kib(vmm)

    # host pressure: the idle guest (119 MiB available, margin 16) gives 48 MiB, then 32 more
    # up to its floor (128 - 48 = 80 MiB); the opted-out VM gives nothing
    open(psi, "w").write(PRESSURE)
    wait_for("idle inflated to its floor", lambda: (
        lambda b: b["target_mib"] == 80 and b["actual_mib"] == 80)(balloon(d, "idle")))
    after = rss_kib(vmm)
    print(f"idle's VMM: VmRSS {before} kB -> {after} kB with 80 MiB in the balloon")
    assert before - after >= 72 * 1024, (before, after)
    s = snaplib.api(off_sock, "GET", "/balloon/statistics")[1]
    assert s["target_mib"] == 0 and s["actual_mib"] == 0, s
    assert [e["event"] for e in events(d, "pressure")] == \
        ["host memory pressure: some avg10 42.00% (from 10.00%)"], events(d, "pressure")
    steps = [e["event"] for e in events(d, "balloon") if e["vm"] == "idle"]
    assert steps[0].startswith("inflate 0 -> 48 MiB: host pressure") and \
        steps[1].startswith("inflate 48 -> 80 MiB"), steps
    assert not [e for e in events(d, "balloon") if e["vm"] == "off"]
    text = d.wisp("stats", "idle", check=0).stdout
    assert "BALLOON" in text and "80/80 MiB" in text, text
    # wisp-vmm's metrics (GET /wisp/metrics, in the stats' vmm) carry every balloon's target
    for n, want in (("idle", 80), ("off", 0)):
        m = json.loads(d.wisp("stats", "--json", n, check=0).stdout)["vmm"]["balloon"]
        assert m == {"target_mib": want, "actual_mib": want}, (n, m)

    # a wispd killed with -9 and started again reads the reattached VM's balloon from its VMM
    d.kill9()
    d.start()
    wait_for("the balloon read again", lambda: (lambda b: b and b["target_mib"] == 80 and
                                                 b["actual_mib"] == 80)(balloon(d, "idle")))
    assert d.vms()["idle"]["pid"] == vms["idle"]["pid"]

    # the guest's own pressure: it uses 60 MiB, its available memory falls to nothing: wispd
    # gives back until it has half its margin again, and holds it off the host's side
    say(d, "idle", "use 60", "auto: use 60")
    b = wait_for("idle given memory back", lambda: (lambda b: b["target_mib"] <= 56 and
                                                    b["actual_mib"] == b["target_mib"] and
                                                    b.get("available_mib", 0) >= 8 and b)(
        balloon(d, "idle")))
    needs = [e for e in events(d, "balloon") if "the guest needs memory" in e["event"]]
    assert needs and needs[0]["event"].startswith("deflate 80 -> 64 MiB"), needs
    time.sleep(2.5)  # the hold-off, with the host still under pressure: no inflate past margin
    b2 = balloon(d, "idle")
    assert b2["target_mib"] <= b["target_mib"], (b, b2)

    # idle again: after the window the host side takes it back to the floor
    say(d, "idle", "use 0", "auto: use 0")
    wait_for("idle inflated again", lambda: balloon(d, "idle")["actual_mib"] == 80, 20)

    # the guest deflates on OOM by itself: wispd takes its word (target = actual)
    say(d, "idle", "oom 32", "auto: oom deflated to 12288")
    wait_for("the target follows the guest", lambda: balloon(d, "idle")["target_mib"] == 48)
    assert [e for e in events(d, "balloon") if "deflated on OOM" in e["event"]]

    # a hung VMM costs its request's deadline and a line in the log, never wispd's loop
    os.kill(vmm, signal.SIGSTOP)
    try:
        wait_for("the request's deadline", lambda: "wispd: reclaim: idle: " in
                 open(os.path.join(d.tmp, "wispd.log")).read(), 10)
        assert snaplib.api(d.sock, "GET", "/v1/reclaim", timeout=5)[0] == 200
        assert d.vms()["off"]["state"] == "running"
    finally:
        os.kill(vmm, signal.SIGCONT)

    # the pressure ends: after calm_s the balloon goes back to amount_mib (0)
    open(psi, "w").write(CALM)
    wait_for("idle deflated", lambda: (lambda b: b["target_mib"] == 0 and b["actual_mib"] == 0)(
        balloon(d, "idle")), 20)
    over = events(d, "pressure")[-1]["event"]
    assert over == "host memory pressure over: some avg10 low for 1 s", over
    r = json.loads(d.wisp("reclaim", check=0).stdout)
    assert not r["pressure"] and r["level"] == "low" and [v["name"] for v in r["vms"]] == \
        ["idle"], r
    assert d.wisp("reclaim", "x").returncode == 2 and "usage: wisp reclaim" in \
        d.wisp("help", "reclaim").stdout + d.wisp("reclaim", "--help").stdout
    s = snaplib.api(off_sock, "GET", "/balloon/statistics")[1]
    assert s["target_mib"] == 0 and s["wisp"]["inflated_pages"] == 0, s
    for e in events(d, "balloon"):
        print(f"  {e['vm']}: {e['event']}")
    for n in ("idle", "off"):
        d.wisp("rm", "-f", n, check=0)
    d.stop()


if __name__ == "__main__":
    wt.main_with(globals(), wt.Daemon)
