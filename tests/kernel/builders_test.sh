#!/usr/bin/env bash
# The guest kit's image builders, host-side: scripts/wisp-mkinitramfs (uncompressed and each
# compression, unpacked again with cpio: /init, busybox and its links, added files with their
# content) and scripts/wisp-mkrootfs (an ext4 image that e2fsck accepts, holding DIR's files).
# Usage: builders_test.sh WISP_INIT
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
init=${1:?usage: builders_test.sh WISP_INIT}
tmp=$(mktemp -d /tmp/wisp-builders.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "payload $RANDOM$RANDOM" > "$tmp/payload"
for comp in none gzip zstd xz; do
  out="$tmp/initramfs-$comp.cpio"
  "$repo/scripts/wisp-mkinitramfs" -o "$out" --init "$init" --applets sh,cat \
      --compress "$comp" --add "$tmp/payload:/etc/payload" >/dev/null
  case $comp in
    none) cat "$out" ;; gzip) gzip -dc "$out" ;; zstd) zstd -dc "$out" ;; xz) xz -dc "$out" ;;
  esac > "$tmp/raw.cpio" || fail "$comp: the archive does not decompress"
  rm -rf "$tmp/x" && mkdir "$tmp/x"
  (cd "$tmp/x" && cpio -id --quiet --no-absolute-filenames < "$tmp/raw.cpio" 2>/dev/null) \
      || fail "$comp: cpio cannot unpack the archive"
  cmp -s "$tmp/x/init" "$init" || fail "$comp: /init is not wisp-init"
  [ -x "$tmp/x/init" ] || fail "$comp: /init is not executable"
  [ -f "$tmp/x/bin/busybox" ] || fail "$comp: no /bin/busybox"
  [ "$(readlink "$tmp/x/bin/sh")" != "" ] || fail "$comp: /bin/sh is not a link to busybox"
  [ ! -e "$tmp/x/bin/ls" ] || fail "$comp: --applets sh,cat still linked ls"
  cmp -s "$tmp/x/etc/payload" "$tmp/payload" || fail "$comp: --add file lost or changed"
  echo "ok: initramfs --compress $comp"
done

mkdir -p "$tmp/root/etc" && cp "$tmp/payload" "$tmp/root/etc/payload"
"$repo/scripts/wisp-mkrootfs" -o "$tmp/root.ext4" -s 32M --init "$init" "$tmp/root" >/dev/null
[ "$(stat -c %s "$tmp/root.ext4")" -eq $((32 << 20)) ] || fail "rootfs: size is not 32 MiB"
e2fsck -fn "$tmp/root.ext4" >/dev/null 2>&1 || fail "rootfs: e2fsck reports errors"
debugfs -R "cat /etc/payload" "$tmp/root.ext4" 2>/dev/null | cmp -s - "$tmp/payload" \
    || fail "rootfs: /etc/payload missing or changed"
debugfs -R "stat /sbin/init" "$tmp/root.ext4" 2>/dev/null | grep -q "User:     0" \
    || fail "rootfs: /sbin/init missing or not owned by root"
echo "ok: rootfs"

# --busybox without DIR: busybox, its applets and the system directories, e2fsck-clean.
"$repo/scripts/wisp-mkrootfs" -o "$tmp/bb.ext4" --busybox --init "$init" >/dev/null
e2fsck -fn "$tmp/bb.ext4" >/dev/null 2>&1 || fail "rootfs --busybox: e2fsck reports errors"
for f in /bin/busybox /bin/sh /sbin/init /proc /dev /tmp; do
  debugfs -R "stat $f" "$tmp/bb.ext4" 2>/dev/null | grep -q "Inode:" || fail "rootfs --busybox: $f missing"
done
[ "$(debugfs -R "stat /bin/sh" "$tmp/bb.ext4" 2>/dev/null | grep -c 'Fast link dest: "/bin/busybox"')" = 1 ] ||
  fail "rootfs --busybox: /bin/sh does not link to /bin/busybox"
echo "ok: rootfs --busybox"

# A missing DIR is a usage error that names it.
if msg=$("$repo/scripts/wisp-mkrootfs" -o "$tmp/r2.ext4" "$tmp/nope" 2>&1); then
  fail "rootfs: a missing directory was accepted"
fi
grep -q "nope" <<<"$msg" || fail "rootfs: the error does not name the directory: $msg"
echo "ok: bad input"
