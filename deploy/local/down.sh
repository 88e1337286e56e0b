#!/usr/bin/env bash
# Stops the services deploy/local/up.sh started (SIGTERM: they drain; SIGKILL
# after 15 s). Usage: deploy/local/down.sh [--quiet]
set -uo pipefail
AIRLOCK_HOME=${AIRLOCK_HOME:-$HOME/.airlock}
RUN=$AIRLOCK_HOME/run
quiet=0
[[ ${1:-} == --quiet ]] && quiet=1
shopt -s nullglob
for pidf in "$RUN"/*.pid; do
  name=$(basename "$pidf" .pid)
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    ((quiet)) || echo "stopped $name (pid $pid)"
  fi
  rm -f "$pidf"
done
exit 0
