"""Integration checks of airlock-credstore operations (grpcio, Debian's python3-grpcio):
memory hygiene (the process's readable memory scanned for canary values), non-dumpable
process, master-key rotation and backup/restore round trips with airlockctl, the edges'
AppendAudit, and the parts of issue 3 section 7 credstore_test.py does not cover
(Delete, audit paging and range errors, bad Put input, relay-issued grants for gateway
routes, grace-period destruction).

Run with /usr/bin/python3 by credstore.sh after credstore_test.py, with the same
environment (BIN, GEN_DIR, T_DIR, AIRLOCK_HOME, PIDS_FILE, MOUNTS_FILE); it reuses
credstore_test.py's servers, grants and checks. Needs root for the memory scans
(/proc/PID/mem of a non-dumpable process) and to run one server as an unprivileged uid;
those checks skip loudly otherwise. Prints PASS/FAIL/SKIP lines; exits 1 if any check
failed. No timing assertions: waits are "until X, at most N seconds".
"""

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import credstore_test as ct  # noqa: E402
from credstore_test import (P, C, SC, CheckFailed, Skip, check, expect, expect_code,  # noqa: E402
                            admin, mint, policy, put, verify, audit_after, list_all,
                            head_seq, reason_name, new_canary, gen_master, scan_files, read)

BIN = ct.BIN
T_DIR = ct.T_DIR
PKI = ct.PKI
KEYS = ct.KEYS
DEST = ct.DEST
EXEC0, EXEC1 = ct.EXEC0, ct.EXEC1
CTL = os.path.join(BIN, "airlockctl")
USE = P.AUDIT_ACTION_USE
ALLOW, DENY = P.AUDIT_DECISION_ALLOW, P.AUDIT_DECISION_DENY
MASTER_ROTATE = getattr(P, "AUDIT_ACTION_MASTER_ROTATE", 12)
BACKUP = getattr(P, "AUDIT_ACTION_BACKUP", 13)
APPEND_AUDIT = P.AUDIT_ACTION_APPEND_AUDIT
RESOLVER = "/airlock.v1.CredentialResolver/"
# as tests/lib/server.sh's SRV_SANITIZER_RE: airlockctl runs here, not under credstore.sh's scan
SANITIZER_RE = r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: .*Sanitizer"


class KeyedServer(ct.Server):
    """A Server whose config can name previous master keys (rotation step 2)."""

    def __init__(self, *a, previous=(), **kw):
        super().__init__(*a, **kw)
        self.previous = list(previous)

    def config(self):
        prev = ", ".join(f'"{p}"' for p in self.previous)
        return super().config() + f"previous_master_key_files = [ {prev} ];\n"

    def ops_port(self):
        m = re.search(r"event=service\.start grpc_port=\d+ ops_port=(\d+)", self.log())
        expect(m, f"{self.name}: no ops_port in the start line")
        return int(m.group(1))


def unary(srv, ident, method, resp_cls):
    srv.stubs(ident)  # opens (and caches) the channel for ident
    f = srv.channels[ident].unary_unary(RESOLVER + method, lambda m: m.SerializeToString(),
                                        resp_cls.FromString)
    return lambda req, timeout=ct.CALL_TIMEOUT: f(req, timeout=timeout)


def resolve(srv, name, ident="executor-executor-0", grant=None, dest=DEST):
    sg = grant if grant is not None else mint(credentials=[name])[0]
    st = srv.stubs(ident)
    return st.resolve(P.ResolveRequest(grant=sg, credential=name, destination=dest))


def ctl(*args, check_rc=None, env=None):
    e = dict(os.environ, AIRLOCK_HOME=ct.HOME)
    if env:
        e.update(env)
    r = subprocess.run([CTL] + list(args), capture_output=True, text=True, env=e, timeout=600)
    san = re.search(SANITIZER_RE, r.stderr)
    expect(not san, f"airlockctl {' '.join(args[:2])}: sanitizer report: "
           f"{r.stderr[san.start():san.start() + 200]!r}" if san else "")
    if check_rc is not None:
        expect(r.returncode == check_rc,
               f"airlockctl {' '.join(args[:2])}: exit {r.returncode}, want {check_rc}: "
               f"{(r.stderr or r.stdout).strip()[-300:]!r}")
    return r


def ctl_verify(srv):
    """airlockctl audit verify against srv; returns its stdout (exit 0 required)."""
    r = ctl("audit", "verify", "--addr", f"127.0.0.1:{srv.port}", check_rc=0)
    return r.stdout.strip()


def all_values(srv, vals, ident="executor-executor-0"):
    """Every credential in vals resolves to its value (one grant naming them all)."""
    names = sorted(vals)
    for i in range(0, len(names), 200):
        chunk = names[i:i + 200]
        sg, _ = mint(credentials=chunk)
        for n in chunk:
            r = resolve(srv, n, ident, grant=sg)
            expect(r.value == vals[n], f"{n}: resolved to another value")


def audited_puts(srv):
    return {r.credential for r in audit_after(srv, 0, action=P.AUDIT_ACTION_PUT, decision=ALLOW)}


def wait_idle(srv, what="connections"):
    """Until the server has no gRPC connection or stream open (at most 60 s)."""
    port = srv.ops_port()
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        r = subprocess.run(["curl", "-sf", "--max-time", "30", f"http://127.0.0.1:{port}/metrics"],
                           capture_output=True, text=True)
        vals = dict(ln.split()[:2] for ln in r.stdout.splitlines()
                    if ln.startswith(("airlock_grpc_connections ", "airlock_grpc_streams ")))
        last = vals
        if vals.get("airlock_grpc_connections") == "0" and vals.get("airlock_grpc_streams") == "0":
            return
        time.sleep(0.1)
    raise CheckFailed(f"{srv.name}: {what} still open 60 s after the clients left: {last}")


# ---------------------------------------------------------------------------
# process memory


ASAN_HIGH_SHADOW = (0x02008FFF7000, 0x10007FFF8000)  # x86_64 ASan HighShadow


def mappings(pid):
    """[(lo, hi, perms, name, vmflags)] from /proc/PID/smaps."""
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for ln in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", ln)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).strip(), ""]
                out.append(cur)
            elif ln.startswith("VmFlags:") and cur:
                cur[4] = ln.split(":", 1)[1].strip()
    return out


def is_asan(pid):
    return any(lo == ASAN_HIGH_SHADOW[0] and hi == ASAN_HIGH_SHADOW[1]
               for lo, hi, _, _, _ in mappings(pid))


def needle_forms(value, tag):
    """The value raw, as hex, base64 at each of the 3 alignments, and as fragments:
    overlapping 24-byte windows (12 for short values), so a copy whose start was
    overwritten by an allocator's free-list pointers is still found."""
    forms = {f"{tag}:raw": value, f"{tag}:hex": value.hex().encode()}
    for j in range(3):
        b = base64.b64encode(value[j:])[:-4]
        if len(b) >= 16:
            forms[f"{tag}:base64@{j}"] = b
    win = 24 if len(value) >= 48 else 12
    for off in range(0, len(value) - win + 1, win // 2):
        forms[f"{tag}:bytes[{off}:{off + win}]"] = value[off:off + win]
    return forms


def scan_memory(pid, needles, max_region=1 << 36):
    """Reads every readable mapping of pid through /proc/PID/mem and looks for needles.
    Returns (hits {needle: [(addr, mapping)]}, bytes_read, notes). The ASan HighShadow
    mapping (14 TiB of address space; it holds 1 byte of addressability state per 8
    application bytes, never application data) is not read; [vvar] cannot be read."""
    hits, total, notes, unreadable = {}, 0, [], []
    keep = max(len(n) for n in needles.values()) - 1
    maps = mappings(pid)
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi, perm, name, flags in maps:
            if perm[0] != "r" or name.startswith("[vvar"):
                continue
            if (lo, hi) == ASAN_HIGH_SHADOW:
                notes.append(f"ASan HighShadow {(hi - lo) >> 30} GiB not read (metadata only)")
                continue
            expect(hi - lo <= max_region,
                   f"readable mapping {lo:#x}-{hi:#x} {name!r} of {(hi - lo) >> 30} GiB: too large "
                   f"to scan; the check cannot vouch for it")
            prev, a = b"", lo
            while a < hi:
                n = min(1 << 22, hi - a)
                try:
                    mem.seek(a)
                    b = mem.read(n)
                except OSError as e:
                    # a mapping the running process unmapped or changed since
                    # the list was read (a freed buffer) held nothing to find
                    # any more; one still there that cannot be read is a hole
                    # in the scan
                    if any(m[0] <= a < m[1] and m[2][0] == "r" for m in mappings(pid)):
                        unreadable.append(f"{a:#x}+{n:#x} {name or 'anon'} {perm}: {e.strerror}")
                    else:
                        notes.append(f"{a:#x}+{n:#x} unmapped while scanned")
                    b = b""
                total += len(b)
                buf = prev + b
                for k, nd in needles.items():
                    i = buf.find(nd)
                    while i >= 0:
                        hits.setdefault(k, []).append((a - len(prev) + i, (lo, hi, perm, name, flags)))
                        i = buf.find(nd, i + 1)
                prev = b[-keep:] if len(b) >= keep else b
                a += n
    expect(not unreadable, f"{len(unreadable)} readable mapping(s) could not be read: "
           f"{unreadable[:3]}")
    # a hit in the overlap carried over from the previous chunk is seen twice
    for k in hits:
        hits[k] = sorted(set(hits[k]), key=lambda h: h[0])
    return hits, total, notes


def where(hit):
    addr, (lo, hi, perm, name, flags) = hit
    return f"{addr:#x} in {lo:#x}-{hi:#x} {perm} {name or '[anon]'} (VmFlags {flags})"


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return ln.split(":", 1)[1].strip()
    return ""


class AuditLockHold:
    """Holds the credstore's cross-process audit lock (flock on credstore.lock in its data
    dir): the service's next group commit then waits, with every value it is about to
    release decrypted and held, until the lock is released."""

    def __init__(self, data_dir):
        self.path = os.path.join(data_dir, "credstore.lock")

    def __enter__(self):
        import fcntl
        self.fd = os.open(self.path, os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def memory_suite():
    if os.geteuid() != 0:
        check("memory-scan", lambda: (_ for _ in ()).throw(
            Skip("not root: /proc/PID/mem of a non-dumpable process is readable only with "
                 "CAP_SYS_PTRACE; rerun as root")))
        return
    mk = gen_master(os.path.join(T_DIR, "master-mem.key"))
    srv = KeyedServer("mem", os.path.join(T_DIR, "data-mem"), mk)
    srv.start()
    pid = srv.proc.pid
    asan = is_asan(pid)
    tag = secrets.token_hex(6)
    name, bname = f"ci/mem-{tag}", f"ci/membin-{tag}"
    v1 = ("MEMCANARY-" + secrets.token_hex(24)).encode()
    v2 = ("MEMCANARY-" + secrets.token_hex(24)).encode()
    vbin = b"\x00\xff" + os.urandom(46)  # binary: raw bytes are what a copy would hold
    ct.CANARIES.extend([v1, v2])
    state = {}

    def held():
        put(srv, name, v1)
        put(srv, bname, vbin)
        srv.close_channels()
        wait_idle(srv)
        base = int(proc_status(pid, "VmLck").split()[0])
        needles = needle_forms(v1, "v1")
        out = {}
        with AuditLockHold(srv.data_dir):
            t = threading.Thread(target=lambda: out.setdefault("r", resolve(srv, name)))
            t.start()
            deadline = time.monotonic() + 60
            while True:
                hits, _, _ = scan_memory(pid, {"v1": v1})
                if hits or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            locked = int(proc_status(pid, "VmLck").split()[0])
            all_hits, total, _ = scan_memory(pid, needles)
        t.join(60)
        expect(not t.is_alive(), "the held Resolve did not finish after the lock was released")
        expect(out.get("r") is not None and out["r"].value == v1,
               "the held Resolve did not return the value")
        expect(hits, f"the value was not found in the server's memory while a Resolve held it "
               f"(scanned {total >> 20} MiB): the scanner cannot be trusted")
        raw = all_hits.get("v1:raw", [])
        expect(len(raw) == 1, f"{len(raw)} full copies while held, want exactly 1 (the locked "
               f"buffer): {[where(h) for h in raw[:4]]}")
        flags = raw[0][1][4].split()
        state.update(asan=asan, flags=flags, base=base, locked=locked, where=where(raw[0]))
        expect("dd" in flags, f"held value not in MADV_DONTDUMP memory: {where(raw[0])}")
        print(f"    value held at {where(raw[0])}; VmLck {base} kB idle, {locked} kB while held",
              flush=True)
    check("memory-value-held-found", held)

    def held_locked():
        if "flags" not in state:
            raise Skip("no held value was found to look at")
        if state["asan"]:
            raise Skip("ASan build: its runtime intercepts mlock() as a no-op, so nothing is "
                       "ever locked; the plain build runs this check")
        # the mapping that holds the value is locked (VmFlags "lo"); VmLck is only printed,
        # since a pool of locked buffers may already be counted while idle
        expect("lo" in state["flags"], f"held value not in mlock'ed memory: {state['where']}")
        expect(state["locked"] > 0, "VmLck 0 kB while a value is held")
    check("memory-value-held-locked", held_locked)

    def burst():
        c = admin(srv).rotate(P.RotateCredentialRequest(name=name, value=v2))
        expect(c.current_version == 2, f"version {c.current_version}")
        errors, counts, lock = [], {"ok": 0, "denied": 0}, threading.Lock()
        grants = [mint(credentials=[name, bname])[0] for _ in range(8)]

        def worker(k):
            # its own channel: each worker is one more TLS connection
            ch = grpc.secure_channel(f"127.0.0.1:{srv.port}", grpc.ssl_channel_credentials(
                root_certificates=read(f"{PKI}/ca.crt"),
                private_key=read(f"{PKI}/executor-executor-0.key"),
                certificate_chain=read(f"{PKI}/executor-executor-0.crt")),
                options=[("grpc.use_local_subchannel_pool", 1)])
            st = ct.Stubs(ch)
            futs = []
            try:
                for i in range(25):
                    n, want = (bname, vbin) if i % 3 == 2 else (name, v2)
                    dest = DEST if i % 10 != 9 else "evil.example.net:443"
                    req = P.ResolveRequest(grant=grants[k], credential=n, destination=dest)
                    if i % 5 == 0:  # some calls in flight at once on one connection
                        futs.append((st_future(ch, req), want, dest))
                        continue
                    try:
                        r = st.resolve(req)
                        ok = r.value == want and dest == DEST
                    except grpc.RpcError as e:
                        ok = dest != DEST and e.code() == SC.PERMISSION_DENIED
                    with lock:
                        counts["ok" if dest == DEST else "denied"] += 1
                        if not ok:
                            errors.append(f"worker {k} call {i}")
                for f, want, dest in futs:
                    r = f.result(timeout=ct.CALL_TIMEOUT)
                    with lock:
                        counts["ok"] += 1
                        if r.value != want:
                            errors.append(f"worker {k} async call")
            finally:
                ch.close()
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        expect(not errors, f"{len(errors)} resolves went wrong: {errors[:3]}")
        expect(counts["ok"] + counts["denied"] == 200, f"counts {counts}")
        print(f"    200 Resolve calls on 8 connections: {counts['ok']} released, "
              f"{counts['denied']} denied", flush=True)
        srv.close_channels()
        wait_idle(srv)
    check("memory-resolve-burst", burst)

    def scan_after():
        needles = {}
        for val, t in ((v1, "v1"), (v2, "v2"), (vbin, "binary")):
            needles.update(needle_forms(val, t))
        needles["control:credential-name"] = name.encode()
        hits, total, notes = scan_memory(pid, needles)
        ctrl = hits.pop("control:credential-name", [])
        expect(ctrl, f"positive control failed: the credential name {name!r} (not secret, in "
               f"SQLite's page cache) was not found in {total >> 20} MiB read")
        found = {k: [where(h) for h in v[:3]] for k, v in hits.items()}
        expect(not found, f"value copies left in memory after the burst: {found}")
        print(f"    read {total >> 20} MiB of {len(mappings(pid))} mappings, {len(needles) - 1} "
              f"needles, none found; control found {len(ctrl)}x"
              + (f"; {'; '.join(notes)}" if notes else ""), flush=True)
    check("memory-scan-after-burst", scan_after)

    def limits():
        with open(f"/proc/{pid}/limits") as f:
            core = [ln for ln in f if ln.startswith("Max core file size")]
        expect(core and core[0].split()[4:6] == ["0", "0"], f"RLIMIT_CORE: {core}")
        expect(proc_status(pid, "CoreDumping") == "0", "CoreDumping")
    check("process-no-core-dumps", limits)
    srv.stop()


def st_future(ch, req):
    f = ch.unary_unary(RESOLVER + "Resolve", lambda m: m.SerializeToString(),
                       P.ResolveResponse.FromString)
    return f.future(req, timeout=ct.CALL_TIMEOUT)


NOBODY = 65534
CHILD = r"""
import json, os, re, subprocess, sys, time
binary, conf, log = sys.argv[1:4]
res = {"uid": os.getuid()}
# control: a dumpable process of ours can be read
sl = subprocess.Popen(["sleep", "300"])
try:
    with open(f"/proc/{sl.pid}/maps") as f:
        lo = int(f.readline().split("-")[0], 16)
    with open(f"/proc/{sl.pid}/mem", "rb", buffering=0) as m:
        m.seek(lo)
        res["control_read"] = len(m.read(64))
except OSError as e:
    res["control_read"] = "error: " + e.strerror
finally:
    sl.kill()
    sl.wait()
with open(log, "wb") as err:
    p = subprocess.Popen([binary, "--config", conf], stdin=subprocess.DEVNULL, stdout=err, stderr=err)
res["pid"] = p.pid
deadline = time.monotonic() + 60
while time.monotonic() < deadline and p.poll() is None:
    if b"event=service.start" in open(log, "rb").read():
        break
    time.sleep(0.05)
res["started"] = p.poll() is None and b"event=service.start" in open(log, "rb").read()
if res["started"]:
    with open(f"/proc/{p.pid}/status") as f:
        res["status_uid"] = [l.split()[1] for l in f if l.startswith("Uid:")][0]
    res["mem_owner"] = os.stat(f"/proc/{p.pid}/mem").st_uid
    try:
        with open(f"/proc/{p.pid}/mem", "rb", buffering=0) as m:
            res["mem_open"] = "opened"
    except OSError as e:
        res["mem_open"] = e.strerror
    p.send_signal(15)
try:
    res["exit"] = p.wait(60)
except subprocess.TimeoutExpired:
    p.kill()
    res["exit"] = p.wait()
print(json.dumps(res))
"""


def nondumpable_suite():
    """A same-uid process (and the server's own parent) cannot open /proc/PID/mem: the server
    is not dumpable. Needs an unprivileged uid, so the server runs as nobody."""
    def run():
        if os.geteuid() != 0:
            raise Skip("not root: cannot run the server as an unprivileged uid (nobody)")
        d = os.path.join(T_DIR, "nodump")
        os.mkdir(d)
        os.chmod(T_DIR, 0o711)  # traversal only; every file inside keeps its own mode
        for f in ("ca.crt", "credstore-credstore-0.crt", "credstore-credstore-0.key"):
            shutil.copy(os.path.join(PKI, f), os.path.join(d, f))
        shutil.copy(os.path.join(KEYS, "intake-0.pub"), os.path.join(d, "intake-0.pub"))
        mk = gen_master(os.path.join(d, "master.key"))
        os.mkdir(os.path.join(d, "data"))
        s = ct.Server("nodump", os.path.join(d, "data"), mk)
        conf = s.config().replace(PKI, d).replace(KEYS, d)
        with open(os.path.join(d, "cs.conf"), "w") as f:
            f.write(conf)
        for root, dirs, files in os.walk(d):
            for x in dirs + files + ["."]:
                os.chown(os.path.join(root, x), NOBODY, NOBODY)
        log = os.path.join(T_DIR, "nodump.err")
        open(log, "w").close()
        os.chown(log, NOBODY, NOBODY)
        r = subprocess.run([sys.executable, "-c", CHILD, os.path.join(BIN, "airlock-credstore"),
                            os.path.join(d, "cs.conf"), log], capture_output=True, text=True,
                           user=NOBODY, group=NOBODY, extra_groups=[], cwd=d, timeout=300)
        expect(r.returncode == 0 and r.stdout.strip(),
               f"child as uid {NOBODY}: status {r.returncode}: {r.stderr.strip()[-300:]!r}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if not res.get("started"):
            raise CheckFailed(f"the server did not start as uid {NOBODY}: "
                              + " | ".join(read(log).decode(errors="replace").splitlines()[-3:]))
        expect(res["control_read"] == 64,
               f"control: uid {NOBODY} cannot read its own dumpable child's memory "
               f"({res['control_read']}); the check proves nothing here")
        expect(res["status_uid"] == str(NOBODY), f"server uid {res['status_uid']}")
        expect(res["mem_open"] != "opened",
               f"uid {NOBODY} opened /proc/PID/mem of its own child server: it is dumpable")
        expect(res["mem_owner"] == 0, f"/proc/PID/mem owned by uid {res['mem_owner']}, want 0 "
               f"(the kernel gives a non-dumpable process's /proc files to root)")
        expect(res["exit"] == 0, f"server exit status {res['exit']} after SIGTERM")
        print(f"    as uid {NOBODY}: own sleep child readable; own credstore child: "
              f"/proc/PID/mem owned by uid 0, open: {res['mem_open']}", flush=True)
    check("process-not-dumpable", run)


# ---------------------------------------------------------------------------
# master-key rotation


def rotation_suite():
    d = os.path.join(T_DIR, "data-rot")
    ka = os.path.join(T_DIR, "master-rot-A.key")
    kb = os.path.join(T_DIR, "master-rot-B.key")
    vals = {}
    srv = KeyedServer("rot", d, gen_master(ka))
    st = {}

    def step1():
        ctl("keys", "gen-master", kb, check_rc=0)
        expect(stat.S_IMODE(os.stat(kb).st_mode) == 0o600, f"mode {oct(os.stat(kb).st_mode)}")
        srv.start()
        for i in range(120):
            n = f"ci/rot-{i:03d}"
            vals[n] = new_canary()
            put(srv, n, vals[n])
        # versions in GRACE are re-wrapped too
        for i in range(0, 120, 10):
            n = f"ci/rot-{i:03d}"
            vals[n] = new_canary()
            admin(srv).rotate(P.RotateCredentialRequest(name=n, value=vals[n]))
        srv.stop()
        srv.master_key, srv.previous = kb, [ka]
        srv.start()
        all_values(srv, vals)
        n = "ci/rot-under-b"
        vals[n] = new_canary()
        put(srv, n, vals[n])
        all_values(srv, vals)
    check("master-rotate-new-key-with-previous", step1)

    def step2():
        if "ci/rot-under-b" not in vals or srv.proc.poll() is not None:
            raise Skip("the service is not running with both keys")
        names = sorted(vals)
        sg, _ = mint(credentials=names)
        stop, lock = threading.Event(), threading.Lock()
        log = []  # (t, ok, detail)
        started = threading.Event()

        def reader():
            stub = srv.stubs("executor-executor-0")
            i = 0
            while not stop.is_set():
                n = names[i % len(names)]
                i += 1
                try:
                    r = stub.resolve(P.ResolveRequest(grant=sg, credential=n, destination=DEST))
                    ok, det = r.value == vals[n], n
                except grpc.RpcError as e:
                    ok, det = False, f"{n}: {e.code()} {reason_name(e)}"
                with lock:
                    log.append((time.monotonic(), ok, det))
                if len(log) >= 20:
                    started.set()
        t = threading.Thread(target=reader)
        t.start()
        started.wait(120)
        t0 = time.monotonic()
        r = ctl("keys", "rotate-master", "--data-dir", d, "--old", ka, "--new", kb,
                "--operator", "integration-test")
        t1 = time.monotonic()
        # keep reading after the switch, then stop
        with lock:
            n_before = len(log)
        while True:
            with lock:
                if len(log) >= n_before + 20 or not t.is_alive():
                    break
            time.sleep(0.01)
        stop.set()
        t.join(60)
        expect(r.returncode == 0, f"rotate-master exit {r.returncode}: "
               f"{(r.stderr or r.stdout).strip()[-400:]!r}")
        bad = [x for x in log if not x[1]]
        during = sum(1 for x in log if t0 <= x[0] <= t1)
        expect(not bad, f"{len(bad)} of {len(log)} resolves failed around the rotation, first: "
               f"{[x[2] for x in bad[:1]]}")
        st["out"] = r.stdout.strip()
        print(f"    rotate-master: {r.stdout.strip().splitlines()[0]}; {len(log)} resolves by "
              f"a reader, {during} while rotate-master ran, 0 failed", flush=True)
        m = re.search(r"rewrapped (\d+) version", r.stdout)
        expect(m and int(m.group(1)) >= 132, f"rewrapped: {r.stdout.strip()!r} (want >= 132: "
               f"121 current versions + 12 in grace, less the one written under B)")
        all_values(srv, vals)
    check("master-rotate-online-no-failed-resolve", step2)

    def step3():
        if "out" not in st:
            raise Skip("rotate-master did not complete")
        srv.stop()
        srv.previous = []
        srv.start()
        all_values(srv, vals)
        v = verify(srv)
        expect(v.intact, f"chain after rotation: {v.problem} at {v.first_bad_seq}")
        out = ctl_verify(srv)
        recs = audit_after(srv, 0, action=MASTER_ROTATE)
        expect(len(recs) == 1, f"{len(recs)} MASTER_ROTATE records")
        rec = recs[0]
        ida, idb = key_id_of(ka), key_id_of(kb)
        expect(rec.decision == ALLOW and rec.caller == "integration-test",
               f"record decision {rec.decision} caller {rec.caller!r}")
        expect(ida in rec.reason and idb in rec.reason,
               f"reason {rec.reason!r} does not name both key ids {ida} {idb}")
        scan_files(d, list(vals.values()))
        print(f"    B only: {len(vals)} values resolve; audit verify: {out.splitlines()[0][:100]}; "
              f"MASTER_ROTATE seq {rec.seq}: {rec.reason!r}", flush=True)
    check("master-rotate-new-key-only", step3)

    def step4():
        if "out" not in st:
            raise Skip("rotate-master did not complete")
        srv.stop()
        old = KeyedServer("rot-old-key", d, ka)
        p = old.launch()
        try:
            rc = p.wait(ct.START_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise CheckFailed("still running with the old master key alone")
        log = old.log()
        expect(rc != 0, "exit status 0")
        expect("service.start" not in log and "grpc.listen" not in log, "it served")
        clear = [ln for ln in log.splitlines() if re.search(r"master key does not match", ln, re.I)]
        expect(clear, f"no clear error: {log.strip()[-300:]!r}")
        print(f"    old key alone: status {rc}: {clear[0][:200]}", flush=True)
        # rerunning the finished rotation changes nothing and breaks nothing
        r = ctl("keys", "rotate-master", "--data-dir", d, "--old", ka, "--new", kb)
        print(f"    rotate-master rerun: exit {r.returncode}: "
              f"{(r.stdout + r.stderr).strip().splitlines()[-1][:160]}", flush=True)
        srv.start()
        all_values(srv, vals)
        expect(verify(srv).intact, "chain after the rerun")
        n_rot = len(audit_after(srv, 0, action=MASTER_ROTATE))
        print(f"    MASTER_ROTATE records after the rerun: {n_rot}", flush=True)
        srv.stop()
    check("master-rotate-old-key-refused", step4)


def key_id_of(path):
    """The master key id the services log (HMAC of the key over its label, 16 hex)."""
    import hmac
    key = bytes.fromhex(read(path).decode().strip())
    return hmac.new(key, b"airlock/v1/key-id", hashlib.sha256).hexdigest()[:16]


# ---------------------------------------------------------------------------
# backup and restore


def backup_suite():
    d = os.path.join(T_DIR, "data-bk")
    k = gen_master(os.path.join(T_DIR, "master-bk.key"))
    srv = KeyedServer("bk", d, k)
    dest = os.path.join(T_DIR, "backup-1.db")
    vals, st = {}, {}

    def take():
        srv.start()
        for i in range(40):
            n = f"ci/bk-{i:03d}"
            vals[n] = new_canary()
            put(srv, n, vals[n])
        acked, lock, stop = {}, threading.Lock(), threading.Event()

        def writer():
            stub = admin(srv)
            i = 0
            while not stop.is_set():
                n, v = f"ci/bk-live-{i:04d}", new_canary()
                i += 1
                try:
                    stub.put(P.PutCredentialRequest(name=n, type=P.CREDENTIAL_TYPE_BEARER_TOKEN,
                                                    policy=policy(), value=v))
                except grpc.RpcError as e:
                    with lock:
                        acked["error"] = f"{e.code()} {reason_name(e)}"
                    return
                with lock:
                    acked[n] = (v, time.monotonic())
        t = threading.Thread(target=writer)
        t.start()
        while True:  # the writer is running before the backup starts
            with lock:
                if len(acked) >= 5 or "error" in acked or not t.is_alive():
                    break
            time.sleep(0.01)
        before_seq = head_seq(srv)
        t0 = time.monotonic()
        r = ctl("backup", "--data-dir", d, "--master", k, dest)
        t1 = time.monotonic()
        with lock:
            n_at_end = len(acked)
        while True:  # and keeps going after it
            with lock:
                if len(acked) >= n_at_end + 5 or "error" in acked or not t.is_alive():
                    break
            time.sleep(0.01)
        stop.set()
        t.join(60)
        expect("error" not in acked, f"a Put failed during the backup: {acked.get('error')}")
        expect(r.returncode == 0, f"backup exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]!r}")
        expect(os.path.isfile(dest) and os.path.isfile(dest + ".audit.head"),
               "backup or its .audit.head missing")
        for f in (dest, dest + ".audit.head"):
            expect(stat.S_IMODE(os.stat(f).st_mode) == 0o600, f"{f} mode {oct(os.stat(f).st_mode)}")
        st["before"] = {n: v for n, (v, ts) in acked.items() if ts < t0}
        st["during"] = {n: v for n, (v, ts) in acked.items() if t0 <= ts <= t1}
        st["all_live"] = {n: v for n, (v, ts) in acked.items()}
        recs = audit_after(srv, before_seq, action=BACKUP)
        expect(len(recs) == 1, f"{len(recs)} BACKUP records after the backup")
        expect(recs[0].decision == ALLOW and os.path.realpath(dest) in recs[0].reason,
               f"BACKUP record: decision {recs[0].decision} reason {recs[0].reason!r}")
        scan_files_path(dest, list(vals.values()) + [v for v, _ in acked.values()])
        st["sha"] = hashlib.sha256(read(dest)).hexdigest()
        st["before_seq"], st["backup_seq"] = before_seq, recs[0].seq
        st["chain"] = [(x.seq, x.hash) for x in audit_after(srv, 0)]
        print(f"    backup while {len(acked)} Puts ran ({len(st['before'])} acknowledged before "
              f"it started, {len(st['during'])} during); BACKUP record seq {recs[0].seq}", flush=True)
    check("backup-online-during-puts", take)

    def refuse_existing():
        if "sha" not in st:
            raise Skip("no backup was taken")
        r = ctl("backup", "--data-dir", d, "--master", k, dest)
        expect(r.returncode != 0, "a second backup over an existing destination exited 0")
        expect("exist" in r.stderr, f"no clear error: {r.stderr.strip()!r}")
        expect(hashlib.sha256(read(dest)).hexdigest() == st["sha"], "the existing backup changed")
        other = gen_master(os.path.join(T_DIR, "master-bk-other.key"))
        dest2 = os.path.join(T_DIR, "backup-wrong-key.db")
        r2 = ctl("backup", "--data-dir", d, "--master", other, dest2)
        expect(r2.returncode != 0 and not os.path.exists(dest2),
               f"backup with a wrong master key: exit {r2.returncode}, dest exists "
               f"{os.path.exists(dest2)}")
        print(f"    existing destination: {r.stderr.strip()[:120]}; wrong key: "
              f"{r2.stderr.strip().splitlines()[-1][:120]}", flush=True)
    check("backup-destination-exists-refused", refuse_existing)

    def restore_into(data_dir):
        """The procedure `airlockctl backup --help` documents (service stopped)."""
        os.makedirs(data_dir, exist_ok=True)
        shutil.copy(dest, os.path.join(data_dir, "credstore.db"))
        shutil.copy(dest + ".audit.head", os.path.join(data_dir, "audit.head"))
        for f in ("credstore.db-wal", "credstore.db-shm"):
            try:
                os.unlink(os.path.join(data_dir, f))
            except FileNotFoundError:
                pass

    def check_restored(s):
        names = set(list_all(s))
        want = dict(vals)
        want.update(st["before"])
        missing = sorted(set(want) - names)
        expect(not missing, f"{len(missing)} credentials acknowledged before the backup are "
               f"missing, e.g. {missing[:3]}")
        extra = names - set(want) - set(st["all_live"])
        expect(not extra, f"unknown credentials in the restore: {sorted(extra)[:3]}")
        # a consistent snapshot: whatever it holds resolves and has its PUT record
        have = {n: (want.get(n) or st["all_live"][n]) for n in names}
        all_values(s, have)
        unaudited = names - audited_puts(s)
        expect(not unaudited, f"restored credentials without a PUT record: {sorted(unaudited)[:3]}")
        v = verify(s)
        expect(v.intact, f"restored chain: {v.problem} at {v.first_bad_seq}")
        ctl_verify(s)
        # the restored chain is the original one up to the snapshot: every record committed
        # before the backup started, identical, and not the BACKUP record itself
        mine = [(x.seq, x.hash) for x in audit_after(s, 0)]
        same = 0
        while same < min(len(mine), len(st["chain"])) and mine[same] == st["chain"][same]:
            same += 1
        expect(st["before_seq"] <= same < st["backup_seq"],
               f"restored chain equals the original up to seq {same}; want at least "
               f"{st['before_seq']} (head when the backup started) and below the BACKUP "
               f"record {st['backup_seq']}")
        return names, v

    def restore_fresh():
        if "sha" not in st:
            raise Skip("no backup was taken")
        f = os.path.join(T_DIR, "data-bk-restored")
        restore_into(f)
        s = KeyedServer("bk-restored", f, k)
        s.start()
        names, v = check_restored(s)
        print(f"    fresh dir: {len(names)} credentials, all resolve; chain intact, head "
              f"{v.head_seq}", flush=True)
        s.stop()
    check("backup-restore-fresh-dir", restore_fresh)

    def restore_over():
        if "sha" not in st or srv.proc.poll() is not None:
            raise Skip("no backup was taken")
        gone = "ci/bk-007"
        admin(srv).delete(P.DeleteCredentialRequest(name=gone))
        expect_code(resolve, SC.NOT_FOUND, srv, gone)
        srv.stop()
        restore_into(d)
        srv.start()
        names, v = check_restored(s=srv)
        expect(gone in names, f"{gone} is not back")
        r = resolve(srv, gone)
        expect(r.value == vals[gone], "the restored credential resolves to another value")
        print(f"    original dir after deleting {gone}: it is back and resolves; chain intact, "
              f"head {v.head_seq}", flush=True)
        srv.stop()
    check("backup-restore-over-original", restore_over)


def scan_files_path(path, canaries):
    b = read(path)
    for c in canaries:
        for form in (c, base64.b64encode(c), c.hex().encode()):
            expect(form not in b, f"canary {c[:12]!r}... found in {os.path.basename(path)}")


# ---------------------------------------------------------------------------
# AppendAudit


def use_record(gid, cred, **kw):
    r = dict(grant_id=gid, credential=cred, version=1, destination=DEST, method="GET",
             path="/v1/things", status=200, request_bytes=10, response_bytes=20,
             decision=ALLOW, time_ms=int(time.time() * 1000), request_id="job/j1/1")
    r.update(kw)
    return P.EdgeUseRecord(**r)


def append_suite():
    mk = gen_master(os.path.join(T_DIR, "master-app.key"))
    srv = KeyedServer("app", os.path.join(T_DIR, "data-app"), mk)
    srv.start()
    val = new_canary()
    put(srv, "ci/app", val)
    put(srv, "ci/app-other", new_canary())
    app0 = unary(srv, "executor-executor-0", "AppendAudit", P.AppendAuditResponse)
    sg, gid = mint(credentials=["ci/app"])
    st = {}

    def nothing_appended(before, what):
        after = head_seq(srv)
        recs = [r for r in audit_after(srv, before) if r.action == USE]
        expect(not recs, f"{what}: {len(recs)} USE records appended")
        return after

    def accepted():
        before = head_seq(srv)
        bid = secrets.token_hex(16)
        recs = [use_record(gid, "ci/app", path=f"/v1/things/{i}", tool="", status=200 + i)
                for i in range(3)]
        r = app0(P.AppendAuditRequest(batch_id=bid, records=recs, grants=[sg]))
        expect(r.accepted == 3 and not r.duplicate and r.last_seq == r.first_seq + 2
               and r.first_seq > before, f"response {r}")
        got = audit_after(srv, before, grant_id=gid)
        use = [x for x in got if x.action == USE]
        expect([x.seq for x in use] == list(range(r.first_seq, r.last_seq + 1)),
               f"records {[x.seq for x in use]} vs {r.first_seq}..{r.last_seq}")
        for i, x in enumerate(use):
            expect(x.caller == EXEC0 and x.issuer == ct.INTAKE and x.principal == "acme/alice"
                   and x.subject == "job/j1/attempt/1" and x.scope == "ci-linux"
                   and x.batch_id == bid and x.credential == "ci/app" and x.decision == ALLOW
                   and x.path == f"/v1/things/{i}" and x.status == 200 + i and x.method == "GET",
                   f"record {x}")
        q = admin(srv).query(P.QueryAuditRequest(action=USE, caller=EXEC0, credential="ci/app"))
        expect({x.seq for x in q.records} >= {x.seq for x in use}, "QueryAudit by action/caller")
        v = verify(srv)
        expect(v.intact, f"chain: {v.problem}")
        st.update(bid=bid, resp=r)
    check("append-audit-accepted", accepted)

    def duplicate():
        if "bid" not in st:
            raise Skip("no batch was accepted")
        before = head_seq(srv)
        recs = [use_record(gid, "ci/app", path=f"/v1/things/{i}") for i in range(3)]
        r = app0(P.AppendAuditRequest(batch_id=st["bid"], records=recs, grants=[sg]))
        expect(r.duplicate and r.accepted == 3 and r.first_seq == st["resp"].first_seq
               and r.last_seq == st["resp"].last_seq, f"retry answered {r}")
        nothing_appended(before, "retried batch")
        # the same batch id from another edge is its own batch
        sg1, gid1 = mint(credentials=["ci/app"], holder=EXEC1)
        app1 = unary(srv, "executor-executor-1", "AppendAudit", P.AppendAuditResponse)
        r1 = app1(P.AppendAuditRequest(batch_id=st["bid"], records=[use_record(gid1, "ci/app")],
                                       grants=[sg1]))
        expect(not r1.duplicate and r1.accepted == 1, f"other caller, same id: {r1}")
        x = audit_after(srv, r1.first_seq - 1, grant_id=gid1)
        expect(x and x[0].caller == EXEC1, "caller of the other edge's record")
    check("append-audit-retry-not-duplicated", duplicate)

    def forge():
        before = head_seq(srv)
        # a grant naming another holder: the edge cannot file records as someone else
        sg1, gid1 = mint(credentials=["ci/app"], holder=EXEC1)
        e = expect_code(app0, SC.PERMISSION_DENIED, P.AppendAuditRequest(
            batch_id=secrets.token_hex(16), records=[use_record(gid1, "ci/app")], grants=[sg1]))
        nothing_appended(before, "foreign grant")
        # AuditRecord's caller (3), seq (1) and hash (13) smuggled as unknown fields
        rec = use_record(gid, "ci/app")
        raw = rec.SerializeToString() + field_bytes(30, b"spiffe://airlock/admin/admin") \
            + field_bytes(31, b"\x01" * 32)
        rec2 = P.EdgeUseRecord.FromString(raw)
        bid = secrets.token_hex(16)
        r = app0(P.AppendAuditRequest(batch_id=bid, records=[rec2], grants=[sg]))
        x = audit_after(srv, r.first_seq - 1, grant_id=gid)
        expect(x and x[0].seq == r.first_seq and x[0].caller == EXEC0
               and x[0].prev_hash != b"\x01" * 32, f"record {x[0] if x else None}")
        expect(verify(srv).intact, "chain after the smuggled fields")
        print(f"    foreign grant: {e.code()} {reason_name(e)}; unknown fields ignored", flush=True)
    check("append-audit-caller-not-forgeable", forge)

    for ident in ("admin-admin", "client-client"):
        def refused(ident=ident):
            before = head_seq(srv)
            f = unary(srv, ident, "AppendAudit", P.AppendAuditResponse)
            e = expect_code(f, SC.PERMISSION_DENIED, P.AppendAuditRequest(
                batch_id=secrets.token_hex(16), records=[use_record(gid, "ci/app")], grants=[sg]))
            nothing_appended(before, ident)
            expect(reason_name(e) == "ERROR_REASON_IDENTITY_NOT_ALLOWED", reason_name(e))
        check(f"append-audit-refused-{ident}", refused)

    def bad(tag, req_fn, code=SC.INVALID_ARGUMENT, words=()):
        def run():
            before = head_seq(srv)
            e = expect_code(app0, code, req_fn())
            nothing_appended(before, tag)
            msg = (e.details() or "")
            for w in words:
                expect(w in msg, f"message {msg!r} does not name {w!r}")
            expect(val not in msg.encode(), "value in the error")
            print(f"    {tag}: {e.code()} {reason_name(e)}: {msg[:100]!r}", flush=True)
        check(f"append-audit-bad-{tag}", run)

    bid = lambda: secrets.token_hex(16)  # noqa: E731
    good = lambda **kw: use_record(gid, "ci/app", **kw)  # noqa: E731
    bad("oversized-batch", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good() for _ in range(1001)], grants=[sg]), words=("1000",))
    bad("empty-batch", lambda: P.AppendAuditRequest(batch_id=bid(), records=[], grants=[sg]))
    bad("batch-id-not-hex", lambda: P.AppendAuditRequest(
        batch_id="z" * 32, records=[good()], grants=[sg]), words=("batch_id",))
    bad("batch-id-short", lambda: P.AppendAuditRequest(
        batch_id="ab" * 8, records=[good()], grants=[sg]), words=("batch_id",))
    bad("unknown-grant", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good(), use_record("f" * 32, "ci/app")], grants=[sg]),
        words=("grant",))
    bad("credential-not-in-grant", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good(), use_record(gid, "ci/app-other")], grants=[sg]),
        words=("credential",))
    bad("path-too-long", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good(), good(path="/" + "a" * 1024)], grants=[sg]),
        words=("path",))
    bad("bad-decision", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good(decision=7)], grants=[sg]), words=("decision",))
    bad("tampered-grant", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good()],
        grants=[ct.G.SignedGrant.FromString(tamper_sig(sg))]), code=SC.PERMISSION_DENIED)
    bad("value-in-record", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good(), good(path="/x/" + val.decode())], grants=[sg]),
        words=("value",))
    bad("value-base64-in-record", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good(reason="sent " + base64.b64encode(val).decode(),
                                      decision=DENY, version=0)], grants=[sg]),
        words=("value",))
    bad("value-hex-in-record", lambda: P.AppendAuditRequest(
        batch_id=bid(), records=[good(request_id=val.hex())], grants=[sg]), words=("value",))

    def no_credential():
        # an egress proxy job's request or tunnel that used no value: recorded
        # under a grant naming no credential (a PROXY job without bindings)
        # and under one naming others
        sg0, gid0 = mint(credentials=[], destinations=[])
        before = head_seq(srv)
        recs = [use_record(gid0, "", version=0, destination="upstream.test:8443", method="CONNECT",
                           path="", status=0, decision=DENY, reason="destination not allowed"),
                use_record(gid, "", version=0, method="GET", path="/v1/open")]
        r = app0(P.AppendAuditRequest(batch_id=secrets.token_hex(16), records=recs,
                                      grants=[sg0, sg]))
        expect(r.accepted == 2, f"{r}")
        got = [x for x in audit_after(srv, before) if x.action == USE]
        expect(len(got) == 2 and got[0].grant_id == gid0 and got[0].credential == ""
               and got[0].decision == DENY and got[0].reason == "destination not allowed"
               and got[1].credential == "" and got[1].path == "/v1/open",
               f"records {got}")
        # ... but a record naming a credential such a grant does not cover is refused
        expect_code(app0, SC.INVALID_ARGUMENT, P.AppendAuditRequest(
            batch_id=secrets.token_hex(16), records=[use_record(gid0, "ci/app")], grants=[sg0]))
        # ... as is a version without a credential
        expect_code(app0, SC.INVALID_ARGUMENT, P.AppendAuditRequest(
            batch_id=secrets.token_hex(16), records=[use_record(gid0, "", version=2)],
            grants=[sg0]))
        # ... and a credential-less record holding the value of one its grant names
        e = expect_code(app0, SC.INVALID_ARGUMENT, P.AppendAuditRequest(
            batch_id=secrets.token_hex(16),
            records=[use_record(gid, "", version=0, path="/x/" + val.decode())], grants=[sg]))
        expect("value" in (e.details() or "") and val not in (e.details() or "").encode(),
               f"message {e.details()!r}")
        expect(verify(srv).intact, "chain")
    check("append-audit-without-credential", no_credential)

    def refusals_audited():
        recs = audit_after(srv, 0, action=APPEND_AUDIT)
        denied = [r for r in recs if r.decision == DENY]
        expect(len(denied) >= 15, f"{len(denied)} APPEND_AUDIT DENY records for the refused "
               f"batches above (want one per refusal)")
        expect(all(r.reason and not r.batch_id for r in denied),
               "a refusal record without a reason, or with a batch_id (it would make a later "
               "good delivery of that batch look like a duplicate)")
        expect({r.caller for r in denied} >= {EXEC0, "spiffe://airlock/admin/admin",
                                              "spiffe://airlock/client/client"},
               f"refusal callers {set(r.caller for r in denied)}")
        blob = b"".join(r.SerializeToString() for r in recs)
        expect(val not in blob and base64.b64encode(val) not in blob, "value in a refusal record")
        v = verify(srv)
        expect(v.intact, f"chain: {v.problem}")
    check("append-audit-refusals-audited", refusals_audited)

    def retry_after_refusal():
        # a refused batch id can still be delivered once the batch is right
        b = bid()
        expect_code(app0, SC.INVALID_ARGUMENT, P.AppendAuditRequest(
            batch_id=b, records=[good(), use_record("f" * 32, "ci/app")], grants=[sg]))
        r = app0(P.AppendAuditRequest(batch_id=b, records=[good()], grants=[sg]))
        expect(r.accepted == 1 and not r.duplicate, f"{r}")
    check("append-audit-retry-after-refusal", retry_after_refusal)

    def db_scan():
        scan_files(srv.data_dir, [val])
    check("append-audit-no-value-stored", db_scan)
    srv.stop()


def field_bytes(num, payload):
    def varint(n):
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def tamper_sig(sg):
    b = bytearray(sg.signature)
    b[0] ^= 1
    return ct.G.SignedGrant(grant=sg.grant, key_id=sg.key_id, signature=bytes(b)).SerializeToString()


# ---------------------------------------------------------------------------
# the rest of section 7: admin API edges, audit paging, gateway routes, grace


RELAY_ISSUERS = (ct.DEFAULT_ISSUERS + ", "
                 f'{{ issuer = "spiffe://airlock/relay/*"; public_key_file = "{KEYS}/relay-0.pub"; '
                 f'principals = ["acme/**"]; routes = ["crm/*"]; credentials = ["gw/**"]; }}')
RELAY = "spiffe://airlock/relay/relay-0"
GW0 = "spiffe://airlock/gateway/gateway-0"


def misc_suite():
    mk = gen_master(os.path.join(T_DIR, "master-misc.key"))
    srv = KeyedServer("misc", os.path.join(T_DIR, "data-misc"), mk, issuers=RELAY_ISSUERS)
    srv.start()

    def delete():
        v = new_canary()
        put(srv, "ci/del", v)
        expect(resolve(srv, "ci/del").value == v, "value before delete")
        before = head_seq(srv)
        admin(srv).delete(P.DeleteCredentialRequest(name="ci/del"))
        e = expect_code(resolve, SC.NOT_FOUND, srv, "ci/del")
        expect(reason_name(e) == "ERROR_REASON_NOT_FOUND", reason_name(e))
        recs = audit_after(srv, before)
        acts = [(r.action, r.decision) for r in recs if r.credential == "ci/del"]
        expect((P.AUDIT_ACTION_DELETE, ALLOW) in acts and (P.AUDIT_ACTION_RESOLVE, DENY) in acts,
               f"records {acts}")
        expect_code(admin(srv).delete, SC.NOT_FOUND, P.DeleteCredentialRequest(name="ci/del"))
        expect_code(admin(srv).describe, SC.NOT_FOUND, P.DescribeCredentialRequest(name="ci/del"))
        # the name is free again, with a new value
        v2 = new_canary()
        c = put(srv, "ci/del", v2)
        expect(c.current_version == 1 and resolve(srv, "ci/del").value == v2, "re-created")
        scan_files(srv.data_dir, [v])
    check("delete-then-resolve-not-found", delete)

    def destroy_previous():
        v1, v2 = new_canary(), new_canary()
        put(srv, "ci/leak", v1)
        c = admin(srv).rotate(P.RotateCredentialRequest(name="ci/leak", value=v2,
                                                        destroy_previous=True))
        states = {x.version: x.state for x in c.versions}
        expect(states == {2: P.CREDENTIAL_VERSION_STATE_CURRENT,
                          1: P.CREDENTIAL_VERSION_STATE_DESTROYED}, f"versions {states}")
        e = expect_code(admin(srv).delete, SC.FAILED_PRECONDITION,
                        P.DeleteCredentialRequest(name="ci/leak", version=2))
        print(f"    delete CURRENT version: {e.code()} {reason_name(e)}", flush=True)
        con = sqlite3.connect(os.path.join(srv.data_dir, "credstore.db"))
        row = con.execute("SELECT ciphertext, wrapped_dek FROM versions WHERE name = 'ci/leak' "
                          "AND version = 1").fetchone()
        con.close()
        expect(row is None or not any(x and any(x) for x in row),
               "a destroyed version still has its ciphertext / wrapped key")
    check("rotate-destroy-previous", destroy_previous)

    def grace_ends():
        v1, v2 = new_canary(), new_canary()
        admin(srv).put(P.PutCredentialRequest(name="ci/grace", type=P.CREDENTIAL_TYPE_BEARER_TOKEN,
                                              policy=policy(), value=v1, grace_period_ms=1))
        c = admin(srv).rotate(P.RotateCredentialRequest(name="ci/grace", value=v2))
        states = {x.version: x.state for x in c.versions}
        expect(states.get(2) == P.CREDENTIAL_VERSION_STATE_CURRENT, f"versions {states}")
        # the sweeper runs every 30 s: wait for it (at most 90 s), do not time it
        deadline = time.monotonic() + 90
        while True:
            d = admin(srv).describe(P.DescribeCredentialRequest(name="ci/grace"))
            states = {x.version: x.state for x in d.versions}
            if states.get(1) == P.CREDENTIAL_VERSION_STATE_DESTROYED:
                break
            expect(time.monotonic() < deadline, f"version 1 still {states.get(1)} after 90 s")
            time.sleep(0.5)
        recs = audit_after(srv, 0, action=P.AUDIT_ACTION_VERSION_DESTROYED, credential="ci/grace")
        expect(len(recs) == 1 and recs[0].version == 1, f"VERSION_DESTROYED records {recs}")
        expect(resolve(srv, "ci/grace").value == v2, "current value after the sweep")
    check("grace-period-ends-version-destroyed", grace_ends)

    def bad_put():
        before = set(list_all(srv))
        cases = [
            ("bad-name", dict(name="ci//x", value=b"v"), SC.INVALID_ARGUMENT),
            ("name-too-long", dict(name="ci/" + "x" * 200, value=b"v"), SC.INVALID_ARGUMENT),
            ("no-type", dict(name="ci/nt", value=b"v", type=P.CREDENTIAL_TYPE_UNSPECIFIED),
             SC.INVALID_ARGUMENT),
            ("no-value", dict(name="ci/nv"), SC.INVALID_ARGUMENT),
            ("value-too-large", dict(name="ci/big", value=b"v" * (64 * 1024 + 1)),
             SC.INVALID_ARGUMENT),
            ("template-two-slots", dict(name="ci/t2", value=b"v", template=P.InjectionTemplate(
                header="X-Key", format="{} {}")), SC.INVALID_ARGUMENT),
            ("template-host-header", dict(name="ci/th", value=b"v", template=P.InjectionTemplate(
                header="Host")), SC.INVALID_ARGUMENT),
        ]
        got = []
        for tag, kw, code in cases:
            req = dict(type=P.CREDENTIAL_TYPE_BEARER_TOKEN, policy=policy())
            req.update(kw)
            try:
                admin(srv).put(P.PutCredentialRequest(**req))
                raise CheckFailed(f"{tag}: Put accepted")
            except grpc.RpcError as e:
                expect(e.code() == code, f"{tag}: {e.code()} {reason_name(e)}, want {code}")
                expect(b"v" * 40 not in (e.details() or "").encode(), f"{tag}: value echoed")
                got.append(f"{tag}={e.code().name}")
        expect(set(list_all(srv)) == before, "a refused Put stored something")
        # existing credential: a different value on Put is refused, the old one stays
        v = new_canary()
        put(srv, "ci/keepval", v)
        e = expect_code(put, SC.FAILED_PRECONDITION, srv, "ci/keepval", new_canary())
        expect(resolve(srv, "ci/keepval").value == v, "value changed by a refused Put")
        got.append(f"different-value={e.code().name}")
        print(f"    {', '.join(got)}", flush=True)
    check("put-bad-input-refused", bad_put)

    def paging():
        for i in range(7):
            put(srv, f"ci/page-{i}", new_canary())
        full = audit_after(srv, 0)
        seqs, tok, pages = [], "", 0
        while True:
            r = admin(srv).query(P.QueryAuditRequest(page=C.PageRequest(page_size=3,
                                                                        page_token=tok)))
            expect(len(r.records) <= 3, f"page of {len(r.records)}")
            seqs += [x.seq for x in r.records]
            pages += 1
            tok = r.page.next_page_token
            if not tok:
                break
        expect(seqs[:len(full)] == [x.seq for x in full], "paged records differ from one query")
        expect(seqs == sorted(set(seqs)), "paging repeated or reordered records")
        # a token is bound to its filters
        r = admin(srv).query(P.QueryAuditRequest(page=C.PageRequest(page_size=2),
                                                 action=P.AUDIT_ACTION_PUT))
        expect(r.page.next_page_token, "no second page of PUT records")
        e1 = expect_code(admin(srv).query, SC.INVALID_ARGUMENT, P.QueryAuditRequest(
            page=C.PageRequest(page_size=2, page_token=r.page.next_page_token),
            action=P.AUDIT_ACTION_RESOLVE))
        expect_code(admin(srv).query, SC.INVALID_ARGUMENT, P.QueryAuditRequest(
            page=C.PageRequest(page_token="not-a-token")))
        # time window filters
        t_mid = full[len(full) // 2].time_ms
        lo = admin(srv).query(P.QueryAuditRequest(to_ms=t_mid, page=C.PageRequest(page_size=1000)))
        hi = admin(srv).query(P.QueryAuditRequest(from_ms=t_mid, page=C.PageRequest(page_size=1000)))
        expect(all(x.time_ms < t_mid for x in lo.records) and
               all(x.time_ms >= t_mid for x in hi.records), "from_ms/to_ms")
        print(f"    {len(seqs)} records in {pages} pages of 3; token with other filters: "
              f"{e1.code()}", flush=True)
    check("audit-query-paging-and-filters", paging)

    def verify_ranges():
        h = verify(srv).head_seq
        r = admin(srv).verify(P.VerifyAuditRequest(from_seq=2, to_seq=h - 1))
        expect(r.intact and r.records_checked >= h - 2, f"range check {r}")
        expect_code(admin(srv).verify, SC.INVALID_ARGUMENT, P.VerifyAuditRequest(from_seq=5,
                                                                                 to_seq=2))
        expect_code(admin(srv).verify, SC.OUT_OF_RANGE, P.VerifyAuditRequest(to_seq=h + 1000))
    check("audit-verify-ranges", verify_ranges)

    def gateway_route():
        v = new_canary()
        put(srv, "gw/crm-token", v, allowed_issuers=["spiffe://airlock/relay/*"],
            allowed_holders=["spiffe://airlock/gateway/*"], allowed_pools=[],
            allowed_routes=["crm/*"], allowed_destinations=["crm.internal.example:443"])
        kw = dict(key="relay-0", issuer=RELAY, holder=GW0, subject="request/r1", scope="crm/main",
                  credentials=["gw/crm-token"], destinations=["crm.internal.example:443"])
        sg, gid = mint(**kw)
        r = resolve(srv, "gw/crm-token", "gateway-gateway-0", grant=sg,
                    dest="crm.internal.example:443")
        expect(r.value == v, "gateway resolve")
        rec = audit_after(srv, 0, grant_id=gid)
        expect(rec and rec[0].scope == "crm/main" and rec[0].caller == GW0
               and rec[0].issuer == RELAY, f"record {rec[0] if rec else None}")
        denied = []
        for tag, over in (("route-not-in-policy", dict(scope="billing/main")),
                          ("intake-for-route-credential", dict(key="intake-0", issuer=ct.INTAKE,
                                                               scope="crm/main")),
                          ("principal-out-of-issuer-scope", dict(principal="other/bob"))):
            g2 = dict(kw)
            g2.update(over)
            sg2, _ = mint(**g2)
            e = expect_code(resolve, SC.PERMISSION_DENIED, srv, "gw/crm-token", "gateway-gateway-0",
                            grant=sg2, dest="crm.internal.example:443")
            denied.append(f"{tag}={reason_name(e)}")
        # relay's scope does not reach ci/ credentials
        put(srv, "ci/for-relay", new_canary(), allowed_issuers=["spiffe://airlock/**"],
            allowed_holders=["**"], allowed_routes=["**"])
        sg3, _ = mint(**dict(kw, credentials=["ci/for-relay"], destinations=[DEST]))
        e = expect_code(resolve, SC.PERMISSION_DENIED, srv, "ci/for-relay", "gateway-gateway-0",
                        grant=sg3)
        denied.append(f"credential-out-of-issuer-scope={reason_name(e)}")
        print(f"    {'; '.join(denied)}", flush=True)
    check("gateway-route-grant", gateway_route)
    srv.stop()


def main():
    t0 = time.monotonic()
    suites = os.environ.get("CREDSTORE_OPS_SUITES", "memory,nodump,rotation,backup,append,misc")
    table = {"memory": memory_suite, "nodump": nondumpable_suite, "rotation": rotation_suite,
             "backup": backup_suite, "append": append_suite, "misc": misc_suite}
    for s in suites.split(","):
        try:
            table[s]()
        except Exception as e:
            check(f"{s}-suite", lambda e=e: (_ for _ in ()).throw(e))
    print(f"credstore_ops_test.py: {time.monotonic() - t0:.1f}s", flush=True)
    return 1 if ct.failed else 0


if __name__ == "__main__":
    sys.exit(main())
