"""Integration checks of airlock-credstore over mTLS (grpcio, Debian's python3-grpcio).

Run with /usr/bin/python3 by credstore.sh, which makes the PKI and the message
classes and passes in:
  BIN          directory with airlock-credstore and airlockctl
  GEN_DIR      protoc --python_out output (airlock/v1/*_pb2.py)
  T_DIR        scratch directory (servers' data dirs, configs and logs live here)
  AIRLOCK_HOME directory with pki/ and keys/ from `airlockctl certs init`
  PIDS_FILE    every server pid started is appended here (credstore.sh's trap kills them)
  MOUNTS_FILE  every tmpfs mounted is appended here (the trap unmounts them)
Servers' stderr files are T_DIR/*.err; credstore.sh scans them for sanitizer reports.
Prints PASS/FAIL/SKIP lines; exits 1 if any check failed. No timing assertions.
"""

import base64
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback

import grpc

ENV = os.environ
BIN = ENV["BIN"]
T_DIR = ENV["T_DIR"]
HOME = ENV["AIRLOCK_HOME"]
PKI = os.path.join(HOME, "pki")
KEYS = os.path.join(HOME, "keys")
SC = grpc.StatusCode
CALL_TIMEOUT = 60.0
START_TIMEOUT = 60.0
failed = 0


def load(name, rel):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ENV["GEN_DIR"], rel))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# The generated modules import each other as airlock.v1.x_pb2: make GEN_DIR importable.
sys.path.insert(0, ENV["GEN_DIR"])
from airlock.v1 import common_pb2 as C  # noqa: E402
from airlock.v1 import grant_pb2 as G  # noqa: E402
from airlock.v1 import credstore_pb2 as P  # noqa: E402

RESOLVE = P.AUDIT_ACTION_RESOLVE
DENY = P.AUDIT_DECISION_DENY
ALLOW = P.AUDIT_DECISION_ALLOW


class Skip(Exception):
    pass


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def check(name, fn):
    global failed
    try:
        fn()
        print(f"PASS {name}", flush=True)
    except Skip as e:
        print(f"SKIP {name}: {e}", flush=True)
    except Exception as e:
        failed += 1
        why = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, grpc.RpcError):
            why = f"unexpected RPC error {e.code()} {e.details()!r} {error_detail(e)}"
        print(f"FAIL {name}: {why}", flush=True)
        traceback.print_exc(file=sys.stderr)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def error_detail(e):
    """ErrorDetail from the airlock-error-bin trailer, or None."""
    try:
        for k, v in e.trailing_metadata() or ():
            if k == "airlock-error-bin":
                return C.ErrorDetail.FromString(v)
    except Exception:
        pass
    return None


def reason_name(e):
    d = error_detail(e)
    return C.ErrorReason.Name(d.reason) if d else "(no airlock-error-bin)"


def expect_code(fn, code, *args, **kw):
    try:
        r = fn(*args, **kw)
    except grpc.RpcError as e:
        expect(e.code() == code, f"got {e.code()} {e.details()!r} {reason_name(e)}, want {code}")
        return e
    raise CheckFailed(f"call succeeded ({type(r).__name__}), want {code}")


# ---------------------------------------------------------------------------
# servers


class Server:
    """One airlock-credstore process with its own config, data dir and log."""
    count = 0

    def __init__(self, name, data_dir, master_key, issuers=None, extra=()):
        self.name = name
        self.data_dir = data_dir
        self.master_key = master_key
        self.issuers = issuers if issuers is not None else DEFAULT_ISSUERS
        self.extra = list(extra)
        self.proc = None
        self.port = None
        self.channels = {}
        self.starts = 0

    def config(self):
        return (f'listen = "127.0.0.1:0"; ops_listen = "127.0.0.1:0";\n'
                f'tls = {{ cert_file = "{PKI}/credstore-credstore-0.crt"; '
                f'key_file = "{PKI}/credstore-credstore-0.key"; ca_file = "{PKI}/ca.crt"; }};\n'
                f'data_dir = "{self.data_dir}"; master_key_file = "{self.master_key}";\n'
                f'grpc = {{ drain_timeout = "5s"; }};\n'
                f'issuers = ( {self.issuers} );\n')

    def launch(self):
        """Starts the process; returns it without waiting for it to serve."""
        self.starts += 1
        base = os.path.join(T_DIR, f"{self.name}.{self.starts}")
        self.err_path = base + ".err"
        with open(base + ".conf", "w") as f:
            f.write(self.config())
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([os.path.join(BIN, "airlock-credstore"), "--config",
                                          base + ".conf"] + self.extra,
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        with open(ENV["PIDS_FILE"], "a") as f:
            f.write(f"{self.proc.pid}\n")
        return self.proc

    def log(self):
        try:
            return read(self.err_path).decode(errors="replace")
        except OSError:
            return ""

    def start(self):
        self.close_channels()
        self.launch()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            m = re.search(r"event=service\.start grpc_port=(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise CheckFailed(f"{self.name} did not start (status {self.proc.poll()}): "
                          + " | ".join(self.log().splitlines()[-3:]))

    def stop(self):
        """SIGTERM; expects a clean exit."""
        self.close_channels()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise CheckFailed(f"{self.name} still running 60s after SIGTERM")
            expect(rc == 0, f"{self.name} exit status {rc} after SIGTERM: "
                   + " | ".join(self.log().splitlines()[-2:]))

    def kill9(self):
        self.close_channels()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close_channels(self):
        for ch in self.channels.values():
            ch.close()
        self.channels = {}

    def stubs(self, ident):
        """ident: a pki base name such as 'admin-admin' or 'executor-executor-0'."""
        if ident not in self.channels:
            creds = grpc.ssl_channel_credentials(
                root_certificates=read(f"{PKI}/ca.crt"),
                private_key=read(f"{PKI}/{ident}.key"),
                certificate_chain=read(f"{PKI}/{ident}.crt"))
            self.channels[ident] = grpc.secure_channel(
                f"127.0.0.1:{self.port}", creds, options=[("grpc.use_local_subchannel_pool", 1)])
        return Stubs(self.channels[ident])


class Stubs:
    def __init__(self, ch):
        ser = lambda m: m.SerializeToString()  # noqa: E731
        a = "/airlock.v1.CredentialAdmin/"
        r = "/airlock.v1.CredentialResolver/"

        def u(path, resp):
            f = ch.unary_unary(path, ser, resp.FromString)
            return lambda req, timeout=CALL_TIMEOUT: f(req, timeout=timeout)
        self.put = u(a + "Put", P.Credential)
        self.rotate = u(a + "Rotate", P.Credential)
        self.delete = u(a + "Delete", P.DeleteCredentialResponse)
        self.list = u(a + "List", P.ListCredentialsResponse)
        self.describe = u(a + "Describe", P.Credential)
        self.query = u(a + "QueryAudit", P.QueryAuditResponse)
        self.verify = u(a + "VerifyAudit", P.VerifyAuditResponse)
        self.resolve = u(r + "Resolve", P.ResolveResponse)


def admin(srv):
    return srv.stubs("admin-admin")


def exe0(srv):
    return srv.stubs("executor-executor-0")


def gen_master(path):
    ctl = os.path.join(BIN, "airlockctl")
    r = subprocess.run([ctl, "keys", "gen-master", path], capture_output=True)
    if r.returncode != 0 or not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, (os.urandom(32).hex() + "\n").encode())
        os.close(fd)
    return path


def key_id(pubfile):
    pem = read(pubfile).decode()
    der = base64.b64decode("".join(ln for ln in pem.splitlines() if not ln.startswith("-")))
    return hashlib.sha256(der[-32:]).hexdigest()[:16]


INTAKE = "spiffe://airlock/intake/intake-0"
EXEC0 = "spiffe://airlock/executor/executor-0"
EXEC1 = "spiffe://airlock/executor/executor-1"
AUDIENCE = "spiffe://airlock/credstore/credstore-0"
DEST = "api.example.com:443"
# Issuer scope: intake may assert any principal and pool, but only credentials under ci/.
DEFAULT_ISSUERS = (f'{{ issuer = "spiffe://airlock/intake/*"; public_key_file = "{KEYS}/intake-0.pub"; '
                   f'principals = ["**"]; pools = ["**"]; credentials = ["ci/**"]; }}')


def sign(keyfile, data):
    # Ed25519 with -rawin needs the message from a file (not a pipe)
    path = os.path.join(T_DIR, f"tbs.{threading.get_ident()}")
    with open(path, "wb") as f:
        f.write(data)
    r = subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", keyfile, "-in", path],
                       capture_output=True)
    expect(r.returncode == 0 and len(r.stdout) == 64,
           f"openssl pkeyutl -sign: status {r.returncode}, {len(r.stdout)} bytes: {r.stderr[-200:]!r}")
    return r.stdout


def mint(key="intake-0", tamper=None, **kw):
    now = int(time.time() * 1000)
    g = dict(grant_id=secrets.token_hex(16), issuer=INTAKE, audience=AUDIENCE, holder=EXEC0,
             principal="acme/alice", subject="job/j1/attempt/1", scope="ci-linux",
             credentials=["ci/github"], destinations=[DEST],
             not_before_ms=now - 1000, expires_ms=now + 600_000)
    g.update(kw)
    gb = G.Grant(**g).SerializeToString()
    sig = sign(f"{KEYS}/{key}.key", b"airlock-grant-v1\0" + gb)
    if tamper:
        gb = tamper(gb)
    return G.SignedGrant(grant=gb, key_id=key_id(f"{KEYS}/{key}.pub"), signature=sig), g["grant_id"]


def policy(**kw):
    p = dict(allowed_issuers=["spiffe://airlock/intake/*"], allowed_principals=["acme/*"],
             allowed_holders=["spiffe://airlock/executor/executor-*"], allowed_pools=["ci-*"],
             allowed_destinations=[DEST])
    p.update(kw)
    return P.BindingPolicy(**p)


def put(srv, name, value, **pol):
    return admin(srv).put(P.PutCredentialRequest(
        name=name, type=P.CREDENTIAL_TYPE_BEARER_TOKEN, description="integration test",
        policy=policy(**pol), grace_period_ms=600_000, value=value))


def head_seq(srv):
    return admin(srv).query(P.QueryAuditRequest(page=C.PageRequest(page_size=1))).head_seq


def audit_after(srv, seq, **filt):
    """All records with seq > seq matching filt (paged)."""
    out, tok = [], ""
    while True:
        r = admin(srv).query(P.QueryAuditRequest(page=C.PageRequest(page_size=500, page_token=tok),
                                                 after_seq=seq, **filt))
        out.extend(r.records)
        tok = r.page.next_page_token
        if not tok:
            return out


def list_all(srv):
    out, tok = [], ""
    while True:
        r = admin(srv).list(P.ListCredentialsRequest(page=C.PageRequest(page_size=500, page_token=tok)))
        out.extend(c.name for c in r.credentials)
        tok = r.page.next_page_token
        if not tok:
            return out


def verify(srv):
    return admin(srv).verify(P.VerifyAuditRequest())


def canary():
    return ("CANARY-" + secrets.token_hex(12)).encode()


CANARIES = []


def new_canary():
    c = canary()
    CANARIES.append(c)
    return c


# ---------------------------------------------------------------------------
# main server: access control, resolve, audit, restart, canaries


def main_suite():
    mk = gen_master(os.path.join(T_DIR, "master-main.key"))
    srv = Server("main", os.path.join(T_DIR, "data-main"), mk)
    srv.start()
    v1, v2, other = new_canary(), new_canary(), new_canary()
    outside = new_canary()

    def setup():
        c = put(srv, "ci/github", v1)
        expect(c.current_version == 1, f"current_version {c.current_version}")
        put(srv, "ci/other", other)
        put(srv, "outside/thing", outside, allowed_principals=["**"], allowed_pools=["**"])
        put(srv, "ci/exec0only", new_canary(), allowed_holders=[EXEC0])
        for c in (v1, other, outside):
            expect(c not in c_bytes(admin(srv).describe(P.DescribeCredentialRequest(name="ci/github"))),
                   "Describe returned a value")
        lst = admin(srv).list(P.ListCredentialsRequest())
        expect(sorted(x.name for x in lst.credentials) ==
               ["ci/exec0only", "ci/github", "ci/other", "outside/thing"],
               f"List gave {[x.name for x in lst.credentials]}")
        blob = lst.SerializeToString()
        expect(not any(c in blob for c in CANARIES), "List returned a value")
    check("admin-put-list-describe", setup)

    # 1. admin API needs the admin identity
    for ident in ("client-client", "executor-executor-0", "gateway-gateway-0"):
        def denied(ident=ident):
            s = srv.stubs(ident)
            calls = [
                ("Put", s.put, P.PutCredentialRequest(name="ci/x", type=P.CREDENTIAL_TYPE_BEARER_TOKEN,
                                                      policy=policy(), value=b"x")),
                ("Rotate", s.rotate, P.RotateCredentialRequest(name="ci/github", value=b"y")),
                ("Delete", s.delete, P.DeleteCredentialRequest(name="ci/other")),
                ("List", s.list, P.ListCredentialsRequest()),
                ("Describe", s.describe, P.DescribeCredentialRequest(name="ci/github")),
                ("QueryAudit", s.query, P.QueryAuditRequest()),
                ("VerifyAudit", s.verify, P.VerifyAuditRequest()),
            ]
            for meth, fn, req in calls:
                try:
                    expect_code(fn, SC.PERMISSION_DENIED, req)
                except CheckFailed as e:
                    raise CheckFailed(f"{meth}: {e}")
            d = admin(srv).describe(P.DescribeCredentialRequest(name="ci/github"))
            expect(d.current_version == 1, "a denied Rotate changed the credential")
            expect("ci/other" in list_all(srv), "a denied Delete removed the credential")
            expect("ci/x" not in list_all(srv), "a denied Put created a credential")
        check(f"admin-api-denied-{ident}", denied)

    def admin_ok():
        expect(verify(srv).intact, "VerifyAudit not intact")
        recs = audit_after(srv, 0, action=P.AUDIT_ACTION_PUT, decision=ALLOW)
        denied = audit_after(srv, 0, action=P.AUDIT_ACTION_PUT, decision=DENY)
        expect({r.caller for r in denied} == {"spiffe://airlock/client/client", EXEC0,
                                              "spiffe://airlock/gateway/gateway-0"},
               f"denied PUT records from {set(r.caller for r in denied)}")
        expect(len(recs) >= 4 and all(r.caller == "spiffe://airlock/admin/admin" for r in recs),
               f"{len(recs)} PUT records, callers {set(r.caller for r in recs)}")
    check("admin-api-allowed-admin", admin_ok)

    # 2. allowed resolve
    def allowed():
        sg, gid = mint()
        r = exe0(srv).resolve(P.ResolveRequest(grant=sg, credential="ci/github", destination=DEST))
        expect(r.value == v1, "wrong value")
        expect(r.version == 1, f"version {r.version}")
        expect(r.template.header.lower() == "authorization" and r.template.format == "Bearer {}",
               f"template {r.template}")
        expect(r.ttl_ms > 0 and r.expires_ms > 0, f"ttl_ms {r.ttl_ms} expires_ms {r.expires_ms}")
        recs = audit_after(srv, 0, grant_id=gid)
        expect(len(recs) == 1, f"{len(recs)} audit records for the grant")
        a = recs[0]
        expect(a.decision == ALLOW and a.action == RESOLVE and a.seq == r.audit_seq,
               f"audit record {a}")
        expect(a.caller == EXEC0 and a.issuer == INTAKE and a.principal == "acme/alice"
               and a.credential == "ci/github" and a.version == 1 and a.destination == DEST
               and a.scope == "ci-linux", f"audit record fields {a}")
        expect(v1 not in a.SerializeToString(), "value in the audit record")
    check("resolve-allowed", allowed)

    def allowed_dest_default_port():
        sg, _ = mint(destinations=["api.example.com"])
        r = exe0(srv).resolve(P.ResolveRequest(grant=sg, credential="ci/github",
                                               destination="api.example.com"))
        expect(r.value == v1, "wrong value")
    check("resolve-allowed-default-port", allowed_dest_default_port)

    # 3. denials, each audited
    def denial(name, ident, req_fn, reasons, cred="ci/github", want_gid=True,
               codes=(SC.PERMISSION_DENIED,)):
        """Three results: NAME (refused, nothing released, DENY audited with a reason),
        NAME-status (gRPC code and ErrorDetail reason as credstore.proto/common.proto say),
        NAME-audit-grant-id (the record names the grant, when its signature verified)."""
        got = {}

        def run():
            before = head_seq(srv)
            req, gid = req_fn()
            s = srv.stubs(ident)
            try:
                r = s.resolve(req)
                raise CheckFailed(f"Resolve succeeded (value released: {r.value in CANARIES})")
            except grpc.RpcError as e:
                expect(e.code() != SC.OK, "OK")
                expect(not any(c in (e.details() or "").encode() for c in CANARIES),
                       "value in error details")
                d = error_detail(e)
                expect(d is None or not any(c in d.SerializeToString() for c in CANARIES),
                       "value in the ErrorDetail")
                got["code"], got["reason"] = e.code(), reason_name(e)
            role, nm = ident.split("-", 1)
            caller = f"spiffe://airlock/{role}/{nm}"
            recs = [r for r in audit_after(srv, before, action=RESOLVE) if r.caller == caller]
            if not recs:
                allr = audit_after(srv, before)
                raise CheckFailed(f"no RESOLVE audit record from {caller} after seq {before}; records "
                                  f"since: {[(r.action, r.decision, r.caller, r.reason) for r in allr]}")
            expect(len(recs) == 1, f"{len(recs)} RESOLVE records for one call")
            rec = recs[0]
            expect(rec.decision == DENY, f"audit decision {rec.decision}")
            expect(rec.reason, "DENY record without a reason")
            expect(rec.version == 0, f"DENY record names version {rec.version}")
            expect(not any(c in rec.SerializeToString() for c in CANARIES), "value in the record")
            got["gid"], got["want_gid"] = rec.grant_id, gid if want_gid else ""
            print(f"    {name}: {got['code'].name} {got['reason']}; audit reason {rec.reason!r} "
                  f"grant_id {rec.grant_id[:8] or '-'}", flush=True)
        check(f"resolve-denied-{name}", run)

        def status():
            if "code" not in got:
                raise Skip("no error to look at")
            expect(got["code"] in codes and got["reason"] in reasons,
                   f"got {got['code'].name} {got['reason']}, want {[c.name for c in codes]} {reasons}")
        check(f"resolve-denied-{name}-status", status)
        if want_gid:
            def gid_check():
                if "gid" not in got:
                    raise Skip("no audit record to look at")
                expect(got["gid"] == got["want_gid"],
                       f"record grant_id {got['gid']!r}, want {got['want_gid']!r}")
            check(f"resolve-denied-{name}-audit-grant-id", gid_check)

    E0 = "executor-executor-0"
    g_req = lambda cred="ci/github", dest=DEST, **kw: (  # noqa: E731
        (lambda sg_gid: (P.ResolveRequest(grant=sg_gid[0], credential=cred, destination=dest),
                         sg_gid[1]))(mint(**kw)))
    now = lambda: int(time.time() * 1000)  # noqa: E731
    INV, EXP, POL = ["ERROR_REASON_GRANT_INVALID"], ["ERROR_REASON_GRANT_EXPIRED"], ["ERROR_REASON_POLICY_DENIED"]
    SCOPE = ["ERROR_REASON_GRANT_SCOPE_MISMATCH"]
    denial("no-grant", E0, lambda: (P.ResolveRequest(credential="ci/github", destination=DEST), ""),
           ["ERROR_REASON_INVALID_FIELD", "ERROR_REASON_GRANT_INVALID"], want_gid=False,
           codes=(SC.PERMISSION_DENIED, SC.INVALID_ARGUMENT))
    denial("expired", E0, lambda: g_req(not_before_ms=now() - 3_600_000,
                                        expires_ms=now() - 600_000), EXP)
    denial("not-yet-valid", E0, lambda: g_req(not_before_ms=now() + 600_000,
                                              expires_ms=now() + 1_200_000), EXP)
    denial("unknown-key", E0, lambda: g_req(key="relay-0"), INV, want_gid=False)
    denial("issuer-not-key-owner", E0, lambda: g_req(issuer="spiffe://airlock/relay/relay-0"),
           INV + POL, want_gid=False)
    denial("wrong-audience", E0, lambda: g_req(audience="spiffe://airlock/gateway/gateway-0"),
           ["ERROR_REASON_GRANT_AUDIENCE_MISMATCH"])
    denial("out-of-issuer-scope", E0, lambda: g_req(cred="outside/thing",
                                                    credentials=["outside/thing"]),
           POL + SCOPE, cred="outside/thing")
    denial("credential-not-in-grant", E0, lambda: g_req(cred="ci/other"), SCOPE, cred="ci/other")
    denial("wrong-holder", "executor-executor-1", lambda: g_req(),
           ["ERROR_REASON_GRANT_HOLDER_MISMATCH"])
    denial("holder-not-in-policy", "executor-executor-1",
           lambda: g_req(cred="ci/exec0only", credentials=["ci/exec0only"], holder=EXEC1),
           POL, cred="ci/exec0only")
    denial("wrong-principal", E0, lambda: g_req(principal="evil/mallory"), POL)
    denial("wrong-pool", E0, lambda: g_req(scope="prod-linux"), POL)
    denial("dest-not-in-grant", E0, lambda: g_req(dest="evil.example.net:443"), SCOPE)
    denial("dest-not-in-policy", E0, lambda: g_req(dest="evil.example.net:443",
                                                   destinations=["evil.example.net:443"]), POL)
    denial("dest-suffix-trick", E0, lambda: g_req(dest="api.example.com.evil.net:443",
                                                  destinations=["api.example.com.evil.net:443"]), POL)
    denial("dest-other-port", E0, lambda: g_req(dest="api.example.com:8443",
                                                destinations=["api.example.com:8443"]), POL)
    denial("lifetime-too-long", E0, lambda: g_req(not_before_ms=now() - 1000,
                                                  expires_ms=now() + 3 * 86_400_000), POL + EXP)

    def flip_last_byte(b):
        return b[:-1] + bytes([b[-1] ^ 0x01])

    def principal_edit(b):
        return b.replace(b"acme/alice", b"acme/alicf")
    denial("tampered-byte", E0, lambda: g_req(tamper=flip_last_byte), INV, want_gid=False)
    denial("tampered-principal", E0, lambda: g_req(tamper=principal_edit), INV, want_gid=False)

    def bad_sig():
        req, gid = g_req()
        req.grant.signature = bytes(64)
        return req, gid
    denial("zero-signature", E0, bad_sig, INV, want_gid=False)
    for ident in ("client-client", "admin-admin"):
        denial(f"non-edge-{ident}", ident, lambda: g_req(),
               ["ERROR_REASON_IDENTITY_NOT_ALLOWED"], want_gid=False)

    # rotation
    def rotate():
        c = admin(srv).rotate(P.RotateCredentialRequest(name="ci/github", value=v2))
        expect(c.current_version == 2, f"current_version {c.current_version}")
        states = {v.version: v.state for v in c.versions}
        expect(states == {2: P.CREDENTIAL_VERSION_STATE_CURRENT, 1: P.CREDENTIAL_VERSION_STATE_GRACE},
               f"versions {states}")
        expect(v1 not in c_bytes(c) and v2 not in c_bytes(c), "Rotate returned a value")
        sg, _ = mint()
        r = exe0(srv).resolve(P.ResolveRequest(grant=sg, credential="ci/github", destination=DEST))
        expect(r.value == v2 and r.version == 2, f"resolve after rotate: version {r.version}")
    check("rotate-then-resolve", rotate)

    def burst():
        for _ in range(20):
            sg, _ = mint(credentials=["ci/github", "ci/other"])
            r = exe0(srv).resolve(P.ResolveRequest(grant=sg, credential="ci/other", destination=DEST))
            expect(r.value == other, "wrong value for ci/other")
    check("resolve-burst", burst)

    # 5. canaries: database, WAL and SHM while running, and the server's log
    def scan_running():
        scan_files(srv.data_dir, CANARIES)
        expect(os.path.exists(os.path.join(srv.data_dir, "credstore.db-wal")),
               "no WAL file while running (nothing scanned there)")
        log = read(srv.err_path)
        expect(not any(c in log for c in CANARIES), "a canary value is in the server's log")
    check("canary-scan-running", scan_running)

    # 4. restart keeps every credential and the audit chain
    def restart():
        names = sorted(list_all(srv))
        descs = {n: admin(srv).describe(P.DescribeCredentialRequest(name=n)) for n in names}
        v = verify(srv)
        expect(v.intact, f"chain not intact before restart: {v.problem}")
        srv.stop()
        scan_files(srv.data_dir, CANARIES)
        srv.start()
        names2 = sorted(list_all(srv))
        expect(names2 == names, f"credentials {names} -> {names2}")
        for n in names:
            d = admin(srv).describe(P.DescribeCredentialRequest(name=n))
            expect(d.current_version == descs[n].current_version and d.revision == descs[n].revision
                   and d.policy == descs[n].policy, f"{n} changed across restart")
        v2_ = verify(srv)
        expect(v2_.intact, f"chain not intact after restart: {v2_.problem} at {v2_.first_bad_seq}")
        expect(v2_.head_seq >= v.head_seq, f"head {v.head_seq} -> {v2_.head_seq}")
        expect(v2_.records_checked >= v.head_seq, f"records_checked {v2_.records_checked}")
        old = audit_after(srv, 0)
        expect(len(old) >= v.head_seq, f"{len(old)} records readable, head was {v.head_seq}")
        sg, _ = mint()
        r = exe0(srv).resolve(P.ResolveRequest(grant=sg, credential="ci/github", destination=DEST))
        expect(r.value == v2 and r.version == 2, "resolve after restart")
        r = exe0(srv).resolve(P.ResolveRequest(grant=mint(credentials=["ci/github"])[0],
                                               credential="ci/github", destination=DEST))
    check("restart-keeps-credentials-and-chain", restart)

    # 10. wrong master key
    def wrong_master():
        srv.stop()
        for label, content in (("other-key", None), ("malformed", b"not a key\n")):
            path = os.path.join(T_DIR, f"master-{label}.key")
            if content is None:
                gen_master(path)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(fd, content)
                os.close(fd)
            bad = Server(f"main-{label}", srv.data_dir, path)
            p = bad.launch()
            try:
                rc = p.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise CheckFailed(f"{label}: still running with a wrong master key")
            log = bad.log()
            expect(rc != 0, f"{label}: exit status 0")
            expect("service.start" not in log, f"{label}: it served")
            expect(re.search(r"master.?key", log, re.I),
                   f"{label}: log does not mention the master key: {log.strip()[-200:]!r}")
            print(f"    {label}: status {rc}: {log.strip().splitlines()[-1][:200]}", flush=True)
        srv.start()
        expect(verify(srv).intact, "chain not intact after the refused starts")
    check("wrong-master-key-refused", wrong_master)
    return srv


def c_bytes(m):
    return m.SerializeToString()


def scan_files(data_dir, canaries):
    scanned = []
    for f in ("credstore.db", "credstore.db-wal", "credstore.db-shm", "audit.head"):
        p = os.path.join(data_dir, f)
        if os.path.exists(p):
            b = read(p)
            scanned.append(f"{f}:{len(b)}")
            for c in canaries:
                for form in (c, base64.b64encode(c), c.hex().encode()):
                    expect(form not in b, f"canary {c[:12]!r}... found in {f}")
    expect(scanned, f"nothing to scan in {data_dir}")


# ---------------------------------------------------------------------------
# tampering with the database


def baseline(tag):
    """A stopped server's data dir with some credentials and ~12 audit records."""
    mk = gen_master(os.path.join(T_DIR, f"master-{tag}.key"))
    srv = Server(tag, os.path.join(T_DIR, f"data-{tag}"), mk)
    srv.start()
    for i in range(4):
        put(srv, f"ci/t{i}", new_canary())
    put(srv, "ci/keep", new_canary())
    for i in range(3):
        sg, _ = mint(credentials=[f"ci/t{i}"])
        exe0(srv).resolve(P.ResolveRequest(grant=sg, credential=f"ci/t{i}", destination=DEST))
    v = verify(srv)
    expect(v.intact and v.head_seq >= 8, f"baseline chain: intact {v.intact} head {v.head_seq}")
    srv.stop()
    return srv, v.head_seq


def sql(db, stmt):
    r = subprocess.run(["sqlite3", db, stmt], capture_output=True, text=True)
    expect(r.returncode == 0, f"sqlite3 {stmt!r}: {r.stderr.strip()}")
    return r.stdout


def clone(base, tag):
    d = os.path.join(T_DIR, f"data-{tag}")
    shutil.copytree(base.data_dir, d)
    return Server(tag, d, base.master_key)


VERIFY_GAPS = []


def tamper_suite():
    try:
        base, head = baseline("tbase")
    except Exception as e:
        check("audit-tamper-baseline", lambda: (_ for _ in ()).throw(e))
        return
    mid = head // 2

    def detected(tag, edit, want_seq=None):
        def run():
            s = clone(base, tag)
            db = os.path.join(s.data_dir, "credstore.db")
            edit(s, db)
            p = s.launch()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                m = re.search(r"event=service\.start grpc_port=(\d+)", s.log())
                if m or p.poll() is not None:
                    break
                time.sleep(0.05)
            if p.poll() is not None:
                # refusing to start on a broken chain is detection too; say so
                expect(p.returncode != 0, "exited 0")
                expect(re.search(r"audit|chain|head", s.log(), re.I),
                       f"refused to start without naming the audit chain: {s.log()[-200:]!r}")
                print(f"    {tag}: refused to start: {s.log().strip().splitlines()[-1][:200]}",
                      flush=True)
                return
            s.port = int(m.group(1))
            try:
                v = verify(s)
            except grpc.RpcError as e:
                # Fail closed is detection too (nothing more is appended or released), but the
                # spec wants VerifyAudit itself to report the break: a separate check says so.
                expect(e.code() == SC.UNAVAILABLE, f"VerifyAudit: {e.code()} {reason_name(e)}")
                sg, _ = mint(credentials=["ci/keep"])
                expect_code(exe0(s).resolve, SC.UNAVAILABLE,
                            P.ResolveRequest(grant=sg, credential="ci/keep", destination=DEST))
                tl = [ln for ln in s.log().splitlines() if "audit_tamper" in ln]
                expect(tl, "no event=credstore.audit_tamper in the log")
                print(f"    {tag}: fail closed; VerifyAudit {e.code()} {reason_name(e)}; "
                      f"log: {tl[0][tl[0].find('event='):][:160]}", flush=True)
                VERIFY_GAPS.append((tag, f"VerifyAudit answers {e.code().name} {reason_name(e)} "
                                         f"instead of intact=false ({tl[0][tl[0].find('problem='):]})"))
                s.stop()
                return
            print(f"    {tag}: intact={v.intact} first_bad_seq={v.first_bad_seq} "
                  f"problem={v.problem!r} head_seq={v.head_seq}", flush=True)
            expect(not v.intact, "VerifyAudit says intact")
            expect(v.problem, "no problem text")
            if want_seq is not None:
                expect(v.first_bad_seq == want_seq or v.first_bad_seq == want_seq + 1,
                       f"first_bad_seq {v.first_bad_seq}, want {want_seq}")
            ctl = subprocess.run([os.path.join(BIN, "airlockctl"), "audit", "verify", "--addr",
                                  f"127.0.0.1:{s.port}"], capture_output=True, text=True,
                                 env=dict(ENV, AIRLOCK_HOME=HOME), timeout=60)
            if "unknown" not in (ctl.stderr + ctl.stdout).lower():
                expect(ctl.returncode != 0, f"airlockctl audit verify exit 0: {ctl.stdout.strip()}")
            # the service keeps answering: metadata when it can still audit the read,
            # or a clear AUDIT_UNAVAILABLE when the broken chain refuses new records
            try:
                admin(s).describe(P.DescribeCredentialRequest(name="ci/keep"))
            except grpc.RpcError as e:
                expect(e.code() == SC.UNAVAILABLE and "AUDIT_UNAVAILABLE" in reason_name(e),
                       f"Describe on a broken chain: {e.code()} {reason_name(e)}")
            s.stop()
        check(f"audit-tamper-{tag}", run)
        gap = [w for t, w in VERIFY_GAPS if t == tag]

        def reports():
            expect(not gap, gap[0] if gap else "")
        check(f"audit-tamper-{tag}-verify-reports", reports)

    detected("edit-reason", lambda s, db: sql(db, f"UPDATE audit SET reason = 'edited' WHERE seq = {mid}"),
             mid)
    detected("edit-caller", lambda s, db: sql(
        db, f"UPDATE audit SET caller = 'spiffe://airlock/admin/other' WHERE seq = {mid}"), mid)
    detected("delete-middle", lambda s, db: sql(db, f"DELETE FROM audit WHERE seq = {mid}"), mid)
    detected("truncate-last", lambda s, db: sql(db, f"DELETE FROM audit WHERE seq > {head - 2}"))

    def trunc_and_meta(s, db):
        sql(db, f"DELETE FROM audit WHERE seq > {head - 2}")
        sql(db, "DELETE FROM meta WHERE k = 'audit_head'")
    detected("truncate-last-and-meta-head", trunc_and_meta)

    def rewrite_chain(s, db):
        # recompute nothing, just drop the last record and its head file: db head and file differ
        sql(db, f"DELETE FROM audit WHERE seq = {head}")
        os.unlink(os.path.join(s.data_dir, "audit.head"))
    detected("truncate-last-no-head-file", rewrite_chain)

    # rollback: an older copy of the whole database (a consistent, MACed older head) with the
    # newer head file
    def rollback():
        s = clone(base, "rollback")
        old = os.path.join(T_DIR, "rollback-old.db")
        shutil.copy(os.path.join(s.data_dir, "credstore.db"), old)
        s.start()
        put(s, "ci/later", new_canary())
        s.stop()
        shutil.copy(old, os.path.join(s.data_dir, "credstore.db"))
        for f in ("credstore.db-wal", "credstore.db-shm"):
            try:
                os.unlink(os.path.join(s.data_dir, f))
            except FileNotFoundError:
                pass
        p = s.launch()
        try:
            p.wait(5)
            expect(p.returncode != 0, "exited 0")
            print(f"    rollback: refused to start: {s.log().strip().splitlines()[-1][:200]}")
            return
        except subprocess.TimeoutExpired:
            pass
        m = re.search(r"event=service\.start grpc_port=(\d+)", s.log())
        expect(m, "not serving")
        s.port = int(m.group(1))
        try:
            v = verify(s)
        except grpc.RpcError as e:
            expect(e.code() == SC.UNAVAILABLE, f"VerifyAudit: {e.code()} {reason_name(e)}")
            tl = [ln for ln in s.log().splitlines() if "audit_tamper" in ln]
            expect(tl, "no event=credstore.audit_tamper in the log")
            print(f"    rollback: fail closed; VerifyAudit {e.code()} {reason_name(e)}; "
                  f"log: {tl[0][tl[0].find('event='):][:160]}", flush=True)
            VERIFY_GAPS.append(("rollback", f"VerifyAudit answers {e.code().name} {reason_name(e)} "
                                            f"instead of intact=false"))
            s.stop()
            return
        print(f"    rollback: intact={v.intact} problem={v.problem!r}", flush=True)
        expect(not v.intact, "rolled-back database verifies as intact (truncation not detected)")
        s.stop()
    check("audit-tamper-rollback-whole-db", rollback)

    def rollback_reports():
        gap = [w for t, w in VERIFY_GAPS if t == "rollback"]
        expect(not gap, gap[0] if gap else "")
    check("audit-tamper-rollback-whole-db-verify-reports", rollback_reports)

    # 7. policy rows edited in SQLite
    def policy_edit(tag, edit, resolve_cred="ci/t0", **grant_kw):
        def run():
            s = clone(base, tag)
            db = os.path.join(s.data_dir, "credstore.db")
            edit(db)
            s.start()
            e = expect_code(admin(s).describe, SC.DATA_LOSS,
                            P.DescribeCredentialRequest(name="ci/t0"))
            sg, _ = mint(credentials=[resolve_cred], **grant_kw)
            try:
                r = exe0(s).resolve(P.ResolveRequest(grant=sg, credential=resolve_cred,
                                                     destination=DEST))
                raise CheckFailed(f"Resolve released a value under an edited row (v{r.version})")
            except grpc.RpcError as e2:
                print(f"    {tag}: Describe {e.code()} {reason_name(e)}; Resolve {e2.code()} "
                      f"{reason_name(e2)}", flush=True)
            # others keep being served
            admin(s).describe(P.DescribeCredentialRequest(name="ci/keep"))
            sg, _ = mint(credentials=["ci/keep"])
            r = exe0(s).resolve(P.ResolveRequest(grant=sg, credential="ci/keep", destination=DEST))
            expect(r.value in CANARIES, "ci/keep value")
            # List covers the damaged row: either it lists the others or it refuses as a whole
            try:
                names = list_all(s)
                expect("ci/keep" in names, f"List after the edit: {names}")
            except grpc.RpcError as e3:
                expect(e3.code() == SC.DATA_LOSS, f"List: {e3.code()} {reason_name(e3)}")
                print(f"    {tag}: List refused as a whole: {e3.code()}", flush=True)
            s.stop()
        check(f"policy-row-{tag}", run)

    def widen_policy(db):
        con = sqlite3.connect(db)
        blob = con.execute("SELECT policy FROM credentials WHERE name = 'ci/t0'").fetchone()[0]
        pol = P.BindingPolicy.FromString(blob)
        del pol.allowed_principals[:]
        pol.allowed_principals.append("**")
        con.execute("UPDATE credentials SET policy = ? WHERE name = 'ci/t0'", (pol.SerializeToString(),))
        con.commit()
        con.close()
    policy_edit("policy-blob-widened", widen_policy, principal="evil/mallory")
    policy_edit("template-header", lambda db: sql(
        db, "UPDATE credentials SET template_header = 'X-Leak' WHERE name = 'ci/t0'"))
    policy_edit("allow-plain-http", lambda db: sql(
        db, "UPDATE credentials SET allow_plain_http = 1 WHERE name = 'ci/t0'"))

    def swap_ciphertext(db):
        con = sqlite3.connect(db)
        row = con.execute("SELECT dek_nonce, wrapped_dek, value_nonce, ciphertext FROM versions "
                          "WHERE name = 'ci/t1'").fetchone()
        con.execute("UPDATE versions SET dek_nonce = ?, wrapped_dek = ?, value_nonce = ?, "
                    "ciphertext = ? WHERE name = 'ci/t0'", row)
        con.commit()
        con.close()

    def swapped():
        s = clone(base, "swap-ciphertext")
        swap_ciphertext(os.path.join(s.data_dir, "credstore.db"))
        s.start()
        sg, _ = mint(credentials=["ci/t0"])
        try:
            r = exe0(s).resolve(P.ResolveRequest(grant=sg, credential="ci/t0", destination=DEST))
            raise CheckFailed(f"Resolve released a swapped ciphertext (value is a canary: "
                              f"{r.value in CANARIES})")
        except grpc.RpcError as e:
            print(f"    swap-ciphertext: Resolve {e.code()} {reason_name(e)}", flush=True)
            expect(e.code() != SC.PERMISSION_DENIED, "refused as a policy denial, not as damage")
        sg, _ = mint(credentials=["ci/keep"])
        exe0(s).resolve(P.ResolveRequest(grant=sg, credential="ci/keep", destination=DEST))
        s.stop()
    check("version-row-swapped-ciphertext", swapped)


# ---------------------------------------------------------------------------
# 8. audit sink unwritable


def sink_suite():
    def head_is_dir():
        mk = gen_master(os.path.join(T_DIR, "master-headdir.key"))
        s = Server("headdir", os.path.join(T_DIR, "data-headdir"), mk)
        s.start()
        put(s, "ci/github", new_canary())
        head = os.path.join(s.data_dir, "audit.head")
        expect(os.path.isfile(head), "no audit.head after a Put")
        os.unlink(head)
        os.mkdir(head)
        os.mkdir(os.path.join(head, "x"))  # not empty: rename() over it fails even for root
        sg, _ = mint()
        try:
            r = exe0(s).resolve(P.ResolveRequest(grant=sg, credential="ci/github", destination=DEST))
            raise CheckFailed(f"Resolve released the value with the head file unwritable "
                              f"(audit_seq {r.audit_seq})")
        except grpc.RpcError as e:
            expect(e.code() == SC.UNAVAILABLE, f"got {e.code()} {reason_name(e)}, want UNAVAILABLE")
            expect(reason_name(e) == "ERROR_REASON_AUDIT_UNAVAILABLE", reason_name(e))
        shutil.rmtree(head)
        s.stop()
    check("audit-sink-head-file-unwritable", head_is_dir)

    def full_disk():
        d = os.path.join(T_DIR, "data-full")
        os.mkdir(d)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", d],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip(f"cannot mount a tmpfs (needs root/CAP_SYS_ADMIN): {r.stderr.strip()}")
        with open(ENV["MOUNTS_FILE"], "a") as f:
            f.write(d + "\n")
        mk = gen_master(os.path.join(T_DIR, "master-full.key"))
        s = Server("full", d, mk)
        s.start()
        val = new_canary()
        put(s, "ci/github", val)
        # fill the file system
        with open(os.path.join(d, "filler"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        # a resolve must either be audited (allowed) or fail closed; with no space left at all
        # the audit write cannot succeed for long: the WAL reuse may absorb a few
        outcomes = []
        for _ in range(50):
            sg, _ = mint()
            try:
                r = exe0(s).resolve(P.ResolveRequest(grant=sg, credential="ci/github",
                                                     destination=DEST))
                outcomes.append("ok")
                # a released value must have its audit record
                expect(r.audit_seq > 0, "value released without an audit seq")
            except grpc.RpcError as e:
                outcomes.append(f"{e.code().name}/{reason_name(e)}")
                expect(e.code() == SC.UNAVAILABLE and reason_name(e) == "ERROR_REASON_AUDIT_UNAVAILABLE",
                       f"got {e.code()} {reason_name(e)}, want UNAVAILABLE AUDIT_UNAVAILABLE")
                break
        print(f"    full disk: {outcomes.count('ok')} released before denial; last: {outcomes[-1]}",
              flush=True)
        expect(outcomes[-1] != "ok", "50 resolves released values on a full file system")
        os.unlink(os.path.join(d, "filler"))
        # recovers once space is back
        sg, _ = mint()
        deadline = time.monotonic() + 10
        while True:
            try:
                exe0(s).resolve(P.ResolveRequest(grant=sg, credential="ci/github", destination=DEST))
                break
            except grpc.RpcError as e:
                if time.monotonic() > deadline:
                    raise CheckFailed(f"no recovery after freeing space: {e.code()} {reason_name(e)}")
                time.sleep(0.2)
        v = verify(s)
        expect(v.intact, f"chain after the full disk: {v.problem} at {v.first_bad_seq}")
        s.stop()
    check("audit-sink-disk-full", full_disk)


# ---------------------------------------------------------------------------
# 9. kill -9 during a burst of Puts


def crash_suite():
    def run():
        mk = gen_master(os.path.join(T_DIR, "master-crash.key"))
        s = Server("crash", os.path.join(T_DIR, "data-crash"), mk)
        s.start()
        acked, lock = [], threading.Lock()
        vals = {}
        stop = threading.Event()
        total = 200

        def worker(k):
            st = admin(s)
            for i in range(k, total, 8):
                if stop.is_set():
                    return
                name = f"ci/burst-{i:03d}"
                v = new_canary()
                try:
                    st.put(P.PutCredentialRequest(name=name, type=P.CREDENTIAL_TYPE_BEARER_TOKEN,
                                                  policy=policy(), value=v), timeout=30)
                except grpc.RpcError:
                    return
                with lock:
                    acked.append(name)
                    vals[name] = v
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 100 and time.monotonic() < deadline and any(t.is_alive() for t in ts):
            time.sleep(0.005)
        os.kill(s.proc.pid, signal.SIGKILL)
        stop.set()
        for t in ts:
            t.join(60)
        s.proc.wait()
        with lock:
            got = list(acked)
        expect(len(got) < total, f"all {total} puts finished before the kill; nothing tested")
        scan_files(s.data_dir, CANARIES)
        s.start()
        names = set(list_all(s))
        missing = [n for n in got if n not in names]
        expect(not missing, f"{len(missing)} acknowledged puts lost, e.g. {missing[:3]}")
        v = verify(s)
        expect(v.intact, f"chain after kill -9: {v.problem} at {v.first_bad_seq}")
        puts = audit_after(s, 0, action=P.AUDIT_ACTION_PUT)
        audited = {r.credential for r in puts if r.decision == ALLOW}
        expect(names <= audited, f"credentials without a PUT record: {sorted(names - audited)[:3]}")
        sg, _ = mint(credentials=[got[-1]])
        r = exe0(s).resolve(P.ResolveRequest(grant=sg, credential=got[-1], destination=DEST))
        expect(r.value == vals[got[-1]], "last acknowledged value differs after the crash")
        print(f"    {len(got)} acknowledged before kill -9, {len(names)} present after restart, "
              f"head_seq {v.head_seq}", flush=True)
        s.stop()
    check("kill9-during-put-burst", run)


def main():
    t0 = time.monotonic()
    srv = None
    try:
        srv = main_suite()
    except Exception as e:
        check("main-server", lambda: (_ for _ in ()).throw(e))
    if srv:
        try:
            srv.stop()
        except Exception as e:
            check("main-server-exit", lambda: (_ for _ in ()).throw(e))
    tamper_suite()
    sink_suite()
    crash_suite()
    print(f"credstore_test.py: {time.monotonic() - t0:.1f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
