#!/usr/bin/env bash
# Integration: airlock-intake over mTLS, driven by grpcio (Debian python3-grpcio,
# /usr/bin/python3) from intake_test.py, which also plays executors through
# ExecutorService with real executor identity certificates (a test client, not a
# mock): API key authentication and scopes, Submit validation, idempotency, quotas,
# tenant isolation, pools, fencing, lease expiry and retries, sessions, Watch replay
# and resume, cancellation, grants, kill -9 during a burst of Submits, restart grace,
# retention and drain. Servers listen on 127.0.0.1 port 0; binaries from $BIN
# (default build/bin; an ASan build works too: BIN=build-asan/bin). Prints
# PASS/FAIL/SKIP lines; exits non-zero if any check failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
PIDS_FILE=$T_DIR/pids
: >"$PIDS_FILE"
source "$ROOT/tests/lib/server.sh"

cleanup() {
  local pid
  while read -r pid; do
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  done <"$PIDS_FILE"
  [[ -n ${PY_PID:-} ]] && kill -KILL "$PY_PID" 2>/dev/null
  if [[ -n ${INTAKE_KEEP:-} ]]; then
    echo "kept $T_DIR (INTAKE_KEEP)"
  else
    rm -rf "$T_DIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PY=/usr/bin/python3 # Debian's python3-grpcio belongs to it
if ! "$PY" -c 'import grpc, google.protobuf' 2>/dev/null; then
  t_fail intake "$PY cannot import grpc and google.protobuf (python3-grpcio, python3-protobuf: scripts/install-deps.sh test)"
  exit 1
fi
for tool in protoc openssl; do
  if ! command -v "$tool" >/dev/null; then
    t_fail intake "$tool is not installed (scripts/install-deps.sh test)"
    exit 1
  fi
done
for b in airlock-intake airlockctl; do
  if [[ ! -x $BIN/$b ]]; then
    t_fail intake "$BIN/$b is not built"
    exit 1
  fi
done
GEN=$T_DIR/gen
mkdir -p "$GEN"
if ! protoc -I"$ROOT/proto" --python_out="$GEN" "$ROOT/proto/airlock/v1/common.proto" \
     "$ROOT/proto/airlock/v1/grant.proto" "$ROOT/proto/airlock/v1/intake.proto" \
     "$ROOT/proto/grpc/health/v1/health.proto"; then
  t_fail intake "protoc --python_out failed"
  exit 1
fi
touch "$GEN/airlock/__init__.py" "$GEN/airlock/v1/__init__.py"
H=$T_DIR/home
if ! AIRLOCK_HOME=$H "$BIN/airlockctl" certs init >"$T_DIR/certs.log" 2>&1; then
  t_fail certs "airlockctl certs init failed: $(tail -n 2 "$T_DIR/certs.log" | tr '\n' ' ')"
  exit 1
fi
# more identities: a third executor, and a client certificate mapped to a principal
for id in "executor executor-2" "client acme-bot"; do
  if ! AIRLOCK_HOME=$H "$BIN/airlockctl" certs issue $id >>"$T_DIR/certs.log" 2>&1; then
    t_fail certs "airlockctl certs issue $id failed: $(tail -n 2 "$T_DIR/certs.log" | tr '\n' ' ')"
    exit 1
  fi
done

BIN=$BIN GEN_DIR=$GEN T_DIR=$T_DIR AIRLOCK_HOME=$H PIDS_FILE=$PIDS_FILE \
  "$PY" "$HERE/intake_test.py" 2>"$T_DIR/python.err" &
PY_PID=$!
wait "$PY_PID"
rc=$?
PY_PID=
if ((rc != 0)); then
  echo "intake_test.py exited with status $rc; its stderr:"
  sed 's/^/  | /' "$T_DIR/python.err" | tail -n 80
  T_FAILED=$((T_FAILED + 1))
fi

# Every server started (including the ones killed with -9) must be free of sanitizer
# reports, and no log may hold an API key secret.
logs_sanitizer_check intake
((T_FAILED == 0))
