// Agent-side checks of airlock-relay + airlock-gateway that need more than
// an SDK client: policy, bad input and faults, canary scrubbing, 1,000
// concurrent streams on one HTTP/2 connection, a gateway killed mid-stream.
// Started by tests/integration/tunnel.sh, which runs the services and passes:
//   AGENT_ORIGIN    https://127.0.0.1:PORT (relay agent listener, TLS)
//   KEYS_DIR        agent keys: key-a (principal dev, corp/*), key-b (team-b,
//                   corp/*), key-all (dev, */*), key-lab (dev, lab/*),
//                   key-expired, key-revoked
//   KEYS_FILE       the relay's keys file (live create/revoke check)
//   CANARY_FILE     the credential value injected by the gateway
//   STATE_DIR       v1.state, v2.state, echo.state of the upstream servers
//   AIRLOCKCTL      airlockctl binary (AIRLOCK_HOME set), RELAY_GRPC its
//                   relay address for `tunnel status`
//   GW_PIDS         "gw-0=PID,gw-1=PID": gateways this script may kill
//   KILLED_FILE     where it writes the gateway_id it killed
//   MAX_HEAD, MAX_BODY   the relay's agents.max_head / max_body
//   ALLOWED_ORIGIN  an Origin on the relay's allow-list
//   PHASE           main (everything but the two below), drain (SIGTERM the
//                   gateway carrying a stream: it finishes; DRAINED_FILE gets
//                   the gateway_id) or kill (SIGKILL it mid-stream;
//                   KILLED_FILE); tunnel.sh restarts the gateway after each
// NODE_EXTRA_CA_CERTS names the dev CA. Prints PASS/FAIL/SKIP lines; exits 1
// if any check failed. No timing assertions: waits are bounded, generous.
import fs from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import zlib from 'node:zlib';
import { execFileSync } from 'node:child_process';
import {
  canaryForms, check, encodedForms, expect, failed, loadCanary, readSecretFile, readState, redact,
  scanForms,
} from './common.mjs';

const env = process.env;
const ORIGIN = new URL(env.AGENT_ORIGIN);
const HOST = ORIGIN.hostname;
const PORT = Number(ORIGIN.port);
const MAX_HEAD = Number(env.MAX_HEAD || 16384);
const MAX_BODY = Number(env.MAX_BODY || 1048576);
const MARK = '[airlock:redacted]';
const canary = loadCanary();
const forms = canaryForms(canary);
const key = (n) => readSecretFile(`${env.KEYS_DIR}/key-${n}`);
const KEY = { a: key('a'), b: key('b'), all: key('all'), lab: key('lab'),
  expired: key('expired'), revoked: key('revoked') };
redact(canary, ...Object.values(KEY));
const state = (n) => readState(`${env.STATE_DIR}/${n}.state`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rpc(method, params, id = 1) {
  return JSON.stringify({ jsonrpc: '2.0', id, method, params });
}
const callEcho = (mode, extra = {}) =>
  rpc('tools/call', { name: 'echo', arguments: { mode, ...extra } });

// ---- HTTP/1.1 over TLS (node:https; bodies are not decoded) ----

function h1(path, { method = 'POST', headers = {}, body, keyName = 'a', auth = true } = {}) {
  const h = { 'content-type': 'application/json', accept: 'application/json, text/event-stream',
    ...headers };
  if (auth && keyName && !('authorization' in h)) h.authorization = `Bearer ${KEY[keyName]}`;
  if (body !== undefined) h['content-length'] = Buffer.byteLength(body);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: HOST, port: PORT, path, method, headers: h, agent: false,
      ALPNProtocols: ['http/1.1'] }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        rawHeaders: res.rawHeaders, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(120000, () => req.destroy(new Error('no answer in 120 s')));
    req.end(body);
  });
}

// ---- HTTP/2 over TLS ----

function h2connect() {
  return new Promise((resolve, reject) => {
    const s = http2.connect(env.AGENT_ORIGIN, { settings: { initialWindowSize: 1 << 20 } });
    s.once('error', reject);
    s.once('remoteSettings', () => {
      s.removeListener('error', reject);
      s.on('error', () => {});
      resolve(s);
    });
  });
}

function h2req(s, path, { method = 'POST', headers = {}, body, keyName = 'a', onData } = {}) {
  const h = { ':method': method, ':path': path, 'content-type': 'application/json',
    accept: 'application/json, text/event-stream', ...headers };
  if (keyName && !('authorization' in h)) h.authorization = `Bearer ${KEY[keyName]}`;
  return new Promise((resolve, reject) => {
    const req = s.request(h, { endStream: body === undefined });
    const parts = [];
    let head = null;
    req.on('response', (rh) => { head = rh; });
    req.on('data', (c) => {
      parts.push(c);
      if (onData) onData(c, req);
    });
    req.on('end', () => resolve({ status: head && head[':status'], headers: head || {},
      body: Buffer.concat(parts), rst: 0 }));
    req.on('close', () => {
      if (req.rstCode) resolve({ status: head && head[':status'], headers: head || {},
        body: Buffer.concat(parts), rst: req.rstCode });
    });
    req.on('error', (e) => {
      if (!req.rstCode) reject(e);
    });
    if (body !== undefined) req.end(body);
  });
}

// ---- raw bytes over TLS (malformed requests, slowloris) ----

function rawTls() {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: HOST, port: PORT, ALPNProtocols: ['http/1.1'] }, () =>
      resolve(sock));
    sock.once('error', reject);
  });
}

// Sends bytes, returns everything received until the peer closes (bounded).
async function rawExchange(bytes, waitMs = 60000) {
  const sock = await rawTls();
  const parts = [];
  return new Promise((resolve) => {
    const done = (why) => {
      clearTimeout(t);
      sock.destroy();
      resolve({ text: Buffer.concat(parts).toString('latin1'), why });
    };
    const t = setTimeout(() => done('timeout'), waitMs);
    sock.on('data', (c) => parts.push(c));
    sock.on('end', () => done('closed'));
    sock.on('error', () => done('closed'));
    sock.write(bytes);
  });
}

const statusOf = (text) => Number((/^HTTP\/1\.1 (\d{3})/.exec(text) || [])[1] || 0);

// ---- assertions ----

function bodyJson(r) {
  try {
    return JSON.parse(r.body.toString('utf8'));
  } catch {
    throw new Error(`status ${r.status}: body is not JSON (${r.body.length} bytes)`);
  }
}

const shortReason = (v) => String(v || '').replace(/^ERROR_REASON_/, '');

// An error made by the relay or gateway (tunnel.proto): status, airlock-error
// header, application/json, JSON-RPC 2.0 error with code and data.airlock_error.
function expectAirlockError(r, status, code, reason) {
  expect(r.status === status, `HTTP status ${r.status}, expected ${status}`);
  const ae = r.headers['airlock-error'];
  expect(ae, 'no airlock-error header');
  if (reason) expect(shortReason(ae) === reason, `airlock-error ${ae}, expected ${reason}`);
  expect(/^application\/json/.test(r.headers['content-type'] || ''),
    `content-type ${r.headers['content-type']}`);
  const b = bodyJson(r);
  expect(b.jsonrpc === '2.0' && b.error && typeof b.error.message === 'string',
    'not a JSON-RPC 2.0 error');
  if (code !== undefined) expect(b.error.code === code, `JSON-RPC code ${b.error.code}, expected ${code}`);
  expect(b.error.data && shortReason(b.error.data.airlock_error) === shortReason(ae),
    'error.data.airlock_error differs from the header');
  return { note: `${r.status} ${ae}` };
}

const PHASE = env.PHASE || 'main';

// The gateway_id and pid of the gateway whose connection carries an open
// stream, from `airlockctl tunnel status`; throws if none is known.
function busyGateway() {
  const pids = Object.fromEntries((env.GW_PIDS || '').split(',').filter(Boolean)
    .map((x) => x.split('=')));
  const st = JSON.parse(execFileSync(env.AIRLOCKCTL, ['tunnel', 'status', '--addr',
    env.RELAY_GRPC, '--tunnel', 'corp', '--json'], { encoding: 'utf8' }));
  const conns = (st.tunnels && st.tunnels[0] && st.tunnels[0].connections) || [];
  const busy = conns.find((x) => Number(x.open_streams) > 0);
  if (!busy || !pids[busy.gateway_id]) {
    throw new Error(`no busy connection of a known gateway in the status (${conns
      .map((x) => `${x.gateway_id}:${x.open_streams}`).join(' ')})`);
  }
  return { id: busy.gateway_id, pid: Number(pids[busy.gateway_id]) };
}

// ---- checks ----

const h2s = await h2connect();

if (PHASE === 'main') {
  await check('route-unknown-tunnel-404', async () =>
    expectAirlockError(await h1('/mcp/nosuch/v1', { body: rpc('tools/list'), keyName: 'all' }),
      404, -32004));

  await check('route-unknown-server-404', async () =>
    expectAirlockError(await h1('/mcp/corp/nosuch', { body: rpc('tools/list'), keyName: 'all' }),
      404, -32004));

  await check('route-not-mcp-404', async () => {
    const r = await h1('/other/path', { method: 'GET', keyName: 'all' });
    expect(r.status === 404, `status ${r.status}`);
  });

  await check('tunnel-without-gateway-503', async () =>
    expectAirlockError(await h1('/mcp/empty/v1', { body: rpc('tools/list'), keyName: 'all' }),
      503, -32003, 'NO_GATEWAY'));

  await check('key-missing-401', async () =>
    expectAirlockError(await h1('/mcp/corp/echo', { body: callEcho('plain'), auth: false }),
      401, -32001));

  await check('key-malformed-401', async () =>
    expectAirlockError(await h1('/mcp/corp/echo', { body: callEcho('plain'),
      headers: { authorization: 'Bearer not-a-key' } }), 401, -32001));

  await check('key-unknown-401', async () => {
    const fake = `rk_${'0'.repeat(16)}.${'ab'.repeat(32)}`;
    // the right id with a wrong secret, too
    const wrong = `${KEY.a.split('.')[0]}.${'cd'.repeat(32)}`;
    const r1 = await h1('/mcp/corp/echo', { body: callEcho('plain'),
      headers: { authorization: `Bearer ${fake}` } });
    expectAirlockError(r1, 401, -32001);
    return expectAirlockError(await h1('/mcp/corp/echo', { body: callEcho('plain'),
      headers: { authorization: `Bearer ${wrong}` } }), 401, -32001);
  });

  await check('key-expired-401', async () =>
    expectAirlockError(await h1('/mcp/corp/echo', { body: callEcho('plain'), keyName: 'expired' }),
      401, -32001));

  await check('key-revoked-401', async () =>
    expectAirlockError(await h1('/mcp/corp/echo', { body: callEcho('plain'), keyName: 'revoked' }),
      401, -32001));

  await check('key-other-route-403', async () =>
    expectAirlockError(await h1('/mcp/corp/echo', { body: callEcho('plain'), keyName: 'lab' }),
      403, -32001));

  await check('key-created-then-revoked-live', async () => {
    const ctl = (args) => execFileSync(env.AIRLOCKCTL, args, { encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'] });
    const k = ctl(['relay', 'keys', 'create', '--file', env.KEYS_FILE, '--principal', 'dev',
      '--routes', 'corp/echo']).trim();
    redact(k);
    const id = k.split('.')[0];
    const use = () => h1('/mcp/corp/echo', { body: callEcho('plain'),
      headers: { authorization: `Bearer ${k}` } });
    let r;
    for (let i = 0; i < 300; i++) { // the relay reloads the file within about a second
      r = await use();
      if (r.status === 200) break;
      await sleep(100);
    }
    expect(r.status === 200, `a new key was not accepted within 30 s (status ${r.status})`);
    ctl(['relay', 'keys', 'revoke', '--file', env.KEYS_FILE, id]);
    for (let i = 0; i < 300; i++) {
      r = await use();
      if (r.status === 401) break;
      await sleep(100);
    }
    return expectAirlockError(r, 401, -32001);
  });

  await check('origin-not-allowed-403', async () =>
    expectAirlockError(await h1('/mcp/corp/echo', { body: callEcho('plain'),
      headers: { origin: 'https://evil.example' } }), 403));

  await check('origin-allowed', async () => {
    const r = await h1('/mcp/corp/echo', { body: callEcho('plain'),
      headers: { origin: env.ALLOWED_ORIGIN || 'https://agents.example' } });
    expect(r.status === 200, `status ${r.status}`);
  });

  await check('agent-headers-stripped', async () => {
    const before = state('echo');
    const r = await h1('/mcp/corp/echo', { body: callEcho('plain'), headers: {
      'x-forwarded-for': '203.0.113.9', forwarded: 'for=203.0.113.9', 'x-real-ip': '203.0.113.9',
      via: '1.1 evil', 'airlock-principal': 'admin', 'airlock-grant': 'AAAA',
      'airlock-request-id': 'spoofed', 'proxy-authorization': 'Basic Zm9vOmJhcg==',
    } });
    expect(r.status === 200, `status ${r.status}`);
    const after = state('echo');
    expect(after.requests > before.requests, 'the request did not reach the upstream');
    expect(after.stripped_headers_seen.length === 0,
      `reached the upstream: ${after.stripped_headers_seen.join(',')}`);
    expect(after.agent_key_seen === 0, "the agent's API key reached the upstream");
    const leaked = Object.keys(r.headers).filter((h) => /^airlock-/.test(h));
    expect(leaked.length === 0, `airlock-* response headers reached the agent: ${leaked.join(',')}`);
  });

  await check('upstream-asked-identity-encoding', async () => {
    const s = state('echo');
    expect(s.accept_encoding.length > 0, 'the upstream saw no Accept-Encoding header');
    expect(s.accept_encoding.every((v) => v.trim() === 'identity'),
      `upstream Accept-Encoding: ${s.accept_encoding.join(' | ')}`);
  });

  await check('oversized-headers-431-h1', async () => {
    const r = await h1('/mcp/corp/echo', { body: callEcho('plain'),
      headers: { 'x-big': 'a'.repeat(MAX_HEAD + 1024) } });
    return expectAirlockError(r, 431, -32600);
  });

  await check('oversized-headers-431-h2', async () => {
    const s = await h2connect();
    try {
      const r = await h2req(s, '/mcp/corp/echo', { body: callEcho('plain'),
        headers: { 'x-big': 'a'.repeat(MAX_HEAD + 1024) } });
      expect(r.status === 431, `status ${r.status} (rst ${r.rst})`);
      return { note: `431 ${r.headers['airlock-error'] || ''}` };
    } finally {
      s.close();
    }
  });

  await check('oversized-body-413-content-length', async () => {
    const big = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call',
      params: { name: 'echo', arguments: { mode: 'plain', pad: 'x'.repeat(MAX_BODY + 1024) } } });
    // raw socket: the relay answers 413 as soon as it reads the head and
    // closes, so a client still writing the body may see EPIPE; the answer
    // is what counts
    const head = `POST /mcp/corp/echo HTTP/1.1\r\nHost: ${HOST}\r\nAuthorization: Bearer ${KEY.a}\r\n`
      + `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(big)}\r\n\r\n`;
    const r = await rawExchange(head + big);
    expect(statusOf(r.text) === 413, `status line: ${r.text.split('\r\n')[0]}`);
    expect(/\r\nairlock-error: (ERROR_REASON_)?TOO_LARGE\r\n/i.test(r.text), "airlock-error: TOO_LARGE header");
    const body = r.text.slice(r.text.indexOf('\r\n\r\n') + 4);
    let j = null;
    try {
      j = JSON.parse(body);
    } catch {
      j = null;
    }
    expect(j && j.error && j.error.code === -32600, 'JSON-RPC error -32600 body');
  });

  await check('oversized-body-413-chunked', async () => {
    const pad = 'x'.repeat(64 * 1024);
    const chunks = [];
    let n = 0;
    chunks.push('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"pad":"');
    while (n < MAX_BODY + 65536) {
      chunks.push(pad);
      n += pad.length;
    }
    chunks.push('"}}}');
    const head = `POST /mcp/corp/echo HTTP/1.1\r\nHost: ${HOST}\r\nAuthorization: Bearer ${KEY.a}\r\n`
      + 'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
    const body = chunks.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('') + '0\r\n\r\n';
    const r = await rawExchange(head + body);
    expect(statusOf(r.text) === 413, `status line: ${r.text.split('\r\n')[0]}`);
  });

  await check('oversized-body-413-h2', async () => {
    const s = await h2connect();
    try {
      const big = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call',
        params: { name: 'echo', arguments: { pad: 'x'.repeat(MAX_BODY + 1024) } } });
      const r = await h2req(s, '/mcp/corp/echo', { body: big });
      expect(r.status === 413, `status ${r.status} (rst ${r.rst})`);
    } finally {
      s.close();
    }
  });

  // each with a valid key, so that the malformation, not the key, is refused
  const A = `Authorization: Bearer ${KEY.a}\r\n`;
  const malformed = {
    'no-colon-header': `POST /mcp/corp/echo HTTP/1.1\r\nHost: x\r\n${A}This is not a header\r\n\r\n`,
    'garbage-request-line': 'FOO BAR\x01BAZ\r\n\r\n',
    'cl-and-te': `POST /mcp/corp/echo HTTP/1.1\r\nHost: x\r\n${A}Content-Length: 5\r\n`
      + 'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'two-content-lengths': `POST /mcp/corp/echo HTTP/1.1\r\nHost: x\r\n${A}Content-Length: 2\r\n`
      + 'Content-Length: 3\r\n\r\n{}',
    'bad-chunk-size': `POST /mcp/corp/echo HTTP/1.1\r\nHost: x\r\n${A}Content-Type: application/json\r\n`
      + 'Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
    'obs-fold': `POST /mcp/corp/echo HTTP/1.1\r\nHost: x\r\n${A}X-A: 1\r\n  folded\r\n\r\n`,
    'http-0.9': 'GET /mcp/corp/echo\r\n\r\n',
  };
for (const [name, bytes] of Object.entries(malformed)) {
    await check(`malformed-http1-${name}-400`, async () => {
      const r = await rawExchange(bytes, 60000);
      const st = statusOf(r.text);
      expect(st === 400 || (name === 'http-0.9' && (st === 400 || st === 505 || r.text === '')),
        `answer: ${r.text.split('\r\n')[0] || '(nothing)'} (${r.why})`);
      expect(r.why === 'closed', 'the connection stayed open after a malformed request');
    });
  }

  await check('relay-serves-after-bad-input', async () => {
    const r = await h1('/mcp/corp/echo', { body: callEcho('plain') });
    expect(r.status === 200, `status ${r.status}`);
  });

  await check('slowloris-cut-at-header-timeout', async () => {
    const sock = await rawTls();
    const budgetMs = 120000;
    const t0 = Date.now();
    let closed = false;
    let got = '';
    sock.on('data', (c) => { got += c.toString('latin1'); });
    sock.on('close', () => { closed = true; });
    sock.on('error', () => { closed = true; });
    sock.write(`POST /mcp/corp/echo HTTP/1.1\r\nHost: ${HOST}\r\n`);
    for (let i = 0; !closed && Date.now() - t0 < budgetMs; i++) {
      await sleep(250);
      if (!closed) sock.write(`X-Slow-${i}: ${'z'.repeat(4)}\r\n`);
    }
    sock.destroy();
    expect(closed, `still open after ${budgetMs / 1000} s of one header line every 250 ms`);
    return { note: `closed after ${((Date.now() - t0) / 1000).toFixed(1)} s${got ? `, answered ${got.split('\r\n')[0]}` : ''}` };
  });

  await check('mcp-batch-rejected-400', async () => {
    const r = await h1('/mcp/corp/echo', { body: `[${callEcho('plain')},${rpc('tools/list', {}, 2)}]` });
    return expectAirlockError(r, 400, -32600);
  });

  await check('mcp-duplicate-key-rejected-400', async () => {
    const r = await h1('/mcp/corp/echo',
      { body: '{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"echo"}}' });
    return expectAirlockError(r, 400);
  });

  await check('mcp-not-json-400', async () =>
    expectAirlockError(await h1('/mcp/corp/echo', { body: '{"jsonrpc":"2.0",' }), 400, -32700));

  await check('mcp-name-mismatch-refused', async () => {
    const before = state('v2').calls.echo || 0;
    const r = await h1('/mcp/corp/v2', { body: rpc('tools/call', { name: 'echo', arguments: { text: 'x' } }),
      headers: { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/call', 'mcp-name': 'stream' } });
    const res = expectAirlockError(r, 400);
    expect((state('v2').calls.echo || 0) === before, 'the upstream ran the call');
    return res;
  });

  await check('mcp-method-mismatch-refused', async () => {
    const r = await h1('/mcp/corp/v2', { body: rpc('tools/call', { name: 'echo', arguments: { text: 'x' } }),
      headers: { 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'tools/list' } });
    return expectAirlockError(r, 400);
  });

  await check('policy-forbidden-tool-403', async () => {
    const before = state('v1').forbidden_calls;
    const r = await h1('/mcp/corp/v1', { body: rpc('tools/call', { name: 'forbidden', arguments: {} }, 42) });
    const res = expectAirlockError(r, 403, -32001);
    expect(bodyJson(r).id === 42, 'the error does not carry the request id');
    expect(state('v1').forbidden_calls === before, 'the forbidden tool ran');
    return res;
  });

  await check('policy-resource-and-prompt-allowed', async () => {
    // resources ["**"], prompts ["*"] in the policy: reaching the server is enough here
    const r = await h1('/mcp/corp/echo', { body: rpc('resources/read', { uri: 'note://greeting' }) });
    expect(r.status === 200, `resources/read status ${r.status}`);
    const p = await h1('/mcp/corp/echo', { body: rpc('prompts/get', { name: 'greet' }) });
    expect(p.status === 200, `prompts/get status ${p.status}`);
  });

  await check('policy-completion-checked-403', async () => {
    // completion/complete is judged by the prompt it completes for: prompts
    // ["*"] does not cover "internal/deploy" ('*' stops at '/')
    const r = await h1('/mcp/corp/echo', { body: rpc('completion/complete', {
      ref: { type: 'ref/prompt', name: 'internal/deploy' },
      argument: { name: 'env', value: 'pr' } }, 43) });
    const res = expectAirlockError(r, 403, -32001);
    expect(bodyJson(r).id === 43, 'the error does not carry the request id');
    const ok = await h1('/mcp/corp/echo', { body: rpc('completion/complete', {
      ref: { type: 'ref/prompt', name: 'greet' }, argument: { name: 'name', value: 'a' } }, 44) });
    expect(ok.status !== 403, `an allowed prompt's completion was refused (${ok.status})`);
    return res;
  });

  // A 2025-11-25 session created by principal A (dev) and used by B (team-b).
  await check('session-of-another-principal-refused', async () => {
    const init = rpc('initialize', { protocolVersion: '2025-11-25', capabilities: {},
      clientInfo: { name: 'raw', version: '1' } });
    const r = await h1('/mcp/corp/v1', { body: init, keyName: 'a' });
    expect(r.status === 200, `initialize status ${r.status}`);
    const sid = r.headers['mcp-session-id'];
    expect(sid, 'no Mcp-Session-Id');
    const hdr = { 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' };
    const n = await h1('/mcp/corp/v1', { body: JSON.stringify({ jsonrpc: '2.0',
      method: 'notifications/initialized' }), keyName: 'a', headers: hdr });
    expect(n.status === 202, `initialized notification status ${n.status}`);
    const own = await h1('/mcp/corp/v1', { body: rpc('tools/list', {}, 2), keyName: 'a', headers: hdr });
    expect(own.status === 200, `the creator's own request: status ${own.status}`);
    const before = state('v1').methods['tools/list'] || 0;
    const other = await h1('/mcp/corp/v1', { body: rpc('tools/list', {}, 3), keyName: 'b', headers: hdr });
    expect(other.status >= 400 && other.status < 500, `B's request with A's session: status ${other.status}`);
    const res = expectAirlockError(other, other.status);
    expect((state('v1').methods['tools/list'] || 0) === before, "B's request reached the server");
    const del = await h1('/mcp/corp/v1', { method: 'DELETE', keyName: 'b', headers: hdr });
    expect(del.status >= 400, `B could DELETE A's session (status ${del.status})`);
    const del2 = await h1('/mcp/corp/v1', { method: 'DELETE', keyName: 'a', headers: hdr });
    expect(del2.status === 200, `A's DELETE: status ${del2.status}`);
    return res;
  });

  await check('upstream-down-502', async () =>
    expectAirlockError(await h1('/mcp/corp/down', { body: callEcho('plain') }), 502, -32002,
      'UPSTREAM_FAILED'));

  await check('upstream-denied-address-502', async () => {
    const before = state('echo').requests;
    const r = await h1('/mcp/corp/denied', { body: callEcho('plain') });
    const res = expectAirlockError(r, 502, -32002, 'UPSTREAM_ADDRESS_DENIED');
    expect(state('echo').requests === before, 'the request reached the denied address');
    return res;
  });

  await check('upstream-401-becomes-502-without-challenge', async () => {
    const before = state('echo').requests;
    const r = await h1('/mcp/corp/stale', { body: callEcho('plain') });
    const res = expectAirlockError(r, 502, -32002, 'UPSTREAM_CREDENTIAL_REJECTED');
    expect(!('www-authenticate' in r.headers), `the server's challenge reached the agent: ${r.headers['www-authenticate']}`);
    expect(/refused the credential/.test(bodyJson(r).error.message), bodyJson(r).error.message);
    expect(state('echo').requests > before, 'the request did not reach the server');
    return res;
  });

  // ---- canary scrubbing ----

  function agentBytes(r) {
    const head = Object.entries(r.headers).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`);
    let body = r.body;
    if (/gzip/.test(r.headers['content-encoding'] || '')) {
      try {
        body = zlib.gunzipSync(body);
      } catch {
        body = Buffer.concat([body, zlib.gunzipSync(body, { finishFlush: zlib.constants.Z_SYNC_FLUSH })]);
      }
    }
    return { all: Buffer.concat([Buffer.from(head.join('\r\n')), Buffer.from('\r\n\r\n'), body]), body };
  }

  await check('canary-scanner-detects-every-form', async () => {
    // every encoding the echo upstream sends must be caught by the scanner,
    // else a clean scan below would prove nothing
    const missed = encodedForms(canary).filter(([, text]) =>
      scanForms(Buffer.from(`..${text}..`), forms).length === 0).map(([name]) => name);
    expect(missed.length === 0, `the scanner misses: ${missed.join(',')}`);
    const all = encodedForms(canary).map(([, text]) => text).join(' ');
    const found = scanForms(Buffer.from(all), forms);
    expect(found.length === forms.length, `scanner forms never produced: ${forms
      .filter((f) => !found.includes(f.name)).map((f) => f.name).join(',')}`);
  });

  for (const mode of ['headers', 'json', 'text', 'sse', 'gzip']) {
    for (const proto of ['h1', 'h2']) {
      await check(`canary-scrubbed-${mode}-${proto}`, async () => {
        const opts = { body: callEcho(mode), headers: { 'accept-encoding': 'gzip, deflate, br' } };
        const r = proto === 'h1' ? await h1('/mcp/corp/echo', opts) : await h2req(h2s, '/mcp/corp/echo', opts);
        expect(r.status === 200, `status ${r.status}`);
        const { all, body } = agentBytes(r);
        const found = scanForms(all, forms);
        expect(found.length === 0, `the agent received the canary as: ${found.join(',')}`);
        const marks = all.toString('latin1').split(MARK).length - 1;
        const where = mode === 'headers' ? 'headers dropped' : `${marks} redactions`;
        if (mode !== 'headers') expect(marks > 0, 'no redaction mark: the upstream echoed nothing?');
        if (mode === 'headers') {
          const echoed = Object.keys(r.headers).filter((h) => h.startsWith('x-echo-'));
          expect(echoed.length === 0 || echoed.every((h) => String(r.headers[h]).includes(MARK)),
            `echo headers passed: ${echoed.join(',')}`);
        }
        return { note: `${body.length} body bytes, ${where}` };
      });
    }
  }

  await check('canary-gzip-ignoring-upstream-refused', async () => {
    const r = await h1('/mcp/corp/echo', { body: callEcho('forcegzip'),
      headers: { 'accept-encoding': 'gzip' } });
    const found = scanForms(agentBytes(r).all, forms);
    expect(found.length === 0, `the agent received the canary as: ${found.join(',')}`);
    return expectAirlockError(r, 502, -32002);
  });

  await check('canary-never-offered-gzip-upstream', async () => {
    expect(state('echo').gzip_offered === 0, 'the gateway passed Accept-Encoding: gzip upstream');
  });

  // ---- streaming and cancellation ----

  await check('sse-streams-unbuffered', async () => {
    const before = state('echo').calls['slow:done'] || 0;
    let firstSeenWhileRunning = null;
    const r = await h2req(h2s, '/mcp/corp/echo', {
      body: callEcho('slow', { count: 60, interval_ms: 100 }),
      onData: () => {
        if (firstSeenWhileRunning === null) {
          firstSeenWhileRunning = (state('echo').calls['slow:done'] || 0) === before;
        }
      },
    });
    expect(r.status === 200, `status ${r.status}`);
    expect(firstSeenWhileRunning === true,
      'the first event arrived only after the upstream had finished (buffered)');
  });

  await check('agent-cancel-reaches-upstream', async () => {
    const before = state('echo').calls['slow:cancelled'] || 0;
    await h2req(h2s, '/mcp/corp/echo', {
      body: callEcho('slow', { count: 100000, interval_ms: 50 }),
      onData: (c, req) => req.close(http2.constants.NGHTTP2_CANCEL),
    }).catch(() => {});
    for (let i = 0; i < 600 && (state('echo').calls['slow:cancelled'] || 0) === before; i++) await sleep(100);
    expect((state('echo').calls['slow:cancelled'] || 0) > before,
      'the upstream request was still running 60 s after the agent reset its stream');
  });

  await check('concurrent-1000-streams-one-connection', async () => {
    const s = await h2connect();
    try {
      const max = s.remoteSettings.maxConcurrentStreams;
      const reqs = [];
      for (let i = 0; i < 1000; i++) {
        reqs.push(h2req(s, '/mcp/corp/echo', { body: rpc('tools/call',
          { name: 'echo', arguments: { mode: 'plain' } }, i + 1) }).catch((e) => ({ err: e })));
      }
      const res = await Promise.all(reqs);
      const answered = (r, i) => {
        try {
          return !r.err && r.status === 200 && bodyJson(r).id === i + 1;
        } catch {
          return false;
        }
      };
      const bad = res.filter((r, i) => !answered(r, i));
      if (bad.length) {
        const b = bad[0];
        throw new Error(`${bad.length} of 1000 failed; first: ${b.err ? b.err.message
          : `status ${b.status} rst ${b.rst}`}`);
      }
      return { note: `relay SETTINGS_MAX_CONCURRENT_STREAMS ${max}` };
    } finally {
      s.close();
    }
  });

  await check('flow-control-slow-agent', async () => {
    const total = 64 << 20;
    const s = await h2connect();
    try {
      const req = s.request({ ':method': 'POST', ':path': '/mcp/corp/echo',
        'content-type': 'application/json', accept: 'text/event-stream',
        authorization: `Bearer ${KEY.a}` });
      req.end(callEcho('big', { bytes: total }));
      let got = 0;
      const ended = new Promise((resolve, reject) => {
        req.on('end', resolve);
        req.on('error', reject);
        req.on('close', () => (req.rstCode ? reject(new Error(`reset, code ${req.rstCode}`)) : resolve()));
      });
      await new Promise((resolve, reject) => {
        req.once('response', resolve);
        req.once('error', reject);
      });
      req.on('data', (c) => { got += c.length; });
      req.pause(); // the agent reads nothing: its window closes
      let last = -1;
      let still = 0;
      for (let i = 0; i < 600 && still < 10; i++) {
        await sleep(200);
        const w = state('echo').big_written || 0;
        if (w === last) still++;
        else {
          still = 0;
          last = w;
        }
      }
      expect(still >= 10, 'the upstream kept writing for 120 s while the agent read nothing');
      expect(last < total / 2, `the upstream wrote ${last} of ${total} bytes while the agent read `
        + 'nothing: something between them buffers without bound');
      req.resume();
      await ended;
      expect(got >= total, `the agent received ${got} of at least ${total} bytes`);
      return { note: `the upstream stalled after ${(last / 1048576).toFixed(1)} MiB of ${total >> 20} MiB` };
    } finally {
      s.close();
    }
  });
}

if (PHASE === 'drain') {
  await check('gateway-sigterm-finishes-in-flight-stream', async () => {
    let drained = null;
    let during = null;
    const r = await h2req(h2s, '/mcp/corp/echo', {
      body: callEcho('slow', { count: 40, interval_ms: 100 }),
      onData: (c, req) => {
        if (drained) return;
        try {
          const g = busyGateway();
          process.kill(g.pid, 'SIGTERM');
          drained = g.id;
          fs.writeFileSync(env.DRAINED_FILE, drained);
          // a new request while that gateway drains goes to the other one
          during = sleep(300).then(() => h1('/mcp/corp/echo', { body: callEcho('plain') }));
        } catch (e) {
          drained = `(${e.message})`;
          req.close(http2.constants.NGHTTP2_CANCEL);
        }
      },
    });
    expect(drained && !drained.startsWith('('), `could not pick the gateway: ${drained}`);
    expect(r.status === 200 && r.rst === 0, `the in-flight stream: status ${r.status}, reset ${r.rst}`);
    expect(/"result"/.test(r.body.toString('utf8')), 'the in-flight stream ended without its result');
    const d = await during;
    expect(d.status === 200, `a request during the drain: status ${d.status}`);
    return { note: `SIGTERM to ${drained}` };
  });
}

// The gateway that carries a long SSE stream is killed with SIGKILL.
if (PHASE === 'kill') {
  await check('gateway-killed-mid-stream', async () => {
    let killed = null;
    const r = await h2req(h2s, '/mcp/corp/echo', {
      body: callEcho('slow', { count: 100000, interval_ms: 50 }),
      onData: (c, req) => {
        if (killed) return;
        try {
          const g = busyGateway();
          process.kill(g.pid, 'SIGKILL');
          killed = g.id;
          fs.writeFileSync(env.KILLED_FILE, killed);
        } catch (e) {
          killed = `(${e.message})`;
          req.close(http2.constants.NGHTTP2_CANCEL);
        }
      },
    });
    expect(killed && !killed.startsWith('('), `could not pick the gateway: ${killed}`);
    expect(r.rst !== 0 || !/"result"/.test(r.body.toString('utf8')),
      'the stream ended normally with a result although its gateway was killed');
    // the relay keeps serving, on the gateway still alive
    const after = await h2req(h2s, '/mcp/corp/echo', { body: callEcho('plain') });
    expect(after.status === 200, `next request: status ${after.status}`);
    const h1after = await h1('/mcp/corp/echo', { body: callEcho('plain') });
    expect(h1after.status === 200, `next HTTP/1.1 request: status ${h1after.status}`);
    return { note: `killed ${killed}; agent stream ${r.rst ? `reset (code ${r.rst})` : 'ended without a result'}` };
  });
}
h2s.close();

process.exit(failed() ? 1 : 0);
