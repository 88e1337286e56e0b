#!/usr/bin/env bash
# Benchmark: the MCP tunnel (agent -> airlock-relay -> airlock-gateway ->
# private server) against a direct request and against nghttpx, nghttp2's
# reverse proxy, in the same run (issue 5, section 7).
#
# What runs, all on 127.0.0.1 with a dev PKI made at run time (airlockctl
# certs init into a scratch AIRLOCK_HOME):
#   upstream   bench_tunnel_upstream (tests/bench/tunnel_upstream.c): one
#              keep-alive HTTP/1.1 server for every path; it counts each
#              request's Authorization against the credential's value.
#   ours       airlock-relay (agent port: TLS 1.3, ALPN h2) -> reversed
#              HTTP/2 tunnel (mTLS) -> airlock-gateway (2 connections) ->
#              upstream, with airlock-credstore holding the credential (type
#              bearer, bound to the routes and the relay's grant issuer).
#              Every request takes the whole policy path: API key, grant
#              signed by the relay and verified by the gateway, MCP parse and
#              Mcp-Method/Mcp-Name check, tool allow-list, credential (value
#              cache on: cache_ttl = 30 s), injection, response scrubbing, one
#              audit record per request delivered to credstore. A second
#              gateway serves the tunnel "nocache" with cache_ttl = 0 (every
#              request resolves at credstore: grant check plus a durable audit
#              record before the answer) for one more figure.
#   nghttpx    one hop: --frontend TLS (the relay's certificate and key, the
#              same TLS 1.3 suite) -> --backend=127.0.0.1,UPSTREAM; one worker,
#              otherwise its defaults.
#   direct     HTTP/1.1 straight to the upstream (no TLS: the upstream is a
#              plain HTTP server; the tunnel and nghttpx both add TLS + HTTP/2
#              on the agent side, so they add the same client-side work).
# One load generator for all of them, bench_tunnel_load
# (tests/bench/tunnel_load.c: OpenSSL + nghttp2 + http_parser on libev, none
# of Airlock's code).
#
# Measured:
#   latency     a 100-byte request/response (JSON-RPC "ping", POST) and an MCP
#               tools/call round trip (POST, JSON-RPC body and the headers an
#               MCP client sends: Content-Type, Accept, Mcp-Protocol-Version,
#               Mcp-Method, Mcp-Name; a ~300-byte CallToolResult back): one
#               request in flight on one kept-alive connection, BENCH_LAT_N
#               timed after BENCH_WARMUP, per path; p50/p99; added latency =
#               path - direct; ratio = ours added p50 / nghttpx added p50.
#               Every round runs every path (interleaved); each figure is
#               the best of BENCH_ROUNDS rounds (interference on a shared
#               machine only ever slows a run down). CPU time per request of
#               relay, gateway and nghttpx from /proc/PID/task/*/schedstat.
#   throughput  single-stream GET of a BENCH_TPUT_MB MB body (base64-alphabet
#               text: the scrubber has to look at it) through the tunnel,
#               through nghttpx and direct; MB = 10^6 bytes; best of rounds.
#   memory      BENCH_STREAMS concurrent SSE GETs on ONE agent HTTP/2
#               connection (the upstream holds each open after its first
#               event until released); relay and gateway RSS (/proc/PID/status)
#               before, with every stream open that the servers' limits let
#               open, right after all completed, and settled (12 s later,
#               once the services' heap trim had a pass). When the relay's
#               SETTINGS_MAX_CONCURRENT_STREAMS is below BENCH_STREAMS, the run
#               is repeated with as many connections as it takes to hold
#               BENCH_STREAMS streams open at once.
#
# Every request is checked, so errors cannot pass for speed: the load
# generator compares every response (status, exact body with the request's
# JSON-RPC id, the 100 MB pattern byte for byte, SSE events), and for our
# path checks that the credential's value appears in no response header or
# body byte; the upstream's counters must show every request arrived exactly
# once with the right Authorization (for our path: the injected credential);
# the gateways' audit queues must drain with no batch refused or failed and
# credstore's audit chain must verify; no log holds the credential or the
# agent's API key; relay and gateways exit 0 on SIGTERM. The script exits
# non-zero only when something broke, never because of a timing.
#
# CPU pinning: none. On 2 CPUs the load generator, relay, gateway, upstream
# and credstore all compete; pinning would only pick which one waits. Per
# process CPU per request is printed next to the latencies.
#
# Usage: tests/bench/tunnel.sh
# Environment (defaults in brackets):
#   BIN               directory with airlock-relay, airlock-gateway,
#                     airlock-credstore, airlockctl, bench_tunnel_load and
#                     bench_tunnel_upstream [build-bench/bin; a Release build is
#                     made (or brought up to date) there]
#   BENCH_LAT_N       timed requests per latency run [3000]
#   BENCH_WARMUP      untimed requests before each latency run [300]
#   BENCH_NOCACHE_N   timed requests of the cache_ttl = 0 run, 0 = skip [500]
#   BENCH_ROUNDS      interleaved rounds [3]
#   BENCH_TPUT_MB     body of the throughput runs, MB [100]
#   BENCH_TPUT_N      timed downloads per throughput run (after one warm-up) [2]
#   BENCH_STREAMS     concurrent streams of the memory run [10000]
# Loopback only. The last line is:
#   summary: ratio=<ours_added_p50/nghttpx_added_p50, tools/call> added_p50_ms=...
#            added_p99_ms=... nghttpx_added_p50_ms=... nghttpx_added_p99_ms=...
#            small_ratio=... small_added_p50_ms=... small_added_p99_ms=...
#            nocache_added_p50_ms=... tput_mb_per_s=... nghttpx_tput_mb_per_s=...
#            streams=... max_open_one_conn=... relay_rss_kb=<before>/<during>
#            gateway_rss_kb=... all_open=... over_conns=... relay_rss_all_kb=...
#            gateway_rss_all_kb=... relay_rss_settled_kb=... gateway_rss_settled_kb=...
#            (the *_all figures: the run over enough
#            connections to hold BENCH_STREAMS open, or the one-connection run)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/build-bench/bin}
LAT_N=${BENCH_LAT_N:-3000}
WARMUP=${BENCH_WARMUP:-300}
NOCACHE_N=${BENCH_NOCACHE_N:-500}
ROUNDS=${BENCH_ROUNDS:-3}
TPUT_MB=${BENCH_TPUT_MB:-100}
TPUT_N=${BENCH_TPUT_N:-2}
STREAMS=${BENCH_STREAMS:-10000}
TARGET_P50_MS=0.3
TARGET_P99_MS=1
TARGET_MBPS=500
TARGET_STREAMS=10000
PRINCIPAL=bench
TOOL=search_customers

die() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "$*"; }

for v in LAT_N WARMUP NOCACHE_N ROUNDS TPUT_MB TPUT_N STREAMS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((LAT_N > 0 && ROUNDS > 0 && TPUT_MB > 0 && TPUT_N > 0 && STREAMS > 0)) ||
  die "BENCH_LAT_N, BENCH_ROUNDS, BENCH_TPUT_MB, BENCH_TPUT_N and BENCH_STREAMS must be > 0"
TPUT_BYTES=$((TPUT_MB * 1000000))

# --- tools -------------------------------------------------------------------
need_apt=()
command -v nghttpx >/dev/null || need_apt+=(nghttp2-proxy)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
PY=/usr/bin/python3
[[ -x $PY ]] || need_apt+=(python3)
if ((${#need_apt[@]})); then
  log "installing: ${need_apt[*]}"
  SUDO=""
  ((EUID == 0)) || SUDO=sudo
  { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null; } ||
    die "apt-get install ${need_apt[*]}"
fi

# --- build -------------------------------------------------------------------
# The default build-bench is a Release tree brought up to date (these targets
# only); a BIN given from outside is used as it is.
TARGETS=(airlock-relay airlock-gateway airlock-credstore airlockctl bench_tunnel_load
  bench_tunnel_upstream)
if [[ $BIN == "$ROOT/build-bench/bin" ]]; then
  had=1 BLOG=$ROOT/build-bench/bench-tunnel-build.log
  mkdir -p "$ROOT/build-bench"
  for t in "${TARGETS[@]}"; do [[ -x $BIN/$t ]] || had=0; done
  ((had)) || log "building Release into build-bench (${TARGETS[*]})"
  if ! { cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release >"$BLOG" 2>&1 &&
    make -C "$ROOT/build-bench" -j"$(nproc)" --no-print-directory "${TARGETS[@]}" >>"$BLOG" 2>&1; }; then
    log "Release build failed; the end of $BLOG:"
    tail -n 25 "$BLOG" 2>/dev/null | sed 's/^/  | /' || true
    ((had)) || die "Release build failed (log: $BLOG)"
    log "warning: rebuilding build-bench failed; measuring the existing, possibly stale, binaries"
  fi
fi
for t in "${TARGETS[@]}"; do [[ -x $BIN/$t ]] || die "$BIN/$t not found"; done
if [[ -f $BIN/../CMakeCache.txt ]]; then
  bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BIN/../CMakeCache.txt")
  [[ $bt == Release ]] || log "warning: $BIN is a '${bt:-unset}' build, not Release"
  grep -q '^AL_SANITIZE:BOOL=ON' "$BIN/../CMakeCache.txt" &&
    log "warning: $BIN is a sanitizer build: figures are not representative"
fi
CTL=$BIN/airlockctl
LOAD=$BIN/bench_tunnel_load

# --- scratch, cleanup --------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench-tunnel.XXXXXX")
chmod 700 "$TMP"
declare -A PID # name -> pid of what this script started
cleanup() {
  local n
  for n in "${!PID[@]}"; do kill "${PID[$n]}" 2>/dev/null || true; done
  for n in "${!PID[@]}"; do wait "${PID[$n]}" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# 10,000 streams through the gateway are 10,000 upstream connections, and as
# many in the upstream; the relay's agent side has them as streams only.
NOFILE_WANT=$((STREAMS * 2 + 1024))
if (($(ulimit -n) < NOFILE_WANT)); then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  (($(ulimit -n) >= STREAMS + 1024)) ||
    log "warning: open files limit $(ulimit -n) is low for $STREAMS streams (hard limit $(ulimit -Hn))"
fi

# --- identities, keys, secrets -------------------------------------------------
export AIRLOCK_HOME=$TMP/home
PKI=$AIRLOCK_HOME/pki
KEYS=$AIRLOCK_HOME/keys
umask 077
{ "$CTL" certs init && "$CTL" certs issue gateway gateway-1 &&
  "$CTL" keys gen-master "$KEYS/master.key"; } >"$TMP/setup.log" 2>&1 ||
  { cat "$TMP/setup.log"; die "airlockctl certs init / keys gen-master"; }
# The credential's value: only credstore, the gateways and the upstream may see it.
SECRET=$TMP/secret
printf 'bench-%s' "$(openssl rand -hex 24)" >"$SECRET"

read -r AP TP GP OP GW0_OPS GW1_OPS CS_PORT CS_OPS NP < <("$PY" - <<'EOF'
import socket
socks = []
for _ in range(9):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

# wait_ready NAME OPSPORT: until /readyz answers or the process is gone
wait_ready() {
  local name=$1 ops=$2 i
  for ((i = 0; i < 300; i++)); do
    kill -0 "${PID[$name]}" 2>/dev/null || { tail -n 20 "$TMP/$name.log"; die "$name exited at start"; }
    curl -sf --max-time 5 "http://127.0.0.1:$ops/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tail -n 20 "$TMP/$name.log"
  die "$name did not become ready"
}
# start NAME BINARY ARGS...: in the background, stderr+stdout to $TMP/NAME.log
start() {
  local name=$1 bin=$2; shift 2
  : >>"$TMP/$name.log" # exists before the background process opens it
  "$bin" "$@" </dev/null >>"$TMP/$name.log" 2>&1 &
  PID[$name]=$!
}

# --- upstream ----------------------------------------------------------------
start upstream "$BIN/bench_tunnel_upstream" --auth-file "$SECRET"
UP=""
for ((i = 0; i < 100; i++)); do
  UP=$(awk '/^listening /{print $2; exit}' "$TMP/upstream.log")
  [[ -n $UP ]] && break
  kill -0 "${PID[upstream]}" 2>/dev/null || { cat "$TMP/upstream.log"; die "bench_tunnel_upstream exited"; }
  sleep 0.05
done
[[ -n $UP ]] || die "bench_tunnel_upstream did not print its port"

# --- credstore and the credential ---------------------------------------------
cat >"$TMP/credstore.cfg" <<EOF
listen = "127.0.0.1:$CS_PORT"; ops_listen = "127.0.0.1:$CS_OPS";
tls = { cert_file = "$PKI/credstore-credstore-0.crt"; key_file = "$PKI/credstore-credstore-0.key";
        ca_file = "$PKI/ca.crt"; };
data_dir = "$TMP/credstore"; master_key_file = "$KEYS/master.key";
issuers = (
  { issuer = "spiffe://airlock/relay/relay-0"; public_key_file = "$KEYS/relay-0.pub";
    principals = ["$PRINCIPAL"]; routes = ["bench/*", "nocache/*"]; credentials = ["bench-token"]; }
);
EOF
mkdir -p "$TMP/credstore"
start credstore "$BIN/airlock-credstore" --config "$TMP/credstore.cfg"
wait_ready credstore "$CS_OPS"
"$CTL" cred put bench-token --type bearer --value-file "$SECRET" --allow-plain-http \
  --issuer spiffe://airlock/relay/relay-0 --principal "$PRINCIPAL" \
  --holder 'spiffe://airlock/gateway/*' --route 'bench/*' --route 'nocache/*' \
  --dest "http://127.0.0.1:$UP" --addr "127.0.0.1:$CS_PORT" >>"$TMP/setup.log" 2>&1 ||
  { tail -n 5 "$TMP/setup.log"; die "airlockctl cred put"; }

# --- relay -------------------------------------------------------------------
KEYS_FILE=$TMP/relay-keys
AGENT_KEY=$TMP/agent-key
"$CTL" relay keys create --file "$KEYS_FILE" --principal "$PRINCIPAL" \
  --routes 'bench/*,nocache/*' >"$AGENT_KEY" 2>>"$TMP/setup.log" && [[ -s $AGENT_KEY ]] ||
  { tail -n 5 "$TMP/setup.log"; die "airlockctl relay keys create"; }
cat >"$TMP/relay.cfg" <<EOF
listen = "127.0.0.1:$GP";
ops_listen = "127.0.0.1:$OP";
tls = { cert_file = "$PKI/relay-relay-0.crt"; key_file = "$PKI/relay-relay-0.key"; ca_file = "$PKI/ca.crt"; };
relay_id = "relay-0";
agents = { listen = "127.0.0.1:$AP"; keys_file = "$KEYS_FILE"; max_connections = 1000; max_streams = 10000; };
tunnel = { listen = "127.0.0.1:$TP"; };
tunnels = (
  { name = "bench"; gateways = ["spiffe://airlock/gateway/gateway-0"]; },
  { name = "nocache"; gateways = ["spiffe://airlock/gateway/gateway-1"]; }
);
grant = { key_file = "$KEYS/relay-0.key"; ttl = 60.0; };
EOF
start relay "$BIN/airlock-relay" --config "$TMP/relay.cfg"
wait_ready relay "$OP"

# --- gateways ----------------------------------------------------------------
# gw_config NAME IDENTITY TUNNEL OPS CACHE_TTL
gw_config() {
  cat >"$TMP/$1.cfg" <<EOF
listen = "";
ops_listen = "127.0.0.1:$4";
tls = { cert_file = "$PKI/gateway-$2.crt"; key_file = "$PKI/gateway-$2.key"; ca_file = "$PKI/ca.crt"; };
gateway_id = "$2";
relays = ["127.0.0.1:$TP"];
relay_identities = ["spiffe://airlock/relay/relay-0"];
connections = 2;
max_concurrent_streams = $((STREAMS > 1000 ? STREAMS : 1000));
drain_grace = 5.0;
relay_keys = ( { issuer = "spiffe://airlock/relay/relay-0"; public_key_file = "$KEYS/relay-0.pub"; } );
credstore = { addr = "127.0.0.1:$CS_PORT"; };
cache_ttl = $5;
tunnels = (
  { name = "$3";
    servers = (
      { name = "up"; url = "http://127.0.0.1:$UP/b"; allow = ["127.0.0.1/32"];
        credential = "bench-token"; timeout = 300.0;
        policy = ( { principals = ["$PRINCIPAL"]; tools = ["$TOOL"]; resources = ["**"]; prompts = ["*"]; } ); }
    ); }
);
EOF
}
gw_config gateway gateway-0 bench "$GW0_OPS" 30.0
gw_config gateway_nocache gateway-1 nocache "$GW1_OPS" 0
start gateway "$BIN/airlock-gateway" --config "$TMP/gateway.cfg"
start gateway_nocache "$BIN/airlock-gateway" --config "$TMP/gateway_nocache.cfg"
wait_ready gateway "$GW0_OPS"
wait_ready gateway_nocache "$GW1_OPS"

# registered TUNNEL GATEWAY_ID: connections of that gateway the relay routes TUNNEL over
registered() {
  "$CTL" tunnel status --addr "127.0.0.1:$GP" --tunnel "$1" --json 2>>"$TMP/status.log" |
    grep -o "\"gateway_id\": *\"$2\"" | wc -l || true
}
for t in bench:gateway-0 nocache:gateway-1; do
  n=0
  for ((i = 0; i < 300; i++)); do
    n=$(registered "${t%%:*}" "${t#*:}")
    ((n >= 2)) && break
    sleep 0.1
  done
  ((n >= 2)) || { tail -n 20 "$TMP/gateway.log" "$TMP/relay.log"; die "${t#*:} did not register 2 connections for tunnel ${t%%:*}"; }
done

# --- nghttpx -----------------------------------------------------------------
start nghttpx nghttpx --conf=/dev/null --frontend="127.0.0.1,$NP" --backend="127.0.0.1,$UP" \
  --workers=1 --no-ocsp --log-level=WARN "$PKI/relay-relay-0.key" "$PKI/relay-relay-0.crt"
for ((i = 0; i < 100; i++)); do
  curl -sf --max-time 5 --cacert "$PKI/ca.crt" "https://127.0.0.1:$NP/stats" >/dev/null 2>&1 && break
  kill -0 "${PID[nghttpx]}" 2>/dev/null || { cat "$TMP/nghttpx.log"; die "nghttpx exited at start"; }
  sleep 0.1
done
((i < 100)) || { cat "$TMP/nghttpx.log"; die "nghttpx did not answer"; }
# nghttpx serves from a worker process (its child)
NGX_WORKER=$(awk '{print $1}' "/proc/${PID[nghttpx]}/task/${PID[nghttpx]}/children" 2>/dev/null || true)
[[ -n $NGX_WORKER ]] || NGX_WORKER=${PID[nghttpx]}

# --- requests ----------------------------------------------------------------
"$BIN/bench_tunnel_upstream" --print-response small >"$TMP/small.expect"
"$BIN/bench_tunnel_upstream" --print-response mcp >"$TMP/mcp.expect"
# 100-byte JSON-RPC ping (the id stays 1: the response is 100 bytes too)
pre='{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"pad":"' post='"}}}'
pad=$(printf '%*s' $((100 - ${#pre} - ${#post})) '' | tr ' ' x)
printf '%s%s%s' "$pre" "$pad" "$post" >"$TMP/small.body"
(($(wc -c <"$TMP/small.body") == 100)) || die "the 100-byte body is $(wc -c <"$TMP/small.body") bytes"
printf '%s' '{"jsonrpc":"2.0","id":@ID@,"method":"tools/call","params":{"name":"'"$TOOL"'","arguments":{"query":"acme corp renewals","limit":20,"fields":["name","owner","renewal_date","arr"]},"_meta":{"progressToken":@ID@}}}' \
  >"$TMP/mcp.body"
SMALL_H=(--header 'content-type: application/json' --header 'accept: application/json, text/event-stream'
  --header 'mcp-protocol-version: 2026-07-28' --header 'mcp-method: ping')
MCP_H=(--header 'content-type: application/json' --header 'accept: application/json, text/event-stream'
  --header 'mcp-protocol-version: 2026-07-28' --header 'mcp-method: tools/call'
  --header "mcp-name: $TOOL")
SSE_H=(--header 'accept: text/event-stream' --header 'mcp-protocol-version: 2025-11-25')

declare -A URL
URL[small_direct]="http://127.0.0.1:$UP/b/small"
URL[small_ours]="https://127.0.0.1:$AP/mcp/bench/up/small"
URL[small_nghttpx]="https://127.0.0.1:$NP/b/small"
URL[mcp_direct]="http://127.0.0.1:$UP/b/mcp"
URL[mcp_ours]="https://127.0.0.1:$AP/mcp/bench/up/mcp"
URL[mcp_nghttpx]="https://127.0.0.1:$NP/b/mcp"
URL[mcp_nocache]="https://127.0.0.1:$AP/mcp/nocache/up/mcp"
URL[tput_direct]="http://127.0.0.1:$UP/b/big?bytes=$TPUT_BYTES"
URL[tput_ours]="https://127.0.0.1:$AP/mcp/bench/up/big?bytes=$TPUT_BYTES"
URL[tput_nghttpx]="https://127.0.0.1:$NP/b/big?bytes=$TPUT_BYTES"
OURS_W="--watch relay=${PID[relay]} --watch gateway=${PID[gateway]}"
NGX_W="--watch nghttpx=$NGX_WORKER"
UP_W="--watch upstream=${PID[upstream]}"

# args_for CONFIG -> A=(load generator arguments); ours authenticate with the
# agent API key and must never see the credential; direct and nghttpx send
# the credential themselves, so the upstream gets the same request everywhere.
args_for() {
  local cfg=$1
  A=(--url "${URL[$cfg]}" --ca "$PKI/ca.crt")
  case $cfg in
    *_ours | *_nocache) A+=(--bearer-file "$AGENT_KEY" --forbid-file "$SECRET") ;;
    *) A+=(--bearer-file "$SECRET") ;;
  esac
  case $cfg in
    small_*) A+=(--mode lat --body-file "$TMP/small.body" --expect-body-file "$TMP/small.expect" "${SMALL_H[@]}") ;;
    mcp_*) A+=(--mode lat --body-file "$TMP/mcp.body" --expect-body-file "$TMP/mcp.expect" "${MCP_H[@]}") ;;
    tput_*) A+=(--mode tput --expect-bytes "$TPUT_BYTES" --requests "$TPUT_N" --warmup 1) ;;
  esac
  case $cfg in
    mcp_nocache) A+=(--requests "$NOCACHE_N" --warmup $((NOCACHE_N / 10))) ;;
    small_* | mcp_*) A+=(--requests "$LAT_N" --warmup "$WARMUP") ;;
  esac
  case $cfg in
    *_ours) read -ra w <<<"$OURS_W $UP_W" ;;
    *_nocache) read -ra w <<<"--watch relay=${PID[relay]} --watch gateway=${PID[gateway_nocache]} --watch credstore=${PID[credstore]} $UP_W" ;;
    *_nghttpx) read -ra w <<<"$NGX_W $UP_W" ;;
    *) read -ra w <<<"$UP_W" ;;
  esac
  A+=("${w[@]}")
}

ustat() { # upstream counter KEY
  local s
  s=$(curl -fsS --max-time 10 "http://127.0.0.1:$UP/stats") || die "GET upstream /stats"
  sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$s"
}
kv() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; } # LINE KEY -> value

# run CONFIG [extra args]: one load generator run, checked; sets R (its result
# line) and R_OUT (its whole output)
run() {
  local cfg=$1 out=$TMP/run.out ok0 w0 m0 b0 ok1 w1 m1 b1 sent; shift
  args_for "$cfg"
  ok0=$(ustat auth_ok) w0=$(ustat auth_wrong) m0=$(ustat auth_missing) b0=$(ustat bad)
  if ! "$LOAD" "${A[@]}" "$@" >"$out" 2>&1; then
    sed 's/^/  | /' "$out"
    for n in relay gateway; do tail -n 3 "$TMP/$n.log" | sed "s/^/  $n | /"; done
    die "$cfg: not every request checked out (above)"
  fi
  R=$(grep '^result:' "$out") || { cat "$out"; die "$cfg: no result line"; }
  R_OUT=$(cat "$out")
  ok1=$(ustat auth_ok) w1=$(ustat auth_wrong) m1=$(ustat auth_missing) b1=$(ustat bad)
  sent=$(kv "$R" sent)
  ((ok1 - ok0 == sent)) ||
    die "$cfg: the upstream saw $((ok1 - ok0)) requests with the credential, expected $sent"
  ((w1 == w0 && m1 == m0 && b1 == b0)) ||
    die "$cfg: the upstream saw requests with a wrong ($((w1 - w0))) or missing ($((m1 - m0))) credential, or malformed ($((b1 - b0)))"
}

cpu_of() { grep "^cpu: name=$2 " <<<"$1" | sed -n 's/.* cpu_us_per_req=\([0-9.]*\).*/\1/p'; }

log "binaries: $BIN (relay pid ${PID[relay]}, gateway pid ${PID[gateway]}, gateway/nocache pid ${PID[gateway_nocache]})"
log "nghttpx: $(nghttpx --version | head -1), one worker (pid $NGX_WORKER), TLS frontend with the relay's certificate"
log "load: bench_tunnel_load, one kept-alive connection, one request in flight; $WARMUP warm-up +" \
  "$LAT_N timed requests per latency run (cache_ttl=0: $((NOCACHE_N / 10)) + $NOCACHE_N);" \
  "$ROUNDS interleaved rounds, best of each figure"
log "TLS: TLS 1.3 TLS_AES_128_GCM_SHA256 (the only suite the client offers), ECDSA P-256 certificate," \
  "ALPN h2 on both the relay's agent port and nghttpx; direct = HTTP/1.1 without TLS"
log "cpus: $(nproc); no pinning (generator, relay, gateway, upstream, credstore share them)"
log ""

# --- latency and throughput rounds ----------------------------------------------
LAT_CFGS=(small_direct small_ours small_nghttpx mcp_direct mcp_ours mcp_nghttpx)
((NOCACHE_N > 0)) && LAT_CFGS+=(mcp_nocache)
TPUT_CFGS=(tput_direct tput_ours tput_nghttpx)
declare -A P50 P99 ALLP50 ALLP99 CPU MBPS ALLMBPS LOADCPU TPUT_CPU
# keep_min ARRAY KEY VALUE / keep_max: the best value of a figure over rounds
keep_min() {
  local -n a=$1
  if [[ -z ${a[$2]:-} ]] || awk -v x="$3" -v y="${a[$2]}" 'BEGIN { exit !(x < y) }'; then a[$2]=$3; fi
}
START=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
  line=""
  for cfg in "${LAT_CFGS[@]}"; do
    run "$cfg"
    p50=$(kv "$R" p50_ms) p99=$(kv "$R" p99_ms)
    ALLP50[$cfg]+="${ALLP50[$cfg]:+ }$p50"
    ALLP99[$cfg]+="${ALLP99[$cfg]:+ }$p99"
    keep_min P50 "$cfg" "$p50"
    keep_min P99 "$cfg" "$p99"
    # CPU per request of each watched process (lowest of the rounds)
    while read -r n c; do
      [[ -n $n ]] && keep_min CPU "$cfg/$n" "$c"
    done < <(sed -n 's/^cpu: name=\([a-z]*\) .* cpu_us_per_req=\([0-9.]*\).*/\1 \2/p' <<<"$R_OUT")
    line+=" ${cfg}=$p50/$p99"
  done
  for cfg in "${TPUT_CFGS[@]}"; do
    run "$cfg"
    m=$(kv "$R" best_mb_per_s)
    ALLMBPS[$cfg]+="${ALLMBPS[$cfg]:+ }$m"
    if [[ -z ${MBPS[$cfg]:-} ]] || awk -v a="$m" -v b="${MBPS[$cfg]}" 'BEGIN { exit !(a > b) }'; then
      MBPS[$cfg]=$m
      LOADCPU[$cfg]=$(kv "$R" loader_cpu_pct)
      TPUT_CPU[$cfg]=$(sed -n 's/^cpu: name=\([a-z]*\) .* busy_pct=\([0-9]*\) wait_pct=\([0-9]*\) cpu_s_per_gb=\([0-9.]*\).*/\1 busy \2% waiting for a CPU \3% (\4 s\/GB)/p' <<<"$R_OUT" |
        paste -sd';' - | sed 's/;/; /g')
    fi
    line+=" ${cfg}=${m}MB/s"
  done
  log "round $r (p50/p99 ms):$line ($((SECONDS - START))s)"
done
log ""

# --- memory: concurrent streams on one agent connection ---------------------------
# stream_run GROUP CONNECTIONS: sets S (result line), S_OUT
stream_run() {
  local out=$TMP/streams.out ok0 ok1 bad0 bad1
  ok0=$(ustat auth_ok) bad0=$(($(ustat auth_wrong) + $(ustat auth_missing) + $(ustat bad)))
  if ! "$LOAD" --mode streams --url "https://127.0.0.1:$AP/mcp/bench/up/sse?group=$1" \
    --ca "$PKI/ca.crt" --bearer-file "$AGENT_KEY" --forbid-file "$SECRET" "${SSE_H[@]}" \
    --streams "$STREAMS" --connections "$2" --release-url "http://127.0.0.1:$UP/release?group=$1" \
    --watch relay="${PID[relay]}" --watch gateway="${PID[gateway]}" --watch upstream="${PID[upstream]}" \
    --open-timeout 60 --timeout 600 >"$out" 2>&1; then
    sed 's/^/  | /' "$out"
    for n in relay gateway; do tail -n 3 "$TMP/$n.log" | sed "s/^/  $n | /"; done
    die "streams ($2 connection(s)): not every stream completed with its events (above)"
  fi
  S=$(grep '^result:' "$out") || { cat "$out"; die "streams: no result line"; }
  S_OUT=$(cat "$out")
  ok1=$(ustat auth_ok) bad1=$(($(ustat auth_wrong) + $(ustat auth_missing) + $(ustat bad)))
  ((ok1 - ok0 == STREAMS && bad1 == bad0)) ||
    die "streams: the upstream saw $((ok1 - ok0)) streams with the credential (expected $STREAMS), $((bad1 - bad0)) without or malformed"
}
rss() { grep "^rss: name=$2 " <<<"$1" | sed -n "s/.* $3=\([0-9-]*\).*/\1/p"; } # OUT NAME KEY
stream_run one 1
S1=$S S1_OUT=$S_OUT
MAXOPEN1=$(kv "$S1" max_open)
PEER_MAX=$(sed -n 's/.* peer_max_concurrent_streams=\([0-9]*\).*/\1/p' <<<"$S1_OUT" | head -1)
HELD_MAX=$(ustat held_max)
((HELD_MAX >= MAXOPEN1)) ||
  die "streams: the client saw $MAXOPEN1 streams open but the upstream never held more than $HELD_MAX at once"
S2="" S2_OUT=""
if ((MAXOPEN1 < STREAMS && PEER_MAX > 0)); then
  CONNS2=$(((STREAMS + PEER_MAX - 1) / PEER_MAX))
  ((CONNS2 <= 64)) || CONNS2=64
  stream_run many "$CONNS2"
  S2=$S S2_OUT=$S_OUT
fi
# settled: RSS once the services have had a heap-trim pass (al_service, every
# 10 s) after the streams, to show what a burst leaves resident
sleep 12
vmrss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo -; }
declare -A SETTLED
for n in relay gateway; do SETTLED[$n]=$(vmrss "${PID[$n]}"); done

# --- audit, logs, clean stop --------------------------------------------------------
metric() { # OPSPORT SERIES-PREFIX -> sum of matching series (0 when absent)
  curl -fsS --max-time 10 "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk -v s="$2" 'index($0, s) == 1 { v += $NF } END { printf "%d\n", v + 0 }'
}
for g in gateway:$GW0_OPS gateway_nocache:$GW1_OPS; do
  ops=${g#*:}
  for ((i = 0; i < 600; i++)); do
    (($(metric "$ops" airlock_gateway_audit_queue) == 0)) && break
    sleep 0.1
  done
  q=$(metric "$ops" airlock_gateway_audit_queue)
  ((q == 0)) || die "${g%%:*}: $q audit records still undelivered 60 s after the load"
  refused=$(metric "$ops" airlock_gateway_audit_records_refused_total)
  full=$(metric "$ops" airlock_gateway_audit_full_total)
  ((refused == 0 && full == 0)) ||
    die "${g%%:*}: credstore refused $refused use records; $full requests refused on a full audit queue"
done
AUDIT_FAILS=$(($(metric "$GW0_OPS" airlock_gateway_audit_batch_failures_total) + $(metric "$GW1_OPS" airlock_gateway_audit_batch_failures_total)))
AUDIT_BATCHES=$(($(metric "$GW0_OPS" airlock_gateway_audit_batches_total) + $(metric "$GW1_OPS" airlock_gateway_audit_batches_total)))
CACHE_HITS=$(metric "$GW0_OPS" airlock_gateway_cache_hits_total)
RESOLVES0=$(metric "$GW0_OPS" airlock_gateway_resolves_total)
RESOLVES1=$(metric "$GW1_OPS" airlock_gateway_resolves_total)
"$CTL" audit verify --addr "127.0.0.1:$CS_PORT" --timeout 600 >"$TMP/verify.out" 2>&1 ||
  { cat "$TMP/verify.out"; die "airlockctl audit verify: the audit chain does not verify"; }
CHECKED=$(sed -n 's/.*intact: \([0-9]*\) record.*/\1/p' "$TMP/verify.out")

# SIGTERM: relay and gateways drain and exit 0
for n in gateway gateway_nocache relay; do
  kill -TERM "${PID[$n]}"
  rc=0
  wait "${PID[$n]}" || rc=$?
  unset "PID[$n]"
  ((rc == 0)) || { tail -n 20 "$TMP/$n.log"; die "$n exited with status $rc after SIGTERM"; }
done
for f in "$TMP"/*.log; do
  if grep -qF -f <(cat "$SECRET"; echo; cut -d. -f2 "$AGENT_KEY") "$f"; then
    die "$(basename "$f"): holds the credential's value or the agent's API key secret"
  fi
done

# --- report ---------------------------------------------------------------------
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
cpu() { local v=${CPU[$1/$2]:-}; [[ -n $v ]] && printf '%s' "$v" || printf -- '-'; }
log "latency, one request in flight (ms; best of $ROUNDS rounds each, p50 and p99 independently;"
log "added = path - direct of the same figure; cpu = on-CPU us per request, lowest round):"
printf '%-14s %8s %8s %10s %10s %9s %9s %9s %9s  %s\n' path p50 p99 added_p50 added_p99 \
  relay_us gw_us nghttpx_us cs_us "p50 per round"
declare -A ADD50 ADD99
for cfg in "${LAT_CFGS[@]}"; do
  base=${cfg%%_*}_direct
  if [[ $cfg == *_direct ]]; then a50=- a99=-; else
    a50=$(sub "${P50[$cfg]}" "${P50[$base]}") a99=$(sub "${P99[$cfg]}" "${P99[$base]}")
    ADD50[$cfg]=$a50 ADD99[$cfg]=$a99
  fi
  printf '%-14s %8s %8s %10s %10s %9s %9s %9s %9s  %s\n' "$cfg" "${P50[$cfg]}" "${P99[$cfg]}" "$a50" "$a99" \
    "$(cpu "$cfg" relay)" "$(cpu "$cfg" gateway)" "$(cpu "$cfg" nghttpx)" "$(cpu "$cfg" credstore)" "${ALLP50[$cfg]}"
done
RATIO=$(div "${ADD50[mcp_ours]}" "${ADD50[mcp_nghttpx]}")
SMALL_RATIO=$(div "${ADD50[small_ours]}" "${ADD50[small_nghttpx]}")
log "ratio ours added p50 / nghttpx added p50: tools/call $RATIO, 100-byte $SMALL_RATIO" \
  "(ours: two hops, relay + gateway, and the policy path; nghttpx: one hop, no policy)"
log "value cache: gateway cache hits $CACHE_HITS, credstore resolves $RESOLVES0 (cache_ttl 30 s);" \
  "cache_ttl 0 gateway: $RESOLVES1 resolves"
log ""
log "throughput, one stream, $TPUT_MB MB (best of $ROUNDS rounds x $TPUT_N downloads):"
for cfg in "${TPUT_CFGS[@]}"; do
  log "  ${cfg#tput_}: ${MBPS[$cfg]} MB/s (per round: ${ALLMBPS[$cfg]}); load generator" \
    "${LOADCPU[$cfg]}% of a core; ${TPUT_CPU[$cfg]:-}"
done
log ""
log "memory, $STREAMS concurrent SSE streams on one agent HTTP/2 connection:"
log "  relay's SETTINGS_MAX_CONCURRENT_STREAMS to agents: $PEER_MAX; open at once: $MAXOPEN1" \
  "(upstream held $HELD_MAX), $(kv "$S1" first_event_at_sample) of them with their first SSE event" \
  "delivered; completed $(kv "$S1" completed)/$STREAMS ok $(kv "$S1" ok);" \
  "opened in $(kv "$S1" open_seconds) s, finished $(kv "$S1" finish_seconds) s after release"
for n in relay gateway; do
  log "  $n RSS kB: before $(rss "$S1_OUT" $n before_kb), during $(rss "$S1_OUT" $n during_kb)," \
    "after $(rss "$S1_OUT" $n after_kb), peak $(rss "$S1_OUT" $n peak_kb);" \
    "$(rss "$S1_OUT" $n per_open_stream_b) bytes per open stream"
done
log "  settled, 12 s after the last stream run (freed memory handed back): relay RSS" \
  "${SETTLED[relay]} kB, gateway ${SETTLED[gateway]} kB"
if [[ -n $S2 ]]; then
  log "  the relay holds at most $PEER_MAX streams per agent connection, so again over" \
    "$(kv "$S2" connections) connections: open at once $(kv "$S2" max_open), completed" \
    "$(kv "$S2" completed)/$STREAMS ok $(kv "$S2" ok)"
  for n in relay gateway; do
    log "  $n RSS kB: before $(rss "$S2_OUT" $n before_kb), during $(rss "$S2_OUT" $n during_kb)," \
      "after $(rss "$S2_OUT" $n after_kb), peak $(rss "$S2_OUT" $n peak_kb);" \
      "$(rss "$S2_OUT" $n per_open_stream_b) bytes per open stream"
  done
fi
log ""
log "verified: every response (status, exact body or the $TPUT_MB MB pattern, SSE events); no" \
  "credential byte in any response of our path; the upstream got every request exactly once" \
  "with the credential (injected by the gateway on our path); audit queues drained ($AUDIT_BATCHES" \
  "batches, $AUDIT_FAILS failed attempts retried), no record refused; airlockctl audit verify:" \
  "chain intact, ${CHECKED:-?} records; no secret in any log; relay and gateways exited 0 on SIGTERM"
log "targets (context, not asserted): added p50 <= $TARGET_P50_MS ms, p99 <= $TARGET_P99_MS ms;" \
  ">= $TARGET_MBPS MB/s single stream; $TARGET_STREAMS concurrent streams per connection with" \
  "bounded memory"
note() { log "note: $*"; }
awk -v a="${ADD50[mcp_ours]}" -v t="$TARGET_P50_MS" 'BEGIN { exit !(a > t) }' &&
  note "tools/call added p50 ${ADD50[mcp_ours]} ms is above the $TARGET_P50_MS ms target"
awk -v a="${ADD99[mcp_ours]}" -v t="$TARGET_P99_MS" 'BEGIN { exit !(a > t) }' &&
  note "tools/call added p99 ${ADD99[mcp_ours]} ms is above the $TARGET_P99_MS ms target"
awk -v a="${MBPS[tput_ours]}" -v t="$TARGET_MBPS" 'BEGIN { exit !(a < t) }' &&
  note "single-stream throughput ${MBPS[tput_ours]} MB/s is below the $TARGET_MBPS MB/s target"
FE=$(kv "$S1" first_event_at_sample)
((FE < MAXOPEN1)) &&
  note "$((MAXOPEN1 - FE)) of the $MAXOPEN1 held SSE streams had not delivered their first event" \
    "(which the upstream sent with the head) while held; it arrived only with the stream's end"
((MAXOPEN1 < TARGET_STREAMS && STREAMS >= TARGET_STREAMS)) &&
  note "only $MAXOPEN1 streams could be open at once on one agent connection (target $TARGET_STREAMS)"
SA_OUT=${S2_OUT:-$S1_OUT} SA=${S2:-$S1}
printf 'summary: ratio=%s added_p50_ms=%s added_p99_ms=%s nghttpx_added_p50_ms=%s nghttpx_added_p99_ms=%s small_ratio=%s small_added_p50_ms=%s small_added_p99_ms=%s nocache_added_p50_ms=%s tput_mb_per_s=%s nghttpx_tput_mb_per_s=%s streams=%s max_open_one_conn=%s relay_rss_kb=%s/%s gateway_rss_kb=%s/%s all_open=%s over_conns=%s relay_rss_all_kb=%s/%s gateway_rss_all_kb=%s/%s relay_rss_settled_kb=%s gateway_rss_settled_kb=%s\n' \
  "$RATIO" "${ADD50[mcp_ours]}" "${ADD99[mcp_ours]}" "${ADD50[mcp_nghttpx]}" "${ADD99[mcp_nghttpx]}" \
  "$SMALL_RATIO" "${ADD50[small_ours]}" "${ADD99[small_ours]}" "${ADD50[mcp_nocache]:-n/a}" \
  "${MBPS[tput_ours]}" "${MBPS[tput_nghttpx]}" "$STREAMS" "$MAXOPEN1" \
  "$(rss "$S1_OUT" relay before_kb)" "$(rss "$S1_OUT" relay during_kb)" \
  "$(rss "$S1_OUT" gateway before_kb)" "$(rss "$S1_OUT" gateway during_kb)" \
  "$(kv "$SA" max_open)" "$(kv "$SA" connections)" \
  "$(rss "$SA_OUT" relay before_kb)" "$(rss "$SA_OUT" relay during_kb)" \
  "$(rss "$SA_OUT" gateway before_kb)" "$(rss "$SA_OUT" gateway during_kb)" \
  "${SETTLED[relay]}" "${SETTLED[gateway]}"
