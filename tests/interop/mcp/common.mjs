// Shared by the MCP test servers and clients (tests/integration/tunnel.sh):
//   - the canary token: the value credstore holds and the gateway injects;
//     servers demand it, clients must never see it in any form;
//   - canaryForms()/scanForms(): every encoding of the canary the relay's
//     scrubber must remove (services/relay/scrub.h), searched in bytes;
//   - recordingFetch(): a fetch that keeps every byte an agent receives
//     (status line, headers, body as delivered), for those scans;
//   - ServerState: what an upstream saw (token right or wrong, headers that
//     the relay must have removed, calls of the never-allowed tool), written
//     to a JSON file after each request so the test can read it;
//   - check(): PASS/FAIL/SKIP lines as every integration suite prints them.
// The canary never appears in anything these helpers print.
import fs from 'node:fs';
import http2 from 'node:http2';
import { Readable } from 'node:stream';

export function readSecretFile(path) {
  const v = fs.readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  if (v.length < 8) throw new Error(`${path}: a secret of at least 8 characters is needed`);
  return v;
}

// The canary from $CANARY_FILE (a 0600 file written by the test).
export function loadCanary() {
  const f = process.env.CANARY_FILE;
  if (!f) throw new Error('CANARY_FILE is not set');
  return readSecretFile(f);
}

// RFC 3986 percent-encoding: every byte outside "unreserved" as %XX.
export function percentEncode(s, lower = false) {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~]/.test(c)) out += c;
    else {
      const h = b.toString(16).padStart(2, '0');
      out += '%' + (lower ? h : h.toUpperCase());
    }
  }
  return out;
}

// JSON string escaping without the quotes; slash = true writes '/' as '\/'.
export function jsonEscape(s, slash = false) {
  const j = JSON.stringify(s).slice(1, -1);
  return slash ? j.replace(/\//g, '\\/') : j;
}

// base64 (std or url alphabet) of the value preceded by `align` bytes.
export function base64At(value, align, url = false, pad = true) {
  const prefix = Buffer.from('\x01\x02'.slice(0, align), 'latin1');
  let b = Buffer.concat([prefix, Buffer.from(value, 'utf8')]).toString(url ? 'base64url' : 'base64');
  if (url && pad) while (b.length % 4) b += '=';
  if (!pad) b = b.replace(/=+$/, '');
  return b;
}

// The part of base64At(value, align) that depends on the value's bytes only
// (the characters shared with neighbouring bytes left out): what any base64
// text containing the value at that alignment must contain.
function base64Core(value, align, url) {
  const n = Buffer.byteLength(value, 'utf8');
  const full = base64At(value, align, url, false);
  return full.slice(Math.ceil((8 * align) / 6), Math.floor((8 * (align + n)) / 6));
}

// Every form of value the scrubber must remove, as {name, needle, ci}
// (ci: match case-insensitively).
export function canaryForms(value) {
  const forms = [{ name: 'raw', needle: value, ci: false }];
  forms.push({ name: 'hex', needle: Buffer.from(value, 'utf8').toString('hex'), ci: true });
  for (const align of [0, 1, 2]) {
    forms.push({ name: `base64@${align}`, needle: base64Core(value, align, false), ci: false });
    forms.push({ name: `base64url@${align}`, needle: base64Core(value, align, true), ci: false });
  }
  forms.push({ name: 'percent', needle: percentEncode(value), ci: true });
  forms.push({ name: 'json', needle: jsonEscape(value), ci: false });
  forms.push({ name: 'json-slash', needle: jsonEscape(value, true), ci: false });
  // keep only forms that differ from the raw value (an all-alphanumeric
  // canary would make percent/json equal to raw: still searched once)
  const seen = new Set();
  return forms.filter((f) => {
    const k = (f.ci ? 'i:' : 's:') + (f.ci ? f.needle.toLowerCase() : f.needle);
    if (seen.has(k)) return false;
    seen.add(k);
    return f.needle.length >= 8;
  });
}

// What a hostile upstream can make of the token it received (and the whole
// header value), as [name, text]: the encodings canaryForms() must catch.
export function encodedForms(token, header = `Bearer ${token}`) {
  const hex = Buffer.from(token, 'utf8').toString('hex');
  const f = [['raw', token], ['header', header], ['hex', hex], ['HEX', hex.toUpperCase()]];
  for (const a of [0, 1, 2]) {
    f.push([`b64-${a}`, base64At(token, a)]);
    f.push([`b64nopad-${a}`, base64At(token, a, false, false)]);
    f.push([`b64url-${a}`, base64At(token, a, true, false)]);
    f.push([`b64urlpad-${a}`, base64At(token, a, true, true)]);
  }
  f.push(['pct', percentEncode(token)], ['pctlower', percentEncode(token, true)]);
  f.push(['json', jsonEscape(token)], ['jsonslash', jsonEscape(token, true)]);
  return f;
}

// Names of the forms found in buf (Buffer or string).
export function scanForms(buf, forms) {
  const s = Buffer.isBuffer(buf) ? buf.toString('latin1') : Buffer.from(buf, 'utf8').toString('latin1');
  const lower = s.toLowerCase();
  const found = [];
  for (const f of forms) {
    const needle = Buffer.from(f.needle, 'utf8').toString('latin1');
    if (f.ci ? lower.includes(needle.toLowerCase()) : s.includes(needle)) found.push(f.name);
  }
  return found;
}

// A fetch that records every byte received: for each response the status
// line, every header (name: value) and each body chunk as the caller reads
// it. all() returns one Buffer of everything so far.
export function recordingFetch(inner = globalThis.fetch) {
  const chunks = [];
  const log = [];
  async function rfetch(url, init) {
    const res = await inner(url, init);
    const head = [`HTTP ${res.status} ${res.statusText}`];
    res.headers.forEach((v, k) => head.push(`${k}: ${v}`));
    chunks.push(Buffer.from(head.join('\r\n') + '\r\n\r\n', 'utf8'));
    const entry = { url: String(url), method: (init && init.method) || 'GET', status: res.status,
      headers: Object.fromEntries(res.headers.entries()), bytes: 0, body: [],
      request_headers: Object.fromEntries(new Headers(init && init.headers).entries()) };
    delete entry.request_headers.authorization;
    log.push(entry);
    if (!res.body) return res;
    const tap = new TransformStream({
      transform(chunk, ctl) {
        const b = Buffer.from(chunk);
        chunks.push(b);
        if (entry.bytes < 65536) entry.body.push(b);
        entry.bytes += chunk.byteLength;
        ctl.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(tap), {
      status: res.status, statusText: res.statusText, headers: res.headers,
    });
  }
  rfetch.all = () => Buffer.concat(chunks);
  rfetch.log = log;
  return rfetch;
}

// A fetch over HTTP/2 (node:http2, TLS with ALPN h2, one connection per
// origin): what undici's fetch does not do on Node 20. Enough for the MCP
// SDK transports: method, headers, string/bytes body, abort signal, streamed
// response body. close() ends the connections.
const NO_BODY = new Set([101, 204, 205, 304]);
export function h2fetch(opts = {}) {
  const sessions = new Map();
  function session(origin) {
    let s = sessions.get(origin);
    if (!s || s.closed || s.destroyed) {
      s = http2.connect(origin, opts);
      s.on('error', () => {}); // surfaces on the streams
      sessions.set(origin, s);
    }
    return s;
  }
  async function f(url, init = {}) {
    const u = new URL(url);
    const method = init.method || 'GET';
    const headers = { ':method': method, ':path': u.pathname + u.search };
    new Headers(init.headers).forEach((v, k) => {
      if (k !== 'host' && k !== 'connection') headers[k] = v;
    });
    const body = init.body === undefined || init.body === null ? null
      : Buffer.from(typeof init.body === 'string' ? init.body : new Uint8Array(init.body));
    const req = session(u.origin).request(headers, { endStream: !body });
    if (body) req.end(body);
    if (init.signal) {
      if (init.signal.aborted) req.close(http2.constants.NGHTTP2_CANCEL);
      else init.signal.addEventListener('abort', () => req.close(http2.constants.NGHTTP2_CANCEL));
    }
    return new Promise((resolve, reject) => {
      req.once('error', reject);
      req.once('close', () => reject(new Error(`HTTP/2 stream closed (code ${req.rstCode})`)));
      req.once('response', (h) => {
        const status = h[':status'];
        const rh = new Headers();
        for (const [k, v] of Object.entries(h)) {
          if (!k.startsWith(':')) rh.append(k, Array.isArray(v) ? v.join(', ') : String(v));
        }
        const rbody = NO_BODY.has(status) || method === 'HEAD' ? null : Readable.toWeb(req);
        if (!rbody) req.resume();
        resolve(new Response(rbody, { status, headers: rh }));
      });
    });
  }
  f.close = () => {
    for (const s of sessions.values()) s.close();
  };
  return f;
}

// Headers the relay must remove before a request reaches an upstream.
const STRIPPED = /^(airlock-|x-forwarded-|forwarded$|x-real-ip$|via$|proxy-authorization$)/i;

// What an upstream saw, rewritten to `file` (JSON) after every change.
export class ServerState {
  constructor(file, canary) {
    this.file = file;
    this.expected = `Bearer ${canary}`;
    this.s = { requests: 0, authorized: 0, unauthorized: 0, agent_key_seen: 0,
      stripped_headers_seen: [], accept_encoding: [], forbidden_calls: 0, calls: {},
      methods: {} };
    this.save();
  }

  // Checks the Authorization header of a Node request; true = the canary.
  authorize(req) {
    const a = req.headers.authorization || '';
    this.s.requests++;
    for (const name of Object.keys(req.headers)) {
      if (STRIPPED.test(name) && !this.s.stripped_headers_seen.includes(name)) {
        this.s.stripped_headers_seen.push(name);
      }
    }
    const ae = req.headers['accept-encoding'];
    if (ae !== undefined && !this.s.accept_encoding.includes(ae)) this.s.accept_encoding.push(ae);
    if (/^Bearer rk_/.test(a)) this.s.agent_key_seen++;
    const ok = a === this.expected;
    if (ok) this.s.authorized++;
    else this.s.unauthorized++;
    this.save();
    return ok;
  }

  call(name) {
    this.s.calls[name] = (this.s.calls[name] || 0) + 1;
    if (name === 'forbidden') this.s.forbidden_calls++;
    this.save();
  }

  method(m) {
    this.s.methods[m] = (this.s.methods[m] || 0) + 1;
    this.save();
  }

  save() {
    if (!this.file) return;
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.s));
    fs.renameSync(tmp, this.file);
  }
}

// 401 for a request without the right token (the gateway did not inject it).
export function unauthorized(res) {
  res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: null,
    error: { code: -32001, message: 'missing or wrong bearer token' } }));
}

export async function readBody(req, max = 8 << 20) {
  const parts = [];
  let n = 0;
  for await (const c of req) {
    n += c.length;
    if (n > max) throw new Error('request body too large');
    parts.push(c);
  }
  return Buffer.concat(parts);
}

// Prints "listening PORT" once the server listens (the test reads it).
export function listen(server, port = Number(process.env.PORT || 0)) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, process.env.HOST || '127.0.0.1', () => {
      const p = server.address().port;
      process.stdout.write(`listening ${p}\n`);
      resolve(p);
    });
  });
}

// ---- checks: PASS name / FAIL name: reason / SKIP name: reason ----

let failures = 0;
let redactions = [];
// Values never to print (the canary, agent keys): replaced in FAIL reasons.
export function redact(...values) {
  redactions = redactions.concat(values.filter((v) => v && v.length >= 8));
}

function clean(msg) {
  let m = msg;
  for (const v of redactions) m = m.split(v).join('[secret]');
  return m;
}

export function failed() {
  return failures;
}

export function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

export async function check(name, fn, timeoutMs = 180000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`check timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const r = await Promise.race([fn(), timeout]);
    if (r && r.skip) console.log(`SKIP ${name}: ${r.skip}`);
    else console.log(`PASS ${name}${r && r.note ? ` (${r.note})` : ''}`);
  } catch (e) {
    failures++;
    const msg = clean(String(e && e.message ? e.message : e)).replace(/\s+/g, ' ').slice(0, 600);
    console.log(`FAIL ${name}: ${msg}`);
    if (e && e.stack) console.error(clean(e.stack));
  } finally {
    clearTimeout(timer);
  }
}

export function readState(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}
