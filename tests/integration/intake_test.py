"""Integration checks of airlock-intake over mTLS (grpcio, Debian's python3-grpcio).

Run with /usr/bin/python3 by intake.sh, which makes the PKI and the message classes
and passes in:
  BIN          directory with airlock-intake and airlockctl
  GEN_DIR      protoc --python_out output (airlock/v1/*_pb2.py)
  T_DIR        scratch directory (servers' data dirs, configs and logs live here)
  AIRLOCK_HOME directory with pki/ and keys/ from `airlockctl certs init`
  PIDS_FILE    every server pid started is appended here (intake.sh's trap kills them)
Servers' stderr files are T_DIR/*.err; intake.sh scans them for sanitizer reports.

The test plays agent platforms (JobService with API keys or client certificates) and
executors (ExecutorService with the executor identity certificates of the dev PKI):
real clients of the real binary. Prints PASS/FAIL/SKIP lines; exits 1 if any check
failed. No timing assertions: waits are for events, with generous deadlines.
"""

import base64
import hashlib
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

import grpc

ENV = os.environ
BIN = ENV["BIN"]
T_DIR = ENV["T_DIR"]
HOME = ENV["AIRLOCK_HOME"]
PKI = os.path.join(HOME, "pki")
KEYS = os.path.join(HOME, "keys")
SC = grpc.StatusCode
CALL_TIMEOUT = 60.0
WAIT = 60.0  # deadline for anything we wait for
failed = 0

sys.path.insert(0, ENV["GEN_DIR"])
from airlock.v1 import common_pb2 as C  # noqa: E402
from airlock.v1 import grant_pb2 as G  # noqa: E402
from airlock.v1 import intake_pb2 as P  # noqa: E402

EXEC0 = "spiffe://airlock/executor/executor-0"
EXEC1 = "spiffe://airlock/executor/executor-1"
EXEC2 = "spiffe://airlock/executor/executor-2"
INTAKE_ID = "spiffe://airlock/intake/intake-0"
TERMINAL = {P.JOB_STATE_SUCCEEDED, P.JOB_STATE_FAILED, P.JOB_STATE_CANCELLED,
            P.JOB_STATE_TIMED_OUT}


class Skip(Exception):
    pass


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


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
            why = f"unexpected RPC error {e.code()} {e.details()!r} {reason_name(e)}"
        print(f"FAIL {name}: {why}", flush=True)
        traceback.print_exc(file=sys.stderr)


def expect_code(fn, code, reason=None, field=None):
    """Runs fn(); it must fail with code (and ErrorDetail reason / field when given)."""
    try:
        r = fn()
    except grpc.RpcError as e:
        d = error_detail(e)
        expect(e.code() == code,
               f"got {e.code()} {e.details()!r} {reason_name(e)}, want {code}")
        if reason is not None:
            expect(d is not None and d.reason == reason,
                   f"reason {reason_name(e)}, want {C.ErrorReason.Name(reason)} ({e.details()!r})")
        if field is not None:
            expect(d is not None and d.field == field,
                   f"ErrorDetail.field {d.field if d else None!r}, want {field!r} ({e.details()!r})")
        return e
    raise CheckFailed(f"call succeeded ({type(r).__name__}), want {code}")


def wait_until(what, fn, deadline=WAIT, interval=0.05):
    end = time.monotonic() + deadline
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise CheckFailed(f"gave up waiting {deadline:.0f}s for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# servers

def pools_config():
    """p00..p39: one pool per check, served by every executor; only2: executor-2 only."""
    entries = [f'{{ name = "p{i:02d}"; executors = ["spiffe://airlock/executor/*"]; }}'
               for i in range(40)]
    entries.append('{ name = "default"; executors = ["spiffe://airlock/executor/*"]; }')
    entries.append('{ name = "only2"; executors = ["spiffe://airlock/executor/executor-2"]; }')
    entries.append('{ name = "small"; executors = ["spiffe://airlock/executor/*"]; '
                   'defaults = { wall_time = "5s"; memory = "64MiB"; pids = 32; }; '
                   'max = { wall_time = "10s"; memory = "128MiB"; pids = 50; }; }')
    return "pools = ( " + ",\n  ".join(entries) + " );\n"


PRINCIPALS = ('principals = (\n'
              '  { principal = "mtls/acme"; identities = ["spiffe://airlock/client/acme-bot"]; '
              'pools = ["p*", "default"]; },\n'
              '  { principal = "quota/*"; pools = ["p3*"]; max_queued = 3; max_concurrent = 1; },\n'
              '  { principal = "nopool/*"; pools = []; },\n'
              '  { principal = "**"; pools = ["*"]; }\n'
              ');\n')


class Server:
    """One airlock-intake process with its own config, data dir and log."""

    def __init__(self, name, extra="", data_dir=None,
                 retry='backoff_base = "100ms"; backoff_max = "400ms";'):
        self.name = name
        self.data_dir = data_dir or os.path.join(T_DIR, f"{name}.data")
        self.extra = extra
        self.retry = retry
        self.proc = None
        self.port = None
        self.ops = None
        self.channels = {}
        self.starts = 0

    def config(self):
        return (f'listen = "127.0.0.1:0"; ops_listen = "127.0.0.1:0";\n'
                f'tls = {{ cert_file = "{PKI}/intake-intake-0.crt"; '
                f'key_file = "{PKI}/intake-intake-0.key"; ca_file = "{PKI}/ca.crt"; '
                f'client_cert = "optional"; }};\n'
                f'data_dir = "{self.data_dir}";\n'
                f'grpc = {{ drain_timeout = "10s"; }};\n'
                f'lease = {{ ttl = "3s"; heartbeat_interval = "1s"; restart_grace = "4s"; }};\n'
                f'retry = {{ {self.retry} }};\n'
                f'grant = {{ key_file = "{KEYS}/intake-0.key"; lifetime = "20s"; '
                f'renew_before = "19s"; }};\n'
                f'api_keys = {{ cache_ttl = "300ms"; }};\n'
                + pools_config() + PRINCIPALS + self.extra)

    def launch(self, args=()):
        self.starts += 1
        base = os.path.join(T_DIR, f"{self.name}.{self.starts}")
        self.err_path = base + ".err"
        with open(base + ".conf", "w") as f:
            f.write(self.config())
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([os.path.join(BIN, "airlock-intake"), "--config",
                                          base + ".conf", *args],
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
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            m = re.search(r"event=service\.start grpc_port=(\d+) ops_port=(\d+)", self.log())
            if m:
                self.port, self.ops = int(m.group(1)), int(m.group(2))
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
                rc = self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise CheckFailed(f"{self.name} still running {WAIT}s after SIGTERM")
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

    def channel(self, ident=None):
        """ident: pki base name ('admin-admin', 'executor-executor-0') or None (no client cert)."""
        if ident not in self.channels:
            kw = {}
            if ident:
                kw = dict(private_key=read(f"{PKI}/{ident}.key"),
                          certificate_chain=read(f"{PKI}/{ident}.crt"))
            creds = grpc.ssl_channel_credentials(root_certificates=read(f"{PKI}/ca.crt"), **kw)
            self.channels[ident] = grpc.secure_channel(
                f"127.0.0.1:{self.port}", creds,
                options=[("grpc.use_local_subchannel_pool", 1),
                         ("grpc.max_receive_message_length", 8 << 20)])
        return self.channels[ident]

    def jobs(self, key=None, ident=None):
        return Jobs(self.channel(ident), key)

    def executor(self, n=0, **kw):
        return Executor(self, f"executor-executor-{n}", **kw)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops}/metrics", timeout=30) as r:
            return r.read().decode()

    def metric(self, name):
        for line in self.metrics().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        return None

    def wait_streams(self, n):
        wait_until(f"{n} lease streams", lambda: self.metric("airlock_intake_lease_streams") == n)

    def ctl(self, *args, check_rc=True):
        r = subprocess.run([os.path.join(BIN, "airlockctl"), *args], capture_output=True,
                           env=dict(os.environ, AIRLOCK_HOME=HOME))
        if check_rc:
            expect(r.returncode == 0, f"airlockctl {' '.join(args)}: status {r.returncode}: "
                   f"{r.stderr.decode()[-300:]}")
        return r

    def new_key(self, principal, scopes="submit,read,cancel", *extra):
        r = self.ctl("keys", "create", "--data-dir", self.data_dir, "--principal", principal,
                     "--scopes", scopes, *extra)
        key = r.stdout.decode().strip()
        expect(re.fullmatch(r"ak_[0-9a-f]{16}\.[0-9a-f]{64}", key),
               f"keys create printed {key!r} on stdout, want only the key")
        return key


def ser(m):
    return m.SerializeToString()


class Jobs:
    def __init__(self, ch, key):
        self.md = [("authorization", f"Bearer {key}")] if key else []
        b = "/airlock.v1.JobService/"
        self._submit = ch.unary_unary(b + "Submit", ser, P.SubmitJobResponse.FromString)
        self._get = ch.unary_unary(b + "Get", ser, P.Job.FromString)
        self._cancel = ch.unary_unary(b + "Cancel", ser, P.Job.FromString)
        self._list = ch.unary_unary(b + "List", ser, P.ListJobsResponse.FromString)
        self._watch = ch.unary_stream(b + "Watch", ser, P.JobEvent.FromString)

    def submit(self, spec, key="", md=None):
        return self._submit(P.SubmitJobRequest(idempotency_key=key, spec=spec),
                            metadata=md if md is not None else self.md, timeout=CALL_TIMEOUT)

    def get(self, job_id):
        return self._get(P.GetJobRequest(job_id=job_id), metadata=self.md, timeout=CALL_TIMEOUT)

    def cancel(self, job_id, reason=""):
        return self._cancel(P.CancelJobRequest(job_id=job_id, reason=reason), metadata=self.md,
                            timeout=CALL_TIMEOUT)

    def list(self, **kw):
        page = kw.pop("page", None) or C.PageRequest()
        return self._list(P.ListJobsRequest(page=page, **kw), metadata=self.md,
                          timeout=CALL_TIMEOUT)

    def watch(self, job_id, after=0, timeout=CALL_TIMEOUT):
        return self._watch(P.WatchJobRequest(job_id=job_id, after_seq=after), metadata=self.md,
                           timeout=timeout)

    def watch_all(self, job_id, after=0):
        """Every event until the stream ends OK."""
        return list(self.watch(job_id, after))

    def wait_state(self, job_id, states):
        states = states if isinstance(states, (set, list, tuple)) else {states}
        return wait_until(f"job {job_id} in {states}",
                          lambda: (lambda j: j if j.state in states else None)(self.get(job_id)))


class Executor:
    """Plays one executor process: a Lease stream read by a thread, reports on demand,
    and (unless paused) heartbeats for the leases it holds every 0.5 s."""

    def __init__(self, srv, ident, slots=4, pools=(), kinds=(), instance=None, auto=True):
        self.srv = srv
        self.ident = ident
        self.instance = instance or secrets.token_hex(16)
        self.slots, self.pools, self.kinds = slots, list(pools), list(kinds)
        ch = srv.channel(ident)
        b = "/airlock.v1.ExecutorService/"
        self._lease = ch.unary_stream(b + "Lease", ser, P.LeaseResponse.FromString)
        self._hb = ch.unary_unary(b + "Heartbeat", ser, P.HeartbeatResponse.FromString)
        self._push = ch.unary_unary(b + "PushEvents", ser, P.PushEventsResponse.FromString)
        self._finish = ch.unary_unary(b + "Finish", ser, P.FinishResponse.FromString)
        self.q = queue.Queue()
        self.held = {}  # job_id -> LeaseRef
        self.lock = threading.Lock()
        self.auto = auto
        self.stopped = threading.Event()
        self.call = None
        self.end = None

    def open(self):
        self.call = self._lease(P.LeaseRequest(slots=self.slots, pools=self.pools,
                                               instance_id=self.instance, version="test",
                                               kinds=self.kinds), timeout=600)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _read(self):
        try:
            for m in self.call:
                self.q.put(m)
            self.end = (SC.OK, "")
        except grpc.RpcError as e:
            self.end = (e.code(), e.details())
        self.q.put(None)

    def _beat(self):
        while not self.stopped.wait(0.5):
            if not self.auto:
                continue
            with self.lock:
                refs = list(self.held.values())
            if not refs:
                continue
            try:
                r = self.heartbeat(refs)
                with self.lock:
                    for st in r.leases:
                        if st.state == P.LEASE_STATE_LOST:
                            self.held.pop(st.job_id, None)
            except grpc.RpcError:
                pass

    def close(self):
        self.stopped.set()
        if self.call:
            self.call.cancel()

    def next(self, timeout=WAIT):
        try:
            m = self.q.get(timeout=timeout)
        except queue.Empty:
            raise CheckFailed(f"{self.ident}: nothing on the Lease stream for {timeout:.0f}s")
        if m is None:
            self.q.put(None)
            raise CheckFailed(f"{self.ident}: Lease stream ended {self.end}")
        return m

    def assignment(self, timeout=WAIT):
        while True:
            m = self.next(timeout)
            if m.WhichOneof("kind") == "assignment":
                a = m.assignment
                with self.lock:
                    self.held[a.job.id] = ref(a)
                return a

    def cancel_msg(self, timeout=WAIT):
        while True:
            m = self.next(timeout)
            if m.WhichOneof("kind") == "cancel":
                return m.cancel

    def drop(self, job_id):
        with self.lock:
            self.held.pop(job_id, None)

    def heartbeat(self, refs, instance=None):
        return self._hb(P.HeartbeatRequest(leases=refs, instance_id=instance or self.instance),
                        timeout=CALL_TIMEOUT)

    def push(self, r, events):
        return self._push(P.PushEventsRequest(lease=r, events=events), timeout=CALL_TIMEOUT)

    def finish(self, r, state=P.JOB_STATE_SUCCEEDED, result=None, last=0, requeue=False):
        resp = self._finish(P.FinishRequest(lease=r, state=state,
                                            result=result or P.JobResult(exit_code=0),
                                            last_event_seq=last, requeue=requeue),
                            timeout=CALL_TIMEOUT)
        self.drop(r.job_id)
        return resp

    def run(self, a, out=b"", state=P.JOB_STATE_SUCCEEDED, code=0):
        """Reports RUNNING, optional stdout, and the outcome of assignment a."""
        r = ref(a)
        ev = [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING))]
        if out:
            ev.append(P.JobEvent(seq=2, stdout_chunk=P.OutputChunk(data=out)))
        self.push(r, ev)
        return self.finish(r, state, P.JobResult(exit_code=code), last=len(ev))


def ref(a):
    return P.LeaseRef(job_id=a.job.id, attempt=a.attempt, fencing_token=a.fencing_token)


def exec_spec(pool="default", argv=("true",), **kw):
    e = kw.pop("exec_kw", {})
    return P.JobSpec(pool=pool, kind=P.JOB_KIND_EXEC, exec=P.ExecSpec(argv=list(argv), **e), **kw)


def events_of(evs, kind):
    return [e for e in evs if e.WhichOneof("event") == kind]


def states_of(evs):
    return [e.state.state for e in events_of(evs, "state")]


# ---------------------------------------------------------------------------
# the checks

def unknown_id():
    return secrets.token_hex(16)


def c_auth(srv, keys):
    ka = keys["alice"]
    mine = srv.jobs(ka).submit(exec_spec("p01")).job.id
    # no key and no client certificate
    expect_code(lambda: srv.jobs().get(mine), SC.UNAUTHENTICATED, C.ERROR_REASON_UNAUTHENTICATED)
    # malformed, wrong scheme, unknown id, wrong secret
    bad = [("authorization", "Bearer nonsense")]
    expect_code(lambda: srv.jobs()._get(P.GetJobRequest(job_id=mine), metadata=bad, timeout=CALL_TIMEOUT),
                SC.UNAUTHENTICATED, C.ERROR_REASON_UNAUTHENTICATED)
    basic = [("authorization", "Basic " + base64.b64encode(b"a:b").decode())]
    expect_code(lambda: srv.jobs()._get(P.GetJobRequest(job_id=mine), metadata=basic, timeout=CALL_TIMEOUT),
                SC.UNAUTHENTICATED)
    kid, secret = ka.split(".")
    wrong = kid + "." + ("0" if secret[0] != "0" else "1") + secret[1:]
    expect_code(lambda: srv.jobs(wrong).get(mine), SC.UNAUTHENTICATED)
    other = "ak_" + secrets.token_hex(8) + "." + secrets.token_hex(32)
    expect_code(lambda: srv.jobs(other).get(mine), SC.UNAUTHENTICATED)
    # the right key works
    expect(srv.jobs(ka).get(mine).principal.name == "acme/alice", "Get with the key failed")
    # missing scopes
    ro = srv.new_key("acme/alice", "read")
    expect_code(lambda: srv.jobs(ro).submit(exec_spec("p01")), SC.PERMISSION_DENIED,
                C.ERROR_REASON_SCOPE_MISSING)
    expect_code(lambda: srv.jobs(ro).cancel(mine), SC.PERMISSION_DENIED, C.ERROR_REASON_SCOPE_MISSING)
    expect(srv.jobs(ro).get(mine).id == mine, "read scope cannot Get")
    so = srv.new_key("acme/alice", "jobs.submit")
    expect_code(lambda: srv.jobs(so).get(mine), SC.PERMISSION_DENIED, C.ERROR_REASON_SCOPE_MISSING)
    expect_code(lambda: srv.jobs(so).list(), SC.PERMISSION_DENIED, C.ERROR_REASON_SCOPE_MISSING)
    expect_code(lambda: list(srv.jobs(so).watch(mine)), SC.PERMISSION_DENIED,
                C.ERROR_REASON_SCOPE_MISSING)
    # expired
    short = srv.new_key("acme/alice", "read", "--expires", "1s")
    wait_until("the 1s key to be refused", lambda: _refused(srv.jobs(short), mine))
    # revoked: works, then refused within the cache ttl (300ms) after keys revoke
    rk = srv.new_key("acme/alice", "read")
    expect(srv.jobs(rk).get(mine).id == mine, "a fresh key does not work")
    srv.ctl("keys", "revoke", "--data-dir", srv.data_dir, rk.split(".")[0])
    wait_until("the revoked key to be refused", lambda: _refused(srv.jobs(rk), mine))
    ls = srv.ctl("keys", "ls", "--data-dir", srv.data_dir).stdout.decode()
    expect(rk.split(".")[0] in ls and "revoked" in ls and "expired" in ls,
           f"keys ls does not show the revoked and expired keys: {ls}")
    for k in (ka, ro, so, short, rk):
        expect(k.split(".")[1] not in ls, "keys ls shows a secret")
    # a client certificate that maps to no principal, an executor certificate
    expect_code(lambda: srv.jobs(ident="client-client").get(mine), SC.PERMISSION_DENIED,
                C.ERROR_REASON_IDENTITY_NOT_ALLOWED)
    expect_code(lambda: srv.jobs(ident="executor-executor-0").submit(exec_spec("p01")),
                SC.PERMISSION_DENIED)
    # a mapped client certificate acts as its principal
    j = srv.jobs(ident="client-acme-bot").submit(exec_spec("p01")).job
    expect(j.principal.name == "mtls/acme" and j.principal.auth_method == C.AUTH_METHOD_MTLS and
           j.principal.key_id == "spiffe://airlock/client/acme-bot",
           f"mTLS principal {j.principal}")
    expect(j.principal.key_id != "" and srv.jobs(ka).get(mine).principal.key_id == ka.split(".")[0],
           "Principal.key_id is not the API key id")
    expect_code(lambda: srv.jobs(ident="client-acme-bot").get(mine), SC.NOT_FOUND)
    # admin sees everything
    expect(srv.jobs(ident="admin-admin").get(mine).id == mine, "admin cannot Get a job")
    # a request id is echoed in ErrorDetail
    e = expect_code(lambda: srv.jobs(ka)._get(P.GetJobRequest(job_id=unknown_id()),
                                              metadata=srv.jobs(ka).md + [("airlock-request-id", "req-42")],
                                              timeout=CALL_TIMEOUT), SC.NOT_FOUND)
    expect(error_detail(e).request_id == "req-42", f"request id {error_detail(e).request_id!r}")
    for jid in (mine, j.id):
        srv.jobs(ident="admin-admin").cancel(jid)


def _refused(jobs, job_id):
    try:
        jobs.get(job_id)
        return False
    except grpc.RpcError as e:
        expect(e.code() == SC.UNAUTHENTICATED, f"got {e.code()} {e.details()!r}")
        return True


def raw_submit(srv, key, spec_bytes):
    """Submit with hand-made bytes (unknown fields)."""
    ch = srv.channel(None)
    f = ch.unary_unary("/airlock.v1.JobService/Submit", lambda b: b, P.SubmitJobResponse.FromString)
    body = b"\x12" + _varint(len(spec_bytes)) + spec_bytes
    return f(body, metadata=[("authorization", f"Bearer {key}")], timeout=CALL_TIMEOUT)


def _varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def c_validation(srv, keys):
    jobs = srv.jobs(keys["alice"])
    E, F = P.ExecSpec, P.FileSpec
    IA, PD = SC.INVALID_ARGUMENT, SC.PERMISSION_DENIED
    proxy = P.NetworkPolicy(mode=P.NETWORK_MODE_PROXY,
                            destinations=[P.NetworkDestination(host="api.example.com")])
    cred = P.CredentialBinding(credential="ci/github", env_var="TOKEN",
                               destinations=["api.example.com"])
    cases = [
        ("no spec", None, IA, "spec"),
        ("no pool", P.JobSpec(kind=P.JOB_KIND_EXEC, exec=E(argv=["x"])), IA, "spec.pool"),
        ("bad pool", exec_spec("a b"), IA, "spec.pool"),
        ("unknown pool", exec_spec("nope"), PD, "spec.pool"),
        ("no kind", P.JobSpec(pool="p02", exec=E(argv=["x"])), IA, "spec.kind"),
        ("unknown kind", P.JobSpec(pool="p02", kind=99, exec=E(argv=["x"])), IA, "spec.kind"),
        ("exec missing", P.JobSpec(pool="p02", kind=P.JOB_KIND_EXEC), IA, "spec.exec"),
        ("exec with file", exec_spec("p02", file=F(path="x")), IA, "spec.file"),
        ("empty argv", exec_spec("p02", argv=()), IA, "spec.exec.argv"),
        ("empty argv0", exec_spec("p02", argv=("",)), IA, "spec.exec.argv[0]"),
        ("env name", exec_spec("p02", exec_kw=dict(env={"1X": "v"})), IA, "spec.exec.env[1X]"),
        ("env reserved", exec_spec("p02", exec_kw=dict(env={"AIRLOCK_X": "v"})), IA,
         "spec.exec.env[AIRLOCK_X]"),
        ("env is a binding", exec_spec("p02", exec_kw=dict(env={"TOKEN": "v"}), network=proxy,
                                       credentials=[cred]), IA, "spec.exec.env[TOKEN]"),
        ("stdin too large", exec_spec("p02", exec_kw=dict(stdin=b"x" * (1024 * 1024 + 1))), IA,
         "spec.exec.stdin"),
        ("negative timeout", exec_spec("p02", exec_kw=dict(timeout_ms=-1)), IA,
         "spec.exec.timeout_ms"),
        ("argv too long", exec_spec("p02", argv=("x" * 300000,)), IA, "spec.exec"),
        ("session syntax", exec_spec("p02", session_id="a b"), IA, "spec.session_id"),
        ("file missing", P.JobSpec(pool="p02", kind=P.JOB_KIND_READ_FILE), IA, "spec.file"),
        ("file path empty", P.JobSpec(pool="p02", kind=P.JOB_KIND_READ_FILE, file=F()), IA,
         "spec.file.path"),
        ("write outside", P.JobSpec(pool="p02", kind=P.JOB_KIND_WRITE_FILE,
                                    file=F(path="/etc/passwd")), IA, "spec.file.path"),
        ("write dotdot", P.JobSpec(pool="p02", kind=P.JOB_KIND_WRITE_FILE,
                                   file=F(path="a/../../x")), IA, "spec.file.path"),
        ("read with data", P.JobSpec(pool="p02", kind=P.JOB_KIND_READ_FILE,
                                     file=F(path="x", data=b"d")), IA, "spec.file.data"),
        ("file with exec", P.JobSpec(pool="p02", kind=P.JOB_KIND_LIST_DIR, file=F(path="."),
                                     exec=E(argv=["x"])), IA, "spec.exec"),
        ("negative max_bytes", P.JobSpec(pool="p02", kind=P.JOB_KIND_READ_FILE,
                                         file=F(path="x", max_bytes=-1)), IA,
         "spec.file.max_bytes"),
        ("negative limit", exec_spec("p02", limits=C.ResourceLimits(memory_bytes=-1)), IA,
         "spec.limits.memory_bytes"),
        ("destinations without proxy", exec_spec(
            "p02", network=P.NetworkPolicy(destinations=[P.NetworkDestination(host="a.b")])), IA,
         "spec.network.destinations"),
        ("unknown network mode", exec_spec("p02", network=P.NetworkPolicy(mode=7)), IA,
         "spec.network.mode"),
        ("bad host", exec_spec("p02", network=P.NetworkPolicy(
            mode=P.NETWORK_MODE_PROXY, destinations=[P.NetworkDestination(host="exa mple")])), IA,
         "spec.network.destinations[0].host"),
        ("bad port", exec_spec("p02", network=P.NetworkPolicy(
            mode=P.NETWORK_MODE_PROXY, destinations=[P.NetworkDestination(host="a.b", port=70000)])),
         IA, "spec.network.destinations[0].port"),
        ("lower-case method", exec_spec("p02", network=P.NetworkPolicy(
            mode=P.NETWORK_MODE_PROXY,
            destinations=[P.NetworkDestination(host="a.b", methods=["get"])])), IA,
         "spec.network.destinations[0].methods[0]"),
        ("path prefix", exec_spec("p02", network=P.NetworkPolicy(
            mode=P.NETWORK_MODE_PROXY,
            destinations=[P.NetworkDestination(host="a.b", path_prefixes=["x"])])), IA,
         "spec.network.destinations[0].path_prefixes[0]"),
        ("credentials without proxy", exec_spec("p02", credentials=[cred]), IA,
         "spec.credentials"),
        ("binding env reserved", exec_spec("p02", network=proxy, credentials=[
            P.CredentialBinding(credential="c", env_var="AIRLOCK_T", destinations=["api.example.com"])]),
         IA, "spec.credentials[0].env_var"),
        ("binding env twice", exec_spec("p02", network=proxy, credentials=[cred, cred]), IA,
         "spec.credentials[1].env_var"),
        ("binding without destinations", exec_spec("p02", network=proxy, credentials=[
            P.CredentialBinding(credential="c", env_var="T")]), IA,
         "spec.credentials[0].destinations"),
        ("binding not covered", exec_spec("p02", network=proxy, credentials=[
            P.CredentialBinding(credential="c", env_var="T", destinations=["evil.example.net"])]),
         IA, "spec.credentials[0].destinations[0]"),
        ("binding other port", exec_spec("p02", network=proxy, credentials=[
            P.CredentialBinding(credential="c", env_var="T", destinations=["api.example.com:8443"])]),
         IA, "spec.credentials[0].destinations[0]"),
        ("bad credential name", exec_spec("p02", network=proxy, credentials=[
            P.CredentialBinding(credential="a b", env_var="T", destinations=["api.example.com"])]),
         IA, "spec.credentials[0].credential"),
        ("label key", exec_spec("p02", labels={"Upper": "v"}), IA, "spec.labels[Upper]"),
        ("label value", exec_spec("p02", labels={"k": "v" * 257}), IA, "spec.labels[k]"),
        ("too many labels", exec_spec("p02", labels={f"k{i}": "v" for i in range(17)}), IA,
         "spec.labels"),
        ("negative queue timeout", exec_spec("p02", queue_timeout_ms=-5), IA,
         "spec.queue_timeout_ms"),
        ("negative attempts", exec_spec("p02", max_attempts=-1), IA, "spec.max_attempts"),
    ]
    for name, spec, code, field in cases:
        try:
            expect_code(lambda: jobs._submit(P.SubmitJobRequest(spec=spec) if spec is not None
                                             else P.SubmitJobRequest(), metadata=jobs.md,
                                             timeout=CALL_TIMEOUT), code, field=field)
        except CheckFailed as e:
            raise CheckFailed(f"{name}: {e}")
    # pool that exists but this principal may not use: the same answer as an unknown one
    nk = srv.new_key("nopool/x")
    e = expect_code(lambda: srv.jobs(nk).submit(exec_spec("p02")), PD,
                    C.ERROR_REASON_POOL_NOT_ALLOWED, "spec.pool")
    expect_code(lambda: jobs.submit(exec_spec("p02"), key="bad\x01key"), IA, field="idempotency_key")
    expect_code(lambda: jobs.submit(exec_spec("p02"), key="k" * 129), IA, field="idempotency_key")
    # unknown fields anywhere in the spec are refused
    good = exec_spec("p02").SerializeToString()
    expect_code(lambda: raw_submit(srv, keys["alice"], good + b"\x98\x06\x01"), IA, field="spec")
    # the limits and attempts the job gets
    j = jobs.submit(exec_spec("small", limits=C.ResourceLimits(memory_bytes=1 << 30),
                              max_attempts=50)).job
    lim = j.spec.limits
    expect(lim.memory_bytes == 128 << 20 and lim.wall_time_ms == 5000 and lim.pids == 32 and
           lim.cpu_time_ms == 600000, f"effective limits {lim}")
    expect(j.spec.max_attempts == 10 and j.spec.queue_timeout_ms == 3600000,
           f"max_attempts {j.spec.max_attempts} queue_timeout_ms {j.spec.queue_timeout_ms}")
    j2 = jobs.submit(exec_spec("small")).job
    expect(j2.spec.max_attempts == 3, f"default max_attempts {j2.spec.max_attempts}")
    # a job binding credentials is accepted (intake has a grant key)
    j3 = jobs.submit(exec_spec("p02", network=proxy, credentials=[cred])).job
    expect(j3.state == P.JOB_STATE_QUEUED and j3.attempt == 0 and j3.last_seq == 1, f"{j3}")
    for jid in (j.id, j2.id, j3.id):
        jobs.cancel(jid)


def c_idempotency(srv, keys):
    a, b = srv.jobs(keys["alice"]), srv.jobs(keys["bob"])
    spec = exec_spec("p03", argv=("echo", "1"), exec_kw=dict(env={"A": "1", "B": "2"}),
                     labels={"x": "1", "y": "2"})
    r1 = a.submit(spec, key="order-1")
    expect(not r1.deduplicated and r1.job.idempotency_key == "order-1", f"{r1}")
    r2 = a.submit(spec, key="order-1")
    expect(r2.deduplicated and r2.job.id == r1.job.id, "same key + same spec did not return the job")
    # the same spec with maps in another order is the same spec
    spec2 = exec_spec("p03", argv=("echo", "1"), exec_kw=dict(env={"B": "2", "A": "1"}),
                      labels={"y": "2", "x": "1"})
    r3 = a.submit(spec2, key="order-1")
    expect(r3.deduplicated and r3.job.id == r1.job.id, "reordered maps counted as another spec")
    expect_code(lambda: a.submit(exec_spec("p03", argv=("echo", "2")), key="order-1"),
                SC.ALREADY_EXISTS, C.ERROR_REASON_IDEMPOTENCY_KEY_REUSED, "idempotency_key")
    # keys are per principal: bob's "order-1" is his own
    rb = b.submit(exec_spec("p03", argv=("echo", "2")), key="order-1")
    expect(not rb.deduplicated and rb.job.id != r1.job.id, "bob's key collided with alice's")
    expect_code(lambda: b.get(r1.job.id), SC.NOT_FOUND)
    # a cancelled job still answers its key
    a.cancel(r1.job.id)
    r4 = a.submit(spec, key="order-1")
    expect(r4.deduplicated and r4.job.state == P.JOB_STATE_CANCELLED, "key forgot its job")
    b.cancel(rb.job.id)


def c_quotas(srv, keys):
    q = srv.jobs(srv.new_key("quota/q"))
    ids = [q.submit(exec_spec("p30", argv=("true", str(i)))).job.id for i in range(3)]
    expect_code(lambda: q.submit(exec_spec("p30")), SC.RESOURCE_EXHAUSTED,
                C.ERROR_REASON_QUOTA_EXCEEDED)
    ex = srv.executor(0, slots=4, pools=["p30"]).open()
    try:
        a = ex.assignment()
        ex.push(ref(a), [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING))])
        states = [q.get(i).state for i in ids]
        expect(states.count(P.JOB_STATE_RUNNING) == 1 and states.count(P.JOB_STATE_QUEUED) == 2,
               f"max_concurrent 1 but states {states}")
        ex.finish(ref(a), last=1)
        a2 = ex.assignment()
        expect(a2.job.id in ids and a2.job.id != a.job.id, "the next job was not leased")
        more = q.submit(exec_spec("p30", argv=("true", "x"))).job.id  # 1 queued + this
        ex.finish(ref(a2))
        for i in ids + [more]:
            if q.get(i).state not in TERMINAL:
                q.cancel(i)
    finally:
        ex.close()


def c_isolation(srv, keys):
    a, b = srv.jobs(keys["alice"]), srv.jobs(keys["bob"])
    ex = srv.executor(0, slots=4, pools=["p05"]).open()
    try:
        j = a.submit(exec_spec("p05", session_id="s1"), key="shared").job
        a1 = ex.assignment()
        expect(a1.job.id == j.id, "alice's session job not leased")
        j3 = a.submit(exec_spec("p05", session_id="s1", argv=("echo", "second"))).job
        # bob's session "s1" is another session: it runs while alice's s1 job runs
        j2 = b.submit(exec_spec("p05", session_id="s1")).job
        a2 = ex.assignment()
        expect(a2.job.id == j2.id, f"expected bob's job, got {a2.job.id}")
        expect(a.get(j3.id).state == P.JOB_STATE_QUEUED, "alice's second s1 job ran beside the first")
        # bob sees nothing of alice's: the same answer as for an unknown id
        eu = expect_code(lambda: b.get(unknown_id()), SC.NOT_FOUND, C.ERROR_REASON_NOT_FOUND)
        eb = expect_code(lambda: b.get(j.id), SC.NOT_FOUND, C.ERROR_REASON_NOT_FOUND)
        expect(eb.details() == eu.details(), "another principal's job answers differently")
        expect_code(lambda: list(b.watch(j.id)), SC.NOT_FOUND)
        expect_code(lambda: b.cancel(j.id), SC.NOT_FOUND)
        expect(all(x.id != j.id for x in b.list(page=C.PageRequest(page_size=500)).jobs),
               "bob's List shows alice's job")
        expect_code(lambda: b.list(principal="acme/alice"), SC.PERMISSION_DENIED)
        expect(a.get(j.id).state == P.JOB_STATE_LEASED, "bob's calls changed alice's job")
        # bob's idempotency key "shared" is his own
        rb = b.submit(exec_spec("p05", argv=("other",)), key="shared")
        expect(not rb.deduplicated, "bob hit alice's idempotency key")
        ab = ex.assignment()
        expect(ab.job.id == rb.job.id, "bob's second job was not leased before alice's blocked one")
        # admin sees and lists alice's jobs
        adm = srv.jobs(ident="admin-admin")
        expect(adm.get(j.id).id == j.id, "admin cannot Get")
        ids = [x.id for x in adm.list(principal="acme/alice", page=C.PageRequest(page_size=500)).jobs]
        expect(j.id in ids, "admin List of alice's jobs misses one")
        # finishing alice's first s1 job lets the second run, on the same executor instance
        ex.run(a1)
        a3 = ex.assignment()
        expect(a3.job.id == j3.id and not a3.workspace_reset, "the session's next job did not follow")
        ex.run(a3)
        ex.run(a2)
        ex.run(ab)
    finally:
        ex.close()


def c_pools(srv, keys):
    a = srv.jobs(keys["alice"])
    # identities and arguments
    for ident in ("client-client", "admin-admin"):
        exe = Executor(srv, ident).open()
        exe.q.get(timeout=WAIT)
        expect(exe.end and exe.end[0] == SC.PERMISSION_DENIED, f"{ident} leased: {exe.end}")
    bad = srv.executor(0, pools=["only2"]).open()
    bad.q.get(timeout=WAIT)
    expect(bad.end and bad.end[0] == SC.PERMISSION_DENIED, f"pool not assigned: {bad.end}")
    for kw, why in ((dict(slots=0), "slots 0"), (dict(instance="xyz"), "instance id"),
                    (dict(kinds=[99]), "unknown kind")):
        e = srv.executor(0, **kw).open()
        e.q.get(timeout=WAIT)
        expect(e.end and e.end[0] == SC.INVALID_ARGUMENT, f"{why}: {e.end}")
    # executor-0 leases from all its pools; the only2 job never reaches it
    e0 = srv.executor(0, slots=2).open()
    e2 = None
    try:
        srv.wait_streams(1)
        x = a.submit(exec_spec("only2")).job
        y = a.submit(exec_spec("p06")).job
        got = e0.assignment()
        expect(got.job.id == y.id, f"executor-0 got {got.job.id}, want the p06 job")
        expect(a.get(x.id).state == P.JOB_STATE_QUEUED, "the only2 job left the queue")
        # each pool's own depth (what a per-pool autoscaler reads)
        per_pool = {m: srv.metric(m) for m in (
            'airlock_intake_pool_jobs_queued{pool="only2"}',
            'airlock_intake_pool_jobs_running{pool="p06"}',
            'airlock_intake_pool_jobs_queued{pool="p06"}')}
        expect(list(per_pool.values()) == [1, 1, 0], f"per-pool gauges {per_pool}")
        e2 = srv.executor(2, slots=1, pools=["only2"]).open()
        got2 = e2.assignment()
        expect(got2.job.id == x.id and got2.job.executor_id == EXEC2, "executor-2 did not get it")
        e0.run(got)
        e2.run(got2)
        expect(e0.q.empty(), "executor-0 received another job")
    finally:
        for e in (e0, e2):
            if e:
                e.close()


def c_fencing(srv, keys):
    a = srv.jobs(keys["alice"])
    e0 = srv.executor(0, slots=1, pools=["p07"]).open()
    e1 = srv.executor(1, slots=1, pools=["p07"]).open()
    try:
        j = a.submit(exec_spec("p07")).job
        srv.wait_streams(2)
        first = e0 if not e0.q.empty() else None
        # whichever executor got it holds it; the other one tries to use its token
        asg, holder, other = None, None, None
        end = time.monotonic() + WAIT
        while asg is None and time.monotonic() < end:
            for x, y in ((e0, e1), (e1, e0)):
                if not x.q.empty():
                    asg, holder, other = x.assignment(), x, y
                    break
            time.sleep(0.02)
        expect(asg is not None and asg.job.id == j.id, "nobody got the job")
        del first
        r = ref(asg)
        expect(len(asg.fencing_token) == 16 and asg.attempt == 1 and asg.lease_ttl_ms == 3000 and
               asg.heartbeat_interval_ms == 1000, f"assignment {asg.attempt} {asg.lease_ttl_ms}")
        expect(asg.job.spec.exec.argv == ["true"] and asg.job.executor_id in (EXEC0, EXEC1),
               "assignment job")
        running = [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING))]
        lost = C.ERROR_REASON_LEASE_LOST
        FP = SC.FAILED_PRECONDITION
        # another executor presenting the holder's token
        expect_code(lambda: other.push(r, running), FP, lost)
        expect_code(lambda: other.finish(r), FP, lost)
        st = other.heartbeat([r]).leases[0]
        expect(st.state == P.LEASE_STATE_LOST, f"foreign heartbeat {st}")
        # the holder with a wrong token, a wrong attempt, a short token, another instance
        tok = bytearray(asg.fencing_token)
        tok[0] ^= 1
        for bad in (P.LeaseRef(job_id=j.id, attempt=1, fencing_token=bytes(tok)),
                    P.LeaseRef(job_id=j.id, attempt=2, fencing_token=asg.fencing_token),
                    P.LeaseRef(job_id=j.id, attempt=1, fencing_token=asg.fencing_token[:8]),
                    P.LeaseRef(job_id=unknown_id(), attempt=1, fencing_token=asg.fencing_token)):
            expect_code(lambda: holder.push(bad, running), FP, lost)
            expect_code(lambda: holder.finish(bad), FP, lost)
            expect(holder.heartbeat([bad]).leases[0].state == P.LEASE_STATE_LOST, "bad heartbeat")
        expect(holder.heartbeat([r], instance=secrets.token_hex(16)).leases[0].state ==
               P.LEASE_STATE_LOST, "heartbeat from another instance kept the lease")
        # invalid reports
        expect_code(lambda: holder.push(r, [P.JobEvent(seq=1, result=P.JobResult())]),
                    SC.INVALID_ARGUMENT, field="events[0]")
        expect_code(lambda: holder.push(r, [P.JobEvent(seq=2, state=P.StateChange(
            state=P.JOB_STATE_RUNNING))]), SC.INVALID_ARGUMENT, field="events[0]")
        expect_code(lambda: holder.push(r, [P.JobEvent(seq=1, stdout_chunk=P.OutputChunk(
            data=b"x" * (64 * 1024 + 1)))]), SC.INVALID_ARGUMENT, field="events[0]")
        expect_code(lambda: holder.finish(r, state=P.JOB_STATE_RUNNING), SC.INVALID_ARGUMENT,
                    field="state")
        # the holder: RUNNING, a resent batch, a gap, Finish before the gap is filled
        expect(holder.push(r, running).acked_seq == 1, "RUNNING not acked")
        expect(a.get(j.id).state == P.JOB_STATE_RUNNING, "not RUNNING")
        expect(holder.push(r, running).acked_seq == 1, "resent batch")
        gap = [P.JobEvent(seq=3, stdout_chunk=P.OutputChunk(data=b"late"))]
        expect(holder.push(r, gap).acked_seq == 1, "an event after a gap was stored")
        expect_code(lambda: holder.finish(r, last=3), FP, C.ERROR_REASON_SEQUENCE_GAP,
                    "last_event_seq")
        two = [P.JobEvent(seq=2, stdout_chunk=P.OutputChunk(data=b"hello "))] + gap
        expect(holder.push(r, two).acked_seq == 3, "the filled gap was not stored")
        expect(holder.push(r, two).acked_seq == 3, "resend")
        f1 = holder.finish(r, last=3)
        expect(f1.state == P.JOB_STATE_SUCCEEDED, f"finish {f1}")
        # a repeated Finish answers the recorded state; other reports are refused
        expect(holder.finish(r, state=P.JOB_STATE_FAILED, last=3).state == P.JOB_STATE_SUCCEEDED,
               "a repeated Finish changed the outcome")
        expect_code(lambda: other.finish(r), FP, lost)
        expect_code(lambda: holder.push(r, [P.JobEvent(seq=4, stdout_chunk=P.OutputChunk(
            data=b"x"))]), FP, lost)
        expect(holder.heartbeat([r]).leases[0].state == P.LEASE_STATE_LOST, "heartbeat after end")
        evs = a.watch_all(j.id)
        expect([e.seq for e in evs] == list(range(1, len(evs) + 1)), "event seqs have gaps")
        out = b"".join(e.stdout_chunk.data for e in events_of(evs, "stdout_chunk"))
        expect(out == b"hello late", f"stdout {out!r} (duplicates or losses)")
        expect(states_of(evs) == [P.JOB_STATE_QUEUED, P.JOB_STATE_LEASED, P.JOB_STATE_RUNNING,
                                  P.JOB_STATE_SUCCEEDED], f"states {states_of(evs)}")
        expect(evs[-2].WhichOneof("event") == "result" and evs[-1].attempt == 1, "result event")
        expect(a.get(j.id).result.exit_code == 0, "result not stored")
    finally:
        e0.close()
        e1.close()


def c_expiry(srv, keys):
    a = srv.jobs(keys["alice"])
    ex = srv.executor(0, slots=1, pools=["p08"], auto=False).open()
    before = srv.metric("airlock_intake_lease_expiries_total") or 0
    try:
        j = a.submit(exec_spec("p08")).job
        a1 = ex.assignment()
        r1 = ref(a1)
        ex.push(r1, [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING)),
                     P.JobEvent(seq=2, stdout_chunk=P.OutputChunk(data=b"first "))])
        # no heartbeats: the lease expires, the job runs again as attempt 2
        a2 = ex.assignment()
        expect(a2.job.id == j.id and a2.attempt == 2 and a2.job.attempt == 2 and
               a2.fencing_token != a1.fencing_token, f"second attempt {a2.attempt}")
        # the stale attempt's reports are refused
        expect_code(lambda: ex.push(r1, [P.JobEvent(seq=3, stdout_chunk=P.OutputChunk(data=b"x"))]),
                    SC.FAILED_PRECONDITION, C.ERROR_REASON_LEASE_LOST)
        expect_code(lambda: ex.finish(r1), SC.FAILED_PRECONDITION, C.ERROR_REASON_LEASE_LOST)
        expect(ex.heartbeat([r1]).leases[0].state == P.LEASE_STATE_LOST, "stale heartbeat")
        r2 = ref(a2)
        hb = ex.heartbeat([r2]).leases[0]
        expect(hb.state == P.LEASE_STATE_ACTIVE and hb.lease_ttl_ms == 3000, f"heartbeat {hb}")
        ex.push(r2, [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING)),
                     P.JobEvent(seq=2, stdout_chunk=P.OutputChunk(data=b"second"))])
        expect(ex.finish(r2, last=2).state == P.JOB_STATE_SUCCEEDED, "finish attempt 2")
        evs = a.watch_all(j.id)
        msgs = [e.state.message for e in events_of(evs, "state")]
        expect(any("re-queued as attempt 2" in m for m in msgs), f"state messages {msgs}")
        expect([e.attempt for e in events_of(evs, "stdout_chunk")] == [1, 2],
               "output events do not name their attempts")
        after = srv.metric("airlock_intake_lease_expiries_total")
        expect(after is not None and after >= before + 1, f"lease expiries {before} -> {after}")
    finally:
        ex.close()


def c_max_attempts(srv, keys):
    a = srv.jobs(keys["alice"])
    ex = srv.executor(0, slots=1, pools=["p09"], auto=False).open()
    try:
        j = a.submit(exec_spec("p09", max_attempts=2)).job
        expect(ex.assignment().attempt == 1, "attempt 1")
        expect(ex.assignment().attempt == 2, "attempt 2")
        got = a.wait_state(j.id, TERMINAL)
        expect(got.state == P.JOB_STATE_FAILED and
               got.result.failure_reason == P.FAILURE_REASON_EXECUTOR_LOST and got.attempt == 2,
               f"after two lost leases: {P.JobState.Name(got.state)} "
               f"{P.FailureReason.Name(got.result.failure_reason)}")
    finally:
        ex.close()


def c_watch(srv, keys):
    a = srv.jobs(keys["alice"])
    ex = srv.executor(0, slots=1, pools=["p10"]).open()
    try:
        j = a.submit(exec_spec("p10")).job
        full = []
        t = threading.Thread(target=lambda: full.extend(a.watch(j.id)), daemon=True)
        t.start()
        # a second watcher reads three events, disconnects, resumes after the last one
        part = []
        w2 = a.watch(j.id)
        asg = ex.assignment()
        r = ref(asg)
        chunks = [f"line {i}\n".encode() for i in range(6)]
        ex.push(r, [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING))] +
                [P.JobEvent(seq=2 + i, stdout_chunk=P.OutputChunk(data=c)) for i, c in
                 enumerate(chunks[:3])])
        for _ in range(3):
            part.append(next(w2))
        w2.cancel()
        ex.push(r, [P.JobEvent(seq=5 + i, stderr_chunk=P.OutputChunk(data=c)) for i, c in
                    enumerate(chunks[3:])])
        resumed = a.watch(j.id, after=part[-1].seq)
        ex.finish(r, last=7)
        part.extend(resumed)
        t.join(WAIT)
        expect(not t.is_alive(), "the first Watch did not end after the terminal state")
        expect([e.seq for e in full] == list(range(1, len(full) + 1)), "seq gaps")
        expect(full[-1].state.state == P.JOB_STATE_SUCCEEDED, "the last event is not terminal")
        expect([e.SerializeToString() for e in part] == [e.SerializeToString() for e in full],
               "the resumed Watch lost or duplicated events")
        expect(len(full) == 11, f"{len(full)} events")
        # replay of a finished job, resume at the end, beyond the end, negative
        expect([e.seq for e in a.watch_all(j.id)] == [e.seq for e in full], "replay")
        last = a.get(j.id).last_seq
        expect(last == full[-1].seq and a.watch_all(j.id, after=last) == [], "after last_seq")
        expect_code(lambda: a.watch_all(j.id, after=last + 1), SC.OUT_OF_RANGE,
                    C.ERROR_REASON_EVENTS_EXPIRED)
        expect_code(lambda: a.watch_all(j.id, after=-1), SC.INVALID_ARGUMENT, field="after_seq")
        expect_code(lambda: a.watch_all(""), SC.INVALID_ARGUMENT, field="job_id")
    finally:
        ex.close()


def c_cancel(srv, keys):
    a = srv.jobs(keys["alice"])
    q = a.submit(exec_spec("p11")).job
    c = a.cancel(q.id, "no longer needed")
    expect(c.state == P.JOB_STATE_CANCELLED and c.result.failure_reason ==
           P.FAILURE_REASON_CANCELLED, f"queued cancel: {c}")
    evs = a.watch_all(q.id)
    expect(evs[-1].state.state == P.JOB_STATE_CANCELLED and
           evs[-1].state.message == "no longer needed", f"last event {evs[-1]}")
    expect(a.cancel(q.id).state == P.JOB_STATE_CANCELLED and a.get(q.id).last_seq == c.last_seq,
           "cancelling a terminal job changed it")
    expect_code(lambda: a.cancel(q.id, "r" * 257), SC.INVALID_ARGUMENT, field="reason")
    ex = srv.executor(0, slots=2, pools=["p11"]).open()
    try:
        j = a.submit(exec_spec("p11")).job
        asg = ex.assignment()
        r = ref(asg)
        ex.push(r, [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING))])
        c = a.cancel(j.id, "stop it")
        expect(c.state == P.JOB_STATE_RUNNING and c.cancel_requested, f"running cancel: {c}")
        lc = ex.cancel_msg()
        expect(lc.job_id == j.id and lc.attempt == 1 and lc.reason == "stop it", f"{lc}")
        expect(ex.heartbeat([r]).leases[0].state == P.LEASE_STATE_CANCEL_REQUESTED, "heartbeat")
        expect(ex.push(r, [P.JobEvent(seq=2, stdout_chunk=P.OutputChunk(data=b"x"))]).cancel_requested,
               "PushEvents does not say cancel_requested")
        expect(ex.finish(r, P.JOB_STATE_CANCELLED, P.JobResult(term_signal=9), last=2).state ==
               P.JOB_STATE_CANCELLED, "finish CANCELLED")
        got = a.get(j.id)
        expect(got.state == P.JOB_STATE_CANCELLED and not got.cancel_requested and
               got.result.failure_reason == P.FAILURE_REASON_CANCELLED, f"{got}")
        expect(a.watch_all(j.id)[-1].state.message == "stop it", "reason not in the state change")
        # a leased job whose executor stops heartbeating ends CANCELLED, not re-queued
        k = a.submit(exec_spec("p11", max_attempts=5)).job
        ak = ex.assignment()
        ex.drop(k.id)
        a.cancel(k.id)
        expect(a.wait_state(k.id, TERMINAL).state == P.JOB_STATE_CANCELLED, "lapsed cancel")
        expect(a.get(k.id).attempt == ak.attempt, "a cancelled job was re-queued")
    finally:
        ex.close()


def c_requeue(srv, keys):
    a = srv.jobs(keys["alice"])
    ex = srv.executor(0, slots=1, pools=["p12"]).open()
    try:
        j = a.submit(exec_spec("p12", max_attempts=1)).job
        a1 = ex.assignment()
        f = ex.finish(ref(a1), requeue=True)
        expect(f.state == P.JOB_STATE_QUEUED, f"requeue answered {P.JobState.Name(f.state)}")
        a2 = ex.assignment()
        expect(a2.job.id == j.id and a2.attempt == 2, "handed-back job not leased again")
        expect(ex.finish(ref(a1), requeue=True).state == P.JOB_STATE_QUEUED,
               "a repeated requeue Finish")
        expect(ex.run(a2).state == P.JOB_STATE_SUCCEEDED, "finish attempt 2")
        # a handed-back attempt that ran counts: with max_attempts 1 the job fails
        k = a.submit(exec_spec("p12", max_attempts=1)).job
        ak = ex.assignment()
        ex.push(ref(ak), [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING))])
        expect(ex.finish(ref(ak), requeue=True, last=1).state == P.JOB_STATE_FAILED,
               "a ran attempt handed back with no attempts left")
        expect(a.get(k.id).result.failure_reason == P.FAILURE_REASON_EXECUTOR_LOST, "reason")
    finally:
        ex.close()


def key_id_of(pub):
    pem = read(pub).decode()
    der = base64.b64decode("".join(x for x in pem.splitlines() if not x.startswith("-")))
    return hashlib.sha256(der[-32:]).hexdigest()[:16]


def verify_grant(sg):
    """Checks the Ed25519 signature with intake-0.pub (openssl); returns the Grant."""
    data = os.path.join(T_DIR, "grant.tbs")
    sig = os.path.join(T_DIR, "grant.sig")
    with open(data, "wb") as f:
        f.write(b"airlock-grant-v1\0" + sg.grant)
    with open(sig, "wb") as f:
        f.write(sg.signature)
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey",
                        f"{KEYS}/intake-0.pub", "-rawin", "-in", data, "-sigfile", sig],
                       capture_output=True)
    expect(r.returncode == 0, f"grant signature does not verify: {r.stdout!r} {r.stderr!r}")
    expect(sg.key_id == key_id_of(f"{KEYS}/intake-0.pub"), f"key id {sg.key_id}")
    return G.Grant.FromString(sg.grant)


def c_grants(srv, keys):
    a = srv.jobs(keys["alice"])
    ex = srv.executor(0, slots=2, pools=["p13"]).open()
    try:
        spec = exec_spec("p13", network=P.NetworkPolicy(
            mode=P.NETWORK_MODE_PROXY,
            destinations=[P.NetworkDestination(host="api.example.com"),
                          P.NetworkDestination(host="*.uploads.example.com", port=8443)]),
            credentials=[P.CredentialBinding(credential="ci/github", env_var="GH_TOKEN",
                                             destinations=["api.example.com"]),
                         P.CredentialBinding(credential="ci/upload", env_var="UP",
                                             destinations=["x.uploads.example.com:8443"])])
        j = a.submit(spec).job
        asg = ex.assignment()
        expect(asg.HasField("grant"), "no grant in the assignment")
        g = verify_grant(asg.grant)
        expect(g.issuer == INTAKE_ID and g.audience == "spiffe://airlock/credstore" and
               g.holder == EXEC0 and g.principal == "acme/alice" and
               g.subject == f"job/{j.id}/attempt/1" and g.scope == "p13",
               f"grant {g}")
        expect(list(g.credentials) == ["ci/github", "ci/upload"] and
               list(g.destinations) == ["api.example.com", "x.uploads.example.com:8443"],
               f"grant scope {g.credentials} {g.destinations}")
        expect(g.expires_ms - g.not_before_ms == 20000 and len(g.grant_id) == 32, "lifetime")
        # heartbeats renew it once it nears expiry (renew_before 19s of 20s)
        r = ref(asg)
        ex.auto = False  # our own heartbeats below must be the ones that see the renewal
        try:
            st = wait_until("a renewed grant",
                            lambda: (lambda s: s if s.HasField("grant") else None)(
                                ex.heartbeat([r]).leases[0]), interval=0.3)
        finally:
            ex.auto = True
        g2 = verify_grant(st.grant)
        expect(g2.holder == EXEC0 and g2.grant_id != g.grant_id and
               g2.expires_ms > g.expires_ms, "renewed grant")
        ex.run(asg)
        plain = a.submit(exec_spec("p13")).job
        asg2 = ex.assignment()
        expect(asg2.job.id == plain.id and not asg2.HasField("grant"), "grant without credentials")
        ex.run(asg2)
    finally:
        ex.close()


def c_sessions(srv, keys):
    a = srv.jobs(keys["alice"])
    ea = srv.executor(0, slots=2, pools=["p14"]).open()
    eb = srv.executor(1, slots=2, pools=["p14"]).open()
    try:
        srv.wait_streams(2)
        s1 = a.submit(exec_spec("p14", session_id="ws")).job
        # whoever gets the first job holds the session
        end = time.monotonic() + WAIT
        while ea.q.empty() and eb.q.empty() and time.monotonic() < end:
            time.sleep(0.02)
        holder, other = (ea, eb) if not ea.q.empty() else (eb, ea)
        a1 = holder.assignment()
        expect(a1.job.id == s1.id and not a1.workspace_reset, "first session job")
        holder.run(a1)
        s2 = a.submit(exec_spec("p14", session_id="ws")).job
        a2 = holder.assignment()
        expect(a2.job.id == s2.id and not a2.workspace_reset, "the session did not stay")
        holder.run(a2)
        expect(other.q.empty(), "the other executor received a session job")
        # the holder goes away: after a lease ttl the session moves, workspace reset
        holder.close()
        s3 = a.submit(exec_spec("p14", session_id="ws")).job
        a3 = other.assignment()
        expect(a3.job.id == s3.id and a3.workspace_reset, "session did not move with a reset")
        other.run(a3)
        got = a.get(s3.id)
        expect(got.result.workspace_reset, "JobResult.workspace_reset not set")
        expect(not a.get(s2.id).result.workspace_reset, "workspace_reset on a job that stayed")
    finally:
        ea.close()
        eb.close()


def c_list(srv, keys):
    a = srv.jobs(srv.new_key("acme/lister"))
    ids = []
    for i in range(7):
        ids.append(a.submit(exec_spec("p15", session_id="ls" if i % 2 else "",
                                      exec_kw=dict(stdin=b"input-data"),
                                      labels={"n": str(i)})).job.id)
    a.cancel(ids[0])
    seen, tok, pages = [], "", 0
    while True:
        r = a.list(page=C.PageRequest(page_size=3, page_token=tok))
        pages += 1
        expect(len(r.jobs) <= 3, "page too large")
        seen.extend(r.jobs)
        tok = r.page.next_page_token
        if not tok:
            break
    order = [(j.created_ms, j.id) for j in seen]
    expect(sorted(j.id for j in seen) == sorted(ids) and len(seen) == 7 and pages == 3 and
           order == sorted(order, reverse=True), f"paging: {pages} pages, order {order}")
    expect(all(j.spec.exec.stdin == b"" for j in seen), "List returned stdin")
    expect(a.get(ids[1]).spec.exec.stdin == b"input-data", "Get lost stdin")
    st = a.list(states=[P.JOB_STATE_CANCELLED]).jobs
    expect([j.id for j in st] == [ids[0]], "state filter")
    ss = a.list(session_id="ls").jobs
    expect(sorted(j.id for j in ss) == sorted(ids[1::2]), "session filter")
    expect(len(a.list(pool="p02").jobs) == 0, "pool filter")
    t0 = a.get(ids[3]).created_ms
    expect(all(j.created_ms >= t0 for j in a.list(created_after_ms=t0).jobs), "created_after")
    expect(all(j.created_ms < t0 for j in a.list(created_before_ms=t0).jobs), "created_before")
    r = a.list(page=C.PageRequest(page_size=2))
    expect_code(lambda: a.list(pool="p15", page=C.PageRequest(page_token=r.page.next_page_token)),
                SC.INVALID_ARGUMENT, C.ERROR_REASON_PAGE_TOKEN_INVALID)
    expect_code(lambda: srv.jobs(keys["bob"]).list(page=C.PageRequest(
        page_token=r.page.next_page_token)), SC.INVALID_ARGUMENT, C.ERROR_REASON_PAGE_TOKEN_INVALID)
    expect_code(lambda: a.list(page=C.PageRequest(page_token="garbage")), SC.INVALID_ARGUMENT,
                C.ERROR_REASON_PAGE_TOKEN_INVALID)
    expect_code(lambda: a.list(states=[42]), SC.INVALID_ARGUMENT, field="states[0]")
    expect_code(lambda: a.list(page=C.PageRequest(page_size=-1)), SC.INVALID_ARGUMENT)
    for i in ids[1:]:
        a.cancel(i)


def c_queue_timeout(srv, keys):
    a = srv.jobs(keys["alice"])
    j = a.submit(exec_spec("p19", queue_timeout_ms=300)).job
    got = a.wait_state(j.id, TERMINAL)
    expect(got.state == P.JOB_STATE_TIMED_OUT and
           got.result.failure_reason == P.FAILURE_REASON_QUEUE_TIMEOUT, f"{got}")


def c_thousand(srv, keys):
    """1,000 jobs across two executors: every job ends once, none runs twice."""
    a = srv.jobs(keys["alice"])
    finished = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors = []

    def work(ex):
        while not stop.is_set():
            try:
                asg = ex.assignment(timeout=1)
            except CheckFailed:
                continue
            try:
                ex.run(asg)
                with lock:
                    finished.setdefault(asg.job.id, []).append((ex.ident, asg.attempt))
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    exs = [srv.executor(n, slots=16, pools=["p20"]).open() for n in (0, 1)]
    workers = [threading.Thread(target=work, args=(e,), daemon=True) for e in exs for _ in range(4)]
    try:
        for w in workers:
            w.start()
        ids = set()
        lk = threading.Lock()

        def submit(n):
            for _ in range(n):
                jid = a.submit(exec_spec("p20")).job.id
                with lk:
                    ids.add(jid)
        subs = [threading.Thread(target=submit, args=(250,)) for _ in range(4)]
        for t in subs:
            t.start()
        for t in subs:
            t.join()
        expect(len(ids) == 1000, f"{len(ids)} jobs submitted")
        try:
            wait_until("1000 jobs finished", lambda: len(finished) >= 1000, deadline=300,
                       interval=0.2)
        except CheckFailed as e:
            raise CheckFailed(f"{e}: {len(finished)} finished, queued "
                              f"{srv.metric('airlock_intake_jobs_queued')}, running "
                              f"{srv.metric('airlock_intake_jobs_running')}, streams "
                              f"{srv.metric('airlock_intake_lease_streams')}, ends "
                              f"{[x.end for x in exs]}, errors {errors[:2]}")
        stop.set()
        expect(not errors, f"executor errors: {errors[:3]}")
        expect(set(finished) == ids, "finished jobs differ from submitted ones")
        twice = {k: v for k, v in finished.items() if len(v) != 1 or v[0][1] != 1}
        expect(not twice, f"jobs run twice: {list(twice.items())[:3]}")
        per = {e.ident: sum(1 for v in finished.values() if v[0][0] == e.ident) for e in exs}
        expect(all(n > 0 for n in per.values()), f"both executors should work: {per}")
        done = a.list(states=[P.JOB_STATE_SUCCEEDED], page=C.PageRequest(page_size=500))
        expect(len(done.jobs) == 500, "List of succeeded jobs")
    finally:
        stop.set()
        for e in exs:
            e.close()


def c_drain(srv, keys):
    a = srv.jobs(keys["alice"])
    j = a.submit(exec_spec("p21")).job
    events, end = [], []

    def watch():
        try:
            for e in a.watch(j.id):
                events.append(e)
        except grpc.RpcError as e:
            end.append((e.code(), reason_name(e)))
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    ex = srv.executor(0, pools=["p22"]).open()
    srv.wait_streams(1)
    wait_until("the watcher", lambda: srv.metric("airlock_intake_watchers") == 1 and events)
    srv.proc.send_signal(signal.SIGTERM)
    t.join(WAIT)
    expect(end and end[0] == (SC.UNAVAILABLE, "ERROR_REASON_DRAINING"), f"Watch ended {end}")
    ex.q.get(timeout=WAIT)
    expect(ex.end and ex.end[0] == SC.UNAVAILABLE, f"Lease ended {ex.end}")
    ex.close()
    rc = srv.proc.wait(WAIT)
    expect(rc == 0, f"exit status {rc} after SIGTERM")
    srv.close_channels()
    # everything is still there after a restart
    srv.start()
    expect(srv.jobs(keys["alice"]).get(j.id).state == P.JOB_STATE_QUEUED, "job lost over restart")
    srv.jobs(keys["alice"]).cancel(j.id)



def c_reconnect(srv, keys):
    """A newer Lease stream of the same executor instance replaces the old one and keeps
    its leases and slots; slots bound what one instance holds."""
    a = srv.jobs(keys["alice"])
    ex = srv.executor(0, slots=1, pools=["p24"]).open()
    try:
        j1 = a.submit(exec_spec("p24")).job
        j2 = a.submit(exec_spec("p24")).job
        a1 = ex.assignment()
        expect(a1.job.id == j1.id, "first job")
        expect(a.get(j2.id).state == P.JOB_STATE_QUEUED, "a second job beyond the one slot")
        again = Executor(srv, ex.ident, slots=1, pools=["p24"], instance=ex.instance).open()
        ex.q.get(timeout=WAIT)
        expect(ex.end and ex.end[0] == SC.ABORTED, f"the replaced stream ended {ex.end}")
        expect(again.heartbeat([ref(a1)]).leases[0].state == P.LEASE_STATE_ACTIVE,
               "the lease did not survive the reconnect")
        expect(a.get(j2.id).state == P.JOB_STATE_QUEUED, "the slot was not kept")
        # file operation events are accepted too
        r = ref(a1)
        again.push(r, [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING)),
                       P.JobEvent(seq=2, file_data=P.FileData(data=b"abc")),
                       P.JobEvent(seq=3, dir_entries=P.DirEntries(entries=[
                           P.DirEntry(name="f", type=P.FILE_TYPE_REGULAR, size_bytes=3)]))])
        expect_code(lambda: again.push(r, [P.JobEvent(seq=4, dir_entries=P.DirEntries(
            entries=[P.DirEntry(name="x", type=9)]))]), SC.INVALID_ARGUMENT, field="events[0]")
        expect(again.finish(r, last=3).state == P.JOB_STATE_SUCCEEDED, "finish on the new stream")
        a2 = again.assignment()
        expect(a2.job.id == j2.id, "the freed slot did not take the next job")
        again.run(a2)
        evs = a.watch_all(j1.id)
        expect(len(events_of(evs, "file_data")) == 1 and len(events_of(evs, "dir_entries")) == 1,
               "file events not stored")
        again.close()
    finally:
        ex.close()


def c_crash(keys_unused=None):
    """kill -9 during a burst of Submits: every acknowledged job survives; leases held
    before the crash are re-attached by heartbeats within the restart grace, and one
    that is not re-attached expires and runs again."""
    srv = Server("crash").start()
    key = srv.new_key("acme/crash")
    a = srv.jobs(key)
    e0 = srv.executor(0, slots=2, pools=["p16"], auto=False).open()
    e1 = srv.executor(1, slots=1, pools=["p17"], auto=False).open()
    ids = [a.submit(exec_spec("p16")).job.id for _ in range(2)]
    lone = a.submit(exec_spec("p17", max_attempts=3)).job.id
    held = [e0.assignment(), e0.assignment()]
    gone = e1.assignment()
    for h in held:
        e0.push(ref(h), [P.JobEvent(seq=1, state=P.StateChange(state=P.JOB_STATE_RUNNING))])
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def burst():
        jobs = srv.jobs(key)
        while not stop.is_set():
            try:
                jid = jobs.submit(exec_spec("p18", argv=("echo", secrets.token_hex(4)))).job.id
            except grpc.RpcError:
                return
            with lock:
                acked.append(jid)
    ts = [threading.Thread(target=burst, daemon=True) for _ in range(4)]
    for t in ts:
        t.start()
    wait_until("200 acknowledged submits", lambda: len(acked) >= 200)
    srv.kill9()
    stop.set()
    for t in ts:
        t.join(WAIT)
    e0.close()
    e1.close()
    with lock:
        got = list(acked)
    srv.start()
    a = srv.jobs(key)
    missing = []
    for jid in got:
        try:
            a.get(jid)
        except grpc.RpcError as e:
            if e.code() != SC.NOT_FOUND:
                raise
            missing.append(jid)
    expect(not missing, f"{len(missing)} of {len(got)} acknowledged jobs lost, e.g. {missing[:3]}")
    # the surviving executor re-attaches its two leases with heartbeats
    e0b = Executor(srv, "executor-executor-0", slots=2, pools=["p16"], instance=e0.instance,
                   auto=False)
    st = e0b.heartbeat([ref(h) for h in held]).leases
    expect([s.state for s in st] == [P.LEASE_STATE_ACTIVE] * 2, f"re-attach: {st}")
    e0b.open()
    for h in held:
        expect(e0b.finish(ref(h), last=1).state == P.JOB_STATE_SUCCEEDED, "finish after restart")
    for jid in ids:
        expect(a.get(jid).state == P.JOB_STATE_SUCCEEDED and a.get(jid).attempt == 1,
               "a re-attached job ran twice")
    # the lease nobody re-attached expires after the grace and runs again
    e1b = srv.executor(1, slots=1, pools=["p17"]).open()
    again = e1b.assignment()
    expect(again.job.id == lone and again.attempt == 2, "the abandoned lease did not run again")
    expect_code(lambda: e1b.finish(ref(gone)), SC.FAILED_PRECONDITION, C.ERROR_REASON_LEASE_LOST)
    e1b.run(again)
    e0b.close()
    e1b.close()
    srv.stop()


def c_backoff_wake():
    """A lease that expires is re-queued with a 1 ms backoff, which ends while the group
    commit of the expiry runs, after the dispatcher (run before the commit) saw it still
    pending. With one job and nothing else due, only the wake timer can bring it back to
    the free slot: round after round, until the attempts are used up."""
    srv = Server("bwake", retry='backoff_base = "1ms"; backoff_max = "1ms";').start()
    a = srv.jobs(srv.new_key("acme/bwake"))
    ex = srv.executor(0, slots=1, pools=["p25"], auto=False).open()
    try:
        jid = a.submit(exec_spec("p25", max_attempts=4)).job.id
        for attempt in (1, 2, 3, 4):
            asg = ex.assignment()  # no heartbeats: each lease expires
            expect(asg.job.id == jid and asg.attempt == attempt,
                   f"assignment {asg.attempt}, want attempt {attempt}")
        j = a.wait_state(jid, TERMINAL)
        expect(j.state == P.JOB_STATE_FAILED and j.attempt == 4 and
               j.result.failure_reason == P.FAILURE_REASON_EXECUTOR_LOST,
               f"after four lost leases: {P.JobState.Name(j.state)} attempt {j.attempt}")
    finally:
        ex.close()
    srv.stop()


def c_retention():
    srv = Server("ret", extra='retention = { jobs = "3s"; events = "1s"; idempotency = "1s"; '
                              'sweep_interval = "200ms"; };\n').start()
    key = srv.new_key("acme/ret")
    a = srv.jobs(key)
    j = a.submit(exec_spec("p23"), key="r1").job
    keep = a.submit(exec_spec("p23")).job
    a.cancel(j.id)
    wait_until("events to expire", lambda: _events_gone(a, j.id))
    expect(a.get(j.id).state == P.JOB_STATE_CANCELLED, "the job went with its events")
    expect(a.watch_all(j.id, after=a.get(j.id).last_seq) == [], "Watch at the end of a purged log")
    wait_until("the finished job to be purged", lambda: _gone(a, j.id))
    expect(a.get(keep.id).state == P.JOB_STATE_QUEUED, "retention removed a queued job")
    r = a.submit(exec_spec("p23", argv=("other",)), key="r1")
    expect(not r.deduplicated, "the purged job's idempotency key is still taken")
    expect((srv.metric("airlock_intake_purged_jobs_total") or 0) >= 1, "purge metric")
    srv.stop()


def _events_gone(a, jid):
    try:
        a.watch_all(jid)
        return False
    except grpc.RpcError as e:
        expect(e.code() == SC.OUT_OF_RANGE and reason_name(e) == "ERROR_REASON_EVENTS_EXPIRED",
               f"Watch of a purged log: {e.code()} {reason_name(e)}")
        return True


def _gone(a, jid):
    try:
        a.get(jid)
        return False
    except grpc.RpcError as e:
        expect(e.code() == SC.NOT_FOUND, f"{e.code()}")
        return True


def c_secrets(all_keys):
    for f in os.listdir(T_DIR):
        if not f.endswith(".err"):
            continue
        text = read(os.path.join(T_DIR, f))
        for k in all_keys:
            expect(k.split(".")[1].encode() not in text, f"{f} holds an API key secret")


def main():
    srv = Server("main")
    try:
        srv.start()
    except Exception as e:  # noqa: BLE001
        print(f"FAIL intake-start: {e}", flush=True)
        return 1
    keys = {"alice": srv.new_key("acme/alice"), "bob": srv.new_key("beta/bob")}
    created = list(keys.values())
    orig_new_key = Server.new_key

    def tracking_new_key(self, *args):
        k = orig_new_key(self, *args)
        created.append(k)
        return k
    Server.new_key = tracking_new_key
    checks = [
        ("auth-api-keys", lambda: c_auth(srv, keys)),
        ("submit-validation", lambda: c_validation(srv, keys)),
        ("idempotency", lambda: c_idempotency(srv, keys)),
        ("quotas", lambda: c_quotas(srv, keys)),
        ("tenant-isolation", lambda: c_isolation(srv, keys)),
        ("pools", lambda: c_pools(srv, keys)),
        ("fencing", lambda: c_fencing(srv, keys)),
        ("lease-expiry-retry", lambda: c_expiry(srv, keys)),
        ("max-attempts", lambda: c_max_attempts(srv, keys)),
        ("watch-replay-resume", lambda: c_watch(srv, keys)),
        ("cancel", lambda: c_cancel(srv, keys)),
        ("requeue", lambda: c_requeue(srv, keys)),
        ("grants", lambda: c_grants(srv, keys)),
        ("sessions", lambda: c_sessions(srv, keys)),
        ("list", lambda: c_list(srv, keys)),
        ("reconnect-slots", lambda: c_reconnect(srv, keys)),
        ("queue-timeout", lambda: c_queue_timeout(srv, keys)),
        ("thousand-jobs", lambda: c_thousand(srv, keys)),
        ("drain", lambda: c_drain(srv, keys)),
        ("kill9-burst-restart-grace", lambda: c_crash()),
        ("backoff-wake", lambda: c_backoff_wake()),
        ("retention", lambda: c_retention()),
    ]
    only = ENV.get("INTAKE_ONLY")
    for name, fn in checks:
        if only and not re.search(only, name):
            continue
        check(name, fn)
    check("intake-exit", srv.stop)
    check("no-secrets-in-logs", lambda: c_secrets(created))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
