"""grpcio (Debian's python3-grpcio, grpc core) against airlock-testsvc.

Run with /usr/bin/python3 by grpcio.sh, which starts the servers, generates
the message classes with protoc --python_out into GEN_DIR and passes in:
  GEN_DIR            protoc output (airlock/test/v1/test_pb2.py, grpc/health/v1/health_pb2.py)
  H2C, H2C_SMALL     host:port of h2c servers (default and 64 KiB message cap)
  TLS, TLS_SMALL     host:port of mTLS servers (same)
  PKI                directory with ca.crt, client-client.{crt,key}, test-testsvc.crt
  RELOAD_CMD         shell command that re-issues the TLS server's certificate and
                     sends it SIGHUP
There is no grpc_tools here: methods are called with channel.unary_unary /
unary_stream and explicit serializers. Prints PASS/FAIL/SKIP lines; exits 1 if
any check failed. No timing assertions: deadlines are generous.
"""

import importlib.util
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback

import grpc

ENV = os.environ
SMALL_LIMIT = 64 * 1024
CALL_TIMEOUT = 60.0  # seconds, for calls that should succeed (sanitized builds are slow)
SC = grpc.StatusCode
failed = 0


def load(name, rel):
    # Loaded by path: the generated grpc/health/v1 package would clash with grpcio's "grpc".
    spec = importlib.util.spec_from_file_location(name, os.path.join(ENV["GEN_DIR"], rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


test_pb2 = load("airlock_test_pb2", "airlock/test/v1/test_pb2.py")
health_pb2 = load("grpc_health_pb2", "grpc/health/v1/health_pb2.py")
SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


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
    except Exception as e:  # report every failure as a FAIL line and go on
        failed += 1
        why = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, grpc.RpcError):
            why = f"unexpected RPC error {e.code()} {e.details()!r}"
        print(f"FAIL {name}: {why}", flush=True)
        traceback.print_exc(file=sys.stderr)


def pki(f):
    with open(os.path.join(ENV["PKI"], f), "rb") as fh:
        return fh.read()


def channel(target, kind, client_cert=True):
    # A local subchannel pool: a new channel is a new connection.
    opts = [("grpc.use_local_subchannel_pool", 1)]
    if kind == "h2c":
        return grpc.insecure_channel(target, options=opts)
    if client_cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki("ca.crt"),
            private_key=pki("client-client.key"),
            certificate_chain=pki("client-client.crt"))
    else:
        creds = grpc.ssl_channel_credentials(root_certificates=pki("ca.crt"))
    return grpc.secure_channel(target, creds, options=opts)


class Stubs:
    def __init__(self, ch):
        self.ch = ch
        ser = lambda m: m.SerializeToString()  # noqa: E731
        T = test_pb2
        H = health_pb2
        self.echo = ch.unary_unary("/airlock.test.v1.TestService/Echo", ser, T.EchoReply.FromString)
        self.stream = ch.unary_stream("/airlock.test.v1.TestService/Stream", ser,
                                      T.StreamReply.FromString)
        self.check = ch.unary_unary("/grpc.health.v1.Health/Check", ser,
                                    H.HealthCheckResponse.FromString)
        self.watch = ch.unary_stream("/grpc.health.v1.Health/Watch", ser,
                                     H.HealthCheckResponse.FromString)
        self.list = ch.unary_unary("/grpc.health.v1.Health/List", ser,
                                   H.HealthListResponse.FromString)

    def raw(self, path):
        return self.ch.unary_unary(path, lambda b: b, lambda b: b)


def expect_code(fn, code, *args, **kw):
    """Calls fn, which must fail with code; returns the RpcError."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        expect(e.code() == code, f"got {e.code()} {e.details()!r}, want {code}")
        return e
    raise CheckFailed(f"call succeeded, want {code}")


def echo_req(**kw):
    return test_pb2.EchoRequest(**kw)


def suite(kind, target, small_target):
    p = lambda n: f"{kind}-{n}"  # noqa: E731
    ch = channel(target, kind)
    s = Stubs(ch)
    want_peer = "" if kind == "h2c" else "spiffe://airlock/client/client"

    def echo():
        rep = s.echo(echo_req(message="hello", payload=b"\x00\x01\x02\xff"), timeout=CALL_TIMEOUT)
        expect(rep.message == "hello", f"message {rep.message!r}")
        expect(rep.payload == b"\x00\x01\x02\xff", f"payload {rep.payload!r}")
        expect(rep.peer_identity == want_peer, f"peer_identity {rep.peer_identity!r}, want {want_peer!r}")
    check(p("echo"), echo)

    def echo_large():
        # bigger than any HTTP/2 window: both sides' flow control must move it
        payload = bytes(i & 0xFF for i in range(3 << 20))
        rep = s.echo(echo_req(payload=payload), timeout=CALL_TIMEOUT)
        expect(rep.payload == payload, f"payload differs ({len(rep.payload)} bytes back)")
    check(p("echo-3MiB"), echo_large)

    def echo_concurrent():
        futs = [s.echo.future(echo_req(message=f"m{i}", delay_ms=0 if i % 3 else 20),
                              timeout=CALL_TIMEOUT) for i in range(100)]
        for i, f in enumerate(futs):
            rep = f.result()
            expect(rep.message == f"m{i}", f"call {i} got {rep.message!r}")
    check(p("echo-concurrent-100"), echo_concurrent)

    def stream_100():
        msgs = list(s.stream(test_pb2.StreamRequest(count=100, payload_bytes=10), timeout=CALL_TIMEOUT))
        expect(len(msgs) == 100, f"{len(msgs)} messages, want 100")
        for i, m in enumerate(msgs):
            expect(m.seq == i, f"message {i} has seq {m.seq}")
            expect(len(m.payload) == 10, f"message {i} payload {len(m.payload)} bytes")
    check(p("stream-100"), stream_100)

    def stream_large():
        n, size, got = 12, 1 << 20, 0
        for m in s.stream(test_pb2.StreamRequest(count=n, payload_bytes=size), timeout=CALL_TIMEOUT):
            expect(len(m.payload) == size and m.payload[:1] == b"x" and m.payload[-1:] == b"x",
                   f"message {m.seq}: {len(m.payload)} bytes")
            expect(m.seq == got, f"seq {m.seq}, want {got}")
            got += 1
        expect(got == n, f"{got} messages, want {n}")
    check(p("stream-large-1MiB"), stream_large)

    def stream_fail():
        it = s.stream(test_pb2.StreamRequest(count=3, fail_code=SC.ABORTED.value[0]), timeout=CALL_TIMEOUT)
        got = []
        try:
            for m in it:
                got.append(m)
        except grpc.RpcError as e:
            expect(e.code() == SC.ABORTED, f"status {e.code()}")
            expect(len(got) == 3, f"{len(got)} messages before the status, want 3")
            return
        raise CheckFailed("stream ended OK, want ABORTED")
    check(p("stream-fail-code"), stream_fail)

    def stream_cancel():
        it = s.stream(test_pb2.StreamRequest(count=1000000, interval_ms=10), timeout=CALL_TIMEOUT)
        for i, _ in enumerate(it):
            if i == 2:
                it.cancel()
                break
        expect(it.code() == SC.CANCELLED, f"status {it.code()}")
        s.echo(echo_req(message="after cancel"), timeout=CALL_TIMEOUT)
    check(p("stream-client-cancel"), stream_cancel)

    def health_check():
        rep = s.check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
        expect(rep.status == SERVING, f"status {rep.status}")
        expect_code(s.check, SC.NOT_FOUND, health_pb2.HealthCheckRequest(service="no.such.Service"),
                    timeout=CALL_TIMEOUT)
    check(p("health-check"), health_check)

    def health_list():
        rep = s.list(health_pb2.HealthListRequest(), timeout=CALL_TIMEOUT)
        expect("" in rep.statuses and rep.statuses[""].status == SERVING, f"statuses {rep.statuses}")
    check(p("health-list"), health_list)

    def health_watch():
        it = s.watch(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
        first = next(it)
        expect(first.status == SERVING, f"first message {first}")
        it.cancel()
        expect(it.code() == SC.CANCELLED, f"status {it.code()}")
        it = s.watch(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=CALL_TIMEOUT)
        first = next(it)
        expect(first.status == SERVICE_UNKNOWN, f"unknown service: first message {first}")
        it.cancel()
    check(p("health-watch"), health_watch)

    def unknown_method():
        expect_code(s.raw("/airlock.test.v1.TestService/NoSuchMethod"), SC.UNIMPLEMENTED, b"",
                    timeout=CALL_TIMEOUT)
        expect_code(s.raw("/no.such.Service/Echo"), SC.UNIMPLEMENTED, b"", timeout=CALL_TIMEOUT)
    check(p("unknown-method"), unknown_method)

    def deadline():
        expect_code(s.echo, SC.DEADLINE_EXCEEDED, echo_req(message="slow", delay_ms=30000), timeout=0.3)
        it = s.stream(test_pb2.StreamRequest(count=1000000, interval_ms=50), timeout=0.5)
        try:
            for _ in it:
                pass
            raise CheckFailed("stream ended OK, want DEADLINE_EXCEEDED")
        except grpc.RpcError as e:
            expect(e.code() == SC.DEADLINE_EXCEEDED, f"stream: {e.code()}")
        s.echo(echo_req(message="after deadline"), timeout=CALL_TIMEOUT)
    check(p("deadline-exceeded"), deadline)

    def status_codes():
        for code in SC:
            if code == SC.OK:
                continue
            e = expect_code(s.echo, code, echo_req(fail_code=code.value[0], fail_message=f"code {code.value[0]}"),
                            timeout=CALL_TIMEOUT)
            expect(e.details() == f"code {code.value[0]}", f"{code}: message {e.details()!r}")
    check(p("status-codes"), status_codes)

    def non_ascii():
        for text in ["héllo ✓ 日本", '100% sure, 50%2F50 \t "quoted"\r\nnew line', "emoji 🦀 end"]:
            e = expect_code(s.echo, SC.FAILED_PRECONDITION,
                            echo_req(fail_code=SC.FAILED_PRECONDITION.value[0], fail_message=text),
                            timeout=CALL_TIMEOUT)
            expect(e.details() == text, f"message {e.details()!r}, want {text!r}")
    check(p("status-message-non-ascii"), non_ascii)

    def metadata():
        binv = bytes(range(256))
        rep, call = s.echo.with_call(
            echo_req(message="md"), timeout=CALL_TIMEOUT,
            metadata=[("x-echo", "plain value, with spaces"), ("x-echo-bin", binv), ("x-other", "x")])
        expect(rep.echo_metadata == "plain value, with spaces", f"echo_metadata {rep.echo_metadata!r}")
        expect(rep.echo_metadata_bin == binv, f"echo_metadata_bin {rep.echo_metadata_bin!r}")
        tr = [v for k, v in call.trailing_metadata() if k == "x-trailer-bin"]
        expect(tr == [binv], f"trailer x-trailer-bin {tr!r}")
        for v in [b"", b"\xa5" * 6000]:
            rep = s.echo(echo_req(), metadata=[("x-echo-bin", v)], timeout=CALL_TIMEOUT)
            expect(rep.echo_metadata_bin == v, f"{len(v)}-byte value came back as {len(rep.echo_metadata_bin)} bytes")
    check(p("metadata"), metadata)

    sch = channel(small_target, kind)
    ss = Stubs(sch)

    def under_limit():
        payload = b"\x07" * (SMALL_LIMIT - 1024)
        rep = ss.echo(echo_req(payload=payload), timeout=CALL_TIMEOUT)
        expect(rep.payload == payload, "payload differs")
    check(p("message-under-limit"), under_limit)

    def over_limit():
        expect_code(ss.echo, SC.RESOURCE_EXHAUSTED, echo_req(payload=b"\x01" * (100 * 1024)),
                    timeout=CALL_TIMEOUT)
        ss.echo(echo_req(message="after oversized"), timeout=CALL_TIMEOUT)
    check(p("request-over-limit"), over_limit)

    def response_over_limit():
        # The reply would be over the server's cap: it must end the call with
        # RESOURCE_EXHAUSTED, not OK.
        got = []
        try:
            for m in ss.stream(test_pb2.StreamRequest(count=2, payload_bytes=100 * 1024), timeout=CALL_TIMEOUT):
                got.append(m)
        except grpc.RpcError as e:
            expect(e.code() == SC.RESOURCE_EXHAUSTED, f"status {e.code()} {e.details()!r}")
            expect(not got, f"{len(got)} messages arrived")
            return
        raise CheckFailed(f"stream ended OK with {len(got)} messages, want RESOURCE_EXHAUSTED")
    check(p("response-over-limit"), response_over_limit)

    sch.close()
    ch.close()


def server_serial(target):
    host, port = target.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(ENV["PKI"], "ca.crt"))
    ctx.load_cert_chain(os.path.join(ENV["PKI"], "client-client.crt"),
                        os.path.join(ENV["PKI"], "client-client.key"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as t:
            der = t.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
                         input=der, capture_output=True, check=True)
    return out.stdout.decode().strip().split("=", 1)[1].upper().lstrip("0")


def file_serial(path):
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                         capture_output=True, check=True)
    return out.stdout.decode().strip().split("=", 1)[1].upper().lstrip("0")


def tls_suite():
    def no_client_cert():
        ch = channel(ENV["TLS"], "tls", client_cert=False)
        e = expect_code(Stubs(ch).echo, SC.UNAVAILABLE, echo_req(message="x"), timeout=20)
        ch.close()
        return e
    check("mtls-no-client-cert-refused", no_client_cert)

    def reload():
        crt = os.path.join(ENV["PKI"], "test-testsvc.crt")
        before = server_serial(ENV["TLS"])
        expect(before == file_serial(crt), f"server shows serial {before}, file has {file_serial(crt)}")
        old_ch = channel(ENV["TLS"], "tls")
        old = Stubs(old_ch)
        old.echo(echo_req(message="before reload"), timeout=CALL_TIMEOUT)
        watch = old.watch(health_pb2.HealthCheckRequest(service=""), timeout=600)
        expect(next(watch).status == SERVING, "Watch: first message not SERVING")
        slow = old.stream(test_pb2.StreamRequest(count=80, interval_ms=100), timeout=CALL_TIMEOUT)
        got = [next(slow) for _ in range(3)]
        rest = []
        reader = threading.Thread(target=lambda: rest.extend(slow), daemon=True)
        reader.start()

        subprocess.run(ENV["RELOAD_CMD"], shell=True, check=True)
        want = file_serial(crt)
        expect(want != before, "RELOAD_CMD did not issue a new certificate")
        after = before
        for _ in range(300):
            after = server_serial(ENV["TLS"])
            if after == want:
                break
            time.sleep(0.1)
        expect(after == want, f"new connections still see serial {after}, want {want}")
        reload_seen_while_streaming = reader.is_alive()

        fresh_ch = channel(ENV["TLS"], "tls")
        rep = Stubs(fresh_ch).echo(echo_req(message="after reload"), timeout=CALL_TIMEOUT)
        expect(rep.peer_identity == "spiffe://airlock/client/client", f"peer_identity {rep.peer_identity!r}")
        fresh_ch.close()

        old.echo(echo_req(message="old connection after reload"), timeout=CALL_TIMEOUT)
        reader.join(CALL_TIMEOUT)
        expect(not reader.is_alive(), "slow Stream did not end")
        expect(slow.code() == SC.OK, f"slow Stream across the reload: {slow.code()} {slow.details()!r}")
        expect(len(got) + len(rest) == 80, f"slow Stream got {len(got) + len(rest)} of 80 messages")
        expect(watch.is_active(), "Watch ended during the reload")
        watch.cancel()
        expect(watch.code() == SC.CANCELLED, f"Watch: {watch.code()}")
        old_ch.close()
        if not reload_seen_while_streaming:
            raise Skip("the slow Stream ended before the reload took effect")
    check("mtls-cert-reload", reload)


def main():
    suite("h2c", ENV["H2C"], ENV["H2C_SMALL"])
    suite("mtls", ENV["TLS"], ENV["TLS_SMALL"])
    tls_suite()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
