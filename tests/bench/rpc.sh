#!/usr/bin/env bash
# Benchmark: unary gRPC on the Airlock library against nghttpd.
#
# h2load drives airlock.test.v1.TestService/Echo on airlock-testsvc, over h2c
# and over TLS, and in the same run drives nghttpd serving a small static file
# with the same h2load flags (-c, -m, -n, -t) over h2c and over TLS (same
# certificate). The nghttpd baseline is sent the identical request (POST, same
# headers, same 12-byte gRPC-framed body), so both servers read a HEADERS+DATA
# request and write a response (BENCH_GET=1 adds a plain GET baseline).
#
# Every configuration is measured BENCH_ROUNDS times, interleaved (ours,
# nghttpd, ours, ...), and the fastest round is reported: on a shared machine
# interference only ever slows a run down. A round is a throughput run (req/s)
# and a latency run with h2load's --log-file (p50/p99); they are separate
# because h2load's write per logged request costs it about a third of its
# throughput, and h2load, not the server, is usually the bottleneck here. Also reported: server on-CPU time
# per request (/proc/PID/task/*/schedstat), which other load on the machine
# barely moves, and how long the server waited for its CPU (interference).
#
# Our responses are checked, so errors cannot pass for speed: h2load must
# report every request succeeded with a 2xx, and the ops port's
# airlock_grpc_requests_total{method=".../Echo",code="OK"} must have grown by
# exactly the number of requests. The script only measures: it exits non-zero
# only when something broke (build, start-up, a failed or non-OK response),
# never because of a timing.
#
# Usage: tests/bench/rpc.sh
# Environment (defaults in brackets):
#   BIN           directory holding airlock-testsvc [build-rel/bin; a Release
#                 build is made there when the binary is missing]
#   BENCH_N       requests per throughput run [200000]
#   BENCH_LAT_N   requests per latency run [50000]
#   BENCH_C       h2load clients (connections) [16]
#   BENCH_M       h2load max concurrent streams per client [16]
#   BENCH_T       h2load threads [1]
#   BENCH_ROUNDS  measured runs per configuration [3]
#   BENCH_WARMUP  requests per warm-up run [20000]
#   BENCH_PIN     1: pin the server to CPU 0 and h2load to CPU 1 [1 when the
#                 machine has 2 or more CPUs]
#   BENCH_GET     1: also measure an nghttpd GET baseline (informational) [0]
# Loopback only. The last line is:
#   summary: ratio=... h2c_rps=... nghttpd_h2c_rps=... tls_ratio=... tls_rps=...
#            nghttpd_tls_rps=... p50_ms=... p99_ms=...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/build-rel/bin}
N=${BENCH_N:-200000}
LAT_N=${BENCH_LAT_N:-50000}
C=${BENCH_C:-16}
M=${BENCH_M:-16}
T=${BENCH_T:-1}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-20000}
GET=${BENCH_GET:-0}
if [[ -z ${BENCH_PIN:-} ]]; then
  if (($(nproc) >= 2)); then BENCH_PIN=1; else BENCH_PIN=0; fi
fi
METHOD=/airlock.test.v1.TestService/Echo
OK_SERIES="airlock_grpc_requests_total{method=\"$METHOD\",code=\"OK\"}"

die() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "$*"; }

# --- tools -------------------------------------------------------------------
need_apt=()
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v nghttpd >/dev/null || need_apt+=(nghttp2-server)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v ss >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  log "installing: ${need_apt[*]}"
  SUDO=""
  ((EUID == 0)) || SUDO=sudo
  { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null; } ||
    die "apt-get install ${need_apt[*]}"
fi

# --- build -------------------------------------------------------------------
# The default build-rel is brought up to date (only the airlock-testsvc
# target); a BIN given from outside is used as it is.
SVC=$BIN/airlock-testsvc
if [[ $BIN == "$ROOT/build-rel/bin" ]]; then
  had=0 BLOG=$ROOT/build-rel/bench-build.log
  mkdir -p "$ROOT/build-rel"
  [[ -x $SVC ]] && had=1
  if ((!had)); then log "building Release into build-rel (airlock-testsvc)"; fi
  if ! { cmake -S "$ROOT" -B "$ROOT/build-rel" -DCMAKE_BUILD_TYPE=Release >"$BLOG" 2>&1 &&
    make -C "$ROOT/build-rel" -j"$(nproc)" --no-print-directory airlock-testsvc \
      >>"$BLOG" 2>&1; }; then
    # the end of the log says why (CMake writes "CMake Error", the compiler
    # "error:"); never let printing it end the script under set -e/pipefail
    log "Release build failed; the end of $BLOG:"
    tail -n 25 "$BLOG" 2>/dev/null | sed 's/^/  | /' || true
    ((had)) || die "Release build of airlock-testsvc (log: $BLOG)"
    log "warning: rebuilding build-rel failed; measuring the existing, possibly stale, binary"
  fi
fi
[[ -x $SVC ]] || die "$SVC not found"
if [[ -f $BIN/../CMakeCache.txt ]]; then
  bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BIN/../CMakeCache.txt")
  [[ $bt == Release ]] || log "warning: $BIN is a '${bt:-unset}' build, not Release"
fi

# --- scratch, cleanup --------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SRV_PIN=() LOAD_PIN=()
if ((BENCH_PIN)); then
  SRV_PIN=(taskset -c 0)
  LOAD_PIN=(taskset -c 1)
fi

# --- certificates: ECDSA P-256 CA and server certificate -----------------------
PKI=$TMP/pki
mkdir -p "$PKI"
(
  cd "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=airlock bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt
  openssl ecparam -name prime256v1 -genkey -noout -out server.key
  openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 2 \
    -extfile server.ext -out server.crt
) >"$TMP/openssl.log" 2>&1 || { cat "$TMP/openssl.log"; die "certificate generation"; }

# --- request body and static file --------------------------------------------
# gRPC frame: uncompressed flag, 4-byte big-endian length 7, then EchoRequest
# {message: "hello"} = 0x0a 0x05 'hello'.
printf '\x00\x00\x00\x00\x07\x0a\x05hello' >"$TMP/req.bin"
mkdir -p "$TMP/www"
printf 'hello world\n' >"$TMP/www/Echo" # 12 bytes, about the size of our reply
GRPC_H=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$TMP/req.bin")
# Same flags for every server. One TLS 1.3 cipher for both (nghttpd would pick
# AES-256-GCM, ours AES-128-GCM); it has no effect on h2c.
H2L=(-c "$C" -m "$M" -t "$T" --tls13-ciphers=TLS_AES_128_GCM_SHA256)

# --- servers -----------------------------------------------------------------
declare -A PORT OPS PID # by config name
start_nghttpd() { # name, nghttpd args... -> sets PORT[name], PID[name]
  local name=$1; shift
  "${SRV_PIN[@]}" nghttpd -a 127.0.0.1 -d "$TMP/www" "$@" >"$TMP/$name.log" 2>&1 &
  local pid=$! i port=""
  PIDS+=("$pid")
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log"; die "$name: nghttpd exited at start"; }
    port=$(ss -ltnpH 2>/dev/null | grep "pid=$pid," | sed -n 's/.*127\.0\.0\.1:\([0-9]*\) .*/\1/p' | head -1 || true)
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || die "$name: cannot find nghttpd's port"
  PORT[$name]=$port PID[$name]=$pid
}

# service.start is an info line, so ours run at the default log level; the
# per-request path logs nothing at info.
start_ours() { # name, extra flags... -> sets PORT[name], OPS[name], PID[name]
  local name=$1; shift
  local err=$TMP/$name.log
  "${SRV_PIN[@]}" "$SVC" --listen=127.0.0.1:0 --ops_listen=127.0.0.1:0 "$@" 2>"$err" >/dev/null &
  local pid=$! i gp="" op=""
  PIDS+=("$pid")
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { cat "$err"; die "$name: airlock-testsvc exited at start"; }
    gp=$(sed -n 's/.*event=service\.start .*grpc_port=\([0-9][0-9]*\).*/\1/p' "$err" | head -1 || true)
    op=$(sed -n 's/.*event=service\.start .*ops_port=\([0-9][0-9]*\).*/\1/p' "$err" | head -1 || true)
    [[ -n $gp && -n $op ]] && break
    sleep 0.05
  done
  [[ -n $gp && -n $op ]] || { cat "$err"; die "$name: no service.start line"; }
  PORT[$name]=$gp OPS[$name]=$op PID[$name]=$pid
}

start_ours ours_h2c --insecure=true
start_ours ours_tls --tls.cert_file="$PKI/server.crt" --tls.key_file="$PKI/server.key" \
  --tls.ca_file="$PKI/ca.crt" --tls.client_cert=optional
start_nghttpd ng_h2c --no-tls 0
start_nghttpd ng_tls 0 "$PKI/server.key" "$PKI/server.crt"

# --- measurement -------------------------------------------------------------
ok_count() { # ops port -> value of the Echo OK counter (0 when absent)
  local v
  v=$(curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics") || die "GET /metrics on port $1"
  awk -v s="$OK_SERIES" 'index($0, s " ") == 1 { v = $2 } END { printf "%d\n", v + 0 }' <<<"$v"
}

sched() { # pid -> "on-CPU ns, run-queue wait ns", summed over its threads
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ c += $1; w += $2 } END { printf "%.0f %.0f\n", c, w }'
}

# One h2load run: mode (tput|lat), config name, url, extra h2load args...
# tput: -n N, no per-request log; sets R_RPS, R_CPU (server on-CPU us per
#   request), R_BUSY (server on-CPU % of the run), R_WAIT (% of the run the
#   server was runnable but waiting for its CPU: interference from other
#   load), R_LOAD (h2load's CPU % of the run, user+sys, all threads), R_TLS.
# lat: -n LAT_N with --log-file; sets R_P50, R_P99 (ms) from the log.
# Both check that every request succeeded (and, for ours, the OK counter).
run_h2load() {
  local mode=$1 name=$2 url=$3; shift 3
  local out=$TMP/h2load.out lf=$TMP/h2load.tsv n=$N extra=()
  local pid=${PID[$name]} ops=${OPS[$name]:-} before=0 after c0 w0 c1 w1 t0 t1
  if [[ $mode == lat ]]; then
    n=$LAT_N
    extra=(--log-file="$lf")
    rm -f "$lf"
  fi
  [[ -n $ops ]] && before=$(ok_count "$ops")
  read -r c0 w0 < <(sched "$pid")
  t0=$(date +%s%N)
  local TIMEFORMAT='%U %S' hu hs
  { time "${LOAD_PIN[@]}" h2load "${H2L[@]}" -n "$n" "${extra[@]}" "$@" "$url" \
      >"$out" 2>&1; } 2>"$TMP/time.out" || { cat "$out"; die "$name: h2load exited with an error"; }
  t1=$(date +%s%N)
  read -r hu hs <"$TMP/time.out"
  read -r c1 w1 < <(sched "$pid")
  local req codes
  req=$(grep -E '^requests:' "$out") || { cat "$out"; die "$name: no requests line"; }
  codes=$(grep -E '^status codes:' "$out") || { cat "$out"; die "$name: no status codes line"; }
  [[ $req =~ ^requests:\ $n\ total,\ $n\ started,\ $n\ done,\ $n\ succeeded,\ 0\ failed,\ 0\ errored,\ 0\ timeout ]] ||
    { cat "$out"; die "$name: not every request succeeded: $req"; }
  [[ $codes =~ ^status\ codes:\ $n\ 2xx,\ 0\ 3xx,\ 0\ 4xx,\ 0\ 5xx ]] ||
    { cat "$out"; die "$name: not every status was 2xx: $codes"; }
  if [[ -n $ops ]]; then
    after=$(ok_count "$ops")
    ((after - before == n)) ||
      die "$name: $OK_SERIES grew by $((after - before)), expected $n (h2load saw $req)"
  fi
  if [[ $mode == lat ]]; then
    # per-request log: start time (us), HTTP status, duration (us), tab-separated
    local lines bad
    lines=$(wc -l <"$lf")
    ((lines == n)) || die "$name: h2load log has $lines lines, expected $n"
    bad=$(awk -F'\t' '$2 != 200' "$lf" | wc -l)
    ((bad == 0)) || die "$name: $bad requests without HTTP 200 in the h2load log"
    read -r R_P50 R_P99 < <(cut -f3 "$lf" | sort -n | awk -v n="$lines" '
      BEGIN { i50 = int((n * 50 + 99) / 100); i99 = int((n * 99 + 99) / 100) }
      NR == i50 { p50 = $1 } NR == i99 { p99 = $1 }
      END { printf "%.3f %.3f\n", p50 / 1000, p99 / 1000 }')
    return
  fi
  R_RPS=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
  [[ -n $R_RPS ]] || { cat "$out"; die "$name: cannot read req/s"; }
  R_TLS=$(sed -n 's/^TLS Protocol: \(.*\)/\1/p;s/^Cipher: \(.*\)/\1/p' "$out" | paste -sd' ' -)
  read -r R_CPU R_BUSY R_WAIT R_LOAD < <(awk -v c=$((c1 - c0)) -v w=$((w1 - w0)) -v t=$((t1 - t0)) \
    -v n="$n" -v h="$hu" -v hs="$hs" 'BEGIN { printf "%.2f %.0f %.0f %.0f\n", c / 1000 / n,
      100 * c / t, 100 * w / t, 100 * (h + hs) * 1e9 / t }')
}

warm() { # name, url, extra h2load args...
  local name=$1 url=$2; shift 2
  "${LOAD_PIN[@]}" h2load "${H2L[@]}" -n "$WARMUP" "$@" "$url" >"$TMP/warm.out" 2>&1 ||
    { cat "$TMP/warm.out"; die "$name: warm-up failed"; }
  grep -qE "^status codes: $WARMUP 2xx" "$TMP/warm.out" ||
    { cat "$TMP/warm.out"; die "$name: warm-up had errors"; }
}

declare -A URL BEST_RPS BEST_P50 BEST_P99 BEST_BUSY BEST_WAIT BEST_LOAD MIN_CPU ALL_RPS TLSINFO
URL[ours_h2c]="http://127.0.0.1:${PORT[ours_h2c]}$METHOD"
URL[ours_tls]="https://127.0.0.1:${PORT[ours_tls]}$METHOD"
URL[ng_h2c]="http://127.0.0.1:${PORT[ng_h2c]}/Echo"
URL[ng_tls]="https://127.0.0.1:${PORT[ng_tls]}/Echo"
CONFIGS=(ours_h2c ng_h2c ours_tls ng_tls)
((GET)) && CONFIGS+=(ngget_h2c ngget_tls)
URL[ngget_h2c]=${URL[ng_h2c]}
URL[ngget_tls]=${URL[ng_tls]}
PID[ngget_h2c]=${PID[ng_h2c]}
PID[ngget_tls]=${PID[ng_tls]}

args_for() { # config -> sets A=(h2load request args)
  case $1 in
    ngget_*) A=() ;;
    *) A=("${GRPC_H[@]}") ;;
  esac
}

log "airlock-testsvc: $SVC"
log "h2load: $(h2load --version | head -1); nghttpd $(nghttpd --version | sed -n 's/^nghttpd nghttp2\///p')"
log "flags: -c $C -m $M -t $T for every server; per config and round: a throughput run of -n $N"
log "  and a latency run of -n $LAT_N with --log-file (h2load's write per request would slow the"
log "  throughput run by about a third); warm-up $WARMUP requests per config; best of $ROUNDS rounds"
if ((BENCH_PIN)); then
  log "cpus: $(nproc); servers pinned to CPU 0, h2load to CPU 1 (taskset); one worker each"
else
  log "cpus: $(nproc); no CPU pinning"
fi
log "TLS: TLS 1.3, ECDSA P-256 server cert; airlock-testsvc runs tls.client_cert=optional" \
  "because h2load cannot present a client certificate (no mTLS in this benchmark)"
log "nghttpd request: POST with the same headers and body as the gRPC call, 12-byte static file"
((GET)) && log "  ('ngget' rows: plain GET of the same file, for reference)"
log ""

for cfg in "${CONFIGS[@]}"; do
  args_for "$cfg"
  warm "$cfg" "${URL[$cfg]}" "${A[@]}"
  BEST_RPS[$cfg]=0
  MIN_CPU[$cfg]=1e9
  ALL_RPS[$cfg]=""
done

START=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
  for cfg in "${CONFIGS[@]}"; do
    args_for "$cfg"
    run_h2load tput "$cfg" "${URL[$cfg]}" "${A[@]}"
    run_h2load lat "$cfg" "${URL[$cfg]}" "${A[@]}"
    ALL_RPS[$cfg]+="${ALL_RPS[$cfg]:+ }$(printf %.0f "$R_RPS")"
    TLSINFO[$cfg]=$R_TLS
    if awk -v a="$R_RPS" -v b="${BEST_RPS[$cfg]}" 'BEGIN { exit !(a > b) }'; then
      BEST_RPS[$cfg]=$R_RPS BEST_P50[$cfg]=$R_P50 BEST_P99[$cfg]=$R_P99
      BEST_BUSY[$cfg]=$R_BUSY BEST_WAIT[$cfg]=$R_WAIT BEST_LOAD[$cfg]=$R_LOAD
    fi
    MIN_CPU[$cfg]=$(awk -v a="$R_CPU" -v b="${MIN_CPU[$cfg]}" 'BEGIN { print (a < b ? a : b) }')
  done
  log "round $r done ($((SECONDS - START))s)"
done
log ""

log "req/s, srv% (server on-CPU share of the run), wait% (server runnable but not running:"
log "other load on its CPU) and h2load% (its CPU share) are from the fastest throughput run;"
log "p50/p99 from the latency run of that round; cpu_us/req is the server's on-CPU time per"
log "request, lowest of the throughput runs."
printf '%-10s %11s %8s %8s %5s %5s %7s %10s  %s\n' config req/s p50_ms p99_ms srv% wait% h2load% \
  cpu_us/req "req/s per round"
for cfg in "${CONFIGS[@]}"; do
  printf '%-10s %11.2f %8.3f %8.3f %5s %5s %7s %10.2f  %s\n' "$cfg" "${BEST_RPS[$cfg]}" \
    "${BEST_P50[$cfg]}" "${BEST_P99[$cfg]}" "${BEST_BUSY[$cfg]}" "${BEST_WAIT[$cfg]}" \
    "${BEST_LOAD[$cfg]}" "${MIN_CPU[$cfg]}" "${ALL_RPS[$cfg]}"
done
log ""
log "TLS negotiated: ours: ${TLSINFO[ours_tls]:-?}; nghttpd: ${TLSINFO[ng_tls]:-?}"
sat="" busy=""
for cfg in ours_h2c ng_h2c ours_tls ng_tls; do
  ((${BEST_LOAD[$cfg]} >= 90)) && sat+=" $cfg"
  ((${BEST_WAIT[$cfg]} >= 10)) && busy+=" $cfg"
done
if [[ -n $busy ]]; then
  log "note: the server waited >=10% of the run for its CPU in:$busy: other load on this"
  log "  machine distorted those figures; rerun on a quiet machine."
fi
if [[ -n $sat ]]; then
  log "note: h2load used >=90% of its CPU in:$sat. There req/s is capped by the load"
  log "  generator (it spends more CPU per request than either server), so req/s and its ratio"
  log "  mostly measure h2load; cpu_us/req (and capacity below) compares the servers themselves."
fi
cap() { awk -v c="$1" 'BEGIN { printf "%.0f", (c > 0 ? 1e6 / c : 0) }'; }
log "server capacity on one core (1e6 / cpu_us/req): ours h2c $(cap "${MIN_CPU[ours_h2c]}")," \
  "nghttpd h2c $(cap "${MIN_CPU[ng_h2c]}"), ours TLS $(cap "${MIN_CPU[ours_tls]}")," \
  "nghttpd TLS $(cap "${MIN_CPU[ng_tls]}") req/s"
log "verified: every request 2xx in h2load, and $OK_SERIES grew by exactly -n per run of ours"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
R_H2C=$(ratio "${BEST_RPS[ours_h2c]}" "${BEST_RPS[ng_h2c]}")
R_TLS=$(ratio "${BEST_RPS[ours_tls]}" "${BEST_RPS[ng_tls]}")
log "ratio ours/nghttpd req/s: h2c $R_H2C, TLS $R_TLS" \
  "(server CPU per request, nghttpd/ours: h2c $(ratio "${MIN_CPU[ng_h2c]}" "${MIN_CPU[ours_h2c]}")," \
  "TLS $(ratio "${MIN_CPU[ng_tls]}" "${MIN_CPU[ours_tls]}"))"
if ((GET)); then
  log "vs nghttpd GET: h2c $(ratio "${BEST_RPS[ours_h2c]}" "${BEST_RPS[ngget_h2c]}")," \
    "TLS $(ratio "${BEST_RPS[ours_tls]}" "${BEST_RPS[ngget_tls]}")"
fi
printf 'summary: ratio=%s h2c_rps=%.2f nghttpd_h2c_rps=%.2f tls_ratio=%s tls_rps=%.2f nghttpd_tls_rps=%.2f p50_ms=%.3f p99_ms=%.3f\n' \
  "$R_H2C" "${BEST_RPS[ours_h2c]}" "${BEST_RPS[ng_h2c]}" "$R_TLS" "${BEST_RPS[ours_tls]}" \
  "${BEST_RPS[ng_tls]}" "${BEST_P50[ours_h2c]}" "${BEST_P99[ours_h2c]}"
