#!/usr/bin/env bash
# Runs one libFuzzer target for the fuzz suite: every regression input once (each must pass),
# then WISP_FUZZ_SECONDS (default 60) of fuzzing starting from a copy of the seed corpus (the
# repository's corpus is not modified). A crash leaves its input in $WISP_FUZZ_ARTIFACTS (default
# a temporary directory, printed): copy it to the target's regression directory.
# Usage: run_fuzz.sh TARGET SEED_CORPUS_DIR [REGRESSION_DIR]
set -uo pipefail
target=$1 seeds=$2 regress=${3:-}
secs=${WISP_FUZZ_SECONDS:-60}
work=$(mktemp -d "${TMPDIR:-/tmp}/wisp-fuzz.XXXXXX")
art=${WISP_FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$art" "$work/corpus"
trap 'rm -rf "$work/corpus"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
if [ -n "$regress" ] && [ -d "$regress" ] && [ -n "$(ls -A "$regress")" ]; then
  echo "== $(ls "$regress" | wc -l) regression inputs from $regress"
  if ! "$target" -rss_limit_mb=2048 "$regress"/* >"$work/regress.log" 2>&1; then
    tail -40 "$work/regress.log"
    echo "FAIL: a regression input crashes $target"
    exit 1
  fi
fi
cp -r "$seeds"/. "$work/corpus/"
echo "== fuzzing $(basename "$target") for ${secs}s (seeds: $seeds, crashes go to $art)"
"$target" -max_total_time="$secs" -max_len=100000 -rss_limit_mb=2048 -timeout=20 \
  -print_final_stats=1 -artifact_prefix="$art/" "$work/corpus" "$seeds" 2>&1 | tail -25
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "FAIL: $(basename "$target") found a crash (exit $rc); inputs in $art:"
  ls -l "$art"
  exit 1
fi
rm -rf "$work"
echo "no crash in ${secs}s"
