#!/usr/bin/env bash
# Every wisp-img subcommand against qemu-img's view of the result: resize, commit, rebase (safe,
# -u, flatten), map --json, compare exit codes, snapshots, measure, check -r leaks, info.
. "$(dirname "$0")/img_lib.sh"
W=$WISP_IMG

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x11 0 8M' -c 'write -P 0x12 32M 1M' base.qcow2 >/dev/null

# --- info ---
expect_rc 0 "info --json" "$W" info --json base.qcow2
python3 - "$T/out" <<'PY' && pass "info --json fields" || fail "info --json fields"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["format"] == "qcow2" and j["virtual-size"] == 64 << 20 and j["cluster-size"] == 65536
PY
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
expect_rc 0 "info --backing-chain" "$W" info --backing-chain --json top.qcow2
python3 -c "import json,sys; j=json.load(open('$T/out')); assert len(j)==2 and j[0]['backing-filename']=='base.qcow2'" &&
  pass "backing chain listed" || fail "backing chain listed"

# --- map --json equals qemu-img map --json ---
qemu-io -f qcow2 -c 'write -P 0x21 1M 64k' -c 'write -z 4M 128k' top.qcow2 >/dev/null
for img in base.qcow2 top.qcow2; do
  "$W" map --json $img >w.json; qemu-img map --output=json $img >q.json
  python3 - w.json q.json <<'PY' && pass "map --json = qemu-img map ($img)" || { fail "map --json ($img)"; diff w.json q.json | head; }
import json, sys
w, q = (json.load(open(f)) for f in sys.argv[1:3])
keys = ("start", "length", "depth", "present", "zero", "data", "offset")
norm = lambda l: [tuple(e.get(k) for k in keys) for e in l]
assert norm(w) == norm(q), (norm(w)[:4], norm(q)[:4])
PY
done

# --- compare exit codes ---
qemu-img convert -O raw top.qcow2 top.raw
expect_rc 0 "compare identical (qcow2 vs raw)" "$W" compare top.qcow2 top.raw
cp top.raw other.raw; printf 'X' | dd of=other.raw bs=1 seek=5000000 conv=notrunc 2>/dev/null
expect_rc 1 "compare different -> 1" "$W" compare top.raw other.raw
grep -q "Content mismatch at offset 5000000" "$T/out" && pass "mismatch offset reported" || fail "mismatch offset reported"
expect_rc 2 "compare missing file -> 2" "$W" compare top.raw nonexistent.raw
qemu-img create -q -f raw big.raw 65M; dd if=top.raw of=big.raw conv=notrunc 2>/dev/null
expect_rc 0 "compare size mismatch, zero tail" "$W" compare top.raw big.raw
expect_rc 1 "compare -s size mismatch -> 1" "$W" compare -s top.raw big.raw

# --- resize ---
qemu-img create -q -f qcow2 rs.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x31 60M 1M' rs.qcow2 >/dev/null
expect_rc 0 "resize +64M" "$W" resize rs.qcow2 +64M
qemu-img info --output=json rs.qcow2 | grep -q '"virtual-size": 134217728' && pass "grown to 128M" || fail "grown to 128M"
qcheck rs.qcow2
expect_rc 1 "shrink without --shrink refused" "$W" resize rs.qcow2 64M
expect_rc 0 "shrink to 64M (tail empty)" "$W" resize --shrink rs.qcow2 64M
expect_rc 1 "shrink over data refused" "$W" resize --shrink rs.qcow2 32M
expect_rc 0 "shrink over data with --force" "$W" resize --shrink --force rs.qcow2 -32M
qemu-img info --output=json rs.qcow2 | grep -q '"virtual-size": 33554432' && pass "shrunk to 32M" || fail "shrunk to 32M"
qcheck rs.qcow2
qemu-img create -q -f raw rr.raw 16M
expect_rc 0 "raw resize grow" "$W" resize -f raw rr.raw 32M
[ "$(stat -c %s rr.raw)" = 33554432 ] && pass "raw grown" || fail "raw grown"
expect_rc 0 "raw resize shrink" "$W" resize -f raw --shrink rr.raw 8M
[ "$(stat -c %s rr.raw)" = 8388608 ] && pass "raw shrunk" || fail "raw shrunk"

# --- commit ---
qemu-img convert -O qcow2 base.qcow2 cb.qcow2
qemu-img create -q -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2
qemu-io -f qcow2 -c 'write -P 0x41 2M 3M' -c 'write -z 33M 64k' ct.qcow2 >/dev/null
qemu-img convert -O raw ct.qcow2 expect.raw
expect_rc 0 "commit" "$W" commit ct.qcow2
qcheck cb.qcow2; qcheck ct.qcow2
expect_rc 0 "base holds the committed data" qemu-img compare cb.qcow2 expect.raw
expect_rc 0 "top still reads the same" qemu-img compare ct.qcow2 expect.raw
qemu-img map --output=json ct.qcow2 | grep -q '"depth": 0, "present": true' && fail "top emptied" || pass "top emptied"
# -b base over a chain of three, -d keeps the top
qemu-img convert -O qcow2 base.qcow2 c0.qcow2
qemu-img create -q -f qcow2 -b c0.qcow2 -F qcow2 c1.qcow2
qemu-io -f qcow2 -c 'write -P 0x51 0 1M' c1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c1.qcow2 -F qcow2 c2.qcow2
qemu-io -f qcow2 -c 'write -P 0x52 512k 1M' c2.qcow2 >/dev/null
qemu-img convert -O raw c2.qcow2 expect2.raw
expect_rc 0 "commit -b c0 -d" "$W" commit -d -b c0.qcow2 c2.qcow2
expect_rc 0 "c0 holds the whole chain's data" qemu-img compare c0.qcow2 expect2.raw
expect_rc 0 "c2 unchanged with -d" qemu-img compare c2.qcow2 expect2.raw

# --- rebase ---
qemu-img convert -O qcow2 base.qcow2 ra.qcow2
qemu-img create -q -f qcow2 rb.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x11 0 4M' rb.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b ra.qcow2 -F qcow2 rt.qcow2
qemu-io -f qcow2 -c 'write -P 0x61 6M 64k' rt.qcow2 >/dev/null
qemu-img convert -O raw rt.qcow2 rt.raw
expect_rc 0 "rebase (safe) onto a different backing" "$W" rebase -b rb.qcow2 -F qcow2 rt.qcow2
qcheck rt.qcow2
qemu-img info --output=json rt.qcow2 | grep -q '"backing-filename": "rb.qcow2"' && pass "new backing in header" || fail "new backing in header"
expect_rc 0 "safe rebase keeps the content" qemu-img compare rt.qcow2 rt.raw
expect_rc 0 "rebase -u (header only)" "$W" rebase -u -b ra.qcow2 -F qcow2 rt.qcow2
qemu-img info --output=json rt.qcow2 | grep -q '"backing-filename": "ra.qcow2"' && pass "-u rewrote the header" || fail "-u rewrote the header"
expect_rc 0 "rebase -b '' (flatten)" "$W" rebase -b "" rt.qcow2
qemu-img info --output=json rt.qcow2 | grep -q backing-filename && fail "flattened image has no backing" || pass "flattened image has no backing"
expect_rc 0 "flattened content" qemu-img compare rt.qcow2 rt.raw
qcheck rt.qcow2

# --- snapshots, visible to qemu-img ---
qemu-img convert -O qcow2 base.qcow2 sn.qcow2
expect_rc 0 "snapshot -c" "$W" snapshot -c first sn.qcow2
qemu-img snapshot -l sn.qcow2 | grep -q first && pass "qemu-img sees the snapshot" || fail "qemu-img sees the snapshot"
qemu-io -f qcow2 -c 'write -P 0x77 0 1M' sn.qcow2 >/dev/null
expect_rc 0 "snapshot -a" "$W" snapshot -a first sn.qcow2
expect_rc 0 "applied snapshot restores content" qemu-img compare sn.qcow2 base.qcow2
qemu-img snapshot -c fromqemu sn.qcow2
expect_rc 0 "snapshot -l" "$W" snapshot -l sn.qcow2
grep -q fromqemu "$T/out" && pass "wisp-img lists qemu's snapshot" || fail "wisp-img lists qemu's snapshot"
expect_rc 0 "snapshot -d" "$W" snapshot -d first sn.qcow2
qemu-img snapshot -l sn.qcow2 | grep -q first && fail "snapshot deleted" || pass "snapshot deleted"
qcheck sn.qcow2

# --- measure, within qemu-img measure's numbers ---
for args in "--size 10G -O qcow2" "--size 1G -O qcow2 -o cluster_size=4k" "-O qcow2 base.qcow2" "-O raw base.qcow2" "--size 5G -O raw"; do
  "$W" measure --json $args >w.json; qemu-img measure --output=json $args >q.json
  python3 - w.json q.json <<'PY' && pass "measure $args" || { fail "measure $args"; cat w.json q.json; }
import json, sys
w, q = (json.load(open(f)) for f in sys.argv[1:3])
for k in ("required", "fully-allocated"):
    assert abs(w[k] - q[k]) <= max(q[k] * 0.01, 65536 * 4), (k, w[k], q[k])
PY
done

# --- check: leaks made by qemu are found and fixed ---
qemu-img convert -O qcow2 base.qcow2 lk.qcow2
python3 - lk.qcow2 <<'PY'
# leak two clusters: raise the refcount of two unused clusters past the end of the file
import struct, sys
f = open(sys.argv[1], "r+b")
hdr = f.read(104)
cs = 1 << struct.unpack(">I", hdr[20:24])[0]
rt_off = struct.unpack(">Q", hdr[48:56])[0]
f.seek(rt_off); blk = struct.unpack(">Q", f.read(8))[0]
f.seek(0, 2); end = f.tell(); n = (end + cs - 1) // cs
f.truncate(n * cs + 2 * cs)
for i in (n, n + 1):
    f.seek(blk + 2 * i); f.write(struct.pack(">H", 1))
PY
expect_rc 3 "qemu-img check sees the leaks" qemu-img check lk.qcow2
expect_rc 3 "check reports leaks (exit 3)" "$W" check lk.qcow2
expect_rc 3 "check --json" "$W" check --json lk.qcow2
python3 -c "import json; j=json.load(open('$T/out')); assert j['leaks']==2" && pass "json leaks=2" || fail "json leaks=2"
expect_rc 0 "check -r leaks" "$W" check -r leaks lk.qcow2
qcheck lk.qcow2
expect_rc 0 "check on a clean image" "$W" check base.qcow2
expect_rc 63 "check on raw: unsupported" "$W" check -f raw top.raw

# Concurrent allocating writes that overlap one another (32 in flight on the thread pool, each
# starting a third of its size after the previous one): allocation runs with the metadata lock
# dropped during the data write, so overlapping allocations must wait for each other. The image
# must stay consistent (no leak, no double allocation) and hold what one writer at a time wrote.
for cs in 512 64k; do
  for sz in 4096 200000; do
    qemu-img create -q -f qcow2 -o cluster_size=$cs par.qcow2 32M
    qemu-img create -q -f raw par.raw 32M
    expect_rc 0 "overlapping writes cs=$cs size=$sz, queue depth 32" "$W" bench -q -w --pattern=7 \
      -c 2000 -d 32 -s $sz -S $((sz / 3)) -i threads -f qcow2 par.qcow2
    "$W" bench -q -w --pattern=7 -c 2000 -d 1 -s $sz -S $((sz / 3)) -i sync -f raw par.raw
    qcheck par.qcow2
    expect_rc 0 "overlapping writes cs=$cs size=$sz read back" qemu-img compare -q par.raw par.qcow2
  done
done

# Growing a 512-byte-cluster image to 64 GiB needs a 16 MiB L1 table: 32768 contiguous
# clusters, far more than one refcount block covers (256). That allocation used to loop.
"$W" create -q -f qcow2 -o cluster_size=512 big512.qcow2 1M
expect_rc 0 "resize a 512-byte-cluster image to 64G" timeout 120 "$W" resize big512.qcow2 64G
qcheck big512.qcow2
expect_rc 0 "writes across the grown 512-byte-cluster image" "$W" bench -q -w --pattern=5 \
  -c 100 -s 64k -S 600M -f qcow2 big512.qcow2
qcheck big512.qcow2
expect_rc 0 "qemu-io reads back the grown image" qemu-io -f qcow2 -c "read -P 5 0 64k" \
  -c "read -P 5 629145600 64k" -c "read -P 0 1m 64k" big512.qcow2
rm -f big512.qcow2

# cache=none reserves file space ahead of allocation (fallocate) and gives back what it did
# not use at close: the file ends where qemu-img check says the image ends.
qemu-img create -q -f qcow2 pre.qcow2 64M
expect_rc 0 "cache=none allocating writes" "$W" bench -q -w -c 300 -d 8 -s 4096 -S 12288 \
  -t none -i threads -f qcow2 pre.qcow2
qcheck pre.qcow2
end=$(qemu-img check pre.qcow2 | sed -n 's/^Image end offset: //p')
size=$(stat -c %s pre.qcow2)
if [ -n "$end" ] && [ "$size" = "$end" ]; then pass "reserved space cut back at close ($size bytes)"
else fail "file is $size bytes, image ends at ${end:-?}"; fi
finish
