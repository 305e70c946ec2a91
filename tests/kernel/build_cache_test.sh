#!/usr/bin/env bash
# guest/kernel/build.sh's cache key: the same inputs map to the same cache directory, a
# change of the fragment, the patch or the source maps to a new one (which would be
# rebuilt), and --print-path never builds. Uses --print-path only: no kernel is built here.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/../../guest/kernel/build.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export WISP_CACHE="$tmp/cache"
mkdir -p "$WISP_CACHE"

frag="$here/../../guest/kernel/wisp-guest.fragment"
patch="$here/../../guest/kernel/emulated-cpl0.patch"
cp "$frag" "$tmp/same.fragment"
cp "$frag" "$tmp/changed.fragment"
echo "CONFIG_IKCONFIG=y" >>"$tmp/changed.fragment"
cp "$patch" "$tmp/changed.patch"
echo "# a comment changes the patch's hash" >>"$tmp/changed.patch"

base="$("$build" --print-path)"
rc=$?
[ "$rc" = 1 ] || fail "--print-path exits $rc for an empty cache (want 1: not built)"
case "$base" in "$WISP_CACHE/guest-kernel/"*) ;; *) fail "path '$base' is not under \$WISP_CACHE/guest-kernel" ;; esac
[ ! -e "$base" ] || fail "--print-path created '$base'"

same="$("$build" --print-path --fragment "$tmp/same.fragment")"
[ "$same" = "$base" ] || fail "an identical copy of the fragment maps to '$same', not '$base' (no reuse)"

changed="$("$build" --print-path --fragment "$tmp/changed.fragment")"
[ "$changed" != "$base" ] || fail "a changed fragment maps to the same cache entry (no rebuild)"

patched="$("$build" --print-path --patch "$tmp/changed.patch")"
[ "$patched" != "$base" ] && [ "$patched" != "$changed" ] || fail "a changed patch does not change the cache entry"

# A filled cache entry is reused: build.sh prints it and exits 0 without building.
mkdir -p "$base"
: >"$base/vmlinux"
: >"$base/bzImage"
start=$(date +%s)
got="$("$build")" || fail "build.sh failed with a filled cache entry"
[ "$got" = "$base" ] || fail "build.sh printed '$got' for a cached build, not '$base'"
[ $(($(date +%s) - start)) -lt 10 ] || fail "build.sh took more than 10 s with a cached kernel"
"$build" --print-path >/dev/null || fail "--print-path exits non-zero for a built kernel"
[ ! -e "$WISP_CACHE/guest-kernel/work" ] || fail "build.sh touched the work tree with a cached kernel"

# A missing source tarball is a clear error, not a build attempt.
msg="$("$build" --source "$tmp/missing.tar.xz" 2>&1)" && fail "a missing source tarball succeeded"
echo "$msg" | grep -q "not found" || fail "unclear message for a missing source: $msg"

echo "ok: cache key follows the fragment and the patch; cached builds are reused"
