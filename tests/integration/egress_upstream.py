"""A test upstream for the egress proxy checks (egress.sh, tests/bench/egress.sh): an HTTPS
(and plain HTTP) server with its own test CA's certificate, run inside a network namespace
the test makes, reached by the proxy over a veth pair.

  /api      200 {"ok": true, ...} when the request carries the real token in
            "Authorization: Bearer <token>", else 401 (the token comes from --token-file;
            a Basic form "Authorization: Basic base64(user:token)" is accepted on /basic)
  /echo     200, echoes every request header and the body back (body and an X-Echo-Auth
            response header), so a proxy that did not scrub responses would hand the token
            to the client
  /public   200 "public", no token needed (tunnel checks, the benchmark)
  anything  404
Every request is logged (one JSON line: method, path, host, sni, auth = "token" / "none" /
"other"; never a header's value) to --log, so the test can tell which requests reached the
upstream at all. Keep-alive on both. Runs with /usr/bin/python3; stops on SIGTERM.
"""

import argparse
import base64
import http.server
import json
import signal
import socket
import socketserver
import ssl
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--addr", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8443)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--quiet", action="store_true", help="no request log (benchmark)")
    a = ap.parse_args()
    token = open(a.token_file, "rb").read().strip().decode()
    log = open(a.log, "a", buffering=1)
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "egress-test-upstream"

        def log_message(self, *args):
            pass

        wbufsize = 65536  # one write per response (handle_one_request flushes)

        def setup(self):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # the TLS handshake runs in this connection's thread, not in the accept loop
            if getattr(self.server, "ctx", None):
                self.request.settimeout(30)
                self.request = self.server.ctx.wrap_socket(self.request, server_side=True)
                self.request.settimeout(None)
            super().setup()

        def auth_kind(self):
            v = self.headers.get("Authorization", "")
            if not v:
                return "none"
            if v == f"Bearer {token}":
                return "token"
            if v.startswith("Basic "):
                try:
                    user, _, pw = base64.b64decode(v[6:]).decode().partition(":")
                    if pw == token:
                        return "basic-token"
                except Exception:
                    pass
            return "other"

        def body(self):
            n = int(self.headers.get("Content-Length", "0") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(n) if n else b""

        def send(self, code, data, ctype="application/json", extra=()):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self):
            body = self.body()
            kind = self.auth_kind()
            sni = getattr(self.connection, "sni", "") if isinstance(self.connection,
                                                                     ssl.SSLSocket) else ""
            if not a.quiet:
                with lock:
                    log.write(json.dumps({"method": self.command, "path": self.path,
                                          "host": self.headers.get("Host", ""), "sni": sni,
                                          "auth": kind}) + "\n")
            path = self.path.split("?", 1)[0]
            if path == "/public":
                self.send(200, b"public\n", "text/plain")
            elif path == "/api":
                if kind != "token":
                    self.send(401, b'{"error": "missing or wrong token"}\n')
                else:
                    self.send(200, json.dumps({"ok": True, "method": self.command,
                                               "bytes": len(body)}).encode() + b"\n")
            elif path == "/basic":
                self.send(200 if kind == "basic-token" else 401,
                          b'{"ok": true}\n' if kind == "basic-token" else b'{"ok": false}\n')
            elif path == "/echo":
                text = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode() + body
                self.send(200, text, "text/plain",
                          [("X-Echo-Auth", self.headers.get("Authorization", ""))])
            else:
                self.send(404, b'{"error": "not found"}\n')

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128
        ctx = None

        def handle_error(self, request, client_address):
            pass  # a client that went away, a failed handshake: nothing to report

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])

    def on_sni(sock, name, _ctx):
        sock.sni = name or ""
    ctx.sni_callback = on_sni
    tls = Server((a.addr, a.port), H)
    tls.ctx = ctx
    servers = [tls]
    if a.http_port:
        servers.append(Server((a.addr, a.http_port), H))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for s in servers:
        s.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
