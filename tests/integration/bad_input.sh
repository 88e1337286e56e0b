#!/usr/bin/env bash
# shellcheck disable=SC2154 # srv_start sets NAME_PID, NAME_PORT, NAME_OPS, NAME_ERR
# Bad input: hand-built HTTP/2 and TLS misbehaviour against airlock-testsvc
# (raw_h2.py, Python standard library only). Every case must get the answer a
# correct gRPC server gives, or the connection closed, and after every case a
# fresh, normal call on a new connection must still succeed. At the end the
# servers must be up, idle (no leaked streams or connections), free of
# sanitizer reports, and exit cleanly on SIGTERM.
# Binaries from $BIN (default build/bin). Prints PASS/FAIL/SKIP lines; exits
# non-zero if any check failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
source "$ROOT/tests/lib/server.sh"
source "$ROOT/tests/lib/certs.sh"
trap 'srv_cleanup; rm -rf "$T_DIR"' EXIT

PY=/usr/bin/python3
export RAW_H2_TIMEOUT=${RAW_H2_TIMEOUT:-30}
if [[ ! -x $BIN/airlock-testsvc ]]; then
  t_fail bad-input "$BIN/airlock-testsvc is not built"
  exit 1
fi
if ! certs_init "$T_DIR" || ! certs_foreign "$T_DIR"; then
  t_fail certs "could not make test certificates"
  exit 1
fi
PKI=$T_DIR/pki
TLS_FILES=(--tls.cert_file="$PKI/test-testsvc.crt" --tls.key_file="$PKI/test-testsvc.key"
           --tls.ca_file="$PKI/ca.crt")
# Secret-volume layout (the kubelet's): tls.crt -> ..data/tls.crt, ..data -> a
# version directory swapped atomically; the "tlsw" server watches its files.
W=$T_DIR/watched
mkdir -p "$W/v1" && cp "$PKI/test-testsvc.crt" "$W/v1/tls.crt" && cp "$PKI/test-testsvc.key" "$W/v1/tls.key" &&
  ln -s v1 "$W/..data" && ln -s ..data/tls.crt "$W/tls.crt" && ln -s ..data/tls.key "$W/tls.key" ||
  { t_fail start "could not lay out the watched certificate files"; exit 1; }
srv_start h2c airlock-testsvc --insecure=true --grpc.drain_timeout=10s &&
  srv_start tls airlock-testsvc "${TLS_FILES[@]}" --tls.client_cert=require --grpc.drain_timeout=10s \
    --tls.watch_interval=0 &&
  srv_start tlsw airlock-testsvc --tls.cert_file="$W/tls.crt" --tls.key_file="$W/tls.key" \
    --tls.ca_file="$PKI/ca.crt" --tls.client_cert=require --grpc.drain_timeout=10s \
    --tls.watch_interval=200ms &&
  srv_start tls_opt airlock-testsvc "${TLS_FILES[@]}" --tls.client_cert=optional --grpc.drain_timeout=10s ||
  { t_fail start "a server did not start"; exit 1; }
echo "certificates made with $CERTS_TOOL"

CLIENT=(--cert "$PKI/client-client.crt" --key "$PKI/client-client.key")
# Clients trust a copy of the CA: the reload cases below break the server's files.
CLIENT_CA=$T_DIR/client-ca.crt
cp "$PKI/ca.crt" "$CLIENT_CA"
FOREIGN=(--cert "$T_DIR/foreign/client.crt" --key "$T_DIR/foreign/client.key")

# raw SERVER [raw_h2.py options...] CASE
raw() {
  local port=${1}_PORT; shift
  local tls=()
  [[ $port != h2c_PORT ]] && tls=(--tls --ca "$CLIENT_CA")
  timeout $((RAW_H2_TIMEOUT * 4)) "$PY" "$HERE/raw_h2.py" --port "${!port}" "${tls[@]}" "$@"
}

# one NAME SERVER [options...] CASE: the case, then a fresh normal call.
one() {
  local name=$1 srv=$2; shift 2
  t_result "$name" raw "$srv" "$@"
  local ok=()
  [[ $srv == tls ]] && ok=("${CLIENT[@]}")
  t_result "$name/then-ok" raw "$srv" "${ok[@]}" ok
}

t_result h2c-ok raw h2c ok
for c in bad-preface http1-request truncated-prefix over-limit-prefix invalid-flags \
         compressed-flag grpc-encoding-gzip unknown-method unknown-service bad-timeout \
         wrong-content-type get-method no-message two-messages header-too-many header-too-big \
         server-deadline deadline-while-blocked zero-window-then-open bin-metadata \
         client-trailers streams-over-limit limit-boundary early-error-then-data \
         malformed-headers disconnect-with-pending-calls header-flood-count header-flood-size \
         continuation-flood continuation-flood-empty rapid-reset ping-flood frame-too-large \
         data-idle-stream stalled-reader-disconnect half-message-disconnect stalled-peer; do
  one "h2c-$c" h2c "$c"
done

# TLS with a required client certificate.
t_result tls-ok raw tls "${CLIENT[@]}" ok
one tls-foreign-ca-cert-refused tls "${FOREIGN[@]}" tls-refused
one tls-no-cert-refused tls tls-refused
one tls-plaintext-refused tls plaintext-to-tls
for c in bad-preface truncated-prefix header-flood-count continuation-flood rapid-reset \
         stalled-reader-disconnect stalled-peer; do
  one "tls-$c" tls "${CLIENT[@]}" "$c"
done

# TLS with an optional client certificate: none is fine, a foreign one is not.
t_result tls-optional-no-cert-ok raw tls_opt ok
t_result tls-optional-client-cert-ok raw tls_opt "${CLIENT[@]}" ok
one tls-optional-foreign-ca-cert-refused tls_opt "${FOREIGN[@]}" tls-refused

# Broken certificate files on SIGHUP: the server keeps the previous ones and
# goes on serving; good files on the next SIGHUP are taken.
tls_serial() { # port
  openssl s_client -connect "127.0.0.1:$1" -servername localhost -alpn h2 -CAfile "$CLIENT_CA" \
    -cert "$PKI/client-client.crt" -key "$PKI/client-client.key" </dev/null 2>/dev/null |
    openssl x509 -noout -serial | sed 's/^serial=//' | tr a-f A-F
}
wait_log() { # file, count of 'event=tls.reload' lines to wait for
  local i
  for ((i = 0; i < 300; i++)); do
    (($(grep -c 'event=tls.reload ' "$1") >= $2)) && return 0
    sleep 0.1
  done
  return 1
}
reload_case() { # name, command that breaks the files
  local name=$1; shift
  local before n
  before=$(tls_serial "$tls_PORT")
  n=$(grep -c 'event=tls.reload ' "$tls_ERR")
  cp "$PKI/test-testsvc.crt" "$T_DIR/good.crt" && cp "$PKI/test-testsvc.key" "$T_DIR/good.key"
  "$@"
  kill -HUP "$tls_PID"
  if ! wait_log "$tls_ERR" $((n + 1)); then
    t_fail "$name" "no tls.reload log line after SIGHUP"
  elif ! tail -n 5 "$tls_ERR" | grep -q 'event=tls.reload result=failed'; then
    t_fail "$name" "reload of broken files did not fail: $(grep 'event=tls.reload' "$tls_ERR" | tail -n 1)"
  elif [[ $(tls_serial "$tls_PORT") != "$before" || -z $before ]]; then
    t_fail "$name" "server no longer presents its previous certificate (serial '$before')"
  else
    t_pass "$name"
  fi
  t_result "$name/then-ok" raw tls "${CLIENT[@]}" ok
  cp "$T_DIR/good.crt" "$PKI/test-testsvc.crt" && cp "$T_DIR/good.key" "$PKI/test-testsvc.key"
}
reload_case tls-reload-garbage-cert-kept-previous sh -c "echo garbage >'$PKI/test-testsvc.crt'"
reload_case tls-reload-empty-key-kept-previous sh -c ": >'$PKI/test-testsvc.key'"
reload_case tls-reload-mismatched-key-kept-previous \
  sh -c "openssl ecparam -name prime256v1 -genkey -noout -out '$PKI/test-testsvc.key' 2>/dev/null"
reload_case tls-reload-missing-ca-kept-previous mv "$PKI/ca.crt" "$T_DIR/ca.crt.away"
mv -f "$T_DIR/ca.crt.away" "$PKI/ca.crt" 2>/dev/null
tls_good_reload() {
  local n want
  n=$(grep -c 'event=tls.reload ' "$tls_ERR")
  certs_reissue "$T_DIR" test testsvc || return 1
  want=$(certs_serial "$PKI/test-testsvc.crt")
  kill -HUP "$tls_PID"
  wait_log "$tls_ERR" $((n + 1)) || { echo "no tls.reload log line"; return 1; }
  tail -n 5 "$tls_ERR" | grep -q 'event=tls.reload result=ok' || { echo "reload failed"; return 1; }
  [[ $(tls_serial "$tls_PORT") == "$want" ]] || { echo "new certificate not presented"; return 1; }
}
t_result tls-reload-good-after-broken tls_good_reload
t_result tls-reload-good-after-broken/then-ok raw tls "${CLIENT[@]}" ok

# Changed files are reloaded without a signal (tls.watch_interval), as after a
# cert-manager renewal: a version with a broken key is not taken (the server
# keeps presenting the previous certificate), the next good version is.
swap_version() { # VERSION-DIR: the kubelet's atomic ..data swap
  ln -sfn "$1" "$W/..data.tmp" && mv -T "$W/..data.tmp" "$W/..data"
}
wait_serial() { # PORT SERIAL: up to 10 s
  local i
  for ((i = 0; i < 100; i++)); do
    [[ $(tls_serial "$1") == "$2" ]] && return 0
    sleep 0.1
  done
  return 1
}
tls_watch_reload() {
  local first n want
  first=$(tls_serial "$tlsw_PORT")
  [[ -n $first ]] || { echo "no certificate presented"; return 1; }
  # a renewal whose key does not match yet: refused, previous kept
  mkdir -p "$W/v2"
  certs_reissue "$T_DIR" test testsvc || return 1
  cp "$PKI/test-testsvc.crt" "$W/v2/tls.crt"
  openssl ecparam -name prime256v1 -genkey -noout -out "$W/v2/tls.key" 2>/dev/null
  n=$(grep -c 'event=tls.reload result=failed' "$tlsw_ERR")
  swap_version v2
  for ((i = 0; i < 100; i++)); do
    (($(grep -c 'event=tls.reload result=failed' "$tlsw_ERR") > n)) && break
    sleep 0.1
  done
  (($(grep -c 'event=tls.reload result=failed' "$tlsw_ERR") > n)) || { echo "the changed files were not tried"; return 1; }
  [[ $(tls_serial "$tlsw_PORT") == "$first" ]] || { echo "a broken renewal replaced the certificate"; return 1; }
  # the good renewal: presented without a SIGHUP
  mkdir -p "$W/v3"
  cp "$PKI/test-testsvc.crt" "$W/v3/tls.crt" && cp "$PKI/test-testsvc.key" "$W/v3/tls.key"
  want=$(certs_serial "$W/v3/tls.crt")
  swap_version v3
  wait_serial "$tlsw_PORT" "$want" || { echo "serial $(tls_serial "$tlsw_PORT"), want $want after the swap"; return 1; }
  grep -q 'event=service.reload trigger=files_changed' "$tlsw_ERR" || { echo "no files_changed reload logged"; return 1; }
  echo "serial $first -> $want without a signal; a mismatched key in between was refused"
}
t_result tls-reload-on-changed-files tls_watch_reload
t_result tls-reload-on-changed-files/then-ok raw tlsw "${CLIENT[@]}" ok

# A third-party client still gets through (grpcio, raw bytes, no generated code).
grpcio_echo() {
  "$PY" - "127.0.0.1:$h2c_PORT" <<'EOF'
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
echo = ch.unary_unary("/airlock.test.v1.TestService/Echo", lambda b: b, lambda b: b)
req = b"\x0a\x05hello"
rep = echo(req, timeout=60)
assert rep.startswith(req), rep
EOF
}
if "$PY" -c 'import grpc' 2>/dev/null; then
  t_result h2c-grpcio-echo grpcio_echo
else
  t_skip h2c-grpcio-echo "$PY has no grpc module (python3-grpcio)"
fi

for s in h2c tls tls_opt tlsw; do
  srv_check "$s"
  srv_idle_check "$s"
  srv_stop_check "$s"
done
((T_FAILED)) && srv_dump_logs
((T_FAILED == 0))
