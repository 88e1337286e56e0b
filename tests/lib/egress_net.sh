# shellcheck shell=bash
# The egress proxy's test network (source this file; bash), for
# tests/integration/egress.sh and tests/bench/egress.sh.
#
#   egress_net_up DIR     a network namespace with a veth pair: 10.213.N.1 on
#                         this side, 10.213.N.2 (EGRESS_UP_ADDR) inside, N a
#                         free /30 picked at random; sets EGRESS_NS,
#                         EGRESS_UP_ADDR, EGRESS_UP_NET; DIR/ca.{crt,key} (the
#                         upstream's own test CA) and DIR/server.{crt,key} (the
#                         test names and EGRESS_UP_ADDR), DIR/token (the
#                         canary the upstream demands, 0600)
#   egress_upstream_start DIR [ARGS]
#                         tests/integration/egress_upstream.py inside the
#                         namespace on :8443 (TLS) and :8080; sets
#                         EGRESS_UP_PID; non-zero if it did not come up
#   egress_net_down       kills the upstream, deletes the namespace (and with
#                         it the veth pair)
# Needs root, ip (iproute2), openssl and /usr/bin/python3. Functions say why
# they failed on stderr.

EGRESS_NS=""
EGRESS_UP_PID=""
EGRESS_NAMES="upstream.test other.test plain.test loop.test zero.test meta.test mapped.test"

_egress_pki() {
  local d=$1 san
  san=$(printf 'DNS:%s,' $EGRESS_NAMES)
  san="${san}IP:$EGRESS_UP_ADDR"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key" 2>/dev/null &&
    openssl req -new -x509 -key "$d/ca.key" -sha256 -days 2 \
      -subj "/O=Airlock test/CN=Egress Test Upstream CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$d/ca.crt" 2>/dev/null &&
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/server.key" 2>/dev/null &&
    openssl req -new -key "$d/server.key" -subj "/O=Airlock test/CN=upstream.test" \
      -out "$d/server.csr" 2>/dev/null &&
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$d/ext.cnf" &&
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
      -set_serial "0x$(openssl rand -hex 16)" -days 2 -sha256 -extfile "$d/ext.cnf" \
      -out "$d/server.crt" 2>/dev/null
}

egress_net_up() {
  local d=$1 n="" cand host_if peer_if
  mkdir -p "$d" || return 1
  for cand in $(shuf -i 20-199 -n 60); do
    if ! ip -4 addr show | grep -q "10\.213\.$cand\."; then
      n=$cand
      break
    fi
  done
  if [[ -z $n ]]; then
    echo "egress_net: no free 10.213.N.0/30 range" >&2
    return 1
  fi
  EGRESS_NS=aleg$$
  host_if=ae$$a
  peer_if=ae$$b
  EGRESS_UP_ADDR=10.213.$n.2
  EGRESS_UP_NET=10.213.$n.0/30
  if ! { ip netns add "$EGRESS_NS" &&
         ip link add "$host_if" type veth peer name "$peer_if" &&
         ip link set "$peer_if" netns "$EGRESS_NS" &&
         ip addr add "10.213.$n.1/30" dev "$host_if" && ip link set "$host_if" up &&
         ip netns exec "$EGRESS_NS" ip addr add "$EGRESS_UP_ADDR/30" dev "$peer_if" &&
         ip netns exec "$EGRESS_NS" ip link set "$peer_if" up &&
         ip netns exec "$EGRESS_NS" ip link set lo up; }; then
    echo "egress_net: could not create the namespace and veth pair" >&2
    return 1
  fi
  if ! _egress_pki "$d"; then
    echo "egress_net: openssl could not make the upstream's test CA" >&2
    return 1
  fi
  (umask 077 && openssl rand -hex 24 | sed 's/^/EGRESS-CANARY-/' >"$d/token")
}

egress_upstream_start() {
  local d=$1 i
  shift
  ip netns exec "$EGRESS_NS" /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/../integration/egress_upstream.py" \
    --cert "$d/server.crt" --key "$d/server.key" --port 8443 --http-port 8080 \
    --token-file "$d/token" --log "$d/requests.log" "$@" >"$d/upstream.out" 2>"$d/upstream.log" &
  EGRESS_UP_PID=$!
  disown "$EGRESS_UP_PID" # killed by egress_net_down; no job-control notice
  for ((i = 0; i < 100; i++)); do
    grep -q ready "$d/upstream.out" 2>/dev/null && return 0
    kill -0 "$EGRESS_UP_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "egress_net: the test upstream did not start: $(tail -n 3 "$d/upstream.log" | tr '\n' ' ')" >&2
  return 1
}

egress_net_down() {
  [[ -n $EGRESS_UP_PID ]] && kill -KILL "$EGRESS_UP_PID" 2>/dev/null
  [[ -n $EGRESS_NS ]] && ip netns del "$EGRESS_NS" 2>/dev/null
  EGRESS_UP_PID=""
  EGRESS_NS=""
}
