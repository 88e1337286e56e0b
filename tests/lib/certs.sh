# shellcheck shell=bash
# Development certificates for tests (source this file; bash).
#
#   certs_init HOME            HOME/pki/ca.{crt,key} and the identities
#                              test/testsvc, client/client, admin/admin
#   certs_reissue HOME ROLE NAME
#                              a fresh key and certificate (new serial) for an
#                              existing identity, same CA
#   certs_foreign HOME         HOME/foreign/{ca,client}.{crt,key}: a second,
#                              unrelated CA and a client certificate it signed
#                              (same SAN shape, spiffe://airlock/client/client)
#
# Uses $BIN/airlockctl (AIRLOCK_HOME=HOME) when it is built and works, else
# openssl with the same shape: ECDSA P-256, SHA-256, one URI SAN
# spiffe://airlock/ROLE/NAME, and for servers DNS:localhost, IP:127.0.0.1,
# IP:::1. CERTS_TOOL tells which one made the files ("airlockctl" or "openssl").
# Every function returns non-zero on failure and says why on stderr.

CERTS_TOOL=""

_certs_ctl() {
  local ctl=${BIN:-/work/main/build/bin}/airlockctl
  [[ -x $ctl ]] || return 1
  "$ctl" --help >/dev/null 2>&1 || return 1
  echo "$ctl"
}

# _certs_openssl_leaf ROLE NAME SERVER(0|1) CA_BASE OUT_BASE
_certs_openssl_leaf() {
  local role=$1 name=$2 server=$3 ca=$4 out=$5 ext san eku
  ext=$(mktemp)
  san="URI:spiffe://airlock/$role/$name"
  eku="clientAuth"
  if ((server)); then
    san="$san,DNS:localhost,IP:127.0.0.1,IP:::1"
    eku="serverAuth,clientAuth"
  fi
  cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$eku
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  # Write to temporary names, then rename: a reloading server never sees a
  # key that does not match its certificate for longer than the two renames.
  if openssl ecparam -name prime256v1 -genkey -noout -out "$out.key.tmp" 2>/dev/null &&
     openssl req -new -key "$out.key.tmp" -subj "/O=Airlock/CN=$role-$name" \
       -out "$out.csr.tmp" 2>/dev/null &&
     openssl x509 -req -in "$out.csr.tmp" -CA "$ca.crt" -CAkey "$ca.key" \
       -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 -extfile "$ext" \
       -out "$out.crt.tmp" 2>/dev/null; then
    chmod 600 "$out.key.tmp"
    mv -f "$out.key.tmp" "$out.key" && mv -f "$out.crt.tmp" "$out.crt"
    rm -f "$out.csr.tmp" "$ext"
    return 0
  fi
  rm -f "$out.key.tmp" "$out.csr.tmp" "$out.crt.tmp" "$ext"
  echo "certs: openssl failed to issue $role/$name" >&2
  return 1
}

# _certs_openssl_ca BASE CN
_certs_openssl_ca() {
  local base=$1 cn=$2
  openssl ecparam -name prime256v1 -genkey -noout -out "$base.key" 2>/dev/null &&
    chmod 600 "$base.key" &&
    openssl req -new -x509 -key "$base.key" -sha256 -days 30 -subj "/O=Airlock/CN=$cn" \
      -set_serial "0x$(openssl rand -hex 16)" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$base.crt" 2>/dev/null ||
    { echo "certs: openssl failed to make CA $cn" >&2; return 1; }
}

certs_init() {
  local home=$1 ctl
  mkdir -p "$home/pki" || return 1
  if ctl=$(_certs_ctl); then
    if AIRLOCK_HOME=$home "$ctl" certs init \
         --names test/testsvc,client/client,admin/admin >"$home/certs.log" 2>&1; then
      CERTS_TOOL=airlockctl
      return 0
    fi
    echo "certs: airlockctl certs init failed, using openssl:" >&2
    cat "$home/certs.log" >&2
  fi
  _certs_openssl_ca "$home/pki/ca" "Airlock Dev CA" || return 1
  _certs_openssl_leaf test testsvc 1 "$home/pki/ca" "$home/pki/test-testsvc" &&
    _certs_openssl_leaf client client 0 "$home/pki/ca" "$home/pki/client-client" &&
    _certs_openssl_leaf admin admin 0 "$home/pki/ca" "$home/pki/admin-admin" ||
    return 1
  CERTS_TOOL=openssl
}

certs_reissue() {
  local home=$1 role=$2 name=$3 ctl server=1
  [[ $role == client || $role == admin ]] && server=0
  if [[ $CERTS_TOOL == airlockctl ]] && ctl=$(_certs_ctl); then
    AIRLOCK_HOME=$home "$ctl" certs issue "$role" "$name" --force >>"$home/certs.log" 2>&1 &&
      return 0
    echo "certs: airlockctl certs issue failed, using openssl" >&2
  fi
  _certs_openssl_leaf "$role" "$name" "$server" "$home/pki/ca" "$home/pki/$role-$name"
}

certs_foreign() {
  local home=$1
  mkdir -p "$home/foreign" || return 1
  _certs_openssl_ca "$home/foreign/ca" "Airlock Dev CA" &&
    _certs_openssl_leaf client client 0 "$home/foreign/ca" "$home/foreign/client"
}

# certs_serial FILE: the certificate's serial, upper-case hex without colons.
certs_serial() {
  openssl x509 -in "$1" -noout -serial | sed 's/^serial=//' | tr a-f A-F
}
