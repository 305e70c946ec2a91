#!/usr/bin/env python3
"""Which system calls each kind of wisp-vmm thread made, from `strace -f -o FILE` of a run with
--seccomp=on or log: a thread's kind is the filter it loaded (its seccomp(SET_MODE_FILTER, 0,
{len=N, ...}) call; N tells the kind, from the generated seccomp_progs.c). Calls a thread made
before its own filter count for the kind of the thread that created it (they ran under that
thread's filter).

  seccomp_trace.py TRACE PROGS.c                     prints KIND: syscall... per kind
  seccomp_trace.py TRACE PROGS.c --lists LISTS.c     also checks them against seccomp_lists.c
"""
import re
import sys

KINDS = ["main", "vcpu", "block-io", "net-io", "pool", "writer", "snapshot", "teardown"]
LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
SECCOMP = re.compile(r"seccomp\(SECCOMP_SET_MODE_FILTER, 0, \{len=(\d+),")
CLONE = re.compile(r"^(\d+)\s+(?:clone3?\(.*|<\.\.\. clone3? resumed>.*)= (\d+)$")


def prog_lengths(path):
    """length of each kind's program -> kind index, from seccomp_progs.c"""
    lengths, kind, n = {}, None, 0
    for line in open(path):
        m = re.match(r"static const struct sock_filter prog_(\d+)\[\]", line)
        if m:
            kind, n = int(m.group(1)), 0
        elif kind is not None and line.startswith("};"):
            lengths[n] = kind
            kind = None
        elif kind is not None:
            n += 1
    return lengths


def parse(path, lengths):
    kind_of = {}  # tid -> kind index (from its filter or its creator's)
    calls = {}  # kind -> {syscall: count}
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        tid = int(m.group(1))
        c = CLONE.match(line.rstrip())
        if c:
            kind_of.setdefault(int(c.group(2)), kind_of.get(tid, 0))
        if m.group(2):
            continue  # a resumed call was counted when it started
        name = m.group(3)
        s = SECCOMP.search(line)
        if s:
            kind_of[tid] = lengths[int(s.group(1))]
        kind = kind_of.setdefault(tid, 0)
        calls.setdefault(kind, {}).setdefault(name, 0)
        calls[kind][name] += 1
    return calls


def read_lists(path):
    """kind -> {syscall: 'rare' or 'used'} from seccomp_lists.c (macros expanded by hand)."""
    text = open(path).read()
    macros = {}
    for name in ("THREAD_BASICS", "EVLOOP"):
        m = re.search(r"#define " + name + r"(.*?)\n\n", text, re.S)
        macros[name] = m.group(1)
    tables = {}
    for m in re.finditer(r"static const struct seccomp_rule (\w+)_rules\[\] = \{(.*?)\n\};", text, re.S):
        body = m.group(2)
        for name, val in macros.items():
            body = body.replace(name, val)
        entries = {}
        for e in re.finditer(r'(?:ANY|NOEXEC)\("(\w+)"(?:, "([^"]*)")?\)|IOCTL\(\w+, "([^"]*)"\)|\{"(\w+)", SC_\w+, [^,]+, "([^"]*)"\}', body):
            if e.group(1):
                sc, why = e.group(1), e.group(2) or ""
            elif e.group(3) is not None:
                sc, why = "ioctl", e.group(3)
            else:
                sc, why = e.group(4), e.group(5)
            rare = why.startswith("rare")
            entries[sc] = entries.get(sc, True) and rare
        tables[m.group(1).replace("_", "-")] = entries
    return tables


def main():
    calls = parse(sys.argv[1], prog_lengths(sys.argv[2]))
    for k in sorted(calls):
        print("%s: %s" % (KINDS[k], " ".join("%s(%d)" % kv for kv in sorted(calls[k].items()))))
    if "--lists" not in sys.argv:
        return 0
    tables = read_lists(sys.argv[sys.argv.index("--lists") + 1])
    failed = False
    for k, name in enumerate(KINDS):
        allowed = dict(tables[name])
        if name == "main":
            for t in tables.values():
                for sc, rare in t.items():
                    allowed[sc] = allowed.get(sc, True) and rare
        used = set(calls.get(k, {}))
        missing = sorted(used - set(allowed) - {"seccomp"} if k else used - set(allowed) - {"seccomp", "execve", "arch_prctl", "set_tid_address"})
        unused = sorted(sc for sc in allowed if sc not in used)
        unused_hard = [sc for sc in unused if not allowed[sc]]
        print("%-9s used %3d, missing %s, unused (rare) %s, unused (not marked rare) %s" % (
            name, len(used), missing or "-", " ".join(sc for sc in unused if allowed[sc]) or "-",
            unused_hard or "-"))
        if missing or (unused_hard and k in calls):
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
