#!/usr/bin/env bash
# wisp-img <-> qemu-img interoperability through the tool: images written by wisp-img pass
# qemu-img check and equal their source; images made by qemu-img (cluster sizes, compression,
# zero clusters, backing chains, snapshots, extended L2) read back byte-identical.
. "$(dirname "$0")/img_lib.sh"

# A 64 MiB raw source with a pattern: data, holes, data crossing cluster boundaries.
qemu-img create -q -f raw src.raw 64M
qemu-io -f raw -c 'write -P 0x11 0 64k' -c 'write -P 0x22 1M 3M' -c 'write -P 0x33 33M 4097' \
  -c 'write -P 0x44 63M 1M' src.raw >/dev/null

# --- wisp-img writes, qemu-img verifies ---
expect_rc 0 "create qcow2" "$WISP_IMG" create -f qcow2 new.qcow2 100M
qcheck new.qcow2
expect_rc 0 "create raw with size suffix" "$WISP_IMG" create -f raw new.raw 1G
[ "$(stat -c %s new.raw)" = 1073741824 ] && pass "raw size 1G" || fail "raw size 1G"
for cs in 512 4k 64k 2M; do
  expect_rc 0 "convert raw->qcow2 cluster_size=$cs" "$WISP_IMG" convert -O qcow2 -o cluster_size=$cs src.raw c$cs.qcow2
  qcheck c$cs.qcow2
  expect_rc 0 "qemu-img compare raw vs wisp qcow2 ($cs)" qemu-img compare src.raw c$cs.qcow2
done
expect_rc 0 "convert -c (compressed)" "$WISP_IMG" convert -c -O qcow2 src.raw comp.qcow2
qcheck comp.qcow2
expect_rc 0 "qemu-img compare compressed" qemu-img compare src.raw comp.qcow2
expect_rc 0 "convert -c -o compression_type=zstd" "$WISP_IMG" convert -c -O qcow2 \
  -o compression_type=zstd src.raw zstd.qcow2
qcheck zstd.qcow2
qemu-img info zstd.qcow2 | grep -q 'compression type: zstd' && pass "qemu-img sees zstd" ||
  fail "qemu-img does not see compression type zstd"
expect_rc 0 "qemu-img compare zstd-compressed" qemu-img compare src.raw zstd.qcow2
expect_rc 0 "convert -m 4 -W" "$WISP_IMG" convert -m 4 -W -O qcow2 src.raw par.qcow2
expect_rc 0 "qemu-img compare -m 4 -W" qemu-img compare src.raw par.qcow2
expect_rc 0 "convert -p progress" "$WISP_IMG" convert -p -O qcow2 src.raw prog.qcow2
grep -q '100.00/100%' "$T/err" && pass "progress bar drawn on stderr" || fail "progress bar on stderr"
expect_rc 0 "convert -S 0 to raw (fully allocated)" "$WISP_IMG" convert -S 0 -O raw c64k.qcow2 full.raw
same_bytes full.raw src.raw "convert -S 0 content"
[ "$(stat -c %b full.raw)" -ge $((64 * 2048)) ] && pass "-S 0 allocates every block" || fail "-S 0 allocates every block"
expect_rc 0 "convert -o preallocation=metadata" "$WISP_IMG" convert -O qcow2 -o preallocation=metadata src.raw pm.qcow2
qcheck pm.qcow2
expect_rc 0 "qemu-img compare preallocated" qemu-img compare src.raw pm.qcow2
# -n: an existing target (with old content) is overwritten, zero ranges included
qemu-img create -q -f qcow2 exist.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0xee 0 64M' exist.qcow2 >/dev/null
expect_rc 0 "convert -n into an existing image" "$WISP_IMG" convert -n -O qcow2 src.raw exist.qcow2
qcheck exist.qcow2
expect_rc 0 "qemu-img compare -n target" qemu-img compare src.raw exist.qcow2
# backing: create over a base, write through qemu-io, convert with -B
expect_rc 0 "create -b (backing)" "$WISP_IMG" create -f qcow2 -b c64k.qcow2 -F qcow2 ov.qcow2
qcheck ov.qcow2
qemu-io -f qcow2 -c 'write -P 0x55 2M 64k' ov.qcow2 >/dev/null
expect_rc 0 "convert -B keeps only the top's data" "$WISP_IMG" convert -O qcow2 -B c64k.qcow2 -F qcow2 ov.qcow2 ovB.qcow2
qcheck ovB.qcow2
expect_rc 0 "qemu-img compare -B target" qemu-img compare ov.qcow2 ovB.qcow2
qemu-img info --output=json ovB.qcow2 | grep -q '"backing-filename": "c64k.qcow2"' &&
  pass "-B target names its backing file" || fail "-B target names its backing file"

# --- qemu-img writes, wisp-img reads ---
roundtrip() { # image desc: wisp-img convert -O raw equals qemu-img convert -O raw
  rm -f w.raw q.raw
  qemu-img convert -O raw "$1" q.raw
  expect_rc 0 "wisp-img convert -O raw: $2" "$WISP_IMG" convert -O raw "$1" w.raw
  same_bytes w.raw q.raw "bytes equal: $2"
}
for cs in 512 4096 65536 2097152; do
  qemu-img convert -O qcow2 -o cluster_size=$cs src.raw q$cs.qcow2
  roundtrip q$cs.qcow2 "qemu qcow2 cluster_size=$cs"
done
qemu-img convert -c -O qcow2 src.raw qc.qcow2
roundtrip qc.qcow2 "qemu compressed"
qemu-img convert -c -O qcow2 -o compression_type=zstd src.raw qzs.qcow2
roundtrip qzs.qcow2 "qemu compressed, zstd"
qemu-img convert -O qcow2 src.raw qz.qcow2
qemu-io -f qcow2 -c 'write -z 1M 1M' -c 'write -z -u 63M 64k' qz.qcow2 >/dev/null
roundtrip qz.qcow2 "qemu zero clusters (write -z)"
qemu-img convert -O qcow2 -o compat=0.10 src.raw qv2.qcow2
roundtrip qv2.qcow2 "qemu compat=0.10"
qemu-img convert -O qcow2 -o extended_l2=on,cluster_size=64k src.raw qx.qcow2
qemu-io -f qcow2 -c 'write -P 0x66 5M 4k' -c 'write -z 1M 8k' qx.qcow2 >/dev/null
roundtrip qx.qcow2 "qemu extended_l2=on with subcluster writes"
# backing chain of depth 3 with relative names
mkdir -p sub
qemu-img create -q -f qcow2 sub/b0.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x71 0 4M' sub/b0.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b b0.qcow2 -F qcow2 sub/b1.qcow2
qemu-io -f qcow2 -c 'write -P 0x72 1M 1M' sub/b1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b sub/b1.qcow2 -F qcow2 b2.qcow2
qemu-io -f qcow2 -c 'write -P 0x73 1536k 64k' -c 'write -z 3M 64k' b2.qcow2 >/dev/null
roundtrip b2.qcow2 "qemu backing chain depth 3 (relative paths)"
# internal snapshot: the active layer after a snapshot and overwrite
qemu-img convert -O qcow2 src.raw qs.qcow2
qemu-img snapshot -c s1 qs.qcow2
qemu-io -f qcow2 -c 'write -P 0x99 0 128k' qs.qcow2 >/dev/null
roundtrip qs.qcow2 "qemu image with an internal snapshot"
finish
