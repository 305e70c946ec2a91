#!/usr/bin/env python3
"""virtio-9p proven by a ring-3 guest (guest/virtio_9p.c) at full speed: it drives a 9P2000.L
session by hand over a share this script prepares, in wisp-vmm (--fs) or in QEMU microvm as the
reference (-fsdev local,security_model=passthrough -device virtio-9p-device), and the host then
checks what the guest did: the file it wrote (bytes, mode, xattr), the hard link and its rename,
the directory, the symlink, the FIFO, the removed file, and that nothing beside the share
changed.

    p9_guest_test.py --vmm PATH|qemu --guest ELF [--bench ROUNDS] [--api]

--api configures the share with PUT /fs/{id} (wrong bodies answered 400 naming the field, the
share in GET /vm/config), starts the guest, and checks that PUT /snapshot/create of the paused
VM is refused with the documented message.

--snapshot snapshots the guest with its share set up and no fid (p9.clone), checks that the
source, once it attached, is refused a snapshot (it holds fids), that bad fs_overrides are 400s
naming what is wrong, and that clones restored with fs_overrides each serve their own directory
(read-write, and read-only: the guest's create gets EROFS).

--bench reads a 16 MiB file ROUNDS times (Treads of msize) and prints the guest's TSC cycles per
MiB (bench/9p compares wisp-vmm with QEMU). Exits 0 on success, 1 with a message on failure.
"""
import argparse
import os
import re
import stat
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from virtio_test import Failure, expect_ok, run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "api"))
import apilib  # noqa: E402

TAG = "share9"


def prepare(tmp):
    share, outside = os.path.join(tmp, "share"), os.path.join(tmp, "outside")
    os.mkdir(share)
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("SECRET\n")
    with open(os.path.join(share, "hello.txt"), "w") as f:
        f.write("hello from the host\n")
    os.symlink(outside, os.path.join(share, "abs"))
    open(os.path.join(share, "doomed"), "w").close()
    for i in range(10):
        open(os.path.join(share, f"n{i}"), "w").close()
    with open(os.path.join(share, "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 20) * 16)
    return share, outside


def check(share, outside, qemu):
    f = os.path.join(share, "guest.bin")
    with open(f, "rb") as fh:
        data = fh.read()
    if data != bytes(((i * 13) & 0xff) for i in range(65536)):
        raise Failure(f"guest.bin: {len(data)} bytes, not what the guest wrote")
    st = os.stat(f)
    if st.st_mode & 0o7777 != 0o640:
        raise Failure(f"guest.bin: mode {st.st_mode & 0o7777:o}, the guest set 640")
    if os.getxattr(f, "user.guest") != b"ring3":
        raise Failure("guest.bin: the guest's user.guest xattr is missing")
    r = os.path.join(share, "renamed.bin")
    if os.stat(r).st_ino != st.st_ino or st.st_nlink != 2:
        raise Failure("renamed.bin is not a hard link of guest.bin")
    if not os.path.isdir(os.path.join(share, "dir")):
        raise Failure("the guest's directory is missing")
    if os.readlink(os.path.join(share, "glink")) != "../elsewhere":
        raise Failure("the guest's symlink is missing")
    if not qemu and not stat.S_ISFIFO(os.lstat(os.path.join(share, "gfifo")).st_mode):
        raise Failure("the guest's FIFO is missing")
    if os.path.exists(os.path.join(share, "doomed")):
        raise Failure("doomed was not removed")
    if os.listdir(outside) != ["secret"]:
        raise Failure(f"the directory beside the share changed: {os.listdir(outside)}")


def api_case(vmm, guest, tmp, share, outside):
    v = apilib.Vmm(vmm, tmp)
    try:
        v.expect("PUT", "/boot-source", {"kernel_image_path": guest, "boot_args": "p9.hold=1"})
        body = {"fs_id": "data", "tag": TAG, "path_on_host": share}
        v.expect("PUT", "/fs/data", dict(body, tag="a/b"), 400, "tag")
        v.expect("PUT", "/fs/data", dict(body, path_on_host=os.path.join(share, "hello.txt")),
                 400, "not a directory")
        v.expect("PUT", "/fs/data", dict(body, path_on_host=os.path.join(tmp, "none")), 400,
                 "path_on_host")
        v.expect("PUT", "/fs/other", body, 400, "does not match")
        v.expect("PUT", "/fs/data", dict(body, read_only="yes"), 400, "read_only")
        v.expect("PUT", "/fs/data", body)
        v.expect("PUT", "/fs/second", dict(body, fs_id="second"), 400, "another share has the tag")
        _, cfg = v.req("GET", "/vm/config")
        want = [{"fs_id": "data", "tag": TAG, "path_on_host": share, "read_only": False}]
        apilib.check(cfg.get("fs") == want, f"GET /vm/config: fs is {cfg.get('fs')!r}")
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
        v.wait_console(rf"^p9: ok tag {TAG}$")
        v.expect("PUT", "/fs/data", body, 400)  # not after the start
        v.expect("PATCH", "/vm", {"state": "Paused"})
        v.expect("PUT", "/snapshot/create",
                 {"snapshot_path": os.path.join(tmp, "s"), "mem_file_path": os.path.join(tmp, "m")},
                 400, "cannot be snapshotted")
        apilib.check(not os.path.exists(os.path.join(tmp, "s")), "a snapshot file was written")
        v.expect("PATCH", "/vm", {"state": "Resumed"})
    finally:
        v.stop()
    check(share, outside, False)


def clone_dir(tmp, name, line):
    d = os.path.join(tmp, name)
    os.mkdir(d)
    with open(os.path.join(d, "hello.txt"), "w") as f:
        f.write(line + "\n")
    return d


def snapshot_case(vmm, guest, tmp, share):
    snap, mem = os.path.join(tmp, "p9.snap"), os.path.join(tmp, "p9.mem")
    v = apilib.Vmm(vmm, tmp, name="src")
    try:
        v.expect("PUT", "/boot-source", {"kernel_image_path": guest, "boot_args": "p9.clone=3000"})
        v.expect("PUT", "/fs/root", {"fs_id": "root", "tag": TAG, "path_on_host": share})
        v.expect("PUT", "/actions", {"action_type": "InstanceStart"})
        v.wait_console(r"^p9: ready$")
        v.expect("PATCH", "/vm", {"state": "Paused"})
        v.expect("PUT", "/snapshot/create", {"snapshot_path": snap, "mem_file_path": mem})
        # the source goes on, attaches: now it holds fids, and a snapshot is refused
        v.expect("PATCH", "/vm", {"state": "Resumed"})
        v.wait_console(r"^p9: create 0$")
        apilib.check(re.search(r"^p9: hello hello from the host$", v.out(), re.M),
                     f"the source read another hello.txt: {v.out()!r}")
        v.expect("PATCH", "/vm", {"state": "Paused"})
        bad = os.path.join(tmp, "refused")
        v.expect("PUT", "/snapshot/create", {"snapshot_path": bad, "mem_file_path": bad + ".mem"},
                 400, ["cannot be snapshotted while the guest holds", f"tag {TAG}"])
        apilib.check(not os.path.exists(bad), "a refused snapshot left its file")
    finally:
        v.stop()
    one = clone_dir(tmp, "one", "clone one")
    two = clone_dir(tmp, "two", "clone two")
    load = {"snapshot_path": snap, "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": True}
    c1 = apilib.Vmm(vmm, tmp, name="c1")
    c2 = None
    try:
        for ov, what in [
                ([{"fs_id": "nope", "path_on_host": one}], "fs_id nope: the snapshot has no such"),
                ([{"tag": "nope", "path_on_host": one}], "tag nope: the snapshot has no such"),
                ([{"fs_id": "root", "tag": TAG, "path_on_host": one}], "exactly one of fs_id"),
                ([{"fs_id": "root"}], "path_on_host"),
                ([{"fs_id": "root", "path_on_host": os.path.join(tmp, "none")}], "none"),
                ([{"fs_id": "root", "path_on_host": os.path.join(one, "hello.txt")}],
                 "is not a directory"),
                ([{"fs_id": "root", "path_on_host": one, "read_only": "yes"}], "read_only"),
                ([{"fs_id": "root", "path_on_host": one}, {"tag": TAG, "path_on_host": two}],
                 "overridden twice"),
                ("x", "fs_overrides")]:
            c1.expect("PUT", "/snapshot/load", dict(load, fs_overrides=ov), 400, what)
        c1.expect("PUT", "/snapshot/load",
                  dict(load, fs_overrides=[{"fs_id": "root", "path_on_host": one}]))
        c2 = apilib.Vmm(vmm, tmp, name="c2")
        c2.expect("PUT", "/snapshot/load",
                  dict(load, fs_overrides=[{"tag": TAG, "path_on_host": two, "read_only": True}]))
        c1.wait_console(r"^p9: create \d+$")
        c2.wait_console(r"^p9: create \d+$")
        for c, line, status in [(c1, "clone one", 0), (c2, "clone two", 30)]:
            out = c.out()
            apilib.check(re.search(rf"^p9: hello {line}$", out, re.M),
                         f"the clone did not read its own share ({line}): {out!r}")
            apilib.check(re.search(rf"^p9: create {status}$", out, re.M),
                         f"the clone's create: not {status}: {out!r}")
        _, cfg = c2.req("GET", "/vm/config")
        apilib.check(cfg.get("fs") == [{"fs_id": "root", "tag": TAG, "path_on_host": two,
                                        "read_only": True}], f"GET /vm/config: {cfg.get('fs')}")
    finally:
        c1.stop()
        if c2:
            c2.stop()
    apilib.check(os.path.exists(os.path.join(one, "made.txt")), "clone one's file is missing")
    apilib.check(not os.path.exists(os.path.join(two, "made.txt")), "a read-only share changed")
    apilib.check(os.path.exists(os.path.join(share, "made.txt")), "the source's file is missing")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vmm", required=True, help="path to wisp-vmm, or 'qemu'")
    ap.add_argument("--guest", required=True)
    ap.add_argument("--bench", type=int, default=0)
    ap.add_argument("--api", action="store_true")
    ap.add_argument("--snapshot", action="store_true")
    a = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            share, outside = prepare(tmp)
            if a.snapshot:
                snapshot_case(a.vmm, a.guest, tmp, share)
                print("ok")
                return 0
            if a.api:
                api_case(a.vmm, a.guest, tmp, share, outside)
                print("ok")
                return 0
            qemu = ["-fsdev", f"local,id=fs0,path={share},security_model=passthrough",
                    "-device", f"virtio-9p-device,fsdev=fs0,mount_tag={TAG}"]
            cmdline = (f"p9.bench={a.bench} " if a.bench else "") + (
                "p9.qemu=1" if a.vmm == "qemu" else "")
            status, out, _ = run(a.vmm, a.guest, ["--fs", f"tag={TAG},path={share}"], qemu,
                                 cmdline)
            expect_ok(status, out, "p9:")
            if not re.search(rf"^p9: ok tag {TAG}$", out, re.M):
                raise Failure(f"the guest did not read the tag {TAG} from the configuration")
            check(share, outside, a.vmm == "qemu")
    except (Failure, apilib.Failure) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
