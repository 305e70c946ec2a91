#!/usr/bin/env bash
# Fails, naming the files, when a tracked C file differs from what clang-format makes of it
# (the repository's .clang-format). Fix with: clang-format -i FILE
set -u
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format is not installed"; exit 1; }
bad=0
while IFS= read -r f; do
  if ! clang-format "$f" | cmp -s - "$f"; then
    echo "not formatted: $f"
    bad=1
  fi
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find src tests guest bench fuzz -name '*.[ch]')
exit $bad
