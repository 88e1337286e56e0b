#!/usr/bin/env bash
# shellcheck disable=SC2154 # svc_start sets NAME_PID, NAME_ERR, NAME_OPS
# Integration: the tunnel, end to end, with real third-party MCP software.
#
#   agent (MCP TypeScript SDK v1 and v2 clients, raw HTTP/1.1 and HTTP/2)
#     --TLS--> airlock-relay --reversed HTTP/2 (mTLS)--> airlock-gateway x2
#     --HTTP--> MCP servers (SDK v1 stateful, SDK v2 stateless) and a
#               hostile canary-echo upstream
#   gateway --mTLS--> airlock-credstore (the canary credential, template
#                     Authorization "Bearer {}", bound to route corp/* and the
#                     relay issuer; audit chain)
#
# Everything runs on 127.0.0.1 with a dev PKI made at run time (airlockctl
# certs init into a temporary AIRLOCK_HOME). Checks, one PASS/FAIL line each:
#   interop   both SDK majors over HTTP/1.1 and HTTP/2 (tests/interop/mcp/
#             client_v1.mjs, client_v2.mjs): initialize/discover, tools/list,
#             tools/call, an SSE result, prompts, resources; the server saw the
#             injected token, the client never saw it in any encoding
#   policy, bad input, faults, canary scrub, 1,000 streams on one HTTP/2
#             connection, flow control with an agent that stops reading, a
#             gateway drained by SIGTERM (its stream finishes) and one killed
#             mid-stream (tests/interop/mcp/tunnel_test.mjs)
#   here      relay keys ls shows no secret; a gateway identity not allowed for
#             a tunnel is refused; a gateway's control message and GOAWAY read
#             at once (tests/integration/fake_gateway.py); tunnel status; relay
#             restart (gateways reconnect, the next request succeeds); every
#             use in credstore's
#             audit chain with tool names and without arguments, chain
#             verified; no secret in any log; services exit cleanly and
#             without sanitizer reports.
# Binaries from $BIN (default build/bin; BIN=build-asan/bin for the sanitized
# build). TUNNEL_KEEP=1 keeps the scratch directory (configs, logs) for a look. Needs node and tests/interop/node_modules (npm ci; tests/run.sh does
# both). Exits non-zero if any check failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
MCP=$ROOT/tests/interop/mcp
T_DIR=$(mktemp -d)
PIDS_FILE=$T_DIR/pids
: >"$PIDS_FILE"
source "$ROOT/tests/lib/server.sh"

cleanup() {
  local pid
  while read -r pid; do
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  done <"$PIDS_FILE"
  srv_cleanup # kills the services, then waits for every child
  if [[ -n ${TUNNEL_KEEP:-} ]]; then
    echo "kept $T_DIR (TUNNEL_KEEP)"
  else
    rm -rf "$T_DIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v node >/dev/null; then
  t_skip tunnel "node is not installed: the MCP SDK interop and agent checks cannot run (scripts/install-deps.sh test installs nodejs)"
  exit 0
fi
for m in @modelcontextprotocol/sdk @modelcontextprotocol/client @modelcontextprotocol/server zod; do
  if [[ ! -d $ROOT/tests/interop/node_modules/$m ]]; then
    t_fail tunnel "tests/interop/node_modules/$m is missing: run 'npm ci' in tests/interop"
    exit 1
  fi
done
for b in airlock-relay airlock-gateway airlock-credstore airlockctl; do
  if [[ ! -x $BIN/$b ]]; then
    t_fail tunnel "$BIN/$b is not built"
    exit 1
  fi
done
for tool in python3 curl openssl; do
  command -v "$tool" >/dev/null || { t_fail tunnel "$tool is not installed"; exit 1; }
done

# Sanitized builds are slow: generous bounds everywhere (none is a timing assertion).
WAIT=${TUNNEL_WAIT:-120}
export AIRLOCK_HOME=$T_DIR/home
PKI=$AIRLOCK_HOME/pki
KEYS=$AIRLOCK_HOME/keys
CTL=$BIN/airlockctl
export NODE_EXTRA_CA_CERTS=$PKI/ca.crt
umask 077

fail_setup() {
  t_fail "setup-$1" "$2"
  srv_dump_logs
  exit 1
}

{ "$CTL" certs init && "$CTL" certs issue gateway gateway-1 && "$CTL" certs issue gateway rogue &&
  "$CTL" keys gen-master "$KEYS/master.key"; } >"$T_DIR/certs.log" 2>&1 ||
  fail_setup certs "$(tail -n 2 "$T_DIR/certs.log" | tr '\n' ' ')"

# Free loopback ports: relay agents, tunnel, gRPC, ops; gateway ops x3;
# credstore; a port nothing listens on (the "down" upstream).
read -r AP TP GP OP GW0_OPS GW1_OPS ROGUE_OPS CS_PORT CS_OPS DOWN_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(10):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

# The canary: the credential value only credstore holds. Characters that
# percent-encoding and JSON escaping change, so every form differs.
CANARY=$T_DIR/canary
printf 'cnry-%s/+=?&"\\~%s' "$(openssl rand -hex 12)" "$(openssl rand -hex 6)" >"$CANARY"

# ---- upstream MCP servers (node) ----
STATE=$T_DIR/state
mkdir -p "$STATE"
# node_start NAME SCRIPT: sets NAME_PORT
node_start() {
  local name=$1 script=$2 i port=""
  CANARY_FILE=$CANARY STATE_FILE=$STATE/$name.state PORT=0 \
    node "$MCP/$script" >"$T_DIR/$name.out" 2>"$T_DIR/$name.node.log" &
  echo $! >>"$PIDS_FILE"
  printf -v "${name}_NODE_PID" %s $!
  for ((i = 0; i < WAIT * 10; i++)); do
    port=$(awk '/^listening /{print $2; exit}' "$T_DIR/$name.out")
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || fail_setup "$name" "$script did not start: $(tail -n 3 "$T_DIR/$name.node.log" | tr '\n' ' ')"
  printf -v "${name}_PORT" %s "$port"
}
node_start v1 server_v1.mjs
node_start v2 server_v2.mjs
node_start echo echo_upstream.mjs

# ---- services ----
# svc_start VAR BINARY CONFIG OPSPORT: starts BINARY --config CONFIG, waits for
# its service.start line and /readyz; sets VAR_PID, VAR_ERR, VAR_OPS (for
# tests/lib/server.sh's srv_check / srv_stop_check). A restart appends to the
# same log.
svc_start() {
  local var=$1 bin=$2 cfg=$3 ops=$4 err="$T_DIR/$1.err" pid i
  "$BIN/$bin" --config "$cfg" </dev/null >>"$T_DIR/$var.out" 2>>"$err" &
  pid=$!
  [[ " ${SRV_VARS[*]} " == *" $var "* ]] || SRV_VARS+=("$var")
  printf -v "${var}_PID" %s "$pid"
  printf -v "${var}_ERR" %s "$err"
  printf -v "${var}_OPS" %s "$ops"
  for ((i = 0; i < WAIT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    curl -sf --max-time 5 "http://127.0.0.1:$ops/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "svc_start: $bin --config $cfg did not become ready; its log:" >&2
  sed 's/^/  | /' "$err" | tail -n 30 >&2
  return 1
}

cat >"$T_DIR/credstore.cfg" <<EOF
listen = "127.0.0.1:$CS_PORT"; ops_listen = "127.0.0.1:$CS_OPS";
tls = { cert_file = "$PKI/credstore-credstore-0.crt"; key_file = "$PKI/credstore-credstore-0.key";
        ca_file = "$PKI/ca.crt"; };
data_dir = "$T_DIR/credstore"; master_key_file = "$KEYS/master.key";
grpc = { drain_timeout = "10s"; };
issuers = (
  { issuer = "spiffe://airlock/relay/relay-0"; public_key_file = "$KEYS/relay-0.pub";
    principals = ["**"]; routes = ["corp/*"]; credentials = ["**"]; }
);
EOF
svc_start credstore airlock-credstore "$T_DIR/credstore.cfg" "$CS_OPS" ||
  fail_setup credstore "airlock-credstore did not start"
export AIRLOCK_CREDSTORE_ADDR=127.0.0.1:$CS_PORT

# The canary credential, usable only by relay-0's grants for corp/*, by the
# two allowed principals, at gateways, for the upstreams' plain-HTTP loopback
# addresses.
if ! "$CTL" cred put canary-token --type bearer --value-file "$CANARY" --allow-plain-http \
     --issuer spiffe://airlock/relay/relay-0 --principal dev --principal team-b \
     --holder 'spiffe://airlock/gateway/*' --route 'corp/*' \
     --dest "http://127.0.0.1:$v1_PORT" --dest "http://127.0.0.1:$v2_PORT" \
     --dest "http://127.0.0.1:$echo_PORT" --dest "http://127.0.0.1:$DOWN_PORT" \
     --dest "http://localhost:$echo_PORT" >"$T_DIR/cred.log" 2>&1; then
  fail_setup cred "airlockctl cred put: $(tail -n 1 "$T_DIR/cred.log")"
fi
# A credential the echo server does not accept (route corp/stale): its 401
# must reach the agent as the gateway's 502, never as the server's challenge.
if ! openssl rand -hex 24 | sed 's/^/STALE-/' >"$T_DIR/stale.value" ||
   ! "$CTL" cred put stale-token --type bearer --value-file "$T_DIR/stale.value" --allow-plain-http \
     --issuer spiffe://airlock/relay/relay-0 --principal dev --principal team-b \
     --holder 'spiffe://airlock/gateway/*' --route 'corp/*' \
     --dest "http://127.0.0.1:$echo_PORT" >>"$T_DIR/cred.log" 2>&1; then
  fail_setup cred "airlockctl cred put stale-token: $(tail -n 1 "$T_DIR/cred.log")"
fi

# ---- agent keys (airlockctl relay keys) ----
KEYS_FILE=$T_DIR/relay-keys
AK=$T_DIR/agent-keys
mkdir -p "$AK"
mkkey() { # NAME PRINCIPAL ROUTES [--expires D]
  local name=$1 principal=$2 routes=$3; shift 3
  "$CTL" relay keys create --file "$KEYS_FILE" --principal "$principal" --routes "$routes" "$@" \
    >"$AK/key-$name" 2>>"$T_DIR/keys.log" && [[ -s $AK/key-$name ]]
}
mkkey a dev 'corp/*' && mkkey b team-b 'corp/*' && mkkey all dev '*/*' &&
  mkkey lab dev 'lab/*' && mkkey expired dev 'corp/*' --expires 1ms && mkkey revoked dev 'corp/*' ||
  fail_setup relay-keys "airlockctl relay keys create: $(tail -n 1 "$T_DIR/keys.log")"
REVOKED_ID=$(cut -d. -f1 "$AK/key-revoked")
"$CTL" relay keys revoke --file "$KEYS_FILE" "$REVOKED_ID" >>"$T_DIR/keys.log" 2>&1 ||
  fail_setup relay-keys "airlockctl relay keys revoke failed: $(tail -n 1 "$T_DIR/keys.log")"

check_keys_ls() {
  local out k
  out=$("$CTL" relay keys ls --file "$KEYS_FILE" 2>&1) || { echo "relay keys ls failed: $out"; return 1; }
  for k in "$AK"/key-*; do
    if grep -qF "$(cut -d. -f2 "$k")" <<<"$out"; then echo "a key secret is listed"; return 1; fi
    grep -qF "$(cut -d. -f1 "$k")" <<<"$out" || { echo "key id $(cut -d. -f1 "$k") not listed"; return 1; }
  done
  grep -E "^$REVOKED_ID .* revoked\$" <<<"$out" >/dev/null || { echo "revoked key not shown revoked"; return 1; }
  grep -E "^$(cut -d. -f1 "$AK/key-expired") .* expired\$" <<<"$out" >/dev/null ||
    { echo "expired key not shown expired"; return 1; }
  grep -E "^$(cut -d. -f1 "$AK/key-a") .* active\$" <<<"$out" >/dev/null || { echo "key-a not active"; return 1; }
  out=$("$CTL" relay keys ls --file "$KEYS_FILE" --json 2>&1)
  python3 -c 'import json,sys; [json.loads(l) for l in sys.stdin if l.strip()]' <<<"$out" ||
    { echo "--json output is not JSON lines"; return 1; }
  ! grep -qF "$(cut -d. -f2 "$AK/key-a")" <<<"$out" || { echo "a key secret is in --json"; return 1; }
}
t_result relay-keys-ls-never-shows-a-secret check_keys_ls

# ---- relay ----
MAX_HEAD=16384
MAX_BODY=1048576
ALLOWED_ORIGIN=https://agents.example
cat >"$T_DIR/relay.cfg" <<EOF
listen = "127.0.0.1:$GP";
ops_listen = "127.0.0.1:$OP";
tls = { cert_file = "$PKI/relay-relay-0.crt"; key_file = "$PKI/relay-relay-0.key"; ca_file = "$PKI/ca.crt"; };
relay_id = "relay-0";
agents = {
  listen = "127.0.0.1:$AP";
  keys_file = "$KEYS_FILE";
  allowed_origins = ["$ALLOWED_ORIGIN"];
  max_head = $MAX_HEAD; max_body = $MAX_BODY;
  header_timeout = 2.0; body_timeout = 30.0; idle_timeout = 60.0;
};
tunnel = { listen = "127.0.0.1:$TP"; heartbeat_interval = 1.0; };
tunnels = (
  { name = "corp"; gateways = ["spiffe://airlock/gateway/gateway-*"]; },
  { name = "lab"; gateways = ["spiffe://airlock/gateway/rogue"]; },
  { name = "empty"; gateways = ["spiffe://airlock/gateway/nobody"]; }
);
grant = { key_file = "$KEYS/relay-0.key"; ttl = 60.0; };
EOF
svc_start relay airlock-relay "$T_DIR/relay.cfg" "$OP" || fail_setup relay "airlock-relay did not start"

# ---- gateways ----
# gw_config NAME IDENTITY GATEWAY_ID OPS
gw_config() {
  local name=$1 ident=$2 gid=$3 ops=$4 pol
  pol='policy = ( { principals = ["dev", "team-b"]; tools = ["echo", "stream"]; resources = ["**"]; prompts = ["*"]; } );'
  srv() { # NAME URL ALLOW [CREDENTIAL]
    printf '      { name = "%s"; url = "%s"; allow = [%s]; credential = "%s"; timeout = 60.0;\n        %s }' \
      "$1" "$2" "$3" "${4:-canary-token}" "$pol"
  }
  cat >"$T_DIR/$name.cfg" <<EOF
listen = "";
ops_listen = "127.0.0.1:$ops";
tls = { cert_file = "$PKI/gateway-$ident.crt"; key_file = "$PKI/gateway-$ident.key"; ca_file = "$PKI/ca.crt"; };
gateway_id = "$gid";
relays = ["127.0.0.1:$TP"];
relay_identities = ["spiffe://airlock/relay/*"];
connections = 2;
heartbeat_interval = 1.0;
ping_interval = 2.0; ping_timeout = 6.0;
reconnect_min = 0.1; reconnect_max = 1.0;
drain_grace = 10.0;
max_concurrent_streams = 1000;
relay_keys = ( { issuer = "spiffe://airlock/relay/relay-0"; public_key_file = "$KEYS/relay-0.pub"; } );
credstore = { addr = "127.0.0.1:$CS_PORT"; };
cache_ttl = 30.0;
audit = { batch_max = 500; flush_interval = 0.2; max_pending = 20000; };
tunnels = (
  { name = "corp";
    servers = (
$(srv v1 "http://127.0.0.1:$v1_PORT/mcp" '"127.0.0.1/32"'),
$(srv v2 "http://127.0.0.1:$v2_PORT/mcp" '"127.0.0.1/32"'),
$(srv echo "http://127.0.0.1:$echo_PORT/mcp" '"127.0.0.1/32"'),
$(srv down "http://127.0.0.1:$DOWN_PORT/mcp" '"127.0.0.1/32"'),
$(srv denied "http://localhost:$echo_PORT/mcp" ''),
$(srv stale "http://127.0.0.1:$echo_PORT/mcp" '"127.0.0.1/32"' stale-token)
    ); },
  { name = "lab";
    servers = (
$(srv wiki "http://127.0.0.1:$v1_PORT/mcp" '"127.0.0.1/32"')
    ); }
);
EOF
}
gw_config gw0 gateway-0 gw-0 "$GW0_OPS"
gw_config gw1 gateway-1 gw-1 "$GW1_OPS"
gw_config rogue rogue gw-rogue "$ROGUE_OPS"
for g in gw0 gw1 rogue; do
  svc_start "$g" airlock-gateway "$T_DIR/$g.cfg" "$(eval echo "\$${g^^}_OPS")" ||
    fail_setup "$g" "airlock-gateway ($g) did not start"
done

# status_json [TUNNEL]: airlockctl tunnel status --json
status_json() {
  "$CTL" tunnel status --addr "127.0.0.1:$GP" ${1:+--tunnel "$1"} --json 2>>"$T_DIR/status.log"
}
# conns TUNNEL GATEWAY_ID: registered connections of that gateway in the tunnel
conns() {
  status_json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(1 for t in d.get("tunnels", []) for c in t.get("connections", [])
          if c.get("gateway_id") == sys.argv[1]))' "$2" 2>/dev/null || echo 0
}
# wait_conns TUNNEL GATEWAY_ID N: until the gateway has N connections there
wait_conns() {
  local i
  for ((i = 0; i < WAIT * 4; i++)); do
    [[ $(conns "$1" "$2") -ge $3 ]] && return 0
    sleep 0.25
  done
  return 1
}
wait_conns corp gw-0 2 && wait_conns corp gw-1 2 ||
  fail_setup gateways "gateways did not register 2 connections each within ${WAIT}s: $(status_json corp | tr -d '\n' | head -c 600)"
t_pass gateways-registered

# ---- a gateway identity not allowed for a tunnel ----
check_rogue() {
  local n
  wait_conns lab gw-rogue 1 || { echo "the rogue gateway never registered for tunnel lab"; return 1; }
  n=$(conns corp gw-rogue)
  ((n == 0)) || { echo "the relay routes corp over $n connection(s) of spiffe://airlock/gateway/rogue"; return 1; }
  status_json corp | grep -q 'spiffe://airlock/gateway/rogue' &&
    { echo "tunnel status lists the rogue identity under corp"; return 1; }
  grep -iE 'reject|refus|not allowed' "$rogue_ERR" | grep -q corp ||
    { echo "the rogue gateway's log does not show corp rejected"; return 1; }
  echo "rogue: lab accepted, corp refused"
}
t_result gateway-identity-not-allowed-refused check_rogue

# ---- a gateway's control message and its GOAWAY in one read ----
# The relay queues an Ack for the message, then learns it may not open a
# stream: nghttp2 drops the Ack's request (not-sent callback) and closes the
# stream it opened for it. Once a use-after-free (tests/integration/
# fake_gateway.py plays the gateway, with the rogue identity on tunnel lab).
check_goaway_race() {
  local c out
  for c in hb-goaway-one-read hb-then-goaway; do
    out=$(timeout 60 python3 "$HERE/fake_gateway.py" --port "$TP" --ca "$PKI/ca.crt" \
      --cert "$PKI/gateway-rogue.crt" --key "$PKI/gateway-rogue.key" --tunnel lab --server wiki \
      "$c" 2>&1) || { echo "fake gateway ($c): $(tail -n 1 <<<"$out")"; return 1; }
    kill -0 "$relay_PID" 2>/dev/null || { echo "the relay died ($c): $(srv_sanitizer_free relay)"; return 1; }
    curl -sf --max-time 5 "http://127.0.0.1:$OP/readyz" >/dev/null ||
      { echo "the relay stopped answering /readyz after $c"; return 1; }
  done
  echo "$(tail -n 1 <<<"$out"); the relay lives on"
}
t_result relay-survives-control-message-and-goaway-in-one-read check_goaway_race

# ---- interop: both SDK majors, HTTP/1.1 and HTTP/2 ----
run_node() { # LOG SCRIPT ENV...
  local log=$1 script=$2; shift 2
  # bounded: every check has its own timeout; this one catches a hang outside them
  env "$@" timeout -k 10 1200 node --no-deprecation "$MCP/$script" 2>"$T_DIR/$log.stderr"
  local rc=$?
  if ((rc != 0)); then
    echo "$script exited with status $rc; stderr tail:"
    tail -n 30 "$T_DIR/$log.stderr" | sed 's/^/  | /'
    T_FAILED=$((T_FAILED + 1))
  fi
}
for tr in h1 h2; do
  run_node "v1-$tr" client_v1.mjs TRANSPORT=$tr MCP_URL="https://127.0.0.1:$AP/mcp/corp/v1" \
    AGENT_KEY_FILE="$AK/key-a" CANARY_FILE="$CANARY" STATE_FILE="$STATE/v1.state"
  run_node "v2-$tr" client_v2.mjs TRANSPORT=$tr MCP_URL="https://127.0.0.1:$AP/mcp/corp/v2" \
    AGENT_KEY_FILE="$AK/key-b" CANARY_FILE="$CANARY" STATE_FILE="$STATE/v2.state"
done

# ---- policy, bad input, faults, canary, concurrency, flow control ----
driver() { # PHASE
  run_node "driver-$1" tunnel_test.mjs PHASE="$1" AGENT_ORIGIN="https://127.0.0.1:$AP" \
    KEYS_DIR="$AK" KEYS_FILE="$KEYS_FILE" CANARY_FILE="$CANARY" STATE_DIR="$STATE" \
    AIRLOCKCTL="$CTL" RELAY_GRPC="127.0.0.1:$GP" GW_PIDS="gw-0=$gw0_PID,gw-1=$gw1_PID" \
    KILLED_FILE="$T_DIR/killed" DRAINED_FILE="$T_DIR/drained" \
    MAX_HEAD=$MAX_HEAD MAX_BODY=$MAX_BODY ALLOWED_ORIGIN=$ALLOWED_ORIGIN
}
# gw_restart GATEWAY_ID: starts that gateway again, waits for its 2 connections
gw_restart() {
  local g=gw${1#gw-}
  if svc_start "$g" airlock-gateway "$T_DIR/$g.cfg" "$(eval echo "\$${g^^}_OPS")" &&
     wait_conns corp "$1" 2; then
    t_pass "$2"
  else
    t_fail "$2" "$1 did not register again after a restart"
  fi
}
driver main

# ---- a gateway drains on SIGTERM: its in-flight stream finishes ----
driver drain
if [[ -s $T_DIR/drained ]]; then
  d=$(cat "$T_DIR/drained")
  g=gw${d#gw-}
  dp=${g}_PID
  for ((i = 0; i < WAIT * 10; i++)); do
    kill -0 "${!dp}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${!dp}" 2>/dev/null; then
    t_fail gateway-drain-exit "$d still running ${WAIT}s after SIGTERM"
    kill -KILL "${!dp}"
    wait "${!dp}" 2>/dev/null
  else
    wait "${!dp}"
    rc=$?
    if ((rc == 0)) && srv_sanitizer_free "$g" >/dev/null; then
      t_pass gateway-drain-exit
    else
      t_fail gateway-drain-exit "exit status $rc; $(srv_sanitizer_free "$g")"
    fi
  fi
  gw_restart "$d" gateway-restarted-after-drain
fi

# ---- a gateway killed mid-stream ----
driver kill
if [[ -s $T_DIR/killed ]]; then
  k=$(cat "$T_DIR/killed")
  kp=gw${k#gw-}_PID
  wait "${!kp}" 2>/dev/null
  gw_restart "$k" gateway-restarted-after-kill
fi

# ---- tunnel status ----
check_status() {
  local out
  out=$("$CTL" tunnel status --addr "127.0.0.1:$GP" 2>&1) || { echo "tunnel status failed: $out"; return 1; }
  for w in "tunnel corp" gw-0 gw-1 spiffe://airlock/gateway/gateway-0 spiffe://airlock/gateway/gateway-1 \
           "tunnel lab" "tunnel empty"; do
    grep -qF "$w" <<<"$out" || { echo "'$w' missing from: $(head -c 400 <<<"$out")"; return 1; }
  done
  status_json | python3 -c '
import json, sys
d = json.load(sys.stdin)
t = {x["tunnel"]: x for x in d["tunnels"]}
assert d.get("relay_id") == "relay-0", "relay_id %r" % d.get("relay_id")
corp = t["corp"]["connections"]
ids = sorted(c["gateway_identity"] for c in corp)
assert ids == ["spiffe://airlock/gateway/gateway-0"] * 2 + ["spiffe://airlock/gateway/gateway-1"] * 2, ids
for c in corp:
    assert int(c.get("max_concurrent_streams", 0)) == 1000, c
    assert "v1" in c.get("servers", []) and "echo" in c.get("servers", []), c
    assert c.get("remote_address", "").startswith("127.0.0.1:"), c
    assert int(c.get("last_heartbeat_ms", 0)) > 0, c
assert int(t["corp"].get("requests_total", 0)) > 0, "requests_total 0"
assert int(t["empty"].get("unroutable_total", 0)) > 0, "unroutable_total 0 for tunnel empty"
assert not t["empty"].get("connections"), "connections in tunnel empty"
' || return 1
  if "$CTL" tunnel status --addr "127.0.0.1:$GP" --tunnel nosuch >/dev/null 2>"$T_DIR/st.err"; then
    echo "--tunnel nosuch succeeded"; return 1
  fi
  grep -q NOT_FOUND "$T_DIR/st.err" || { echo "--tunnel nosuch: $(cat "$T_DIR/st.err")"; return 1; }
  if "$CTL" tunnel status --addr "127.0.0.1:$GP" --identity gateway/gateway-0 >/dev/null 2>"$T_DIR/st.err"; then
    echo "a gateway identity could read the status"; return 1
  fi
  grep -q PERMISSION_DENIED "$T_DIR/st.err" || { echo "non-admin: $(cat "$T_DIR/st.err")"; return 1; }
}
t_result tunnel-status check_status

# ---- relay restarted: gateways reconnect, the next request succeeds ----
agent_post() { # KEYFILE PATH BODY -> HTTP status
  curl -s -o "$T_DIR/curl.body" -w '%{http_code}' --max-time 60 --cacert "$PKI/ca.crt" \
    -H "Authorization: Bearer $(cat "$1")" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' --data-binary "$3" "https://127.0.0.1:$AP$2"
}
srv_stop_check relay
svc_start relay airlock-relay "$T_DIR/relay.cfg" "$OP" || fail_setup relay-restart "airlock-relay did not start again"
check_restart() {
  local i st=""
  for ((i = 0; i < WAIT * 4; i++)); do
    st=$(agent_post "$AK/key-a" /mcp/corp/echo '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"mode":"plain"}}}')
    [[ $st == 200 ]] && break
    sleep 0.25
  done
  [[ $st == 200 ]] || { echo "no successful request within ${WAIT}s of the restart (last status $st)"; return 1; }
  wait_conns corp gw-0 2 && wait_conns corp gw-1 2 || { echo "gateways did not all reconnect"; return 1; }
  echo "gateways reconnected after $((i / 4)) s"
}
t_result relay-restart-gateways-reconnect check_restart

# ---- audit: every use recorded, with tool names, without arguments ----
check_audit() {
  local out i
  # the gateways deliver their batches asynchronously: wait for the 1,000 echo calls
  for ((i = 0; i < WAIT * 2; i++)); do
    out=$("$CTL" audit tail -n 0 --json --credential canary-token 2>"$T_DIR/audit.err") &&
      (($(grep -c '"tool":"\(tools/call:\)\?echo"' <<<"$out") >= 1000)) && break
    sleep 0.5
  done
  [[ -n $out ]] || { echo "audit tail: $(tail -n 1 "$T_DIR/audit.err")"; return 1; }
  grep -q 'marker-' <<<"$out" && { echo "tool arguments (the echo markers) are in the audit chain"; return 1; }
  ! grep -qF "$(cat "$CANARY")" <<<"$out" || { echo "the credential value is in the audit output"; return 1; }
  python3 -c '
import json, sys
recs = [json.loads(l) for l in sys.stdin if l.strip()]
use = [r for r in recs if r["action"] == "AUDIT_ACTION_USE"]
def tool(r, name):
    return r.get("tool") in (name, "tools/call:" + name)
ok = [r for r in use if r["decision"] == "AUDIT_DECISION_ALLOW"]
echo = [r for r in ok if tool(r, "echo")]
assert len(echo) >= 1000, "%d allowed echo uses recorded (1,000 concurrent calls alone were made)" % len(echo)
assert any(tool(r, "stream") for r in ok), "no use of the stream tool recorded"
assert all(r["grant_id"] and r["request_id"] and r["principal"] and r["scope"].startswith("corp/")
           for r in use), "a use record without grant, request id, principal or route"
assert any(r["status"] == 200 for r in echo), "no echo use with upstream status 200"
# each call'"'"'s duration (int64 in proto3 JSON: a string)
assert all(int(r.get("duration_us", r.get("durationUs", 0))) > 0 for r in echo), \
    "an allowed echo call recorded without its duration"
assert {"dev", "team-b"} <= {r["principal"] for r in use}, "principals %s" % {r["principal"] for r in use}
assert "admin" not in {r["principal"] for r in recs}, "a spoofed airlock-principal reached the chain"
callers = {r["caller"] for r in use}
assert {"spiffe://airlock/gateway/gateway-0", "spiffe://airlock/gateway/gateway-1"} <= callers, callers
denied = [r for r in use if r["decision"] == "AUDIT_DECISION_DENY" and tool(r, "forbidden")]
assert denied, "the denied calls of the forbidden tool are not in the chain"
assert not [r for r in use if r["decision"] == "AUDIT_DECISION_ALLOW" and tool(r, "forbidden")], \
    "an allowed use of the forbidden tool is recorded"
print("%d records: %d uses (%d echo), %d denied forbidden calls, tool field e.g. %r, duration e.g. %s us"
      % (len(recs), len(use), len(echo), len(denied), echo[0]["tool"],
         echo[0].get("duration_us", echo[0].get("durationUs"))))
' <<<"$out" >"$T_DIR/audit.check" 2>&1 || { tail -n 1 "$T_DIR/audit.check"; return 1; }
  "$CTL" audit verify >"$T_DIR/verify.out" 2>&1 || { echo "audit verify: $(tail -n 2 "$T_DIR/verify.out")"; return 1; }
  echo "$(cat "$T_DIR/audit.check"); verify: $(head -n 1 "$T_DIR/verify.out")"
}
t_result audit-chain-records-uses check_audit

# ---- no secret in any log ----
check_logs() {
  local f k bad=""
  for f in "$T_DIR"/*.err "$T_DIR"/*.out "$T_DIR"/*.stderr "$T_DIR"/*.log; do
    [[ -f $f ]] || continue
    grep -qF "$(cat "$CANARY")" "$f" && bad+=" canary:$(basename "$f")"
    for k in "$AK"/key-*; do
      grep -qF "$(cut -d. -f2 "$k")" "$f" && bad+=" $(basename "$k"):$(basename "$f")"
    done
    grep -qiE 'airlock-grant: ' "$f" && bad+=" grant:$(basename "$f")"
  done
  [[ -z $bad ]] || { echo "secrets in logs:$bad"; return 1; }
}
t_result no-secret-in-logs check_logs

for s in relay gw0 gw1 rogue credstore; do
  srv_check "$s"
done
for s in gw0 gw1 rogue relay credstore; do
  srv_stop_check "$s"
done
((T_FAILED)) && srv_dump_logs
((T_FAILED == 0))
