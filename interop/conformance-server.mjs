#!/usr/bin/env node
// A stdio MCP server, built on the official TypeScript SDK, that implements
// the tools, resources and prompts the server scenarios of
// @modelcontextprotocol/conformance expect (their names and payloads are the
// ones the scenarios' own descriptions require: `conformance list --server`).
//
// It speaks stdio only. scripts/test.sh runs it behind mcp-proxy, so every
// HTTP-side behaviour the conformance suite sees (sessions, SSE streams,
// routing of notifications and server-to-client requests, Host checks) is
// the proxy's, while the MCP semantics are the SDK's.

import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ErrorCode,
  ReadResourceRequestSchema,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

// A 1x1 PNG and a minimal WAV, base64.
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (t) => ({ content: [{ type: 'text', text: t }] });
const noArgs = { type: 'object', properties: {} };

const server = new Server(
  { name: 'mcp-sidecar-conformance-stdio', version: '1.0.0' },
  {
    capabilities: {
      tools: { listChanged: true },
      resources: { subscribe: true, listChanged: true },
      prompts: { listChanged: true },
      logging: {},
      completions: {},
    },
  },
);

const log = (data) =>
  server.notification({
    method: 'notifications/message',
    params: { level: 'info', logger: 'conformance-stdio', data },
  });

async function elicit(params) {
  try {
    const r = await server.elicitInput(params);
    return text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
  } catch (e) {
    return { ...text(`Elicitation not supported or error: ${e.message}`), isError: true };
  }
}

const tools = {
  test_simple_text: {
    description: 'Returns simple text content',
    run: async () => text('This is a simple text response for testing.'),
  },
  test_image_content: {
    description: 'Returns image content',
    run: async () => ({ content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] }),
  },
  test_audio_content: {
    description: 'Returns audio content',
    run: async () => ({ content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] }),
  },
  test_embedded_resource: {
    description: 'Returns an embedded resource',
    run: async () => ({
      content: [
        {
          type: 'resource',
          resource: {
            uri: 'test://embedded-resource',
            mimeType: 'text/plain',
            text: 'This is an embedded resource content.',
          },
        },
      ],
    }),
  },
  test_multiple_content_types: {
    description: 'Returns text, image and resource content',
    run: async () => ({
      content: [
        { type: 'text', text: 'Multiple content types test:' },
        { type: 'image', data: PNG, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 }),
          },
        },
      ],
    }),
  },
  test_tool_with_logging: {
    description: 'Sends three log notifications while running',
    run: async () => {
      await log('Tool execution started');
      await sleep(50);
      await log('Tool processing data');
      await sleep(50);
      await log('Tool execution completed');
      return text('Tool with logging executed successfully');
    },
  },
  test_tool_with_progress: {
    description: 'Sends progress 0, 50 and 100 of 100 when given a progress token',
    run: async (_args, req, extra) => {
      const token = req.params._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (token !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken: token, progress, total: 100, message: `Completed step ${progress} of 100` },
          });
        }
        if (progress < 100) await sleep(50);
      }
      return text(String(token ?? 'no progress token'));
    },
  },
  test_error_handling: {
    description: 'Always fails',
    run: async () => ({
      isError: true,
      content: [{ type: 'text', text: 'This tool intentionally returns an error for testing' }],
    }),
  },
  test_reconnection: {
    description: 'Returns after a short delay (a stdio server cannot close HTTP streams; the proxy owns them)',
    run: async () => {
      await sleep(100);
      return text('Reconnection test completed successfully.');
    },
  },
  test_sampling: {
    description: 'Asks the client to sample an LLM',
    inputSchema: {
      type: 'object',
      properties: { prompt: { type: 'string', description: 'The prompt to send to the LLM' } },
      required: ['prompt'],
    },
    run: async (args) => {
      try {
        const r = await server.createMessage({
          messages: [{ role: 'user', content: { type: 'text', text: String(args.prompt) } }],
          maxTokens: 100,
        });
        return text(`LLM response: ${r.content?.text ?? 'No response'}`);
      } catch (e) {
        return { ...text(`Sampling not supported or error: ${e.message}`), isError: true };
      }
    },
  },
  test_elicitation: {
    description: 'Asks the client for user input',
    inputSchema: {
      type: 'object',
      properties: { message: { type: 'string', description: 'The message to show the user' } },
      required: ['message'],
    },
    run: async (args) =>
      elicit({
        message: String(args.message),
        requestedSchema: {
          type: 'object',
          properties: {
            username: { type: 'string', description: "User's response" },
            email: { type: 'string', description: "User's email address" },
          },
          required: ['username', 'email'],
        },
      }),
  },
  test_elicitation_sep1034_defaults: {
    description: 'Elicitation whose schema has defaults for every primitive type (SEP-1034)',
    run: async () =>
      elicit({
        message: 'Please review and update the form fields with defaults',
        requestedSchema: {
          type: 'object',
          properties: {
            name: { type: 'string', description: 'User name', default: 'John Doe' },
            age: { type: 'integer', description: 'User age', default: 30 },
            score: { type: 'number', description: 'User score', default: 95.5 },
            status: {
              type: 'string',
              description: 'User status',
              enum: ['active', 'inactive', 'pending'],
              default: 'active',
            },
            verified: { type: 'boolean', description: 'Verification status', default: true },
          },
          required: [],
        },
      }),
  },
  test_elicitation_sep1330_enums: {
    description: 'Elicitation with the five enum schema variants (SEP-1330)',
    run: async () => {
      const titled = (prefix, word) =>
        ['First', 'Second', 'Third'].map((t, i) => ({ const: `value${i + 1}`, title: `${t} ${word}` }));
      return elicit({
        message: 'Please select options from the enum fields',
        requestedSchema: {
          type: 'object',
          properties: {
            untitledSingle: { type: 'string', description: 'Select one option', enum: ['option1', 'option2', 'option3'] },
            titledSingle: { type: 'string', description: 'Select one option with titles', oneOf: titled('v', 'Option') },
            legacyEnum: {
              type: 'string',
              description: 'Select one option (legacy)',
              enum: ['opt1', 'opt2', 'opt3'],
              enumNames: ['Option One', 'Option Two', 'Option Three'],
            },
            untitledMulti: {
              type: 'array',
              description: 'Select multiple options',
              minItems: 1,
              maxItems: 3,
              items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
            },
            titledMulti: {
              type: 'array',
              description: 'Select multiple options with titles',
              minItems: 1,
              maxItems: 3,
              items: { anyOf: titled('v', 'Choice') },
            },
          },
          required: [],
        },
      });
    },
  },
  json_schema_2020_12_tool: {
    description: 'Tool with JSON Schema 2020-12 features (SEP-1613)',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: {
        address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } },
      },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    },
    run: async (args) => text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`),
  },
};

server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: Object.entries(tools).map(([name, t]) => ({
    name,
    description: t.description,
    inputSchema: t.inputSchema ?? noArgs,
  })),
}));

server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
  const tool = tools[req.params.name];
  if (!tool) throw new McpError(ErrorCode.InvalidParams, `unknown tool: ${req.params.name}`);
  return tool.run(req.params.arguments ?? {}, req, extra);
});

const resources = {
  'test://static-text': {
    name: 'static-text',
    description: 'A static text resource',
    mimeType: 'text/plain',
    text: 'This is the content of the static text resource.',
  },
  'test://static-binary': {
    name: 'static-binary',
    description: 'A static binary resource (PNG)',
    mimeType: 'image/png',
    blob: PNG,
  },
  'test://watched-resource': {
    name: 'watched-resource',
    description: 'A resource clients may subscribe to',
    mimeType: 'text/plain',
    text: 'Watched resource content',
  },
};
const subscriptions = new Set();

server.setRequestHandler(ListResourcesRequestSchema, async () => ({
  resources: Object.entries(resources).map(([uri, r]) => ({
    uri,
    name: r.name,
    description: r.description,
    mimeType: r.mimeType,
  })),
}));

server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
  resourceTemplates: [
    {
      uriTemplate: 'test://template/{id}/data',
      name: 'template',
      description: 'A resource template with parameter substitution',
      mimeType: 'application/json',
    },
  ],
}));

server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
  const uri = req.params.uri;
  const r = resources[uri];
  if (r) {
    const c = { uri, mimeType: r.mimeType };
    return { contents: [r.blob ? { ...c, blob: r.blob } : { ...c, text: r.text }] };
  }
  const m = /^test:\/\/template\/([^/]+)\/data$/.exec(uri);
  if (m) {
    const id = m[1];
    return {
      contents: [
        {
          uri,
          mimeType: 'application/json',
          text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
        },
      ],
    };
  }
  throw new McpError(-32002, `resource not found: ${uri}`);
});

server.setRequestHandler(SubscribeRequestSchema, async (req) => {
  subscriptions.add(req.params.uri);
  return {};
});
server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
  subscriptions.delete(req.params.uri);
  return {};
});

const prompts = {
  test_simple_prompt: {
    description: 'A simple prompt without arguments',
    get: () => [{ role: 'user', content: { type: 'text', text: 'This is a simple prompt for testing.' } }],
  },
  test_prompt_with_arguments: {
    description: 'A prompt with required arguments',
    arguments: [
      { name: 'arg1', description: 'First test argument', required: true },
      { name: 'arg2', description: 'Second test argument', required: true },
    ],
    get: (a) => [
      {
        role: 'user',
        content: { type: 'text', text: `Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'` },
      },
    ],
  },
  test_prompt_with_embedded_resource: {
    description: 'A prompt that includes an embedded resource',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
    get: (a) => [
      {
        role: 'user',
        content: {
          type: 'resource',
          resource: { uri: a.resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
        },
      },
      { role: 'user', content: { type: 'text', text: 'Please process the embedded resource above.' } },
    ],
  },
  test_prompt_with_image: {
    description: 'A prompt that includes image content',
    get: () => [
      { role: 'user', content: { type: 'image', data: PNG, mimeType: 'image/png' } },
      { role: 'user', content: { type: 'text', text: 'Please analyze the image above.' } },
    ],
  },
};

server.setRequestHandler(ListPromptsRequestSchema, async () => ({
  prompts: Object.entries(prompts).map(([name, p]) => ({
    name,
    description: p.description,
    ...(p.arguments ? { arguments: p.arguments } : {}),
  })),
}));

server.setRequestHandler(GetPromptRequestSchema, async (req) => {
  const p = prompts[req.params.name];
  if (!p) throw new McpError(ErrorCode.InvalidParams, `unknown prompt: ${req.params.name}`);
  return { messages: p.get(req.params.arguments ?? {}) };
});

server.setRequestHandler(SetLevelRequestSchema, async () => ({}));

server.setRequestHandler(CompleteRequestSchema, async () => ({
  completion: { values: [], total: 0, hasMore: false },
}));

await server.connect(new StdioServerTransport());
