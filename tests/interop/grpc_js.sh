#!/usr/bin/env bash
# shellcheck disable=SC2154 # srv_start sets NAME_PID, NAME_PORT, NAME_OPS, NAME_ERR
# Interop: grpc-js (Node.js) against airlock-testsvc over h2c and mTLS.
# Starts its own servers on free loopback ports; binaries from $BIN
# (default build/bin). Needs `npm ci` in tests/interop (tests/run.sh does it).
# Prints PASS/FAIL/SKIP lines; exits non-zero if any check failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
source "$ROOT/tests/lib/server.sh"
source "$ROOT/tests/lib/certs.sh"
trap 'srv_cleanup; rm -rf "$T_DIR"' EXIT

if ! command -v node >/dev/null; then
  t_fail grpc-js "node is not installed (scripts/install-deps.sh test)"
  exit 1
fi
if [[ ! -d $HERE/node_modules/@grpc/grpc-js || ! -d $HERE/node_modules/@grpc/proto-loader ]]; then
  t_fail grpc-js "tests/interop/node_modules is missing: run 'npm ci' in tests/interop"
  exit 1
fi
if [[ ! -x $BIN/airlock-testsvc ]]; then
  t_fail grpc-js "$BIN/airlock-testsvc is not built"
  exit 1
fi
if ! certs_init "$T_DIR"; then
  t_fail certs "could not make test certificates"
  exit 1
fi
PKI=$T_DIR/pki
TLS_ARGS=(--tls.cert_file="$PKI/test-testsvc.crt" --tls.key_file="$PKI/test-testsvc.key"
          --tls.ca_file="$PKI/ca.crt" --tls.client_cert=require)
COMMON=(--grpc.drain_timeout=10s)

srv_start h2c airlock-testsvc --insecure=true "${COMMON[@]}" &&
  srv_start h2c_small airlock-testsvc --insecure=true --grpc.max_message_size=64KiB "${COMMON[@]}" &&
  srv_start tls airlock-testsvc "${TLS_ARGS[@]}" "${COMMON[@]}" &&
  srv_start tls_small airlock-testsvc "${TLS_ARGS[@]}" --grpc.max_message_size=64KiB "${COMMON[@]}" &&
  srv_start drain airlock-testsvc --insecure=true --grpc.drain_timeout=60s ||
  { t_fail start "a server did not start"; exit 1; }

V6=""
if [[ -e /proc/net/if_inet6 ]] && grep -q '^0\{31\}1 ' /proc/net/if_inet6; then
  srv_start v6 airlock-testsvc "${TLS_ARGS[@]}" "${COMMON[@]}" --listen='[::1]:0' ||
    { t_fail start "the IPv6 server did not start"; exit 1; }
  V6="[::1]:$v6_PORT"
fi

# Re-issues the TLS server's certificate (new key, new serial) and asks it to reload.
RELOAD_CMD="CERTS_TOOL=$(printf %q "$CERTS_TOOL") BIN=$(printf %q "$BIN") bash -c $(printf %q \
  "source $(printf %q "$ROOT/tests/lib/certs.sh") && certs_reissue $(printf %q "$T_DIR") test testsvc && kill -HUP $tls_PID")"

echo "certificates made with $CERTS_TOOL; node $(node --version)"
PROTO_DIR=$ROOT/proto PKI=$PKI RELOAD_CMD=$RELOAD_CMD \
  H2C=127.0.0.1:$h2c_PORT H2C_SMALL=127.0.0.1:$h2c_small_PORT \
  TLS=127.0.0.1:$tls_PORT TLS_SMALL=127.0.0.1:$tls_small_PORT \
  DRAIN=127.0.0.1:$drain_PORT DRAIN_PID=$drain_PID V6=$V6 \
  node --no-deprecation "$HERE/grpc_js_test.js"
rc=$?
((rc != 0)) && echo "grpc_js_test.js exited with status $rc"
((rc != 0)) && T_FAILED=$((T_FAILED + 1))

if grep -q 'event=tls.reload result=ok' "$tls_ERR"; then
  t_pass tls-reload-logged
else
  t_fail tls-reload-logged "no 'event=tls.reload result=ok' in the TLS server's log"
fi
# The drain server was stopped with SIGTERM by the h2c-drain check.
drain_exit() { # runs in this shell: only it can wait for the server
  local i rc
  for ((i = 0; i < SRV_STOP_TIMEOUT * 10; i++)); do
    kill -0 "$drain_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$drain_PID" 2>/dev/null; then
    t_fail drain-exit "still running ${SRV_STOP_TIMEOUT}s after SIGTERM"
    return
  fi
  wait "$drain_PID"
  rc=$?
  if ! srv_sanitizer_free drain >/dev/null; then
    t_fail drain-exit "$(srv_sanitizer_free drain)"
  elif ((rc != 0)); then
    t_fail drain-exit "exit status $rc; log tail: $(tail -n 2 "$drain_ERR" | tr '\n' ' ')"
  elif ! grep -q 'event=service.stop reason=drained' "$drain_ERR"; then
    t_fail drain-exit "no 'event=service.stop reason=drained' in its log"
  else
    t_pass drain-exit
  fi
}
drain_exit
servers=(h2c h2c_small tls tls_small)
[[ -n $V6 ]] && servers+=(v6)
for s in "${servers[@]}"; do
  srv_check "$s"
  srv_idle_check "$s"
  srv_stop_check "$s"
done
((T_FAILED)) && srv_dump_logs
((T_FAILED == 0))
