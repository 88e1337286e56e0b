"""Integration checks of airlock-egress (run by egress_proxy.sh with /usr/bin/python3).

Two roles in one file:
  egress_proxy_test.py upstream   the test upstream, run inside the test network namespace:
                                  https on ADDR4:443 and [ADDR6]:443 (its own test CA), plain
                                  http on ADDR4:80; it requires the real credentials, can echo
                                  what it received (headers, body) and the credential in
                                  several encodings, and logs every request it saw
  egress_proxy_test.py            the driver: starts the real airlock-egress with one end of a
                                  socket.socketpair(AF_UNIX, SOCK_SEQPACKET), speaks the
                                  control protocol (protobuf generated at run time), hands a
                                  listening socket it made on 127.0.0.1 over with JobListen
                                  (socket.send_fds), and drives real curl and Python urllib
                                  (and raw sockets for the malformed shapes) through it.

Environment (from egress_proxy.sh): BIN GEN_DIR T_DIR NS ADDR4 ADDR6 NET4 NET6 UP_CA UP_CERT
UP_KEY. Prints PASS/FAIL/SKIP lines; exits 1 if a check failed. Waits are "until X, at most N
seconds" failsafes, never timing assertions.
"""

import base64
import http.server
import json
import os
import re
import secrets
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

ENV = os.environ
T_DIR = ENV.get("T_DIR", "/tmp")
ADDR4, ADDR6 = ENV.get("ADDR4", ""), ENV.get("ADDR6", "")

# ============================================================== upstream role


def upstream_main():
    token, basic, key = ENV["UP_TOKEN"], ENV["UP_BASIC"], ENV["UP_KEY_VALUE"]
    log_path = os.path.join(T_DIR, "upstream.log")
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # head and body leave in separate writes

        def log_message(self, *a):
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def reply(self, code, body, extra=()):
            self.send_response(code)
            for k, v in extra:
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def chunked(self, pieces):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for p in pieces:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
            self.wfile.write(b"0\r\n\r\n")

        def any(self):
            body = self.read_body()
            path = urllib.parse.urlsplit(self.path).path
            auth = self.headers.get("Authorization", "")
            rec = {"method": self.command, "path": self.path, "peer": self.client_address[1],
                   "headers": [[k.lower(), v] for k, v in self.headers.items()],
                   "body": body.decode("latin-1"), "tls": isinstance(self.connection, ssl.SSLSocket)}
            with lock, open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if path == "/need-token":
                ok = auth == "Bearer " + token
                self.reply(200 if ok else 401, b"token ok\n" if ok else b"bad token\n")
            elif path == "/need-basic":
                ok = auth == "Basic " + base64.b64encode(basic.encode()).decode()
                self.reply(200 if ok else 401, b"basic ok\n" if ok else b"bad basic\n")
            elif path == "/need-key":
                ok = self.headers.get("X-Api-Key", "") == key
                self.reply(200 if ok else 401, b"key ok\n" if ok else b"bad key\n")
            elif path == "/echo":
                out = json.dumps({"headers": rec["headers"], "body": rec["body"]}).encode()
                self.reply(200, out, [("X-Echo-Authorization", auth or "-")])
            elif path == "/forms":
                t = token.encode()
                forms = [t, t.hex().encode(), urllib.parse.quote(token, safe="").encode(),
                         json.dumps(token).encode()]
                forms += [base64.b64encode(b"\0" * k + t) for k in range(3)]
                text = b" | ".join(forms) + b"\n"
                self.chunked([text[i:i + 3] for i in range(0, len(text), 3)])
            elif path == "/big":
                self.reply(200, b"x" * 300000)
            else:
                self.reply(200, ("path " + self.path + "\n").encode())

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = any

    class S4(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    class S6(S4):
        address_family = socket.AF_INET6

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ENV["UP_CERT"], ENV["UP_KEY"])
    ctx.set_alpn_protocols(["http/1.1"])
    servers = [S4((ADDR4, 443), H), S6((ADDR6, 443), H), S4((ADDR4, 80), H)]
    for s in servers[:2]:
        s.socket = ctx.wrap_socket(s.socket, server_side=True, do_handshake_on_connect=False)
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    with open(os.path.join(T_DIR, "upstream.ready"), "w") as f:
        f.write("ok")
    threading.Event().wait()


# ================================================================ driver role

FAILED = 0


class CheckFailed(Exception):
    pass


class Skip(Exception):
    pass


def expect(cond, why):
    if not cond:
        raise CheckFailed(why)


def check(name, fn, *a):
    global FAILED
    try:
        fn(*a)
        print(f"PASS {name}", flush=True)
    except Skip as e:
        print(f"SKIP {name}: {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported as a FAIL line
        FAILED += 1
        msg = str(e).replace("\n", " ")[:400]
        print(f"FAIL {name}: {type(e).__name__ if not isinstance(e, CheckFailed) else ''}"
              f"{': ' if not isinstance(e, CheckFailed) else ''}{msg}", flush=True)


def until(pred, timeout=30.0, step=0.02):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Ctl:
    """The executor's end of the control socket; a thread collects what the proxy sends."""

    def __init__(self, sock, pb):
        self.s, self.pb = sock, pb
        self.msgs, self.cv, self.eof = [], threading.Condition(), False
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        while True:
            try:
                data = self.s.recv(1 << 21)
            except OSError:
                data = b""
            with self.cv:
                if not data:
                    self.eof = True
                    self.cv.notify_all()
                    return
                m = self.pb.EgressMsg()
                m.ParseFromString(data)
                self.msgs.append(m)
                self.cv.notify_all()

    def send(self, m, fds=()):
        data = m.SerializeToString()
        if fds:
            socket.send_fds(self.s, [data], list(fds))
        else:
            self.s.send(data)

    def mark(self):
        with self.cv:
            return len(self.msgs)

    def wait(self, pred, since=0, timeout=30.0):
        end = time.time() + timeout
        with self.cv:
            while True:
                for m in self.msgs[since:]:
                    if pred(m):
                        return m
                left = end - time.time()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def uses(self, since=0):
        with self.cv:
            return [m.use for m in self.msgs[since:] if m.WhichOneof("msg") == "use"]


class Env:
    pass


E = Env()


def ph():
    return "AIRLOCK_PH_" + secrets.token_hex(16)


def canary(prefix):
    return prefix + secrets.token_urlsafe(24)


def start_upstream():
    E.token, E.basic_user = canary("tok-"), "robot"
    E.basic = E.basic_user + ":" + canary("pw-")
    E.key = canary("key-")
    env = dict(ENV, UP_TOKEN=E.token, UP_BASIC=E.basic, UP_KEY_VALUE=E.key)
    err = open(os.path.join(T_DIR, "upstream.err"), "w")
    E.up = subprocess.Popen(["ip", "netns", "exec", ENV["NS"], sys.executable, __file__,
                             "upstream"], env=env, stdin=subprocess.DEVNULL, stdout=err,
                            stderr=err)
    if not until(lambda: os.path.exists(os.path.join(T_DIR, "upstream.ready")), 60):
        raise SystemExit("the test upstream did not start")


def upstream_log():
    try:
        with open(os.path.join(T_DIR, "upstream.log")) as f:
            return [json.loads(x) for x in f if x.strip()]
    except FileNotFoundError:
        return []


class Dns:
    """A DNS responder on 127.0.0.1 (UDP): A records from a table, NXDOMAIN otherwise; it
    remembers every name it was asked for."""

    TABLE = {"dns.test": ADDR4, "dnsloop.test": "127.0.0.1"}

    def __init__(self):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.port = self.s.getsockname()[1]
        self.asked = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            q, peer = self.s.recvfrom(512)
            pos, labels = 12, []
            while pos < len(q) and q[pos]:
                labels.append(q[pos + 1:pos + 1 + q[pos]].decode("latin-1").lower())
                pos += 1 + q[pos]
            name, qtype = ".".join(labels), int.from_bytes(q[pos + 1:pos + 3], "big")
            self.asked.append(name)
            addr = self.TABLE.get(name)
            ans = b""
            if addr and qtype == 1:
                ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr)
            flags = b"\x84\x00" if addr else b"\x84\x03"
            head = q[:2] + flags + b"\x00\x01" + (b"\x00\x01" if ans else b"\x00\x00") + b"\x00" * 4
            self.s.sendto(head + q[12:pos + 5] + ans, peer)


def start_proxy(name="egress", extra=()):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    resolve = [f"api.test={ADDR4}", f"other.test={ADDR4}", f"tunnel.test={ADDR4}",
               f"plain.test={ADDR4}", f"noplain.test={ADDR4}", f"v6.test={ADDR6}",
               f"x.corp.test={ADDR4}", "loop.test=127.0.0.1", "zero.test=0.0.0.0",
               "meta.test=169.254.169.254", "mapped.test=::ffff:127.0.0.1",
               "private.test=10.99.0.1", "meta6.test=fd00:ec2::254"]
    args = [os.path.join(ENV["BIN"], "airlock-egress"), "--control-fd", str(b.fileno()),
            "--uid", "65534", "--gid", "65534", "--ca-file", ENV["UP_CA"],
            "--connect-timeout-ms", "10000", "--dns-servers", f"127.0.0.1:{E.dns.port}"]
    for r in resolve:
        args += ["--resolve", r]
    err = open(os.path.join(T_DIR, name + ".err"), "w")
    p = subprocess.Popen(args + list(extra), pass_fds=[b.fileno()], stdin=subprocess.DEVNULL,
                         stdout=err, stderr=err)
    b.close()
    return p, Ctl(a, E.pb)


def dest(pb, host, port, methods=(), prefixes=(), cidrs=(), http=False):
    d = pb.EgressDestination(host=host, port=port, allow_http=http)
    d.methods.extend(methods)
    d.path_prefixes.extend(prefixes)
    d.allow_cidrs.extend(cidrs)
    return d


def open_job(ctl, job, ceiling, dests, creds=(), limits=None, grant="grant-1"):
    m = E.pb.EgressMsg()
    m.open.job = job
    m.open.principal = "acme/agent"
    m.open.pool = "ci"
    m.open.grant_id = grant
    m.open.ceiling.extend(ceiling)
    m.open.destinations.extend(dests)
    m.open.credentials.extend(creds)
    if limits:
        m.open.limits.CopyFrom(limits)
    since = ctl.mark()
    ctl.send(m)
    r = ctl.wait(lambda x: x.WhichOneof("msg") == "opened" and x.opened.job == job, since)
    expect(r is not None, f"no JobOpened for {job}")
    return r.opened


def listen_job(ctl, job):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    m = E.pb.EgressMsg()
    m.listen.job = job
    ctl.send(m, [ls.fileno()])
    port = ls.getsockname()[1]
    ls.close()  # the proxy holds its own descriptor now
    return port


def close_job(ctl, job):
    m = E.pb.EgressMsg()
    m.close.job = job
    since = ctl.mark()
    ctl.send(m)
    r = ctl.wait(lambda x: x.WhichOneof("msg") == "closed" and x.closed.job == job, since)
    expect(r is not None, f"no JobClosed for {job}")
    return r.closed


def cred(pb, name, placeholder, value, dests, ctype=1, header="", fmt="", plain=False,
         expires=None, cs_expires=0, grant=""):
    c = pb.EgressCredential(credential=name, placeholder=placeholder, version=3, type=ctype,
                            header=header, format=fmt, allow_plain_http=plain,
                            value=value.encode(), grant_id=grant,
                            expires_unix_ms=expires or int(time.time() * 1000) + 3600_000,
                            credstore_expires_unix_ms=cs_expires)
    c.destinations.extend(dests)
    return c


# ------------------------------------------------------------ client helpers

def curl(args, port=None, cafile=None, timeout=60):
    cmd = ["curl", "-sS", "--max-time", "30", "--noproxy", "", "-o", "-", "-w",
           "\n%{http_code}", "--proxy", f"http://127.0.0.1:{port or E.port}"]
    if cafile is not False:
        cmd += ["--cacert", cafile or E.job_ca]
    env = {k: v for k, v in ENV.items() if "proxy" not in k.lower()}
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=env)
    body, _, code = r.stdout.rpartition("\n")
    return r.returncode, int(code or 0), body.rstrip("\n"), r.stderr


URLLIB = r"""
import json, ssl, sys, urllib.request, urllib.error
url, proxy, ca, hdrs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
op = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
                                 urllib.request.HTTPSHandler(context=ctx))
try:
    r = op.open(urllib.request.Request(url, headers=hdrs), timeout=30)
    print(r.status); sys.stdout.write(r.read().decode("latin-1"))
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode("latin-1"))
"""


def urllib_get(url, headers):
    r = subprocess.run([sys.executable, "-c", URLLIB, url, f"http://127.0.0.1:{E.port}",
                        E.job_ca, json.dumps(headers)], capture_output=True, text=True,
                       timeout=60)
    expect(r.returncode == 0, f"urllib client failed: {r.stderr.strip()[-300:]}")
    status, _, body = r.stdout.partition("\n")
    return int(status), body


def read_response(sock, timeout=30):
    """Reads one HTTP/1.1 response (Content-Length or chunked, or until close)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0] if lines else "")
    expect(m, f"not an HTTP response: {buf[:120]!r}")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    body = rest
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(body) < n:
            d = sock.recv(65536)
            if not d:
                break
            body += d
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            d = sock.recv(65536)
            if not d:
                break
            body += d
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    elif int(m.group(1)) != 200 or "connection" in hdrs:
        while True:
            d = sock.recv(65536)
            if not d:
                break
            body += d
    return int(m.group(1)), hdrs, body


def raw(data, port=None):
    with socket.create_connection(("127.0.0.1", port or E.port), timeout=30) as s:
        s.sendall(data)
        return read_response(s)


def connect(target, host_hdr=None, port=None):
    s = socket.create_connection(("127.0.0.1", port or E.port), timeout=30)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {host_hdr or target}\r\n\r\n".encode())
    s.settimeout(30)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(1)
        if not d:
            break
        buf += d
    m = re.match(rb"HTTP/1\.1 (\d{3})", buf)
    return s, int(m.group(1)) if m else 0, buf


def tls_request(target, sni, request, cafile=None, alpn=("http/1.1",)):
    s, code, head = connect(target)
    expect(code == 200, f"CONNECT {target}: {head[:200]!r}")
    ctx = ssl.create_default_context(cafile=cafile or E.job_ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    t = ctx.wrap_socket(s, server_hostname=sni)
    t.sendall(request)
    try:
        return read_response(t)
    finally:
        t.close()


def reason_of(body):
    text = body.decode("latin-1") if isinstance(body, bytes) else body
    return text.strip().splitlines()[0] if text.strip() else ""


def expect_denied(code, body, want_code, want_reason):
    r = reason_of(body)
    expect(code == want_code, f"status {code}, want {want_code} ({r[:200]})")
    expect(r.startswith("airlock-egress: ") and want_reason in r,
           f"reason {r[:250]!r} does not say {want_reason!r}")


def expect_use(since, pred, what):
    u = None
    end = time.time() + 30
    while time.time() < end and u is None:
        u = next((x for x in E.ctl.uses(since) if pred(x)), None)
        if u is None:
            time.sleep(0.02)
    expect(u is not None, f"no Use record {what}; got "
           f"{[(x.destination, x.status, x.allowed, x.reason[:60]) for x in E.ctl.uses(since)]}")
    return u


def denial_use(since, reason, exfil=False, cred_name=None):
    u = expect_use(since, lambda x: not x.allowed and reason in x.reason, f"with {reason!r}")
    expect(u.exfiltration == exfil, f"exfiltration flag {u.exfiltration}, want {exfil}")
    if cred_name is not None:
        expect(u.credential == cred_name, f"credential {u.credential!r}, want {cred_name!r}")
    for v in (E.token, E.basic, E.key):
        expect(v not in str(u), "a credential value in a Use record")
    return u


# ------------------------------------------------------------ memory scan

ASAN_HIGH_SHADOW = (0x02008FFF7000, 0x10007FFF8000)


def value_forms(tag, v):
    b = v.encode()
    forms = {f"{tag}:raw": b, f"{tag}:hex": b.hex().encode()}
    for j in range(3):
        forms[f"{tag}:base64@{j}"] = base64.b64encode(b"\0" * j + b)[4:-4]
    return forms


def scan_memory(pid, needles):
    """Every readable mapping of pid through /proc/PID/mem; {needle: [addr]}."""
    hits, keep = {}, max(len(n) for n in needles.values())
    with open(f"/proc/{pid}/maps") as f:
        maps = [ln.split() for ln in f]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for m in maps:
            lo, hi = (int(x, 16) for x in m[0].split("-"))
            name = m[5] if len(m) > 5 else ""
            if m[1][0] != "r" or name.startswith("[vvar") or (lo, hi) == ASAN_HIGH_SHADOW:
                continue
            prev, a = b"", lo
            while a < hi:
                n = min(1 << 22, hi - a)
                try:
                    mem.seek(a)
                    b = mem.read(n)
                except OSError:
                    b = b""
                buf = prev + b
                for k, nd in needles.items():
                    i = buf.find(nd)
                    while i >= 0:
                        hits.setdefault(k, set()).add(a - len(prev) + i)
                        i = buf.find(nd, i + 1)
                prev = b[-keep:]
                a += n
    return hits


# ================================================================ the checks

def ceiling_and_dests(pb):
    n4, n6 = [ENV["NET4"]], [ENV["NET6"]]
    ceiling = [dest(pb, "api.test", 443, cidrs=n4), dest(pb, "other.test", 443, cidrs=n4),
               dest(pb, "tunnel.test", 443, cidrs=n4), dest(pb, "v6.test", 443, cidrs=n6),
               dest(pb, "plain.test", 80, cidrs=n4, http=True),
               dest(pb, "noplain.test", 80, cidrs=n4),
               dest(pb, "*.corp.test", 443, cidrs=n4),
               dest(pb, "loop.test", 443, cidrs=["127.0.0.0/8"]),
               dest(pb, "zero.test", 443, cidrs=["0.0.0.0/8"]),
               dest(pb, "meta.test", 443, cidrs=["169.254.0.0/16"]),
               dest(pb, "meta6.test", 443, cidrs=["fd00::/8"]),
               dest(pb, "mapped.test", 443, cidrs=["::ffff:0:0/96", "127.0.0.0/8"]),
               dest(pb, "private.test", 443),
               dest(pb, "dns.test", 443, cidrs=n4), dest(pb, "dnsloop.test", 443,
                                                         cidrs=["127.0.0.0/8"]),
               dest(pb, "nx.test", 443),
               dest(pb, "127.0.0.1", 443, cidrs=["127.0.0.0/8"]),
               dest(pb, ADDR4, 443, cidrs=n4)]
    dests = [dest(pb, "api.test", 443),
             dest(pb, "other.test", 443, methods=["GET", "HEAD"], prefixes=["/allowed/"]),
             dest(pb, "tunnel.test", 443), dest(pb, "v6.test", 443),
             dest(pb, "plain.test", 80), dest(pb, "noplain.test", 80),
             dest(pb, "loop.test", 443), dest(pb, "zero.test", 443), dest(pb, "meta.test", 443),
             dest(pb, "meta6.test", 443), dest(pb, "mapped.test", 443),
             dest(pb, "private.test", 443), dest(pb, "127.0.0.1", 443), dest(pb, ADDR4, 443),
             dest(pb, "dns.test", 443), dest(pb, "dnsloop.test", 443), dest(pb, "nx.test", 443)]
    return ceiling, dests


def c_process():
    st = {}
    with open(f"/proc/{E.proxy.pid}/status") as f:
        for ln in f:
            k, _, v = ln.partition(":")
            st[k] = v.split()
    expect(st["Uid"] == ["65534"] * 4 and st["Gid"] == ["65534"] * 4,
           f"Uid {st['Uid']} Gid {st['Gid']}")
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        expect(int(st[cap][0], 16) == 0, f"{cap} {st[cap][0]}")
    expect(st["NoNewPrivs"] == ["1"], f"NoNewPrivs {st['NoNewPrivs']}")
    expect(st["Seccomp"] == ["2"], f"Seccomp {st['Seccomp']} (want 2: filter)")
    expect(os.stat(f"/proc/{E.proxy.pid}/mem").st_uid == 0,
           "/proc/PID/mem not owned by root: the process is dumpable")


def c_job_ca():
    pem = E.opened.ca_cert_pem
    expect(E.opened.error == "", f"JobOpened error {E.opened.error!r}")
    expect(pem.startswith("-----BEGIN CERTIFICATE-----"), "no CA certificate in JobOpened")
    r = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True,
                       text=True)
    t = r.stdout
    expect("CA:TRUE, pathlen:0" in t, "basicConstraints CA:TRUE pathlen:0 missing")
    expect(re.search(r"X509v3 Name Constraints: critical\s+Permitted:", t),
           "critical nameConstraints missing")
    for h in ("DNS:api.test", "DNS:other.test", "IP:127.0.0.1"):
        expect(h in t, f"nameConstraints do not permit {h}")
    expect("Certificate Sign" in t and "Digital Signature" not in t, "keyUsage not keyCertSign")


def c_curl_inject():
    rc, code, body, err = curl(["-H", f"Authorization: Bearer {E.ph_tok}",
                                "https://api.test/need-token"])
    expect(rc == 0 and code == 200 and body == "token ok", f"rc {rc} {code} {body!r} {err[-200:]}")
    last = [x for x in upstream_log() if x["path"] == "/need-token"][-1]
    hd = dict(last["headers"])
    expect(hd.get("authorization") == "Bearer " + E.token, "the upstream did not get the token")
    expect(hd.get("accept-encoding") == "identity", f"accept-encoding {hd.get('accept-encoding')}")
    expect(not any(k.startswith("proxy-") for k in hd), "a proxy-* header reached the upstream")


def c_urllib_inject():
    status, body = urllib_get("https://api.test/need-token",
                              {"Authorization": "Bearer " + E.ph_tok})
    expect(status == 200 and body == "token ok\n", f"{status} {body!r}")


def c_use_allowed():
    u = expect_use(0, lambda x: x.allowed and x.path == "/need-token" and x.credential == "tok",
                   "for the injected request")
    expect(u.destination == "api.test:443" and u.status == 200 and u.method == "GET",
           f"{u.destination} {u.status} {u.method}")
    expect(u.grant_id == "grant-1" and u.version == 3 and u.job == E.job, str(u)[:200])


def c_echo_placeholder():
    rc, code, body, _ = curl(["-i", "-H", f"Authorization: Bearer {E.ph_tok}",
                              "https://api.test/echo"])
    expect(code == 200, f"status {code}")
    expect(E.token not in body, "the token came back to the client")
    expect(f"Bearer {E.ph_tok}" in body, "the echoed header is not the placeholder")
    expect(re.search(r"(?im)^x-echo-authorization: Bearer " + E.ph_tok, body),
           "the echoed response header is not the placeholder")


def c_echo_forms():
    status, body = urllib_get("https://api.test/forms", {"Authorization": "Bearer " + E.ph_tok})
    expect(status == 200, f"status {status}")
    t = E.token.encode()
    bad = [t, t.hex().encode()] + [base64.b64encode(b"\0" * k + t)[4:-4] for k in range(3)]
    expect(not any(x in body.encode() for x in bad), "a form of the token reached the client")
    expect(body.count(E.ph_tok) >= 6, f"placeholders in {body[:300]!r}")


def c_basic():
    rc, code, body, err = curl(["-u", f"{E.ph_basic}:", "https://api.test/need-basic"])
    expect(code == 200 and body == "basic ok", f"{code} {body!r} {err[-200:]}")


def c_plain_http():
    rc, code, body, err = curl(["-H", f"X-Api-Key: {E.ph_key}", "http://plain.test/need-key"],
                               cafile=False)
    expect(code == 200 and body == "key ok", f"{code} {body!r} {err[-200:]}")
    u = expect_use(0, lambda x: x.allowed and x.destination == "http://plain.test:80" and
                   x.credential == "key", "for the plain http request")
    expect(u.status == 200, f"status {u.status}")


def c_tunnel():
    since = E.ctl.mark()
    rc, code, body, err = curl(["https://tunnel.test/hello"], cafile=ENV["UP_CA"])
    expect(code == 200 and body == "path /hello", f"{code} {body!r} {err[-200:]}")
    u = expect_use(since, lambda x: x.destination == "tunnel.test:443" and x.method == "CONNECT",
                   "for the tunnel")
    expect(u.allowed and u.status == 200 and u.request_bytes > 0 and u.response_bytes > 0 and
           u.duration_us > 0,
           f"{u.allowed} {u.status} {u.request_bytes} {u.response_bytes} {u.duration_us}")


def c_tunnel_v6():
    rc, code, body, err = curl(["https://v6.test/six"], cafile=ENV["UP_CA"])
    expect(code == 200 and body == "path /six", f"{code} {body!r} {err[-200:]}")


def c_hex_literal_allowed():
    # the allowed address spelled in hex: recognised as that address (opaque, no SNI)
    a = [int(x) for x in ADDR4.split(".")]
    hexform = "0x%02x%02x%02x%02x" % tuple(a)
    s, code, head = connect(f"{hexform}:443")
    expect(code == 200, f"CONNECT {hexform}: {head[:200]!r}")
    ctx = ssl.create_default_context(cafile=ENV["UP_CA"])
    ctx.check_hostname = False
    t = ctx.wrap_socket(s)  # no server name for an address
    t.sendall(b"GET /lit HTTP/1.1\r\nHost: " + ADDR4.encode() + b"\r\nConnection: close\r\n\r\n")
    code, _, body = read_response(t)
    t.close()
    expect(code == 200 and body == b"path /lit\n", f"{code} {body!r}")


def c_dns():
    rc, code, body, err = curl(["https://dns.test/dns"], cafile=ENV["UP_CA"])
    expect(code == 200 and body == "path /dns", f"{code} {body!r} {err[-200:]}")
    expect("dns.test" in E.dns.asked, "the proxy did not ask the DNS server")


def c_dns_denials():
    deny_check("deny-dns-resolves-127", via_connect("dnsloop.test:443"), 403,
               "dnsloop.test:443 resolves only to denied addresses (127.0.0.1)")
    deny_check("deny-dns-nxdomain", via_connect("nx.test:443"), 502, "nx.test:443 does not resolve")
    check("no-dns-for-denied-names", lambda: expect(
        not [n for n in E.dns.asked if n.endswith(("evil.test", "corp.test"))],
        f"names outside the policy were looked up: {E.dns.asked}"))


def c_keepalive():
    before = len(upstream_log())
    s, code, head = connect("api.test:443")
    expect(code == 200, f"CONNECT: {head[:100]!r}")
    t = ssl.create_default_context(cafile=E.job_ca).wrap_socket(s, server_hostname="api.test")
    try:
        for i in range(3):
            t.sendall(f"GET /need-token?i={i} HTTP/1.1\r\nHost: api.test\r\nAuthorization: "
                      f"Bearer {E.ph_tok}\r\n\r\n".encode())
            code, hdrs, body = read_response(t)
            expect(code == 200 and body == b"token ok\n", f"request {i}: {code} {body!r}")
            expect(hdrs.get("connection", "") != "close", "the proxy closed a kept-alive connection")
    finally:
        t.close()
    seen = [x for x in upstream_log()[before:] if x["path"].startswith("/need-token?i=")]
    expect(len(seen) == 3, f"the upstream saw {len(seen)} of 3 requests")
    expect(len({x["peer"] for x in seen}) == 1,
           f"the upstream saw {len({x['peer'] for x in seen})} connections for 3 requests")


def c_big():
    rc, code, body, err = curl(["-H", f"Authorization: Bearer {E.ph_tok}", "https://api.test/big"])
    expect(code == 200 and len(body) == 300000 and set(body) == {"x"},
           f"{code} {len(body)} bytes {err[-200:]}")


def deny_check(name, fn, want_code, reason, exfil=False, cred_name=None):
    def run():
        since = E.ctl.mark()
        code, body = fn()
        expect_denied(code, body, want_code, reason)
        denial_use(since, reason, exfil, cred_name)
    check(name, run)


def via_curl(args, cafile=None):
    def f():
        rc, code, body, _ = curl(args, cafile=cafile)
        return code, body
    return f


def via_tls(target, sni, req, cafile=None):
    def f():
        code, _, body = tls_request(target, sni, req, cafile)
        return code, body
    return f


def via_raw(data):
    def f():
        code, _, body = raw(data)
        return code, body
    return f


def via_connect(target, host_hdr=None):
    def f():
        s, code, head = connect(target, host_hdr)
        try:
            rest = head.partition(b"\r\n\r\n")[2]
            s.settimeout(30)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                rest += d
        finally:
            s.close()
        return code, rest
    return f


def req(method, path, host="api.test", headers=(), body=b"", chunks=None):
    h = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    h += list(headers)
    if chunks is not None:
        h.append("Transfer-Encoding: chunked")
        data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    else:
        data = body
        if body or method in ("POST", "PUT"):
            h.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + data


def denials():
    bearer = f"Authorization: Bearer {E.ph_tok}"
    deny_check("deny-outside-ceiling", via_connect("evil.test:443"), 403,
               "evil.test:443 is not an allowed destination for this job")
    deny_check("deny-ceiling-but-not-job", via_connect("x.corp.test:443"), 403,
               "x.corp.test:443 is not an allowed destination")
    deny_check("deny-placeholder-other-host",
               via_tls("other.test:443", "other.test", req("GET", "/allowed/x", "other.test",
                                                           [bearer])),
               403, "credential tok is not bound to other.test:443", True, "tok")
    deny_check("deny-placeholder-other-header",
               via_tls("api.test:443", "api.test", req("GET", "/echo", headers=[
                   f"X-Debug: {E.ph_tok}"])), 403, "in header x-debug", True, "tok")
    deny_check("deny-placeholder-in-path",
               via_tls("api.test:443", "api.test", req("GET", f"/echo/{E.ph_tok}")), 403,
               "in the request URL", True, "tok")
    deny_check("deny-placeholder-in-query",
               via_tls("api.test:443", "api.test", req("GET", f"/echo?t={E.ph_tok}")), 403,
               "in the request URL", True, "tok")
    deny_check("deny-placeholder-wrong-slot-shape",
               via_tls("api.test:443", "api.test", req("GET", "/echo", headers=[
                   f"Authorization: token {E.ph_tok}"])), 403, "not in the form", True, "tok")

    def body_denied(name, make):
        def run():
            before = len([x for x in upstream_log() if x["path"] == "/body-check"])
            since = E.ctl.mark()
            code, _, body = tls_request("api.test:443", "api.test", make())
            expect_denied(code, body, 403, "in the request body")
            denial_use(since, "in the request body", True, "tok")
            after = len([x for x in upstream_log() if x["path"] == "/body-check"])
            expect(after == before, "the request reached the upstream")
        check(name, run)

    body_denied("deny-placeholder-in-body",
                lambda: req("POST", "/body-check", body=b'{"x":"' + E.ph_tok.encode() + b'"}'))
    p = E.ph_tok.encode()
    body_denied("deny-placeholder-split-across-chunks",
                lambda: req("POST", "/body-check", chunks=[b"a=" + p[:7], p[7:20], p[20:],
                                                           b"&end"]))
    body_denied("deny-placeholder-base64-in-body",
                lambda: req("POST", "/body-check", body=b"q=" + base64.b64encode(b"xx" + p)))
    deny_check("deny-plain-http-bearer", via_curl([
        "-H", bearer, "http://plain.test/echo"], cafile=False), 403,
        "credential tok is not bound to plain.test:80", True, "tok")
    deny_check("deny-plain-http-not-allowed", via_curl(["http://noplain.test/echo"], False),
               403, "http://noplain.test:80 is not an allowed destination")
    for name, host, addr in (("deny-resolves-127", "loop.test", "127.0.0.1"),
                             ("deny-resolves-0000", "zero.test", "0.0.0.0"),
                             ("deny-resolves-metadata", "meta.test", "169.254.169.254"),
                             ("deny-resolves-metadata6", "meta6.test", "fd00:ec2::254"),
                             ("deny-resolves-mapped", "mapped.test", "::ffff:127.0.0.1"),
                             ("deny-resolves-private", "private.test", "10.99.0.1")):
        deny_check(name, via_connect(f"{host}:443"), 403,
                   f"{host}:443 resolves only to denied addresses ({addr})")
    for name, lit in (("deny-literal-decimal", "2130706433"), ("deny-literal-octal", "0177.0.0.1"),
                      ("deny-literal-hex", "0x7f.1"), ("deny-literal-short", "127.1")):
        deny_check(name, via_connect(f"{lit}:443"), 403,
                   "127.0.0.1:443 resolves only to denied addresses (127.0.0.1)")
    deny_check("deny-literal-octal-absolute-form",
               via_raw(b"GET http://0177.0.0.1/ HTTP/1.1\r\nHost: 0177.0.0.1\r\n\r\n"), 403,
               "http://127.0.0.1:80 is not an allowed destination")
    deny_check("deny-literal-bad-octal", via_connect("0189.0.0.1:443"), 400,
               "looks like an IPv4 address but is not a valid one")
    deny_check("deny-method-rule", via_tls("other.test:443", "other.test", req(
        "POST", "/allowed/x", "other.test", body=b"{}")), 403, "method not allowed")
    for name, path in (("deny-path-outside-prefix", "/secret"),
                       ("deny-path-dot-segments", "/allowed/../secret"),
                       ("deny-path-encoded-dots", "/allowed/%2e%2e/secret"),
                       ("deny-path-encoded-slash", "/allowed/..%2fsecret"),
                       ("deny-path-semicolon-dots", "/allowed/..;/secret")):
        deny_check(name, via_tls("other.test:443", "other.test", req("GET", path, "other.test")),
                   403, "path not under an allowed prefix")

    def allowed_path():
        code, _, body = tls_request("other.test:443", "other.test",
                                    req("GET", "/allowed/a/./b", "other.test"))
        expect(code == 200 and body == b"path /allowed/a/./b\n", f"{code} {body!r}")
    check("allow-path-inside-prefix", allowed_path)
    smuggling()
    deny_check("deny-host-mismatch-connect", via_connect("api.test:443", "other.test:443"), 400,
               "the Host header disagrees with the CONNECT target")
    deny_check("deny-host-mismatch-intercepted",
               via_tls("api.test:443", "api.test", req("GET", "/echo", "other.test")), 400,
               "the Host header disagrees with api.test:443")
    sni_checks()


def smuggling():
    base = b"POST http://plain.test/echo HTTP/1.1\r\nHost: plain.test\r\n"
    for name, data, code, why in (
            ("deny-smuggle-cl-te", base + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
             b"\r\n0\r\n\r\n", 400, "Content-Length"),
            ("deny-smuggle-te-not-chunked", base + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
             501, "transfer coding not supported"),
            ("deny-smuggle-duplicate-cl", base + b"Content-Length: 1\r\nContent-Length: 2\r\n"
             b"\r\nab", 400, "Content-Length"),
            ("deny-smuggle-duplicate-host", b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test"
             b"\r\nHost: other.test\r\n\r\n", 400, "duplicate Host"),
            ("deny-smuggle-obs-fold", b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\n"
             b"X-A: 1\r\n b\r\n\r\n", 400, "obsolete line folding"),
            ("deny-host-mismatch-absolute", b"GET http://plain.test/echo HTTP/1.1\r\nHost: "
             b"other.test\r\n\r\n", 400, "the Host header disagrees with plain.test:80"),
            ("deny-userinfo", b"GET http://user:pw@plain.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n",
             400, "userinfo in the authority is not accepted"),
            ("deny-fragment", b"GET http://plain.test/a#frag HTTP/1.1\r\nHost: plain.test\r\n\r\n",
             400, "invalid character in request target"),
            ("deny-bad-percent", b"GET http://plain.test/%zz HTTP/1.1\r\nHost: plain.test\r\n\r\n",
             400, "bad percent-encoding"),
            ("deny-https-absolute-form", b"GET https://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n",
             400, "https URLs go through CONNECT"),
            ("deny-origin-form-to-proxy", b"GET /echo HTTP/1.1\r\nHost: plain.test\r\n\r\n", 400,
             "this is a forward proxy")):
        deny_check(name, via_raw(data), code, why)
    deny_check("deny-smuggle-cl-te-intercepted", via_tls(
        "api.test:443", "api.test", b"POST /echo HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4"
        b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, "Content-Length")


def sni_checks():
    def sni_mismatch():
        since = E.ctl.mark()
        s, code, head = connect("api.test:443")
        expect(code == 200, f"CONNECT: {head[:100]!r}")
        ctx = ssl.create_default_context(cafile=E.job_ca)
        try:
            t = ctx.wrap_socket(s, server_hostname="other.test")
            t.close()
            raise CheckFailed("the handshake with a mismatched SNI succeeded")
        except ssl.SSLError as e:
            expect("ACCESS_DENIED" in str(e).upper(), f"not an access_denied alert: {e}")
        denial_use(since, "server name other.test disagrees with the CONNECT target api.test:443")
    check("deny-sni-mismatch-intercepted", sni_mismatch)

    def sni_mismatch_opaque():
        since = E.ctl.mark()
        s, code, _ = connect("tunnel.test:443")
        expect(code == 200, "CONNECT refused")
        ctx = ssl.create_default_context(cafile=ENV["UP_CA"])
        try:
            ctx.wrap_socket(s, server_hostname="api.test").close()
            raise CheckFailed("the handshake with a mismatched SNI succeeded")
        except ssl.SSLError as e:
            expect("ACCESS_DENIED" in str(e).upper(), f"not an access_denied alert: {e}")
        denial_use(since, "disagrees with the CONNECT target tunnel.test:443")
    check("deny-sni-mismatch-opaque", sni_mismatch_opaque)

    def not_tls():
        since = E.ctl.mark()
        s, code, _ = connect("tunnel.test:443")
        expect(code == 200, "CONNECT refused")
        s.sendall(b"GET / HTTP/1.1\r\nHost: tunnel.test\r\n\r\n")
        code, _, body = read_response(s)
        s.close()
        expect_denied(code, body, 400, "does not start with a TLS ClientHello")
        denial_use(since, "does not start with a TLS ClientHello")
    check("deny-tunnel-not-tls", not_tls)


def limits_job(name, **kw):
    ceiling, dests = ceiling_and_dests(E.pb)
    op = open_job(E.ctl, name, ceiling, dests, limits=E.pb.EgressLimits(**kw))
    expect(op.error == "", op.error)
    return listen_job(E.ctl, name)


def get_plain(path, port, keep=None):
    data = f"GET http://plain.test{path} HTTP/1.1\r\nHost: plain.test\r\n\r\n".encode()
    if keep is None:
        return raw(data, port)
    keep.sendall(data)
    return read_response(keep)


def limits():
    def conn_limit():
        port = limits_job("job-conns/1", max_connections=1)
        since = E.ctl.mark()
        s, code, _ = connect("tunnel.test:443", port=port)  # holds the one connection
        try:
            code2, _, body = get_plain("/", port)
            expect_denied(code2, body, 429, "connection limit (1) reached for this job")
            denial_use(since, "connection limit (1) reached")
        finally:
            s.close()
        close_job(E.ctl, "job-conns/1")
    check("limit-max-connections", conn_limit)

    def rate():
        port = limits_job("job-rate/1", requests_per_second=1, burst=1)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            t0 = time.time()
            a = get_plain("/r1", port, s)
            b = get_plain("/r2", port, s)
            took = time.time() - t0
        close_job(E.ctl, "job-rate/1")
        if took >= 0.9:
            raise Skip(f"the two requests took {took:.2f}s: the bucket may have refilled")
        expect(a[0] == 200 and b[0] == 429, f"statuses {a[0]}, {b[0]}: want 200 then 429 with "
               "requests_per_second=1 burst=1")
        expect_denied(b[0], b[2], 429, "request rate limit (1 per second) reached")
    check("limit-rate", rate)

    def idle_or_total(name, want, **kw):
        port = limits_job(name, **kw)
        since = E.ctl.mark()
        s, code, _ = connect("tunnel.test:443", port=port)
        expect(code == 200, "CONNECT refused")
        t = ssl.create_default_context(cafile=ENV["UP_CA"]).wrap_socket(
            s, server_hostname="tunnel.test")
        t.settimeout(30)  # failsafe only: the proxy ends the tunnel itself
        try:
            while t.recv(4096):
                pass
        except (ssl.SSLError, OSError):
            pass
        t.close()
        u = expect_use(since, lambda x: x.method == "CONNECT" and x.destination ==
                       "tunnel.test:443", "for the tunnel")
        expect(u.allowed and want in u.reason, f"reason {u.reason!r}, want {want!r}")
        close_job(E.ctl, name)
    check("limit-idle-timeout", lambda: idle_or_total("job-idle/1", "idle timeout",
                                                      idle_timeout_ms=300))
    check("limit-total-timeout", lambda: idle_or_total("job-total/1", "total_timeout",
                                                       total_timeout_ms=700))

    def bytes_limit():
        port = limits_job("job-bytes/1", max_bytes=200000)
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET http://plain.test/big HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        expect(len(got) < 300000, f"{len(got)} bytes arrived past a 200000-byte limit")
        code, _, body = get_plain("/", port)
        expect_denied(code, body, 403, "byte limit (200000 bytes)")
        closed = close_job(E.ctl, "job-bytes/1")
        expect(closed.denied >= 1 and closed.bytes_down >= 200000,
               f"denied {closed.denied} bytes_down {closed.bytes_down}")
    check("limit-max-bytes", bytes_limit)


def expiry_and_grant():
    pb = E.pb
    ceiling, dests = ceiling_and_dests(pb)
    ph_old = ph()
    past = int(time.time() * 1000) - 1000
    creds = [cred(pb, "old", ph_old, canary("expired-"), ["api.test"], expires=past)]
    op = open_job(E.ctl, "job-exp/1", ceiling, dests, creds)
    expect(op.error == "", op.error)
    port = listen_job(E.ctl, "job-exp/1")

    def expired():
        since = E.ctl.mark()
        s, code, _ = connect("api.test:443", port=port)
        ctx = ssl.create_default_context(cafile=None)
        ctx.load_verify_locations(cadata=op.ca_cert_pem)
        t = ctx.wrap_socket(s, server_hostname="api.test")
        t.sendall(req("GET", "/need-token", headers=[f"Authorization: Bearer {ph_old}"]))
        code, _, body = read_response(t)
        t.close()
        expect_denied(code, body, 403, "credential old has expired")
        denial_use(since, "credential old has expired", False, "old")
    check("deny-expired-credential", expired)

    def grant():
        m = pb.EgressMsg()
        m.grant.job = E.job
        m.grant.grant_id = "grant-2"
        m.grant.expires_unix_ms = int(time.time() * 1000) + 3600_000
        E.ctl.send(m)
        since = E.ctl.mark()
        until(lambda: False, 0.2)  # JobGrant is processed in order before the next request
        rc, code, body, _ = curl(["-H", f"Authorization: Bearer {E.ph_tok}",
                                  "https://api.test/need-token"])
        expect(code == 200, f"status {code}")
        u = expect_use(since, lambda x: x.path == "/need-token", "after JobGrant")
        expect(u.grant_id == "grant-2", f"grant id {u.grant_id!r} after JobGrant")
    check("jobgrant-renews-grant-id", grant)
    close_job(E.ctl, "job-exp/1")


def bad_control():
    def garbage():
        since = E.ctl.mark()
        E.ctl.s.send(b"\xff\xfe not protobuf")
        E.ctl.s.send(b"\x0a" + b"\xff" * 5)
        m = pb_msg_open_bad()
        E.ctl.send(m)
        r = E.ctl.wait(lambda x: x.WhichOneof("msg") == "opened" and x.opened.job == "bad/1",
                       since)
        expect(r is not None and r.opened.error, "a bad JobOpen got no error")
        expect("placeholder" in r.opened.error, f"error {r.opened.error!r}")
        expect(E.proxy.poll() is None, "the proxy died on malformed control input")
        rc, code, body, _ = curl(["-H", f"Authorization: Bearer {E.ph_tok}",
                                  "https://api.test/need-token"])
        expect(code == 200, "the proxy stopped serving after malformed control input")
    check("control-malformed-dropped", garbage)

    def oversized():
        big = b"\x0a" + b"\x00" * ((1 << 20) + 1)
        try:
            E.ctl.s.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE (root)
            E.ctl.s.send(big)
        except OSError as e:
            raise Skip(f"the kernel refused a datagram over 1 MiB itself ({e.strerror})")
        until(lambda: False, 0.2)
        expect(E.proxy.poll() is None, "the proxy died on an oversized datagram")
        rc, code, _, _ = curl(["https://tunnel.test/x"], cafile=ENV["UP_CA"])
        expect(code == 200, "the proxy stopped serving after an oversized datagram")
    check("control-oversized-dropped", oversized)


def pb_msg_open_bad():
    m = E.pb.EgressMsg()
    m.open.job = "bad/1"
    m.open.credentials.extend([cred(E.pb, "bad", "AIRLOCK_PH_NOTHEX", canary("v-"),
                                    ["api.test"])])
    return m


def memory(ctl, p):
    needles = {}
    for tag, v in (("token", E.token), ("basic", E.basic), ("key", E.key)):
        needles.update(value_forms(tag, v))

    def before():
        hits = scan_memory(p.pid, {"token:raw": E.token.encode()})
        expect(hits, "the open job's token is not in the proxy's memory: the scan cannot vouch")
    check("memscan-control-while-open", before)
    closed = close_job(ctl, E.job)
    check("jobclosed-counters", lambda: expect(
        closed.requests > 20 and closed.connections > 20 and closed.denied > 20 and
        closed.bytes_up > 0 and closed.bytes_down > 0, str(closed).replace("\n", " ")))

    def after():
        hits = scan_memory(p.pid, needles)
        expect(not hits, "after JobClose: " + ", ".join(
            f"{k} at {len(v)} place(s)" for k, v in sorted(hits.items())))
    check("memscan-after-jobclose", after)


def main():
    sys.path.insert(0, ENV["GEN_DIR"])
    from airlock.internal import egress_pb2 as pb  # noqa: E402
    E.pb = pb
    start_upstream()
    E.dns = Dns()
    E.proxy, E.ctl = start_proxy()
    check("proxy-privileges", lambda: (until(lambda: "egress.start" in open(
        os.path.join(T_DIR, "egress.err")).read(), 60), c_process()))
    E.job = "job-1/1"
    E.ph_tok, E.ph_basic, E.ph_key = ph(), ph(), ph()
    ceiling, dests = ceiling_and_dests(pb)
    creds = [cred(pb, "tok", E.ph_tok, E.token, ["api.test"]),
             cred(pb, "basic", E.ph_basic, E.basic, ["api.test:443"], ctype=2),
             cred(pb, "key", E.ph_key, E.key, ["http://plain.test:80", "api.test"], ctype=3,
                  header="X-Api-Key", plain=True)]
    E.opened = open_job(E.ctl, E.job, ceiling, dests, creds)
    check("jobopened-ca", c_job_ca)
    if E.opened.error:
        raise SystemExit(1)
    E.job_ca = os.path.join(T_DIR, "job-ca.pem")
    with open(E.job_ca, "w") as f:
        f.write(E.opened.ca_cert_pem)
    E.port = listen_job(E.ctl, E.job)
    check("curl-injects-token", c_curl_inject)
    check("urllib-injects-token", c_urllib_inject)
    check("use-record-allowed", c_use_allowed)
    check("echo-returns-placeholder", c_echo_placeholder)
    check("echo-forms-scrubbed", c_echo_forms)
    check("basic-auth-injected", c_basic)
    check("plain-http-allowed-credential", c_plain_http)
    check("opaque-tunnel", c_tunnel)
    check("opaque-tunnel-ipv6", c_tunnel_v6)
    check("hex-literal-of-allowed-address", c_hex_literal_allowed)
    check("dns-resolution", c_dns)
    check("keep-alive-both-sides", c_keepalive)
    check("large-response-streamed", c_big)
    denials()
    c_dns_denials()
    limits()
    expiry_and_grant()
    bad_control()
    memory(E.ctl, E.proxy)

    def exits():
        E.ctl.s.shutdown(socket.SHUT_RDWR)  # wakes the reader thread; the proxy sees EOF
        E.ctl.s.close()
        rc = E.proxy.wait(timeout=60)
        expect(rc == 0, f"exit status {rc} after the control socket closed")
        err = open(os.path.join(T_DIR, "egress.err")).read()
        bad = re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:", err)
        expect(not bad, bad.group(0) if bad else "")
        for v in (E.token, E.basic, E.key, E.basic.split(":")[1]):
            expect(v not in err, "a credential value in the proxy's log")
    check("exit-on-control-close", exits)
    E.up.kill()
    return 1 if FAILED else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        upstream_main()
    else:
        sys.exit(main())
