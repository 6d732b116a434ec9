// The lexical side of questions: index terms for code, the identifiers a question names, excerpts
// around the lines that matter, and the BM25 index kept current by content hash and saved to disk.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { WorkspaceFile } from '../../engine/memory/discovery';
import { bestExcerpt, identifierPattern, indexTerms, questionIdentifiers, RetrievalIndex } from '../../engine/memory/retrieval';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-retrieval-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function file(streamPath: string, sha256: string): WorkspaceFile {
  return { folder: 'ws', folderIndex: 0, relativePath: streamPath, streamPath, absolutePath: `/ws/${streamPath}`, size: 1, mtimeMs: 0, sha256 };
}

describe('terms and identifiers', () => {
  it('indexes identifiers whole and by their camelCase and snake_case parts', () => {
    assert.deepEqual(indexTerms('readWorkspaceFile(max_file_size, HTTPServer)'), ['readWorkspaceFile', 'read', 'Workspace', 'File', 'max_file_size', 'max', 'file', 'size', 'HTTPServer', 'HTTP', 'Server']);
  });

  it('finds code-shaped names, file names and backticked words in a question', () => {
    const ids = questionIdentifiers('Where does `retry` call computeBackoffDelay() in src/http-client.ts, and what is MAX_RETRIES?');
    assert.deepEqual(ids.filter((i) => i.strong).map((i) => i.text), ['retry', 'src/http-client.ts', 'computeBackoffDelay', 'MAX_RETRIES']);
    assert.ok(!ids.some((i) => ['where', 'does', 'what', 'and'].includes(i.text.toLowerCase())));
    assert.ok(identifierPattern('computeBackoffDelay').test('  return computeBackoffDelay(a);'));
    assert.ok(!identifierPattern('computeBackoffDelay').test('computeBackoffDelayMs = 3'));
    assert.ok(identifierPattern('a.b').test('x = a.b;') && !identifierPattern('a.b').test('x = axb;'));
  });

  it('centres an excerpt on the rare term the question names, not on lines full of common words', () => {
    const lines = Array.from({ length: 120 }, (_, i) => `const store${i} = store.get(store.key);`);
    lines[70] = 'export function sharedPrefix(a: string[], b: string[]): number {';
    const terms = new Map([['sharedprefix', 4], ['store', 1]]);
    const e = bestExcerpt(lines.join('\n'), terms, 400);
    assert.ok(e.startLine <= 71 && e.endLine >= 71, `${e.startLine}-${e.endLine}`);
    assert.ok(71 - e.startLine >= 2 && e.endLine - 71 >= 2, `line 71 should not sit at an edge of ${e.startLine}-${e.endLine}`);
    assert.ok(e.text.length <= 400);
    assert.match(e.text, /export function sharedPrefix/);
  });
});

describe('the BM25 index', () => {
  const texts: Record<string, string> = {
    'src/retry.ts': 'export function computeBackoffDelay(attempt: number) { return 2 ** attempt; }\n',
    'src/cache.ts': 'export class LruCache { get(key: string) {} set(key: string, value: string) {} }\n',
    'docs/backoff.md': 'Retries back off exponentially; see the retry module.\n',
  };
  const read = async (f: WorkspaceFile) => ({ text: texts[f.streamPath], sha256: f.sha256 });

  it('ranks the file that defines the asked-about identifier first, refreshes by hash, and survives a save and load', async () => {
    const index = RetrievalIndex.empty();
    const files = Object.keys(texts).map((p) => file(p, `sha-${p}`));
    await index.refresh(files, read);
    assert.equal(index.size, 3);
    assert.equal(index.search('How is computeBackoffDelay computed?', 3)[0].path, 'src/retry.ts');
    assert.equal(index.search('what does the LRU cache keep?', 3)[0].path, 'src/cache.ts');
    assert.deepEqual(index.candidates('LruCache'), ['src/cache.ts']);

    // A changed file is re-read, a removed one dropped.
    texts['src/cache.ts'] = 'export class FifoQueue { push() {} }\n';
    const changed = [file('src/retry.ts', 'sha-src/retry.ts'), file('src/cache.ts', 'sha-2')];
    let reads = 0;
    await index.refresh(changed, async (f) => (reads++, read(f)));
    assert.equal(reads, 1);
    assert.equal(index.size, 2);
    assert.deepEqual(index.candidates('LruCache'), []);
    assert.deepEqual(index.candidates('FifoQueue'), ['src/cache.ts']);

    const saved = path.join(tmp, 'index.json');
    await index.save(saved);
    const loaded = await RetrievalIndex.load(saved);
    assert.ok(loaded);
    assert.equal(loaded.size, 2);
    assert.deepEqual(loaded.candidates('FifoQueue'), ['src/cache.ts']);
    let again = 0;
    await loaded.refresh(changed, async (f) => (again++, read(f)));
    assert.equal(again, 0, 'a loaded index re-reads nothing that did not change');
    fs.writeFileSync(saved, '{"version":1,"docs":');
    assert.equal(await RetrievalIndex.load(saved), null);
  });
});
