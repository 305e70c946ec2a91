#!/usr/bin/env python3
"""Which system calls each kind of wisp-vmm thread made, from `strace -f -o FILE` traces of runs
with the filters loaded (--seccomp=audit, on or log), checked against src/vmm/seccomp_lists.c.

A thread's kind is the filter it loaded: its seccomp(SECCOMP_SET_MODE_FILTER, 0, {len=N, ...})
call, N telling the kind (each kind's program length, from the generated seccomp_progs.c, is
unique; checked). This also catches threads too short-lived for /proc/PID/task/*/comm (a pool
worker); the names (prctl(PR_SET_NAME) and writes to /proc/self/task/TID/comm in the trace) are
only shown. Calls a thread made before its own filter count for the kind of the thread that
created it (they ran under that thread's filter); calls made before any filter count for none.

  seccomp_trace.py PROGS.c TRACE...                       prints, per kind, the calls made
  seccomp_trace.py PROGS.c TRACE... --lists LISTS.c       and checks them: exit 1 if a call is
        missing from its kind's list or an entry not marked "rare:" was never used

A kind's allowed calls: its list; the spawner's also every other list but main's (its children
inherit its filter, seccomp_gen.c). "Unused" is checked on a kind's own list only.
"""
import re
import sys

KINDS = ["main", "vcpu", "block-io", "net-io", "pmem-io", "pool", "writer", "snapshot", "teardown",
         "spawner",
         "p9-io"]
LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
SECCOMP = re.compile(r"seccomp\(SECCOMP_SET_MODE_FILTER, 0, \{len=(\d+),")
CLONE = re.compile(r"^(\d+)\s+(?:clone3?\(.*|<\.\.\. clone3? resumed>.*)= (\d+)$")
PRCTL_NAME = re.compile(r'^(\d+)\s+prctl\(PR_SET_NAME, "([^"]*)"')
COMM_OPEN = re.compile(r'^(\d+)\s+openat\(AT_FDCWD, "/proc/self/task/(\d+)/comm", O_RDWR\) = (\d+)')
WRITE = re.compile(r'^(\d+)\s+write\((\d+), "([^"]*)"')
IOCTL = re.compile(r"^\d+\s+ioctl\(\d+, (?:([A-Z][A-Z0-9_]*)|_IOC\([^,]*, (0x[0-9a-f]+),)")
# an ioctl request's type byte, from the name strace prints (lists with SC_IOCTL_TYPE match it)
IOCTL_TYPES = [("KVM_", 0xAE), ("TUN", 0x54), ("TC", 0x54), ("TIOC", 0x54), ("FIO", 0x54),
               ("SIOC", 0x89), ("UFFDIO", 0xAA), ("USERFAULTFD_IOC", 0xAA), ("BLK", 0x12)]
# the constants seccomp_lists.c names ioctl types by
TYPE_NAMES = {"KVMIO": 0xAE, "'T'": 0x54, "0x89": 0x89, "0xAA": 0xAA, "0x12": 0x12}


def ioctl_type(name):
    for prefix, t in IOCTL_TYPES:
        if name.startswith(prefix):
            return t
    return None
# strace's exclusions: what the kernel runs for strace itself (the restart of an interrupted call)
IGNORED = {"restart_syscall"}


def prog_lengths(path):
    """length of each kind's program -> kind index, from seccomp_progs.c"""
    lengths, kind, n = {}, None, 0
    for line in open(path):
        m = re.match(r"static const struct sock_filter prog_(\d+)\[\]", line)
        if m:
            kind, n = int(m.group(1)), 0
        elif kind is not None and line.startswith("};"):
            if n in lengths:
                sys.exit(f"seccomp_trace: kinds {KINDS[lengths[n]]} and {KINDS[kind]} have "
                         f"programs of one length ({n}): the trace cannot tell them apart")
            lengths[n] = kind
            kind = None
        elif kind is not None:
            n += 1
    return lengths


class Trace:
    """One strace -f output: every thread's calls, each with the kind it ran under."""

    def __init__(self, path, lengths):
        self.lines = open(path, errors="replace").read().splitlines()
        self.parent = {}  # tid -> (creator tid, line index)
        self.loads = {}  # tid -> [(line index, kind)]
        self.names = {}
        comm_fd = {}
        for i, line in enumerate(self.lines):
            c = CLONE.match(line)
            if c:
                self.parent.setdefault(int(c.group(2)), (int(c.group(1)), i))
            s = SECCOMP.search(line)
            m = LINE.match(line)
            if s and m and m.group(3) == "seccomp":
                self.loads.setdefault(int(m.group(1)), []).append((i, lengths[int(s.group(1))]))
            n = PRCTL_NAME.match(line)
            if n:
                self.names[int(n.group(1))] = n.group(2)
            o = COMM_OPEN.match(line)
            if o:
                comm_fd[(int(o.group(1)), o.group(3))] = int(o.group(2))
            w = WRITE.match(line)
            if w and (int(w.group(1)), w.group(2)) in comm_fd:
                self.names[comm_fd.pop((int(w.group(1)), w.group(2)))] = w.group(3)

    def kind_at(self, tid, i, depth=0):
        k = None
        for at, kind in self.loads.get(tid, []):
            if at < i:  # its own seccomp() ran under the filter before
                k = kind
        if k is None and tid in self.parent and depth < 64:
            creator, at = self.parent[tid]
            k = self.kind_at(creator, at, depth + 1)
        return k

    def calls(self, out):
        """adds kind -> {syscall: count} and kind -> {thread names} into out"""
        for i, line in enumerate(self.lines):
            m = LINE.match(line)
            if not m or m.group(2) or m.group(3) in IGNORED:
                continue  # a resumed call was counted when it started
            tid = int(m.group(1))
            kind = self.kind_at(tid, i)
            if kind is None:
                continue  # no filter yet: wisp-vmm's start, before main() loads the first
            names = [m.group(3)]
            io = IOCTL.match(line) if m.group(3) == "ioctl" else None
            if io:  # the request too: "ioctl KVM_RUN", or its type for an unnamed one
                names.append("ioctl " + io.group(1) if io.group(1) else
                             "ioctl type 0x%02x" % int(io.group(2), 16))
            for n in names:
                out.setdefault(kind, {}).setdefault(n, 0)
                out[kind][n] += 1
            out.setdefault(("names", kind), set()).add(self.names.get(tid, "tid"))


def read_lists(path):
    """kind -> {syscall: True if every entry of it is marked rare} from seccomp_lists.c"""
    text = open(path).read()
    macros = {}
    text = text.replace("\\\n", " ")  # macros' continued lines
    for m in re.finditer(r"^#define ([A-Z_]+) (.*)$", text, re.M):
        macros[m.group(1)] = m.group(2)
    tables = {}
    for m in re.finditer(r"static const struct seccomp_rule (\w+)_rules\[\] = \{(.*?)\n\};",
                         text, re.S):
        body = m.group(2)
        for name, val in macros.items():
            body = re.sub(r"\b%s\b(?!\()" % name, val, body)
        entries = {}
        why_rx = r'((?:"[^"]*"\s*)+)'  # a reason, possibly in several literals
        for e in re.finditer(r'(?:ANY|NOEXEC)\("(\w+)",\s*' + why_rx + r'\)|IOCTL\((\w+),\s*' +
                             why_rx + r'\)|\{"(\w+)",\s*SC_(\w+),\s*([^,]+),\s*' + why_rx + r'\}',
                             body):
            if e.group(1):
                scs, why = [e.group(1)], e.group(2)
            elif e.group(3):
                scs, why = ["ioctl", "ioctl " + e.group(3)], e.group(4)
            elif e.group(6) == "IOCTL_TYPE":
                scs, why = ["ioctl", "ioctl type 0x%02x" % TYPE_NAMES[e.group(7).strip()]], \
                    e.group(8)
            else:
                scs, why = [e.group(5)], e.group(8)
            why = "".join(re.findall(r'"([^"]*)"', why))
            rare = why.startswith("rare")
            for sc in scs:
                entries[sc] = entries.get(sc, True) and rare
        tables[m.group(1).replace("_", "-")] = entries
    return tables


def check(calls, tables):
    failed = False
    for k, name in enumerate(KINDS):
        own = tables[name]
        allowed = set(own)
        if name == "spawner":
            for other, t in tables.items():
                if other != "main":
                    allowed |= set(t)
        used = set(calls.get(k, {}))
        types_used = {"ioctl type 0x%02x" % ioctl_type(sc[6:]) for sc in used
                      if sc.startswith("ioctl ") and ioctl_type(sc[6:]) is not None}
        # a named request is allowed by its name or by its type
        missing = sorted(sc for sc in used - allowed
                         if not (sc.startswith("ioctl ") and ioctl_type(sc[6:]) is not None and
                                 "ioctl type 0x%02x" % ioctl_type(sc[6:]) in allowed))
        used |= types_used
        unused = sorted(sc for sc in own if sc not in used)
        unused_hard = [sc for sc in unused if not own[sc]]
        names = sorted(calls.get(("names", k), set()))
        print(f"{name:9} threads {','.join(names) or '-'}: {len(used)} calls used; missing: "
              f"{' '.join(missing) or '-'}; unused, not marked rare: {' '.join(unused_hard) or '-'}"
              f"; unused, rare: {' '.join(sc for sc in unused if own[sc]) or '-'}")
        if k not in calls:
            print(f"FAIL: no {name} thread in the traces", file=sys.stderr)
            failed = True
        if missing:
            print(f"FAIL: the {name} thread made calls its list lacks: {' '.join(missing)}",
                  file=sys.stderr)
            failed = True
        if unused_hard:
            print(f"FAIL: the {name} list has entries no thread used and not marked \"rare:\" "
                  f"(drop them, or say in seccomp_lists.c why they are needed): "
                  f"{' '.join(unused_hard)}", file=sys.stderr)
            failed = True
    return failed


def main():
    args = sys.argv[1:]
    lists = None
    if "--lists" in args:
        i = args.index("--lists")
        lists = args[i + 1]
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    lengths = prog_lengths(args[0])
    calls = {}
    for path in args[1:]:
        Trace(path, lengths).calls(calls)
    for k in sorted(k for k in calls if isinstance(k, int)):
        print("%s: %s" % (KINDS[k], " ".join("%s(%d)" % kv for kv in sorted(calls[k].items()))))
    if lists is None:
        return 0
    return 1 if check(calls, read_lists(lists)) else 0


if __name__ == "__main__":
    sys.exit(main())
