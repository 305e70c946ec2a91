#!/usr/bin/env python3
"""wisp-vmm's REST API (docs/api.md) over its unix socket, with a real HTTP client (Python's
http.client) and every answer checked against Firecracker's schema (apilib.py). One case per run:

  resources    every resource before and after InstanceStart, and every documented error
  malformed    malformed input of each kind: bad JSON, not an object, duplicate keys, NULs,
               unknown fields, wrong types, oversize bodies, unknown paths and methods
  clients      clients that misbehave while a guest runs and counts: one byte a second, a
               half-close, 200 connections at once, bytes that are not HTTP, a huge
               Content-Length, a huge header; the guest keeps counting, others are answered,
               SIGTERM still ends wisp-vmm
  pause        PATCH /vm Paused: the counting guest prints nothing until Resumed, then goes
               on from the next number
  media        PATCH /drives/{id} path_on_host: the guest sees the new image and its size
  socket-fd    --api-sock-fd: a socket the test bound and listens on is handed over; the
               whole configuration is sent before wisp-vmm runs and the guest boots; the
               path is the binder's (left); fds that are not a listening unix stream
               socket, and both API options at once, are usage errors
  config-file  --config-file boots at once; GET /vm/config given back as a config file makes
               the same VM; options win over the file; a bad balloon is an error that names
               them; without a kernel and without --api-sock, status 2

  api_test.py --vmm WISP_VMM --guest API_GUEST_ELF --case CASE
"""
import argparse
import json
import os
import socket
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from apilib import Failure, Vmm, check, request, run_in_tmp  # noqa: E402


def start_counting(v, guest, extra=""):
    v.expect("PUT", "/boot-source", {"kernel_image_path": guest,
                                     "boot_args": f"api.mode=count {extra}".strip()})
    v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
    v.wait_console(r"^count 3$")


def last_count(v):
    """The guest's last whole "count N" line (one being written is not one yet: a CI run read
    "count " without its number)."""
    lines = [l.split() for l in v.lines().splitlines() if l.startswith("count ")]
    counts = [int(w[1]) for w in lines if len(w) == 2 and w[1].isdigit()]
    return counts[-1] if counts else 0


def image(tmp, name, text, size):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(text.encode() + b"\n")
        f.truncate(size)
    return path


# ---- resources ------------------------------------------------------------------------------

def machine_config(v):
    d = v.expect("GET", "/machine-config", status=200)
    check(d["vcpu_count"] == 1 and d["mem_size_mib"] == 128 and d["smt"] is False,
          f"defaults: {d}")
    v.expect("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256})
    v.expect("PATCH", "/machine-config", {"mem_size_mib": 192, "track_dirty_pages": True})
    d = v.expect("GET", "/machine-config", status=200)
    check((d["vcpu_count"], d["mem_size_mib"], d["track_dirty_pages"]) == (2, 192, True), str(d))
    bad = [({"mem_size_mib": 256}, "vcpu_count: missing"),
           ({"vcpu_count": "2", "mem_size_mib": 256}, "vcpu_count: expected an integer"),
           ({"vcpu_count": 0, "mem_size_mib": 256}, "vcpu_count: 0 is out of range"),
           ({"vcpu_count": 1, "mem_size_mib": 1}, "mem_size_mib: 1 is out of range"),
           ({"vcpu_count": 1, "mem_size_mib": -5}, "out of range"),
           ({"vcpu_count": 2, "mem_size_mib": 256, "smt": True}, "SMT"),
           ({"vcpu_count": 1, "mem_size_mib": 256, "mem_backend": "tmpfs"}, "is not anon, memfd"),
           ({"vcpu_count": 1, "mem_size_mib": 256, "huge_pages": "2M", "mem_backend": "memfd"},
            "contradicts"),
           ({"vcpu_count": 1, "mem_size_mib": 256, "thp": "yes"}, "thp: 'yes' is not on or off"),
           ({"vcpu_count": 1, "mem_size_mib": 256, "huge_pages": "1G"}, "not None"),
           ({"vcpu_count": 1, "mem_size_mib": 256, "cpu_template": "T2"}, "CPU templates"),
           ({"vcpu_count": 1, "mem_size_mib": 256, "cpus": 4}, "unknown field 'cpus'")]
    for body, msg in bad:
        v.expect("PUT", "/machine-config", body, status=400, contains=msg)
    d = v.expect("GET", "/machine-config", status=200)
    check((d["vcpu_count"], d["mem_size_mib"]) == (2, 192), f"a refused PUT changed it: {d}")
    # Firecracker's huge_pages "2M" is wisp's hugetlbfs backend (docs/memory.md)
    v.expect("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"})
    d = v.expect("GET", "/machine-config", status=200)
    check((d["huge_pages"], d["mem_backend"]) == ("2M", "hugetlbfs"), f"huge_pages 2M: {d}")
    v.expect("PATCH", "/machine-config", {"mem_backend": "memfd", "ksm": False, "thp": "off"})
    d = v.expect("GET", "/machine-config", status=200)
    check((d["huge_pages"], d["mem_backend"], d["thp"]) == ("None", "memfd", "off"), str(d))
    v.expect("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})


def boot_source(v, guest, tmp):
    missing = os.path.join(tmp, "no-such-kernel")
    v.expect("PUT", "/boot-source", {"boot_args": "x"}, 400, "kernel_image_path: missing")
    v.expect("PUT", "/boot-source", {"kernel_image_path": missing}, 400, missing)
    v.expect("PUT", "/boot-source", {"kernel_image_path": tmp}, 400, "directory")
    v.expect("PUT", "/boot-source", {"kernel_image_path": guest, "initrd_path": missing}, 400,
             "initrd_path")
    v.expect("PUT", "/boot-source", {"kernel_image_path": guest, "boot_args": 7}, 400,
             "boot_args: expected a string")
    v.expect("PUT", "/boot-source", {"kernel_image_path": guest,
                                     "boot_args": "api.mode=count api.us=2000"})


def drives(v, tmp):
    a = image(tmp, "a.img", "IMAGE-A", 1 << 20)
    b = image(tmp, "b.img", "IMAGE-B", 1 << 20)
    ok = {"drive_id": "rootfs", "path_on_host": a, "is_root_device": True,
          "is_read_only": False}
    v.expect("PUT", "/drives/rootfs", ok)
    bad = [("other", ok, "does not match the id from the body"),
           ("data", {"drive_id": "data", "path_on_host": b}, "is_root_device: missing"),
           ("data", {"drive_id": "data", "path_on_host": b, "is_root_device": True},
            "A root block device already exists"),
           ("data", {"drive_id": "data", "path_on_host": tmp + "/none", "is_root_device": False},
            "No such file"),
           ("data", {"drive_id": "data", "path_on_host": b, "is_root_device": False,
                     "cache_type": "Fast"}, "cache_type"),
           ("data", {"drive_id": "data", "path_on_host": b, "is_root_device": False,
                     "io_engine": "Magic"}, "io_engine"),
           ("data", {"drive_id": "data", "is_root_device": False, "socket": "/x"},
            "vhost-user-block"),
           ("data", {"drive_id": "data", "path_on_host": b, "is_root_device": False,
                     "rate_limiter": {"bandwidth": {"size": 10}}}, "refill_time: missing"),
           ("data", {"drive_id": "data", "path_on_host": b, "is_root_device": False,
                     "rate_limiter": {"bw": {}}}, "unknown field 'bw'"),
           ("data", {"drive_id": "data", "path_on_host": b, "is_root_device": False,
                     "throttle": {"iops": 10, "iops_read": 5}}, "cannot be combined"),
           ("data", {"drive_id": "data", "path_on_host": b, "is_root_device": False,
                     "format": "vmdk"}, "format"),
           ("x.y", {"drive_id": "x.y", "path_on_host": b, "is_root_device": False},
            "letters, digits")]
    for pid, body, msg in bad:
        v.expect("PUT", f"/drives/{pid}", body, 400, msg)
    v.expect("PUT", "/drives/data", {
        "drive_id": "data", "path_on_host": b, "is_root_device": False, "is_read_only": True,
        "cache_type": "Writeback", "io_engine": "Async",
        "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100},
                         "ops": {"size": 100, "one_time_burst": 50, "refill_time": 1000}}})
    return a, b


def network(v):
    tap = "wispapi%d" % (os.getpid() % 1000)
    ok = {"iface_id": "net1", "host_dev_name": tap, "guest_mac": "02:fc:00:00:00:05"}
    bad = [("net2", ok, "does not match"),
           ("net1", {"iface_id": "net1"}, "host_dev_name: missing"),
           ("net1", dict(ok, guest_mac="03:00:00:00:00:01"), "unicast"),
           ("net1", dict(ok, guest_mac="zz"), "guest_mac"),
           ("net1", dict(ok, host_dev_name="a-name-that-is-too-long"), "15 characters"),
           ("net1", dict(ok, mtu=1400), "mtu"),
           ("rootfs", dict(ok, iface_id="rootfs"), "a drive has the id")]
    for pid, body, msg in bad:
        v.expect("PUT", f"/network-interfaces/{pid}", body, 400, msg)
    v.expect("PUT", "/network-interfaces/net1", dict(ok, tx_rate_limiter={
        "bandwidth": {"size": 100000, "refill_time": 100}}))
    return tap


def logger_metrics(v, tmp):
    log, metrics = os.path.join(tmp, "log.txt"), os.path.join(tmp, "metrics.json")
    v.expect("PUT", "/logger", {"log_path": log, "level": "Loud"}, 400, "level")
    v.expect("PUT", "/logger", {"log_path": log, "module": "x"}, 400, "module")
    v.expect("PUT", "/logger", {"log_path": tmp}, 400, "directory")
    v.expect("PUT", "/logger", {"log_path": log, "level": "Info", "show_level": True,
                                "show_log_origin": True})
    v.expect("PUT", "/metrics", {}, 400, "metrics_path: missing")
    v.expect("PUT", "/metrics", {"metrics_path": metrics})
    v.expect("PUT", "/metrics", {"metrics_path": metrics}, 400, "already")
    v.expect("PUT", "/entropy", {"rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}, 400,
             "bytes only")
    v.expect("PUT", "/entropy", {"rate_limiter": {"bandwidth": {"size": 4096,
                                                                "refill_time": 100}}})
    return log, metrics


def vsock(v, tmp):
    uds = os.path.join(tmp, "v.sock")
    v.expect("PUT", "/vsock", {"uds_path": uds}, 400, "guest_cid: missing")
    v.expect("PUT", "/vsock", {"guest_cid": 3}, 400, "uds_path: missing")
    v.expect("PUT", "/vsock", {"guest_cid": 2, "uds_path": uds}, 400, "guest_cid: 2 is outside")
    v.expect("PUT", "/vsock", {"guest_cid": 3, "uds_path": ""}, 400, "uds_path")
    v.expect("PUT", "/vsock", {"guest_cid": 3, "uds_path": "/" + "x" * 200}, 400, "uds_path")
    v.expect("PUT", "/vsock", {"guest_cid": "3", "uds_path": uds}, 400, "guest_cid")
    v.expect("PUT", "/vsock", {"guest_cid": 3, "uds_path": uds, "port": 1}, 400,
             "unknown field 'port'")
    v.expect("PUT", "/vsock", {"guest_cid": 4, "uds_path": uds, "vsock_id": "old"})
    v.expect("PUT", "/vsock", {"guest_cid": 3, "uds_path": uds})  # a second PUT replaces it
    return uds


def not_supported(v):
    v.expect("PUT", "/balloon", {}, 400, "amount_mib: missing")  # the balloon: docs/memory.md
    v.expect("GET", "/balloon", None, 400, "no balloon device")
    v.expect("PATCH", "/balloon", {"amount_mib": 1}, 400, "no balloon device")
    for method, path, word in [("PUT", "/mmds", "MMDS"),
                               ("PUT", "/cpu-config", "CPU templates")]:
        v.expect(method, path, {}, 400, ["not supported", word])
    # Firecracker's: a runtime action, refused before InstanceStart
    v.expect("PUT", "/actions", {"action_type": "SendCtrlAltDel"}, 400,
             ["not supported before starting the microVM", "SendCtrlAltDel"])
    v.expect("PUT", "/actions", {"action_type": "Reboot"}, 400, "action_type")
    v.expect("PATCH", "/drives/rootfs", {"drive_id": "rootfs"}, 400, "before starting")
    v.expect("PATCH", "/network-interfaces/net1", {"iface_id": "net1"}, 400, "before starting")
    v.expect("PATCH", "/vm", {"state": "Paused"}, 400, "Not started")


def after_start(v, guest, a, b, log, metrics):
    info = v.expect("GET", "/", status=200)
    check(info["state"] == "Running", str(info))
    for method, path, body in [
            ("PUT", "/boot-source", {"kernel_image_path": guest}),
            ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
            ("PATCH", "/machine-config", {"vcpu_count": 1}),
            ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": a,
                                       "is_root_device": True}),
            ("PUT", "/network-interfaces/net1", {"iface_id": "net1", "host_dev_name": "x"}),
            ("PUT", "/entropy", {})]:
        v.expect(method, path, body, 400, "not supported after starting the microVM")
    v.expect("PUT", "/actions", {"action_type": "InstanceStart"}, 400, "starts only once")
    v.expect("PATCH", "/drives/rootfs", {"drive_id": "rootfs", "rate_limiter": {
        "bandwidth": {"size": 2097152, "refill_time": 100}}})
    v.expect("PATCH", "/drives/nope", {"drive_id": "nope", "path_on_host": b}, 400, "no drive")
    v.expect("PATCH", "/drives/rootfs", {"drive_id": "rootfs"}, 400, "nothing to change")
    v.expect("PATCH", "/drives/rootfs", {"drive_id": "rootfs", "is_read_only": True}, 400,
             "unknown field 'is_read_only'")
    v.expect("PATCH", "/network-interfaces/net1", {"iface_id": "net1", "rx_rate_limiter": {
        "bandwidth": {"size": 50000, "refill_time": 100}, "ops": {"size": 10,
                                                                 "refill_time": 100}}})
    v.expect("PATCH", "/network-interfaces/net9", {"iface_id": "net9"}, 400, "no network")
    v.expect("PATCH", "/vm", {"state": "Frozen"}, 400, "Paused or Resumed")
    # the i8042's keyboard takes the keys (this guest has no keyboard driver: they wait unread)
    v.expect("PUT", "/actions", {"action_type": "SendCtrlAltDel"})
    v.expect("PUT", "/actions", {"action_type": "FlushMetrics"})
    v.wait_for(lambda: os.path.getsize(metrics) > 0, 5, "a metrics line")
    with open(metrics) as f:
        lines = [json.loads(line) for line in f]
    for key in ("utc_timestamp_ms", "block", "net", "block_rootfs", "block_data", "net_net1"):
        check(key in lines[-1], f"the metrics line lacks {key}: {lines[-1]}")
    check(lines[-1]["block_rootfs"]["read_count"] >= 0, str(lines[-1]))
    v.wait_for(lambda: "PUT /actions" in open(log).read(), 5, "the API's lines in the log")
    check("[Info]" in open(log).read(), "show_level: no [Info] in the log")


def case_resources(args, tmp):
    v = Vmm(args.vmm, tmp, ["--id", "api-test-1"])
    try:
        info = v.expect("GET", "/", status=200)
        check(info == {"id": "api-test-1", "state": "Not started", "vmm_version":
                       info["vmm_version"], "app_name": "wisp-vmm"}, str(info))
        v.expect("GET", "/version", status=200)
        v.expect("PUT", "/actions", {"action_type": "FlushMetrics"}, 400, "PUT /metrics first")
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"}, 400, "no boot source")
        machine_config(v)
        boot_source(v, args.guest, tmp)
        a, b = drives(v, tmp)
        network(v)
        log, metrics = logger_metrics(v, tmp)
        not_supported(v)
        uds = vsock(v, tmp)
        cfg = v.expect("GET", "/vm/config", status=200)
        check(cfg["vsock"] == {"guest_cid": 3, "uds_path": uds}, str(cfg.get("vsock")))
        check([d["drive_id"] for d in cfg["drives"]] == ["rootfs", "data"], str(cfg["drives"]))
        check(cfg["drives"][1]["rate_limiter"]["ops"]["one_time_burst"] == 50, str(cfg))
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
        v.wait_console(r"^count 3$")
        cmdline = v.wait_console(r"^api-guest: cmdline (.*)$").group(1)
        check("api.mode=count api.us=2000 root=/dev/vda rw" in cmdline,
              f"the root drive's root=/dev/vda rw is not on the command line: {cmdline}")
        after_start(v, args.guest, a, b, log, metrics)
        check(stat.S_ISSOCK(os.stat(uds).st_mode), f"{uds} is not a listening socket")
        v.expect("PUT", "/vsock", {"guest_cid": 3, "uds_path": uds}, 400,
                 "not supported after starting the microVM")
    finally:
        v.stop()
    check(not os.path.exists(uds), f"{uds} is left behind")


# ---- malformed input --------------------------------------------------------------------------

def case_malformed(args, tmp):
    v = Vmm(args.vmm, tmp)
    try:
        raw = [(b"{", "malformed JSON"), (b"[1, 2]", "expected a JSON object"),
               (b'"text"', "expected a JSON object"), (b"", "no body"),
               (b'{"vcpu_count": 1, "vcpu_count": 2, "mem_size_mib": 64}', "duplicate"),
               (b'{"vcpu_count": 1, "mem_size_mib": 64} trailing', "malformed JSON"),
               (b'{"vcpu_count": 1.5, "mem_size_mib": 64}', "expected an integer"),
               (b'{"vcpu_count": 99999999999999999999999, "mem_size_mib": 64}', "malformed"),
               (b'{"vcpu_count": true, "mem_size_mib": 64}', "got a boolean"),
               (b'{"vcpu_count": 1, "mem_size_mib": 64, "\\u0000": 1}', "malformed"),
               (b'\xff\xfe{}', "malformed JSON")]
        for body, msg in raw:
            v.expect("PUT", "/machine-config", raw=body, status=400, contains=msg)
        v.expect("PUT", "/boot-source", raw=b'{"kernel_image_path": "a\\u0000b"}', status=400,
                 contains="malformed")
        big = b'{"vcpu_count": 1, "mem_size_mib": 64, "x": "' + b"a" * 60000 + b'"}'
        got = raw_request(v.sock, b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(big) + big)
        check(got.startswith(b"HTTP/1.1 400") and b"larger than 51200" in got,
              f"a 60000-byte body: {got[:300]!r}")
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [big[i:i + 4096] for i in
                                                                     range(0, len(big), 4096)])
        got = raw_request(v.sock, b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\n"
                          b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked + b"0\r\n\r\n")
        check(got.startswith(b"HTTP/1.1 400") and b"larger than 51200" in got,
              f"a 60000-byte chunked body: {got[:300]!r}")
        for method, path in [("GET", "/nothing"), ("DELETE", "/drives/x"), ("POST", "/actions"),
                             ("GET", "/drives/"), ("GET", "/version/"), ("PUT", "/drives/a/b")]:
            v.expect(method, path, status=400, contains="Invalid request method and/or path")
        v.expect("PUT", "/drives/" + "d" * 40, {"drive_id": "d" * 40, "path_on_host": "/x",
                                                "is_root_device": False}, 400, "1 to 32")
        v.expect("GET", "/", status=200)
        check(v.p.poll() is None, "wisp-vmm ended")
    finally:
        v.stop()


# ---- misbehaving clients -------------------------------------------------------------------------

def raw_request(sock, data):
    """Sends data (a server may stop reading early: the rest is dropped) and reads the answer
    until the connection closes."""
    s = raw_conn(sock)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = read_all(s)
    s.close()
    return got


def raw_conn(sock):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)  # blocking: waits while the listen backlog is full
    s.settimeout(20)
    return s


def read_all(s):
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def slow_client(v):
    """One byte a second: the others are answered meanwhile, the guest counts on, and the slow
    one is dropped (the server closes it) when its request has not arrived within the deadline
    (10 s); it never gets an answer."""
    req = b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n\r\n{"
    s = raw_conn(v.sock)
    start, before, closed = time.monotonic(), last_count(v), False
    for i, byte in enumerate(req * 2):
        try:
            s.send(bytes([byte]))
            s.setblocking(False)
            try:
                closed = s.recv(4096) == b""  # the server's end of the connection
            except BlockingIOError:
                pass
            s.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if closed or time.monotonic() - start > 30:
            break
        if i % 3 == 0:
            v.expect("GET", "/", status=200)  # answered while the slow one dribbles
        time.sleep(1)
    s.close()
    check(closed, "the slow client was not dropped within 30 s")
    check(last_count(v) > before + 5, "the guest stopped counting during the slow client")
    return time.monotonic() - start


def half_close(v):
    s = raw_conn(v.sock)  # a whole request, then the client's write side closed
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    got = read_all(s)
    check(got == b"" or got.startswith(b"HTTP/1.1 200"), f"half-closed client got {got[:80]!r}")
    s.close()
    s = raw_conn(v.sock)  # half a request, then closed: the server lets go
    s.sendall(b"PUT /machine-config HTTP/1.1\r\nHost: loc")
    s.shutdown(socket.SHUT_WR)
    got = read_all(s)
    check(b" 200 " not in got and b" 204 " not in got, f"a half request was served: {got!r}")
    s.close()


def flood(v):
    """200 connections at once, each sends GET /: every one is answered (200, the schema's
    InstanceInfo) or closed unanswered (the connection limit); none hangs."""
    conns = [raw_conn(v.sock) for _ in range(200)]
    for s in conns:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    answered = closed = 0
    for s in conns:
        got = read_all(s)
        s.close()
        if not got:
            closed += 1
            continue
        head, _, body = got.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200"), f"flood: {head[:60]!r}")
        info = json.loads(body)
        check(info["state"] == "Running", str(info))
        answered += 1
    check(answered >= 100, f"flood: only {answered} of 200 answered ({closed} closed)")
    return answered, closed


def not_http(v):
    for junk in [b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"PUT /machine-config HTTP/1.1\r\nHost: l\r\nContent-Length: 99999999999\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: l\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n"]:
        s = raw_conn(v.sock)
        try:
            s.sendall(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = read_all(s)
        s.close()
        status = got.split(b"\r\n")[0]
        check(got == b"" or any(c in status for c in (b" 400 ", b" 413 ", b" 431 ", b" 505 ")),
              f"{junk[:30]!r}: got {status!r}")
        if b"99999999999" in junk:
            check(b"larger than" in got, f"huge Content-Length: {got[:200]!r}")


def stalled_metrics_reader(v, tmp):
    """Metrics into a FIFO whose reader never reads: FlushMetrics is still answered at once
    (lines that do not fit are dropped and counted), and what the reader gets are whole lines."""
    fifo = os.path.join(tmp, "metrics.fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    v.expect("PUT", "/metrics", {"metrics_path": fifo})
    for _ in range(1500):  # ~450 KB of lines: far more than the pipe and the buffer hold
        v.expect("PUT", "/actions", {"action_type": "FlushMetrics"})
    check(last_count(v) > 3, "the guest stopped")
    def drain():
        data = b""
        for _ in range(40):  # until the writer thread has nothing more for a while
            try:
                chunk = os.read(reader, 65536)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            data += chunk
        return [json.loads(l) for l in data.decode().splitlines()]
    lines = drain()
    check(lines and all("utc_timestamp_ms" in l for l in lines), "metrics lines are not whole")
    check(len(lines) < 1500, f"all {len(lines)} lines fit: the reader did not stall the output")
    v.expect("PUT", "/actions", {"action_type": "FlushMetrics"})  # the reader reads again
    last = drain()[-1]["wisp"]
    os.close(reader)
    check(last["lines_dropped"] == 1500 - len(lines) and last["lines"] == 1501,
          f"{len(lines)} lines read, the next one says {last}")
    return len(lines), last["lines_dropped"]


def case_clients(args, tmp):
    v = Vmm(args.vmm, tmp)
    try:
        start_counting(v, args.guest, "api.us=20000")
        got, dropped = stalled_metrics_reader(v, tmp)
        print(f"metrics into a stalled FIFO: {got} lines read, {dropped} dropped by then")
        half_close(v)
        not_http(v)
        answered, closed = flood(v)
        secs = slow_client(v)
        v.expect("GET", "/", status=200)
        print(f"flood: {answered} answered, {closed} closed; slow client ended after {secs:.1f} s")
        # SIGTERM with a client connected that never sends anything
        idle = raw_conn(v.sock)
        idle.send(b"GE")
        check(v.p.poll() is None, "wisp-vmm ended")
    finally:
        code = v.stop()
    check(code == 0, f"exit status {code} after SIGTERM")


# ---- pause and resume ---------------------------------------------------------------------------

def case_pause(args, tmp):
    v = Vmm(args.vmm, tmp)
    try:
        start_counting(v, args.guest, "api.us=20000")
        v.expect("PATCH", "/vm", {"state": "Paused"})  # answered once every vCPU is parked
        check(v.expect("GET", "/", status=200)["state"] == "Paused", "GET / after Paused")
        paused_at = last_count(v)
        out = v.out()
        for _ in range(10):  # a second: the guest would print ~50 lines if it ran
            time.sleep(0.1)
            v.expect("GET", "/", status=200)
        check(v.out() == out, f"the guest printed while paused: {v.out()[len(out):][:200]!r}")
        v.expect("PATCH", "/vm", {"state": "Paused"})  # again: still paused, no error
        v.expect("PATCH", "/vm", {"state": "Resumed"})
        check(v.expect("GET", "/", status=200)["state"] == "Running", "GET / after Resumed")
        v.wait_console(rf"^count {paused_at + 5}$")
        numbers = [int(l.split()[1]) for l in v.lines().splitlines() if l.startswith("count ")]
        check(numbers == list(range(1, len(numbers) + 1)), "the counting skipped or repeated")
        v.expect("PATCH", "/vm", {"state": "Resumed"})  # running: no error
        print(f"paused at count {paused_at}, resumed from {paused_at + 1}")
    finally:
        v.stop()


# ---- media change --------------------------------------------------------------------------------

def case_media(args, tmp):
    a = image(tmp, "a.img", "IMAGE-A", 1 << 20)
    b = image(tmp, "b.img", "IMAGE-B", 3 << 20)
    v = Vmm(args.vmm, tmp)
    try:
        v.expect("PUT", "/boot-source", {"kernel_image_path": args.guest,
                                         "boot_args": "api.mode=media"})
        v.expect("PUT", "/drives/disk", {"drive_id": "disk", "path_on_host": a,
                                         "is_root_device": False, "is_read_only": True})
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
        v.wait_console(r"^media: 0 IMAGE-A 2048$")
        v.expect("PATCH", "/drives/disk", {"drive_id": "disk", "path_on_host": tmp + "/none"},
                 400, "No such file")
        v.expect("PATCH", "/drives/disk", {"drive_id": "disk", "path_on_host": tmp}, 400,
                 "directory")
        time.sleep(0.2)
        check("media: 1" not in v.out(), "a refused PATCH changed the guest's drive")
        v.expect("PATCH", "/drives/disk", {"drive_id": "disk", "path_on_host": b})
        v.wait_console(r"^media: 1 IMAGE-B 6144$")
        code = v.wait_exit()
        check(code == 0, f"the guest's exit status {code}")
    finally:
        v.stop()


# ---- the configuration file ------------------------------------------------------------------------

def run_vmm(vmm, args, timeout=30):
    import subprocess
    p = subprocess.run([vmm] + args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def write_json(tmp, name, obj):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
    return path


def case_config_file(args, tmp):
    a = image(tmp, "a.img", "IMAGE-A", 1 << 20)
    cfg = {"boot-source": {"kernel_image_path": args.guest, "boot_args": "api.mode=count"},
           "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
           "drives": [{"drive_id": "rootfs", "path_on_host": a, "is_root_device": True,
                       "is_read_only": True}],
           "logger": {"level": "Warning"},
           "vsock": {"guest_cid": 5, "uds_path": os.path.join(tmp, "cf.sock")}}
    f = write_json(tmp, "vm.json", cfg)
    v = Vmm(args.vmm, tmp, ["--config-file", f, "--mem", "64"], name="one")
    try:
        v.wait_console(r"^count 2$")  # booted at once
        check(v.expect("GET", "/", status=200)["state"] == "Running", "state")
        got = v.expect("GET", "/vm/config", status=200)
        check(got["machine-config"]["mem_size_mib"] == 64, "--mem does not win over the file")
        check(got["machine-config"]["vcpu_count"] == 2, str(got["machine-config"]))
        check(got["drives"][0]["path_on_host"] == a and got["drives"][0]["is_root_device"],
              str(got["drives"]))
        check(got["boot-source"]["boot_args"] == "api.mode=count", str(got["boot-source"]))
        check(got["vsock"] == cfg["vsock"], str(got.get("vsock")))
        check(os.path.exists(cfg["vsock"]["uds_path"]), "the config file's vsock socket")
        cmdline = v.wait_console(r"^api-guest: cmdline (.*)$").group(1)
        check("api.mode=count root=/dev/vda ro" in cmdline, f"cmdline: {cmdline}")
    finally:
        v.stop()
    again = write_json(tmp, "again.json", got)  # GET /vm/config as a config file
    w = Vmm(args.vmm, tmp, ["--config-file", again], name="two")
    try:
        w.wait_console(r"^count 2$")
        got2 = w.expect("GET", "/vm/config", status=200)
        got["wisp"]["serial"] = got2["wisp"]["serial"]  # each Vmm names its own console file
        check(got2 == got, f"the same configuration differs:\n{got}\n{got2}")
    finally:
        w.stop()
    bad = [({"vsock": {"guest_cid": 1, "uds_path": "/tmp/v"}}, "vsock: guest_cid", "outside"),
           ({"balloon": {"amount_mib": 1}}, "balloon", "deflate_on_oom: missing"),
           ({"drive": []}, "unknown member 'drive'", ""),
           ({"machine-config": {"vcpu_count": 1}}, "mem_size_mib: missing", ""),
           ({"drives": {"drive_id": "x"}}, "drives: expected an array", "")]
    for extra, word1, word2 in bad:
        f = write_json(tmp, "bad.json", dict(cfg, **extra))
        code, _, err = run_vmm(args.vmm, ["--config-file", f])
        check(code == 2 and word1 in err and word2 in err,
              f"{extra}: status {code}, stderr {err!r}")
    with open(os.path.join(tmp, "broken.json"), "w") as fh:
        fh.write('{"boot-source": {')
    code, _, err = run_vmm(args.vmm, ["--config-file", os.path.join(tmp, "broken.json")])
    check(code == 2 and "malformed JSON at line 1" in err, f"broken file: {code} {err!r}")
    code, _, err = run_vmm(args.vmm, ["--config-file", os.path.join(tmp, "none.json")])
    check(code == 2 and "none.json" in err, f"missing file: {code} {err!r}")
    code, _, err = run_vmm(args.vmm, ["--mem", "64"])
    check(code == 2 and "--kernel: missing" in err and "--api-sock" in err,
          f"no kernel, no API: {code} {err!r}")


def listening(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    return s


def case_socket_fd(args, tmp):
    """The listening socket comes from the parent, as wispd hands a VM's over: the configuration
    is sent at once (the connection waits in the backlog until wisp-vmm accepts it)."""
    import subprocess
    path = os.path.join(tmp, "fd.sock")
    lst = listening(path)
    v = Vmm(args.vmm, tmp, [], name="fd", listener=lst)
    lst.close()  # wisp-vmm has its own
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(20)
        c.connect(path)  # at once: no wait for wisp-vmm
        bodies = [("PUT", "/boot-source", {"kernel_image_path": args.guest,
                                           "boot_args": "api.mode=count api.us=2000"}),
                  ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
                  ("PUT", "/actions", {"action_type": "InstanceStart"})]
        data = b"".join(
            f"{m} {p} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(json.dumps(b))}\r\n\r\n{json.dumps(b)}".encode()
            for m, p, b in bodies)
        c.sendall(data)  # pipelined, before wisp-vmm has read anything
        got = b""
        while got.count(b"HTTP/1.1 ") < 3:
            chunk = c.recv(4096)
            check(chunk, f"the connection closed after {got!r}; {v.log()}")
            got += chunk
        c.close()
        check(got.count(b"HTTP/1.1 204") == 3, f"answers: {got!r}")
        v.wait_console(r"^count 2$")
        check(v.expect("GET", "/", status=200)["state"] == "Running", "state")
    finally:
        v.stop()
    check(os.path.exists(path), "wisp-vmm removed a socket it did not bind")
    # with --uid every other inherited fd is closed, the API socket kept
    lst = listening(os.path.join(tmp, "uid.sock"))
    other = os.open(os.path.join(tmp, "plain-inherited"), os.O_CREAT | os.O_WRONLY)
    u = Vmm(args.vmm, tmp, ["--uid", "40117", "--gid", "40117"], name="uid", listener=lst,
            pass_fds=[other])
    lst.close()
    try:
        check(u.expect("GET", "/", status=200)["state"] == "Not started", "the dropped VMM")
        fds = {os.readlink(f"/proc/{u.p.pid}/fd/{n}") for n in os.listdir(f"/proc/{u.p.pid}/fd")}
        check(not any(f.endswith("plain-inherited") for f in fds), f"an inherited fd: {fds}")
    finally:
        u.stop()
        os.close(other)

    def refused(fd_arg, word, pass_fds=(), extra=()):
        p = subprocess.run([args.vmm, "--api-sock-fd", fd_arg] + list(extra),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                           pass_fds=list(pass_fds))
        check(p.returncode == 2 and "--api-sock-fd" in p.stderr and word in p.stderr,
              f"--api-sock-fd {fd_arg}: status {p.returncode}, stderr {p.stderr!r}")

    refused("1", "standard stream")
    refused("x", "not a file descriptor number")
    refused("999", "fd 999")
    with open(os.path.join(tmp, "plain"), "w") as f:
        refused(str(f.fileno()), "is not a socket", [f.fileno()])
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # bound, never listening
    idle.bind(os.path.join(tmp, "idle.sock"))
    refused(str(idle.fileno()), "is not listening", [idle.fileno()])
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    refused(str(udp.fileno()), "not a unix stream socket", [udp.fileno()])
    lst = listening(os.path.join(tmp, "two.sock"))
    refused(str(lst.fileno()), "not with --api-sock", [lst.fileno()],
            ["--api-sock", os.path.join(tmp, "three.sock")])
    for s in (idle, udp, lst):
        s.close()


CASES = {"resources": case_resources, "malformed": case_malformed, "clients": case_clients,
         "pause": case_pause, "media": case_media, "config-file": case_config_file,
         "socket-fd": case_socket_fd}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True, help="guest/api_guest.elf")
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    args = ap.parse_args()
    args.vmm, args.guest = os.path.abspath(args.vmm), os.path.abspath(args.guest)
    return run_in_tmp(CASES[args.case], args, prefix="wisp-api-")


if __name__ == "__main__":
    sys.exit(main())
