#!/usr/bin/env bash
# qcow2 interop with QEMU 7.2: images made by qemu-img/qemu-io read back identically through
# wisp's driver, and images written by wisp's driver pass `qemu-img check` and equal their source
# under `qemu-img compare`. Usage: qcow2_interop.sh QCOW2_TOOL
set -euo pipefail
tool=$1
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail=0
pass() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

# Reads IMG with wisp and with qemu-img, compares bytes.
same_read() {
    local img=$1 what=$2
    "$tool" to-raw "$img" "$d/wisp.raw" || { bad "$what: wisp read failed"; return; }
    qemu-img convert -O raw "$img" "$d/qemu.raw"
    if cmp -s "$d/wisp.raw" "$d/qemu.raw"; then pass "$what: read"; else bad "$what: read differs"; fi
}
# Checks IMG with qemu-img (no corruption, no leak).
qemu_clean() {
    local img=$1 what=$2
    if qemu-img check -q "$img"; then pass "$what: qemu-img check"; else bad "$what: qemu-img check"; qemu-img check "$img" || true; fi
}
fill() { # img: a few patterns across the disk
    qemu-io -f qcow2 -c 'write -P 0xab 0 64k' -c 'write -P 0x11 1000k 3k' \
        -c 'write -P 0x5c 3m 1m' -c 'write -z 3m 64k' -c 'write -P 0x77 6143k 1k' "$1" >/dev/null
}

# 1. qemu-made images, cluster size matrix (+ v2, extended L2, refcount widths)
for cs in 512 4096 65536 2097152; do
    qemu-img create -q -f qcow2 -o cluster_size=$cs "$d/a.qcow2" 6M
    fill "$d/a.qcow2"
    same_read "$d/a.qcow2" "qemu cluster_size=$cs"
done
qemu-img create -q -f qcow2 -o compat=0.10 "$d/v2.qcow2" 6M; fill "$d/v2.qcow2" 2>/dev/null || \
    qemu-io -f qcow2 -c 'write -P 0xab 0 64k' -c 'write -P 0x5c 3m 1m' "$d/v2.qcow2" >/dev/null
same_read "$d/v2.qcow2" "qemu v2"
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k "$d/x.qcow2" 6M
qemu-io -f qcow2 -c 'write -P 0xab 0 4k' -c 'write -P 0x11 40k 2k' -c 'write -z 64k 8k' \
    -c 'write -P 0x22 1m 100k' "$d/x.qcow2" >/dev/null
same_read "$d/x.qcow2" "qemu extended_l2"
for rb in 1 8 32 64; do
    qemu-img create -q -f qcow2 -o refcount_bits=$rb "$d/r.qcow2" 6M; fill "$d/r.qcow2"
    same_read "$d/r.qcow2" "qemu refcount_bits=$rb"
    "$tool" write "$d/r.qcow2" 2m 200k 0x42 && qemu_clean "$d/r.qcow2" "wisp write refcount_bits=$rb"
done

# 2. compressed (qemu-img convert -c)
head -c 6M /dev/urandom > "$d/src.raw"; dd if=/dev/zero of="$d/src.raw" bs=64k count=20 seek=10 conv=notrunc status=none
head -c 768K /dev/urandom | base64 -w0 | dd of="$d/src.raw" bs=1M seek=4 conv=notrunc status=none
qemu-img convert -q -c -O qcow2 -f raw "$d/src.raw" "$d/c.qcow2"
same_read "$d/c.qcow2" "qemu compressed"
"$tool" write "$d/c.qcow2" 4100k 10k 0x33 && qemu_clean "$d/c.qcow2" "wisp overwrite of compressed"
same_read "$d/c.qcow2" "wisp overwrite of compressed"

# 3. backing chain of depth 3 (qcow2 <- qcow2 <- qcow2 over a raw base)
head -c 6M /dev/urandom > "$d/base.raw"
qemu-img create -q -f qcow2 -b base.raw -F raw "$d/l1.qcow2"
qemu-io -f qcow2 -c 'write -P 1 0 100k' "$d/l1.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b l1.qcow2 -F qcow2 "$d/l2.qcow2"
qemu-io -f qcow2 -c 'write -P 2 50k 100k' -c 'write -z 1m 64k' "$d/l2.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b l2.qcow2 -F qcow2 "$d/l3.qcow2" 8M
qemu-io -f qcow2 -c 'write -P 3 90k 10k' "$d/l3.qcow2" >/dev/null
same_read "$d/l3.qcow2" "qemu chain depth 3"
"$tool" write "$d/l3.qcow2" 130k 3k 0x44   # copy-on-write from the chain
same_read "$d/l3.qcow2" "wisp COW over chain"
qemu_clean "$d/l3.qcow2" "wisp COW over chain"
"$tool" discard "$d/l3.qcow2" 0 1m && same_read "$d/l3.qcow2" "wisp discard over chain"

# 4. internal snapshots (qemu-img snapshot -c), read of the active state and after apply
qemu-img create -q -f qcow2 "$d/s.qcow2" 6M
qemu-io -f qcow2 -c 'write -P 0x10 0 1m' "$d/s.qcow2" >/dev/null
qemu-img snapshot -c one "$d/s.qcow2"
qemu-io -f qcow2 -c 'write -P 0x20 512k 1m' "$d/s.qcow2" >/dev/null
same_read "$d/s.qcow2" "qemu snapshot active"
"$tool" write "$d/s.qcow2" 100k 8k 0x30 && qemu_clean "$d/s.qcow2" "wisp write after qemu snapshot"
"$tool" snap "$d/s.qcow2" create two && qemu_clean "$d/s.qcow2" "wisp snapshot create"
"$tool" write "$d/s.qcow2" 0 64k 0x31
cp "$d/s.qcow2" "$d/s2.qcow2"
"$tool" snap "$d/s.qcow2" apply one && qemu_clean "$d/s.qcow2" "wisp snapshot apply"
qemu-img snapshot -a one "$d/s2.qcow2"
if qemu-img compare -q "$d/s.qcow2" "$d/s2.qcow2"; then pass "snapshot apply equals qemu's"; else bad "snapshot apply differs"; fi
"$tool" snap "$d/s.qcow2" delete two && qemu_clean "$d/s.qcow2" "wisp snapshot delete"
qemu-img snapshot -l "$d/s.qcow2" | grep -q one && pass "qemu lists remaining snapshot" || bad "snapshot list"

# 5. images made and written by wisp: qemu-img check + compare against the source
for cs in 512 4096 65536 2097152; do
    for v in 2 3; do
        "$tool" create "$d/w.qcow2" 6291456 $cs $v
        "$tool" from-raw "$d/src.raw" "$d/w.qcow2"
        qemu_clean "$d/w.qcow2" "wisp-made cs=$cs v$v"
        if qemu-img compare -q -f raw -F qcow2 "$d/src.raw" "$d/w.qcow2"; then pass "wisp-made cs=$cs v$v: compare"; else bad "wisp-made cs=$cs v$v: compare"; fi
    done
done
"$tool" create "$d/wc.qcow2" 6291456 && "$tool" from-raw "$d/src.raw" "$d/wc.qcow2" compress
qemu_clean "$d/wc.qcow2" "wisp compressed"
qemu-img compare -q -f raw -F qcow2 "$d/src.raw" "$d/wc.qcow2" && pass "wisp compressed: compare" || bad "wisp compressed: compare"
QCOW2_EXTL2=1 "$tool" create "$d/we.qcow2" 6291456 65536 && "$tool" from-raw "$d/src.raw" "$d/we.qcow2"
"$tool" write "$d/we.qcow2" 100k 3k 0x9 && qemu-io -f qcow2 -c 'write -P 0x9 100k 3k' "$d/src.raw" -f raw >/dev/null 2>&1 || true
qemu_clean "$d/we.qcow2" "wisp extended_l2"
QCOW2_PREALLOC=metadata "$tool" create "$d/wp.qcow2" 6291456 && "$tool" from-raw "$d/src.raw" "$d/wp.qcow2"
qemu_clean "$d/wp.qcow2" "wisp preallocation=metadata"
"$tool" zero "$d/wp.qcow2" 0 1m && "$tool" zero "$d/wp.qcow2" 2m 1m unmap && "$tool" discard "$d/wp.qcow2" 4m 64k
qemu_clean "$d/wp.qcow2" "wisp zero/discard"
same_read "$d/wp.qcow2" "wisp zero/discard"
# refcount table growth: 512-byte clusters, 40 MiB of data
"$tool" create "$d/g.qcow2" 41943040 512
head -c 40M /dev/urandom > "$d/g.raw"
"$tool" from-raw "$d/g.raw" "$d/g.qcow2"
qemu_clean "$d/g.qcow2" "refcount table growth (512 B clusters)"
qemu-img compare -q -f raw -F qcow2 "$d/g.raw" "$d/g.qcow2" && pass "refcount growth: compare" || bad "refcount growth: compare"
# wisp over a wisp-made backing chain
"$tool" create "$d/top.qcow2" 6291456 65536 3 src.raw raw
"$tool" write "$d/top.qcow2" 10k 1k 0x1
qemu_clean "$d/top.qcow2" "wisp backing"
same_read "$d/top.qcow2" "wisp backing"
# resize: grow past what the L1 table covers (512 B clusters: the L1 table moves), then shrink
"$tool" create "$d/rs.qcow2" 1048576 512 && "$tool" write "$d/rs.qcow2" 1000 5000 0x61
"$tool" resize "$d/rs.qcow2" 67108864 0 && "$tool" write "$d/rs.qcow2" 60000000 70000 0x62
qemu_clean "$d/rs.qcow2" "grow"
[ "$(qemu-img info --output=json "$d/rs.qcow2" | grep -o '"virtual-size": [0-9]*')" = '"virtual-size": 67108864' ] && pass "grow: size" || bad "grow: size"
same_read "$d/rs.qcow2" "grow"
"$tool" resize "$d/rs.qcow2" 2097152 1 && qemu_clean "$d/rs.qcow2" "shrink" && same_read "$d/rs.qcow2" "shrink"
# queue depth 32 on the threads engine (allocation races inside shared clusters), over a backing
# file and with a snapshot sharing the clusters
head -c 16M /dev/urandom > "$d/bk.raw"
for cs in 512 65536; do
    "$tool" create "$d/q.qcow2" 16777216 $cs 3 bk.raw raw
    "$tool" aio-stress "$d/q.qcow2" 20000 >/dev/null && pass "QD32 cs=$cs: read back" || bad "QD32 cs=$cs: read back"
    "$tool" snap "$d/q.qcow2" create s1
    "$tool" aio-stress "$d/q.qcow2" 20000 >/dev/null && pass "QD32 cs=$cs after snapshot: read back" || bad "QD32 cs=$cs after snapshot"
    qemu_clean "$d/q.qcow2" "QD32 cs=$cs"
done
exit $fail
