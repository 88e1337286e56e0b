"""The egress benchmark's client (tests/bench/egress.sh): one kept-alive HTTPS connection,
N timed GET requests after a warm-up, each one's latency (send to whole response) in
microseconds as one JSON line. The same code runs for every variant, outside the sandbox
(direct to the upstream, through squid) and inside it (through airlock-egress, tunnelled or
intercepted), so the client's own cost is the same in all of them.

  python3 egress_client.py MODE N WARMUP PATH [AUTH] [PROXY] [ADDR]
    MODE   direct (TCP to ADDR:8443) | connect (CONNECT through PROXY, "host:port";
           default: $HTTPS_PROXY)
    PATH   /public or /api; AUTH = "Bearer <value>" ("-" = none; "$TOKEN" = the
           variable TOKEN, the sandbox's placeholder)
  The CA: $BENCH_CA (a file), else the default store (the job's bundle, intercepted).
Every response must be 200 with its whole body, else the client exits 1.
"""

import json
import os
import socket
import ssl
import sys
import time

HOST = "upstream.test"


def read_head(s, buf):
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            raise SystemExit("connection closed mid-response")
        buf += c
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def need(s, buf, n):
    while len(buf) < n:
        c = s.recv(65536)
        if not c:
            raise SystemExit("connection closed mid-body")
        buf += c
    return buf


def response(s, buf):
    """(status line, body, bytes left over); Content-Length or chunked bodies (a proxy
    that scrubs a response cannot know its length in advance)."""
    head, rest = read_head(s, buf)
    status = head.split(b"\r\n", 1)[0]
    n, chunked = 0, False
    for h in head.split(b"\r\n")[1:]:
        k, _, v = h.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            n = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if not chunked:
        rest = need(s, rest, n)
        return status, rest[:n], rest[n:]
    body = b""
    while True:
        while b"\r\n" not in rest:
            rest = need(s, rest, len(rest) + 1)
        line, _, rest = rest.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        rest = need(s, rest, size + 2)
        body, rest = body + rest[:size], rest[size + 2:]
        if size == 0:
            return status, body, rest


def main():
    mode, n, warm, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    auth = sys.argv[5] if len(sys.argv) > 5 else "-"
    proxy = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    addr = sys.argv[7] if len(sys.argv) > 7 else None
    if auth == "$TOKEN":
        auth = "Bearer " + os.environ["TOKEN"]
    if mode == "direct":
        s = socket.create_connection((addr, 8443), timeout=30)
    else:
        p = (proxy or os.environ["HTTPS_PROXY"]).split("//")[-1].rstrip("/")
        h, _, port = p.rpartition(":")
        s = socket.create_connection((h, int(port)), timeout=30)
        s.sendall(b"CONNECT %s:8443 HTTP/1.1\r\nHost: %s:8443\r\n\r\n" % (HOST.encode(),
                                                                         HOST.encode()))
        head, rest = read_head(s, b"")
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            raise SystemExit(f"CONNECT refused: {head[:200]!r}")
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ca = os.environ.get("BENCH_CA")
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    t = ctx.wrap_socket(s, server_hostname=HOST)
    req = f"GET {path} HTTP/1.1\r\nHost: {HOST}:8443\r\n"
    if auth != "-":
        req += f"Authorization: {auth}\r\n"
    req = (req + "\r\n").encode()
    lat, buf = [], b""
    for i in range(warm + n):
        t0 = time.perf_counter_ns()
        t.sendall(req)
        status, body, buf = response(t, buf)
        t1 = time.perf_counter_ns()
        if b" 200" not in status:
            raise SystemExit(f"request {i}: {status!r} {body[:200]!r}")
        if i >= warm:
            lat.append((t1 - t0) // 1000)
    t.close()
    print(json.dumps({"lat_us": lat}), flush=True)


if __name__ == "__main__":
    main()
