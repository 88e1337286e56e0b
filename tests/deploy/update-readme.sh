#!/usr/bin/env bash
# Regenerates the "Chart parameters" table at the end of README.md from the
# "## @param" comments of helm/airlock/values.yaml, with
# @bitnami/readme-generator-for-helm (npm, tests/deploy's lock file).
# tests/integration/helm.sh fails while the table is not current.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[[ -d $HERE/node_modules/@bitnami/readme-generator-for-helm ]] ||
  (cd "$HERE" && npm ci --silent --no-audit --no-fund)
node "$HERE/node_modules/@bitnami/readme-generator-for-helm/bin/index.js" \
  --config "$HERE/readme-generator.json" --values "$ROOT/helm/airlock/values.yaml" \
  --readme "$ROOT/README.md"
