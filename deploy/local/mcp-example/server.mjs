// Example private MCP server for deploy/local/up.sh: what a company runs
// inside its network and reaches only through the Airlock tunnel.
//
// Written with the official MCP TypeScript SDK v1 (@modelcontextprotocol/sdk),
// Streamable HTTP (revision 2025-11-25) with sessions, on 127.0.0.1:8931/mcp.
// Every request must carry "Authorization: Bearer <token>" where the token is
// read from TOKEN_FILE (a 0600 file up.sh writes and also stores in credstore);
// anything else gets 401. Agents never hold that token: airlock-gateway
// resolves it from credstore and injects it, and scrubs it from responses.
//
// Tools: echo {text}; add {a, b}; count {to} (progress notifications on the
// response's SSE stream). Resource example://readme; prompt summarize {text}.
//
// Environment: TOKEN_FILE (required), PORT (default 8931), HOST (default
// 127.0.0.1). Logs one line per request to stderr (method and status; never
// a header value).
import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 8931);
const MAX_BODY = 1 << 20;

if (!process.env.TOKEN_FILE) {
  console.error('mcp-example: TOKEN_FILE is not set');
  process.exit(2);
}
const token = fs.readFileSync(process.env.TOKEN_FILE, 'utf8').trim();
if (token.length < 16) {
  console.error('mcp-example: the token in TOKEN_FILE is shorter than 16 characters');
  process.exit(2);
}
const expected = Buffer.from(`Bearer ${token}`);

function authorized(req) {
  const got = Buffer.from(req.headers.authorization || '');
  return got.length === expected.length && crypto.timingSafeEqual(got, expected);
}

function buildServer() {
  const server = new McpServer({ name: 'airlock-example', version: '1.0.0' });
  server.registerTool('echo', { description: 'Returns the text it is given',
    inputSchema: { text: z.string().max(10000) } },
  async ({ text }) => ({ content: [{ type: 'text', text }] }));
  server.registerTool('add', { description: 'Adds two numbers',
    inputSchema: { a: z.number(), b: z.number() } },
  async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }));
  server.registerTool('count', {
    description: 'Counts to N, one progress notification per step (streamed over SSE)',
    inputSchema: { to: z.number().int().min(1).max(100) },
  }, async ({ to }, extra) => {
    const progressToken = extra._meta && extra._meta.progressToken;
    for (let i = 1; i <= to; i++) {
      if (progressToken !== undefined) {
        await extra.sendNotification({ method: 'notifications/progress',
          params: { progressToken, progress: i, total: to } });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return { content: [{ type: 'text', text: `counted to ${to}` }] };
  });
  server.registerResource('readme', 'example://readme',
    { description: 'What this server is', mimeType: 'text/plain' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'text/plain',
      text: 'A private MCP server reached through the Airlock tunnel.' }] }));
  server.registerPrompt('summarize', { description: 'Asks for a summary',
    argsSchema: { text: z.string().max(10000) } },
  ({ text }) => ({ messages: [{ role: 'user',
    content: { type: 'text', text: `Summarize in one sentence:\n\n${text}` } }] }));
  return server;
}

const sessions = new Map();

function reply(res, status, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message } }));
}

async function readJson(req) {
  const parts = [];
  let n = 0;
  for await (const c of req) {
    n += c.length;
    if (n > MAX_BODY) throw new Error('body too large');
    parts.push(c);
  }
  return JSON.parse(Buffer.concat(parts).toString('utf8'));
}

async function handle(req, res) {
  const path = new URL(req.url, 'http://x').pathname;
  if (path !== '/mcp') return reply(res, 404, 'not found');
  if (!authorized(req)) {
    res.setHeader('www-authenticate', 'Bearer');
    return reply(res, 401, 'missing or wrong bearer token');
  }
  const sid = req.headers['mcp-session-id'];
  let transport = sid ? sessions.get(sid) : undefined;
  if (req.method === 'POST') {
    let body;
    try {
      body = await readJson(req);
    } catch {
      return reply(res, 400, 'the body is not JSON');
    }
    if (!transport && !sid && isInitializeRequest(body)) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      transport.onclose = () => transport.sessionId && sessions.delete(transport.sessionId);
      await buildServer().connect(transport);
    }
    if (!transport) return reply(res, sid ? 404 : 400, sid ? 'unknown session' : 'initialize first');
    return transport.handleRequest(req, res, body);
  }
  if (req.method === 'GET' || req.method === 'DELETE') {
    if (!transport) return reply(res, 404, 'unknown session');
    return transport.handleRequest(req, res);
  }
  res.setHeader('allow', 'GET, POST, DELETE');
  return reply(res, 405, 'method not allowed');
}

const httpServer = http.createServer((req, res) => {
  res.on('finish', () => console.error(`mcp-example: ${req.method} ${res.statusCode}`));
  handle(req, res).catch((e) => {
    console.error(`mcp-example: ${e && e.message ? e.message : e}`);
    if (!res.headersSent) reply(res, 500, 'internal error');
    else res.end();
  });
});
httpServer.listen(PORT, HOST, () => console.error(`mcp-example: listening on ${HOST}:${PORT}/mcp`));
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    httpServer.close();
    process.exit(0);
  });
}
