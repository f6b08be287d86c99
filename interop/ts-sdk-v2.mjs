#!/usr/bin/env node
// Interop: the official TypeScript SDK v2 (@modelcontextprotocol/client),
// which speaks the stateless 2026-07-28 revision, as a client of mcp-proxy
// serving the `everything` example server (a 2025-era stdio child that the
// proxy translates for).
//
//   node ts-sdk-v2.mjs --base http://127.0.0.1:PORT [--mcp /mcp]
//   node ts-sdk-v2.mjs --coda http://127.0.0.1:PORT   (mcp-proxy over coda-mcp)
//
// ts-sdk-v2/pinned: versionNegotiation pinned to 2026-07-28 (server/discover
//   must offer it): tools/list, echo, progress with onprogress; a tool that
//   needs sampling fails promptly as a tool error for a client without the
//   sampling capability, and works for one with it: the proxy turns the
//   2025 child's sampling request into an input_required result, which the
//   SDK fulfils through its sampling handler and retries.
// ts-sdk-v2/auto: versionNegotiation 'auto' must pick the modern era.

import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { args, assert, check, finish, skipped, textOf } from './lib/report.mjs';

const a = args();
const base = a.base ?? 'http://127.0.0.1:8080';
const mcpUrl = new URL(a.mcp ?? '/mcp', base);
const info = { name: 'mcp-sidecar-interop-ts-v2', version: '1.0.0' };

async function pinned() {
  const S = 'ts-sdk-v2/pinned-2026-07-28';
  const client = new Client(info, {
    capabilities: {},
    versionNegotiation: { mode: { pin: '2026-07-28' }, probe: { timeoutMs: 10000 } },
  });
  const connected = await check(`${S}/discover`, async () => {
    await client.connect(new StreamableHTTPClientTransport(mcpUrl));
    assert(client.getProtocolEra() === 'modern', `era ${client.getProtocolEra()}`);
    assert(client.getNegotiatedProtocolVersion() === '2026-07-28', `version ${client.getNegotiatedProtocolVersion()}`);
    return true;
  });
  if (!connected) {
    for (const c of ['tools-list', 'echo', 'progress', 'sampling-without-capability', 'sampling-through-input-required']) skipped(`${S}/${c}`, 'discover failed');
    return;
  }
  await check(`${S}/tools-list`, async () => {
    const { tools } = await client.listTools();
    assert(tools.some((t) => t.name === 'echo'), `no echo tool in ${tools.map((t) => t.name)}`);
  });
  await check(`${S}/echo`, async () => {
    const r = await client.callTool({ name: 'echo', arguments: { message: 'stateless from TS ✓' } });
    assert(textOf(r) === 'stateless from TS ✓', `echo returned ${JSON.stringify(r)}`);
  });
  await check(`${S}/progress`, async () => {
    const seen = [];
    const r = await client.callTool(
      { name: 'progress', arguments: { steps: 3, delay_ms: 20 } },
      { onprogress: (p) => seen.push(p.progress), timeout: 15000 },
    );
    assert(!r.isError, `isError: ${JSON.stringify(r)}`);
    assert(JSON.stringify(seen) === '[1,2,3]', `progress notifications: ${JSON.stringify(seen)}`);
  });
  // This client declared no sampling: the proxy refuses the child's
  // request, and the tool call comes back promptly as a tool error.
  await check(`${S}/sampling-without-capability`, async () => {
    const r = await client.callTool({ name: 'sample', arguments: { prompt: 'hi' } }, { timeout: 10000 });
    assert(r.isError === true && /capability/.test(textOf(r) ?? ''), `sample returned ${JSON.stringify(r)}`);
  });
  await client.close().catch(() => {});

  const sampler = new Client(info, {
    capabilities: { sampling: {} },
    versionNegotiation: { mode: { pin: '2026-07-28' }, probe: { timeoutMs: 10000 } },
  });
  const asked = [];
  sampler.setRequestHandler('sampling/createMessage', async (request) => {
    const prompt = request.params.messages.at(-1)?.content?.text ?? '?';
    asked.push(prompt);
    return { model: 'ts-model', role: 'assistant', content: { type: 'text', text: `ts sampled <${prompt}>` } };
  });
  await check(`${S}/sampling-through-input-required`, async () => {
    await sampler.connect(new StreamableHTTPClientTransport(mcpUrl));
    const r = await sampler.callTool({ name: 'sample', arguments: { prompt: 'hi' } }, { timeout: 10000 });
    assert(textOf(r) === 'ts sampled <hi>', `sample returned ${JSON.stringify(r)}`);
    assert(JSON.stringify(asked) === '["hi"]', `sampling handler saw ${JSON.stringify(asked)}`);
  });
  await sampler.close().catch(() => {});
}

async function auto() {
  const S = 'ts-sdk-v2/auto';
  const client = new Client(info, { capabilities: {}, versionNegotiation: { mode: 'auto', probe: { timeoutMs: 10000 } } });
  const ok = await check(`${S}/negotiates-modern`, async () => {
    await client.connect(new StreamableHTTPClientTransport(mcpUrl));
    assert(client.getProtocolEra() === 'modern', `auto negotiation picked era ${client.getProtocolEra()} (${client.getNegotiatedProtocolVersion()})`);
    return true;
  });
  if (!ok) {
    skipped(`${S}/echo`, 'connect failed');
    return;
  }
  await check(`${S}/echo`, async () => {
    const r = await client.callTool({ name: 'echo', arguments: { message: 'auto' } });
    assert(textOf(r) === 'auto', `echo returned ${JSON.stringify(r)}`);
  });
  await client.close().catch(() => {});
}

// --coda URL: the tools of coda-mcp (behind mcp-proxy at URL, with no Coda
// reachable) as the v2 SDK sees them, negotiated as it likes: the whole
// tools/list must parse and a structured result must pass its validation.
async function coda() {
  const S = 'ts-sdk-v2/coda-mcp';
  const client = new Client(info, { capabilities: {} });
  const connected = await check(`${S}/connect`, async () => {
    await client.connect(new StreamableHTTPClientTransport(new URL('/mcp', a.coda)));
    return true;
  });
  if (!connected) {
    for (const c of ['tools-list', 'structured-result']) skipped(`${S}/${c}`, 'connect failed');
    return;
  }
  await check(`${S}/tools-list`, async () => {
    const { tools } = await client.listTools();
    assert(tools.length >= 60, `only ${tools.length} tools`);
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
  await pinned();
  await auto();
}
finish();
