// An MCP agent for revision 2025-11-25 written with the official TypeScript
// SDK v1 (@modelcontextprotocol/sdk), talking to airlock-relay with its own
// API key: initialize, tools/list, tools/call, a streamed (SSE) tool result
// with progress notifications, prompts, resources, the GET SSE stream,
// DELETE of the session; a call of a tool its policy refuses. Every byte it
// receives is recorded (fetch wrapped) and searched for the canary in every
// encoding the scrubber handles.
//
// Environment:
//   MCP_URL          https://127.0.0.1:PORT/mcp/<tunnel>/<server> (relay agent port)
//   AGENT_KEY_FILE   the agent's relay API key
//   CANARY_FILE      the credential value the gateway injects upstream
//   STATE_FILE       the upstream server's state file (server_v1.mjs)
//   TRANSPORT        h1 (undici fetch, HTTP/1.1; default) or h2 (node:http2)
//   CHECK_PREFIX     prefix of the check names (default "v1-<transport>")
// TLS: the relay's CA through NODE_EXTRA_CA_CERTS. Prints PASS/FAIL lines;
// exits 1 if any check failed.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import {
  canaryForms, check, expect, failed, h2fetch, loadCanary, readSecretFile, readState,
  recordingFetch, redact, scanForms,
} from './common.mjs';

const env = process.env;
const transportKind = env.TRANSPORT || 'h1';
const P = env.CHECK_PREFIX || `v1-${transportKind}`;
const canary = loadCanary();
const agentKey = readSecretFile(env.AGENT_KEY_FILE);
redact(canary, agentKey);
const forms = canaryForms(canary);
const h2 = transportKind === 'h2' ? h2fetch() : null;
const rfetch = recordingFetch(h2 || globalThis.fetch);
const marker = `marker-${process.pid}-${Date.now()}`;

const transport = new StreamableHTTPClientTransport(new URL(env.MCP_URL), {
  fetch: rfetch,
  requestInit: { headers: { Authorization: `Bearer ${agentKey}` } },
  reconnectionOptions: { maxRetries: 0, initialReconnectionDelay: 1000,
    maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1 },
});
const client = new Client({ name: 'airlock-agent-v1', version: '1.0.0' });
const logs = [];
client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => logs.push(n.params));

function lastEntry(method, pred = () => true) {
  const l = rfetch.log.filter((e) => e.method === method && pred(e));
  return l[l.length - 1];
}

await check(`${P}-initialize`, async () => {
  await client.connect(transport);
  const v = client.getServerVersion();
  expect(v && v.name === 'airlock-test-v1', `server name ${v && v.name}`);
  expect(transport.sessionId, 'no Mcp-Session-Id from the server');
  return { note: `protocol ${transport.protocolVersion || '?'}` };
});

await check(`${P}-tools-list`, async () => {
  const r = await client.listTools();
  const names = r.tools.map((t) => t.name).sort();
  expect(names.includes('echo') && names.includes('stream'), `tools ${names.join(',')}`);
  expect(!names.includes('forbidden'), 'the never-allowed tool "forbidden" is listed');
  return { note: names.join(',') };
});

await check(`${P}-tools-call`, async () => {
  const r = await client.callTool({ name: 'echo', arguments: { text: marker } });
  expect(r.content[0].text === `echo: ${marker}`, 'wrong echo result');
});

await check(`${P}-sse-result`, async () => {
  const progress = [];
  const before = logs.length;
  const r = await client.callTool({ name: 'stream', arguments: { count: 5, interval_ms: 20 } },
    undefined, { onprogress: (p) => progress.push(p.progress) });
  expect(r.content[0].text === 'streamed 5', 'wrong stream result');
  expect(progress.join(',') === '1,2,3,4,5', `progress notifications ${progress.join(',')}`);
  expect(logs.length - before === 5, `log notifications ${logs.length - before}`);
  const e = lastEntry('POST');
  expect(/text\/event-stream/.test(e.headers['content-type'] || ''),
    `content-type ${e.headers['content-type']}`);
});

await check(`${P}-prompt`, async () => {
  const l = await client.listPrompts();
  expect(l.prompts.some((p) => p.name === 'greet'), 'prompt greet not listed');
  const r = await client.getPrompt({ name: 'greet', arguments: { name: 'Ada' } });
  expect(r.messages[0].content.text === 'Say hello to Ada', 'wrong prompt text');
});

await check(`${P}-resource`, async () => {
  const l = await client.listResources();
  expect(l.resources.some((x) => x.uri === 'note://greeting'), 'resource not listed');
  const r = await client.readResource({ uri: 'note://greeting' });
  expect(r.contents[0].text === 'hello from v1', 'wrong resource text');
});

await check(`${P}-forbidden-call-denied`, async () => {
  let err = null;
  try {
    await client.callTool({ name: 'forbidden', arguments: {} });
  } catch (e) {
    err = e;
  }
  expect(err, 'the call of a tool outside the allow-list succeeded');
  const e = lastEntry('POST');
  expect(e.status === 403, `HTTP status ${e.status}`);
  expect(e.headers['airlock-error'], 'no airlock-error header');
  const body = JSON.parse(Buffer.concat(e.body).toString('utf8'));
  expect(body.jsonrpc === '2.0' && body.error && body.error.code === -32001,
    `body ${JSON.stringify(body).slice(0, 200)}`);
  return { note: `403 ${e.headers['airlock-error']}` };
});

await check(`${P}-get-sse-stream`, async () => {
  // the SDK opens it in the background after initialization: wait for its head
  for (let i = 0; i < 300 && !lastEntry('GET'); i++) await new Promise((r) => setTimeout(r, 100));
  const g = lastEntry('GET');
  expect(g, 'no response head of the SDK\'s GET SSE stream within 30 s');
  expect(g.status === 200 && /text\/event-stream/.test(g.headers['content-type'] || ''),
    `GET answered ${g.status} ${g.headers['content-type']}`);
});

await check(`${P}-delete-session`, async () => {
  await transport.terminateSession();
  const d = lastEntry('DELETE');
  expect(d && d.status === 200, `DELETE answered ${d && d.status}`);
  expect(transport.sessionId === undefined, 'session id kept after DELETE');
});
await client.close().catch(() => {});
if (h2) h2.close();

await check(`${P}-server-saw-token`, async () => {
  const s = readState(env.STATE_FILE);
  expect(s.authorized > 0, 'the server never received the injected token');
  expect(s.unauthorized === 0, `${s.unauthorized} request(s) reached the server without it`);
  expect(s.agent_key_seen === 0, 'the agent\'s API key reached the server');
  expect(s.stripped_headers_seen.length === 0,
    `headers the relay must strip reached it: ${s.stripped_headers_seen.join(',')}`);
  expect(s.forbidden_calls === 0, 'the forbidden tool ran');
  return { note: `${s.authorized} authorized requests` };
});

await check(`${P}-client-never-saw-canary`, async () => {
  const all = rfetch.all();
  expect(all.length > 0, 'nothing received');
  const found = scanForms(all, forms);
  expect(found.length === 0, `canary found in what the agent received: ${found.join(',')}`);
  return { note: `${all.length} bytes in ${rfetch.log.length} responses, ${forms.length} forms` };
});

process.exit(failed() ? 1 : 0);
