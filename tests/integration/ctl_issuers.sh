#!/usr/bin/env bash
# Integration: `airlockctl issuers` on real key files and credstore configs: an
# entry carries the key id `keys id` derives; `ls` loads a config exactly as
# airlock-credstore does (the credstore accepts the same file) and prints every
# scope; bad keys, bad patterns and unknown keys are refused with clear errors.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
T_DIR=$(mktemp -d)
source "$ROOT/tests/lib/server.sh"
trap 'srv_cleanup; rm -rf "$T_DIR"' EXIT
export AIRLOCK_HOME=$T_DIR/home
CTL=$BIN/airlockctl

"$CTL" keys gen-grant-key intake-0 >/dev/null 2>&1 || { t_fail issuers-setup "gen-grant-key failed"; exit 1; }
PUB=$AIRLOCK_HOME/keys/intake-0.pub
KID=$("$CTL" keys id "$PUB" 2>/dev/null | awk '{print $NF}' | tail -1)

"$CTL" issuers entry --issuer 'spiffe://airlock/intake/*' --public-key "$PUB" \
  --principal 'team-a/**' --pool ci --pool build --credential 'ci/*' >"$T_DIR/entry" 2>"$T_DIR/err"
if grep -q "key_id = \"$KID\"" "$T_DIR/entry" && [[ -n $KID ]]; then
  t_pass issuers-entry-key-id
else
  t_fail issuers-entry-key-id "entry does not carry key id '$KID': $(cat "$T_DIR/entry" "$T_DIR/err")"
fi
"$CTL" certs init >/dev/null 2>&1 && "$CTL" certs issue credstore credstore-0 --server >/dev/null 2>&1 ||
  "$CTL" certs issue credstore credstore-0 >/dev/null 2>&1
CERTS=$AIRLOCK_HOME/certs
"$CTL" keys gen-master "$T_DIR/master.key" >/dev/null 2>&1
{
  echo "data_dir = \"$T_DIR/data\";"
  echo "master_key_file = \"$T_DIR/master.key\";"
  echo "tls = { cert_file = \"$CERTS/credstore-credstore-0.crt\"; key_file = \"$CERTS/credstore-credstore-0.key\"; ca_file = \"$CERTS/ca.crt\"; };"
  echo "issuers = ("
  cat "$T_DIR/entry"
  echo ");"
} >"$T_DIR/cs.cfg"
if "$CTL" issuers ls --config "$T_DIR/cs.cfg" >"$T_DIR/ls" 2>&1 &&
   grep -q "key id *$KID" "$T_DIR/ls" && grep -q "pools *ci build" "$T_DIR/ls" &&
   grep -q "principals *team-a/\*\*" "$T_DIR/ls" && grep -q "routes *(none)" "$T_DIR/ls"; then
  t_pass issuers-ls-scopes
else
  t_fail issuers-ls-scopes "$(cat "$T_DIR/ls")"
fi
if [[ -x $BIN/airlock-credstore ]] && "$BIN/airlock-credstore" --config "$T_DIR/cs.cfg" --check-config >/dev/null 2>&1; then
  t_pass issuers-entry-accepted-by-credstore
else
  t_fail issuers-entry-accepted-by-credstore "$("$BIN/airlock-credstore" --config "$T_DIR/cs.cfg" --check-config 2>&1 | tail -1)"
fi
sed 's/pools = /poolz = /' "$T_DIR/cs.cfg" >"$T_DIR/bad.cfg"
out=$("$CTL" issuers ls --config "$T_DIR/bad.cfg" 2>&1); rc=$?
if ((rc == 1)) && grep -q "bad.cfg:[0-9]*: issuers\[0\].poolz: unknown key" <<<"$out"; then
  t_pass issuers-ls-unknown-key
else
  t_fail issuers-ls-unknown-key "rc=$rc: $out"
fi
sed "s|public_key_file = \"[^\"]*\"|public_key_file = \"$T_DIR/missing.pub\"|" "$T_DIR/cs.cfg" >"$T_DIR/nokey.cfg"
out=$("$CTL" issuers ls --config "$T_DIR/nokey.cfg" 2>&1); rc=$?
if ((rc == 1)) && grep -q "missing.pub" <<<"$out"; then
  t_pass issuers-ls-missing-key
else
  t_fail issuers-ls-missing-key "rc=$rc: $out"
fi
out=$("$CTL" issuers entry --issuer 'spiffe://airlock/intake/a' --public-key "$AIRLOCK_HOME/keys/intake-0.key" 2>&1); rc=$?
if ((rc == 1)) && grep -q "not an Ed25519 public key" <<<"$out" && ! grep -q "BEGIN" <<<"$out"; then
  t_pass issuers-entry-private-key-refused
else
  t_fail issuers-entry-private-key-refused "rc=$rc: $out"
fi
out=$("$CTL" issuers entry --issuer 'spiffe://airlock/intake/a' --public-key "$PUB" --pool 'a"b' 2>&1); rc=$?
if ((rc == 2)) && grep -q "not a valid pattern" <<<"$out"; then
  t_pass issuers-entry-bad-pattern
else
  t_fail issuers-entry-bad-pattern "rc=$rc: $out"
fi
out=$("$CTL" issuers entry --issuer 'intake-0' --public-key "$PUB" 2>&1); rc=$?
((rc == 2)) && t_pass issuers-entry-bad-issuer || t_fail issuers-entry-bad-issuer "rc=$rc: $out"
((T_FAILED == 0))
