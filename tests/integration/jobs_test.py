"""End-to-end checks of the self-hosted sandbox path: the real airlock-intake and two real
airlock-executor processes (each running jobs in real sandboxes), driven over mTLS by
grpcio (Debian's python3-grpcio) as an agent platform with API keys, and by airlockctl.

Run with /usr/bin/python3 by jobs.sh, which makes the PKI and the message classes and
passes in BIN, GEN_DIR, T_DIR, AIRLOCK_HOME and PIDS_FILE (as for intake_test.py, whose
helpers this file reuses). Prints PASS/FAIL/SKIP lines; exits 1 if any check failed.
No timing assertions: waits are for events, with generous deadlines.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import intake_test as it  # noqa: E402
from intake_test import (P, CheckFailed, expect, wait_until, read, check,  # noqa: E402
                         exec_spec, events_of, TERMINAL)

BIN, T_DIR, HOME = it.BIN, it.T_DIR, it.HOME
PKI = it.PKI
RUN_TAG = f"t{os.getpid()}"  # sandbox names: never those of a local deployment


class Intake(it.Server):
    """intake with a short lease ttl (lost executors are noticed fast) and pools for
    these checks: 'default' (both executors), 'only1' (executor-1 only), 'nobody'."""

    fixed_port = 0  # set before a restart: executors reconnect to the same address

    def config(self):
        return (f'listen = "127.0.0.1:{self.fixed_port}"; ops_listen = "127.0.0.1:0";\n'
                f'tls = {{ cert_file = "{PKI}/intake-intake-0.crt"; '
                f'key_file = "{PKI}/intake-intake-0.key"; ca_file = "{PKI}/ca.crt"; '
                f'client_cert = "optional"; }};\n'
                f'data_dir = "{self.data_dir}";\n'
                f'lease = {{ ttl = "4s"; heartbeat_interval = "500ms"; restart_grace = "6s"; }};\n'
                f'retry = {{ backoff_base = "100ms"; backoff_max = "500ms"; }};\n'
                f'grant = {{ key_file = "{it.KEYS}/intake-0.key"; }};\n'
                'pools = (\n'
                '  { name = "default"; executors = ["spiffe://airlock/executor/*"]; },\n'
                '  { name = "only1"; executors = ["spiffe://airlock/executor/executor-1"]; },\n'
                '  { name = "nobody"; executors = ["spiffe://airlock/executor/nobody"]; }\n'
                ');\n'
                'principals = ( { principal = "**"; pools = ["*"]; } );\n' + self.extra)


class Executor:
    """One real airlock-executor process."""

    def __init__(self, intake, n, slots=4, extra=""):
        self.intake, self.n, self.slots, self.extra = intake, n, slots, extra
        self.proc = None
        self.ops = None
        self.starts = 0
        self.ident = f"spiffe://airlock/executor/executor-{n}"

    def config(self):
        return (f'ops_listen = "127.0.0.1:0";\n'
                f'tls = {{ cert_file = "{PKI}/executor-executor-{self.n}.crt"; '
                f'key_file = "{PKI}/executor-executor-{self.n}.key"; ca_file = "{PKI}/ca.crt"; }};\n'
                f'intake = {{ addr = "127.0.0.1:{self.intake.port}"; }};\n'
                f'slots = {self.slots};\n'
                f'lease = {{ reconnect_min = "50ms"; reconnect_max = "500ms"; '
                f'safety_margin = "1s"; }};\n'
                f'drain = {{ grace = "20s"; }};\n'
                f'sandbox = {{ name = "{RUN_TAG}-x{self.n}"; }};\n'
                f'limits = {{ wall_time = "60s"; memory = "256MiB"; pids = 128; }};\n'
                + self.extra)

    def start(self):
        self.starts += 1
        base = os.path.join(T_DIR, f"executor-{self.n}.{self.starts}")
        self.err_path = base + ".err"
        with open(base + ".conf", "w") as f:
            f.write(self.config())
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([os.path.join(BIN, "airlock-executor"), "--config",
                                          base + ".conf"],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        with open(it.ENV["PIDS_FILE"], "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.monotonic() + it.WAIT
        while time.monotonic() < deadline:
            m = re.search(r"event=service\.start grpc_port=\d+ ops_port=(\d+)", self.log())
            if m:
                self.ops = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise CheckFailed(f"executor-{self.n} did not start (status {self.proc.poll()}): "
                          + " | ".join(self.log().splitlines()[-3:]))

    def log(self):
        try:
            return read(self.err_path).decode(errors="replace")
        except OSError:
            return ""

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == name:
                    return float(parts[1])
        return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=it.WAIT):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise CheckFailed(f"executor-{self.n} still running {timeout}s after SIGTERM")
            expect(rc == 0, f"executor-{self.n} exit status {rc} after SIGTERM: "
                   + " | ".join(self.log().splitlines()[-2:]))

    def kill9(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()


def sh(cmd, **kw):
    return exec_spec("default", argv=("sh", "-c", cmd), **kw)


def run_job(jobs, spec, key=""):
    """Submits spec, waits for the end; returns (job, events)."""
    job = jobs.submit(spec, key).job
    evs = jobs.watch_all(job.id)
    return jobs.get(job.id), evs


def out_of(evs, kind="stdout_chunk"):
    return b"".join(getattr(e, kind).data for e in events_of(evs, kind))


def sandbox_pids(pattern):
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True)
    return [int(p) for p in r.stdout.split()]


# ---------------------------------------------------------------------------
# checks

def c_basic(jobs):
    """A command's stdout, stderr, exit code, limits and their mechanisms come back."""
    job, evs = run_job(jobs, sh("echo hello; echo oops >&2; id -u; exit 7"))
    expect(job.state == P.JOB_STATE_FAILED, f"state {P.JobState.Name(job.state)}")
    r = job.result
    expect(r.WhichOneof("termination") == "exit_code" and r.exit_code == 7,
           f"termination {r}")
    expect(r.failure_reason == P.FAILURE_REASON_NONZERO_EXIT,
           f"failure {P.FailureReason.Name(r.failure_reason)}")
    out = out_of(evs)
    expect(out.startswith(b"hello\n") and b"0\n" not in out.split(b"hello\n", 1)[1][:2],
           f"stdout {out!r}")
    expect(out_of(evs, "stderr_chunk") == b"oops\n", f"stderr {out_of(evs, 'stderr_chunk')!r}")
    kinds = {(P.LimitKind.Name(l.limit), P.EnforcementMechanism.Name(l.mechanism))
             for l in r.limits}
    expect(any(k == "LIMIT_KIND_MEMORY" for k, _ in kinds), f"no memory limit reported: {kinds}")
    expect(all(m != "ENFORCEMENT_MECHANISM_NONE" for _, m in kinds),
           f"a limit not enforced: {kinds}")
    states = [P.JobState.Name(e.state.state) for e in events_of(evs, "state")]
    expect(states == ["JOB_STATE_QUEUED", "JOB_STATE_LEASED", "JOB_STATE_RUNNING",
                      "JOB_STATE_FAILED"], f"states {states}")
    job, evs = run_job(jobs, sh("printf ok"))
    expect(job.state == P.JOB_STATE_SUCCEEDED and out_of(evs) == b"ok",
           f"{P.JobState.Name(job.state)} {out_of(evs)!r}")


def c_isolation(jobs):
    """The sandbox sees neither the host's files nor its processes nor its network."""
    canary = os.path.join(T_DIR, "host-canary")
    with open(canary, "w") as f:
        f.write("host secret")
    job, evs = run_job(jobs, sh(f"cat {canary} /etc/shadow 2>&1; ls /proc | grep -c '^[0-9]';"
                                f" cat /proc/net/dev | tail -n +3 | cut -d: -f1; hostname"))
    out = out_of(evs).decode(errors="replace")
    expect("host secret" not in out, f"host file readable: {out!r}")
    lines = out.split("\n")
    nprocs = [x for x in lines if x.strip().isdigit()]
    # init, sh, ls, grep (and cat): nothing of the host
    expect(nprocs and int(nprocs[0]) <= 5, f"sees {nprocs} processes: {out!r}")
    expect("lo" in out and "eth" not in out, f"network interfaces: {out!r}")


def c_files_sessions(jobs, other):
    """WRITE_FILE, READ_FILE, LIST_DIR and EXEC share a session's workspace; another
    principal's session of the same name is a different workspace."""
    def fspec(kind, path, **kw):
        return P.JobSpec(pool="default", session_id="s1", kind=kind,
                         file=P.FileSpec(path=path, **kw))
    job, _ = run_job(jobs, fspec(P.JOB_KIND_WRITE_FILE, "dir/a.txt", data=b"content-1\n",
                                 make_parents=True))
    expect(job.state == P.JOB_STATE_SUCCEEDED, f"write: {P.JobState.Name(job.state)} "
           f"{job.result.failure_message}")
    job, evs = run_job(jobs, fspec(P.JOB_KIND_READ_FILE, "dir/a.txt"))
    data = b"".join(e.file_data.data for e in events_of(evs, "file_data"))
    expect(job.state == P.JOB_STATE_SUCCEEDED and data == b"content-1\n", f"read {data!r}")
    job, evs = run_job(jobs, fspec(P.JOB_KIND_LIST_DIR, "dir"))
    names = [d.name for e in events_of(evs, "dir_entries") for d in e.dir_entries.entries]
    expect(names == ["a.txt"], f"list {names}")
    spec = sh("cat dir/a.txt && echo more >> dir/a.txt", session_id="s1")
    job, evs = run_job(jobs, spec)
    expect(out_of(evs) == b"content-1\n", f"exec in session sees {out_of(evs)!r}")
    spec = sh("ls dir 2>&1; true", session_id="s1")
    job, evs = run_job(other, spec)
    expect(b"a.txt" not in out_of(evs), f"other principal's session sees {out_of(evs)!r}")
    job, evs = run_job(jobs, sh("ls dir 2>&1; true"))
    expect(b"a.txt" not in out_of(evs), f"a session-less job sees {out_of(evs)!r}")
    # a symlink planted in the workspace does not lead READ_FILE out of the sandbox
    run_job(jobs, sh("ln -s /etc/hostname dir/link; mkfifo dir/fifo", session_id="s1"))
    job, evs = run_job(jobs, fspec(P.JOB_KIND_READ_FILE, "dir/fifo"))
    expect(job.state == P.JOB_STATE_FAILED and
           job.result.failure_reason == P.FAILURE_REASON_FILE_ERROR,
           f"fifo read: {P.JobState.Name(job.state)} {job.result.failure_message}")


def c_pools(jobs, ex):
    """Jobs of pool only1 run on executor-1 only; pool nobody is never leased."""
    ids = [jobs.submit(exec_spec("only1")).job.id for _ in range(12)]
    stuck = jobs.submit(exec_spec("nobody")).job.id
    for i in ids:
        j = jobs.wait_state(i, TERMINAL)
        expect(j.executor_id == ex[1].ident, f"job {i} ran on {j.executor_id}")
    expect(jobs.get(stuck).state == P.JOB_STATE_QUEUED, "pool 'nobody' job left QUEUED")
    jobs.cancel(stuck)


def c_thousand(jobs, ex):
    """1,000 jobs across 2 executors: every job terminal, each run exactly once."""
    ids = []
    lock = threading.Lock()
    errors = []

    def submit(n):
        try:
            for _ in range(n):
                jid = jobs.submit(exec_spec("default", argv=("true",))).job.id
                with lock:
                    ids.append(jid)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    ts = [threading.Thread(target=submit, args=(250,)) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    expect(not errors and len(ids) == 1000, f"{len(ids)} submitted, errors {errors[:2]}")

    def all_done():
        done = 0
        for state in (P.JOB_STATE_SUCCEEDED,):
            token = ""
            while True:
                r = jobs.list(states=[state], page=it.C.PageRequest(page_size=500,
                                                                    page_token=token))
                done += len(r.jobs)
                token = r.page.next_page_token
                if not token:
                    break
        return done >= 1000
    wait_until("1000 jobs succeeded", all_done, deadline=600, interval=1)
    by = {}
    for jid in ids:
        j = jobs.get(jid)
        expect(j.state == P.JOB_STATE_SUCCEEDED and j.attempt == 1,
               f"job {jid}: {P.JobState.Name(j.state)} attempt {j.attempt}")
        by[j.executor_id] = by.get(j.executor_id, 0) + 1
    expect(len(by) == 2, f"jobs per executor: {by}")
    sample = ids[::97]
    for jid in sample:
        evs = jobs.watch_all(jid)
        running = [e for e in events_of(evs, "state") if e.state.state == P.JOB_STATE_RUNNING]
        expect(len(running) == 1 and len(events_of(evs, "result")) == 1,
               f"job {jid}: {len(running)} RUNNING, {len(events_of(evs, 'result'))} results")
    fin = sum(e.metric("airlock_executor_finished_total") or 0 for e in ex)
    expect(fin >= 1000, f"executors report {fin} finished attempts")


def c_executor_killed(jobs, ex):
    """kill -9 of the executor running a job: the job re-runs on the other and
    completes; then a frozen executor's stale reports are refused."""
    spec = sh("echo start; sleep 3; echo end", max_attempts=3)
    jid = jobs.submit(spec).job.id
    j = wait_until("job running", lambda: (lambda j: j if j.state == P.JOB_STATE_RUNNING
                                           else None)(jobs.get(jid)))
    victim = next(e for e in ex if e.ident == j.executor_id)
    survivor = next(e for e in ex if e is not victim)
    victim.kill9()
    j = jobs.wait_state(jid, TERMINAL)
    expect(j.state == P.JOB_STATE_SUCCEEDED and j.attempt == 2 and
           j.executor_id == survivor.ident,
           f"after kill -9: {P.JobState.Name(j.state)} attempt {j.attempt} on {j.executor_id}")
    victim.start()
    # freeze the executor running a job (SIGSTOP): intake expires the lease, the job
    # runs again elsewhere; thawed, the stale executor's reports are refused
    jid = jobs.submit(sh("sleep 2; echo done-$RANDOM", max_attempts=3)).job.id
    j = wait_until("job running", lambda: (lambda j: j if j.state == P.JOB_STATE_RUNNING
                                           else None)(jobs.get(jid)))
    frozen = next(e for e in ex if e.ident == j.executor_id)
    other = next(e for e in ex if e is not frozen)
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        j = jobs.wait_state(jid, TERMINAL)
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    expect(j.state == P.JOB_STATE_SUCCEEDED and j.attempt >= 2 and j.executor_id == other.ident,
           f"after SIGSTOP: {P.JobState.Name(j.state)} attempt {j.attempt} on {j.executor_id}")
    wait_until("thawed executor gives the stale attempt up",
               lambda: (frozen.metric("airlock_executor_lease_lost_total") or 0) +
               (frozen.metric("airlock_executor_fenced_total") or 0) >= 1)
    time.sleep(1)
    evs = jobs.watch_all(jid)
    results = events_of(evs, "result")
    expect(len(results) == 1 and j.result.exit_code == 0, f"{len(results)} results recorded")
    expect(all(e.attempt == j.attempt for e in events_of(evs, "stdout_chunk")[-1:]),
           "the last output is not from the final attempt")


def c_cancel(jobs):
    """Cancelling a running job kills its sandbox (bounded wait)."""
    marker = f"sleep 31{os.getpid() % 1000}"
    jid = jobs.submit(sh(f"echo up; exec {marker}")).job.id
    wait_until("job running", lambda: jobs.get(jid).state == P.JOB_STATE_RUNNING)
    wait_until("sleep started in the sandbox", lambda: sandbox_pids(marker))
    jobs.cancel(jid, reason="test")
    j = jobs.wait_state(jid, TERMINAL)
    expect(j.state == P.JOB_STATE_CANCELLED, f"state {P.JobState.Name(j.state)}")
    wait_until("sandbox processes gone", lambda: not sandbox_pids(marker), deadline=10)


def c_watch_resume(jobs):
    """A Watch broken mid-stream and resumed from its last seq loses and repeats nothing."""
    n = 3000
    jid = jobs.submit(sh(f"i=0; while [ $i -lt {n} ]; do echo line-$i; i=$((i+1)); "
                         f"[ $((i % 500)) -eq 0 ] && sleep 0.2; done")).job.id
    got, last = [], 0
    for _ in range(200):
        stream = jobs.watch(jid, after=last)
        try:
            for k, e in enumerate(stream):
                got.append(e)
                last = e.seq
                if k == 3:
                    stream.cancel()  # break it deliberately
                    break
        except Exception:  # noqa: BLE001
            pass
        if got and got[-1].WhichOneof("event") == "state" and got[-1].state.state in TERMINAL:
            break
    seqs = [e.seq for e in got]
    expect(seqs == list(range(1, len(seqs) + 1)), "event seqs have gaps or repeats")
    out = out_of(got).decode()
    expect(out == "".join(f"line-{i}\n" for i in range(n)), f"output differs ({len(out)} bytes)")


def c_fence(srv, jobs, ex):
    """intake unreachable (frozen) while a job runs: the executor stops the job before its
    lease could lapse (so it never runs twice at once); once intake is back the job runs
    again as attempt 2 and succeeds."""
    marker = f"sleep 6.{os.getpid() % 1000}"
    jid = jobs.submit(sh(f"exec {marker}", max_attempts=3)).job.id
    j = wait_until("job running", lambda: (lambda j: j if j.state == P.JOB_STATE_RUNNING
                                           else None)(jobs.get(jid)))
    holder = next(e for e in ex if e.ident == j.executor_id)
    fenced = holder.metric("airlock_executor_fenced_total") or 0
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        wait_until("the executor fences the job",
                   lambda: (holder.metric("airlock_executor_fenced_total") or 0) > fenced,
                   deadline=30)
        wait_until("the fenced sandbox is gone", lambda: not sandbox_pids(marker), deadline=10)
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    j = jobs.wait_state(jid, TERMINAL)
    expect(j.state == P.JOB_STATE_SUCCEEDED and j.attempt >= 2,
           f"after fencing: {P.JobState.Name(j.state)} attempt {j.attempt}")


def c_drain_no_intake(srv, jobs, ex):
    """SIGTERM while intake is unreachable: the executor still exits (after drain.grace and
    the reporting window), leaving the job to intake's lease expiry."""
    jid = jobs.submit(sh("sleep 30", max_attempts=3)).job.id
    j = wait_until("job running", lambda: (lambda j: j if j.state == P.JOB_STATE_RUNNING
                                           else None)(jobs.get(jid)))
    victim = next(e for e in ex if e.ident == j.executor_id)
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        victim.stop(timeout=90)  # drain.grace 20s + 10s to report
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    victim.start()
    jobs.cancel(jid)
    j = jobs.wait_state(jid, TERMINAL)
    expect(j.state in (P.JOB_STATE_CANCELLED, P.JOB_STATE_SUCCEEDED),
           f"job after the drain: {P.JobState.Name(j.state)}")


def c_intake_restart(srv, jobs, ex):
    """intake kill -9 mid-burst: no acknowledged job lost, running jobs re-attached."""
    long_id = jobs.submit(sh("sleep 4; echo survived")).job.id
    wait_until("long job running", lambda: jobs.get(long_id).state == P.JOB_STATE_RUNNING)
    acked = []
    for _ in range(60):
        acked.append(jobs.submit(exec_spec("default", argv=("true",))).job.id)
    srv.fixed_port = srv.port
    srv.kill9()
    srv.start()
    jobs2 = srv.jobs(it_key[0])
    for jid in acked + [long_id]:
        j = jobs2.wait_state(jid, TERMINAL)
        expect(j.state == P.JOB_STATE_SUCCEEDED, f"job {jid}: {P.JobState.Name(j.state)}")
    j = jobs2.get(long_id)
    expect(j.attempt == 1, f"running job re-ran after the restart (attempt {j.attempt})")
    expect(out_of(jobs2.watch_all(long_id)) == b"survived\n", "long job's output")
    return jobs2


def c_drain(jobs, ex):
    """SIGTERM: a running job finishes before the executor exits 0."""
    victim = ex[0]
    jid = jobs.submit(exec_spec("default", argv=("sh", "-c", "sleep 1; echo finished"))).job.id
    j = wait_until("job running", lambda: (lambda j: j if j.state == P.JOB_STATE_RUNNING
                                           else None)(jobs.get(jid)))
    victim = next(e for e in ex if e.ident == j.executor_id)
    victim.stop()
    j = jobs.get(jid)
    expect(j.state == P.JOB_STATE_SUCCEEDED and j.attempt == 1,
           f"drained job {P.JobState.Name(j.state)} attempt {j.attempt}")
    victim.start()


def c_ctl(srv, key):
    """airlockctl run streams the output and exits with the job's code; files and jobs."""
    env = dict(os.environ, AIRLOCK_HOME=HOME, AIRLOCK_API_KEY=key,
               AIRLOCK_INTAKE_ADDR=f"127.0.0.1:{srv.port}")
    ctl = os.path.join(BIN, "airlockctl")
    r = subprocess.run([ctl, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 5"],
                       capture_output=True, env=env, timeout=120)
    expect(r.returncode == 5 and r.stdout == b"out\n" and b"err\n" in r.stderr,
           f"run: status {r.returncode} stdout {r.stdout!r} stderr {r.stderr[-200:]!r}")
    r = subprocess.run([ctl, "run", "--", "no-such-command"], capture_output=True, env=env,
                       timeout=120)
    expect(r.returncode == 127, f"missing command: status {r.returncode} {r.stderr[-200:]!r}")
    local = os.path.join(T_DIR, "put.txt")
    with open(local, "wb") as f:
        f.write(b"via airlockctl\n")
    r = subprocess.run([ctl, "files", "put", local, "notes/x.txt", "--session", "c1",
                        "--parents"], capture_output=True, env=env, timeout=120)
    expect(r.returncode == 0, f"files put: {r.returncode} {r.stderr[-200:]!r}")
    r = subprocess.run([ctl, "files", "get", "notes/x.txt", "--session", "c1"],
                       capture_output=True, env=env, timeout=120)
    expect(r.returncode == 0 and r.stdout == b"via airlockctl\n", f"files get: {r.stdout!r}")
    r = subprocess.run([ctl, "files", "ls", "notes", "--session", "c1"], capture_output=True,
                       env=env, timeout=120)
    expect(r.returncode == 0 and b"x.txt" in r.stdout, f"files ls: {r.stdout!r}")
    r = subprocess.run([ctl, "jobs", "ls", "--limit", "3"], capture_output=True, env=env,
                       timeout=120)
    expect(r.returncode == 0 and len(r.stdout.splitlines()) == 4, f"jobs ls: {r.stdout!r}")
    r = subprocess.run([ctl, "run", "--detach", "--", "sleep", "60"], capture_output=True,
                       env=env, timeout=120)
    jid = r.stdout.decode().strip()
    expect(r.returncode == 0 and re.fullmatch(r"[0-9a-f]{32}", jid), f"detach: {r.stdout!r}")
    r = subprocess.run([ctl, "jobs", "cancel", jid], capture_output=True, env=env, timeout=120)
    expect(r.returncode == 0, f"jobs cancel: {r.stderr[-200:]!r}")
    r = subprocess.run([ctl, "jobs", "watch", jid], capture_output=True, env=env, timeout=120)
    expect(r.returncode == 130, f"watch of a cancelled job: status {r.returncode}")


it_key = [None]


def main():
    srv = Intake("intake")
    ex = []
    try:
        srv.start()
        ex = [Executor(srv, 0).start(), Executor(srv, 1).start()]
    except Exception as e:  # noqa: BLE001
        print(f"FAIL jobs-start: {e}", flush=True)
        for e2 in ex:
            e2.kill9()
        return 1
    key = srv.new_key("acme/alice")
    it_key[0] = key
    other = srv.jobs(srv.new_key("beta/bob"))
    jobs = srv.jobs(key)
    state = {"jobs": jobs}
    checks = [
        ("e2e-basic", lambda: c_basic(jobs)),
        ("e2e-isolation", lambda: c_isolation(jobs)),
        ("e2e-files-sessions", lambda: c_files_sessions(jobs, other)),
        ("e2e-pools", lambda: c_pools(jobs, ex)),
        ("e2e-cancel-kills-sandbox", lambda: c_cancel(jobs)),
        ("e2e-watch-resume", lambda: c_watch_resume(jobs)),
        ("e2e-airlockctl", lambda: c_ctl(srv, key)),
        ("e2e-thousand-jobs", lambda: c_thousand(jobs, ex)),
        ("e2e-executor-killed", lambda: c_executor_killed(jobs, ex)),
        ("e2e-executor-drain", lambda: c_drain(jobs, ex)),
        ("e2e-fence-when-intake-unreachable", lambda: c_fence(srv, jobs, ex)),
        ("e2e-drain-without-intake", lambda: c_drain_no_intake(srv, jobs, ex)),
        ("e2e-intake-restart", lambda: state.__setitem__("jobs",
                                                         c_intake_restart(srv, jobs, ex))),
    ]
    only = it.ENV.get("JOBS_ONLY")
    for name, fn in checks:
        if only and not re.search(only, name):
            continue
        check(name, fn)
    for e in ex:
        check(f"executor-{e.n}-exit", e.stop)
    check("intake-exit", srv.stop)
    return 1 if it.failed else 0


if __name__ == "__main__":
    sys.exit(main())
