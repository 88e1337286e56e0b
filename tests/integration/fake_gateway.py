#!/usr/bin/python3
"""A hand-built tunnel gateway for relay fault tests (Python standard library only).

Usage: fake_gateway.py --port PORT --ca FILE --cert FILE --key FILE
                       --tunnel NAME --server NAME CASE

Dials the relay's tunnel listener on 127.0.0.1:PORT with the gateway identity
in --cert/--key (mTLS, ALPN airlock-tunnel/1), acts as the HTTP/2 server of
that connection, answers the relay's TunnelControl.Open with a registration
offering --tunnel/--server, waits for the relay's Ack and then runs CASE:

  hb-goaway-one-read   a heartbeat and a GOAWAY in one write: the relay reads
                       both at once, so it queues the heartbeat's Ack and only
                       then learns that it may not open streams any more
  hb-then-goaway       the same with the GOAWAY 0.5 s later (the Ack goes out
                       first)

Then it reads until the relay closes the connection or 5 s pass, and exits 0;
it exits 1 if the relay did not take the registration. Whether the relay
survived is for the caller to check (it is alive, it answers, its log has no
sanitizer report). The last line printed says what happened.
"""
import argparse
import socket
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0, 1, 4, 6, 7
END_STREAM, ACK, END_HEADERS = 1, 1, 4


def varint(n):
    out = b""
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


def field(num, wire_type, payload):
    key = varint((num << 3) | wire_type)
    if wire_type == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def text(num, s):
    return field(num, 2, s.encode())


def grpc_message(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def literal(name, value):  # literal header field without indexing, new name
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def control_message(seq, kind_field, body):
    # TunnelControlMessage: seq = 1, time_ms = 2, registration = 10, heartbeat = 11
    return field(1, 0, seq) + field(2, 0, int(time.time() * 1000)) + field(kind_field, 2, body)


class Conn:
    def __init__(self, args):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(args.ca)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["airlock-tunnel/1"])
        raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        self.tls = ctx.wrap_socket(raw)
        if self.tls.selected_alpn_protocol() != "airlock-tunnel/1":
            raise SystemExit("ALPN: %r" % self.tls.selected_alpn_protocol())
        self.buf = b""

    def send(self, data):
        self.tls.sendall(data)

    def read_until(self, want, timeout=10):
        """Reads frames (acknowledging SETTINGS and PING) until want(frame) is
        true for one; returns it. Raises EOFError when the relay closes."""
        self.tls.settimeout(timeout)
        while True:
            if self.buf.startswith(PREFACE):
                self.buf = self.buf[len(PREFACE):]
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                     self.buf[9:9 + n])
                self.buf = self.buf[9 + n:]
                if f[0] == SETTINGS and not f[1] & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                if f[0] == PING and not f[1] & ACK:
                    self.send(frame(PING, ACK, 0, f[3]))
                if want(f):
                    return f
            d = self.tls.recv(65536)
            if not d:
                raise EOFError
            self.buf += d


def main():
    ap = argparse.ArgumentParser()
    for o in ("--ca", "--cert", "--key", "--tunnel", "--server"):
        ap.add_argument(o, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("case", choices=["hb-goaway-one-read", "hb-then-goaway"])
    args = ap.parse_args()

    c = Conn(args)
    c.send(frame(SETTINGS, 0, 0))
    # the relay opens TunnelControl.Open on stream 1 and ends its request side
    try:
        c.read_until(lambda f: f[0] == DATA and f[2] == 1 and f[1] & END_STREAM)
    except (EOFError, OSError) as e:
        print("the relay never opened the control stream: %r" % e)
        return 1
    offer = text(1, args.tunnel) + text(2, args.server)
    # TunnelRegistration: gateway_id, gateway_version, instance_id, tunnels,
    # max_concurrent_streams, heartbeat_interval_ms, connection_index
    reg = (text(1, "gw-fake") + text(2, "0-fake") + text(3, "fake-1") + field(4, 2, offer) +
           field(5, 0, 100) + field(6, 0, 1000) + field(7, 0, 0))
    head = b"\x88" + literal(b"content-type", b"application/grpc")  # :status 200
    c.send(frame(HEADERS, END_HEADERS, 1, head) +
           frame(DATA, 0, 1, grpc_message(control_message(1, 10, reg))))
    # the relay acknowledges the registration on a stream of its own
    try:
        ack = c.read_until(lambda f: f[0] == DATA and f[2] > 1 and f[1] & END_STREAM)
    except (EOFError, OSError) as e:
        print("no Ack for the registration: %r" % e)
        return 1
    trailers = (b"\x88" + literal(b"content-type", b"application/grpc") +
                literal(b"grpc-status", b"0"))
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, ack[2], trailers))
    time.sleep(0.3)

    heartbeat = grpc_message(control_message(2, 11, field(1, 0, 0)))
    goaway = frame(GOAWAY, 0, 0, struct.pack(">II", 0x7FFFFFFF, 0))
    if args.case == "hb-goaway-one-read":
        c.send(frame(DATA, 0, 1, heartbeat) + goaway)
    else:
        c.send(frame(DATA, 0, 1, heartbeat))
        time.sleep(0.5)
        c.send(goaway)
    try:
        c.read_until(lambda f: False, timeout=5)
    except EOFError:
        end = "closed by the relay"
    except (OSError, ssl.SSLError):
        end = "still open after 5 s"
    print("%s: registered, heartbeat and GOAWAY sent; connection %s" % (args.case, end))
    return 0


if __name__ == "__main__":
    sys.exit(main())
