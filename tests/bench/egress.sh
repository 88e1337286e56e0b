#!/usr/bin/env bash
# Benchmark: the egress proxy (airlock-egress, started by airlock-executor) on
# an HTTPS request from inside a sandbox, against the same request made
# directly outside the sandbox and through Debian's squid as a plain forward
# proxy (CONNECT), in the same run.
#
# What is measured (tests/bench/egress_bench.py drives it; the same client,
# tests/bench/egress_client.py, makes every request): one kept-alive TLS
# connection per variant, BENCH_N timed GET requests after BENCH_WARMUP, each
# request's latency from sending it to having the whole response:
#   direct     outside the sandbox, straight to the upstream (the baseline;
#              for /public, and for /api with the real token)
#   squid      outside the sandbox, CONNECT through squid, /public
#   tunnel     inside a sandbox, CONNECT through airlock-egress, not
#              intercepted (the job binds no credential), /public
#   intercept  inside a sandbox, through airlock-egress, intercepted: TLS
#              terminated with the job's CA, the placeholder replaced by the
#              credential in its template slot, the response scrubbed, /api
# The upstream (tests/integration/egress_upstream.py, HTTPS with its own test
# CA made at run time) runs in a network namespace reached over a veth pair,
# as in tests/integration/egress.sh; /api answers 200 only with the real
# token, so an intercepted request that was not injected fails the run.
# The servers are the real ones (credstore with its durable audit chain,
# intake, executor), from a Release build.
#
# Added latency = a proxy's p50 (p99) minus direct's for the same path. The
# ratio is tunnel added p50 / squid added p50. Targets (reported, never
# asserted): tunnelled CONNECT adds no more than squid does; an intercepted
# request on a kept-alive connection adds <= 0.5 ms p50.
#
# Usage: tests/bench/egress.sh   (as root: sandboxes and network namespaces)
# Environment (defaults in brackets):
#   BIN            Release binaries [build-bench/bin; built there if missing
#                  or out of date]
#   BENCH_N        timed requests per variant and round [2000]
#   BENCH_WARMUP   untimed requests first [200]
#   BENCH_ROUNDS   rounds; the best p50 and p99 of each variant are used [3]
# Loopback and the test namespace only. The last line is:
#   summary: ratio=<tunnel_added_p50/squid_added_p50> tunnel_added_p50_ms=...
#            tunnel_added_p99_ms=... squid_added_p50_ms=... squid_added_p99_ms=...
#            intercept_added_p50_ms=... intercept_added_p99_ms=... direct_p50_ms=...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
if [[ -z ${BIN:-} ]]; then
  scripts/install-deps.sh bench >/dev/null
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >build-bench.configure.log 2>&1
  make -C build-bench -j"$(nproc)" --no-print-directory >build-bench.build.log 2>&1 ||
    { grep -E 'error' build-bench.build.log | head; exit 1; }
  BIN=$ROOT/build-bench/bin
fi
for b in airlock-credstore airlock-intake airlock-executor airlock-egress airlockctl; do
  [[ -x $BIN/$b ]] || { echo "egress bench: $BIN/$b is not built" >&2; exit 1; }
done
for tool in squid protoc openssl ip; do
  command -v "$tool" >/dev/null ||
    { echo "egress bench: $tool is missing (scripts/install-deps.sh bench)" >&2; exit 1; }
done
((EUID == 0)) || { echo "egress bench: run as root (sandboxes, network namespaces)" >&2; exit 1; }

T_DIR=$(mktemp -d)
PIDS_FILE=$T_DIR/pids
: >"$PIDS_FILE"
SQUID_PID=""
source "$ROOT/tests/lib/egress_net.sh"
cleanup() {
  local pid
  set +e # every step runs, whatever the one before did
  while read -r pid; do
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  done <"$PIDS_FILE"
  if [[ -n $SQUID_PID ]]; then
    kill -KILL "$SQUID_PID" 2>/dev/null
  fi
  egress_net_down
  rm -rf "$T_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

GEN=$T_DIR/gen
mkdir -p "$GEN"
protoc -I"$ROOT/proto" --python_out="$GEN" "$ROOT"/proto/airlock/v1/{common,grant,intake,credstore}.proto
touch "$GEN/airlock/__init__.py" "$GEN/airlock/v1/__init__.py"
H=$T_DIR/home
AIRLOCK_HOME=$H "$BIN/airlockctl" certs init >/dev/null
UP=$T_DIR/upstream
egress_net_up "$UP"
egress_upstream_start "$UP" --quiet

# squid: a plain forward proxy on loopback, CONNECT to the upstream's port only,
# no cache, no access log; the test names from a hosts file.
SQ=$T_DIR/squid
mkdir -p "$SQ"
SQUID_PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '%s upstream.test\n' "$EGRESS_UP_ADDR" >"$SQ/hosts"
cat >"$SQ/squid.conf" <<EOF
http_port 127.0.0.1:$SQUID_PORT
acl bench_ports port 8443
acl CONNECT method CONNECT
http_access allow CONNECT bench_ports
http_access deny all
cache deny all
access_log none
cache_store_log none
cache_log $SQ/cache.log
pid_filename $SQ/squid.pid
coredump_dir $SQ
hosts_file $SQ/hosts
dns_nameservers 127.0.0.1
workers 1
shutdown_lifetime 1 second
EOF
chmod 711 "$T_DIR" # squid drops to its own user, which must reach its directory
chown -R proxy:proxy "$SQ"
squid -N -f "$SQ/squid.conf" >"$SQ/squid.out" 2>&1 &
SQUID_PID=$!
disown "$SQUID_PID"
squid_ok=0
for _ in $(seq 1 100); do
  if curl -sf -o /dev/null --max-time 5 --cacert "$UP/ca.crt" -x "http://127.0.0.1:$SQUID_PORT" \
       https://upstream.test:8443/public; then
    squid_ok=1
    break
  fi
  kill -0 "$SQUID_PID" 2>/dev/null || break
  sleep 0.2
done
if ((!squid_ok)); then
  echo "egress bench: squid does not forward to the upstream:" >&2
  cat "$SQ/squid.out" "$SQ/cache.log" >&2
  exit 1
fi
echo "squid $(squid -v | head -n 1 | awk '{print $4}') on 127.0.0.1:$SQUID_PORT; upstream $EGRESS_UP_ADDR (namespace $EGRESS_NS)"

BIN=$BIN GEN_DIR=$GEN T_DIR=$T_DIR AIRLOCK_HOME=$H PIDS_FILE=$PIDS_FILE \
  UP_DIR=$UP UP_ADDR=$EGRESS_UP_ADDR UP_NET=$EGRESS_UP_NET SQUID=127.0.0.1:$SQUID_PORT \
  /usr/bin/python3 "$ROOT/tests/bench/egress_bench.py"
