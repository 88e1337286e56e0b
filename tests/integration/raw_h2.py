#!/usr/bin/python3
"""A hand-built HTTP/2 + gRPC client for bad-input tests (Python standard library only).

Usage: raw_h2.py --port PORT [--tls --ca FILE [--cert FILE --key FILE]] CASE

Runs one CASE against a gRPC server on 127.0.0.1:PORT and exits 0 when the
server behaved as a correct server must, 1 otherwise; the last line printed
says what happened. Cases:

  ok                   a proper unary Echo call: :status 200, grpc-status 0, echo intact
  bad-preface          garbage instead of the connection preface -> connection closed
  http1-request        an HTTP/1.1 request on the HTTP/2 port -> connection closed
  truncated-prefix     DATA with 3 bytes then END_STREAM -> grpc-status 13
  over-limit-prefix    a length prefix over the message limit -> grpc-status 8
  invalid-flags        message flag byte 0x02 -> grpc-status 13
  compressed-flag      message flag byte 0x01 (compressed) -> grpc-status 12
  grpc-encoding-gzip   grpc-encoding: gzip -> grpc-status 12
  unknown-method       an unknown method of a known service -> grpc-status 12
  unknown-service      an unknown service -> grpc-status 12
  bad-timeout          malformed grpc-timeout values -> grpc-status 3 each
  wrong-content-type   content-type text/plain -> :status 415
  get-method           :method GET -> :status 405
  no-message           END_STREAM with no message -> a non-OK grpc-status
  two-messages         two messages on a unary call -> a non-OK grpc-status
  header-too-many      150 small headers -> :status 431
  header-too-big       one 20 KiB header value -> :status 431
  server-deadline      grpc-timeout 200m on a slow Echo and on a long Stream -> grpc-status 4
  deadline-while-blocked
                       a long Stream to a client with a zero window and grpc-timeout
                       500m -> grpc-status 4 or RST_STREAM
  zero-window-then-open
                       a 2 MB Stream to a zero window, then the window opens -> all
                       messages, grpc-status 0
  bin-metadata         -bin metadata padded, unpadded and invalid base64
  client-trailers      request trailers (HEADERS with END_STREAM after DATA) -> grpc-status 0
  streams-over-limit   1100 concurrent calls on one connection (limit 1000): the first
                       1000 succeed and the rest are refused, or GOAWAY/close
  limit-boundary       a message of exactly the 4 MiB default limit -> grpc-status 0;
                       one byte more -> grpc-status 8
  early-error-then-data
                       DATA keeps coming after the server failed the call early
                       -> ignored, the connection still serves
  malformed-headers    uppercase names, missing or empty pseudo-headers, connection
                       headers, a 10 KB :path -> each refused (RST_STREAM, 4xx or a
                       non-OK grpc-status), the connection still serves
  disconnect-with-pending-calls
                       slow Echo and Stream calls in flight, then disconnect
  header-flood-count   10000 headers in one block -> 431, RST_STREAM or GOAWAY/close
  header-flood-size    one 1 MiB header value -> 431, RST_STREAM or GOAWAY/close
  continuation-flood   HEADERS without END_HEADERS, then CONTINUATIONs carrying
                       headers, never ending -> connection closed
  continuation-flood-empty
                       the same with empty CONTINUATION frames -> connection closed
  rapid-reset          open and RST_STREAM 5000 streams -> GOAWAY/close or survives
  ping-flood           20000 PINGs without reading -> GOAWAY/close or survives
  frame-too-large      a DATA frame over SETTINGS_MAX_FRAME_SIZE -> connection closed
  data-idle-stream     DATA on a stream never opened -> connection closed
  stalled-reader-disconnect
                       a large Stream with a zero receive window, then disconnect
  half-message-disconnect
                       half a request message, then disconnect
  stalled-peer         a connection that sent half a TLS record or half a preface and
                       stalls does not block a normal call on another connection
  tls-refused          (with --tls) the TLS handshake or the first read must fail:
                       no call succeeds
  plaintext-to-tls     (port is a TLS port) the HTTP/2 preface in plaintext -> closed

RAW_H2_TIMEOUT (seconds, default 30) bounds every wait.
"""

import argparse
import os
import socket
import ssl
import struct
import sys
import time
import urllib.parse

TIMEOUT = float(os.environ.get("RAW_H2_TIMEOUT", "30"))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
H2_ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
             "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
             "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
             "HTTP_1_1_REQUIRED"]
ECHO_PATH = "/airlock.test.v1.TestService/Echo"
STREAM_PATH = "/airlock.test.v1.TestService/Stream"


def h2_error(code):
    return H2_ERRORS[code] if code < len(H2_ERRORS) else f"error 0x{code:x}"


# ---- HPACK (RFC 7541) -------------------------------------------------------

STATIC_TABLE = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""),
    ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""), ("set-cookie", ""),
    ("strict-transport-security", ""), ("transfer-encoding", ""), ("user-agent", ""),
    ("vary", ""), ("via", ""), ("www-authenticate", ""),
]
STATIC_TABLE = [(n.encode(), v.encode()) for n, v in STATIC_TABLE]

# Code lengths of the HPACK Huffman code (RFC 7541 Appendix B) for symbols
# 0..256, one letter each: 'A' = 5 bits ... 'Z' = 30 bits. The code is
# canonical, so the codes follow from the lengths.
_HUFF_LENGTHS = (
    "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDC"
    "DIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQ"
    "SRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ")


def _huffman_table():
    lengths = [ord(c) - ord("A") + 5 for c in _HUFF_LENGTHS]
    assert len(lengths) == 257
    table, code, prev = {}, 0, None
    for sym in sorted(range(257), key=lambda s: (lengths[s], s)):
        if prev is not None:
            code = (code + 1) << (lengths[sym] - lengths[prev])
        table[(lengths[sym], code)] = sym
        prev = sym
    return table


HUFFMAN = _huffman_table()


class HpackError(Exception):
    pass


def huffman_decode(data):
    out, code, n = bytearray(), 0, 0
    for byte in data:
        for i in range(7, -1, -1):
            code = (code << 1) | ((byte >> i) & 1)
            n += 1
            sym = HUFFMAN.get((n, code))
            if sym is not None:
                if sym == 256:
                    raise HpackError("EOS in Huffman string")
                out.append(sym)
                code, n = 0, 0
            elif n > 30:
                raise HpackError("bad Huffman code")
    if n > 7 or code != (1 << n) - 1:
        raise HpackError("bad Huffman padding")
    return bytes(out)


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def hpack_encode(headers):
    return b"".join(hpack_literal(n, v) for n, v in headers)


class HpackDecoder:
    def __init__(self):
        self.dynamic = []
        self.size = 0
        self.max_size = 4096

    def _evict(self):
        while self.size > self.max_size and self.dynamic:
            n, v = self.dynamic.pop()
            self.size -= 32 + len(n) + len(v)

    def _entry(self, index):
        if index == 0:
            raise HpackError("index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        i = index - len(STATIC_TABLE) - 1
        if i >= len(self.dynamic):
            raise HpackError(f"index {index} out of range")
        return self.dynamic[i]

    @staticmethod
    def _int(data, pos, prefix_bits):
        limit = (1 << prefix_bits) - 1
        if pos >= len(data):
            raise HpackError("truncated integer")
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            if pos >= len(data):
                raise HpackError("truncated integer")
            b = data[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos

    def _str(self, data, pos):
        huff = data[pos] & 0x80 if pos < len(data) else 0
        length, pos = self._int(data, pos, 7)
        if pos + length > len(data):
            raise HpackError("truncated string")
        s = data[pos:pos + length]
        return (huffman_decode(s) if huff else bytes(s)), pos + length

    def decode(self, data):
        headers, pos = [], 0
        while pos < len(data):
            b = data[pos]
            if b & 0x80:  # indexed
                index, pos = self._int(data, pos, 7)
                headers.append(self._entry(index))
            elif b & 0x40:  # literal with incremental indexing
                index, pos = self._int(data, pos, 6)
                name, pos = (self._entry(index)[0], pos) if index else self._str(data, pos)
                value, pos = self._str(data, pos)
                headers.append((name, value))
                self.dynamic.insert(0, (name, value))
                self.size += 32 + len(name) + len(value)
                self._evict()
            elif b & 0x20:  # dynamic table size update
                self.max_size, pos = self._int(data, pos, 5)
                self._evict()
            else:  # literal without indexing / never indexed
                index, pos = self._int(data, pos, 4)
                name, pos = (self._entry(index)[0], pos) if index else self._str(data, pos)
                value, pos = self._str(data, pos)
                headers.append((name, value))
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]


# ---- protobuf (just what the test messages need) ------------------------------

def pb_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, value):
    if isinstance(value, int):
        return pb_varint(num << 3) + pb_varint(value)
    if isinstance(value, str):
        value = value.encode()
    return pb_varint((num << 3) | 2) + pb_varint(len(value)) + value


def pb_parse(data):
    """Returns {field: [values]} (varints as int, length-delimited as bytes)."""
    out, pos = {}, 0

    def varint():
        nonlocal pos
        v, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v
    while pos < len(data):
        key = varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            val = varint()
        elif wt == 2:
            n = varint()
            val = bytes(data[pos:pos + n])
            pos += n
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(val)
    return out


def grpc_frame(msg, flags=0):
    return bytes([flags]) + struct.pack(">I", len(msg)) + msg


def echo_request(message="", delay_ms=0):
    return pb_field(1, message) + (pb_field(5, delay_ms) if delay_ms else b"")


# ---- HTTP/2 connection ---------------------------------------------------------

class Closed(Exception):
    pass


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = None
        self.trailers = None
        self.data = bytearray()
        self.ended = False
        self.rst = None

    @property
    def done(self):
        return self.ended or self.rst is not None

    def header(self, name):
        for block in (self.trailers, self.headers):
            for n, v in block or []:
                if n == name:
                    return v
        return None

    @property
    def http_status(self):
        for n, v in self.headers or []:
            if n == ":status":
                return v
        return None

    @property
    def grpc_status(self):
        v = self.header("grpc-status")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def grpc_message(self):
        v = self.header("grpc-message")
        return urllib.parse.unquote(v) if v is not None else None

    def messages(self):
        out, buf = [], bytes(self.data)
        while len(buf) >= 5:
            n = struct.unpack(">I", buf[1:5])[0]
            out.append(buf[5:5 + n])
            buf = buf[5 + n:]
        return out

    def describe(self):
        parts = []
        if self.headers is not None:
            parts.append(f":status {self.http_status}")
        if self.grpc_status is not None:
            parts.append(f"grpc-status {self.grpc_status} ({self.grpc_message!r})")
        if self.rst is not None:
            parts.append(f"RST_STREAM {h2_error(self.rst)}")
        if not parts:
            parts.append("no response")
        return ", ".join(parts)


class Conn:
    def __init__(self, port, tls=None, host="127.0.0.1"):
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.authority = f"localhost:{port}"
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(tls["ca"])
            if tls.get("cert"):
                ctx.load_cert_chain(tls["cert"], tls["key"])
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = bytearray()
        self.decoder = HpackDecoder()
        self.streams = {}
        self.next_sid = 1
        self.goaway = None
        self.closed = None  # reason once the server closed the connection
        self.got_settings = False
        self.ping_acks = 0
        self.header_block = None  # (sid, flags of HEADERS, bytearray)
        # send-side flow control (only send_data honours it)
        self.peer_initial_window = 65535
        self.conn_window = 65535
        self.stream_windows = {}

    # sending
    @staticmethod
    def frame(ftype, flags, sid, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
            struct.pack(">I", sid & 0x7FFFFFFF) + payload

    def send(self, data):
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise Closed(f"server stopped reading for {TIMEOUT:.0f}s without closing")
        except (OSError, ssl.SSLError) as e:
            self.closed = self.closed or f"send failed: {e}"
            raise Closed(self.closed)

    def start(self, settings=None, window=1 << 30):
        s = settings if settings is not None else {SETTINGS_ENABLE_PUSH: 0,
                                                   SETTINGS_INITIAL_WINDOW_SIZE: 1 << 30}
        payload = b"".join(struct.pack(">HI", k, v) for k, v in s.items())
        out = PREFACE + self.frame(SETTINGS, 0, 0, payload)
        if window:
            out += self.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window))
        self.send(out)

    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        self.streams[sid] = Stream(sid)
        return sid

    def request_headers(self, path, extra=(), method="POST", ctype="application/grpc"):
        h = [(":method", method), (":scheme", self.scheme), (":path", path),
             (":authority", self.authority)]
        if ctype is not None:
            h.append(("content-type", ctype))
        h.append(("te", "trailers"))
        return h + list(extra)

    def headers_frames(self, sid, block, end_stream=False, max_frame=16384):
        """HEADERS (+ CONTINUATION) frames carrying block, END_HEADERS on the last."""
        chunks = [block[i:i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
        out = bytearray()
        for i, chunk in enumerate(chunks):
            flags = FLAG_END_HEADERS if i == len(chunks) - 1 else 0
            if i == 0:
                out += self.frame(HEADERS, flags | (FLAG_END_STREAM if end_stream else 0), sid, chunk)
            else:
                out += self.frame(CONTINUATION, flags, sid, chunk)
        return bytes(out)

    def data_frames(self, sid, data, end_stream=True, max_frame=16384):
        chunks = [data[i:i + max_frame] for i in range(0, len(data), max_frame)] or [b""]
        return b"".join(self.frame(DATA, FLAG_END_STREAM if end_stream and i == len(chunks) - 1 else 0,
                                   sid, c) for i, c in enumerate(chunks))

    def call(self, path=ECHO_PATH, body=None, headers=None, end_stream=True, **kw):
        """Sends one request; returns its stream id. body: bytes of DATA (None: no DATA)."""
        sid = self.new_sid()
        hdrs = headers if headers is not None else self.request_headers(path, **kw)
        out = self.headers_frames(sid, hpack_encode(hdrs), end_stream=body is None and end_stream)
        if body is not None:
            out += self.data_frames(sid, body, end_stream=end_stream)
        self.send(out)
        return sid

    def send_data(self, sid, data, end_stream=True):
        """DATA within the server's flow-control windows (waits for WINDOW_UPDATE).
        Stops early if the stream ends or the connection closes."""
        st = self.streams[sid]
        pos = 0

        def window():
            return min(self.conn_window, self.stream_windows.get(sid, self.peer_initial_window), 16384)
        while True:
            if st.done or self.closed or self.goaway:
                return
            left = len(data) - pos
            if left and window() <= 0:
                if not self.pump(lambda: window() > 0 or st.done or self.closed is not None):
                    raise Fail(f"no flow-control window for {TIMEOUT:.0f}s with {left} bytes to send")
                continue
            n = min(left, window())
            last = n == left
            self.send(self.frame(DATA, FLAG_END_STREAM if last and end_stream else 0, sid,
                                 data[pos:pos + n]))
            self.conn_window -= n
            self.stream_windows[sid] = self.stream_windows.get(sid, self.peer_initial_window) - n
            pos += n
            if last:
                return

    # receiving
    def _recv(self, deadline):
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ssl.SSLError as e:
                self.closed = f"TLS error: {e.reason or e}"
                return True
            except OSError as e:
                self.closed = f"connection error: {e}"
                return True
            if not chunk:
                self.closed = "connection closed by the server"
                return True
            self.buf += chunk
            return True

    def _next_frame(self, deadline):
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[0:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = bytes(self.buf[9:9 + n])
                    del self.buf[:9 + n]
                    return ftype, flags, sid, payload
            if self.closed or not self._recv(deadline):
                return None

    def _dispatch(self, ftype, flags, sid, payload):
        st = self.streams.get(sid)
        if ftype == SETTINGS:
            if not flags & FLAG_ACK:
                self.got_settings = True
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    if k == SETTINGS_INITIAL_WINDOW_SIZE:
                        for w in self.stream_windows:
                            self.stream_windows[w] += v - self.peer_initial_window
                        self.peer_initial_window = v
                self.send(self.frame(SETTINGS, FLAG_ACK, 0))
        elif ftype == PING:
            if flags & FLAG_ACK:
                self.ping_acks += 1
            else:
                self.send(self.frame(PING, FLAG_ACK, 0, payload))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:].decode("utf-8", "replace"))
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if sid == 0:
                self.conn_window += inc
            else:
                self.stream_windows[sid] = self.stream_windows.get(sid, self.peer_initial_window) + inc
        elif ftype == RST_STREAM:
            if st:
                st.rst = struct.unpack(">I", payload[:4])[0]
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                pos, end = 0, len(payload)
                if flags & FLAG_PADDED:
                    end -= payload[0]
                    pos = 1
                if flags & FLAG_PRIORITY:
                    pos += 5
                self.header_block = (sid, flags, bytearray(payload[pos:end]))
            elif self.header_block:
                self.header_block[2].extend(payload)
            if flags & FLAG_END_HEADERS and self.header_block:
                hsid, hflags, block = self.header_block
                self.header_block = None
                fields = self.decoder.decode(bytes(block))
                hst = self.streams.get(hsid)
                if hst:
                    if hst.headers is None:
                        hst.headers = fields
                    else:
                        hst.trailers = fields
                    if hflags & FLAG_END_STREAM:
                        hst.ended = True
        elif ftype == DATA:
            pos, end = 0, len(payload)
            if flags & FLAG_PADDED:
                end -= payload[0]
                pos = 1
            if st:
                st.data += payload[pos:end]
                if flags & FLAG_END_STREAM:
                    st.ended = True
            if payload:
                inc = struct.pack(">I", len(payload))
                out = self.frame(WINDOW_UPDATE, 0, 0, inc)
                if st and not st.done:
                    out += self.frame(WINDOW_UPDATE, 0, sid, inc)
                self.send(out)

    def pump(self, until=lambda: False, timeout=TIMEOUT):
        """Reads frames until until() holds (True), the connection closes or the
        timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while not until():
            f = self._next_frame(deadline)
            if f is None:
                return until()
            try:
                self._dispatch(*f)
            except Closed:
                pass
        return True

    def wait_stream(self, sid, timeout=TIMEOUT):
        st = self.streams[sid]
        self.pump(lambda: st.done or self.goaway is not None and sid > self.goaway[0], timeout)
        return st

    def wait_closed(self, timeout=TIMEOUT):
        """True once the server closed the connection."""
        self.pump(lambda: self.closed is not None, timeout)
        return self.closed is not None

    def describe_close(self):
        parts = []
        if self.goaway:
            parts.append(f"GOAWAY {h2_error(self.goaway[1])}"
                         + (f" ({self.goaway[2]})" if self.goaway[2] else ""))
        if self.closed:
            parts.append(self.closed)
        return ", ".join(parts) or "connection open"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- cases -----------------------------------------------------------------------

class Fail(Exception):
    pass


def connect(args, start=True, **kw):
    c = Conn(args.port, tls=args.tls_opts)
    if start:
        c.start(**kw)
    return c


def expect_grpc(st, codes, what):
    codes = codes if isinstance(codes, (list, tuple, set)) else [codes]
    if st.http_status != "200" or st.grpc_status not in codes:
        raise Fail(f"{what}: got {st.describe()}, want :status 200 and grpc-status "
                   + " or ".join(map(str, codes)))
    return f"{what}: {st.describe()}"


def expect_closed(c, what):
    if not c.wait_closed():
        raise Fail(f"{what}: connection still open after {TIMEOUT:.0f}s ({c.describe_close()})")
    return f"{what}: {c.describe_close()}"


def case_ok(args):
    c = connect(args)
    sid = c.call(body=grpc_frame(echo_request("probe ✓")))
    st = c.wait_stream(sid)
    detail = expect_grpc(st, 0, "Echo")
    msgs = st.messages()
    if len(msgs) != 1 or pb_parse(msgs[0]).get(1) != ["probe ✓".encode()]:
        raise Fail(f"Echo reply not intact: {msgs!r}")
    if (st.header("content-type") or "").split(";")[0] != "application/grpc":
        raise Fail(f"content-type {st.header('content-type')!r}")
    c.close()
    return detail


def case_bad_preface(args):
    c = connect(args, start=False)
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + bytes(range(256)) * 2)
    return expect_closed(c, "garbage preface")


def case_http1_request(args):
    c = connect(args, start=False)
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
    return expect_closed(c, "HTTP/1.1 request")


def case_truncated_prefix(args):
    c = connect(args)
    st = c.wait_stream(c.call(body=b"\x00\x00\x00"))
    return expect_grpc(st, 13, "3-byte message")


def case_over_limit_prefix(args):
    c = connect(args)
    # 256 MiB announced (the limit is at most 4 MiB here), a few bytes sent, no END_STREAM:
    # the server knows from the prefix alone.
    st = c.wait_stream(c.call(body=b"\x00" + struct.pack(">I", 256 << 20) + b"abcdef", end_stream=False))
    return expect_grpc(st, 8, "256 MiB length prefix")


def case_invalid_flags(args):
    c = connect(args)
    st = c.wait_stream(c.call(body=grpc_frame(echo_request("x"), flags=0x02)))
    return expect_grpc(st, 13, "flag byte 0x02")


def case_compressed_flag(args):
    c = connect(args)
    st = c.wait_stream(c.call(body=grpc_frame(echo_request("x"), flags=0x01)))
    return expect_grpc(st, 12, "compressed flag")


def case_grpc_encoding_gzip(args):
    c = connect(args)
    st = c.wait_stream(c.call(body=grpc_frame(b"\x1f\x8b", flags=0x01), extra=[("grpc-encoding", "gzip")]))
    return expect_grpc(st, 12, "grpc-encoding gzip")


def case_unknown_method(args):
    c = connect(args)
    st = c.wait_stream(c.call(path="/airlock.test.v1.TestService/NoSuchMethod", body=grpc_frame(b"")))
    return expect_grpc(st, 12, "unknown method")


def case_unknown_service(args):
    c = connect(args)
    st = c.wait_stream(c.call(path="/no.such.Service/Echo", body=grpc_frame(b"")))
    return expect_grpc(st, 12, "unknown service")


def case_bad_timeout(args):
    c = connect(args)
    out = []
    for value in ["abc", "123456789S", "10x", "-1S", "S", "1.5S", "10 S"]:
        st = c.wait_stream(c.call(body=grpc_frame(echo_request("x")), extra=[("grpc-timeout", value)]))
        out.append(expect_grpc(st, 3, f"grpc-timeout {value!r}"))
    # well-formed values still work on the same connection
    for value in ["99999999n", "1H", "5S", "100m"]:
        st = c.wait_stream(c.call(body=grpc_frame(echo_request("x")), extra=[("grpc-timeout", value)]))
        out.append(expect_grpc(st, 0, f"grpc-timeout {value!r}"))
    return "; ".join(out[:2]) + "; ..."


def case_wrong_content_type(args):
    c = connect(args)
    st = c.wait_stream(c.call(body=grpc_frame(echo_request("x")), ctype="text/plain"))
    if st.http_status != "415":
        raise Fail(f"content-type text/plain: got {st.describe()}, want :status 415")
    c2 = connect(args)
    st = c2.wait_stream(c2.call(body=grpc_frame(echo_request("x")), ctype=None))
    if st.http_status != "415":
        raise Fail(f"no content-type: got {st.describe()}, want :status 415")
    # application/grpc+proto and parameters are valid
    for ct in ["application/grpc+proto", "application/grpc; charset=utf-8"]:
        st = c2.wait_stream(c2.call(body=grpc_frame(echo_request("x")), ctype=ct))
        expect_grpc(st, 0, f"content-type {ct}")
    return "text/plain and none: :status 415"


def case_get_method(args):
    c = connect(args)
    st = c.wait_stream(c.call(method="GET", body=None))
    if st.http_status != "405":
        raise Fail(f"GET: got {st.describe()}, want :status 405")
    return f"GET: {st.describe()}"


def case_no_message(args):
    c = connect(args)
    st = c.wait_stream(c.call(body=None))
    if st.grpc_status in (None, 0):
        raise Fail(f"unary call without a message: got {st.describe()}, want a non-OK grpc-status")
    return f"no message: {st.describe()}"


def case_two_messages(args):
    c = connect(args)
    st = c.wait_stream(c.call(body=grpc_frame(echo_request("a")) + grpc_frame(echo_request("b"))))
    if st.grpc_status in (None, 0):
        raise Fail(f"two messages on a unary call: got {st.describe()}, want a non-OK grpc-status")
    return f"two messages: {st.describe()}"


def case_header_too_many(args):
    c = connect(args)
    hdrs = c.request_headers(ECHO_PATH) + [(f"x-h{i}", "v") for i in range(150)]
    st = c.wait_stream(c.call(headers=hdrs, body=grpc_frame(echo_request("x"))))
    if st.http_status != "431":
        raise Fail(f"150 headers: got {st.describe()}, want :status 431")
    return f"150 headers: {st.describe()}"


def case_header_too_big(args):
    c = connect(args)
    hdrs = c.request_headers(ECHO_PATH) + [("x-big", "v" * 20000)]
    st = c.wait_stream(c.call(headers=hdrs, body=grpc_frame(echo_request("x"))))
    if st.http_status != "431":
        raise Fail(f"20 KiB header: got {st.describe()}, want :status 431")
    return f"20 KiB header: {st.describe()}"


def case_server_deadline(args):
    c = connect(args)
    a = c.call(body=grpc_frame(echo_request("slow", delay_ms=60000)), extra=[("grpc-timeout", "200m")])
    b = c.call(path=STREAM_PATH, body=grpc_frame(pb_field(1, 1000000) + pb_field(2, 50)),
               extra=[("grpc-timeout", "200m")])
    out = []
    for sid, what in ((a, "slow Echo"), (b, "long Stream")):
        st = c.wait_stream(sid)
        out.append(expect_grpc(st, 4, what))
    return "; ".join(out)


def case_deadline_while_blocked(args):
    c = connect(args, settings={SETTINGS_ENABLE_PUSH: 0, SETTINGS_INITIAL_WINDOW_SIZE: 0}, window=0)
    sid = c.call(path=STREAM_PATH, body=grpc_frame(pb_field(1, 100) + pb_field(3, 1 << 20)),
                 extra=[("grpc-timeout", "500m")])
    st = c.wait_stream(sid)
    if st.grpc_status == 4 or st.rst is not None:
        return f"blocked Stream past its deadline: {st.describe()}"
    raise Fail(f"blocked Stream past its deadline: got {st.describe()}, want grpc-status 4 or RST_STREAM")


def case_zero_window_then_open(args):
    c = connect(args, settings={SETTINGS_ENABLE_PUSH: 0, SETTINGS_INITIAL_WINDOW_SIZE: 0}, window=0)
    n, size = 20, 100 * 1024
    sid = c.call(path=STREAM_PATH, body=grpc_frame(pb_field(1, n) + pb_field(3, size)))
    st = c.streams[sid]
    c.pump(lambda: st.headers is not None, timeout=TIMEOUT)
    c.pump(timeout=0.5)
    if st.data:
        raise Fail(f"{len(st.data)} bytes of DATA arrived through a zero window")
    c.send(c.frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 1 << 30))
           + c.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
    c.wait_stream(sid)
    detail = expect_grpc(st, 0, "Stream after the window opened")
    msgs = st.messages()
    if len(msgs) != n:
        raise Fail(f"{len(msgs)} of {n} messages")
    for i, m in enumerate(msgs):
        f = pb_parse(m)
        if f.get(1, [0])[0] != i or len(f.get(2, [b""])[0]) != size:
            raise Fail(f"message {i} wrong: seq {f.get(1)}, {len(f.get(2, [b''])[0])} bytes")
    return detail + f", {n} messages"


def case_bin_metadata(args):
    c = connect(args)
    out = []
    for value, want in (("AAE=", b"\x00\x01"), ("AAE", b"\x00\x01"), ("AAEC", b"\x00\x01\x02"), ("", b"")):
        st = c.wait_stream(c.call(body=grpc_frame(echo_request("x")), extra=[("x-echo-bin", value)]))
        expect_grpc(st, 0, f"x-echo-bin {value!r}")
        got = pb_parse(st.messages()[0]).get(5, [b""])[0]
        if got != want:
            raise Fail(f"x-echo-bin {value!r} came back as {got!r}, want {want!r}")
    out.append("valid values intact")
    for value in ("!!!!", "A", "AA=A", "A===", "AAE=AAE="):
        st = c.wait_stream(c.call(body=grpc_frame(echo_request("x")), extra=[("x-echo-bin", value)]))
        if not st.done:
            raise Fail(f"x-echo-bin {value!r}: no answer")
        out.append(f"{value!r}: {st.describe()}")
    return "; ".join(out)


def case_client_trailers(args):
    c = connect(args)
    sid = c.new_sid()
    c.send(c.headers_frames(sid, hpack_encode(c.request_headers(ECHO_PATH)))
           + c.data_frames(sid, grpc_frame(echo_request("t")), end_stream=False)
           + c.headers_frames(sid, hpack_encode([("x-client-trailer", "1")]), end_stream=True))
    return expect_grpc(c.wait_stream(sid), 0, "request with trailers")


def case_streams_over_limit(args):
    c = connect(args)
    c.pump(lambda: c.got_settings, timeout=TIMEOUT)
    out = bytearray()
    sids = []
    for _ in range(1100):
        sid = c.new_sid()
        sids.append(sid)
        out += c.headers_frames(sid, hpack_encode(c.request_headers(ECHO_PATH)))
        out += c.data_frames(sid, grpc_frame(echo_request("c", delay_ms=3000)))
    c.send(bytes(out))
    c.pump(lambda: all(c.streams[s].done for s in sids) or c.closed is not None, timeout=TIMEOUT * 2)
    ok = sum(1 for s in sids if c.streams[s].grpc_status == 0)
    refused = sum(1 for s in sids if c.streams[s].rst is not None and c.streams[s].grpc_status is None)
    if c.closed or c.goaway:
        # RFC 9113 5.1.2 asks for a stream error; nghttp2 makes it a connection
        # error once the limit is acknowledged. Either way the client misbehaved.
        return f"connection ended: {c.describe_close()} ({ok} OK, {refused} refused)"
    if ok < 1000 or ok + refused != len(sids):
        raise Fail(f"{ok} OK and {refused} refused of {len(sids)}; want 1000 OK and the rest refused")
    st = c.wait_stream(c.call(body=grpc_frame(echo_request("after"))))
    expect_grpc(st, 0, "a call after")
    return f"{ok} OK, {refused} refused, connection still serves"


def case_limit_boundary(args):
    c = connect(args)
    limit = 4 << 20
    out = []
    for size, want in ((limit, 0), (limit + 1, 8)):
        # EchoRequest{payload}: tag 0x12, a 4-byte varint length, the bytes
        payload_len = size - 1 - 4
        msg = b"\x12" + pb_varint(payload_len) + b"p" * payload_len
        assert len(msg) == size
        sid = c.call(body=None, end_stream=False)
        c.send_data(sid, grpc_frame(msg))
        st = c.wait_stream(sid, timeout=TIMEOUT * 2)
        out.append(expect_grpc(st, want, f"{size}-byte message"))
        if want == 0 and (len(st.messages()) != 1 or len(st.messages()[0]) != size):
            raise Fail(f"{size}-byte message: reply is not the same size")
    return "; ".join(out)


def case_early_error_then_data(args):
    c = connect(args)
    sid = c.call(path="/airlock.test.v1.TestService/NoSuchMethod", body=b"", end_stream=False)
    st = c.wait_stream(sid)
    expect_grpc(st, 12, "unknown method")
    try:
        c.send(c.data_frames(sid, b"\x00" * 200000, end_stream=True))
    except Closed:
        raise Fail(f"connection closed after DATA on a finished call: {c.describe_close()}")
    st2 = c.wait_stream(c.call(body=grpc_frame(echo_request("after"))))
    if c.closed or c.goaway:
        raise Fail(f"connection ended: {c.describe_close()}")
    return expect_grpc(st2, 0, "a call after") + f"; first stream {st.describe()}"


def case_malformed_headers(args):
    out = []
    variants = {
        "uppercase name": lambda h: h + [("X-Upper", "v")],
        "no :path": lambda h: [x for x in h if x[0] != ":path"],
        "no :method": lambda h: [x for x in h if x[0] != ":method"],
        "empty :path": lambda h: [x if x[0] != ":path" else (":path", "") for x in h],
        "two :path": lambda h: h[:3] + [(":path", "/x")] + h[3:],
        "pseudo after regular": lambda h: h + [(":foo", "bar")],
        "connection header": lambda h: h + [("connection", "keep-alive")],
        "te: gzip": lambda h: [x if x[0] != "te" else ("te", "gzip") for x in h],
        "10 KB :path": lambda h: [x if x[0] != ":path" else (":path", "/" + "a" * 10000) for x in h],
    }
    for what, fn in variants.items():
        c = connect(args)
        hdrs = fn(c.request_headers(ECHO_PATH))
        st = c.wait_stream(c.call(headers=hdrs, body=grpc_frame(echo_request("x"))))
        if st.grpc_status == 0:
            raise Fail(f"{what}: accepted ({st.describe()})")
        if not st.done and not (c.goaway or c.closed):
            raise Fail(f"{what}: no answer in {TIMEOUT:.0f}s")
        res = st.describe() if st.done else c.describe_close()
        if not (c.goaway or c.closed):
            st2 = c.wait_stream(c.call(body=grpc_frame(echo_request("after"))))
            if st2.grpc_status != 0 and not (c.goaway or c.closed):
                raise Fail(f"{what}: then a good call on the connection got {st2.describe()}")
        out.append(f"{what}: {res}")
        c.close()
    return "; ".join(out)


def case_disconnect_with_pending_calls(args):
    c = connect(args)
    for _ in range(20):
        c.call(body=grpc_frame(echo_request("slow", delay_ms=5000)))
        c.call(path=STREAM_PATH, body=grpc_frame(pb_field(1, 1000000) + pb_field(2, 10)))
    c.pump(lambda: sum(1 for st in c.streams.values() if st.data) >= 20, timeout=TIMEOUT)
    c.close()
    return "40 calls in flight, then disconnected"


def flood_outcome(c, sid, what):
    st = c.wait_stream(sid)
    if st.http_status == "431":
        return f"{what}: :status 431"
    if st.rst is not None:
        return f"{what}: RST_STREAM {h2_error(st.rst)}"
    if c.goaway or c.closed:
        return f"{what}: {c.describe_close()}"
    if st.done:
        raise Fail(f"{what}: accepted ({st.describe()}); want 431, RST_STREAM or GOAWAY")
    raise Fail(f"{what}: no answer in {TIMEOUT:.0f}s")


def case_header_flood_count(args):
    c = connect(args)
    hdrs = c.request_headers(ECHO_PATH) + [(f"x-flood-{i}", "v" * 16) for i in range(10000)]
    try:
        sid = c.call(headers=hdrs, body=grpc_frame(echo_request("x")))
    except Closed:
        return f"10000 headers: closed while sending ({c.describe_close()})"
    return flood_outcome(c, sid, "10000 headers")


def case_header_flood_size(args):
    c = connect(args)
    hdrs = c.request_headers(ECHO_PATH) + [("x-big", "v" * (1 << 20))]
    try:
        sid = c.call(headers=hdrs, body=grpc_frame(echo_request("x")))
    except Closed:
        return f"1 MiB header: closed while sending ({c.describe_close()})"
    return flood_outcome(c, sid, "1 MiB header")


def continuation_flood(args, frame_payload, frames):
    c = connect(args)
    sid = c.new_sid()
    block = hpack_encode(c.request_headers(ECHO_PATH))
    try:
        c.send(c.frame(HEADERS, 0, sid, block))
        batch = c.frame(CONTINUATION, 0, sid, frame_payload) * 500
        for _ in range(frames // 500):
            c.send(batch)
            if c.closed:
                break
    except Closed as e:
        if "stopped reading" in str(e):
            raise Fail(f"CONTINUATION flood: {e}")
        return f"closed while flooding ({c.describe_close()})"
    return expect_closed(c, f"{frames} CONTINUATION frames")


def case_continuation_flood(args):
    return continuation_flood(args, hpack_literal("x-flood", "v" * 100), 20000)


def case_continuation_flood_empty(args):
    return continuation_flood(args, b"", 100000)


def case_rapid_reset(args):
    c = connect(args)
    n = 5000
    out = bytearray()
    sent = 0
    try:
        for i in range(n):
            sid = c.next_sid
            c.next_sid += 2
            if i % 2:
                hdrs = c.request_headers(ECHO_PATH)
                body = grpc_frame(echo_request("r", delay_ms=60000))
            else:
                hdrs = c.request_headers(STREAM_PATH)
                body = grpc_frame(pb_field(1, 1000000) + pb_field(2, 10))
            out += c.headers_frames(sid, hpack_encode(hdrs))
            out += c.data_frames(sid, body)
            out += c.frame(RST_STREAM, 0, sid, struct.pack(">I", 8))  # CANCEL
            if len(out) > 256 * 1024:
                c.send(bytes(out))
                sent = i + 1
                out.clear()
        c.send(bytes(out) + c.frame(PING, 0, 0, b"rrpingok"))
        sent = n
    except Closed:
        return f"closed after {sent} of {n} reset streams ({c.describe_close()})"
    c.pump(lambda: c.ping_acks > 0 or c.goaway is not None)
    if c.goaway or c.closed:
        return f"{n} reset streams: {c.describe_close()}"
    if not c.ping_acks:
        raise Fail(f"{n} reset streams: no PING ACK, no GOAWAY and no close in {TIMEOUT:.0f}s")
    st = c.wait_stream(c.call(body=grpc_frame(echo_request("after"))))
    if st.grpc_status == 0:
        return f"{n} reset streams: connection survived and still serves"
    if c.goaway or c.closed:
        return f"{n} reset streams: {c.describe_close()}"
    raise Fail(f"{n} reset streams: survived, but a call on it got {st.describe()}")


def case_ping_flood(args):
    c = connect(args)
    # Do not read: the server's ACKs pile up unless it defends itself.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    n = 20000
    try:
        batch = b"".join(c.frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(1000))
        for _ in range(n // 1000):
            c.send(batch)
    except Closed as e:
        if "stopped reading" in str(e):
            # It stopped reading because we do not read: that is fine (TCP back-pressure).
            return "server applied back-pressure"
        return f"closed while flooding ({c.describe_close()})"
    c.pump(lambda: c.ping_acks >= n or c.goaway is not None)
    if c.goaway or c.closed:
        return f"PING flood: {c.describe_close()}"
    return f"PING flood: survived, {c.ping_acks} ACKs"


def case_frame_too_large(args):
    c = connect(args)
    sid = c.new_sid()
    c.send(c.headers_frames(sid, hpack_encode(c.request_headers(ECHO_PATH))))
    try:
        c.send(c.frame(DATA, FLAG_END_STREAM, sid, b"\x00" * 20000))  # over the 16384 default
    except Closed:
        return f"closed while sending ({c.describe_close()})"
    return expect_closed(c, "20000-byte DATA frame")


def case_data_idle_stream(args):
    c = connect(args)
    c.send(c.frame(DATA, FLAG_END_STREAM, 7, grpc_frame(b"")))
    return expect_closed(c, "DATA on an idle stream")


def case_stalled_reader_disconnect(args):
    c = connect(args, settings={SETTINGS_ENABLE_PUSH: 0, SETTINGS_INITIAL_WINDOW_SIZE: 0}, window=0)
    sid = c.call(path=STREAM_PATH, body=grpc_frame(pb_field(1, 100) + pb_field(3, 1 << 20)))
    c.pump(lambda: c.streams[sid].headers is not None, timeout=5)
    c.close()
    return "asked for 100 MiB with a zero window, then disconnected"


def case_half_message_disconnect(args):
    c = connect(args)
    c.call(body=b"\x00" + struct.pack(">I", 1000) + b"x" * 100, end_stream=False)
    c.call(path=STREAM_PATH, body=grpc_frame(pb_field(1, 1000000) + pb_field(2, 10)))
    c.pump(timeout=1)
    c.close()
    return "sent half a message and opened a stream, then disconnected"


def case_stalled_peer(args):
    stalled = socket.create_connection(("127.0.0.1", args.port), timeout=TIMEOUT)
    # half a TLS ClientHello record / half the HTTP/2 preface
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03" if args.tls else PREFACE[:10])
    try:
        return "with a stalled connection open: " + case_ok(args)
    finally:
        stalled.close()


def case_tls_refused(args):
    if not args.tls:
        raise Fail("tls-refused needs --tls")
    try:
        c = Conn(args.port, tls=args.tls_opts)
    except (ssl.SSLError, OSError) as e:
        return f"handshake refused: {getattr(e, 'reason', None) or e}"
    # TLS 1.3: the client finishes before the server has checked its certificate;
    # the refusal arrives as an alert on the first read.
    try:
        c.start()
        sid = c.call(body=grpc_frame(echo_request("x")))
    except Closed:
        return f"refused: {c.describe_close()}"
    st = c.wait_stream(sid)
    if st.grpc_status == 0:
        raise Fail("the call succeeded: the server accepted the client certificate")
    if not c.closed:
        raise Fail(f"connection not closed: {st.describe()}, {c.describe_close()}")
    if c.got_settings:
        raise Fail(f"the server spoke HTTP/2 before refusing: {c.describe_close()}")
    return f"refused after the handshake: {c.describe_close()}"


def case_plaintext_to_tls(args):
    c = Conn(args.port, tls=None)
    c.start()
    return expect_closed(c, "plaintext HTTP/2 on the TLS port")


CASES = {name[5:].replace("_", "-"): fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("case", choices=sorted(CASES))
    args = ap.parse_args()
    args.tls_opts = {"ca": args.ca, "cert": args.cert, "key": args.key} if args.tls else None
    try:
        print(CASES[args.case](args))
        return 0
    except Fail as e:
        print(f"{args.case}: {e}")
    except Closed as e:
        print(f"{args.case}: connection closed unexpectedly: {e}")
    except HpackError as e:
        print(f"{args.case}: bad HPACK from the server: {e}")
    except (OSError, ssl.SSLError) as e:
        print(f"{args.case}: {type(e).__name__}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
