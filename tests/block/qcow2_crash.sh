#!/usr/bin/env bash
# qcow2 crash consistency: a writer doing random writes + flushes is SIGKILLed at random moments
# (25 rounds, same image): in odd rounds after a random time, in even rounds (with strace's fault
# injection) exactly on entry of the Nth write syscall, for random N, so that the kill lands
# between two metadata writes of one flush as often as anywhere else. After each kill: `qemu-img check` finds no corruption (leaks are
# allowed), every write acknowledged before the last completed flush reads back, and
# qcow2_check(FIX_LEAKS) leaves an image qemu-img check calls clean. Then 6 rounds with lazy
# refcounts: the dirty bit is set after a kill and the next writable open repairs the image.
set -uo pipefail
tool=$1
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$tool" create "$d/c.qcow2" 67108864 4096 || exit 1
fail=0
for round in $(seq 1 25); do
    if [ $((round % 2)) = 0 ] && command -v strace >/dev/null; then
        n=$((RANDOM % 3000 + 1))
        strace -o /dev/null -e trace=pwrite64,pwritev,pwritev2 \
            -e inject=pwrite64,pwritev,pwritev2:signal=SIGKILL:when=$n \
            "$tool" crash-writer "$d/c.qcow2" "$d/log" $((round * 7919)) 2>"$d/err" &
        pid=$!
        for _ in $(seq 1 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    else
        "$tool" crash-writer "$d/c.qcow2" "$d/log" $((round * 7919)) 2>"$d/err" &
        pid=$!
        sleep "0.$((RANDOM % 40 + 5))"
    fi
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    if ! qemu-img check -q "$d/c.qcow2" >"$d/chk" 2>&1 && grep -q -i "error\|corrupt" "$d/chk"; then
        echo "round $round: qemu-img check found corruption"; cat "$d/chk"; fail=1; break
    fi
    if ! "$tool" verify "$d/c.qcow2" "$d/log" >/dev/null; then
        echo "round $round: acknowledged writes lost"; "$tool" verify "$d/c.qcow2" "$d/log" | tail -3; fail=1; break
    fi
    "$tool" check "$d/c.qcow2" leaks >/dev/null 2>&1
    if ! qemu-img check -q "$d/c.qcow2"; then
        echo "round $round: not clean after qcow2_check(FIX_LEAKS)"; qemu-img check "$d/c.qcow2"; fail=1; break
    fi
    echo "round $round ok ($(grep -c '^f' "$d/log") flushes)"
done
[ $fail = 0 ] || exit 1

# Lazy refcounts: the killed writer leaves the dirty bit set; the next writable open rebuilds the
# refcounts, after which qemu-img check is clean and the flushed data is intact.
QCOW2_LAZY=1 "$tool" create "$d/l.qcow2" 67108864 65536 || exit 1
for round in $(seq 1 6); do
    "$tool" crash-writer "$d/l.qcow2" "$d/log" $((round * 104729)) 2>"$d/err" &
    pid=$!
    sleep "0.$((RANDOM % 40 + 10))"
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    dirty=$(qemu-img info --output=json "$d/l.qcow2" | grep -c '"dirty-flag": true')
    if ! "$tool" verify "$d/l.qcow2" "$d/log" >/dev/null; then
        echo "lazy round $round: acknowledged writes lost"; exit 1
    fi
    "$tool" write "$d/l.qcow2" 0 4096 0x1 2>/dev/null   # writable open: repair, then a write
    if ! qemu-img check -q "$d/l.qcow2"; then
        echo "lazy round $round: not clean after the repairing open"; qemu-img check "$d/l.qcow2"; exit 1
    fi
    if qemu-img info --output=json "$d/l.qcow2" | grep -q '"dirty-flag": true'; then
        echo "lazy round $round: dirty bit still set after a clean close"; exit 1
    fi
    echo "lazy round $round ok (dirty after kill: $dirty)"
done
exit 0
