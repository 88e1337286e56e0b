'use strict';
// grpc-js (@grpc/grpc-js + @grpc/proto-loader) against airlock-testsvc.
// Started by grpc_js.sh, which starts the servers and passes them in:
//   PROTO_DIR             the repository's proto/ directory
//   H2C, H2C_SMALL        host:port of h2c servers (default and 64 KiB message cap)
//   TLS, TLS_SMALL        host:port of mTLS servers (same)
//   PKI                   directory with ca.crt, client-client.{crt,key}, test-testsvc.crt
//   RELOAD_CMD            shell command that re-issues the TLS server's certificate
//                         and sends it SIGHUP (certificate reload check)
//   V6                    [::1]:port of an mTLS server on IPv6 loopback (empty: none)
//   DRAIN, DRAIN_PID      host:port and pid of an h2c server this script stops with
//                         SIGTERM (drain check; grpc_js.sh checks its exit)
// Prints one line per check: PASS name / FAIL name: reason / SKIP name: reason.
// Exits 1 if any check failed. No timing assertions: deadlines are generous.

const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const fs = require('fs');
const path = require('path');
const tls = require('tls');
const { execSync } = require('child_process');

const env = process.env;
const SMALL_LIMIT = 64 * 1024;
const CALL_DEADLINE_MS = 60000; // for calls that should succeed (sanitized builds are slow)
const CHECK_TIMEOUT_MS = 180000;

let failed = 0;

function fail(msg) {
  throw new Error(msg);
}

function expect(cond, msg) {
  if (!cond) fail(msg);
}

function eqBuf(a, b) {
  return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
}

async function check(name, fn) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`check timed out after ${CHECK_TIMEOUT_MS} ms`)),
      CHECK_TIMEOUT_MS);
  });
  try {
    const r = await Promise.race([fn(), timeout]);
    if (r && r.skip) console.log(`SKIP ${name}: ${r.skip}`);
    else console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    const why = (e && (e.stack || e.message)) || String(e);
    console.log(`FAIL ${name}: ${String(e && e.message ? e.message : e).replace(/\s+/g, ' ')}`);
    console.error(why);
  } finally {
    clearTimeout(timer);
  }
}

const loadOpts = {
  keepCase: true, longs: String, enums: String, defaults: true,
  includeDirs: [env.PROTO_DIR],
};
const testPkg = grpc.loadPackageDefinition(
  loader.loadSync('airlock/test/v1/test.proto', loadOpts)).airlock.test.v1;
const healthPkg = grpc.loadPackageDefinition(
  loader.loadSync('grpc/health/v1/health.proto', loadOpts)).grpc.health.v1;

function pki(f) {
  return fs.readFileSync(path.join(env.PKI, f));
}

function creds(kind) {
  if (kind === 'h2c') return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(pki('ca.crt'), pki('client-client.key'),
    pki('client-client.crt'));
}

// A fresh connection per client unless shared on purpose: grpc-js otherwise
// shares subchannels between channels with the same target and options.
function clients(target, kind, extraOpts = {}) {
  const opts = { 'grpc.use_local_subchannel_pool': 1, ...extraOpts };
  const c = creds(kind);
  const test = new testPkg.TestService(target, c, opts);
  const health = new healthPkg.Health(target, c, { channelOverride: test.getChannel() });
  return { test, health, close: () => test.close() };
}

function deadline(ms = CALL_DEADLINE_MS) {
  return new Date(Date.now() + ms);
}

// Unary call; resolves { rep, err, status } once the status (with trailers) is in.
function unary(client, method, req, { md = new grpc.Metadata(), deadlineMs } = {}) {
  return new Promise((resolve) => {
    let rep = null;
    let err = null;
    const call = client[method](req, md, { deadline: deadline(deadlineMs) }, (e, r) => {
      err = e;
      rep = r;
    });
    call.on('status', (status) => setImmediate(() => resolve({ rep, err, status })));
  });
}

async function unaryOk(client, method, req, opts) {
  const r = await unary(client, method, req, opts);
  if (r.err) fail(`${method}: ${grpc.status[r.err.code]} ${r.err.details}`);
  return r;
}

async function unaryErr(client, method, req, code, opts) {
  const r = await unary(client, method, req, opts);
  if (!r.err) fail(`${method} succeeded; want ${grpc.status[code]}`);
  if (r.err.code !== code) {
    fail(`${method}: got ${grpc.status[r.err.code]} "${r.err.details}", want ${grpc.status[code]}`);
  }
  return r;
}

// Server-streaming call; resolves { msgs, status } at the end.
function stream(client, method, req, { deadlineMs, onData, call: callOut } = {}) {
  return new Promise((resolve) => {
    const msgs = [];
    const call = client[method](req, new grpc.Metadata(), { deadline: deadline(deadlineMs) });
    if (callOut) callOut(call);
    call.on('data', (m) => {
      msgs.push(m);
      if (onData) onData(m, call);
    });
    call.on('error', () => {});
    call.on('status', (status) => setImmediate(() => resolve({ msgs, status })));
  });
}

function expectStatus(status, code, what) {
  if (status.code !== code) {
    fail(`${what}: status ${grpc.status[status.code]} "${status.details}", want ${grpc.status[code]}`);
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Serial number (upper-case hex) of the certificate a new TLS connection to target sees.
function serverSerial(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), target.slice(target.lastIndexOf(':') + 1)];
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host, port: Number(port), ca: pki('ca.crt'), key: pki('client-client.key'),
      cert: pki('client-client.crt'), ALPNProtocols: ['h2'], servername: 'localhost',
    }, () => {
      const cert = s.getPeerCertificate();
      const alpn = s.alpnProtocol;
      s.destroy();
      if (alpn !== 'h2') reject(new Error(`ALPN negotiated ${alpn}, want h2`));
      else resolve(String(cert.serialNumber).toUpperCase().replace(/^0+/, ''));
    });
    s.on('error', reject);
    s.setTimeout(30000, () => { s.destroy(); reject(new Error('TLS connect timed out')); });
  });
}

function fileSerial(file) {
  const x = new (require('crypto').X509Certificate)(fs.readFileSync(file));
  return x.serialNumber.toUpperCase().replace(/^0+/, '');
}

async function suite(kind, target, smallTarget) {
  const p = (n) => `${kind}-${n}`;
  const c = clients(target, kind);
  const wantPeer = kind === 'h2c' ? '' : 'spiffe://airlock/client/client';

  await check(p('echo'), async () => {
    const { rep } = await unaryOk(c.test, 'Echo', { message: 'hello', payload: Buffer.from([0, 1, 2, 255]) });
    expect(rep.message === 'hello', `message "${rep.message}"`);
    expect(eqBuf(rep.payload, Buffer.from([0, 1, 2, 255])), 'payload differs');
    expect(rep.peer_identity === wantPeer, `peer_identity "${rep.peer_identity}", want "${wantPeer}"`);
  });

  await check(p('echo-empty'), async () => {
    const { rep } = await unaryOk(c.test, 'Echo', {});
    expect(rep.message === '' && rep.payload.length === 0, 'reply not empty');
  });

  await check(p('echo-3MiB'), async () => {
    // bigger than any HTTP/2 window: both sides' flow control must move it
    const payload = Buffer.alloc(3 << 20);
    for (let i = 0; i < payload.length; i += 4096) payload[i] = i & 0xff;
    const { rep } = await unaryOk(c.test, 'Echo', { payload });
    expect(eqBuf(rep.payload, payload), `payload differs (${rep.payload.length} bytes back)`);
  });

  await check(p('echo-concurrent-100'), async () => {
    const calls = [];
    for (let i = 0; i < 100; i++) {
      calls.push(unaryOk(c.test, 'Echo', { message: `m${i}`, delay_ms: i % 3 ? 0 : 20 }));
    }
    const reps = await Promise.all(calls);
    reps.forEach(({ rep }, i) => expect(rep.message === `m${i}`, `call ${i} got "${rep.message}"`));
  });

  await check(p('stream-100'), async () => {
    const { msgs, status } = await stream(c.test, 'Stream', { count: 100, payload_bytes: 10 });
    expectStatus(status, grpc.status.OK, 'Stream');
    expect(msgs.length === 100, `${msgs.length} messages, want 100`);
    msgs.forEach((m, i) => {
      expect(m.seq === i, `message ${i} has seq ${m.seq}`);
      expect(m.payload.length === 10, `message ${i} payload ${m.payload.length} bytes`);
    });
  });

  await check(p('stream-large-1MiB'), async () => {
    const n = 12;
    let bytes = 0;
    let bad = null;
    const { msgs, status } = await stream(c.test, 'Stream', { count: n, payload_bytes: 1 << 20 }, {
      onData: (m) => {
        bytes += m.payload.length;
        if (m.payload.length !== 1 << 20 || m.payload[0] !== 0x78 || m.payload[(1 << 20) - 1] !== 0x78) {
          bad = bad || `message ${m.seq}: ${m.payload.length} bytes`;
        }
        m.payload = null; // keep memory flat
      },
    });
    expectStatus(status, grpc.status.OK, 'Stream');
    expect(!bad, bad);
    expect(msgs.length === n && bytes === n << 20, `${msgs.length} messages / ${bytes} bytes`);
  });

  await check(p('stream-paced'), async () => {
    const { msgs, status } = await stream(c.test, 'Stream', { count: 5, interval_ms: 20 });
    expectStatus(status, grpc.status.OK, 'Stream');
    expect(msgs.length === 5, `${msgs.length} messages`);
  });

  await check(p('stream-empty'), async () => {
    const { msgs, status } = await stream(c.test, 'Stream', { count: 0 });
    expectStatus(status, grpc.status.OK, 'Stream');
    expect(msgs.length === 0, `${msgs.length} messages`);
  });

  await check(p('stream-fail-code'), async () => {
    const { msgs, status } = await stream(c.test, 'Stream', { count: 3, fail_code: grpc.status.ABORTED });
    expectStatus(status, grpc.status.ABORTED, 'Stream');
    expect(msgs.length === 3, `${msgs.length} messages before the status, want 3`);
  });

  await check(p('stream-invalid-argument'), async () => {
    const { status } = await stream(c.test, 'Stream', { count: -1 });
    expectStatus(status, grpc.status.INVALID_ARGUMENT, 'Stream');
  });

  await check(p('stream-client-cancel'), async () => {
    let got = 0;
    const { status } = await stream(c.test, 'Stream', { count: 1000000, interval_ms: 10 }, {
      onData: (m, call) => { if (++got === 3) call.cancel(); },
    });
    expectStatus(status, grpc.status.CANCELLED, 'Stream');
    // the connection is still good
    await unaryOk(c.test, 'Echo', { message: 'after cancel' });
  });

  await check(p('health-check'), async () => {
    const { rep } = await unaryOk(c.health, 'Check', { service: '' });
    expect(rep.status === 'SERVING', `status ${rep.status}`);
  });

  await check(p('health-check-unknown'), async () => {
    await unaryErr(c.health, 'Check', { service: 'no.such.Service' }, grpc.status.NOT_FOUND);
  });

  await check(p('health-list'), async () => {
    const { rep } = await unaryOk(c.health, 'List', {});
    expect(rep.statuses && rep.statuses[''] && rep.statuses[''].status === 'SERVING',
      `statuses ${JSON.stringify(rep.statuses)}`);
  });

  await check(p('health-watch'), async () => {
    let first = null;
    const { msgs, status } = await stream(c.health, 'Watch', { service: '' }, {
      onData: (m, call) => { first = first || m; call.cancel(); },
    });
    expect(first && first.status === 'SERVING', `first message ${JSON.stringify(msgs[0])}`);
    expectStatus(status, grpc.status.CANCELLED, 'Watch');
  });

  await check(p('health-watch-unknown'), async () => {
    let first = null;
    await stream(c.health, 'Watch', { service: 'no.such.Service' }, {
      onData: (m, call) => { first = first || m; call.cancel(); },
    });
    expect(first && first.status === 'SERVICE_UNKNOWN', `first message ${JSON.stringify(first)}`);
  });

  const rawUnary = (client, pathName, deadlineMs = CALL_DEADLINE_MS) => new Promise((resolve) => {
    client.makeUnaryRequest(pathName, (x) => x, (x) => x, Buffer.alloc(0), new grpc.Metadata(),
      { deadline: deadline(deadlineMs) }, (err, rep) => resolve({ err, rep }));
  });

  await check(p('unknown-method'), async () => {
    const { err } = await rawUnary(c.test, '/airlock.test.v1.TestService/NoSuchMethod');
    expect(err, 'call succeeded');
    expect(err.code === grpc.status.UNIMPLEMENTED, `got ${grpc.status[err.code]} "${err.details}"`);
  });

  await check(p('unknown-service'), async () => {
    const { err } = await rawUnary(c.test, '/no.such.Service/Echo');
    expect(err, 'call succeeded');
    expect(err.code === grpc.status.UNIMPLEMENTED, `got ${grpc.status[err.code]} "${err.details}"`);
  });

  await check(p('deadline-exceeded'), async () => {
    await unaryErr(c.test, 'Echo', { message: 'slow', delay_ms: 30000 }, grpc.status.DEADLINE_EXCEEDED,
      { deadlineMs: 300 });
    await unaryOk(c.test, 'Echo', { message: 'after deadline' });
  });

  await check(p('deadline-stream'), async () => {
    const { msgs, status } = await stream(c.test, 'Stream', { count: 1000000, interval_ms: 50 },
      { deadlineMs: 500 });
    expectStatus(status, grpc.status.DEADLINE_EXCEEDED, 'Stream');
    expect(msgs.length < 1000000, 'all messages arrived');
  });

  await check(p('status-codes'), async () => {
    for (let code = 1; code <= 16; code++) {
      const { err } = await unary(c.test, 'Echo', { fail_code: code, fail_message: `code ${code}` });
      expect(err && err.code === code, `fail_code ${code}: got ${err ? grpc.status[err.code] : 'OK'}`);
      expect(err.details === `code ${code}`, `fail_code ${code}: message "${err.details}"`);
    }
  });

  await check(p('status-message-non-ascii'), async () => {
    const texts = ['héllo ✓ 日本', '100% sure, 50%2F50 \t "quoted"\r\nnew line', 'emoji 🦀 end'];
    for (const t of texts) {
      const { err } = await unaryErr(c.test, 'Echo', { fail_code: grpc.status.FAILED_PRECONDITION, fail_message: t },
        grpc.status.FAILED_PRECONDITION);
      expect(err.details === t, `message ${JSON.stringify(err.details)}, want ${JSON.stringify(t)}`);
    }
  });

  await check(p('metadata'), async () => {
    const bin = Buffer.alloc(256);
    for (let i = 0; i < 256; i++) bin[i] = i;
    const md = new grpc.Metadata();
    md.set('x-echo', 'plain value, with spaces');
    md.set('x-echo-bin', bin);
    md.set('x-other', 'ignored');
    const { rep, status } = await unaryOk(c.test, 'Echo', { message: 'md' }, { md });
    expect(rep.echo_metadata === 'plain value, with spaces', `echo_metadata "${rep.echo_metadata}"`);
    expect(eqBuf(rep.echo_metadata_bin, bin), `echo_metadata_bin ${rep.echo_metadata_bin.toString('hex')}`);
    const tr = status.metadata.get('x-trailer-bin');
    expect(tr.length === 1 && eqBuf(tr[0], bin), `trailer x-trailer-bin ${JSON.stringify(tr)}`);
  });

  await check(p('metadata-bin-empty-and-large'), async () => {
    for (const bin of [Buffer.alloc(0), Buffer.alloc(6000, 0xa5)]) {
      const md = new grpc.Metadata();
      md.set('x-echo-bin', bin);
      const { rep } = await unaryOk(c.test, 'Echo', {}, { md });
      expect(eqBuf(rep.echo_metadata_bin, bin), `${bin.length}-byte value came back as ${rep.echo_metadata_bin.length} bytes`);
    }
  });

  const s = clients(smallTarget, kind);
  await check(p('message-under-limit'), async () => {
    const payload = Buffer.alloc(SMALL_LIMIT - 1024, 7);
    const { rep } = await unaryOk(s.test, 'Echo', { payload });
    expect(eqBuf(rep.payload, payload), 'payload differs');
  });

  await check(p('request-over-limit'), async () => {
    await unaryErr(s.test, 'Echo', { payload: Buffer.alloc(100 * 1024, 1) }, grpc.status.RESOURCE_EXHAUSTED);
    await unaryOk(s.test, 'Echo', { message: 'after oversized' });
  });

  await check(p('response-over-limit'), async () => {
    // The reply would be over the server's cap: the server must not send it
    // and must end the call with RESOURCE_EXHAUSTED, not OK.
    const { msgs, status } = await stream(s.test, 'Stream', { count: 2, payload_bytes: 100 * 1024 });
    expectStatus(status, grpc.status.RESOURCE_EXHAUSTED, 'Stream with 100 KiB messages');
    expect(msgs.length === 0, `${msgs.length} messages arrived`);
  });
  s.close();

  c.close();
}

async function reloadSuite() {
  await check('mtls-no-client-cert-refused', async () => {
    const t = new testPkg.TestService(env.TLS, grpc.credentials.createSsl(pki('ca.crt')),
      { 'grpc.use_local_subchannel_pool': 1 });
    const r = await unary(t, 'Echo', { message: 'x' }, { deadlineMs: 20000 });
    t.close();
    expect(r.err, 'call without a client certificate succeeded');
    expect(r.err.code === grpc.status.UNAVAILABLE || r.err.code === grpc.status.DEADLINE_EXCEEDED,
      `got ${grpc.status[r.err.code]} "${r.err.details}"`);
  });

  await check('mtls-cert-reload', async () => {
    const before = await serverSerial(env.TLS);
    const fileBefore = fileSerial(path.join(env.PKI, 'test-testsvc.crt'));
    expect(before === fileBefore, `server shows serial ${before}, file has ${fileBefore}`);

    const old = clients(env.TLS, 'tls');
    await unaryOk(old.test, 'Echo', { message: 'before reload' });
    // A Watch and a slow Stream stay open across the reload.
    let watchCall = null;
    let watchMsgs = 0;
    const watch = stream(old.health, 'Watch', { service: '' }, {
      deadlineMs: 600000, call: (x) => { watchCall = x; }, onData: () => { watchMsgs++; },
    });
    let streamMsgs = 0;
    let reloaded = false;
    let afterReload = 0;
    const slow = stream(old.test, 'Stream', { count: 80, interval_ms: 100 }, {
      onData: () => { streamMsgs++; if (reloaded) afterReload++; },
    });
    while (streamMsgs < 3) await sleep(20);

    execSync(env.RELOAD_CMD, { stdio: ['ignore', 'inherit', 'inherit'] });
    const fileAfter = fileSerial(path.join(env.PKI, 'test-testsvc.crt'));
    expect(fileAfter !== fileBefore, 'RELOAD_CMD did not issue a new certificate');
    let after = before;
    for (let i = 0; i < 300 && after !== fileAfter; i++) {
      await sleep(100);
      after = await serverSerial(env.TLS);
    }
    expect(after === fileAfter, `new connections still see serial ${after}, want ${fileAfter}`);
    reloaded = true;

    // A new connection works and sees the new certificate.
    const fresh = clients(env.TLS, 'tls');
    const { rep } = await unaryOk(fresh.test, 'Echo', { message: 'after reload' });
    expect(rep.peer_identity === 'spiffe://airlock/client/client', `peer_identity ${rep.peer_identity}`);
    fresh.close();

    // The old connection keeps working, its streams too.
    await unaryOk(old.test, 'Echo', { message: 'old connection after reload' });
    const { msgs, status } = await slow;
    expectStatus(status, grpc.status.OK, 'slow Stream across the reload');
    expect(msgs.length === 80, `slow Stream got ${msgs.length} of 80 messages`);
    expect(watchMsgs >= 1, 'Watch got no message');
    watchCall.cancel();
    const w = await watch;
    expectStatus(w.status, grpc.status.CANCELLED, 'Watch across the reload (ended by the client)');
    old.close();
    if (afterReload === 0) return { skip: 'the slow Stream ended before the reload took effect' };
    return null;
  });
}

async function ipv6Suite() {
  await check('mtls-ipv6', async () => {
    if (!env.V6) return { skip: 'no IPv6 loopback (::1) on this machine' };
    // the server certificate names IP ::1
    const c = clients(env.V6, 'tls');
    const { rep } = await unaryOk(c.test, 'Echo', { message: 'v6' });
    c.close();
    expect(rep.peer_identity === 'spiffe://airlock/client/client', `peer_identity ${rep.peer_identity}`);
    return null;
  });
  await check('mtls-dns-name', async () => {
    // verified as "localhost" (the certificate's DNS name) instead of the IP
    const c = clients(env.TLS, 'tls', {
      'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost',
    });
    const { rep } = await unaryOk(c.test, 'Echo', { message: 'dns' });
    c.close();
    expect(rep.peer_identity === 'spiffe://airlock/client/client', `peer_identity ${rep.peer_identity}`);
  });
}

async function drainSuite() {
  await check('h2c-drain', async () => {
    const c = clients(env.DRAIN, 'h2c');
    await unaryOk(c.test, 'Echo', { message: 'before drain' });
    const watchStatuses = [];
    const watch = stream(c.health, 'Watch', { service: '' }, {
      deadlineMs: 300000, onData: (m) => watchStatuses.push(m.status),
    });
    let slowGot = 0;
    const slow = stream(c.test, 'Stream', { count: 30, interval_ms: 100 }, { onData: () => { slowGot++; } });
    while (slowGot < 2 || watchStatuses.length < 1) await sleep(20);

    process.kill(Number(env.DRAIN_PID), 'SIGTERM');
    // Watchers are told and let go at once, so they do not hold the drain open.
    const w = await watch;
    expect(w.status.code === grpc.status.UNAVAILABLE,
      `Watch ended with ${grpc.status[w.status.code]} "${w.status.details}", want UNAVAILABLE`);
    // While the Stream is still running, new connections are not served.
    const n = clients(env.DRAIN, 'h2c');
    const r = await unary(n.test, 'Echo', { message: 'during drain' }, { deadlineMs: 10000 });
    n.close();
    const stillRunning = slowGot < 30;
    expect(r.err, 'a new connection was served during the drain');
    // The call already running finishes normally.
    const sr = await slow;
    expectStatus(sr.status, grpc.status.OK, 'Stream running when the drain began');
    expect(sr.msgs.length === 30, `Stream got ${sr.msgs.length} of 30 messages`);
    c.close();
    if (!stillRunning) return { skip: 'the Stream ended before the new connection was tried' };
    return null;
  });
}

(async () => {
  await suite('h2c', env.H2C, env.H2C_SMALL);
  await suite('mtls', env.TLS, env.TLS_SMALL);
  await reloadSuite();
  await ipv6Suite();
  await drainSuite();
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.log(`FAIL grpc-js: ${e && e.message}`);
  console.error(e);
  process.exit(1);
});
