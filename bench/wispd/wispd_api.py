"""What the wispd benchmarks share (bench/wispd, bench/scale): a call to wispd's API (JSON over
HTTP on its unix socket, docs/wispd.md) and the host's MemAvailable."""
import http.client
import json
import socket


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def call(sock, method, path, body=None, raw=False, timeout=60):
    """METHOD PATH with BODY as JSON; the answer's JSON (its bytes with raw), RuntimeError for a
    status of 300 or more."""
    c = UnixHTTP(sock, timeout)
    c.request(method, path, body=json.dumps(body) if body is not None else "")
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data!r}")
    if raw:
        return data
    return json.loads(data) if data else None


def mem_available_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
