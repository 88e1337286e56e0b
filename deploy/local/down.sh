#!/usr/bin/env bash
# Stops the services deploy/local/up.sh started (SIGTERM: they drain; SIGKILL
# after 15 s), edges first: the gateway (its last audit batch still reaches
# credstore), relay, example MCP server, executors, intake, credstore last.
# Usage: deploy/local/down.sh [--quiet]
set -uo pipefail
AIRLOCK_HOME=${AIRLOCK_HOME:-$HOME/.airlock}
RUN=$AIRLOCK_HOME/run
quiet=0
[[ ${1:-} == --quiet ]] && quiet=1
shopt -s nullglob
ordered=()
for name in gateway relay mcp-example; do
  [[ -f $RUN/$name.pid ]] && ordered+=("$RUN/$name.pid")
done
for pidf in "$RUN"/executor-*.pid "$RUN"/*.pid; do
  [[ " ${ordered[*]} " == *" $pidf "* || $pidf == "$RUN/credstore.pid" ]] || ordered+=("$pidf")
done
[[ -f $RUN/credstore.pid ]] && ordered+=("$RUN/credstore.pid")
for pidf in "${ordered[@]}"; do
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
