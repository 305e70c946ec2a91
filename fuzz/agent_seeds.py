#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/agent_fuzz.c (fuzz/corpus/agent): one frame per file, of the
guest agent protocol (docs/agent-protocol.md): requests of every type and a few answers.

  fuzz/agent_seeds.py [DIR]   (default: fuzz/corpus/agent next to this script)
"""
import os
import struct
import sys

T = dict(version=1, name=2, errno=3, message=4, container=5, exec_id=6, arg=10, env=11, cwd=12,
         uid=13, gid=14, group=15, umask=16, rlimit=17, rlimit_type=18, soft=19, hard=20,
         nnp=21, terminal=22, rows=23, cols=24, stdin=25, stdout=26, stderr=27, rootfs_tag=30,
         rootfs_path=31, readonly=32, hostname=33, mount=34, mount_type=35, source=36,
         destination=37, option=38, file=39, path=40, data=41, mode=42, devices=43, pid=50,
         signal=51, all=52, status=53, stream=54, proc=55, ppid=56, state=57, cmd=58, iface=60,
         ifname=61, mtu=62, address=63, up=64, route=65, gateway=66, resolv=67, timeout=70)


def f(tag, val):
    return struct.pack("<HI", T[tag], len(val)) + val


def s(tag, text):
    return f(tag, text.encode() + b"\0")


def u32(tag, v):
    return f(tag, struct.pack("<I", v))


def u64(tag, v):
    return f(tag, struct.pack("<Q", v))


def frame(ftype, fid, *fields, answer=False):
    payload = b"".join(fields)
    return struct.pack("<IHHI", len(payload), ftype | (0x8000 if answer else 0), 0, fid) + payload


ids = s("container", "c1") + s("exec_id", "")
SEEDS = {
    "hello": frame(1, 1, u32("version", 1), s("name", "libwisp_agent 0.1.0")),
    "hello-answer": frame(1, 1, u32("errno", 0), u32("version", 1), s("name", "wisp-agent"),
                          answer=True),
    "container-create": frame(2, 2, s("container", "c1"), s("rootfs_tag", "root"),
                              u32("readonly", 1), s("hostname", "h"),
                              f("mount", s("mount_type", "proc") + s("source", "proc") +
                                s("destination", "/proc")),
                              f("mount", s("mount_type", "tmpfs") + s("destination", "/dev") +
                                s("option", "nosuid") + s("option", "mode=755")),
                              f("file", s("path", "/etc/hosts") + f("data", b"127.0.0.1 x\n") +
                                u32("mode", 0o644)),
                              u32("devices", 1)),
    "process-create": frame(3, 3, ids, s("arg", "sh"), s("arg", "-c"), s("arg", "echo hi"),
                            s("env", "PATH=/bin"), s("cwd", "/tmp"), u32("uid", 1000),
                            u32("gid", 1000), u32("group", 10), u32("umask", 0o22),
                            f("rlimit", s("rlimit_type", "RLIMIT_NOFILE") + u64("soft", 1024) +
                              u64("hard", 4096)),
                            u32("nnp", 1), u32("terminal", 1), u32("rows", 24), u32("cols", 80),
                            u32("stdin", 1), u32("stdout", 1), u32("stderr", 1)),
    "process-create-answer": frame(3, 3, u32("errno", 0), u32("pid", 42), answer=True),
    "start": frame(4, 4, ids),
    "signal": frame(5, 5, ids, u32("signal", 15)),
    "signal-all": frame(5, 5, s("container", "c1"), u32("signal", 9), u32("all", 1)),
    "wait": frame(6, 6, ids),
    "wait-answer": frame(6, 6, u32("errno", 0), u32("status", 3 << 8), answer=True),
    "resize": frame(7, 7, ids, u32("rows", 40), u32("cols", 120)),
    "ps": frame(8, 8, s("container", "c1")),
    "ps-answer": frame(8, 8, u32("errno", 0),
                       f("proc", u32("pid", 5) + u32("ppid", 1) + u32("uid", 0) + s("state", "S") +
                         s("cmd", "sleep 1000") + s("exec_id", "")), answer=True),
    "network": frame(9, 9, f("iface", s("ifname", "eth0") + u32("mtu", 1500) +
                             s("address", "10.0.0.2/24") + u32("up", 1)),
                     f("route", s("destination", "0.0.0.0/0") + s("gateway", "10.0.0.1")),
                     s("resolv", "nameserver 10.0.0.1\n")),
    "container-delete": frame(10, 10, s("container", "c1")),
    "shutdown": frame(11, 11, u32("timeout", 2000)),
    "attach": frame(12, 12, ids, u32("stream", 1)),
    "process-delete": frame(13, 13, ids),
    "error-answer": frame(6, 14, u32("errno", 2), s("message", "no process 'x'"), answer=True),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "agent")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as fh:
            fh.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
