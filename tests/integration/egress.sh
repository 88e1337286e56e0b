#!/usr/bin/env bash
# End to end: the egress proxy. Real airlock-credstore, airlock-intake and
# airlock-executor (which starts its airlock-egress), real sandboxes running real
# curl and Python urllib, and a test HTTPS upstream with its own test CA (made
# here, at run time) inside a network namespace this script creates, reached
# over a veth pair with private addresses that the executor's egress ceiling
# lists in allow_cidrs. Driven by egress_test.py (grpcio, Debian's
# python3-grpcio, /usr/bin/python3): injection through the proxy, placeholders
# only in the sandbox (environment, files, process memory), scrubbed echoes,
# the value gone from the proxy's memory after the job, every denial (ceiling,
# placeholder misplaced, denied addresses, IP literal spellings, smuggling
# shapes, Host/SNI mismatch, direct connects) refused with a clear error and
# in credstore's audit chain, the proxy killed mid-job, canary scans of the
# intake database, events, results, audit records and logs.
# Needs root (sandboxes, network namespaces, /proc/PID/mem). Binaries from
# $BIN (default build/bin; an ASan build works too). Prints PASS/FAIL/SKIP
# lines; exits non-zero if any check failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
PIDS_FILE=$T_DIR/pids
: >"$PIDS_FILE"
source "$ROOT/tests/lib/server.sh"
source "$ROOT/tests/lib/egress_net.sh"

cleanup() {
  local pid
  while read -r pid; do
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  done <"$PIDS_FILE"
  [[ -n ${PY_PID:-} ]] && kill -KILL "$PY_PID" 2>/dev/null
  egress_net_down
  rm -rf "$T_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PY=/usr/bin/python3 # Debian's python3-grpcio belongs to it
if ! "$PY" -c 'import grpc, google.protobuf' 2>/dev/null; then
  t_fail egress "$PY cannot import grpc and google.protobuf (python3-grpcio, python3-protobuf: scripts/install-deps.sh test)"
  exit 1
fi
for tool in protoc openssl ip curl; do
  if ! command -v "$tool" >/dev/null; then
    t_fail egress "$tool is not installed (scripts/install-deps.sh test)"
    exit 1
  fi
done
if ((EUID != 0)); then
  t_fail egress "must run as root: sandboxes, network namespaces and /proc/PID/mem need it"
  exit 1
fi
for b in airlock-credstore airlock-intake airlock-executor airlock-egress airlockctl; do
  if [[ ! -x $BIN/$b ]]; then
    t_fail egress "$BIN/$b is not built"
    exit 1
  fi
done
GEN=$T_DIR/gen
mkdir -p "$GEN"
if ! protoc -I"$ROOT/proto" --python_out="$GEN" "$ROOT/proto/airlock/v1/common.proto" \
     "$ROOT/proto/airlock/v1/grant.proto" "$ROOT/proto/airlock/v1/intake.proto" \
     "$ROOT/proto/airlock/v1/credstore.proto"; then
  t_fail egress "protoc --python_out failed"
  exit 1
fi
touch "$GEN/airlock/__init__.py" "$GEN/airlock/v1/__init__.py"
H=$T_DIR/home
if ! AIRLOCK_HOME=$H "$BIN/airlockctl" certs init >"$T_DIR/certs.log" 2>&1; then
  t_fail certs "airlockctl certs init failed: $(tail -n 2 "$T_DIR/certs.log" | tr '\n' ' ')"
  exit 1
fi

# The test network: a namespace and veth pair, the upstream's own test CA
# (made now, never committed) and the upstream inside the namespace.
UP=$T_DIR/upstream
if ! egress_net_up "$UP" 2>"$T_DIR/netns.err"; then
  t_fail netns "$(tr '\n' ' ' <"$T_DIR/netns.err")"
  exit 1
fi
if ! egress_upstream_start "$UP" 2>"$T_DIR/netns.err"; then
  t_fail upstream "$(tr '\n' ' ' <"$T_DIR/netns.err")"
  exit 1
fi
UP_ADDR=$EGRESS_UP_ADDR
# the upstream answers over the veth pair, not from here directly otherwise
if curl -sf --max-time 10 --cacert "$UP/ca.crt" --resolve "upstream.test:8443:$UP_ADDR" \
     https://upstream.test:8443/public >/dev/null; then
  t_pass upstream-reachable
else
  t_fail upstream-reachable "https://upstream.test:8443/public over the veth pair did not answer"
  exit 1
fi

BIN=$BIN GEN_DIR=$GEN T_DIR=$T_DIR AIRLOCK_HOME=$H PIDS_FILE=$PIDS_FILE \
  UP_DIR=$UP UP_ADDR=$UP_ADDR UP_NET=$EGRESS_UP_NET \
  "$PY" "$HERE/egress_test.py" 2>"$T_DIR/python.err" &
PY_PID=$!
wait "$PY_PID"
rc=$?
PY_PID=
if ((rc != 0)); then
  echo "egress_test.py exited with status $rc; its stderr:"
  sed 's/^/  | /' "$T_DIR/python.err" | tail -n 80
  T_FAILED=$((T_FAILED + 1))
  for f in "$T_DIR"/*.err; do
    [[ $f == "$T_DIR/python.err" ]] && continue
    if grep -qE "$SRV_SANITIZER_RE" "$f"; then
      echo "--- $(basename "$f") (the sanitizer report)"
      sed -n "/$(grep -m1 -oE "$SRV_SANITIZER_RE" "$f" | head -c 30)/,/SUMMARY/p" "$f" |
        head -n 60 | cut -c1-300 | sed 's/^/  | /'
    else
      echo "--- $(basename "$f") (last 30 lines)"
      tail -n 30 "$f" | cut -c1-400 | sed 's/^/  | /'
    fi
  done
fi

# Every server started (the executor's proxy writes to the executor's stderr) must
# be free of sanitizer reports.
logs_sanitizer_check egress
((T_FAILED == 0))
