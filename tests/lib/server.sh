# shellcheck shell=bash
# Starting and checking Airlock servers in integration and interop tests
# (source this file; bash). Results are printed as PASS/FAIL/SKIP lines.
#
#   t_pass NAME / t_fail NAME REASON / t_skip NAME REASON   print a result line
#   t_result NAME CMD...     runs CMD; PASS when it exits 0, else FAIL with its
#                            last output line as the reason
#   srv_start VAR BINARY ARGS...
#                            starts $BIN/BINARY with --listen and --ops_listen on
#                            127.0.0.1 port 0 plus ARGS; sets VAR_PID, VAR_PORT,
#                            VAR_OPS and VAR_ERR (its stderr file); returns
#                            non-zero (and prints the log) if it did not start
#   srv_check VAR            prints PASS/FAIL "VAR-alive" (process up, /healthz
#                            answers) and "VAR-sanitizers" (no sanitizer report
#                            in its stderr)
#   srv_stop_check VAR       SIGTERM; PASS/FAIL "VAR-exit": exits 0 in time with
#                            no sanitizer or leak report
#   srv_idle_check VAR       PASS/FAIL "VAR-idle": once clients are gone, the
#                            airlock_grpc_streams and airlock_grpc_connections
#                            gauges drop to 0 (no stream or connection leaked)
#   srv_cleanup              kills what is still running (use in an EXIT trap)
#
# Needs T_DIR (a temporary directory) and BIN. T_FAILED counts FAIL lines.

T_FAILED=0
SRV_VARS=()
# Sanitized builds: report and stop at the first error when not set by tests/run.sh.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [[ -z ${LSAN_OPTIONS:-} ]]; then
  LSAN_OPTIONS=suppressions=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lsan.supp
  export LSAN_OPTIONS
fi
# Generous: sanitized builds are slow and CI machines are busy.
SRV_START_TIMEOUT=${SRV_START_TIMEOUT:-60}
SRV_STOP_TIMEOUT=${SRV_STOP_TIMEOUT:-60}

t_pass() { echo "PASS $1"; }
t_fail() { echo "FAIL $1: $2"; T_FAILED=$((T_FAILED + 1)); }
t_skip() { echo "SKIP $1: $2"; }
t_result() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then
    t_pass "$name"
    [[ -n $out ]] && echo "    $(tail -n 1 <<<"$out")"
  else
    t_fail "$name" "$(tail -n 1 <<<"$out")"
  fi
}

# Lines that mean a sanitizer found something.
SRV_SANITIZER_RE='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: .*Sanitizer'

srv_start() {
  local var=$1 bin=$2; shift 2
  local err="$T_DIR/$var.err" pid line i
  "$BIN/$bin" --listen=127.0.0.1:0 --ops_listen=127.0.0.1:0 "$@" </dev/null \
    >"$T_DIR/$var.out" 2>"$err" &
  pid=$!
  SRV_VARS+=("$var")
  printf -v "${var}_PID" %s "$pid"
  printf -v "${var}_ERR" %s "$err"
  for ((i = 0; i < SRV_START_TIMEOUT * 10; i++)); do
    line=$(grep -m1 'event=service.start ' "$err" 2>/dev/null) && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $line ]]; then
    echo "srv_start: $bin $* did not start; its log:" >&2
    sed 's/^/  | /' "$err" >&2
    return 1
  fi
  printf -v "${var}_PORT" %s "$(sed -nE 's/.* grpc_port=([0-9]+).*/\1/p' <<<"$line")"
  printf -v "${var}_OPS" %s "$(sed -nE 's/.* ops_port=([0-9]+).*/\1/p' <<<"$line")"
}

# srv_sanitizer_free VAR: no sanitizer report in the server's stderr.
srv_sanitizer_free() {
  local err=${1}_ERR
  if grep -qE "$SRV_SANITIZER_RE" "${!err}"; then
    grep -m1 -E "$SRV_SANITIZER_RE" "${!err}"
    return 1
  fi
}

srv_check() {
  local var=$1 pid=${1}_PID ops=${1}_OPS err=${1}_ERR
  if ! kill -0 "${!pid}" 2>/dev/null; then
    t_fail "$var-alive" "server process ${!pid} has exited; log tail: $(tail -n 3 "${!err}" | tr '\n' ' ')"
  elif ! curl -sf --max-time 30 "http://127.0.0.1:${!ops}/healthz" >/dev/null; then
    t_fail "$var-alive" "/healthz on ops port ${!ops} did not answer"
  else
    t_pass "$var-alive"
  fi
  t_result "$var-sanitizers" srv_sanitizer_free "$var"
}

srv_stop_check() {
  local var=$1 pid=${1}_PID err=${1}_ERR rc i
  if ! kill -0 "${!pid}" 2>/dev/null; then
    wait "${!pid}" 2>/dev/null
    t_fail "$var-exit" "server had already exited (status $?)"
    return
  fi
  kill -TERM "${!pid}"
  for ((i = 0; i < SRV_STOP_TIMEOUT * 10; i++)); do
    kill -0 "${!pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${!pid}" 2>/dev/null; then
    kill -KILL "${!pid}" 2>/dev/null
    wait "${!pid}" 2>/dev/null
    t_fail "$var-exit" "still running ${SRV_STOP_TIMEOUT}s after SIGTERM"
    return
  fi
  wait "${!pid}"
  rc=$?
  if grep -qE "$SRV_SANITIZER_RE" "${!err}"; then
    t_fail "$var-exit" "$(grep -m1 -E "$SRV_SANITIZER_RE" "${!err}")"
  elif ((rc != 0)); then
    t_fail "$var-exit" "exit status $rc after SIGTERM; log tail: $(tail -n 2 "${!err}" | tr '\n' ' ')"
  else
    t_pass "$var-exit"
  fi
}

# srv_metric VAR NAME: value of an unlabelled metric from the ops port.
srv_metric() {
  local ops=${1}_OPS
  curl -sf --max-time 30 "http://127.0.0.1:${!ops}/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

srv_idle_check() {
  local var=$1 i s c
  for ((i = 0; i < 300; i++)); do
    s=$(srv_metric "$var" airlock_grpc_streams)
    c=$(srv_metric "$var" airlock_grpc_connections)
    [[ $s == 0 && $c == 0 ]] && break
    sleep 0.1
  done
  if [[ $s == 0 && $c == 0 ]]; then
    t_pass "$var-idle"
  else
    t_fail "$var-idle" "30s after the clients left: airlock_grpc_streams=${s:-?} airlock_grpc_connections=${c:-?}"
  fi
}

srv_cleanup() {
  local var pid
  for var in "${SRV_VARS[@]}"; do
    pid=${var}_PID
    kill -KILL "${!pid}" 2>/dev/null
  done
  wait 2>/dev/null
}

# srv_dump_logs: the servers' stderr (for the suite log when something failed).
srv_dump_logs() {
  local var err
  for var in "${SRV_VARS[@]}"; do
    err=${var}_ERR
    echo "--- $var stderr (last 40 lines)"
    tail -n 40 "${!err}" 2>/dev/null
  done
}

# logs_sanitizer_check NAME: one check, NAME-sanitizers, over every server log
# ($T_DIR/*.err except the Python driver's own python.err): it fails naming
# each log that holds a sanitizer report and the report's first line.
logs_sanitizer_check() {
  local f bad=""
  for f in "$T_DIR"/*.err; do
    [[ -e $f && $f != "$T_DIR/python.err" ]] || continue
    if grep -qE "$SRV_SANITIZER_RE" "$f"; then
      bad+="$(basename "$f"): $(grep -m1 -E "$SRV_SANITIZER_RE" "$f") "
    fi
  done
  if [[ -n $bad ]]; then
    t_fail "$1-sanitizers" "$bad"
  else
    t_pass "$1-sanitizers"
  fi
}
