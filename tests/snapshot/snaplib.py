"""What the snapshot tests (tests/snapshot/snapshot_test.py) and bench/snapshot share: a wisp-vmm
process with its API socket, stdout and stderr collected as they come, requests over the
socket, and reading a state file's sections (to damage them on purpose)."""
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib


class Failure(Exception):
    pass


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def api(sock, method, path, body=None, timeout=60):
    """One request; returns (status, decoded JSON body or None)."""
    conn = UnixHTTPConnection(sock, timeout)
    data = json.dumps(body) if body is not None else None
    conn.request(method, path, body=data,
                 headers={"Content-Type": "application/json"} if data else {})
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, (json.loads(raw) if raw else None)


class Vmm:
    """wisp-vmm --api-sock SOCK ARGS..., output collected by two threads."""

    def __init__(self, vmm, tmp, name, args=(), stdin=False, env=None):
        self.sock = os.path.join(tmp, name + ".sock")
        self.name = name
        self.cmd = [vmm, "--api-sock", self.sock] + list(args)
        self.t_spawn = time.monotonic()
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.out, self.err = bytearray(), bytearray()
        self.t_first_out = None
        self.lock = threading.Condition()
        self.readers = [threading.Thread(target=self._collect, args=(stream, buf), daemon=True)
                        for stream, buf in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.readers:
            t.start()
        deadline = time.monotonic() + 10
        while not self._listening():  # the file exists from bind(), connections from listen()
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise Failure(f"{' '.join(self.cmd)}: no API socket (status {self.p.poll()}): "
                              f"{self.stderr()}")
            time.sleep(0.001)

    def _listening(self):
        if not os.path.exists(self.sock):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def _collect(self, stream, buf):
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            with self.lock:
                if buf is self.out and self.t_first_out is None:
                    self.t_first_out = time.monotonic()
                buf.extend(chunk)
                self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def api(self, method, path, body=None, timeout=60):
        return api(self.sock, method, path, body, timeout)

    def expect(self, method, path, body=None, status=204, timeout=60):
        got, reply = self.api(method, path, body, timeout)
        if got != status:
            raise Failure(f"{self.name}: {method} {path} {json.dumps(body)}: status {got} "
                          f"{reply}, expected {status}")
        return reply

    def stdout(self):
        with self.lock:
            return self.out.decode(errors="replace").replace("\r\n", "\n")

    def stderr(self):
        with self.lock:
            return self.err.decode(errors="replace")

    def wait_for(self, pattern, timeout=30, stream="out"):
        """Waits until stdout (or stderr) matches the regex; returns the match."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                text = (self.out if stream == "out" else self.err).decode(errors="replace")
                text = text.replace("\r\n", "\n")
                m = rx.search(text)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self._reading()):
                    raise Failure(f"{self.name}: {pattern!r} did not come within {timeout} s "
                                  f"(status {self.p.poll()}); stdout ends with "
                                  f"{self.out[-400:].decode(errors='replace')!r}; stderr: "
                                  f"{self.err.decode(errors='replace')[-800:]}")
                self.lock.wait(min(left, 0.2))

    def _reading(self):
        return False

    def send(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def end(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise Failure(f"{self.name}: did not end within {timeout} s of signal {sig}")
        self._drain()
        return rc

    def _drain(self):
        """The reader threads have taken every byte the process wrote (its pipes are closed:
        what it printed is all in stdout() now, however late the threads ran)."""
        for t in self.readers:
            t.join(10)

    def wait(self, timeout=30):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise Failure(f"{self.name}: still running after {timeout} s; stdout ends with "
                          f"{self.stdout()[-400:]!r}")
        self._drain()
        return rc


def load_body(snap, mem, resume=True, backend="File", **extra):
    body = {"snapshot_path": snap, "mem_backend": {"backend_type": backend, "backend_path": mem},
            "resume_vm": resume}
    body.update(extra)
    return body


# ---- the state file (docs/snapshot.md): header, sections, CRC-32 --------------------------

HEADER = 16
SECTION = 16


def read_sections(data):
    """[(tag, flags, offset of the data, length)] of a state file's bytes."""
    count = struct.unpack_from("<I", data, 12)[0]
    at, out = HEADER, []
    for _ in range(count):
        tag, flags, length = struct.unpack_from("<4sIQ", data, at)
        out.append((tag.decode(), flags, at + SECTION, length))
        at += SECTION + length
    return out


def with_crc(data):
    """The bytes with their last four replaced by the CRC-32 of the rest."""
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body) & 0xffffffff)


def smaps_rollup(pid):
    """kB figures of /proc/PID/smaps_rollup (Rss, Pss, Private_Clean, ...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"^(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def guest_mapping(pid, min_kb):
    """Rss, Pss, Private_* (kB) of the mappings of at least min_kb (guest RAM)."""
    total, cur = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = None
            m = re.match(r"^(\w+):\s+(\d+) kB", line)
            if not m:
                continue
            if m.group(1) == "Size":
                cur = int(m.group(2)) >= min_kb
            elif cur:
                total[m.group(1)] = total.get(m.group(1), 0) + int(m.group(2))
    return total


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0
