#!/usr/bin/env bash
# Benchmark: CredentialResolver.Resolve on airlock-credstore against the
# single-core Ed25519 verify rate.
#
# Signature verification is the floor cost of a Resolve: every call carries a
# grant the credstore must verify. This script measures, in the same run and
# on the same CPU core, (a) Resolve calls per second with p50/p99 latency, from
# bench_credstore_load (tests/bench/credstore_load.c) against the real
# airlock-credstore binary over mTLS with kept-alive HTTP/2 connections, every
# call with a distinct grant (own grant id and subject, signed by a trusted
# issuer key, holder = the calling executor identity, audience credstore,
# inside the credential's policy and the issuer's scope, so every call must be
# ALLOWED), and (b) `openssl speed -seconds N ed25519` verify/s. It prints both
# and their ratio. The credstore verifies grant signatures with libsodium
# (al_grant.c), whose verify is faster than OpenSSL 3.0's: (c) its rate from
# bench_ed25519_verify (tests/bench/ed25519_verify.c, measured the same way
# on the same core) is printed too, with the ratio against it
# (sodium_ratio), the floor of the code as built. The credstore handles
# gRPC, grant checks and store reads on its event-loop thread and writes the
# audit group commits on a commit thread. The ratio is per core of server
# CPU: resolves/s divided by the CPU cores the server's threads used together
# (their on-CPU time per Resolve x resolves/s, at least 1), so a server that
# spread its work over more cores gets no credit for it; resolves/s divided
# by the number of server threads that used CPU is printed too.
#
# CPU placement. By default nothing is pinned: the server's two threads run
# where the scheduler puts them, as deployed, and the load generator (about
# 5-10 % of a core) shares the machine. BENCH_PIN=1 squeezes both server
# threads onto CPU 0 (the load generator on CPU 1): then the commit thread,
# back from each fsync, waits behind the loop's grant checks and the core
# sits idle about 30 % of the time while both wait for each other, so that
# mode measures the two threads' contention for one core more than the cost
# of a Resolve (which the per-core ratio above already accounts for).
#
# Setup, all under a scratch directory: dev PKI (`airlockctl certs init`), an
# issuer grant key (`airlockctl keys gen-grant-key`), a master key (`airlockctl
# keys gen-master`), a config with the issuer's scope, and one credential put
# through the admin API (`airlockctl cred put`) whose policy allows the bench's
# grants. The store is a real one: AES-256-GCM at rest, SQLite WAL with
# synchronous=FULL, and every Resolve is an audit record made durable (group
# commit, fsync) before its answer leaves.
#
# Every measured round is checked, so errors cannot pass for speed: the load
# generator compares every answer (status OK, the stored value, a version, a
# TTL, an audit record of its own) and exits non-zero otherwise; the server's
# airlock_credstore_resolves_total{decision="allow"} must grow by exactly the
# calls made, {decision="deny"} must not grow, and the audit head must advance
# by exactly one record per call; at the end `airlockctl audit verify` checks
# the whole chain. The script exits non-zero only when something broke (build,
# start-up, a failed or wrong answer), never because of a timing.
#
# Every configuration runs BENCH_ROUNDS times, interleaved (openssl speed,
# Resolve load, openssl speed, ...); the fastest of each is reported: on a
# shared machine interference only ever slows a run down.
#
# Usage: tests/bench/credstore.sh
# Environment (defaults in brackets):
#   BIN                  directory with airlock-credstore, airlockctl and
#                        bench_credstore_load [build-bench/bin; a Release build
#                        is made (or brought up to date) there]
#   BENCH_CALLS          timed Resolve calls per round [50000]
#   BENCH_WARMUP         untimed calls first, per round [5000]
#   BENCH_C              HTTP/2 connections [2]
#   BENCH_M              calls in flight per connection [16]
#   BENCH_ROUNDS         measured rounds [3]
#   BENCH_SPEED_SECONDS  openssl speed -seconds per round [3]
#   BENCH_PIN            1: pin the server, openssl speed and
#                        bench_ed25519_verify to CPU 0, the load generator to
#                        CPU 1 (needs 2+ CPUs) [0: no pinning]
# Loopback only (127.0.0.1). The last line is:
#   summary: ratio=... resolves_per_s=... p50_ms=... p99_ms=...
#            ed25519_verify_per_s=... sodium_verify_per_s=... sodium_ratio=... calls=...
#            server_threads=... server_cores=...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/build-bench/bin}
CALLS=${BENCH_CALLS:-50000}
WARMUP=${BENCH_WARMUP:-5000}
CONNS=${BENCH_C:-2}
STREAMS=${BENCH_M:-16}
ROUNDS=${BENCH_ROUNDS:-3}
SPEED_S=${BENCH_SPEED_SECONDS:-3}
BENCH_PIN=${BENCH_PIN:-0}

TARGET_RATIO=0.7
TARGET_P99_MS=5
CRED=bench/token
DEST=api.example.com
EXEC_ID=executor/executor-0

die() { echo "FAIL: $*" >&2; exit 1; }
[[ $BENCH_PIN == 0 || $BENCH_PIN == 1 ]] || die "BENCH_PIN must be 0 or 1 (got '$BENCH_PIN')"
((BENCH_PIN == 0 || $(nproc) >= 2)) || die "BENCH_PIN=1 needs 2 or more CPUs"
log() { echo "$*"; }

for v in CALLS WARMUP CONNS STREAMS ROUNDS SPEED_S; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((CALLS > 0 && CONNS > 0 && STREAMS > 0 && ROUNDS > 0 && SPEED_S > 0)) ||
  die "BENCH_CALLS, BENCH_C, BENCH_M, BENCH_ROUNDS and BENCH_SPEED_SECONDS must be > 0"

# --- tools -------------------------------------------------------------------
need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v taskset >/dev/null || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
  log "installing: ${need_apt[*]}"
  SUDO=""
  ((EUID == 0)) || SUDO=sudo
  { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null; } ||
    die "apt-get install ${need_apt[*]}"
fi

# --- build -------------------------------------------------------------------
# The default build-bench is a Release tree brought up to date (three targets
# only); a BIN given from outside is used as it is.
TARGETS=(airlock-credstore airlockctl bench_credstore_load bench_ed25519_verify)
if [[ $BIN == "$ROOT/build-bench/bin" ]]; then
  had=1 BLOG=$ROOT/build-bench/bench-build.log
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

# --- scratch, cleanup --------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench-credstore.XXXXXX")
SRV_PID=""
cleanup() {
  if [[ -n $SRV_PID ]]; then
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SRV_PIN=() LOAD_PIN=()
if ((BENCH_PIN)); then
  SRV_PIN=(taskset -c 0)
  LOAD_PIN=(taskset -c 1)
fi

# --- identities, keys, config ------------------------------------------------
export AIRLOCK_HOME=$TMP/home
PKI=$AIRLOCK_HOME/pki
KEYS=$AIRLOCK_HOME/keys
"$CTL" certs init --names "credstore/credstore-0,$EXEC_ID,admin/admin" >"$TMP/setup.log" 2>&1 ||
  { cat "$TMP/setup.log"; die "airlockctl certs init"; }
"$CTL" keys gen-grant-key bench-intake >>"$TMP/setup.log" 2>&1 ||
  { cat "$TMP/setup.log"; die "airlockctl keys gen-grant-key"; }
"$CTL" keys gen-master "$TMP/master.key" >>"$TMP/setup.log" 2>&1 ||
  { cat "$TMP/setup.log"; die "airlockctl keys gen-master"; }
mkdir -m 700 "$TMP/data"
cat >"$TMP/credstore.cfg" <<EOF
listen = "127.0.0.1:0";
ops_listen = "127.0.0.1:0";
tls = { cert_file = "$PKI/credstore-credstore-0.crt"; key_file = "$PKI/credstore-credstore-0.key";
        ca_file = "$PKI/ca.crt"; };
data_dir = "$TMP/data";
master_key_file = "$TMP/master.key";
issuers = ( { issuer = "spiffe://airlock/intake/*"; public_key_file = "$KEYS/bench-intake.pub";
              principals = ["acme/**"]; pools = ["ci-*"]; credentials = ["bench/**"]; } );
EOF

# The server runs at the default log level (info), as deployed (an allowed
# Resolve is logged at debug only: the audit chain records each one).
"${SRV_PIN[@]}" "$BIN/airlock-credstore" --config "$TMP/credstore.cfg" </dev/null \
  >/dev/null 2>"$TMP/server.log" &
SRV_PID=$!
GP="" OP=""
for ((i = 0; i < 200; i++)); do
  kill -0 "$SRV_PID" 2>/dev/null || { tail -n 20 "$TMP/server.log"; die "airlock-credstore exited at start"; }
  GP=$(sed -n 's/.*event=service\.start .*grpc_port=\([0-9][0-9]*\).*/\1/p' "$TMP/server.log" | head -1 || true)
  OP=$(sed -n 's/.*event=service\.start .*ops_port=\([0-9][0-9]*\).*/\1/p' "$TMP/server.log" | head -1 || true)
  [[ -n $GP && -n $OP ]] && break
  sleep 0.05
done
[[ -n $GP && -n $OP ]] || { tail -n 20 "$TMP/server.log"; die "no service.start line from airlock-credstore"; }
ADDR=127.0.0.1:$GP

# The value: random, never printed; the load generator compares every answer with it.
(umask 077 && printf 'bench-%s' "$(openssl rand -hex 24)" >"$TMP/value")
"$CTL" cred put "$CRED" --type bearer --value-file "$TMP/value" --addr "$ADDR" \
  --issuer 'spiffe://airlock/intake/*' --principal 'acme/*' --pool 'ci-*' \
  --holder 'spiffe://airlock/executor/executor-*' --dest "$DEST" >>"$TMP/setup.log" 2>&1 ||
  { cat "$TMP/setup.log"; die "airlockctl cred put"; }

# --- measurement -------------------------------------------------------------
metric() { # series -> its value on the ops port (0 when absent)
  local v
  v=$(curl -fsS --max-time 10 "http://127.0.0.1:$OP/metrics") || die "GET /metrics"
  awk -v s="$1" 'index($0, s " ") == 1 { v = $2 } END { printf "%d\n", v + 0 }' <<<"$v"
}
ALLOW='airlock_credstore_resolves_total{decision="allow"}'
DENY='airlock_credstore_resolves_total{decision="deny"}'
HEAD=airlock_credstore_audit_head_seq
COMMITS=airlock_credstore_audit_commit_records_count # group commits

task_cpu() { # -> one "tid on-CPU-ns run-queue-wait-ns" line per server thread
  local f
  for f in /proc/"$SRV_PID"/task/*/schedstat; do
    [[ -r $f ]] || continue
    echo "$(basename "$(dirname "$f")") $(cut -d' ' -f1,2 "$f")"
  done
}

# One openssl speed run on the server's core; sets R_VERIFY (verify/s).
run_speed() {
  local out=$TMP/speed.out
  "${SRV_PIN[@]}" openssl speed -seconds "$SPEED_S" ed25519 >"$out" 2>&1 ||
    { cat "$out"; die "openssl speed ed25519"; }
  # " 253 bits EdDSA (Ed25519)   0.0000s   0.0001s  24088.0   7362.0": verify/s is last
  R_VERIFY=$(awk '/EdDSA \(Ed25519\)/ { v = $NF } END { print v }' "$out")
  if ! [[ $R_VERIFY =~ ^[0-9]+(\.[0-9]+)?$ ]] || ! awk -v v="$R_VERIFY" 'BEGIN { exit !(v > 0) }'; then
    cat "$out"
    die "cannot read verify/s from openssl speed"
  fi
}

# One libsodium verify run on the server's core; sets R_SODIUM (verify/s).
run_sodium() {
  local out=$TMP/sodium.out
  "${SRV_PIN[@]}" "$BIN/bench_ed25519_verify" "$SPEED_S" >"$out" 2>&1 ||
    { cat "$out"; die "bench_ed25519_verify"; }
  R_SODIUM=$(sed -n 's/^sodium_verify_per_s=\([0-9.]*\) .*/\1/p' "$out")
  [[ $R_SODIUM =~ ^[0-9]+(\.[0-9]+)?$ ]] || { cat "$out"; die "cannot read bench_ed25519_verify's rate"; }
}

# One load run; sets R_RPS R_P50 R_P99 R_CPU (server on-CPU us per Resolve, all
# its threads), R_THREADS (server threads that ran), R_WAIT (ms the server's
# threads were runnable but waiting for a CPU: for each other, or for other
# load on it), R_LOADCPU, R_LINE (the result line).
run_load() {
  local out=$TMP/load.out total=$((CALLS + WARMUP)) a0 d0 h0 a1 d1 h1 g0 g1
  a0=$(metric "$ALLOW") d0=$(metric "$DENY") h0=$(metric "$HEAD") g0=$(metric "$COMMITS")
  task_cpu >"$TMP/cpu0"
  if ! "${LOAD_PIN[@]}" "$BIN/bench_credstore_load" --target "$ADDR" --ca "$PKI/ca.crt" \
    --cert "$PKI/${EXEC_ID/\//-}.crt" --key "$PKI/${EXEC_ID/\//-}.key" \
    --grant-key "$KEYS/bench-intake.key" --issuer spiffe://airlock/intake/intake-0 \
    --audience spiffe://airlock/credstore/credstore-0 --principal acme/bench --scope ci-bench \
    --credential "$CRED" --destination "$DEST" --expect-value-file "$TMP/value" \
    --calls "$CALLS" --warmup "$WARMUP" --connections "$CONNS" --streams "$STREAMS" \
    >"$out" 2>&1; then
    sed 's/^/  | /' "$out"
    tail -n 5 "$TMP/server.log" | sed 's/^/  server | /'
    die "Resolve load: not every call was answered OK with the stored value (above)"
  fi
  task_cpu >"$TMP/cpu1"
  a1=$(metric "$ALLOW") d1=$(metric "$DENY") h1=$(metric "$HEAD") g1=$(metric "$COMMITS")
  R_BATCH=$(awk -v r=$((h1 - h0)) -v g=$((g1 - g0)) 'BEGIN { printf "%.1f", (g > 0 ? r / g : 0) }')
  ((a1 - a0 == total)) || die "$ALLOW grew by $((a1 - a0)), expected $total"
  ((d1 == d0)) || die "$DENY grew by $((d1 - d0)): some Resolve calls were denied"
  # Distinct audit_seq per call (checked by the load generator), all of them in one
  # gap-free run ending at the head: exactly one durable record per call, nothing else.
  local first last
  first=$(sed -n 's/.* audit_seq_first=\([0-9]*\).*/\1/p' "$out")
  last=$(sed -n 's/.* audit_seq_last=\([0-9]*\).*/\1/p' "$out")
  [[ -n $first && -n $last ]] || { cat "$out"; die "no audit_seq range from the load generator"; }
  ((last - first + 1 == total)) ||
    die "the calls' audit records span seq $first..$last, expected $total consecutive records"
  ((h1 == last)) || die "the audit head is $h1, the last call's record is $last"
  ((h1 > h0)) || die "the audit head did not advance ($h0 -> $h1)"
  R_LINE=$(grep '^result:' "$out") || { cat "$out"; die "no result line from the load generator"; }
  R_RPS=$(sed -n 's/.* resolves_per_s=\([0-9.]*\).*/\1/p' <<<"$R_LINE")
  R_P50=$(sed -n 's/.* p50_ms=\([0-9.]*\).*/\1/p' <<<"$R_LINE")
  R_P99=$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<<"$R_LINE")
  R_LOADCPU=$(sed -n 's/.* loader_cpu_pct=\([0-9]*\).*/\1/p' "$out")
  [[ -n $R_RPS && -n $R_P50 && -n $R_P99 ]] || { cat "$out"; die "cannot parse: $R_LINE"; }
  read -r R_CPU R_THREADS R_WAIT < <(awk -v n="$total" 'NR == FNR { c0[$1] = $2; w0[$1] = $3; next }
    { d = $2 - c0[$1]; w += $3 - w0[$1]; if (d > 0) { sum += d; thr++ } }
    END { printf "%.1f %d %.0f\n", sum / 1000 / n, thr, w / 1e6 }' "$TMP/cpu0" "$TMP/cpu1")
}

FS=$(df -PT "$TMP/data" 2>/dev/null | awk 'NR == 2 { print $2 }')
log "airlock-credstore: $BIN/airlock-credstore (pid $SRV_PID, $ADDR, ops port $OP)"
log "load: bench_credstore_load, $CONNS mTLS HTTP/2 connections x $STREAMS calls in flight;" \
  "$WARMUP warm-up + $CALLS timed calls per round, one distinct pre-signed grant per call"
log "baseline: $(openssl version | cut -d' ' -f1-2) 'openssl speed -seconds $SPEED_S ed25519'" \
  "(verify/s) on the server's core; best of $ROUNDS interleaved rounds each"
if ((BENCH_PIN)); then
  log "cpus: $(nproc); airlock-credstore, openssl speed and bench_ed25519_verify pinned to CPU 0," \
    "the load generator to CPU 1"
else
  log "cpus: $(nproc); no CPU pinning (BENCH_PIN=1 puts both server threads on one core)"
fi
log "store: SQLite WAL synchronous=FULL on ${FS:-unknown} ($TMP/data); each Resolve's audit" \
  "record is durable (group commit, fsync) before its answer"
log ""

"${LOAD_PIN[@]}" true # taskset works (fails loudly here otherwise)
BEST_RPS=0 BEST_VERIFY=0 BEST_SODIUM=0 ALL_RPS="" ALL_VERIFY="" ALL_SODIUM="" MIN_CPU=1e9 START=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
  run_speed
  run_sodium
  run_load
  ALL_RPS+="${ALL_RPS:+ }$(printf %.0f "$R_RPS")"
  ALL_VERIFY+="${ALL_VERIFY:+ }$(printf %.0f "$R_VERIFY")"
  ALL_SODIUM+="${ALL_SODIUM:+ }$(printf %.0f "$R_SODIUM")"
  if awk -v a="$R_VERIFY" -v b="$BEST_VERIFY" 'BEGIN { exit !(a > b) }'; then BEST_VERIFY=$R_VERIFY; fi
  if awk -v a="$R_SODIUM" -v b="$BEST_SODIUM" 'BEGIN { exit !(a > b) }'; then BEST_SODIUM=$R_SODIUM; fi
  if awk -v a="$R_RPS" -v b="$BEST_RPS" 'BEGIN { exit !(a > b) }'; then
    BEST_RPS=$R_RPS BEST_P50=$R_P50 BEST_P99=$R_P99 BEST_LINE=$R_LINE BEST_THREADS=$R_THREADS
    BEST_LOADCPU=$R_LOADCPU BEST_CPU=$R_CPU BEST_WAIT=$R_WAIT
  fi
  MIN_CPU=$(awk -v a="$R_CPU" -v b="$MIN_CPU" 'BEGIN { print (a < b ? a : b) }')
  log "round $r: resolves/s $(printf %.0f "$R_RPS") (p50 $R_P50 ms, p99 $R_P99 ms)," \
    "ed25519 verify/s $(printf %.0f "$R_VERIFY") (libsodium $(printf %.0f "$R_SODIUM")), server ${R_CPU} us CPU/resolve on $R_THREADS" \
    "thread(s), waited ${R_WAIT} ms for its CPU, $R_BATCH records per group commit" \
    "($((SECONDS - START))s)"
done
log ""

# The whole chain, every record of every round, must verify.
"$CTL" audit verify --addr "$ADDR" --timeout 600 >"$TMP/verify.out" 2>&1 ||
  { cat "$TMP/verify.out"; die "airlockctl audit verify: the audit chain does not verify"; }
CHECKED=$(sed -n 's/.*intact: \([0-9]*\) record.*/\1/p' "$TMP/verify.out")
[[ -n $CHECKED ]] || { cat "$TMP/verify.out"; die "cannot read airlockctl audit verify's answer"; }

# A clean stop: SIGTERM drains and exits 0, with no sanitizer report (ASan builds).
kill -TERM "$SRV_PID"
rc=0
wait "$SRV_PID" || rc=$?
SRV_PID=""
((rc == 0)) || { tail -n 20 "$TMP/server.log"; die "airlock-credstore exited with status $rc"; }
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$TMP/server.log"; then
  grep -m 5 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$TMP/server.log"
  die "sanitizer report in airlock-credstore's log"
fi

THREADS=${BEST_THREADS:-1}
((THREADS >= 1)) || THREADS=1
# CPU cores the server used in the fastest round: on-CPU time per Resolve (all
# threads) x Resolves per second; the ratio divides by it when it is over 1.
CORES=$(awk -v c="$BEST_CPU" -v r="$BEST_RPS" 'BEGIN { printf "%.2f", c * r / 1e6 }')
PER_CORE=$(awk -v a="$BEST_RPS" -v k="$CORES" 'BEGIN { printf "%.1f", a / (k > 1 ? k : 1) }')
PER_THREAD=$(awk -v a="$BEST_RPS" -v t="$THREADS" 'BEGIN { printf "%.1f", a / t }')
RATIO=$(awk -v a="$PER_CORE" -v b="$BEST_VERIFY" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
SODIUM_RATIO=$(awk -v a="$PER_CORE" -v b="$BEST_SODIUM" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
CAP=$(awk -v c="$MIN_CPU" 'BEGIN { printf "%.0f", (c > 0 ? 1e6 / c : 0) }')
CPU_RATIO=$(awk -v a="$CAP" -v b="$BEST_VERIFY" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
TOTAL_CALLS=$((ROUNDS * (CALLS + WARMUP)))

log "fastest round: $BEST_LINE"
log "resolves/s per round: $ALL_RPS; ed25519 verify/s per round: $ALL_VERIFY (openssl speed)," \
  "$ALL_SODIUM (libsodium, what the credstore verifies with)"
log "server threads: $THREADS used CPU (the event loop: gRPC, grant checks, store reads; the" \
  "commit thread: audit group commits); together they used $CORES cores in the fastest round," \
  "so resolves/s per core = $PER_CORE (resolves/s / $THREADS threads = $PER_THREAD)"
BUSY=$(awk -v c="$BEST_CPU" -v r="$BEST_RPS" 'BEGIN { printf "%.0f", c * r / 1e4 }')
log "server CPU per Resolve: $MIN_CPU us (lowest round, all threads) -> one-core capacity" \
  "~$CAP resolves/s, $CPU_RATIO x the verify rate"
log "server busy: ~$BUSY% of one core in the fastest round (${BEST_CPU} us x resolves/s; over" \
  "100% when its two threads ran at once); its threads waited ${BEST_WAIT} ms in all for a CPU" \
  "(for each other when pinned to one core, and for other load on the machine)"
log "load generator CPU: ${BEST_LOADCPU:-?}% of its core in the fastest round"
log "verified: every call OK with the stored value and its own audit record; $ALLOW grew by" \
  "exactly the calls made, $DENY by 0; airlockctl audit verify: chain intact, $CHECKED" \
  "records ($TOTAL_CALLS resolves); clean SIGTERM exit"
log "reference (not measured here): OpenBao KV read, published ~27,000 req/s (no signature check)"
log "ratio against libsodium's verify rate (the floor of the code as built): $SODIUM_RATIO"
log "ratio resolves_per_s per core / ed25519_verify_per_s = $RATIO (target >= $TARGET_RATIO);" \
  "p99 $BEST_P99 ms (target <= $TARGET_P99_MS ms)"
awk -v r="$RATIO" -v t="$TARGET_RATIO" 'BEGIN { exit !(r < t) }' &&
  log "note: ratio below the target of $TARGET_RATIO"
awk -v p="$BEST_P99" -v t="$TARGET_P99_MS" 'BEGIN { exit !(p > t) }' &&
  log "note: p99 above the target of $TARGET_P99_MS ms"
printf 'summary: ratio=%s resolves_per_s=%.1f p50_ms=%s p99_ms=%s ed25519_verify_per_s=%.1f sodium_verify_per_s=%.1f sodium_ratio=%s calls=%d server_threads=%d server_cores=%s\n' \
  "$RATIO" "$BEST_RPS" "$BEST_P50" "$BEST_P99" "$BEST_VERIFY" "$BEST_SODIUM" "$SODIUM_RATIO" "$CALLS" "$THREADS" "$CORES"
