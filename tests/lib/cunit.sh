#!/usr/bin/env bash
# Runs one CUnit executable (built in verbose basic mode) and turns its
# "Test: NAME ...passed" / "...FAILED" lines into PASS/FAIL lines; the exit
# status of the executable decides success. The executable's stderr (the
# code under test logs there) is kept apart while it runs, so log lines never
# split CUnit's result lines, and is printed after its stdout.
set -o pipefail
exe=$1
name=$(basename "$exe")
err=$(mktemp)
trap 'rm -f "$err"' EXIT
"$exe" 2>"$err" | tee /dev/stderr | sed -nE \
  -e "s/^ *Test: (.*) \.\.\.passed.*/PASS $name: \1/p" \
  -e "s/^ *Test: (.*) \.\.\.FAILED.*/FAIL $name: \1/p" \
  -e "s/^ *Test: (.*) \.\.\.(skipped|inactive).*/SKIP $name: \1/p"
rc=$?
cat "$err" >&2
exit "$rc"
