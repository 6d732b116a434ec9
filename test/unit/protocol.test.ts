// The protocol's guards: every message between the extension and its webviews, and every engine
// request's params, is checked against its schema before use; anything else is rejected with a
// reason, whatever its shape.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AskParamsSchema,
  ConfigureParamsSchema,
  explainRejection,
  FilesChangedParamsSchema,
  parseChatEntries,
  parseChatToHost,
  parseHostToChat,
  parseHostToTitanize,
  parseParams,
  parseTitanizeToHost,
  TitanizeParamsSchema,
} from '../../protocol/index';

describe('chat webview → host messages', () => {
  const valid: unknown[] = [
    { type: 'ready' },
    { type: 'ask', id: 'w1', question: 'Where is the retry policy?' },
    { type: 'stop' },
    { type: 'openSource', path: 'src/retry.ts', line: 3 },
    { type: 'openSource', path: 'README.md' },
    { type: 'openLink', href: 'https://example.com' },
    { type: 'copy', text: 'const x = 1;' },
    { type: 'insert', text: 'const x = 1;' },
    { type: 'selectModel', path: null },
    { type: 'selectModel', path: '/models/a' },
    { type: 'rebuildMemory' },
    { type: 'titanize' },
    { type: 'clearHistory' },
  ];
  for (const msg of valid) {
    it(`accepts ${JSON.stringify(msg)}`, () => assert.deepEqual(parseChatToHost(msg), msg));
  }

  const invalid: [string, unknown][] = [
    ['null', null],
    ['a string', 'ask'],
    ['an array', [{ type: 'ready' }]],
    ['no type', { question: 'x' }],
    ['an unknown type', { type: 'runCommand', command: 'workbench.action.terminal.new' }],
    ['ask without id', { type: 'ask', question: 'x' }],
    ['ask with an empty question', { type: 'ask', id: 'a', question: '   ' }],
    ['ask with a numeric question', { type: 'ask', id: 'a', question: 42 }],
    ['ask with an oversized question', { type: 'ask', id: 'a', question: 'x'.repeat(20001) }],
    ['openSource with line 0', { type: 'openSource', path: 'a.ts', line: 0 }],
    ['openSource with a fractional line', { type: 'openSource', path: 'a.ts', line: 1.5 }],
    ['openSource with a string line', { type: 'openSource', path: 'a.ts', line: '3' }],
    ['openSource without path', { type: 'openSource', line: 3 }],
    ['openLink with an object', { type: 'openLink', href: { toString: () => 'javascript:x' } }],
    ['selectModel with a number', { type: 'selectModel', path: 3 }],
    ['copy of a huge text', { type: 'copy', text: 'x'.repeat(1_000_001) }],
  ];
  for (const [name, msg] of invalid) {
    it(`rejects ${name}`, () => {
      assert.equal(parseChatToHost(msg), null);
      assert.notEqual(explainRejection('chat', msg), 'valid');
    });
  }

  it('keeps only known keys of a message with a __proto__ key, polluting nothing', () => {
    const parsed = parseChatToHost(JSON.parse('{"type":"ask","id":"a","question":"q","__proto__":{"polluted":1}}'));
    assert.deepEqual(parsed, { type: 'ask', id: 'a', question: 'q' });
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('trims questions and drops unknown keys', () => {
    assert.deepEqual(parseChatToHost({ type: 'ask', id: 'a', question: '  why?  ', extra: '<script>' }), { type: 'ask', id: 'a', question: 'why?' });
  });

  it('explains a rejection in one line naming the field', () => {
    assert.match(explainRejection('chat', { type: 'openSource', path: 'a.ts', line: 0 }), /^line: /);
  });
});

describe('host → webview messages', () => {
  it('accepts a streamed answer and its end', () => {
    assert.ok(parseHostToChat({ type: 'answerStart', id: 'q1', question: 'why?' }));
    assert.ok(parseHostToChat({ type: 'answerText', id: 'q1', text: 'Because' }));
    assert.ok(parseHostToChat({
      type: 'answerEnd', id: 'q1', text: 'Because', stopReason: 'eos',
      sources: [{ path: 'src/a.ts', line: 2, reason: 'identifier', snippet: 'x' }],
      stats: { promptTokens: 1, answerTokens: 2, seconds: 0.5, tokensPerSecond: 4 },
    }));
  });

  it('rejects malformed sources and statuses', () => {
    assert.equal(parseHostToChat({ type: 'answerEnd', id: 'q1', text: '', stopReason: 'eos', sources: [{ path: 'a', line: -1, reason: 'x' }], stats: { promptTokens: 0, answerTokens: 0, seconds: 0, tokensPerSecond: 0 } }), null);
    assert.equal(parseHostToChat({ type: 'status', status: { engine: 'exploded' } }), null);
  });

  it('keeps only valid stored history', () => {
    assert.deepEqual(parseChatEntries([{ id: 'a', role: 'user', text: 'hi', time: 1 }]), [{ id: 'a', role: 'user', text: 'hi', time: 1 }]);
    assert.equal(parseChatEntries([{ id: 'a', role: 'system', text: 'hi', time: 1 }]), null);
    assert.equal(parseChatEntries({ entries: [] }), null);
  });
});

describe('titanize form messages', () => {
  it('accepts form values of any type for the engine to judge', () => {
    const settings = { operator: 'delta_rule', magWeight: 'abc', window: '', chunk: '64', semantics: 'exact', dtype: 'fp32', crossGate: false, adapter: '' };
    assert.deepEqual(parseTitanizeToHost({ type: 'validate', id: 'v1', settings }), { type: 'validate', id: 'v1', settings });
    assert.ok(parseTitanizeToHost({ type: 'convert', id: 'c1', settings: {} }));
  });

  it('rejects unknown intents and settings that are not an object', () => {
    assert.equal(parseTitanizeToHost({ type: 'convert', id: 'c1', settings: 'delta_rule' }), null);
    assert.equal(parseTitanizeToHost({ type: 'deleteModel', path: '/' }), null);
  });

  it('accepts field errors only for known fields', () => {
    assert.ok(parseHostToTitanize({ type: 'validation', id: 'v', errors: [{ field: 'magWeight', message: 'bad' }, { field: null, message: 'model' }] }));
    assert.equal(parseHostToTitanize({ type: 'validation', id: 'v', errors: [{ field: 'evil', message: 'bad' }] }), null);
  });
});

describe('engine request params', () => {
  it('accepts a full configure and names the bad field of a broken one', () => {
    const good = { modelPath: null, provider: 'auto', threads: 0, workspaces: [{ path: '/w', name: 'w', exclude: { '**/node_modules': true, '**/*.js': { when: '$(basename).ts' } } }], exclude: [], memoryStorageDir: '/s', maxFileBytes: 1024, storageCapBytes: 1 << 20 };
    assert.equal(parseParams(ConfigureParamsSchema, good, 'titan/configure').ok, true);
    const bad = parseParams(ConfigureParamsSchema, { ...good, threads: -1 }, 'titan/configure');
    assert.equal(bad.ok, false);
    assert.match(!bad.ok ? bad.message : '', /^titan\/configure: threads: /);
    const badFolder = parseParams(ConfigureParamsSchema, { ...good, workspaces: [{ path: '' }] }, 'titan/configure');
    assert.match(!badFolder.ok ? badFolder.message : '', /workspaces\.0\.path/);
  });

  it('bounds questions and generation settings', () => {
    assert.equal(parseParams(AskParamsSchema, { question: 'q', maxNewTokens: 5000 }, 'titan/ask').ok, false);
    assert.equal(parseParams(AskParamsSchema, { question: 'q', temperature: -1 }, 'titan/ask').ok, false);
    assert.equal(parseParams(AskParamsSchema, { question: 'q', maxNewTokens: 16, progressToken: 'p1' }, 'titan/ask').ok, true);
    assert.equal(parseParams(AskParamsSchema, undefined, 'titan/ask').ok, false);
  });

  it('requires a source to titanize and well-formed file changes', () => {
    assert.equal(parseParams(TitanizeParamsSchema, { source: '', settings: {} }, 'titan/titanize').ok, false);
    assert.equal(parseParams(FilesChangedParamsSchema, { changes: [{ path: '/w/a.ts', kind: 'renamed' }] }, 'titan/filesChanged').ok, false);
    assert.equal(parseParams(FilesChangedParamsSchema, { changes: [{ path: '/w/a.ts', kind: 'deleted' }] }, 'titan/filesChanged').ok, true);
  });
});
