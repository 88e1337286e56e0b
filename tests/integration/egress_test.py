"""End-to-end checks of the egress proxy: real airlock-credstore, airlock-intake and
airlock-executor (which starts its airlock-egress), jobs running real curl and Python urllib
in real sandboxes, and a test HTTPS upstream (egress_upstream.py) inside a network namespace
egress.sh made, reached over a veth pair with private addresses the executor's egress
ceiling lists in allow_cidrs.

Run with /usr/bin/python3 by egress.sh, which makes the PKI, the message classes, the
upstream's test CA, the namespace and the upstream, and passes in BIN, GEN_DIR, T_DIR,
AIRLOCK_HOME, PIDS_FILE (as for jobs_test.py, whose helpers this file reuses), UP_DIR (the
upstream's ca.crt, token and requests.log), UP_ADDR and UP_NET.

The token the upstream demands is a canary: it is stored in credstore only, and every check
ends with scans for it (raw, hex, base64 at each alignment) where it must never be: the
sandbox's environment, files and process memory, every job event and result, the intake
database, credstore's audit records, every log, and the proxy's memory once the job ended.
Prints PASS/FAIL/SKIP lines; exits 1 if any check failed. No timing assertions: waits are
for events, with generous deadlines.
"""

import base64
import json
import os
import re
import secrets
import signal
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import intake_test as it  # noqa: E402
import credstore_test as ct  # noqa: E402
import credstore_ops_test as cot  # noqa: E402
import jobs_test as jt  # noqa: E402
from intake_test import P, Skip, expect, wait_until, read, TERMINAL  # noqa: E402

CS = ct.P  # credstore messages
BIN, T_DIR, HOME, PKI, KEYS = it.BIN, it.T_DIR, it.HOME, it.PKI, it.KEYS
UP_DIR = os.environ["UP_DIR"]
UP_ADDR = os.environ["UP_ADDR"]
UP_NET = os.environ["UP_NET"]
TOKEN = read(os.path.join(UP_DIR, "token")).strip()  # the canary
UP_CA = read(os.path.join(UP_DIR, "ca.crt"))
PROXY_PORT = 3131
PH_RE = re.compile(rb"AIRLOCK_PH_[0-9a-f]{32}")
USE, ALLOW, DENY = CS.AUDIT_ACTION_USE, CS.AUDIT_DECISION_ALLOW, CS.AUDIT_DECISION_DENY
RESOLVE = CS.AUDIT_ACTION_RESOLVE
ALL_EVENTS = []  # every event of every job, for the canary scan
JOBS = {}  # tag -> job id, for the audit checks


def check(name, fn):
    it.check(name, fn)


def failures():
    return it.failed + ct.failed


# ---------------------------------------------------------------------------
# servers

class Intake(it.Server):
    def config(self):
        return (f'listen = "127.0.0.1:0"; ops_listen = "127.0.0.1:0";\n'
                f'tls = {{ cert_file = "{PKI}/intake-intake-0.crt"; '
                f'key_file = "{PKI}/intake-intake-0.key"; ca_file = "{PKI}/ca.crt"; '
                f'client_cert = "optional"; }};\n'
                f'data_dir = "{self.data_dir}";\n'
                f'lease = {{ ttl = "6s"; heartbeat_interval = "500ms"; }};\n'
                # short grants: renewals (JobGrant) happen while a job runs
                f'grant = {{ key_file = "{KEYS}/intake-0.key"; lifetime = "12s"; '
                f'renew_before = "9s"; }};\n'
                'pools = (\n'
                '  { name = "ci"; executors = ["spiffe://airlock/executor/*"]; },\n'
                '  { name = "bare"; executors = ["spiffe://airlock/executor/*"]; }\n'
                ');\n'
                'principals = ( { principal = "**"; pools = ["*"]; } );\n')


def executor_config(cs_port):
    names = ["upstream.test", "other.test", "plain.test"]
    resolve = [f'"{n}={UP_ADDR}"' for n in names] + [
        '"loop.test=127.0.0.1"', '"zero.test=0.0.0.0"', '"meta.test=169.254.169.254"',
        '"mapped.test=::ffff:127.0.0.1"']
    up = f'allow_cidrs = ["{UP_NET}"];'
    return (f'credstore = {{ addr = "127.0.0.1:{cs_port}"; }};\n'
            'audit = { flush_interval = 0.1; };\n'
            'egress = {\n'
            '  enabled = true;\n'
            f'  binary = "{BIN}/airlock-egress";\n'
            f'  proxy_port = {PROXY_PORT};\n'
            f'  ca_file = "{UP_DIR}/ca.crt";\n'
            f'  resolve = [{", ".join(resolve)}];\n'
            '  restart_min = "100ms"; restart_max = "1s"; open_timeout = "60s";\n'
            '  limits = { connections = 16; };\n'
            '  pools = (\n'
            '    { name = "ci"; destinations = (\n'
            f'        {{ host = "upstream.test"; port = 8443; {up} }},\n'
            f'        {{ host = "upstream.test"; port = 8080; {up} allow_http = true; }},\n'
            f'        {{ host = "other.test"; port = 8443; methods = ["GET", "POST"]; '
            f'path_prefixes = ["/echo", "/public"]; {up} }},\n'
            f'        {{ host = "plain.test"; port = 8443; {up} }},\n'
            '        { host = "loop.test"; port = 8443; },\n'
            '        { host = "zero.test"; port = 8443; },\n'
            '        { host = "meta.test"; port = 8443; },\n'
            '        { host = "mapped.test"; port = 8443; }\n'
            '    ); }\n'
            '  );\n'
            '};\n')


class Credstore(ct.Server):
    """credstore releasing values for 3 s only (resolve.max_ttl): jobs that
    use a credential for longer depend on the executor refreshing it."""

    def config(self):
        return super().config() + 'resolve = { max_ttl = "3s"; };\n'


ISSUERS = (f'{{ issuer = "spiffe://airlock/intake/*"; public_key_file = "{KEYS}/intake-0.pub"; '
           f'principals = ["**"]; pools = ["**"]; credentials = ["test/**"]; }}')


def put_credentials(cs):
    adm = ct.admin(cs)
    pol = dict(allowed_issuers=["spiffe://airlock/intake/*"], allowed_principals=["**"],
               allowed_holders=["spiffe://airlock/executor/*"], allowed_pools=["ci"],
               allowed_destinations=["upstream.test:8443"])
    adm.put(CS.PutCredentialRequest(
        name="test/token", type=CS.CREDENTIAL_TYPE_BEARER_TOKEN, description="egress test",
        policy=CS.BindingPolicy(**pol), grace_period_ms=600_000, value=TOKEN))
    pol["allowed_pools"] = ["elsewhere"]
    adm.put(CS.PutCredentialRequest(
        name="test/denied", type=CS.CREDENTIAL_TYPE_BEARER_TOKEN, description="egress test",
        policy=CS.BindingPolicy(**pol), grace_period_ms=600_000,
        value=b"DENIED-" + secrets.token_hex(16).encode()))


# ---------------------------------------------------------------------------
# jobs

UPSTREAM = P.NetworkDestination(host="upstream.test", port=8443)


def net(*dests):
    return P.NetworkPolicy(mode=P.NETWORK_MODE_PROXY, destinations=list(dests))


def bind(cred="test/token", env="TOKEN", dests=("upstream.test:8443",)):
    return P.CredentialBinding(credential=cred, env_var=env, destinations=list(dests))


def spec(cmd, dests=(UPSTREAM,), creds=(), stdin=b"", pool="ci", argv=None):
    return P.JobSpec(pool=pool, kind=P.JOB_KIND_EXEC,
                     exec=P.ExecSpec(argv=list(argv or ("sh", "-c", cmd)), stdin=stdin),
                     network=net(*dests) if dests is not None else None,
                     credentials=list(creds))


class Ctx:
    def __init__(self, jobs, cs, ex):
        self.jobs, self.cs, self.ex = jobs, cs, ex

    def run(self, tag, sp):
        """Runs a job to its end; returns (job, stdout, stderr)."""
        job, evs = jt.run_job(self.jobs, sp)
        ALL_EVENTS.extend(evs)
        JOBS[tag] = job.id
        return job, jt.out_of(evs), jt.out_of(evs, "stderr_chunk")

    def start(self, tag, sp):
        job = self.jobs.submit(sp).job
        JOBS[tag] = job.id
        return job.id

    def events_so_far(self, jid):
        return events_now(self.jobs, jid)


def job_desc(job, out=b"", err=b""):
    r = job.result
    return (f"{P.JobState.Name(job.state)} {P.FailureReason.Name(r.failure_reason)} "
            f"{r.failure_message!r} exit={r.exit_code} out={out[-300:]!r} err={err[-300:]!r}")


def expect_ok(job, out, err):
    expect(job.state == P.JOB_STATE_SUCCEEDED, job_desc(job, out, err))


def no_canary(blob, where):
    for form, name in ((TOKEN, "raw"), (TOKEN.hex().encode(), "hex")):
        expect(form not in blob, f"the token ({name}) is in {where}")
    for j in range(3):
        b = base64.b64encode(TOKEN[j:])[:-4]
        expect(b not in blob, f"the token (base64 at alignment {j}) is in {where}")


# The proxy's variables give the jobs the proxy; this helper speaks to it directly
# (raw requests, CONNECT, TLS with a chosen SNI) and reports what came back, one line each.
HELPER = r'''
import os, socket, ssl, sys, base64, errno
P = os.environ["HTTPS_PROXY"].rsplit(":", 1)
ADDR = (P[0].split("//")[-1], int(P[1]))

def head(s):
    s.settimeout(30)
    b = b""
    while b"\r\n\r\n" not in b:
        c = s.recv(4096)
        if not c:
            break
        b += c
    line = b.split(b"\r\n", 1)[0].decode(errors="replace")
    hdr, _, body = b.partition(b"\r\n\r\n")
    n = 0
    for h in hdr.split(b"\r\n")[1:]:
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v.strip() or 0)
    while len(body) < n:
        c = s.recv(4096)
        if not c:
            break
        body += c
    return line, body[:n].decode(errors="replace").strip().splitlines()[:1]

def raw(req):
    s = socket.create_connection(ADDR, timeout=30)
    s.sendall(req)
    line, body = head(s)
    print("RESULT", line, "|", body[0] if body else "", flush=True)
    s.close()

def sni(target, name, verify):
    s = socket.create_connection(ADDR, timeout=30)
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
    line, _ = head(s)
    if " 200" not in line:
        print("RESULT connect", line, flush=True)
        return
    ctx = ssl.create_default_context() if verify == "1" else ssl._create_unverified_context()
    try:
        t = ctx.wrap_socket(s, server_hostname=name)
        t.sendall(b"GET /public HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
        line, body = head(t)
        print("RESULT tls-ok", line, flush=True)
    except (OSError, ssl.SSLError) as e:
        print("RESULT tls-fail", type(e).__name__, str(e)[:120], flush=True)

def direct(up):
    tries = [("tcp", socket.AF_INET, socket.SOCK_STREAM, (up, 8443)),
             ("tcp-loopback-elsewhere", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 8443)),
             ("tcp6", socket.AF_INET6, socket.SOCK_STREAM, ("fd00:ec2::254", 443)),
             ("udp", socket.AF_INET, socket.SOCK_DGRAM, (up, 53)),
             ("udp6", socket.AF_INET6, socket.SOCK_DGRAM, ("2001:db8::1", 53))]
    for name, fam, typ, addr in tries:
        s = socket.socket(fam, typ)
        s.settimeout(10)
        try:
            if typ == socket.SOCK_STREAM:
                s.connect(addr)
            else:
                s.sendto(b"x", addr)
            print("RESULT", name, "connected", flush=True)
        except OSError as e:
            print("RESULT", name, "refused", errno.errorcode.get(e.errno, e.errno), flush=True)
        s.close()

mode = sys.argv[1]
if mode == "raw":
    for a in sys.argv[2:]:
        raw(base64.b64decode(a))
elif mode == "sni":
    sni(*sys.argv[2:5])
elif mode == "direct":
    direct(sys.argv[2])
'''


def helper(mode, *args):
    return ("python3", "-c", HELPER, mode) + tuple(args)


def results(out):
    return [ln[len("RESULT "):] for ln in out.decode(errors="replace").splitlines()
            if ln.startswith("RESULT ")]


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def upstream_log():
    try:
        return [json.loads(ln) for ln in read(os.path.join(UP_DIR, "requests.log")).splitlines()
                if ln.strip()]
    except OSError:
        return []


# ---------------------------------------------------------------------------
# checks: requests that work

def c_injection(x):
    def curl():
        n0 = len(upstream_log())
        job, out, err = x.run("curl", spec(
            'curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" '
            'https://upstream.test:8443/api', creds=[bind()]))
        expect_ok(job, out, err)
        expect(b'"ok": true' in out, f"upstream answer {out!r}")
        got = upstream_log()[n0:]
        expect(any(r["path"] == "/api" and r["auth"] == "token" for r in got),
               f"the upstream did not see the real token: {got}")
    check("curl-credential-injected", curl)

    def urllib_():
        code = ("import os, urllib.request\n"
                "r = urllib.request.Request('https://upstream.test:8443/api', "
                "headers={'Authorization': 'Bearer ' + os.environ['TOKEN']})\n"
                "print(urllib.request.urlopen(r, timeout=30).read().decode())\n")
        job, out, err = x.run("urllib", spec(None, creds=[bind()], argv=("python3", "-c", code)))
        expect_ok(job, out, err)
        expect(b'"ok": true' in out, f"upstream answer {out!r}")
    check("urllib-credential-injected", urllib_)

    def keepalive():
        # several requests on one kept-alive connection through the proxy
        job, out, err = x.run("keepalive", spec(
            'curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" '
            'https://upstream.test:8443/api https://upstream.test:8443/api '
            'https://upstream.test:8443/api -w "%{num_connects}\\n"', creds=[bind()]))
        expect_ok(job, out, err)
        expect(out.count(b'"ok": true') == 3, f"answers {out!r}")
        conns = [ln for ln in out.split(b"\n") if ln.strip().isdigit()]
        expect(conns and sum(int(c) for c in conns) == 1,
               f"connections opened per request: {conns} (one kept-alive connection expected)")
    check("keepalive-through-proxy", keepalive)

    def echo():
        job, out, err = x.run("echo", spec(
            'curl -sS -i --max-time 30 -H "Authorization: Bearer $TOKEN" '
            'https://upstream.test:8443/echo; echo; printf "PH=%s\\n" "$TOKEN"', creds=[bind()]))
        expect_ok(job, out, err)
        ph = PH_RE.findall(out)
        expect(ph, f"no placeholder in {out[:400]!r}")
        mine = out.split(b"PH=")[-1].strip()
        expect(re.search(rb"x-echo-auth: Bearer " + re.escape(mine), out, re.I),
               f"the echoed header is not the placeholder: {out[:600]!r}")
        no_canary(out + err, "the echoed response")
    check("echoed-token-scrubbed-to-placeholder", echo)

    def renewed_grant():
        # the grant is renewed about 3 s into the job: a request made later is
        # recorded under the renewed grant, which only JobGrant told the proxy
        job, out, err = x.run("renewal", spec(
            'sleep 6; curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" '
            'https://upstream.test:8443/api', creds=[bind()]))
        expect_ok(job, out, err)
        expect(b'"ok": true' in out, f"upstream answer {out!r}")
        key = f"{job.id}/1"
        first = [r.grant_id for r in ct.audit_after(x.cs, 0, action=RESOLVE)
                 if r.subject == f"job/{job.id}/attempt/1"][:1]
        use = wait_until("the request's record", lambda: [
            r for r in ct.audit_after(x.cs, 0, action=USE)
            if r.request_id == key and r.decision == ALLOW], deadline=60)
        expect(first and use[0].grant_id and use[0].grant_id not in first,
               f"the request was recorded under grant {use[0].grant_id}, the job first "
               f"resolved under {first}: the renewed grant did not reach the proxy")
    check("renewed-grant-reaches-proxy", renewed_grant)

    def refreshed_values():
        # credstore releases a value for 3 s (resolve.max_ttl): a request 8 s
        # into the job works only if the executor resolved the value again
        # (with the renewed grant) and handed it to the proxy in time
        job, out, err = x.run("refresh", spec(
            'sleep 8; curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" '
            'https://upstream.test:8443/api', creds=[bind()]))
        expect_ok(job, out, err)
        expect(b'"ok": true' in out, f"upstream answer {out!r}: the value in the proxy "
               "was not refreshed before credstore's expiry")
        res = [r for r in ct.audit_after(x.cs, 0, action=RESOLVE)
               if r.subject == f"job/{job.id}/attempt/1"]
        grants = {r.grant_id for r in res}
        expect(len(res) >= 3 and all(r.decision == ALLOW for r in res) and len(grants) >= 2,
               f"{len(res)} Resolve records under {len(grants)} grants for an 8 s job with a "
               f"3 s ttl and 3 s grant renewals: {[(r.decision, r.grant_id) for r in res]}")
    check("values-refreshed-past-credstore-ttl", refreshed_values)

    def revoked_mid_job():
        # the credential is deleted in credstore while a job uses it: the
        # next refresh is refused and the value dies in the proxy within the
        # 3 s ttl; the job's later request is refused, the job itself runs on
        ct.put(x.cs, "test/revocable", b"REVOCABLE-" + secrets.token_hex(16).encode(),
               allowed_issuers=["spiffe://airlock/intake/*"], allowed_principals=["**"],
               allowed_holders=["spiffe://airlock/executor/*"], allowed_pools=["ci"],
               allowed_destinations=["upstream.test:8443"])
        req = ('curl -sS -w "\\nCODE=%{http_code}\\n" --max-time 30 '
               '-H "Authorization: Bearer $RV" https://upstream.test:8443/echo')
        jid = x.start("revoked", spec(f'{req}; echo FIRST; sleep 8; {req}',
                                      creds=[bind("test/revocable", "RV")]))
        wait_until("the first request", lambda: b"FIRST" in jt.out_of(x.events_so_far(jid)))
        ct.admin(x.cs).delete(CS.DeleteCredentialRequest(name="test/revocable"))
        j = x.jobs.wait_state(jid, TERMINAL)
        evs = x.jobs.watch_all(jid)
        ALL_EVENTS.extend(evs)
        out = jt.out_of(evs)
        codes = re.findall(rb"CODE=(\d+)", out)
        expect(j.state == P.JOB_STATE_SUCCEEDED and codes[:1] == [b"200"],
               f"{job_desc(j, out)}: the first request should have gone through")
        expect(len(codes) == 2 and codes[1] == b"403" and b"has expired" in out,
               f"the request after the credential was deleted answered {codes[1:]!r} "
               f"(403 from the proxy expected): {out[-300:]!r}")
        res = [r for r in ct.audit_after(x.cs, 0, action=RESOLVE)
               if r.subject == f"job/{jid}/attempt/1"]
        expect(any(r.decision == DENY for r in res),
               f"no refused Resolve for the deleted credential: {[r.decision for r in res]}")
    check("credential-deleted-mid-job-stops-injection", revoked_mid_job)

    def tunnel():
        job, out, err = x.run("tunnel", spec(
            "cat > /tmp/ca.pem; env | grep -c SSL_CERT_FILE; "
            "curl -sS --max-time 30 --cacert /tmp/ca.pem https://plain.test:8443/public",
            dests=[P.NetworkDestination(host="plain.test", port=8443)], stdin=UP_CA))
        expect_ok(job, out, err)
        expect(out.startswith(b"0\n") and b"public" in out,
               f"tunnelled request (no CA bundle, the upstream's own certificate): {out!r}")
    check("tunnel-not-intercepted", tunnel)

    def plain_http():
        job, out, err = x.run("plainhttp", spec(
            "curl -sS --max-time 30 http://upstream.test:8080/public",
            dests=[P.NetworkDestination(host="upstream.test", port=8080)]))
        expect_ok(job, out, err)
        expect(b"public" in out, f"plain http through the proxy: {out!r}")
    check("plain-http-where-the-ceiling-allows", plain_http)


# ---------------------------------------------------------------------------
# checks: what the sandbox holds, and the proxy's memory

def proc_children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += proc_children(p)
    return seen


def job_init_pid(ex, job_id):
    m = re.findall(rf"event=executor\.job_start job={job_id} attempt=\d+ kind=\d+ pid=(\d+)",
                   ex.log())
    return int(m[-1]) if m else None


def egress_pid(ex):
    for p in proc_children(ex.proc.pid):
        try:
            if read(f"/proc/{p}/comm").strip() == b"airlock-egress":
                return p
        except OSError:
            pass
    return None


def scan(pid, needles):
    hits, total, notes = cot.scan_memory(pid, needles)
    return hits, total


def token_needles():
    return cot.needle_forms(TOKEN, "token")


def c_sandbox_and_memory(x):
    st = {}
    code = ("import os, time, urllib.request\n"
            "r = urllib.request.Request('https://upstream.test:8443/echo', "
            "headers={'Authorization': 'Bearer ' + os.environ['TOKEN']})\n"
            "body = urllib.request.urlopen(r, timeout=30).read()\n"
            "open('/tmp/out', 'wb').write(body)\n"
            "open('/workspace/out', 'wb').write(body + os.environ['TOKEN'].encode())\n"
            "print('READY', flush=True)\n"
            "time.sleep(600)\n")

    def start():
        jid = x.start("holder", spec(None, creds=[bind()], argv=("python3", "-c", code)))
        st["id"] = jid
        wait_until("the job's READY", lambda: b"READY" in jt.out_of(x.events_so_far(jid)))
        st["init"] = wait_until("the job's init pid", lambda: job_init_pid(x.ex, jid))
    check("holder-job-started", start)

    def sandbox():
        if "init" not in st:
            raise Skip("the job did not start")
        pids = [p for p in descendants(st["init"]) if p != st["init"]]
        expect(pids, "no process of the job found")
        found_ph = False
        for p in pids:
            env = read(f"/proc/{p}/environ")
            no_canary(env, f"/proc/{p}/environ")
            found_ph |= bool(PH_RE.search(env))
        expect(found_ph, "no process of the job has a placeholder in its environment")
        for f in ("tmp/out", "workspace/out"):
            b = read(f"/proc/{st['init']}/root/{f}")
            expect(PH_RE.search(b), f"/{f} inside the sandbox holds no placeholder: {b[:200]!r}")
            no_canary(b, f"/{f} inside the sandbox")
        ph = PH_RE.search(read(f"/proc/{pids[-1]}/environ")).group(0)
        for p in pids:
            hits, total = scan(p, dict(token_needles(), placeholder=ph))
            bad = {k: v for k, v in hits.items() if k != "placeholder"}
            expect(not bad, f"the token is in the memory of job process {p}: "
                   f"{[(k, cot.where(v[0])) for k, v in bad.items()][:3]}")
            st.setdefault("ph_seen", 0)
            st["ph_seen"] += bool(hits.get("placeholder"))
        expect(st["ph_seen"], "the placeholder is in no job process's memory (the scan would "
               "not have found the token either)")
        print(f"    {len(pids)} job processes scanned: placeholder only", flush=True)
    check("sandbox-holds-only-the-placeholder", sandbox)

    def executor_mem():
        if "init" not in st:
            raise Skip("the job did not start")
        # the job's values are resolved again every ~2 s (a 3 s ttl) and held
        # for the moment it takes to send them: a copy must not outlive that,
        # so a hit counts only when a second scan a second later finds it too
        hits, total = scan(x.ex.proc.pid, token_needles())
        if hits:
            time.sleep(1)
            hits, total = scan(x.ex.proc.pid, token_needles())
        expect(not hits, f"the token is in the executor's memory after JobOpen (two scans "
               f"1 s apart): {[(k, cot.where(v[0])) for k, v in hits.items()][:3]}")
        print(f"    executor: {total >> 20} MiB scanned, no token", flush=True)
    check("executor-wiped-values-after-sending", executor_mem)

    def proxy_during():
        if "init" not in st:
            raise Skip("the job did not start")
        p = egress_pid(x.ex)
        expect(p, "no airlock-egress child of the executor")
        st["egress"] = p
        for _ in range(3):  # a refresh may move the value past the scan
            hits, _ = scan(p, {"raw": TOKEN})
            if hits:
                break
        expect(hits, "the proxy does not hold the token while the job runs: the scan after the "
               "job could not tell a wiped value from one never found")
    check("proxy-holds-value-while-job-runs", proxy_during)

    def proxy_after():
        if "egress" not in st:
            raise Skip("no proxy scan before")
        x.jobs.cancel(st["id"], "done")
        j = x.jobs.wait_state(st["id"], TERMINAL)
        ALL_EVENTS.extend(x.jobs.watch_all(st["id"]))
        expect(j.state == P.JOB_STATE_CANCELLED, job_desc(j))
        key = f"{st['id']}/1"
        wait_until("JobClosed of the job", lambda: f"event=executor.egress_closed job={key}"
                   in x.ex.log())
        hits, total = scan(st["egress"], token_needles())
        expect(not hits, f"the token is still in the proxy's memory after JobClose: "
               f"{[(k, cot.where(v[0])) for k, v in hits.items()][:3]}")
        print(f"    proxy: {total >> 20} MiB scanned after JobClose, no token", flush=True)
    check("proxy-memory-wiped-after-job", proxy_after)

    def timed_out():
        job, out, err = x.run("timeout", P.JobSpec(
            pool="ci", kind=P.JOB_KIND_EXEC, network=net(UPSTREAM), credentials=[bind()],
            exec=P.ExecSpec(argv=["sleep", "600"], timeout_ms=1500)))
        expect(job.state == P.JOB_STATE_TIMED_OUT, job_desc(job, out, err))
        wait_until("JobClosed of the timed-out job",
                   lambda: f"event=executor.egress_closed job={job.id}/1" in x.ex.log())
    check("job-timeout-closes-its-proxy", timed_out)


# ---------------------------------------------------------------------------
# checks: refusals

def audit_records(x, job_id):
    key = f"{job_id}/1"
    return [r for r in ct.audit_after(x.cs, 0, action=USE) if r.request_id == key]


def wait_deny(x, job_id, pred=lambda r: True, what="a DENY record"):
    return wait_until(f"{what} for job {job_id} in credstore's audit chain",
                      lambda: [r for r in audit_records(x, job_id)
                               if r.decision == DENY and pred(r)], deadline=60)


def c_refusals(x):
    def ceiling_outside():
        job, out, err = x.run("outside", spec("true", dests=[
            UPSTREAM, P.NetworkDestination(host="evil.test", port=443)]))
        expect(job.state == P.JOB_STATE_FAILED and
               job.result.failure_reason == P.FAILURE_REASON_POLICY_DENIED and
               "evil.test:443" in job.result.failure_message, job_desc(job))
        r = wait_deny(x, job.id, lambda r: r.destination == "evil.test:443")
        print(f"    {job.result.failure_message!r}; audited seq {r[0].seq}", flush=True)
    check("job-destination-outside-ceiling", ceiling_outside)

    def ceiling_more():
        job, out, err = x.run("more", spec("true", dests=[
            P.NetworkDestination(host="other.test", port=8443, methods=["DELETE"])]))
        expect(job.state == P.JOB_STATE_FAILED and
               job.result.failure_reason == P.FAILURE_REASON_POLICY_DENIED and
               "other.test:8443" in job.result.failure_message, job_desc(job))
        wait_deny(x, job.id)
    check("job-asking-more-than-ceiling", ceiling_more)

    def no_ceiling():
        job, out, err = x.run("bare", spec("true", pool="bare"))
        expect(job.state == P.JOB_STATE_FAILED and
               job.result.failure_reason == P.FAILURE_REASON_POLICY_DENIED and
               "no egress ceiling" in job.result.failure_message, job_desc(job))
    check("pool-without-ceiling-allows-nothing", no_ceiling)

    def credstore_refused():
        before = ct.head_seq(x.cs)
        job, out, err = x.run("credrefused", spec("true", creds=[bind("test/denied", "T2")]))
        expect(job.state == P.JOB_STATE_FAILED and
               job.result.failure_reason == P.FAILURE_REASON_POLICY_DENIED and
               "credential test/denied" in job.result.failure_message and
               "credstore refused" in job.result.failure_message, job_desc(job))
        recs = [r for r in ct.audit_after(x.cs, before, action=RESOLVE)
                if r.credential == "test/denied"]
        expect(recs and all(r.decision == DENY for r in recs), f"Resolve records {recs}")
    check("credstore-refusal-fails-the-job", credstore_refused)

    def wildcard_binding():
        job, out, err = x.run("wildcard", spec("true", dests=[
            P.NetworkDestination(host="*.test", port=8443)],
            creds=[bind(dests=("*.test:8443",))]))
        expect(job.state == P.JOB_STATE_FAILED and
               job.result.failure_reason == P.FAILURE_REASON_POLICY_DENIED, job_desc(job))
    check("wildcard-credential-destination-refused", wildcard_binding)

    # Requests refused by the proxy: (tag, job spec, what the output must say)
    def proxy_denial(tag, sp, want_codes=("403",), upstream_path=None, must_contain=""):
        def run():
            n0 = len(upstream_log())
            job, out, err = x.run(tag, sp)
            text = (out + err).decode(errors="replace")
            no_canary(out + err, f"the output of {tag}")
            rs = results(out) or [text]
            per = want_codes if isinstance(want_codes[0], tuple) else [want_codes] * len(rs)
            expect(len(per) == len(rs), f"{len(rs)} answers, want {len(per)}: {rs}")
            for r, codes in zip(rs, per):
                expect(any(c in r for c in codes), f"got {r!r}, want one of {codes} "
                       f"({job_desc(job, out, err)})")
                expect(must_contain in r, f"{r!r} does not say {must_contain!r}")
            if upstream_path:
                got = [r for r in upstream_log()[n0:] if upstream_path in r["path"]]
                expect(not got, f"the refused request reached the upstream: {got}")
            recs = wait_deny(x, job.id)
            print(f"    {rs[0][:110]!r}; {len(recs)} DENY record(s): {recs[0].reason[:80]!r}",
                  flush=True)
        check(f"denied-{tag}", run)

    curl = 'curl -sS --max-time 30 -o /dev/null -w "%{http_code} %{http_connect}\\n" '
    both = (UPSTREAM, P.NetworkDestination(host="other.test", port=8443, methods=["GET", "POST"],
                                           path_prefixes=["/echo", "/public"]))
    proxy_denial("not-a-job-destination",
                 spec(curl + "https://other.test:8443/public; true"))
    proxy_denial("placeholder-to-another-host",
                 spec(curl + '-H "Authorization: Bearer $TOKEN" https://other.test:8443/echo',
                      dests=both, creds=[bind()]), upstream_path="/echo")
    proxy_denial("placeholder-in-another-header",
                 spec(curl + '-H "X-Leak: $TOKEN" https://upstream.test:8443/echo', creds=[bind()]),
                 upstream_path="/echo")
    proxy_denial("placeholder-in-the-path",
                 spec(curl + 'https://upstream.test:8443/echo/$TOKEN', creds=[bind()]),
                 upstream_path="/echo")
    proxy_denial("placeholder-in-the-query",
                 spec(curl + '"https://upstream.test:8443/echo?t=$TOKEN"', creds=[bind()]),
                 upstream_path="/echo")
    proxy_denial("placeholder-in-the-body",
                 spec(curl + '-d "t=$TOKEN" https://upstream.test:8443/echo', creds=[bind()]),
                 upstream_path="/echo")
    proxy_denial("placeholder-over-plain-http",
                 spec(curl + '-H "Authorization: Bearer $TOKEN" http://upstream.test:8080/echo',
                      dests=[P.NetworkDestination(host="upstream.test", port=8080), UPSTREAM],
                      creds=[bind(dests=("upstream.test:8443",))]),
                 upstream_path="/echo")
    for name in ("loop", "zero", "meta", "mapped"):
        proxy_denial(f"name-resolving-to-{name}",
                     spec(None, dests=[P.NetworkDestination(host=f"{name}.test", port=8443)],
                          argv=helper("raw", b64(f"CONNECT {name}.test:8443 HTTP/1.1\r\n"
                                                 f"Host: {name}.test:8443\r\n\r\n"))),
                     want_codes=("403", "502"))
    literals = ["0x7f.0.0.1", "0177.0.0.1", "2130706433", "0x7f000001", "127.1"]
    proxy_denial("ip-literal-spellings",
                 spec(None, argv=helper("raw", *[b64(f"CONNECT {h}:8443 HTTP/1.1\r\n"
                                                     f"Host: {h}:8443\r\n\r\n")
                                                 for h in literals])),
                 want_codes=("400", "403"), must_contain="127.0.0.1")
    H = "upstream.test:8080"
    # each shape with the answers it may get: 400, or 501 for a transfer coding
    # the proxy does not implement (RFC 9112 6.1)
    smuggle = [
        f"POST http://{H}/api HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        f"POST http://{H}/api HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        "0\r\n\r\n",
        f"GET http://{H}/api HTTP/1.1\r\nHost: {H}\r\nHost: other.test:8080\r\n\r\n",
        f"GET http://{H}/api HTTP/1.1\r\nHost: other.test:8080\r\n\r\n",
        f"GET http://user@{H}/api HTTP/1.1\r\nHost: {H}\r\n\r\n",
        f"GET http://{H}/a%zzpi HTTP/1.1\r\nHost: {H}\r\n\r\n",
        f"POST http://{H}/api HTTP/1.1\r\nHost: {H}\r\nContent-Length: 3\r\nContent-Length: 4\r\n"
        "\r\nabcd",
        "CONNECT upstream.test:8443 HTTP/1.1\r\nHost: other.test:8443\r\n\r\n",
    ]
    codes = [("400",), ("400", "501")] + [("400",)] * (len(smuggle) - 2)
    proxy_denial("request-smuggling-shapes",
                 spec(None, dests=[P.NetworkDestination(host="upstream.test", port=8080), UPSTREAM],
                      argv=helper("raw", *[b64(r) for r in smuggle])),
                 want_codes=codes, upstream_path="/api")
    proxy_denial("host-header-mismatch-inside-tls",
                 spec(curl + '-H "Host: other.test:8443" -H "Authorization: Bearer $TOKEN" '
                      'https://upstream.test:8443/api', creds=[bind()]),
                 want_codes=("400", "403"), upstream_path="/api")

    def sni_mismatch():
        # intercepted (the job's CA): SNI other than the CONNECT target
        job, out, err = x.run("sni-intercepted", spec(
            None, creds=[bind()], argv=helper("sni", "upstream.test:8443", "other.test", "1")))
        rs = results(out)
        expect(rs and rs[0].startswith(("tls-fail", "connect")), f"{rs} {job_desc(job, out, err)}")
        wait_deny(x, job.id)
        # tunnelled: the ClientHello's SNI is checked against the CONNECT target
        job, out, err = x.run("sni-tunnel", spec(
            None, dests=[P.NetworkDestination(host="plain.test", port=8443)],
            argv=helper("sni", "plain.test:8443", "upstream.test", "0")))
        rs = results(out)
        expect(rs and rs[0].startswith(("tls-fail", "connect")), f"{rs} {job_desc(job, out, err)}")
        wait_deny(x, job.id)
        print(f"    {rs[0][:100]!r}", flush=True)
    check("denied-host-sni-mismatch", sni_mismatch)

    def direct():
        job, out, err = x.run("direct", spec(None, argv=helper("direct", UP_ADDR)))
        rs = results(out)
        expect(len(rs) == 5, f"{rs} {job_desc(job, out, err)}")
        for r in rs:
            expect(" refused " in f" {r} ", f"a direct connect was not refused: {r}")
        print(f"    {rs}", flush=True)
    check("direct-connects-bypassing-the-proxy-fail", direct)


# ---------------------------------------------------------------------------
# checks: the proxy dies

def c_proxy_killed(x):
    st = {}

    def killed():
        p0 = egress_pid(x.ex)
        expect(p0, "no proxy to kill")
        jid = x.start("killed", spec(
            'curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" '
            'https://upstream.test:8443/api; echo READY; sleep 600', creds=[bind()]))
        wait_until("the job's READY", lambda: b"READY" in jt.out_of(x.events_so_far(jid)))
        os.kill(p0, signal.SIGKILL)
        j = x.jobs.wait_state(jid, TERMINAL)
        ALL_EVENTS.extend(x.jobs.watch_all(jid))
        expect(j.state == P.JOB_STATE_FAILED and
               j.result.failure_reason == P.FAILURE_REASON_INTERNAL and
               "egress proxy exited" in j.result.failure_message, job_desc(j))
        p1 = wait_until("a new proxy", lambda: (lambda p: p if p and p != p0 else None)(
            egress_pid(x.ex)))
        wait_until("the executor ready again", lambda: ready(x.ex))
        st["ok"] = True
        print(f"    {j.result.failure_message!r}; proxy {p0} -> {p1}", flush=True)
    check("proxy-killed-fails-its-jobs-and-restarts", killed)

    def after():
        if not st:
            raise Skip("the proxy was not restarted")
        job, out, err = x.run("after-restart", spec(
            'curl -sS --max-time 30 -H "Authorization: Bearer $TOKEN" '
            'https://upstream.test:8443/api', creds=[bind()]))
        expect_ok(job, out, err)
        expect(b'"ok": true' in out, f"{out!r}")
    check("jobs-work-after-proxy-restart", after)


def ready(ex):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ex.ops}/readyz", timeout=10) as r:
            return r.status == 200
    except Exception:
        return False


# ---------------------------------------------------------------------------
# checks: audit, privileges, canaries

def c_audit(x):
    def allowed():
        for tag in ("curl", "urllib"):
            recs = wait_until(f"ALLOW record of {tag}", lambda: [
                r for r in audit_records(x, JOBS[tag]) if r.decision == ALLOW], deadline=60)
            r = recs[0]
            expect(r.credential == "test/token" and r.version >= 1 and
                   r.destination.startswith("upstream.test:8443") and r.method == "GET" and
                   r.path == "/api" and r.status == 200 and r.caller.endswith("executor-0") and
                   r.principal == "acme/alice" and r.scope == "ci" and r.duration_us > 0,
                   f"record {r}")
        recs = wait_until("the tunnel's record", lambda: [
            r for r in audit_records(x, JOBS["tunnel"]) if r.decision == ALLOW], deadline=60)
        expect(recs[0].credential == "" and "plain.test:8443" in recs[0].destination and
               recs[0].duration_us > 0, f"tunnel record {recs[0]}")
        v = ct.verify(x.cs)
        expect(v.intact, f"audit chain: {v.problem}")
        print(f"    chain intact, {v.records_checked} records", flush=True)
    check("uses-in-credstore-audit-chain", allowed)

    def exfil():
        for tag in ("placeholder-in-another-header", "placeholder-to-another-host",
                    "placeholder-in-the-body"):
            recs = wait_deny(x, JOBS[tag])
            expect(any("exfiltration" in r.reason or "placeholder" in r.reason for r in recs),
                   f"{tag}: reasons {[r.reason for r in recs]}")
    check("exfiltration-attempts-audited-as-such", exfil)

    def blob():
        recs = ct.audit_after(x.cs, 0)
        no_canary(b"".join(r.SerializeToString() for r in recs), "credstore's audit records")
    check("no-token-in-audit-records", blob)


def c_privileges(x):
    def unprivileged():
        p = egress_pid(x.ex)
        expect(p, "no proxy")
        st = {k: cot.proc_status(p, k) for k in ("Uid", "Gid", "CapEff", "CapPrm", "NoNewPrivs",
                                                  "Seccomp")}
        expect(st["Uid"].split()[:4] == ["65534"] * 4 and st["Gid"].split()[:4] == ["65534"] * 4,
               f"ids {st}")
        expect(int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, f"capabilities {st}")
        expect(st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", f"{st}")
    check("proxy-runs-unprivileged", unprivileged)


def c_canaries(x, intake):
    def scans():
        no_canary(b"".join(e.SerializeToString() for e in ALL_EVENTS), "job events and results")
        for jid in JOBS.values():
            no_canary(x.jobs.get(jid).SerializeToString(), f"job {jid}")
        for f in os.listdir(intake.data_dir):
            p = os.path.join(intake.data_dir, f)
            if os.path.isfile(p):
                no_canary(read(p), f"intake's {f}")
        logs = [f for f in os.listdir(T_DIR) if f.endswith(".err") and not f.startswith("python")]
        for f in logs:
            no_canary(read(os.path.join(T_DIR, f)), f"log {f}")
        print(f"    {len(ALL_EVENTS)} events, {len(JOBS)} jobs, intake db, {len(logs)} logs",
              flush=True)
    check("no-token-in-events-results-intake-db-logs", scans)


# ---------------------------------------------------------------------------

def main():
    t0 = time.monotonic()
    cs = intake = ex = None
    try:
        mk = ct.gen_master(os.path.join(T_DIR, "master.key"))
        cs = Credstore("credstore", os.path.join(T_DIR, "cs.data"), mk, issuers=ISSUERS).start()
        put_credentials(cs)
        intake = Intake("intake").start()
        key = intake.new_key("acme/alice")
        ex = jt.Executor(intake, 0, slots=4, extra=executor_config(cs.port)).start()
        jobs = intake.jobs(key)
        x = Ctx(jobs, cs, ex)
        wait_until("the executor's Lease stream", lambda: ready(ex))
    except Exception as e:
        check("servers-start", lambda e=e: (_ for _ in ()).throw(e))
        return 1
    check("servers-start", lambda: None)
    for suite in (c_injection, c_privileges, c_sandbox_and_memory, c_refusals, c_proxy_killed,
                  c_audit):
        try:
            suite(x)
        except Exception as e:
            check(f"{suite.__name__}-suite", lambda e=e: (_ for _ in ()).throw(e))
    c_canaries(x, intake)

    def stop():
        p = egress_pid(ex)
        ex.stop()
        if p:
            wait_until("the proxy to exit with its executor",
                       lambda: not os.path.exists(f"/proc/{p}") or
                       read(f"/proc/{p}/stat").split()[2] == b"Z")
    check("executor-exit-stops-proxy", stop)
    for s in (intake, cs):
        check(f"{s.name}-exit", s.stop)
    print(f"egress_test.py: {time.monotonic() - t0:.1f}s", flush=True)
    return 1 if failures() else 0


def events_now(jobs, jid):
    """The events of a running job so far (Watch with a short deadline)."""
    evs = []
    try:
        for e in jobs.watch(jid, timeout=2):
            evs.append(e)
    except Exception:
        pass
    return evs


if __name__ == "__main__":
    sys.exit(main())
