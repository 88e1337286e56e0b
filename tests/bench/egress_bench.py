"""Driver of tests/bench/egress.sh (run with /usr/bin/python3; the environment is the one
tests/integration/egress_test.py gets, plus SQUID = squid's "host:port", BENCH_N,
BENCH_WARMUP, BENCH_ROUNDS). Starts the real credstore, intake and executor (with its
airlock-egress) exactly as the end-to-end test does, then runs the same client
(egress_client.py) in rounds, each variant once per round, in this order:

  direct      outside the sandbox, straight to the upstream     (the baseline)
  squid       outside the sandbox, CONNECT through squid        (the CONNECT baseline)
  tunnel      inside a sandbox, CONNECT through airlock-egress, not intercepted
  intercept   inside a sandbox, through airlock-egress, intercepted, the credential injected

Each variant is one kept-alive connection with BENCH_N timed requests after BENCH_WARMUP.
Prints per round and variant p50/p99, then the best of each over the rounds, the added
latency of each proxy (its p50/p99 minus direct's, for the same path), and one line:

  summary: ratio=<tunnel added p50 / squid added p50> tunnel_added_p50_ms=...
           tunnel_added_p99_ms=... squid_added_p50_ms=... squid_added_p99_ms=...
           intercept_added_p50_ms=... intercept_added_p99_ms=... direct_p50_ms=...
           requests=...
Targets (reported, never asserted): tunnel adds no more than squid; intercept adds at most
0.5 ms p50. Exits non-zero only when something failed (a server, a request, a job).
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import egress_test as et  # noqa: E402
from egress_test import P, ct, jt, it  # noqa: E402

N = int(os.environ.get("BENCH_N", "2000"))
WARM = int(os.environ.get("BENCH_WARMUP", "200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SQUID = os.environ["SQUID"]
CLIENT = open(os.path.join(HERE, "egress_client.py")).read()
CA = os.path.join(et.UP_DIR, "ca.crt")


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] / 1000.0  # ms


def local(mode, path, auth, proxy="-"):
    env = dict(os.environ, BENCH_CA=CA)
    r = subprocess.run(["/usr/bin/python3", "-c", CLIENT, mode, str(N), str(WARM), path, auth,
                        proxy, et.UP_ADDR], capture_output=True, env=env, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"client {mode} {path}: {r.stderr.decode()[-400:]}")
    return json.loads(r.stdout)["lat_us"]


def sandboxed(x, tag, path, intercept):
    args = ["connect", str(N), str(WARM), path, "$TOKEN" if intercept else "-"]
    if intercept:
        sp = et.spec(None, creds=[et.bind()], argv=["python3", "-c", CLIENT] + args)
    else:  # the upstream's CA comes in on stdin: no interception, no job CA
        sp = et.spec(None, dests=[P.NetworkDestination(host="upstream.test", port=8443)],
                     stdin=et.UP_CA,
                     argv=["sh", "-c", 'cat > /tmp/ca.pem && BENCH_CA=/tmp/ca.pem '
                           'exec python3 -c "$0" "$@"', CLIENT] + args)
    job, out, err = x.run(tag, sp)
    if job.state != P.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"{tag}: {et.job_desc(job, out, err)}")
    return json.loads(out.decode().strip().splitlines()[-1])["lat_us"]


def main():
    mk = ct.gen_master(os.path.join(et.T_DIR, "master.key"))
    cs = ct.Server("credstore", os.path.join(et.T_DIR, "cs.data"), mk, issuers=et.ISSUERS).start()
    et.put_credentials(cs)
    intake = et.Intake("intake").start()
    key = intake.new_key("acme/alice")
    ex = jt.Executor(intake, 0, slots=2, extra=et.executor_config(cs.port)).start()
    jobs = intake.jobs(key)
    x = et.Ctx(jobs, cs, ex)
    it.wait_until("the executor ready", lambda: et.ready(ex))
    token = "Bearer " + et.TOKEN.decode()
    variants = [
        ("direct", "/public", lambda: local("direct", "/public", "-")),
        ("direct_api", "/api", lambda: local("direct", "/api", token)),
        ("squid", "/public", lambda: local("connect", "/public", "-", SQUID)),
        ("tunnel", "/public", lambda: sandboxed(x, "tunnel", "/public", False)),
        ("intercept", "/api", lambda: sandboxed(x, "intercept", "/api", True)),
    ]
    best = {}
    for rnd in range(1, ROUNDS + 1):
        for name, path, run in variants:
            lat = run()
            p50, p99 = pct(lat, 0.50), pct(lat, 0.99)
            print(f"round {rnd} {name:<10} {path:<8} p50_ms={p50:.3f} p99_ms={p99:.3f} "
                  f"n={len(lat)}", flush=True)
            b = best.setdefault(name, [p50, p99])
            b[0], b[1] = min(b[0], p50), min(b[1], p99)
    d50, d99 = best["direct"]
    a50, a99 = best["direct_api"]
    add = {"squid": (best["squid"][0] - d50, best["squid"][1] - d99),
           "tunnel": (best["tunnel"][0] - d50, best["tunnel"][1] - d99),
           "intercept": (best["intercept"][0] - a50, best["intercept"][1] - a99)}
    print("best over rounds (ms):")
    for name, (p50, p99) in best.items():
        print(f"  {name:<10} p50={p50:.3f} p99={p99:.3f}")
    print("added to the direct request (ms):")
    for name, (p50, p99) in add.items():
        print(f"  {name:<10} p50=+{p50:.3f} p99=+{p99:.3f}")
    ratio = add["tunnel"][0] / add["squid"][0] if add["squid"][0] > 0 else float("inf")
    print(f"targets: tunnelled CONNECT adds no more than squid ({'met' if ratio <= 1 else 'missed'}"
          f", ratio {ratio:.2f}); intercepted kept-alive request adds <= 0.5 ms p50 "
          f"({'met' if add['intercept'][0] <= 0.5 else 'missed'}, "
          f"{add['intercept'][0]:.3f} ms)")
    ex.stop()
    intake.stop()
    cs.stop()
    print(f"summary: ratio={ratio:.2f} tunnel_added_p50_ms={add['tunnel'][0]:.3f} "
          f"tunnel_added_p99_ms={add['tunnel'][1]:.3f} squid_added_p50_ms={add['squid'][0]:.3f} "
          f"squid_added_p99_ms={add['squid'][1]:.3f} "
          f"intercept_added_p50_ms={add['intercept'][0]:.3f} "
          f"intercept_added_p99_ms={add['intercept'][1]:.3f} direct_p50_ms={d50:.3f} "
          f"requests={N}x{ROUNDS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
