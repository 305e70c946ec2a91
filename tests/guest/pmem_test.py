#!/usr/bin/env python3
"""virtio-pmem (docs/memory.md) with the ring-3 guest guest/virtio_pmem.c, which reads the whole
region with plain loads (checking the file's pattern), writes page 1 and sends flush requests.

    pmem_test.py VMM PMEM_ELF CASE

CASE:
  modes     rw: the guest's writes are in the file afterwards (and only page 1 changed); cow: the
            guest reads its own writes, the file is unchanged; ro: the guest's write is dropped
            (logged once), the file is unchanged; a request without room for its status sets
            DEVICE_NEEDS_RESET, and the device works again after a reset
  errors    a file that is not a multiple of 2 MiB, a missing file, a directory, bad --pmem
            values, ro and cow together, two rw users of one file: clear errors, nothing runs
  share     10 VMs map one 32 MiB image ro and read all of it: the image's pages are in the
            host's page cache once (each VM's Pss of the mapping is its Rss / 10, within 10%),
            and each VM's private memory in that mapping stays under 1 MiB; then 10 cow VMs
            write one page each: only that page becomes private
  api       PUT /pmem/{id} (Firecracker's fields, wisp's mode), its errors, GET /vm/config's
            "pmem", and the same from a --config-file
  snapshot  a VM with an ro pmem is snapshotted while holding and restored in a new process:
            the pmem config comes back from the snapshot and the guest's region is the same;
            a VM with a cow pmem refuses the snapshot with the reason
Exits 0 on success, 1 with a message on failure.
"""
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "snapshot"))
import snaplib  # noqa: E402

TIMEOUT = 60
SEED = 12345
M64 = (1 << 64) - 1


class Failure(Exception):
    pass


def make_image(path, mib, seed=SEED):
    """page p: word 0 = p, words 1..511 = pattern(p) (as guest/virtio_pmem.c checks)"""
    with open(path, "wb") as f:
        for p in range(mib * 256):
            v = ((p + 1) * 0x9E3779B97F4A7C15 & M64) ^ seed
            f.write(struct.pack("<Q", p) + struct.pack("<Q", v) * 511)


def digest(path, skip_page=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        page = 0
        while True:
            b = f.read(4096)
            if not b:
                break
            if page != skip_page:
                h.update(b)
            page += 1
    return h.hexdigest()


def run(vmm, elf, pmem, mode, mib, *extra):
    cmd = [vmm, "--kernel", elf, "--pmem", pmem,
           "--cmdline", f"mode={mode} seed={SEED} size_mib={mib}"] + list(extra)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=TIMEOUT)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    print(f"$ {' '.join(cmd)}\n{out}{err}exit status {p.returncode}")
    return p.returncode, out, err


def case_modes(vmm, elf, d):
    img = os.path.join(d, "img")
    for mode in ("rw", "cow", "ro"):
        make_image(img, 16)
        before, rest = digest(img), digest(img, skip_page=1)
        rc, out, err = run(vmm, elf, f"path={img},{mode}", mode, 16)
        if rc != 0 or "pmem: flush ok" not in out or "then flush ok again" not in out:
            raise Failure(f"{mode}: the guest failed (exit {rc})")
        if "no 4 writable bytes for its status" not in err:
            raise Failure(f"{mode}: the malformed request was not logged")
        after = digest(img)
        if mode == "rw":
            with open(img, "rb") as f:
                f.seek(4096)
                page = f.read(4096)
            v1 = ((2 * 0x9E3779B97F4A7C15) & M64) ^ SEED
            want = b"".join(struct.pack("<Q", (~v1 & M64) ^ i) for i in range(512))
            if page != want or digest(img, skip_page=1) != rest:
                raise Failure("rw: the file does not hold exactly the guest's write of page 1")
        elif after != before:
            raise Failure(f"{mode}: the guest's write reached the file")
        if mode == "ro" and "read-only region" not in err:
            raise Failure("ro: the dropped write was not logged")
        print(f"{mode}: file {'changed in page 1 only' if mode == 'rw' else 'unchanged'}")


def case_errors(vmm, elf, d):
    odd, img = os.path.join(d, "odd"), os.path.join(d, "img")
    with open(odd, "wb") as f:
        f.truncate(3 << 20)
    make_image(img, 4)
    cases = [
        (f"path={odd},ro", 2, "a pmem image must be a positive multiple of 2 MiB"),
        (f"path={d}/missing,ro", 2, "cannot open"),
        (f"path={d},ro", 2, "is not a regular file"),
        (f"path={img},ro,cow", 2, "give one of ro, cow and rw"),
        (f"path={img},color=red", 2, "unknown key 'color'"),
        ("ro", 2, "path=FILE is required"),
        (f"path={img},ro=1", 2, "ro takes no value"),
    ]
    for pmem, want_rc, want in cases:
        rc, out, err = run(vmm, elf, pmem, "ro", 4)
        if rc != want_rc or want not in err or "pmem:" in out:
            raise Failure(f"--pmem {pmem}: wanted exit {want_rc} with '{want}', got {rc}")
    # one rw user of a file at a time (flock)
    holder = snaplib.Vmm(vmm, d, "holder", ["--kernel", elf, "--pmem", f"path={img}",
                                            "--cmdline", f"mode=cow seed={SEED} hold=1"])
    try:
        holder.wait_for(r"^pmem: holding$")
        rc, out, err = run(vmm, elf, f"path={img},ro", "ro", 4)
        if rc != 1 or "is in use" not in err:
            raise Failure(f"a second user of a rw-mapped file: wanted 'is in use', got {rc}")
    finally:
        holder.end()


def mapping_of(pid, path):
    """Rss, Pss, Private_* (kB) of the process's mapping of path"""
    total, cur = {}, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:
                cur = len(parts) >= 6 and parts[5] == path
                continue
            if cur and len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                total[parts[0][:-1]] = total.get(parts[0][:-1], 0) + int(parts[1])
    return total


def start_holders(vmm, elf, d, img, mode, n, mib):
    vms = []
    for i in range(n):
        vms.append(snaplib.Vmm(vmm, d, f"{mode}{i}", [
            "--kernel", elf, "--mem", "32", "--pmem", f"path={img},{mode}",
            "--cmdline", f"mode={mode} seed={SEED} size_mib={mib} hold=1"]))
    for v in vms:
        v.wait_for(r"^pmem: holding$", timeout=120)
    return vms


def stop_all(vms):
    t0 = time.monotonic()
    for v in vms:
        v.p.send_signal(signal.SIGTERM)
    for v in vms:
        if v.end() != 0:
            raise Failure(f"{v.name}: exit status {v.p.returncode} after SIGTERM")
    return time.monotonic() - t0


def case_share(vmm, elf, d):
    mib, n = 32, 10
    img = os.path.join(d, "shared.img")
    make_image(img, mib)
    before = digest(img)
    for mode in ("ro", "cow"):
        vms = start_holders(vmm, elf, d, img, mode, n, mib)
        try:
            maps = [mapping_of(v.p.pid, img) for v in vms]
            whole = [snaplib.smaps_rollup(v.p.pid) for v in vms]
        finally:
            took = stop_all(vms)
        for i, m in enumerate(maps):
            rss, pss = m.get("Rss", 0), m.get("Pss", 0)
            private = m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
            print(f"{mode} VM {i}: Rss {rss} kB, Pss {pss} kB, private {private} kB")
            if rss < (mib << 10) * 9 // 10:
                raise Failure(f"{mode} VM {i}: only {rss} kB of the {mib} MiB image resident")
            if abs(pss - rss / n) > rss / n / 10:
                raise Failure(f"{mode} VM {i}: Pss {pss} kB is not Rss/{n} = {rss // n} kB: "
                              "the image's pages are not shared once")
            # ro: nothing private; cow: the page the guest wrote (4 kB) and little else
            if private > 1024:
                raise Failure(f"{mode} VM {i}: {private} kB private in the image's mapping")
            own = whole[i].get("Private_Clean", 0) + whole[i].get("Private_Dirty", 0)
            print(f"{mode} VM {i}: the whole process's private memory {own} kB")
            if own > 16 << 10:
                raise Failure(f"{mode} VM {i}: {own} kB private memory in all (guest RAM, VMM)")
        print(f"{mode}: {n} VMs share the image's pages (Pss ~ Rss/{n}); "
              f"all ended {took:.2f} s after SIGTERM")
    if digest(img) != before:
        raise Failure("the shared image changed")


def case_api(vmm, elf, d):
    img = os.path.join(d, "img")
    make_image(img, 4)
    v = snaplib.Vmm(vmm, d, "api", [])
    try:
        v.expect("PUT", "/boot-source", {"kernel_image_path": elf,
                                         "boot_args": f"mode=cow seed={SEED} size_mib=4 hold=1"})
        for body, want in (
                ({"id": "p0"}, "path_on_host"),
                ({"id": "other", "path_on_host": img}, "does not match"),
                ({"id": "p0", "path_on_host": img, "mode": "xx"}, "is not ro, cow or rw"),
                ({"id": "p0", "path_on_host": img, "read_only": True, "mode": "cow"},
                 "read_only is true"),
                ({"id": "p0", "path_on_host": img,
                  "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}, "rate_limiter"),
                ({"id": "p0", "path_on_host": img, "colour": 1}, "colour")):
            got, reply = v.api("PUT", "/pmem/p0", body)
            if got != 400 or want not in json.dumps(reply):
                raise Failure(f"PUT /pmem/p0 {body}: wanted 400 with '{want}', got {got} {reply}")
        v.expect("PUT", "/pmem/p0", {"id": "p0", "path_on_host": img, "read_only": True})
        v.expect("PUT", "/pmem/p0", {"id": "p0", "path_on_host": img, "mode": "cow"})  # update
        got, cfg = v.api("GET", "/vm/config")
        want = [{"id": "p0", "path_on_host": img, "root_device": False, "read_only": False,
                 "mode": "cow"}]
        if cfg.get("pmem") != want:
            raise Failure(f"GET /vm/config pmem: {cfg.get('pmem')}, wanted {want}")
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
        v.wait_for(r"^pmem: holding$")
        got, reply = v.api("PUT", "/pmem/p1", {"id": "p1", "path_on_host": img})
        if got != 400:
            raise Failure(f"PUT /pmem after the start: {got} {reply}, wanted 400")
        got, reply = v.api("PATCH", "/pmem/p0", {"id": "p0"})
        if got != 400 or "not supported" not in json.dumps(reply):
            raise Failure(f"PATCH /pmem: {got} {reply}, wanted 400 not supported")
    finally:
        v.end()
    conf = os.path.join(d, "vm.json")
    with open(conf, "w") as f:
        json.dump({"boot-source": {"kernel_image_path": elf,
                                   "boot_args": f"mode=ro seed={SEED} size_mib=4"},
                   "pmem": [{"id": "img0", "path_on_host": img, "read_only": True}]}, f)
    p = subprocess.run([vmm, "--config-file", conf], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=TIMEOUT)
    out = p.stdout.decode(errors="replace")
    print(out + p.stderr.decode(errors="replace"))
    if p.returncode != 0 or "ro page 1 write dropped" not in out:
        raise Failure(f"--config-file with pmem: exit {p.returncode}")


def case_snapshot(vmm, elf, d):
    img = os.path.join(d, "img")
    make_image(img, 8)
    before = digest(img)
    src = snaplib.Vmm(vmm, d, "src", ["--kernel", elf, "--pmem", f"path={img},ro,id=root",
                                      "--cmdline", f"mode=ro seed={SEED} size_mib=8 hold=1"])
    snap, mem = os.path.join(d, "t.snap"), os.path.join(d, "t.mem")
    try:
        region = src.wait_for(r"^pmem: region (0x[0-9a-f]+) ").group(1)
        src.wait_for(r"^pmem: holding$")
        src.expect("PATCH", "/vm", {"state": "Paused"})
        src.expect("PUT", "/snapshot/create", {"snapshot_path": snap, "mem_file_path": mem})
    finally:
        src.end()
    dst = snaplib.Vmm(vmm, d, "dst", [])
    try:
        dst.expect("PUT", "/snapshot/load", snaplib.load_body(snap, mem))
        got, cfg = dst.api("GET", "/vm/config")
        pm = cfg.get("pmem")
        if not pm or pm[0]["id"] != "root" or pm[0]["mode"] != "ro" or \
                pm[0]["path_on_host"] != img:
            raise Failure(f"the restored VM's pmem config is {pm}")
        with open(f"/proc/{dst.p.pid}/maps") as f:
            if img not in f.read():
                raise Failure("the restored VM does not map the image")
        print(f"restored: pmem {pm}, region {region} as before")
    finally:
        dst.end()
    if digest(img) != before:
        raise Failure("the image changed")
    cow = snaplib.Vmm(vmm, d, "cow", ["--kernel", elf, "--pmem", f"path={img},cow",
                                      "--cmdline", f"mode=cow seed={SEED} size_mib=8 hold=1"])
    try:
        cow.wait_for(r"^pmem: holding$")
        cow.expect("PATCH", "/vm", {"state": "Paused"})
        got, reply = cow.api("PUT", "/snapshot/create",
                             {"snapshot_path": snap + "2", "mem_file_path": mem + "2"})
        if got != 400 or "cow pmem" not in json.dumps(reply):
            raise Failure(f"snapshot of a cow pmem VM: {got} {reply}, wanted 400 naming cow")
        print(f"cow: snapshot refused: {reply}")
    finally:
        cow.end()


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    vmm, elf, case = sys.argv[1:]
    cases = {"modes": case_modes, "errors": case_errors, "share": case_share, "api": case_api,
             "snapshot": case_snapshot}
    if case not in cases:
        print(f"unknown case {case}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as d:
            cases[case](vmm, elf, d)
    except Exception as e:  # ours, and snaplib's Failure
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
