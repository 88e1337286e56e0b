// The canary-echo upstream: a hostile MCP server (plain node:http) that
// sends the credential the gateway injected straight back, in every form the
// scrubber must remove, everywhere a response can carry it:
//   forms   raw token and the whole header value; hex lower/upper; base64
//           standard and URL alphabets at alignments 0, 1, 2 (a 0-2 byte
//           prefix), padded and not; percent-encoded (upper and lower hex);
//           JSON-escaped (with '/' raw and as '\/')
//   places  response headers; a JSON body; SSE events - each written in
//           pieces split in the middle of the token, several writes apart
// The mode comes from the JSON-RPC body, params.arguments.mode (POST), or
// ?mode= (GET):
//   headers    forms in response headers, small JSON body
//   json       forms in a JSON-RPC result, split mid-token across writes
//   text       forms as plain text lines (the raw bytes as they are)
//   sse        text/event-stream, per form one JSON event and one bare data
//              event, split mid-token
//   gzip       as json, gzip-compressed when the request offered gzip
//   forcegzip  as json, always gzip-compressed (an upstream ignoring
//              Accept-Encoding: the gateway must refuse it)
//   plain      a small JSON-RPC result without any form (load tests)
//   slow       SSE: params.arguments.count events, interval_ms apart
//   big        SSE: params.arguments.bytes of data, written with back-pressure
//              (state big_written: bytes written so far)
// Requests without "Authorization: Bearer <canary>" get 401, like the real
// servers. What it saw goes to $STATE_FILE (plus gzip_offered).
//
// Environment: CANARY_FILE (required), STATE_FILE, PORT, HOST.
import http from 'node:http';
import zlib from 'node:zlib';
import {
  ServerState, encodedForms as forms, listen, loadCanary, readBody, unauthorized,
} from './common.mjs';

const state = new ServerState(process.env.STATE_FILE, loadCanary());
state.s.gzip_offered = 0;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Writes text in two pieces split in its middle, a little apart, so that
// the value crosses TCP segments, HTTP/1.1 chunks and HTTP/2 DATA frames.
async function writeSplit(out, text) {
  const mid = Math.max(1, Math.floor(text.length / 2));
  out.write(text.slice(0, mid));
  await sleep(5);
  out.write(text.slice(mid));
  await sleep(5);
}

async function jsonBody(out, id, fs) {
  await writeSplit(out, `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"content":[`);
  for (let i = 0; i < fs.length; i++) {
    // JSON text of the value: the raw token inside a JSON string is the json form
    const [name, text] = fs[i];
    await writeSplit(out, `${i ? ',' : ''}{"type":"text","text":${JSON.stringify(`${name}=${text}`)}}`);
  }
  await writeSplit(out, ']}}');
  out.end();
}

async function handle(req, res) {
  if (!state.authorize(req)) return unauthorized(res);
  const header = req.headers.authorization;
  const token = header.slice('Bearer '.length);
  const fs = forms(token, header);
  const body = req.method === 'POST' ? await readBody(req) : Buffer.alloc(0);
  let msg = {};
  try {
    msg = body.length ? JSON.parse(body.toString('utf8')) : {};
  } catch { /* mode from the query */ }
  if (msg.method) state.method(msg.method);
  const args = (msg.params && msg.params.arguments) || {};
  const url = new URL(req.url, 'http://upstream');
  const mode = args.mode || url.searchParams.get('mode') || 'plain';
  const id = msg.id === undefined ? null : msg.id;
  const gzipOffered = /\bgzip\b/.test(req.headers['accept-encoding'] || '');
  if (gzipOffered) state.s.gzip_offered++;
  state.call(`echo:${mode}`);

  switch (mode) {
  case 'headers': {
    const h = { 'content-type': 'application/json' };
    for (const [name, text] of fs) h[`x-echo-${name.toLowerCase()}`] = text;
    res.writeHead(200, h);
    return res.end(JSON.stringify({ jsonrpc: '2.0', id, result: { content: [] } }));
  }
  case 'json':
    res.writeHead(200, { 'content-type': 'application/json' });
    return jsonBody(res, id, fs);
  case 'sse': {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (const [name, text] of fs) {
      const data = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message',
        params: { level: 'info', data: `${name}=${text}` } });
      await writeSplit(res, `event: message\nid: ${name}\ndata: ${data}\n\n`);
      // the same form bare (SSE data need not be JSON), over two data lines
      await writeSplit(res, `data: ${name}\ndata: ${text}\n\n`);
    }
    await writeSplit(res, `data: ${JSON.stringify({ jsonrpc: '2.0', id,
      result: { content: [{ type: 'text', text: fs.map((f) => f[1]).join(' ') }] } })}\n\n`);
    return res.end();
  }
  case 'text': {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    for (const [name, text] of fs) await writeSplit(res, `${name}: ${text}\n`);
    return res.end();
  }
  case 'gzip':
  case 'forcegzip': {
    const compress = mode === 'forcegzip' || gzipOffered;
    const h = { 'content-type': 'application/json' };
    if (compress) h['content-encoding'] = 'gzip';
    res.writeHead(200, h);
    if (!compress) return jsonBody(res, id, fs);
    const gz = zlib.createGzip();
    gz.pipe(res);
    return jsonBody(gz, id, fs);
  }
  case 'slow': {
    const count = Math.min(Number(args.count) || 10, 100000);
    const every = Math.min(Number(args.interval_ms) || 100, 10000);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let gone = false;
    res.on('close', () => { gone = true; });
    for (let i = 1; i <= count && !gone; i++) {
      res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress',
        params: { progressToken: 1, progress: i, total: count } })}\n\n`);
      await sleep(every);
    }
    if (gone) state.call('slow:cancelled');
    return res.end(`data: ${JSON.stringify({ jsonrpc: '2.0', id, result: { content: [] } })}\n\n`);
  }
  case 'big': {
    // args.bytes of SSE data, written only as fast as the path drains:
    // big_written in the state file shows how far the upstream got
    const total = Math.min(Number(args.bytes) || (64 << 20), 1 << 30);
    const line = `data: ${'b'.repeat(16 * 1024 - 8)}\n\n`;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let gone = false;
    res.on('close', () => { gone = true; });
    let written = 0;
    let reported = 0;
    state.s.big_written = 0;
    state.save();
    while (written < total && !gone) {
      const ok = res.write(line);
      written += line.length;
      if (written - reported >= (1 << 20)) {
        state.s.big_written = written;
        state.save();
        reported = written;
      }
      if (!ok) {
        await new Promise((r) => {
          res.once('drain', r);
          res.once('close', r);
        });
      }
    }
    state.s.big_written = written;
    state.save();
    return res.end();
  }
  default: {
    const out = JSON.stringify({ jsonrpc: '2.0', id,
      result: { content: [{ type: 'text', text: 'ok' }] } });
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(out);
  }
  }
}

const httpServer = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error(`echo_upstream: ${e && e.message ? e.message : e}`);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});
httpServer.keepAliveTimeout = 60000;
httpServer.maxConnections = 4096;
await listen(httpServer);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
