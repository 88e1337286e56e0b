#!/usr/bin/env bash
# Runs one libFuzzer target for FUZZ_SECONDS on a fresh corpus seeded from
# tests/fuzz/seeds/<target>/ when present.
set -u
f=$1
name=$(basename "$f")
corpus=$(mktemp -d)
seeds="$(dirname "$0")/../fuzz/seeds/$name"
[[ -d $seeds ]] && cp -r "$seeds"/. "$corpus"/
if "$f" -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 -rss_limit_mb=2048 \
     -print_final_stats=1 -artifact_prefix="$corpus.art-" "$corpus" >"$corpus.log" 2>&1; then
  echo "PASS $name: $(grep -E 'stat::number_of_executed_units' "$corpus.log" | awk '{print $2}') execs, no crash in ${FUZZ_SECONDS:-30}s"
  rc=0
else
  echo "FAIL $name"; tail -n 40 "$corpus.log"; rc=1
  keep="$(dirname "$f")/../crashes"; mkdir -p "$keep"
  mv "$corpus".art-* "$keep"/ 2>/dev/null && echo "crash input kept in $keep"
fi
rm -rf "$corpus" "$corpus.log" "$corpus".art-*
exit $rc
