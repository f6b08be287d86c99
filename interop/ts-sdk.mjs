#!/usr/bin/env node
// Interop: the official TypeScript SDK v1 (@modelcontextprotocol/sdk) as a
// client of mcp-proxy serving the `everything` example server.
//
//   node ts-sdk.mjs --base http://127.0.0.1:PORT [--mcp /mcp] [--sse /sse]
//   node ts-sdk.mjs --coda http://127.0.0.1:PORT   (mcp-proxy over coda-mcp)
//
// Streamable HTTP (session era): initialize, tools/list, echo, progress with
// an onprogress handler, sampling answered by a client handler, DELETE of
// the session, and the session being gone afterwards.
// Legacy HTTP+SSE (2024-11-05): tools/list, echo, progress, sampling.
// Also roots, elicitation, cancellation (the child must see the id it was
// sent) and resources/updated on the Streamable HTTP session.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { args, assert, check, finish, skipped, textOf } from './lib/report.mjs';

const a = args();
const base = a.base ?? 'http://127.0.0.1:8080';
const mcpUrl = new URL(a.mcp ?? '/mcp', base);
const sseUrl = new URL(a.sse ?? '/sse', base);
const info = { name: 'mcp-sidecar-interop-ts', version: '1.0.0' };
const SAMPLED = 'sampled by the TypeScript SDK client handler';

async function streamable() {
  const S = `${a.label ?? 'ts-sdk'}/streamable`;
  const client = new Client(info, { capabilities: { sampling: {}, roots: { listChanged: true }, elicitation: {} } });
  const ROOT = { uri: 'file:///interop/root', name: 'interop-root' };
  client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [ROOT] }));
  client.setRequestHandler(ElicitRequestSchema, async (req) => ({
    action: 'accept',
    content: { answer: `elicited: ${req.params.message}` },
  }));
  const updates = [];
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    updates.push(n.params.uri);
  });
  let samplingRequests = 0;
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    samplingRequests += 1;
    const prompt = req.params.messages?.[0]?.content?.text;
    return {
      role: 'assistant',
      model: 'interop-test-model',
      stopReason: 'endTurn',
      content: { type: 'text', text: `${SAMPLED}: ${prompt}` },
    };
  });
  const transport = new StreamableHTTPClientTransport(mcpUrl);

  const connected = await check(`${S}/initialize`, async () => {
    await client.connect(transport);
    assert(transport.sessionId, 'the proxy gave no Mcp-Session-Id');
    const v = client.getServerVersion();
    assert(v && v.name, `no serverInfo: ${JSON.stringify(v)}`);
    return true;
  });
  if (!connected) {
    for (const c of ['tools-list', 'echo', 'progress', 'sampling', 'roots', 'elicitation', 'cancel', 'resource-updated', 'concurrent-posts', 'terminate']) skipped(`${S}/${c}`, 'initialize failed');
    return;
  }

  await check(`${S}/tools-list`, async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    for (const n of ['echo', 'progress', 'sample']) assert(names.includes(n), `tool ${n} missing from ${names}`);
  });

  await check(`${S}/echo`, async () => {
    const r = await client.callTool({ name: 'echo', arguments: { message: 'héllo from TS ✓' } });
    assert(!r.isError, `isError: ${JSON.stringify(r)}`);
    assert(textOf(r) === 'héllo from TS ✓', `echo returned ${JSON.stringify(r)}`);
  });

  await check(`${S}/progress`, async () => {
    const seen = [];
    const r = await client.callTool(
      { name: 'progress', arguments: { steps: 4, delay_ms: 20 } },
      undefined,
      { onprogress: (p) => seen.push(p), timeout: 15000 },
    );
    assert(!r.isError, `isError: ${JSON.stringify(r)}`);
    assert(seen.length === 4, `expected 4 progress notifications, got ${seen.length}: ${JSON.stringify(seen)}`);
    assert(seen.at(-1).progress === 4 && seen.at(-1).total === 4, `last progress ${JSON.stringify(seen.at(-1))}`);
  });

  await check(`${S}/sampling`, async () => {
    const r = await client.callTool({ name: 'sample', arguments: { prompt: 'say hi' } }, undefined, { timeout: 15000 });
    assert(samplingRequests === 1, `sampling handler ran ${samplingRequests} times`);
    assert(!r.isError, `isError: ${JSON.stringify(r)}`);
    assert(textOf(r) === `${SAMPLED}: say hi`, `sample returned ${JSON.stringify(r)}`);
  });

  await check(`${S}/roots`, async () => {
    const r = await client.callTool({ name: 'roots', arguments: {} }, undefined, { timeout: 15000 });
    assert(!r.isError && JSON.parse(textOf(r))[0]?.uri === ROOT.uri, `roots returned ${JSON.stringify(r)}`);
  });

  await check(`${S}/elicitation`, async () => {
    const r = await client.callTool({ name: 'elicit', arguments: { message: 'name?' } }, undefined, { timeout: 15000 });
    const got = JSON.parse(textOf(r) ?? 'null');
    assert(!r.isError && got?.action === 'accept' && got?.content?.answer === 'elicited: name?', `elicit returned ${JSON.stringify(r)}`);
  });

  // An aborted call sends notifications/cancelled; the child must receive it
  // with the id it saw (the proxy rewrites ids in --shared mode).
  await check(`${S}/cancel`, async () => {
    const ac = new AbortController();
    const call = client.callTool({ name: 'sleep', arguments: { ms: 10000 } }, undefined, { signal: ac.signal });
    setTimeout(() => ac.abort('interop cancel'), 300);
    await call.then(
      () => { throw new Error('the aborted call returned a result'); },
      () => {},
    );
    let seen = [];
    for (let i = 0; i < 20; i++) {
      seen = JSON.parse(textOf(await client.callTool({ name: 'cancelled', arguments: {} })) ?? '[]');
      if (seen.length > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert(seen.length === 1 && seen[0].matched === true, `the child saw cancellations ${JSON.stringify(seen)}; want one that matched its in-flight request`);
  });

  await check(`${S}/resource-updated`, async () => {
    await client.subscribeResource({ uri: 'demo://a' });
    const r = await client.callTool({ name: 'touch', arguments: { uri: 'demo://a' } });
    assert(textOf(r) === 'sent', `touch returned ${JSON.stringify(r)}`);
    for (let i = 0; i < 50 && !updates.includes('demo://a'); i++) await new Promise((res) => setTimeout(res, 100));
    assert(updates.includes('demo://a'), `no notifications/resources/updated arrived (got ${JSON.stringify(updates)})`);
    await client.unsubscribeResource({ uri: 'demo://a' });
  });

  // What the conformance scenario server-sse-multiple-streams checks, sent
  // with the negotiated MCP-Protocol-Version (the scenario pins 2025-03-26):
  // three POSTs in flight at once on one session, each answered.
  await check(`${S}/concurrent-posts`, async () => {
    const version = transport.protocolVersion;
    assert(version, 'the SDK recorded no negotiated protocol version');
    const post = (id) =>
      fetch(mcpUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'text/event-stream, application/json',
          'mcp-session-id': transport.sessionId,
          'mcp-protocol-version': version,
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id,
          method: 'tools/call',
          params: { name: 'sleep', arguments: { ms: 300 } },
        }),
      }).then(async (res) => ({ status: res.status, body: await res.text() }));
    const t0 = Date.now();
    const answers = await Promise.all([1001, 1002, 1003].map(post));
    const ms = Date.now() - t0;
    for (const [i, r] of answers.entries()) {
      assert(r.status === 200, `POST ${i} answered ${r.status}: ${r.body.slice(0, 200)}`);
      assert(r.body.includes(`"id":${1001 + i}`) && r.body.includes('slept 300'), `POST ${i} body: ${r.body.slice(0, 300)}`);
    }
    assert(ms < 850, `three 300 ms calls took ${ms} ms: served one after another, not concurrently`);
  });

  await check(`${S}/terminate`, async () => {
    const sid = transport.sessionId;
    await transport.terminateSession();
    assert(transport.sessionId === undefined, 'the SDK kept the session id after DELETE');
    // The session must be gone: a request that names it gets 404.
    const res = await fetch(mcpUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-session-id': sid,
        'mcp-protocol-version': transport.protocolVersion ?? '2025-11-25',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'tools/list' }),
    });
    await res.body?.cancel();
    assert(res.status === 404, `POST with the deleted session id answered ${res.status}, want 404`);
  });
  await client.close().catch(() => {});
}

async function legacySse() {
  const S = `${a.label ?? 'ts-sdk'}/sse-2024-11-05`;
  const client = new Client(info, { capabilities: { sampling: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
    role: 'assistant',
    model: 'interop-test-model',
    content: { type: 'text', text: `${SAMPLED} over SSE: ${req.params.messages?.[0]?.content?.text}` },
  }));
  const transport = new SSEClientTransport(sseUrl);
  const connected = await check(`${S}/initialize`, async () => {
    await client.connect(transport);
    return true;
  });
  if (!connected) {
    for (const c of ['tools-list', 'echo', 'progress', 'sampling']) skipped(`${S}/${c}`, 'initialize failed');
    return;
  }
  await check(`${S}/tools-list`, async () => {
    const { tools } = await client.listTools();
    assert(tools.some((t) => t.name === 'echo'), `no echo tool in ${tools.map((t) => t.name)}`);
  });
  await check(`${S}/echo`, async () => {
    const r = await client.callTool({ name: 'echo', arguments: { message: 'over legacy SSE' } });
    assert(textOf(r) === 'over legacy SSE', `echo returned ${JSON.stringify(r)}`);
  });
  await check(`${S}/progress`, async () => {
    const seen = [];
    const r = await client.callTool(
      { name: 'progress', arguments: { steps: 3, delay_ms: 20 } },
      undefined,
      { onprogress: (p) => seen.push(p.progress), timeout: 15000 },
    );
    // Not "all three": the SDK's SSEClientTransport handles a response at
    // once but a notification a microtask later, so when the last progress
    // and the result arrive in one read the SDK drops that progress itself
    // (protocol.js _onnotification vs _onresponse). The wire order is right.
    assert(!r.isError && textOf(r) === 'done 3', `progress returned ${JSON.stringify(r)}`);
    assert(seen.length >= 1 && seen.every((p, i) => p === i + 1), `progress notifications ${JSON.stringify(seen)}`);
  });
  await check(`${S}/sampling`, async () => {
    const r = await client.callTool({ name: 'sample', arguments: { prompt: 'hi' } }, undefined, { timeout: 15000 });
    assert(textOf(r) === `${SAMPLED} over SSE: hi`, `sample returned ${JSON.stringify(r)}`);
  });
  await client.close().catch(() => {});
}


// --coda URL: the tools of coda-mcp (behind mcp-proxy at URL, with no Coda
// reachable) as this SDK sees them: the whole tools/list must parse (v1
// rejected all of it when one output schema was a bare `true`), and a
// structured result must pass the SDK's own output-schema validation.
async function coda() {
  const S = `${a.label ?? 'ts-sdk'}/coda-mcp`;
  const client = new Client(info, { capabilities: {} });
  const connected = await check(`${S}/initialize`, async () => {
    await client.connect(new StreamableHTTPClientTransport(new URL('/mcp', a.coda)));
    return true;
  });
  if (!connected) {
    for (const c of ['tools-list', 'structured-result']) skipped(`${S}/${c}`, 'initialize failed');
    return;
  }
  await check(`${S}/tools-list`, async () => {
    const { tools } = await client.listTools();
    assert(tools.length >= 60, `only ${tools.length} tools`);
    assert(tools.some((t) => t.name === 'coda_list_rows'), 'no coda_list_rows');
    assert(tools.every((t) => t.outputSchema?.type === 'object'), 'a tool without an object outputSchema');
  });
  await check(`${S}/structured-result`, async () => {
    const r = await client.callTool({ name: 'coda_rate_limit_status', arguments: {} });
    assert(!r.isError && Array.isArray(r.structuredContent?.buckets), `returned ${JSON.stringify(r).slice(0, 300)}`);
  });
  await client.close().catch(() => {});
}

if (a.coda) {
  await coda();
} else {
  await streamable();
  await legacySse();
}
finish();
