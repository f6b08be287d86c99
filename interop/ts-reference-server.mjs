#!/usr/bin/env node
// Interop with a stdio server written by others: the official reference
// server @modelcontextprotocol/server-everything, run by mcp-proxy as its
// child, and the TypeScript SDK v1 as the client.
//
//   node ts-reference-server.mjs --base http://127.0.0.1:PORT
//
// Checks what crosses the proxy: tools/list, echo, get-sum (structured),
// get-tiny-image (base64 image content), a long-running operation with
// progress notifications, resources/list + resources/read, prompts/list,
// and a long answer: this server (the TypeScript SDK) writes the id after
// the result, which the proxy passes on as it arrives when the call is the
// only one in flight.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { args, assert, check, finish, skipped, textOf } from './lib/report.mjs';

const a = args();
const base = a.base ?? 'http://127.0.0.1:8080';
const S = a.label ?? 'reference-server';
const client = new Client({ name: 'mcp-sidecar-interop-ref', version: '1.0.0' }, { capabilities: {} });
const transport = new StreamableHTTPClientTransport(new URL(a.mcp ?? '/mcp', base));

const connected = await check(`${S}/initialize`, async () => {
  await client.connect(transport);
  const v = client.getServerVersion();
  assert(v?.name === 'mcp-servers/everything', `serverInfo ${JSON.stringify(v)}`);
  return true;
});
if (!connected) {
  for (const c of ['tools-list', 'echo', 'long-answer', 'get-sum', 'image', 'progress', 'resources', 'prompts']) skipped(`${S}/${c}`, 'initialize failed');
  finish();
}

await check(`${S}/tools-list`, async () => {
  const names = (await client.listTools()).tools.map((t) => t.name);
  for (const n of ['echo', 'get-sum', 'get-tiny-image', 'trigger-long-running-operation']) {
    assert(names.includes(n), `tool ${n} missing from ${names}`);
  }
});

await check(`${S}/echo`, async () => {
  const r = await client.callTool({ name: 'echo', arguments: { message: 'ünïcødé ✓ "quoted"\nnewline' } });
  assert(textOf(r)?.endsWith('ünïcødé ✓ "quoted"\nnewline'), `echo returned ${JSON.stringify(r)}`);
});

await check(`${S}/long-answer`, async () => {
  // 300,000 characters: past the proxy's 128 KiB cut-through threshold.
  const message = 'ü0123456789'.repeat(27273).slice(0, 300000);
  const r = await client.callTool({ name: 'echo', arguments: { message } });
  assert(textOf(r)?.endsWith(message), `long echo returned ${JSON.stringify(r).slice(0, 300)}`);
});

await check(`${S}/get-sum`, async () => {
  const r = await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 40 } });
  assert(textOf(r)?.includes('42'), `get-sum returned ${JSON.stringify(r)}`);
});

await check(`${S}/image`, async () => {
  const r = await client.callTool({ name: 'get-tiny-image', arguments: {} });
  const img = r.content.find((c) => c.type === 'image');
  assert(img && img.mimeType === 'image/png' && Buffer.from(img.data, 'base64').subarray(1, 4).toString() === 'PNG',
    `no PNG image content in ${JSON.stringify(r).slice(0, 300)}`);
});

await check(`${S}/progress`, async () => {
  const seen = [];
  const r = await client.callTool(
    { name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 3 } },
    undefined,
    { onprogress: (p) => seen.push(p.progress), timeout: 15000 },
  );
  assert(!r.isError, `isError: ${JSON.stringify(r)}`);
  assert(seen.length === 3, `expected 3 progress notifications, got ${JSON.stringify(seen)}`);
});

await check(`${S}/resources`, async () => {
  const { resources } = await client.listResources();
  assert(resources.length > 0, 'no resources listed');
  const r = await client.readResource({ uri: resources[0].uri });
  assert(r.contents?.[0]?.uri === resources[0].uri, `read ${resources[0].uri}: ${JSON.stringify(r).slice(0, 300)}`);
});

await check(`${S}/prompts`, async () => {
  const { prompts } = await client.listPrompts();
  assert(prompts.length > 0, 'no prompts listed');
});

await transport.terminateSession().catch(() => {});
await client.close().catch(() => {});
finish();
