// An MCP server for revision 2026-07-28 (stateless: no session, each request
// carries its own protocol envelope; Mcp-Method / Mcp-Name headers) written
// with the official TypeScript SDK v2 (@modelcontextprotocol/server),
// createMcpHandler with legacy traffic rejected, served from node:http.
//
// Like server_v1.mjs it demands "Authorization: Bearer <canary>" (401
// otherwise) and writes what it saw to $STATE_FILE. Tools: echo {text};
// stream {count, interval_ms} (progress notifications before the result, so
// the response is an SSE stream); forbidden. Resource note://greeting; prompt
// greet {name}.
//
// Environment: CANARY_FILE (required), STATE_FILE, PORT (0 = any), HOST.
// Prints "listening PORT" on stdout.
import http from 'node:http';
import { McpServer, createMcpHandler } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { ServerState, listen, loadCanary, readBody, unauthorized } from './common.mjs';

const state = new ServerState(process.env.STATE_FILE, loadCanary());
const NAME = 'airlock-test-v2';

function build() {
  const server = new McpServer({ name: NAME, version: '2.0.0' });
  server.registerTool('echo',
    { description: 'Returns its text', inputSchema: z.object({ text: z.string() }) },
    async ({ text }) => {
      state.call('echo');
      return { content: [{ type: 'text', text: `echo: ${text}` }] };
    });
  server.registerTool('stream', {
    description: 'Emits progress notifications, then a result',
    inputSchema: z.object({ count: z.number().int().min(1).max(100000).optional(),
      interval_ms: z.number().int().min(0).max(10000).optional() }),
  }, async ({ count = 5, interval_ms: every = 20 }, ctx) => {
    state.call('stream');
    const token = ctx.mcpReq._meta && ctx.mcpReq._meta.progressToken;
    for (let i = 1; i <= count; i++) {
      if (ctx.mcpReq.signal.aborted) break;
      if (token !== undefined) {
        await ctx.mcpReq.notify({ method: 'notifications/progress',
          params: { progressToken: token, progress: i, total: count, message: `step ${i}` } });
      }
      if (every) await new Promise((r) => setTimeout(r, every));
    }
    return { content: [{ type: 'text', text: `streamed ${count}` }] };
  });
  server.registerTool('forbidden',
    { description: 'No policy allows this tool', inputSchema: z.object({}) },
    async () => {
      state.call('forbidden');
      return { content: [{ type: 'text', text: 'the gateway let a forbidden call through' }] };
    });
  server.registerResource('greeting', 'note://greeting',
    { description: 'A greeting', mimeType: 'text/plain' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'hello from v2' }] }));
  server.registerPrompt('greet',
    { description: 'Greets someone', argsSchema: z.object({ name: z.string() }) },
    ({ name }) => ({ messages: [{ role: 'user', content: { type: 'text', text: `Say hello to ${name}` } }] }));
  return server;
}

const handler = createMcpHandler(() => build(), {
  legacy: 'reject',
  onerror: (e) => console.error(`server_v2: ${e && e.message ? e.message : e}`),
});

// node:http request -> web Request -> handler.fetch -> node:http response.
async function handle(req, res) {
  if (!state.authorize(req)) return unauthorized(res);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    for (const x of Array.isArray(v) ? v : [v]) headers.append(k, x);
  }
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : await readBody(req);
  if (body && body.length) {
    try {
      const m = JSON.parse(body.toString('utf8'));
      if (m && m.method) state.method(m.method);
    } catch { /* the SDK answers it */ }
  }
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const request = new Request(`http://${req.headers.host || '127.0.0.1'}${req.url}`,
    { method: req.method, headers, body, signal: abort.signal });
  const response = await handler.fetch(request);
  const out = {};
  response.headers.forEach((v, k) => { out[k] = v; });
  res.writeHead(response.status, out);
  if (response.body) {
    for await (const chunk of response.body) {
      if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
    }
  }
  res.end();
}

const httpServer = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error(`server_v2: ${e && e.stack ? e.stack : e}`);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});
await listen(httpServer);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
