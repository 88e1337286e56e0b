#!/usr/bin/env bash
# Benchmark: start-to-exit latency of /bin/true in our sandbox against
# bubblewrap, in the same run.
#
# Ours: airlock-sandbox --repeat N --timings FILE -- /bin/true. Each run is a
# complete job as the executor runs it: job cgroups created (memory, pids,
# cpu accounting) and limits written, pipes, one clone with user, pid, mount,
# net, ipc and uts namespaces, id maps, cgroup namespace, the full filesystem
# (tmpfs root, image binds, generated /etc, /dev, devpts, /dev/shm, /tmp,
# /workspace, /proc), privileges dropped, rlimits, seccomp, exec, exit, reap,
# cgroup counters read and cgroups removed, result built. Timed in-process
# from sb_start() to on_exit.
#
# Baseline: bwrap --unshare-all --die-with-parent with /usr bound read-only,
# the merged-/usr symlinks, --proc, --dev and a /tmp tmpfs, timed by a small C
# driver (compiled here) from posix_spawn() to waitpid(): both sides are a C
# process starting a sandboxed /bin/true and reaping it, no shell in between.
#
# Rounds alternate (ours, bwrap, ours, ...) so that load from elsewhere on
# the machine hits both alike; all samples are pooled. The script only
# measures: it exits non-zero only when something broke (build, a run that
# failed), never because of a timing.
#
# Usage: tests/bench/sandbox.sh
# Environment (defaults in brackets):
#   BIN           directory holding airlock-sandbox [build-rel/bin; a Release
#                 build is made there when needed]
#   BENCH_N       runs per side [300]
#   BENCH_ROUNDS  alternating rounds the runs are split into [3]
#   BENCH_WARMUP  unmeasured runs per side first [20]
# Needs root and bwrap (scripts/install-deps.sh test). The last line is:
#   summary: ratio=<ours_p50/bwrap_p50> ours_p50_ms=... ours_p99_ms=...
#            bwrap_p50_ms=... bwrap_p99_ms=...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/build-rel/bin}
N=${BENCH_N:-300}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-20}
log() { echo "sandbox-bench: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "needs root (user namespaces with id maps, cgroups)"
  exit 1
fi
BWRAP=$(command -v bwrap || true)
if [[ -z $BWRAP ]]; then
  log "bwrap is not installed (scripts/install-deps.sh test installs bubblewrap)"
  exit 1
fi
if [[ $BIN == "$ROOT/build-rel/bin" ]]; then
  BLOG=$ROOT/build-rel/bench-sandbox-build.log
  mkdir -p "$ROOT/build-rel"
  if ! { cmake -S "$ROOT" -B "$ROOT/build-rel" -DCMAKE_BUILD_TYPE=Release >"$BLOG" 2>&1 &&
    make -C "$ROOT/build-rel" -j"$(nproc)" --no-print-directory airlock-sandbox >>"$BLOG" 2>&1; }; then
    log "building Release into build-rel failed; see $BLOG"
    exit 1
  fi
fi
SB=$BIN/airlock-sandbox
[[ -x $SB ]] || { log "$SB is not built"; exit 1; }

T_DIR=$(mktemp -d /tmp/sb-bench.XXXXXX)
trap 'rm -rf "$T_DIR"' EXIT
chmod 711 "$T_DIR"

# The baseline's driver: posix_spawn + waitpid, one line of microseconds per run.
cat >"$T_DIR/spawn.c" <<'EOF'
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
extern char **environ;
int main(int argc, char **argv)
{
    int n = atoi(argv[1]);
    FILE *out = fopen(argv[2], "w");
    for (int i = 0; i < n; i++) {
        struct timespec a, b;
        pid_t pid;
        int st;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (posix_spawn(&pid, argv[3], NULL, NULL, argv + 3, environ) != 0 ||
            waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "run %d of %s failed\n", i, argv[3]);
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        fprintf(out, "%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000 +
                                   (b.tv_nsec - a.tv_nsec) / 1000);
    }
    return fclose(out) != 0;
}
EOF
cc -O2 -o "$T_DIR/spawn" "$T_DIR/spawn.c"

# Our job: limits set (so the memory, pids and cpu-accounting cgroups are made
# and written), a workspace directory owned by the sandbox user.
NAME=bench-$$
HOST_UID=$("$SB" --name "$NAME" --probe | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["host_uid"])')
mkdir "$T_DIR/ws"
chown "$HOST_UID:$HOST_UID" "$T_DIR/ws"
chmod 700 "$T_DIR/ws"
OURS=("$SB" --name "$NAME" --log-level error --workspace "$T_DIR/ws" --memory 256M --pids 256
      --cpu-ms 10000 --wall-ms 10000 --output-bytes 1M --file-size 64M --open-files 256)
BW=("$BWRAP" --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin
    --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc
    --dev /dev --tmpfs /tmp /bin/true)

ours() { # ours COUNT FILE
  local rc=0
  "${OURS[@]}" --repeat "$1" --timings "$2" --result-fd 3 -- /bin/true 3>"$T_DIR/last.json" || rc=$?
  if ((rc != 0)); then
    log "airlock-sandbox failed (status $rc): $(cat "$T_DIR/last.json")"
    exit 1
  fi
}
bwrap_runs() { # bwrap_runs COUNT FILE
  "$T_DIR/spawn" "$1" "$2" "${BW[@]}" || { log "bwrap failed"; exit 1; }
}

log "warm-up: $WARMUP runs each"
ours "$WARMUP" "$T_DIR/warm"
bwrap_runs "$WARMUP" "$T_DIR/warm"
per=$(((N + ROUNDS - 1) / ROUNDS))
: >"$T_DIR/ours.us"
: >"$T_DIR/bwrap.us"
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r/$ROUNDS: $per runs each"
  ours "$per" "$T_DIR/o"
  cat "$T_DIR/o" >>"$T_DIR/ours.us"
  bwrap_runs "$per" "$T_DIR/b"
  cat "$T_DIR/b" >>"$T_DIR/bwrap.us"
done

/usr/bin/python3 - "$T_DIR/ours.us" "$T_DIR/bwrap.us" <<'EOF'
import sys
def stats(path):
    v = sorted(int(x) for x in open(path) if x.strip())
    pct = lambda p: v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] / 1000
    return len(v), pct(50), pct(99), v[0] / 1000
n_o, o50, o99, omin = stats(sys.argv[1])
n_b, b50, b99, bmin = stats(sys.argv[2])
print(f"airlock-sandbox: {n_o} runs  p50 {o50:.2f} ms  p99 {o99:.2f} ms  min {omin:.2f} ms")
print(f"bwrap:           {n_b} runs  p50 {b50:.2f} ms  p99 {b99:.2f} ms  min {bmin:.2f} ms")
print(f"ratio (p50, ours/bwrap): {o50 / b50:.2f}  (target <= 0.80)")
print(f"summary: ratio={o50 / b50:.2f} ours_p50_ms={o50:.2f} ours_p99_ms={o99:.2f} "
      f"bwrap_p50_ms={b50:.2f} bwrap_p99_ms={b99:.2f}")
EOF
