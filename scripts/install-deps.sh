#!/usr/bin/env bash
# Installs the Debian 12 packages Airlock needs to build, run and test.
# Usage: scripts/install-deps.sh [build|test|bench|local]
#   test = build + test-only tools (iproute2: the egress tests' network
#   namespaces; curl: a real client inside the sandboxes; buildah and
#   debootstrap: the container images tests/integration/helm.sh builds with
#   deploy/docker/build.sh); bench = test + the
#   benchmarks' baselines (squid, the forward proxy tests/bench/egress.sh
#   compares the egress proxy with); local = build + what deploy/local/up.sh
#   runs (Node.js and npm for the example MCP server)
# Idempotent: only missing packages are installed; apt-get update runs only
# when something is missing.
set -euo pipefail

what=${1:-build}
build_pkgs=(
  build-essential cmake pkg-config git ca-certificates openssl
  libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev libssl-dev libev-dev
  libconfig-dev libsqlite3-dev libseccomp-dev libc-ares-dev
  libhttp-parser-dev libjansson-dev libsodium-dev
)
test_pkgs=(
  libcunit1-dev clang libclang-rt-14-dev nghttp2-client nghttp2-server
  python3-grpcio python3-protobuf protobuf-compiler nodejs npm iproute2 procps curl sqlite3
  bubblewrap nghttp2-proxy buildah debootstrap
)
bench_pkgs=(squid)
local_pkgs=(nodejs npm curl)

pkgs=("${build_pkgs[@]}")
[[ $what == test || $what == bench ]] && pkgs+=("${test_pkgs[@]}")
[[ $what == bench ]] && pkgs+=("${bench_pkgs[@]}")
[[ $what == local ]] && pkgs+=("${local_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node/npm may come from elsewhere than Debian (a preinstalled Node.js): accept those.
if [[ " ${missing[*]} " == *" nodejs "* ]] && command -v node >/dev/null; then
  missing=("${missing[@]/nodejs/}")
fi
if [[ " ${missing[*]} " == *" npm "* ]] && command -v npm >/dev/null; then
  missing=("${missing[@]/npm/}")
fi
read -r -a missing <<<"${missing[*]:-}"
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
