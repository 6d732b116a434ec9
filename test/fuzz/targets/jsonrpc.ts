// The engine server's JSON-RPC surface (engine/server/engine-server.ts over vscode-jsonrpc), fed
// what a misbehaving or hostile client could send: the input is a JSON message or a list of them
// (first byte even: framed with a correct Content-Length), or raw bytes on the stream (odd: the
// framing itself). A fresh server per input. Post-conditions: every request with an id gets exactly
// one response within the budget, and no response is an InternalError (an exception the handlers
// did not turn into a clear error). Paths in messages are moved into a scratch folder and
// titan/exit (which ends the process by design) is left out.
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import * as fc from 'fast-check';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter, type Message, type ResponseMessage } from 'vscode-jsonrpc/node';
import { EngineServer } from '../../../engine/server/engine-server';
import { fuzzTempDir, OracleViolation, utf8, type FuzzTarget } from '../target';

let sandbox = '';
const PATH_KEYS = new Set(['globalStorageDir', 'demoModelDir', 'modelPath', 'memoryStorageDir', 'source', 'out', 'adapter', 'path', 'extraPaths', 'changedPaths']);
const METHODS = ['titan/initialize', 'titan/configure', 'titan/status', 'titan/listModels', 'titan/validateSettings', 'titan/titanize', 'titan/updateMemory', 'titan/ask', 'titan/stop', 'titan/shutdown', 'titan/filesChanged', '$/cancelRequest', '$/setTrace', '$/progress', 'unknown/method', ''];
const REQUEST_BUDGET_MS = 4000;

function sandboxed(value: unknown, key?: string): unknown {
  if (typeof value === 'string') {
    if ((key && PATH_KEYS.has(key)) || value.startsWith('/') || value.includes('..') || value.startsWith('~') || /^[A-Za-z]:/.test(value)) {
      return path.join(sandbox, 'p', value.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^\.+/, '_').slice(0, 100));
    }
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => sandboxed(v, key));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, sandboxed(v, k)]));
  return value;
}

const settings = fc.record({
  operator: fc.constantFrom('delta_rule', 'delta_product', 'nope', 1, null),
  magWeight: fc.oneof(fc.double(), fc.constantFrom('0.5', '', null)),
  window: fc.oneof(fc.nat(2048), fc.constantFrom('512', '', null, -1)),
  chunk: fc.oneof(fc.nat(256), fc.constantFrom('64', 'abc')),
  semantics: fc.constantFrom('exact', 'tptt-0.12', 'x'),
  dtype: fc.constantFrom('fp32', 'fp16', 'int8'),
  crossGate: fc.oneof(fc.boolean(), fc.constant('true')),
  adapter: fc.constantFrom('', 'adapter', '/abs/adapter'),
}, { requiredKeys: [] });

const params = fc.oneof(
  fc.record({ clientName: fc.string({ maxLength: 8 }), globalStorageDir: fc.constantFrom('storage', ''), demoModelDir: fc.constantFrom('demo', '') }, { requiredKeys: [] }),
  fc.record({ modelPath: fc.constantFrom(null, 'pkg', ''), provider: fc.constantFrom('auto', 'cpu', 'webgpu', 'tpu'), threads: fc.oneof(fc.nat(8), fc.constant(-1)), workspaces: fc.array(fc.record({ path: fc.constantFrom('ws', '') }), { maxLength: 2 }), exclude: fc.array(fc.string({ maxLength: 5 }), { maxLength: 2 }), memoryStorageDir: fc.constantFrom(null, 'mem'), maxFileBytes: fc.constantFrom(1, 1048576, 0), storageCapBytes: fc.constantFrom(1, 2 ** 40), progressToken: fc.oneof(fc.string({ maxLength: 4 }), fc.nat()) }, { requiredKeys: [] }),
  fc.record({ settings, source: fc.constantFrom('model', '', 'x') }, { requiredKeys: [] }),
  fc.record({ source: fc.constantFrom('model', ''), settings, out: fc.constantFrom('out', '') }, { requiredKeys: [] }),
  fc.record({ question: fc.oneof(fc.string({ maxLength: 20 }), fc.constant(' ')), maxNewTokens: fc.oneof(fc.nat(5000), fc.constant(1.5)), temperature: fc.double(), retrieval: fc.boolean(), memory: fc.boolean() }, { requiredKeys: [] }),
  fc.record({ changes: fc.array(fc.record({ path: fc.constantFrom('a.ts', ''), kind: fc.constantFrom('created', 'changed', 'deleted', 'moved') }), { maxLength: 3 }) }),
  fc.record({ changedPaths: fc.array(fc.constantFrom('a.ts', '/x'), { maxLength: 2 }), rebuild: fc.boolean() }, { requiredKeys: [] }),
  fc.record({ id: fc.oneof(fc.nat(5), fc.string({ maxLength: 3 })) }),
  fc.jsonValue({ maxDepth: 2 }),
);

const message = fc.record({
  jsonrpc: fc.oneof({ arbitrary: fc.constant('2.0'), weight: 9 }, { arbitrary: fc.constantFrom('1.0', 2, null), weight: 1 }),
  id: fc.oneof(fc.nat(20), fc.string({ maxLength: 4 }), fc.constantFrom(null, 1.5, [], {})),
  method: fc.oneof({ arbitrary: fc.constantFrom(...METHODS), weight: 9 }, { arbitrary: fc.oneof(fc.string({ maxLength: 10 }), fc.constant(7)), weight: 1 }),
  params,
  result: fc.jsonValue({ maxDepth: 1 }),
  error: fc.record({ code: fc.integer(), message: fc.string({ maxLength: 5 }) }),
}, { requiredKeys: ['jsonrpc'] });

const arbitrary: fc.Arbitrary<Uint8Array> = fc.oneof(
  { arbitrary: fc.array(message, { minLength: 1, maxLength: 5 }).map((msgs) => withMode(0, JSON.stringify(msgs.length === 1 ? msgs[0] : msgs))), weight: 8 },
  { arbitrary: fc.array(fc.oneof(fc.constantFrom('Content-Length: 2\r\n\r\n{}', 'Content-Length: -1\r\n\r\n', 'Content-Length: 99999999999\r\n\r\n{', 'Content-Type: application/vscode-jsonrpc; charset=latin1\r\n', 'X: y\r\n\r\n', '\r\n\r\n', 'Content-Length: 5\r\n\r\n[1,2]', 'Content-Length: 4\r\n\r\nnull'), fc.string({ maxLength: 30 })), { maxLength: 4 }).map((parts) => withMode(1, parts.join(''))), weight: 2 },
);

function withMode(mode: number, text: string): Uint8Array {
  const body = utf8(text);
  const out = new Uint8Array(body.length + 1);
  out[0] = mode;
  out.set(body, 1);
  return out;
}

function frame(msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  return Buffer.concat([Buffer.from(`Content-Length: ${body.length}\r\n\r\n`, 'ascii'), body]);
}

export const target: FuzzTarget = {
  name: 'jsonrpc',
  description: 'engine server JSON-RPC: framing (Content-Length headers), message shapes, unknown methods, ids, params of every request against its schema',
  coverage: ['/engine/server/', '/protocol/', 'vscode-jsonrpc/lib/common/connection', 'vscode-jsonrpc/lib/common/messageReader'],
  arbitrary,
  dictionary: [...METHODS.map((m) => JSON.stringify(m)), '"jsonrpc":"2.0"', '"id"', '"params"', '"method"', 'Content-Length: ', '\r\n\r\n', '"progressToken"', '"settings"', '"question"'],
  maxLen: 1 << 15,
  budgetMs: 15_000,
  setup() {
    sandbox = fuzzTempDir('jsonrpc');
  },
  async run(input) {
    const toServer = new PassThrough();
    const fromServer = new PassThrough();
    const connection = createMessageConnection(new StreamMessageReader(toServer), new StreamMessageWriter(fromServer), { error: () => undefined, warn: () => undefined, info: () => undefined, log: () => undefined });
    const responses: ResponseMessage[] = [];
    const reader = new StreamMessageReader(fromServer);
    let onResponse: (() => void) | null = null;
    reader.listen((m: Message) => {
      if ('id' in m && !('method' in m)) responses.push(m as ResponseMessage);
      onResponse?.();
    });
    const server = new EngineServer(connection);
    server.listen();
    const expected: (string | number)[] = [];
    try {
      const body = input.subarray(1);
      if ((input[0] ?? 0) % 2 === 1) {
        toServer.write(Buffer.from(body));
        await new Promise((r) => setTimeout(r, 5));
        return 'accepted';
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(new TextDecoder().decode(body));
      } catch {
        toServer.write(Buffer.concat([Buffer.from(`Content-Length: ${body.length}\r\n\r\n`), body]));
        await new Promise((r) => setTimeout(r, 5));
        return 'rejected';
      }
      const messages = (Array.isArray(parsed) ? parsed : [parsed]).map((m) => sandboxed(m));
      for (const m of messages) {
        const msg = m as { method?: unknown; id?: unknown };
        if (msg && typeof msg === 'object' && msg.method === 'titan/exit') continue;
        if (msg && typeof msg === 'object' && typeof msg.method === 'string' && (typeof msg.id === 'number' || typeof msg.id === 'string')) expected.push(msg.id);
        toServer.write(frame(m));
      }
      const deadline = Date.now() + REQUEST_BUDGET_MS;
      // Ids are compared as strings and counted once: vscode-jsonrpc keys requests by String(id), so a
      // client that reuses an id (or sends "4" and 4) gets one answer for them, which is no server fault.
      const keys = [...new Set(expected.map((id) => String(id)))];
      const answeredKey = (key: string) => responses.some((r) => r.id !== null && String(r.id) === key);
      const answered = () => keys.every(answeredKey);
      while (!answered() && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          onResponse = resolve;
          setTimeout(resolve, 50);
        });
      }
      const missing = keys.filter((key) => !answeredKey(key));
      if (missing.length) throw new OracleViolation(`no response within ${REQUEST_BUDGET_MS} ms to request id(s) ${JSON.stringify(missing)}`);
      const internal = responses.find((r) => r.error?.code === -32603);
      if (internal) throw new OracleViolation(`InternalError response: ${internal.error!.message.split('\n')[0]}`);
      return responses.some((r) => r.error) ? 'rejected' : 'accepted';
    } finally {
      connection.dispose();
      reader.dispose();
      toServer.end();
      fromServer.end();
    }
  },
};
