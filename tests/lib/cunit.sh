#!/usr/bin/env bash
# Runs one CUnit executable (built in verbose basic mode) and turns its
# "Test: NAME ...passed" / "...FAILED" lines into PASS/FAIL lines; the exit
# status of the executable decides success.
set -o pipefail
exe=$1
name=$(basename "$exe")
"$exe" 2>&1 | tee /dev/stderr | sed -nE \
  -e "s/^ *Test: (.*) \.\.\.passed.*/PASS $name: \1/p" \
  -e "s/^ *Test: (.*) \.\.\.FAILED.*/FAIL $name: \1/p" \
  -e "s/^ *Test: (.*) \.\.\.(skipped|inactive).*/SKIP $name: \1/p"
