#!/usr/bin/env bash
# Integration: airlock-egress, the executor's egress proxy, as a real process driven over
# its control socket (proto/airlock/internal/egress.proto) by egress_proxy_test.py
# (/usr/bin/python3, protobuf generated at run time): a test network namespace with a veth
# pair and private addresses (IPv4 and IPv6 ULA) holds an https (and plain http) test
# upstream with its own test CA made here; real curl and Python urllib go through the
# proxy on a listening socket the test makes on 127.0.0.1 and hands over with JobListen.
# Checks: injection into the template slot only (bearer, basic, header value, plain http
# where allowed), echoed values coming back as placeholders, opaque tunnels, every denial
# of issue 6 section 4 that needs no sandbox (each with its status, one-line reason and Use
# record), limits, the process's privileges (uid, capabilities, no_new_privs, seccomp),
# the /proc/PID/mem canary scan after JobClose and the exit when the socket closes.
# Binaries from $BIN (default build/bin; BIN=build-asan/bin works too). Prints PASS/FAIL/
# SKIP lines; exits non-zero if a check failed. Needs root (network namespace, veth, the
# proxy's uid switch, /proc/PID/mem of a non-dumpable process): skips loudly otherwise.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
source "$ROOT/tests/lib/server.sh"

NS=airlock-eg-$$
N=$(( ($$ % 200) + 20 ))
VETH_H=veg$$h
VETH_N=veg$$n
UP_PID=

cleanup() {
  [[ -n ${PY_PID:-} ]] && kill -KILL "$PY_PID" 2>/dev/null
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  ip link del "$VETH_H" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$T_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $(id -u) -ne 0 ]]; then
  t_skip egress_proxy "needs root: a network namespace with a veth pair for the test upstream, the proxy's switch to uid 65534, and /proc/PID/mem of a non-dumpable process"
  exit 0
fi
PY=/usr/bin/python3 # Debian's python3-protobuf belongs to it
if ! "$PY" -c 'import google.protobuf' 2>/dev/null; then
  t_fail egress_proxy "$PY cannot import google.protobuf (python3-protobuf: scripts/install-deps.sh test)"
  exit 1
fi
for tool in protoc openssl curl ip; do
  if ! command -v "$tool" >/dev/null; then
    t_fail egress_proxy "$tool is not installed (scripts/install-deps.sh test)"
    exit 1
  fi
done
if [[ ! -x $BIN/airlock-egress ]]; then
  t_fail egress_proxy "$BIN/airlock-egress is not built"
  exit 1
fi

GEN=$T_DIR/gen
mkdir -p "$GEN"
if ! protoc -I"$ROOT/proto" --python_out="$GEN" "$ROOT/proto/airlock/internal/egress.proto"; then
  t_fail egress_proxy "protoc --python_out failed"
  exit 1
fi
touch "$GEN/airlock/__init__.py" "$GEN/airlock/internal/__init__.py"

# --- the test network: 10.213.N.0/30 and fd13:213:N::/64 over a veth pair ---
ADDR4=10.213.$N.2
ADDR6=fd13:213:$N::2
if ! { ip netns add "$NS" &&
       ip link add "$VETH_H" type veth peer name "$VETH_N" &&
       ip link set "$VETH_N" netns "$NS" &&
       ip addr add "10.213.$N.1/30" dev "$VETH_H" &&
       ip -6 addr add "fd13:213:$N::1/64" dev "$VETH_H" nodad &&
       ip link set "$VETH_H" up &&
       ip -n "$NS" addr add "$ADDR4/30" dev "$VETH_N" &&
       ip -n "$NS" -6 addr add "$ADDR6/64" dev "$VETH_N" nodad &&
       ip -n "$NS" link set "$VETH_N" up &&
       ip -n "$NS" link set lo up; } 2>"$T_DIR/net.log"; then
  t_skip egress_proxy "cannot build the test network namespace: $(tr '\n' ' ' <"$T_DIR/net.log")"
  exit 0
fi

# --- the upstream's own test CA and server certificate, made now ---
SANS="DNS:api.test,DNS:other.test,DNS:tunnel.test,DNS:v6.test,DNS:plain.test,DNS:dns.test,IP:$ADDR4,IP:$ADDR6"
if ! { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout "$T_DIR/up-ca.key" -out "$T_DIR/up-ca.crt" -days 2 \
         -subj "/CN=egress test upstream CA" \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign &&
       openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout "$T_DIR/up.key" -out "$T_DIR/up.csr" -subj "/CN=api.test" &&
       printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
         "$SANS" >"$T_DIR/up.ext" &&
       openssl x509 -req -in "$T_DIR/up.csr" -CA "$T_DIR/up-ca.crt" -CAkey "$T_DIR/up-ca.key" \
         -CAcreateserial -out "$T_DIR/up.crt" -days 2 -extfile "$T_DIR/up.ext"; } \
     >"$T_DIR/pki.log" 2>&1; then
  t_fail egress_proxy "openssl could not make the test PKI: $(tail -n 2 "$T_DIR/pki.log" | tr '\n' ' ')"
  exit 1
fi

BIN=$BIN GEN_DIR=$GEN T_DIR=$T_DIR NS=$NS ADDR4=$ADDR4 ADDR6=$ADDR6 NET4="10.213.$N.0/30" \
  NET6="fd13:213:$N::/64" UP_CA=$T_DIR/up-ca.crt UP_CERT=$T_DIR/up.crt UP_KEY=$T_DIR/up.key \
  "$PY" "$HERE/egress_proxy_test.py" 2>"$T_DIR/python.log" &
PY_PID=$!
wait "$PY_PID"
rc=$?
PY_PID=
if ((rc != 0)); then
  echo "--- python log (last 60 lines)"
  tail -n 60 "$T_DIR/python.log"
  for f in "$T_DIR"/egress*.err "$T_DIR"/upstream.err; do
    [[ -f $f ]] || continue
    if grep -qE "$SRV_SANITIZER_RE" "$f"; then
      echo "--- $(basename "$f") (sanitizer report)"
      grep -m1 -A 40 -E "$SRV_SANITIZER_RE" "$f"
    else
      echo "--- $(basename "$f") (last 40 lines)"
      tail -n 40 "$f"
    fi
  done
fi
exit "$rc"
