// Questions over a workspace memory with the real demo model (code-llama-19m, titanized with a
// 256-token window): sources name the retrieved file and the lines where the question's identifiers
// occur, questions leave the stored memory untouched (and so repeat exactly at temperature 0), and
// memory / retrieval switch off independently. Also `titan ask` and `titan memory` end to end.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WorkspaceMemory, type AnswerResult, type MemoryStats } from '../../engine/memory/workspace-memory';
import { demoTitanPackage, memoryDirIn, runTitan, setMtime, snapshotTree } from '../helpers/workspace';

let tmp: string;
let pkg: string;
let ws: string;
let storage: string;

const FILES: Record<string, string> = {
  'src/retry.ts': [
    '// Retry policy for outgoing HTTP requests.',
    'export interface RetryOptions {',
    '  attempts: number;',
    '  baseDelayMs: number;',
    '  maxDelayMs: number;',
    '}',
    '',
    '/** Exponential backoff with full jitter: a random delay up to base * 2^attempt, capped. */',
    'export function computeBackoffDelay(attempt: number, options: RetryOptions, random = Math.random): number {',
    '  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** attempt);',
    '  return Math.floor(random() * ceiling);',
    '}',
    '',
    'export async function withRetry<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {',
    '  let lastError: unknown;',
    '  for (let attempt = 0; attempt < options.attempts; attempt++) {',
    '    try {',
    '      return await fn();',
    '    } catch (e) {',
    '      lastError = e;',
    '      await new Promise((r) => setTimeout(r, computeBackoffDelay(attempt, options)));',
    '    }',
    '  }',
    '  throw lastError;',
    '}',
    '',
  ].join('\n'),
  'src/cache.ts': [
    '// A small least-recently-used cache.',
    'export class LruCache<K, V> {',
    '  private readonly map = new Map<K, V>();',
    '  constructor(private readonly capacity: number) {}',
    '  get(key: K): V | undefined {',
    '    const value = this.map.get(key);',
    '    if (value !== undefined) {',
    '      this.map.delete(key);',
    '      this.map.set(key, value);',
    '    }',
    '    return value;',
    '  }',
    '  set(key: K, value: V): void {',
    '    this.map.delete(key);',
    '    this.map.set(key, value);',
    '    if (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value as K);',
    '  }',
    '}',
    '',
  ].join('\n'),
  'src/client.ts': [
    "import { withRetry } from './retry';",
    "import { LruCache } from './cache';",
    '',
    'const cache = new LruCache<string, string>(100);',
    '',
    'export async function fetchText(url: string): Promise<string> {',
    '  const hit = cache.get(url);',
    '  if (hit !== undefined) return hit;',
    '  const text = await withRetry(async () => (await fetch(url)).text(), { attempts: 4, baseDelayMs: 100, maxDelayMs: 2000 });',
    '  cache.set(url, text);',
    '  return text;',
    '}',
    '',
  ].join('\n'),
  'README.md': '# http-kit\n\nA tiny HTTP client with retries (`src/retry.ts`) and an LRU cache (`src/cache.ts`).\n',
  'package.json': '{\n  "name": "http-kit",\n  "version": "1.0.0",\n  "main": "src/client.ts"\n}\n',
};

const QUESTION = 'How does computeBackoffDelay choose the delay between retries?';

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-memory-ask-'));
  pkg = demoTitanPackage(path.join(tmp, 'pkg'));
  ws = path.join(tmp, 'ws');
  Object.entries(FILES).forEach(([rel, text], i) => {
    const file = path.join(ws, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
    setMtime(file, 1_700_000_000 + i);
  });
  storage = path.join(tmp, 'storage');
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('ask', () => {
  let memory: WorkspaceMemory;
  let built: MemoryStats;
  before(async () => {
    memory = await WorkspaceMemory.open({ packageDir: pkg, workspaces: [ws], storageDir: storage, provider: 'cpu' });
    built = await memory.update();
  });
  after(async () => {
    await memory?.close();
  });

  it('reads every file of the workspace into the memory', () => {
    assert.equal(built.filesRead, Object.keys(FILES).length);
    assert.deepEqual(built.filesSkipped, []);
    assert.ok(built.tokensIngested > 500);
  });

  let first: AnswerResult;
  it('answers with sources: the retrieved file and the lines naming the identifier', async () => {
    const streamed: string[] = [];
    first = await memory.ask(QUESTION, { maxNewTokens: 24, onText: (t) => streamed.push(t) });
    assert.equal(streamed.join(''), first.answer);
    assert.ok(first.answer.length > 0);
    const retrieved = first.sources.filter((s) => s.reason === 'retrieved');
    assert.equal(retrieved[0]?.path, 'src/retry.ts', JSON.stringify(first.sources));
    const identifierLines = first.sources.filter((s) => s.reason === 'identifier').map((s) => `${s.path}:${s.line}`);
    assert.deepEqual(identifierLines.sort(), ['src/retry.ts:21', 'src/retry.ts:9']);
    assert.match(first.sources.find((s) => s.reason === 'identifier' && s.line === 9)!.snippet!, /export function computeBackoffDelay/);
    assert.equal(first.stats.memoryTokens, built.position);
    assert.ok(first.stats.contextTokens > 0 && first.stats.promptTokens > first.stats.contextTokens);
    assert.equal(first.stats.answerTokens > 0, true);
  });

  it('leaves the stored memory untouched: a second question gives the same answer at temperature 0', async () => {
    const memDir = memoryDirIn(storage);
    const stored = (): Map<string, Buffer> => new Map([...snapshotTree(memDir)].filter(([name]) => name === 'manifest.json' || name.startsWith('state-')));
    const beforeAsk = stored();
    const second = await memory.ask(QUESTION, { maxNewTokens: 24 });
    assert.equal(second.answer, first.answer);
    assert.deepEqual(second.sources, first.sources);
    const afterAsk = stored();
    assert.deepEqual([...afterAsk.keys()], [...beforeAsk.keys()]);
    for (const [name, bytes] of beforeAsk) assert.ok(bytes.equals(afterAsk.get(name)!), `${name} changed`);
    const s = await memory.update();
    assert.equal(s.tokensReread, 0);
  });

  it('switches memory and retrieval off independently', async () => {
    const noMemory = await memory.ask(QUESTION, { maxNewTokens: 24, memory: false });
    assert.equal(noMemory.stats.memoryTokens, 0);
    assert.equal(noMemory.stats.contextTokens, first.stats.contextTokens);
    const noRetrieval = await memory.ask(QUESTION, { maxNewTokens: 24, retrieval: false });
    assert.equal(noRetrieval.stats.contextTokens, 0);
    assert.equal(noRetrieval.stats.memoryTokens, built.position);
    assert.ok(noRetrieval.sources.every((s) => s.reason === 'identifier') && noRetrieval.sources.length === 2);
    const neither = await memory.ask(QUESTION, { maxNewTokens: 24, retrieval: false, memory: false });
    assert.equal(neither.stats.promptTokens, noRetrieval.stats.promptTokens);
    // Each part changes what the model sees, so the answers tell them apart.
    const answers = new Set([first.answer, noMemory.answer, noRetrieval.answer, neither.answer]);
    assert.ok(answers.size >= 2, `all four configurations answered ${JSON.stringify(first.answer)}`);
  });

  it('places an excerpt of a file too long for the budget, around the lines that matter', async () => {
    const r = await memory.ask(QUESTION, { maxNewTokens: 4, contextBudgetTokens: 90 });
    const retrieved = r.sources.filter((s) => s.reason === 'retrieved');
    assert.equal(retrieved[0]?.path, 'src/retry.ts');
    assert.ok(retrieved[0].line! > 1, `excerpt starts at line ${retrieved[0].line}`);
    assert.ok(r.stats.contextTokens <= 90 && r.stats.contextTokens > 0, `${r.stats.contextTokens} context tokens`);
  });
});

describe('CLI', () => {
  it('titan memory prints the stats; titan ask answers with sources and stats', async () => {
    const cliStorage = path.join(tmp, 'cli-storage');
    const m1 = await runTitan(['memory', pkg, '--workspace', ws, '--storage', cliStorage, '--provider', 'cpu']);
    assert.equal(m1.code, 0, m1.stderr);
    for (const label of ['files read:', 'files skipped:', 'tokens ingested:', 'tokens re-read:', 'state bytes:', 'checkpoint bytes:', 'seconds:', 'tokens/s:']) assert.ok(m1.stdout.includes(label), `${label} missing from\n${m1.stdout}`);
    const m2 = await runTitan(['memory', pkg, '--workspace', ws, '--storage', cliStorage, '--provider', 'cpu', '--json']);
    assert.equal(m2.code, 0, m2.stderr);
    const stats = JSON.parse(m2.stdout) as MemoryStats;
    assert.equal(stats.tokensReread, 0);
    assert.equal(stats.restoredFromCheckpoint, true);
    assert.equal(stats.filesRead, Object.keys(FILES).length);

    const a = await runTitan(['ask', pkg, '--workspace', ws, '--storage', cliStorage, '--provider', 'cpu', '--max-new-tokens', '12', '--json', QUESTION]);
    assert.equal(a.code, 0, a.stderr);
    const answer = JSON.parse(a.stdout) as AnswerResult & { memory: MemoryStats };
    assert.equal(answer.memory.tokensReread, 0);
    assert.equal(answer.sources.find((s) => s.reason === 'retrieved')?.path, 'src/retry.ts');
    assert.ok(answer.stats.answerTokens > 0);
    const plain = await runTitan(['ask', pkg, '--workspace', ws, '--storage', cliStorage, '--provider', 'cpu', '--max-new-tokens', '12', '--no-retrieval', QUESTION]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /sources:\n {2}src\/retry\.ts:9 {2}identifier/);
    assert.match(plain.stdout, /\(0 from retrieved files\)/);
  });
});
