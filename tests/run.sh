#!/usr/bin/env bash
# Installs what is missing, builds (Debug -Werror, ASan+UBSan, libFuzzer) and
# runs every test: CUnit unit tests, integration tests on the real binaries,
# interop tests with third-party clients, and short fuzz runs. Every test that
# runs binaries runs once per build (plain and sanitized).
#
# Usage: tests/run.sh [--quick] [--only PATTERN]
#   --quick        skip the sanitizer build and fuzzing (local iteration)
#   --only PATTERN run only suites whose name matches PATTERN (grep -E)
# Environment: FUZZ_SECONDS (default 30 per target), JOBS (default nproc).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
QUICK=0
ONLY=""
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --only) ONLY=$2; shift ;;
    *) echo "usage: tests/run.sh [--quick] [--only PATTERN]" >&2; exit 2 ;;
  esac
  shift
done
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
export FUZZ_SECONDS

scripts/install-deps.sh test || { echo "FAIL: dependency installation" >&2; exit 1; }
(cd tests/interop && npm ci --silent --no-audit --no-fund >/dev/null) ||
  { echo "FAIL: npm ci in tests/interop" >&2; exit 1; }

build() { # dir, make target ("" = all), extra cmake args...
  local dir=$1 target=$2; shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; return 1; }
  make -C "$dir" -j"$JOBS" --no-print-directory $target >"$dir.build.log" 2>&1 ||
    { grep -E 'error|warning' "$dir.build.log" | head -50; return 1; }
}

mkdir -p build
echo "== build: debug (-Werror)"
build build "" || { echo "FAIL: build"; exit 1; }
BUILDS=(build)
if ((!QUICK)); then
  echo "== build: asan+ubsan"
  build build-asan "" -DAL_SANITIZE=ON || { echo "FAIL: asan build"; exit 1; }
  BUILDS+=(build-asan)
  echo "== build: libFuzzer (clang)"
  CC=clang build build-fuzz fuzz_all -DAL_FUZZ=ON || { echo "FAIL: fuzz build"; exit 1; }
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$ROOT/tests/lib/lsan.supp

pass=0 fail=0 skip=0
failed=()
# Runs one suite: name, command... The suite prints PASS/FAIL/SKIP lines;
# the suite's exit status must be 0 for success.
suite() {
  local name=$1; shift
  if [[ -n $ONLY ]] && ! grep -qE -- "$ONLY" <<<"$name"; then return; fi
  local log
  log=$(mktemp)
  echo "== $name"
  "$@" >"$log" 2>&1
  local rc=$?
  local p f s
  p=$(grep -c '^PASS' "$log"); f=$(grep -c '^FAIL' "$log"); s=$(grep -c '^SKIP' "$log")
  grep -E '^(PASS|FAIL|SKIP)' "$log" | sed 's/^/   /'
  if ((rc != 0 || f > 0)); then
    ((f == 0)) && f=1
    echo "   -- $name failed (exit $rc); log:"
    tail -n 60 "$log" | sed 's/^/   | /'
    failed+=("$name")
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  rm -f "$log"
}

for b in "${BUILDS[@]}"; do
  for t in "$b"/tests/*test_*; do
    [[ -x $t ]] || continue
    suite "unit[$b]: $(basename "$t")" tests/lib/cunit.sh "$t"
  done
  for t in tests/integration/*.sh; do
    [[ -x $t ]] || continue
    suite "integration[$b]: $(basename "$t" .sh)" env BIN="$ROOT/$b/bin" "$t"
  done
  for t in tests/interop/*.sh; do
    [[ -x $t ]] || continue
    suite "interop[$b]: $(basename "$t" .sh)" env BIN="$ROOT/$b/bin" "$t"
  done
done
if ((!QUICK)); then
  for f in build-fuzz/bin/fuzz_*; do
    [[ -x $f ]] || continue
    suite "fuzz: $(basename "$f")" tests/lib/fuzz.sh "$f"
  done
fi

echo
if ((${#failed[@]})); then
  echo "failed suites:"; printf '  %s\n' "${failed[@]}"
fi
echo "$pass passed, $fail failed, $skip skipped"
((fail == 0))
