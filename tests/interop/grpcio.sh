#!/usr/bin/env bash
# shellcheck disable=SC2154 # srv_start sets NAME_PID, NAME_PORT, NAME_OPS, NAME_ERR
# Interop: grpcio (Debian python3-grpcio, run with /usr/bin/python3) against airlock-testsvc over h2c and mTLS.
# Starts its own servers on free loopback ports; binaries from $BIN
# (default build/bin). Message classes come from protoc --python_out at run time.
# Prints PASS/FAIL/SKIP lines; exits non-zero if any check failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
source "$ROOT/tests/lib/server.sh"
source "$ROOT/tests/lib/certs.sh"
trap 'srv_cleanup; rm -rf "$T_DIR"' EXIT

PY=/usr/bin/python3 # Debian's python3-grpcio belongs to it, not to a python3 earlier on PATH
if ! "$PY" -c 'import grpc, google.protobuf' 2>/dev/null; then
  t_fail grpcio "$PY cannot import grpc and google.protobuf (python3-grpcio, python3-protobuf: scripts/install-deps.sh test)"
  exit 1
fi
if ! command -v protoc >/dev/null; then
  t_fail grpcio "protoc is not installed (protobuf-compiler: scripts/install-deps.sh test)"
  exit 1
fi
GEN=$T_DIR/gen
mkdir -p "$GEN"
if ! protoc -I"$ROOT/proto" --python_out="$GEN" \
     "$ROOT/proto/airlock/test/v1/test.proto" "$ROOT/proto/grpc/health/v1/health.proto"; then
  t_fail grpcio "protoc --python_out failed"
  exit 1
fi
if [[ ! -x $BIN/airlock-testsvc ]]; then
  t_fail grpcio "$BIN/airlock-testsvc is not built"
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
  srv_start tls_small airlock-testsvc "${TLS_ARGS[@]}" --grpc.max_message_size=64KiB "${COMMON[@]}" ||
  { t_fail start "a server did not start"; exit 1; }

# Re-issues the TLS server's certificate (new key, new serial) and asks it to reload.
RELOAD_CMD="CERTS_TOOL=$(printf %q "$CERTS_TOOL") BIN=$(printf %q "$BIN") bash -c $(printf %q \
  "source $(printf %q "$ROOT/tests/lib/certs.sh") && certs_reissue $(printf %q "$T_DIR") test testsvc && kill -HUP $tls_PID")"

echo "certificates made with $CERTS_TOOL; grpcio $("$PY" -c 'import grpc; print(grpc.__version__)')"
GEN_DIR=$GEN PKI=$PKI RELOAD_CMD=$RELOAD_CMD \
  H2C=127.0.0.1:$h2c_PORT H2C_SMALL=127.0.0.1:$h2c_small_PORT \
  TLS=127.0.0.1:$tls_PORT TLS_SMALL=127.0.0.1:$tls_small_PORT \
  "$PY" "$HERE/grpcio_test.py"
rc=$?
((rc != 0)) && echo "grpcio_test.py exited with status $rc"
((rc != 0)) && T_FAILED=$((T_FAILED + 1))

if grep -q 'event=tls.reload result=ok' "$tls_ERR"; then
  t_pass tls-reload-logged
else
  t_fail tls-reload-logged "no 'event=tls.reload result=ok' in the TLS server's log"
fi
for s in h2c h2c_small tls tls_small; do
  srv_check "$s"
  srv_idle_check "$s"
  srv_stop_check "$s"
done
((T_FAILED)) && srv_dump_logs
((T_FAILED == 0))
