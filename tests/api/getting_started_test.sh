#!/usr/bin/env bash
# Firecracker's getting-started sequence (getting_started.sh, curl over the API socket) boots a
# ring-3 test guest (guest/api_guest.elf): it starts, the root drive is on its command line as
# Firecracker puts it (root=/dev/vda rw), the NIC's tap exists while it runs, GET / says
# Running; SIGTERM ends wisp-vmm with status 0 and the socket is gone.
#   getting_started_test.sh WISP_VMM API_GUEST_ELF
set -euo pipefail
VMM=$1 GUEST=$2
HERE=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/wisp-gs.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
con() { tr -d '\r' <"$tmp/console"; } # the kit's serial lines end in CR LF

sock=$tmp/fc.sock tap=wgs$$
truncate -s 8M "$tmp/rootfs.ext4"
"$VMM" --api-sock "$sock" --serial "file:$tmp/console" 2>"$tmp/stderr" &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || fail "no API socket: $(cat "$tmp/stderr")"

"$HERE/getting_started.sh" "$sock" "$GUEST" "$tmp/rootfs.ext4" \
  "console=ttyS0 reboot=k panic=1 pci=off api.mode=count" "$tap" "$tmp/fc.log"

for _ in $(seq 200); do con | grep -q '^count 3$' && break; sleep 0.05; done
con | grep -q '^count 3$' || fail "the guest does not count: $(con | head -5)"
con | grep -q '^api-guest: cmdline .*console=ttyS0 reboot=k panic=1 pci=off api.mode=count root=/dev/vda rw' ||
  fail "no root=/dev/vda rw: $(con | grep cmdline)"
state=$(curl -sS --unix-socket "$sock" http://localhost/)
case $state in *'"state":"Running"'*) ;; *) fail "GET /: $state" ;; esac
ip link show "$tap" >/dev/null || fail "the tap $tap does not exist while the VM runs"
grep -q 'PUT /actions: 204' "$tmp/fc.log" || fail "the logger's file lacks the API's lines"
grep -q '\[Info\] \[api/http.c:' "$tmp/fc.log" || fail "show_level/show_log_origin: $(head -3 "$tmp/fc.log")"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || fail "exit status $status after SIGTERM"
[ ! -e "$sock" ] || fail "the socket is left behind"
! ip link show "$tap" >/dev/null 2>&1 || fail "the tap wisp-vmm created is left behind"
echo ok
