// An MCP server for revision 2025-11-25 written with the official TypeScript
// SDK v1 (@modelcontextprotocol/sdk): Streamable HTTP, stateful sessions
// (Mcp-Session-Id, GET SSE stream, DELETE), one McpServer per session.
//
// It stands for a private MCP server behind the tunnel gateway: every request
// must carry "Authorization: Bearer <canary>" (the value only credstore holds,
// injected by the gateway), else 401. What it saw goes to $STATE_FILE.
//
// Tools: echo {text}; stream {count, interval_ms} (progress notifications and
// log messages on the request's SSE stream, then the result); forbidden (no
// policy allows it: any call is recorded as a failure of the gateway).
// Resource note://greeting; prompt greet {name}.
//
// Environment: CANARY_FILE (required), STATE_FILE, PORT (0 = any), HOST.
// Prints "listening PORT" on stdout.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { ServerState, listen, loadCanary, readBody, unauthorized } from './common.mjs';

const state = new ServerState(process.env.STATE_FILE, loadCanary());
const NAME = 'airlock-test-v1';

function build() {
  const server = new McpServer({ name: NAME, version: '1.0.0' },
    { capabilities: { logging: {} } });
  server.registerTool('echo', { description: 'Returns its text', inputSchema: { text: z.string() } },
    async ({ text }) => {
      state.call('echo');
      return { content: [{ type: 'text', text: `echo: ${text}` }] };
    });
  server.registerTool('stream', {
    description: 'Emits progress notifications and log messages, then a result',
    inputSchema: { count: z.number().int().min(1).max(100000).optional(),
      interval_ms: z.number().int().min(0).max(10000).optional() },
  }, async ({ count = 5, interval_ms: every = 20 }, extra) => {
    state.call('stream');
    const token = extra._meta && extra._meta.progressToken;
    for (let i = 1; i <= count; i++) {
      if (extra.signal.aborted) break;
      if (token !== undefined) {
        await extra.sendNotification({ method: 'notifications/progress',
          params: { progressToken: token, progress: i, total: count, message: `step ${i}` } });
      }
      await extra.sendNotification({ method: 'notifications/message',
        params: { level: 'info', logger: NAME, data: `step ${i} of ${count}` } });
      if (every) await new Promise((r) => setTimeout(r, every));
    }
    return { content: [{ type: 'text', text: `streamed ${count}` }] };
  });
  server.registerTool('forbidden', { description: 'No policy allows this tool', inputSchema: {} },
    async () => {
      state.call('forbidden');
      return { content: [{ type: 'text', text: 'the gateway let a forbidden call through' }] };
    });
  server.registerResource('greeting', 'note://greeting',
    { description: 'A greeting', mimeType: 'text/plain' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'hello from v1' }] }));
  server.registerPrompt('greet', { description: 'Greets someone', argsSchema: { name: z.string() } },
    ({ name }) => ({ messages: [{ role: 'user', content: { type: 'text', text: `Say hello to ${name}` } }] }));
  return server;
}

const sessions = new Map(); // session id -> transport

async function handle(req, res) {
  if (!state.authorize(req)) return unauthorized(res);
  const sid = req.headers['mcp-session-id'];
  if (req.method === 'POST') {
    let body;
    try {
      body = JSON.parse((await readBody(req)).toString('utf8'));
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' });
      return res.end('{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}');
    }
    if (body && body.method) state.method(body.method);
    let transport = sid ? sessions.get(sid) : undefined;
    if (!transport && !sid && isInitializeRequest(body)) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await build().connect(transport);
    }
    if (!transport) {
      res.writeHead(sid ? 404 : 400, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ jsonrpc: '2.0', id: null,
        error: { code: -32000, message: sid ? 'unknown session' : 'no session: initialize first' } }));
    }
    return transport.handleRequest(req, res, body);
  }
  if (req.method === 'GET' || req.method === 'DELETE') {
    const transport = sid && sessions.get(sid);
    if (!transport) {
      res.writeHead(404, { 'content-type': 'application/json' });
      return res.end('{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"unknown session"}}');
    }
    return transport.handleRequest(req, res);
  }
  res.writeHead(405, { allow: 'GET, POST, DELETE' });
  res.end();
}

const httpServer = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error(`server_v1: ${e && e.stack ? e.stack : e}`);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});
await listen(httpServer);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
