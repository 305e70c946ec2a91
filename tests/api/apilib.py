"""The API tests' shared parts: an HTTP client on a unix socket (Python's http.client), every
answer checked against Firecracker's schema (firecracker-swagger.yaml, the parts wisp
implements), and wisp-vmm started with --api-sock and its console in a file."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class Failure(Exception):
    pass


def run_in_tmp(fn, args, **tmpdir):
    """A test script's end: fn(args, tmp) in a temporary directory (tempfile's keywords); prints
    "ok" and returns 0, or prints the Failure and returns 1."""
    try:
        with tempfile.TemporaryDirectory(**tmpdir) as tmp:
            fn(args, tmp)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


def check(cond, what):
    if not cond:
        raise Failure(what)


# ---- Firecracker's schema ---------------------------------------------------------------------

class Schema:
    """Swagger 2.0, the subset firecracker.yaml uses: $ref, object (required, properties;
    further properties are allowed, as Swagger allows them), array items, string / integer /
    boolean with enum, minimum and maximum."""

    def __init__(self, path=os.path.join(HERE, "firecracker-swagger.yaml")):
        with open(path) as f:
            self.doc = yaml.safe_load(f)
        self.paths = []
        for template, ops in self.doc["paths"].items():
            rx = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$"
            self.paths.append((re.compile(rx), template, ops))

    def resolve(self, schema):
        while "$ref" in schema:
            schema = self.doc["definitions"][schema["$ref"].split("/")[-1]]
        return schema

    def validate(self, value, schema, where):
        s = self.resolve(schema)
        t = s.get("type")
        if t == "object":
            check(isinstance(value, dict), f"{where}: expected an object, got {value!r}")
            for r in s.get("required", []):
                check(r in value, f"{where}: the required member {r!r} is missing")
            for k, sub in s.get("properties", {}).items():
                if k in value:
                    self.validate(value[k], sub, f"{where}.{k}")
        elif t == "array":
            check(isinstance(value, list), f"{where}: expected an array, got {value!r}")
            for i, item in enumerate(value):
                self.validate(item, s["items"], f"{where}[{i}]")
        elif t == "string":
            check(isinstance(value, str), f"{where}: expected a string, got {value!r}")
        elif t == "integer":
            check(isinstance(value, int) and not isinstance(value, bool),
                  f"{where}: expected an integer, got {value!r}")
            check(value >= s.get("minimum", value), f"{where}: {value} < {s.get('minimum')}")
            check(value <= s.get("maximum", value), f"{where}: {value} > {s.get('maximum')}")
        elif t == "boolean":
            check(isinstance(value, bool), f"{where}: expected a boolean, got {value!r}")
        if "enum" in s:
            check(value in [str(e) for e in s["enum"]] or value in s["enum"],
                  f"{where}: {value!r} is not one of {s['enum']}")

    def check_answer(self, method, path, status, body):
        """The status must be one the operation lists (or its default), and the body must have
        that answer's schema: nothing for 204, the Error shape for every 4xx/5xx."""
        path = path.split("?")[0]
        ops = next((o for rx, _, o in self.paths if rx.match(path)), None)
        where = f"{method} {path} -> {status}"
        if status >= 400:  # Firecracker's Error, for any path (unknown ones too)
            data = json.loads(body) if body else None
            self.validate(data, {"$ref": "#/definitions/Error"}, where)
            check(isinstance(data.get("fault_message"), str) and data["fault_message"],
                  f"{where}: no fault_message")
            return data
        if ops is None or method.lower() not in ops:  # wisp's own resources
            check(status in (200, 204), f"{where}: unexpected status")
            return json.loads(body) if body else None
        responses = ops[method.lower()]["responses"]
        spec = responses.get(status) or responses.get("default")
        check(spec is not None and status in responses,
              f"{where}: the schema lists {sorted(k for k in responses if k != 'default')}")
        if status == 204:
            check(body == b"", f"{where}: a 204 with a body {body[:80]!r}")
            return None
        data = json.loads(body)
        if "schema" in spec:
            self.validate(data, spec["schema"], where)
        return data


SCHEMA = None


def schema():
    global SCHEMA
    if SCHEMA is None:
        SCHEMA = Schema()
    return SCHEMA


# ---- the client ---------------------------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def request(sock, method, path, body=None, raw=None, headers=None, timeout=10):
    """One request on a new connection; returns (status, decoded JSON or None). body is sent
    as JSON, raw as bytes; the answer is checked against the schema."""
    c = UnixHTTPConnection(sock, timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Accept": "application/json"}
    if data is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
    finally:
        c.close()
    return r.status, schema().check_answer(method, path, r.status, payload)


def expect(sock, method, path, body=None, status=204, contains=None, raw=None):
    """A request whose status is `status`; for a 400 the fault_message must contain
    `contains` (a string or a list of them)."""
    got, data = request(sock, method, path, body=body, raw=raw)
    msg = data.get("fault_message", "") if isinstance(data, dict) else ""
    check(got == status, f"{method} {path} {body!r}: status {got}, expected {status} ({msg})")
    for c in [contains] if isinstance(contains, str) else (contains or []):
        check(c in msg, f"{method} {path}: fault_message {msg!r} lacks {c!r}")
    return data


# ---- wisp-vmm ------------------------------------------------------------------------------------

class Vmm:
    """wisp-vmm --api-sock SOCK --serial file:CONSOLE [args], in tmp; with listener (a
    listening socket bound at SOCK), --api-sock-fd on it instead."""

    def __init__(self, vmm, tmp, args=(), name="vmm", api=True, listener=None, pass_fds=()):
        self.sock = os.path.join(tmp, name + ".sock")
        self.console = os.path.join(tmp, name + ".console")
        self.stderr_path = os.path.join(tmp, name + ".stderr")
        open(self.console, "w").close()
        if listener:
            api_args = ["--api-sock-fd", str(listener.fileno())]
        else:
            api_args = ["--api-sock", self.sock] if api else []
        cmd = [vmm] + api_args + ["--serial", "file:" + self.console] + list(args)
        self.stderr = open(self.stderr_path, "w")
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=self.stderr,
                                  pass_fds=([listener.fileno()] if listener else []) + list(pass_fds))
        if api and not listener:
            self.wait_for(lambda: os.path.exists(self.sock) or self.p.poll() is not None, 5,
                          "the API socket")
            check(self.p.poll() is None, f"wisp-vmm ended at once: {self.log()}")

    @staticmethod
    def wait_for(cond, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = cond()
            if v:
                return v
            time.sleep(0.02)
        raise Failure(f"{what}: not within {timeout} s")

    def out(self):
        with open(self.console, errors="replace") as f:
            return f.read()

    def log(self):
        self.stderr.flush()
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def lines(self):
        """The console's complete lines (a line being written is not one yet)."""
        text = self.out()
        return text[:text.rfind("\n") + 1]

    def wait_console(self, pattern, timeout=30):
        rx = re.compile(pattern, re.M)
        return self.wait_for(lambda: rx.search(self.lines()), timeout,
                             f"/{pattern}/ on the console")

    def req(self, method, path, body=None, **kw):
        return request(self.sock, method, path, body=body, **kw)

    def expect(self, method, path, body=None, status=204, contains=None, raw=None):
        return expect(self.sock, method, path, body, status, contains, raw)

    def wait_exit(self, timeout=30):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"wisp-vmm did not end within {timeout} s")

    def stop(self):
        """SIGTERM ends wisp-vmm whatever the clients do (a hang is a failure)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                raise Failure("wisp-vmm did not end within 5 s of SIGTERM")
        self.stderr.close()
        return self.p.returncode
