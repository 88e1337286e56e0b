#!/usr/bin/env bash
# Integration: airlock-credstore over mTLS, driven by grpcio (Debian python3-grpcio,
# /usr/bin/python3).
#   credstore_test.py: admin API access control, Resolve allowed and every kind of denial
#     (each audited), rotation, restart, canary scans of the database and WAL, audit chain
#     tampering (edit, delete, truncate, rollback), policy rows edited in SQLite, audit sink
#     unwritable (head file, full tmpfs), kill -9 during a burst of Puts, wrong master key.
#   credstore_ops_test.py: the process's memory scanned for canary values after a burst of
#     resolves (and found, locked, while one is held), not dumpable, no core dumps;
#     master-key rotation and backup/restore round trips with airlockctl while readers and
#     writers run; AppendAudit; Delete, paging, bad Put input, gateway route grants, grace.
# Servers listen on 127.0.0.1 port 0; binaries from $BIN (default build/bin; an ASan build
# works too: BIN=build-asan/bin). Prints PASS/FAIL/SKIP lines; exits non-zero if any check
# failed. Needs root for the tmpfs check, the memory scans and the run as uid nobody (each
# skips loudly otherwise).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
PIDS_FILE=$T_DIR/pids
MOUNTS_FILE=$T_DIR/mounts
: >"$PIDS_FILE"
: >"$MOUNTS_FILE"
source "$ROOT/tests/lib/server.sh"

cleanup() {
  local pid m
  while read -r pid; do
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  done <"$PIDS_FILE"
  while read -r m; do
    [[ -n $m ]] && umount -l "$m" 2>/dev/null
  done <"$MOUNTS_FILE"
  [[ -n ${PY_PID:-} ]] && kill -KILL "$PY_PID" 2>/dev/null
  rm -rf "$T_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PY=/usr/bin/python3 # Debian's python3-grpcio belongs to it
if ! "$PY" -c 'import grpc, google.protobuf, sqlite3' 2>/dev/null; then
  t_fail credstore "$PY cannot import grpc and google.protobuf (python3-grpcio, python3-protobuf: scripts/install-deps.sh test)"
  exit 1
fi
for tool in protoc sqlite3 openssl; do
  if ! command -v "$tool" >/dev/null; then
    t_fail credstore "$tool is not installed (scripts/install-deps.sh test)"
    exit 1
  fi
done
for b in airlock-credstore airlockctl; do
  if [[ ! -x $BIN/$b ]]; then
    t_fail credstore "$BIN/$b is not built"
    exit 1
  fi
done
GEN=$T_DIR/gen
mkdir -p "$GEN"
if ! protoc -I"$ROOT/proto" --python_out="$GEN" "$ROOT/proto/airlock/v1/common.proto" \
     "$ROOT/proto/airlock/v1/grant.proto" "$ROOT/proto/airlock/v1/credstore.proto"; then
  t_fail credstore "protoc --python_out failed"
  exit 1
fi
touch "$GEN/airlock/__init__.py" "$GEN/airlock/v1/__init__.py"
H=$T_DIR/home
if ! AIRLOCK_HOME=$H "$BIN/airlockctl" certs init >"$T_DIR/certs.log" 2>&1; then
  t_fail certs "airlockctl certs init failed: $(tail -n 2 "$T_DIR/certs.log" | tr '\n' ' ')"
  exit 1
fi

# CREDSTORE_SCRIPTS selects the Python parts (default both); CREDSTORE_OPS_SUITES selects
# suites inside credstore_ops_test.py (memory,nodump,rotation,backup,append,misc).
for script in ${CREDSTORE_SCRIPTS:-credstore_test.py credstore_ops_test.py}; do
  BIN=$BIN GEN_DIR=$GEN T_DIR=$T_DIR AIRLOCK_HOME=$H PIDS_FILE=$PIDS_FILE MOUNTS_FILE=$MOUNTS_FILE \
    "$PY" "$HERE/$script" 2>"$T_DIR/python-$script.log" &
  PY_PID=$!
  wait "$PY_PID"
  rc=$?
  PY_PID=
  if ((rc != 0)); then
    echo "$script exited with status $rc; its stderr:"
    sed 's/^/  | /' "$T_DIR/python-$script.log" | tail -n 60
    T_FAILED=$((T_FAILED + 1))
  fi
done

# Every server started (including the ones killed with -9 and the ones that refused to
# start) must be free of sanitizer reports.
logs_sanitizer_check credstore
((T_FAILED == 0))
