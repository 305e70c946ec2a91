#!/usr/bin/env bash
# Builds wisp's guest kernel from Debian's linux-source-6.1 package, cached by content.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: guest/kernel/build.sh [OPTIONS]

Build the wisp guest kernel (vmlinux with a PVH entry, and bzImage) from Debian's
linux-source-6.1 tarball: unpack, apply guest/kernel/emulated-cpl0.patch, then
`make tinyconfig`, merge guest/kernel/wisp-guest.fragment, `make olddefconfig`,
check that every option of the fragment survived, and build.

Results are cached in $WISP_CACHE/guest-kernel/<key>/{vmlinux,bzImage,config}, where
<key> is a hash of the source package version, the fragment, the patch and this
script. When the cache holds the key, nothing is built. On success the script prints
the cache directory (one line on stdout) and nothing else.

Options:
  --print-path        print the cache directory for the current inputs and exit
                      (0 if it is built, 1 if not), without building
  --source TARBALL    kernel source tarball (default: /usr/src/linux-source-6.1.tar.xz,
                      from the Debian package linux-source-6.1)
  --fragment FILE     config fragment (default: guest/kernel/wisp-guest.fragment)
  --patch FILE        source patch (default: guest/kernel/emulated-cpl0.patch)
  -j N                parallel make jobs (default: nproc)
  -h, --help          show this help
  --version           show the version

Environment:
  WISP_CACHE          cache root (default /var/cache/wisp)

Exit status: 0 success, 1 build failure or missing source, 2 usage error.
USAGE
}

die() { echo "guest/kernel/build.sh: $*" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_tar=/usr/src/linux-source-6.1.tar.xz
fragment="$here/wisp-guest.fragment"
patch_file="$here/emulated-cpl0.patch"
jobs="$(nproc)"
print_path=0

while [ $# -gt 0 ]; do
  case "$1" in
  --print-path) print_path=1 ;;
  --source) source_tar="${2:?--source needs a path}"; shift ;;
  --fragment) fragment="${2:?--fragment needs a path}"; shift ;;
  --patch) patch_file="${2:?--patch needs a path}"; shift ;;
  -j) jobs="${2:?-j needs a number}"; shift ;;
  -j*) jobs="${1#-j}" ;;
  -h | --help) usage; exit 0 ;;
  --version) echo "wisp guest/kernel/build.sh 0.1.0"; exit 0 ;;
  *) echo "guest/kernel/build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "guest/kernel/build.sh: -j wants a positive number, got '$jobs'" >&2; exit 2; }
[ -f "$fragment" ] || die "config fragment '$fragment' not found"
[ -f "$patch_file" ] || die "patch '$patch_file' not found"
if [ ! -f "$source_tar" ]; then
  die "kernel source '$source_tar' not found; install it with: apt-get install linux-source-6.1"
fi

# The source version: the Debian package version when the tarball is the package's,
# otherwise the tarball's content hash.
source_version=""
if [ "$source_tar" = /usr/src/linux-source-6.1.tar.xz ]; then
  source_version="$(dpkg-query -W -f '${Version}' linux-source-6.1 2>/dev/null || true)"
fi
[ -n "$source_version" ] || source_version="sha256:$(sha256sum <"$source_tar" | cut -d' ' -f1)"

cache_root="${WISP_CACHE:-/var/cache/wisp}/guest-kernel"
key="$({
  echo "source $source_version"
  echo "fragment"; cat "$fragment"
  echo "patch"; cat "$patch_file"
  echo "script"; cat "${BASH_SOURCE[0]}"
} | sha256sum | cut -c1-16)"
out="$cache_root/$key"

if [ "$print_path" = 1 ]; then
  echo "$out"
  [ -f "$out/vmlinux" ] && exit 0 || exit 1
fi
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
# One build at a time (scripts/test and a developer may start it together).
exec 9>"$cache_root/.lock"
flock 9
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  echo "$out"
  exit 0
fi

start=$(date +%s)
work="$cache_root/work"
tree="$work/linux"
log="$work/build.log"
echo "guest/kernel/build.sh: building the guest kernel ($key, ~5-10 min on 2 cores; log: $log)" >&2

# The work tree is reused when it came from the same tarball and has the same patch
# applied, so a fragment change rebuilds incrementally; otherwise it is unpacked again.
tree_id="$source_version $(sha256sum <"$patch_file" | cut -c1-16)"
if [ ! -f "$work/tree-id" ] || [ "$(cat "$work/tree-id")" != "$tree_id" ]; then
  rm -rf "$work"
  mkdir -p "$work/unpack"
  tar -xf "$source_tar" -C "$work/unpack" || die "cannot unpack '$source_tar'"
  top="$(find "$work/unpack" -mindepth 1 -maxdepth 1 -type d | head -n1)"
  [ -n "$top" ] && [ -f "$top/Makefile" ] || die "'$source_tar' does not hold a kernel tree"
  mv "$top" "$tree"
  rmdir "$work/unpack"
  patch -d "$tree" -p1 --quiet --forward <"$patch_file" || die "patch '$patch_file' does not apply to $source_version"
  echo "$tree_id" >"$work/tree-id"
fi

kmake() { make -C "$tree" ARCH=x86_64 "$@" >>"$log" 2>&1; }
: >"$log"
kmake tinyconfig || die "make tinyconfig failed (see $log)"
"$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$fragment" >>"$log" 2>&1 ||
  die "merging '$fragment' failed (see $log)"
kmake olddefconfig || die "make olddefconfig failed (see $log)"

# Fail loudly when Kconfig dropped an option of the fragment (an unmet dependency
# silently turns CONFIG_PVH=y into nothing, and the VMM then cannot boot vmlinux).
bad=0
while IFS= read -r line; do
  if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    got="$(grep -E "^${BASH_REMATCH[1]}=" "$tree/.config" || true)"
    if [ "$got" != "$line" ]; then
      echo "guest/kernel/build.sh: $line did not stick after olddefconfig (got '${got:-unset}')" >&2
      bad=1
    fi
  elif [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    if grep -qE "^${BASH_REMATCH[1]}=" "$tree/.config"; then
      echo "guest/kernel/build.sh: ${BASH_REMATCH[1]} is set although the fragment unsets it" >&2
      bad=1
    fi
  fi
done <"$fragment"
[ "$bad" = 0 ] || die "the configuration does not match '$fragment' (fix its dependencies)"

kmake -j"$jobs" vmlinux bzImage || { tail -n 30 "$log" >&2; die "kernel build failed (see $log)"; }

tmp="$cache_root/.tmp-$key-$$"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$tree/vmlinux" "$tmp/vmlinux"
cp "$tree/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$tree/.config" "$tmp/config"
echo "$(($(date +%s) - start))" >"$tmp/build-seconds"
rm -rf "$out"
mv "$tmp" "$out"
echo "guest/kernel/build.sh: built in $(($(date +%s) - start)) s" >&2
echo "$out"
