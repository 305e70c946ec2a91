#!/usr/bin/env bash
# qcow2 regression inputs (fuzzer finds and hand-made corruptions in tests/block/qcow2-regress/,
# plus the fuzz seed corpus): each is opened, read and checked; it must be served (exit 0) or
# refused with a message naming the file (exit 1), never crash; then a copy is opened writable,
# written, zeroed and discarded, with the same rule; it must not grow into a huge file nor lose
# its header.
# Usage: qcow2_regress.sh QCOW2_TOOL SOURCE_ROOT
set -uo pipefail
tool=$1 root=$2 fail=0
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
for f in "$root"/tests/block/qcow2-regress/* "$root"/fuzz/corpus/qcow2/*; do
    out=$("$tool" open-read "$f" 2>&1); rc=$?
    if [ $rc -gt 1 ] || { [ $rc = 1 ] && ! grep -qF "$f" <<<"$out"; }; then
        echo "FAIL $f: rc=$rc $out"; fail=1
    else
        echo "ok   $(basename "$f"): rc=$rc ${out#qcow2_tool: }"
    fi
    cp "$f" "$d/w"
    out=$("$tool" open-write "$d/w" 2>&1); rc=$?
    magic_before=$(head -c 4 "$f" | od -An -tx1) magic_after=$(head -c 4 "$d/w" | od -An -tx1)
    if [ $rc -gt 1 ] || [ "$(stat -c %s "$d/w")" -gt 100000000 ] ||
       { [ "$magic_before" = " 51 46 49 fb" ] && [ "$magic_after" != "$magic_before" ]; }; then
        echo "FAIL $f (writable): rc=$rc $out"; fail=1
    else
        echo "ok   $(basename "$f") writable: rc=$rc ${out#qcow2_tool: }"
    fi
done
exit $fail
