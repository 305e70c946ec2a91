# Shared helpers of the wisp-img tests (sourced). $1 of the test = path to wisp-img.
set -euo pipefail
WISP_IMG=$(realpath "${WISP_IMG:-$1}")
[ -x "$WISP_IMG" ] || { echo "usage: $0 path/to/wisp-img" >&2; exit 2; }
command -v qemu-img >/dev/null || { echo "qemu-img not installed: skipping"; exit 77; }
T=$(mktemp -d "${WISP_CACHE:-/var/tmp}/wisp-img-test.XXXXXX" 2>/dev/null || mktemp -d /var/tmp/wisp-img-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
FAILS=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
# expect_rc WANT desc cmd...: runs cmd, compares its exit status
expect_rc() {
  local want=$1 desc=$2 rc=0
  shift 2
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  if [ "$rc" = "$want" ]; then pass "$desc"; else
    fail "$desc (exit $rc, wanted $want)"; sed 's/^/    /' "$T/out" "$T/err" | head -20; fi
}
# same_bytes A B desc: the raw contents are identical
same_bytes() { if cmp -s "$1" "$2"; then pass "$3"; else fail "$3 ($(cmp "$1" "$2" 2>&1 | head -1))"; fi; }
qcheck() { expect_rc 0 "qemu-img check $1" qemu-img check "$1"; }
finish() { if [ "$FAILS" -ne 0 ]; then echo "$FAILS failure(s)"; exit 1; fi; echo "all passed"; }
