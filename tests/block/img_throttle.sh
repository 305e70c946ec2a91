#!/usr/bin/env bash
# Throttling: wisp-img bench with --iops-limit / --bps-limit runs for ~5 s and the measured rate
# stays within 10% of the configured limit, for each I/O engine.
. "$(dirname "$0")/img_lib.sh"
qemu-img create -q -f raw t.raw 256M
rate() { # prints requests per second of a bench run: count / "Run completed in X seconds"
  local count=$1; shift
  local secs
  secs=$("$WISP_IMG" bench -c "$count" "$@" t.raw | sed -n 's/^Run completed in \([0-9.]*\) seconds./\1/p')
  python3 -c "print($count / $secs)"
}
within() { # value target desc
  python3 -c "import sys; v,t=$1,$2; sys.exit(0 if abs(v-t) <= 0.10*t else 1)" &&
    pass "$3: $1 (limit $2)" || fail "$3: $1 not within 10% of $2"
}
for engine in threads io_uring sync; do
  r=$(rate 1000 -d 8 -i $engine --iops-limit=200)
  within "$r" 200 "IOPS limit 200, 5 s, aio=$engine"
done
# bandwidth: 64 KiB requests at 4 MiB/s for 5 s = 320 requests
r=$(rate 320 -d 4 -s 64k -w --bps-limit=4M)
within "$(python3 -c "print($r * 65536)")" 4194304 "bandwidth limit 4 MiB/s (writes)"
# unthrottled runs are much faster than the limit (the test would catch a limiter stuck on)
r=$(rate 2000 -d 8)
python3 -c "import sys; sys.exit(0 if $r > 2000 else 1)" && pass "unthrottled: $r IOPS" || fail "unthrottled too slow: $r"
finish
