#!/usr/bin/env bash
# Bad input: unknown subcommands and options, missing files, malformed images; an image opened
# read-only is never modified.
. "$(dirname "$0")/img_lib.sh"
W=$WISP_IMG
expect_rc 1 "unknown subcommand" "$W" frobnicate
grep -q "Command not found: frobnicate" "$T/err" && pass "names the subcommand" || fail "names the subcommand"
expect_rc 1 "unknown option" "$W" info --bogus x.img
expect_rc 1 "no arguments" "$W"
expect_rc 0 "--help" "$W" --help
grep -q "convert" "$T/out" && pass "--help lists commands" || fail "--help lists commands"
expect_rc 0 "--version" "$W" --version
for c in create info check convert resize commit rebase map compare snapshot bench measure; do
  expect_rc 0 "$c --help" "$W" $c --help
  grep -q "usage: wisp-img $c" "$T/out" || fail "$c --help has a usage line"
done
expect_rc 1 "info on a missing file" "$W" info nonexistent.qcow2
grep -q "nonexistent.qcow2" "$T/err" && pass "error names the file" || fail "error names the file"
expect_rc 1 "convert from a missing file" "$W" convert nonexistent.raw out.raw
expect_rc 1 "create with a bad size" "$W" create -f qcow2 x.qcow2 12Q
expect_rc 1 "create with an unknown format" "$W" create -f vmdk x.vmdk 1M
expect_rc 1 "bad cluster size" "$W" create -f qcow2 -o cluster_size=3000 x.qcow2 1M
# a malformed image: header names an L1 table beyond the end of the file
qemu-img create -q -f qcow2 bad.qcow2 64M
python3 -c "
import struct
f=open('bad.qcow2','r+b'); f.seek(40); f.write(struct.pack('>Q', 1<<40))"
expect_rc 1 "malformed image refused" "$W" info bad.qcow2
grep -q "bad.qcow2" "$T/err" && pass "error names the image" || fail "error names the image"
grep -qi "offset\|1099511627776\|0x10000000000" "$T/err" && pass "error names the offset" || fail "error names the offset: $(cat "$T/err")"
sum0=$(sha256sum bad.qcow2)
"$W" check bad.qcow2 >/dev/null 2>&1 || true
"$W" map --json bad.qcow2 >/dev/null 2>&1 || true
[ "$(sha256sum bad.qcow2)" = "$sum0" ] && pass "malformed image unchanged" || fail "malformed image unchanged"
# read-only opens never write: not even the dirty bit or a header update
qemu-img create -q -f qcow2 ro.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' ro.qcow2 >/dev/null
sum0=$(sha256sum ro.qcow2); m0=$(stat -c %Y.%y ro.qcow2)
for cmd in "info ro.qcow2" "info --json --backing-chain ro.qcow2" "map --json ro.qcow2" "check ro.qcow2" \
           "compare ro.qcow2 ro.qcow2" "convert -O raw ro.qcow2 ro.raw" "snapshot -l ro.qcow2" \
           "bench -c 1000 -d 4 ro.qcow2" "measure -O qcow2 ro.qcow2"; do
  "$W" $cmd >/dev/null 2>&1 || fail "$cmd failed"
done
[ "$(sha256sum ro.qcow2)" = "$sum0" ] && pass "read-only commands leave the image unchanged" || fail "read-only image changed"
# a chmod'ed read-only file cannot be opened for writing: clear error, no change
chmod 0444 ro.qcow2
if [ "$(id -u)" != 0 ]; then expect_rc 1 "write to a read-only file" "$W" resize ro.qcow2 +1M; fi
# backing chain loops are detected and named
qemu-img create -q -f qcow2 la.qcow2 1M
qemu-img create -q -f qcow2 -u -b la.qcow2 -F qcow2 lb.qcow2 1M
qemu-img rebase -q -u -b lb.qcow2 -F qcow2 la.qcow2
expect_rc 1 "loop a -> b -> a detected" "$W" info --backing-chain la.qcow2
grep -q "loop in the backing chain: la.qcow2 -> .*lb.qcow2 -> .*la.qcow2" "$T/err" && pass "loop named" || fail "loop named: $(cat "$T/err")"
qemu-img create -q -f qcow2 self.qcow2 1M
qemu-img rebase -q -u -b self.qcow2 -F qcow2 self.qcow2
expect_rc 1 "self loop a -> a detected" "$W" convert -O raw self.qcow2 self.raw
finish
