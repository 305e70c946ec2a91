"""virtio-vsock proven by the ring-3 guest guest/virtio_vsock.c with Firecracker's host side
(docs/vsock.md), real unix sockets and a Python echo server.

    vsock_test.py --vmm WISP_VMM --guest VIRTIO_VSOCK_ELF --case echo|snapshot

  echo      the guest connects to host port 5000 (-> <uds>_5000, the echo server) and checks
            1 MiB echoed with a 16 KiB buf_alloc (the echo is 64 times the credit); then the
            host connects with CONNECT 6000 (answered OK <port>), sends 300 KiB and reads the
            guest's echo byte-exact
  snapshot  the guest, paused and snapshotted, is restored in a new process with
            vsock_override: it gets a TRANSPORT_RESET event and connects again, now reaching
            <new uds>_5000; without the override a clone fails on the source's taken path
Exits 0 on success, 1 with a message on failure.
"""
import argparse
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "api"))
from apilib import Failure, Vmm, check, run_in_tmp  # noqa: E402


def echo_server(path):
    """Listens at path; echoes every connection until its end, counting bytes."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    stats = {"conns": 0, "bytes": 0}

    def serve(c):
        with c:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                stats["bytes"] += len(b)
                c.sendall(b)

    def accept():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            stats["conns"] += 1
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv, stats


def host_connect(uds, port, data):
    """CONNECT port, check OK, send data while reading it back; returns the echo."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(uds)
    s.sendall(f"CONNECT {port}\n".encode())
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        check(b, f"the connection closed after {line!r}, expected OK <port>")
        line += b
    check(line.startswith(b"OK ") and int(line[3:]) >= 1 << 30, f"answer {line!r}")
    writer = threading.Thread(target=s.sendall, args=(data,))
    writer.start()
    got = bytearray()
    while len(got) < len(data):
        b = s.recv(65536)
        check(b, f"the echo ended after {len(got)} of {len(data)} bytes")
        got += b
    writer.join()
    s.close()
    return bytes(got)


def case_echo(args, tmp):
    uds = os.path.join(tmp, "v.sock")
    srv, stats = echo_server(uds + "_5000")
    v = Vmm(args.vmm, tmp, ["--kernel", args.guest, "--vsock", f"cid=9,uds={uds}", "--cmdline",
                            "vsock.port=5000 vsock.bytes=1048576 vsock.listen=6000"], api=False)
    try:
        v.wait_console(r"^vsock: cid 9$", 20)
        v.wait_console(r"^vsock: guest-initiated 1048576 bytes echoed$", 60)
        check(stats["bytes"] == 1048576 and stats["conns"] == 1, str(stats))
        v.wait_console(r"^vsock: listening on 6000$", 20)
        data = bytes((i * 7 + (i >> 10)) & 0xff for i in range(300 << 10))
        check(host_connect(uds, 6000, data) == data, "the guest's echo differs")
        v.wait_console(r"^vsock: host-initiated 307200 bytes echoed$", 30)
        v.wait_console(r"^vsock: ok$", 10)
        check(v.wait_exit(10) == 0, f"the guest's status: {v.p.returncode}\n{v.out()}")
    finally:
        v.stop()
        srv.close()
    check(not os.path.exists(uds), "the vsock socket is left behind")
    print(v.out())


def case_snapshot(args, tmp):
    uds, uds2 = os.path.join(tmp, "a.sock"), os.path.join(tmp, "clone.sock")
    srv, stats = echo_server(uds + "_5000")
    srv2, stats2 = echo_server(uds2 + "_5000")
    snap, mem = os.path.join(tmp, "s.snap"), os.path.join(tmp, "s.mem")
    v = Vmm(args.vmm, tmp, name="src")
    try:
        v.expect("PUT", "/boot-source", {"kernel_image_path": args.guest,
                                         "boot_args": "vsock.mode=2 vsock.bytes=65536"})
        v.expect("PUT", "/vsock", {"guest_cid": 11, "uds_path": uds})
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
        v.wait_console(r"^vsock: ready$", 20)
        v.expect("PATCH", "/vm", {"state": "Paused"})
        v.expect("PUT", "/snapshot/create", {"snapshot_path": snap, "mem_file_path": mem})
    finally:
        v.stop()
    open(uds, "w").close()  # as if the source still ran: its path is taken
    w = Vmm(args.vmm, tmp, name="clone")
    try:
        w.expect("PUT", "/snapshot/load", {"snapshot_path": snap, "mem_backend": {
            "backend_type": "File", "backend_path": mem}}, 400, "cannot bind")
    finally:
        w.stop()
    w = Vmm(args.vmm, tmp, name="clone2")
    try:
        check(not os.path.exists(uds2), f"{uds2} exists before the load")
        w.expect("PUT", "/snapshot/load", {"snapshot_path": snap, "mem_backend": {
            "backend_type": "File", "backend_path": mem}, "resume_vm": True,
            "vsock_override": {"uds_path": uds2}})
        got = w.expect("GET", "/vm/config", status=200)  # before the guest ends (after "ok")
        check(got["vsock"] == {"guest_cid": 11, "uds_path": uds2}, str(got.get("vsock")))
        w.wait_console(r"^vsock: transport reset, cid 11$", 20)
        w.wait_console(r"^vsock: guest-initiated 65536 bytes echoed$", 30)
        w.wait_console(r"^vsock: ok$", 10)
        check(stats2["bytes"] == 65536 and stats["bytes"] == 0, f"{stats} {stats2}")
    finally:
        w.stop()
        srv.close()
        srv2.close()
    print(w.out())


CASES = {"echo": case_echo, "snapshot": case_snapshot}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--guest", required=True, help="guest/virtio_vsock.elf")
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    args = ap.parse_args()
    args.vmm, args.guest = os.path.abspath(args.vmm), os.path.abspath(args.guest)
    return run_in_tmp(CASES[args.case], args, prefix="wisp-vsock-")


if __name__ == "__main__":
    sys.exit(main())
