// Lexical retrieval beside the recurrent memory: a BM25 ranking (MiniSearch's BM25+) of the
// workspace files against the question, whose top files are placed verbatim before the question,
// and a search for the lines where the question's identifiers occur, reported as sources.
//
// The index is built lazily (at the first question, not during ingestion, so ingestion stays in
// constant memory), kept current file by file from the content hashes, and saved beside the
// checkpoints so a reopened workspace does not read every file again.
import { promises as fsp } from 'node:fs';
import MiniSearch from 'minisearch';
import type { WorkspaceFile } from './discovery';
import { writeAtomic } from './checkpoint-store';

const INDEX_VERSION = 1;

/** Question words that carry no meaning for a search. */
const STOPWORDS = new Set(
  ('a an and are as at be but by can could did do does doing done for from had has have how i if in into is it its me my no not of on or our '
    + 'should so some such than that the their them then there these they this those to too was we were what when where which while who whom '
    + 'why will with would you your about all any also between both each explain find show tell used uses using work works file files code')
    .split(' '),
);

/** Words of code and prose: identifiers whole (lowercased), plus the parts of camelCase and snake_case ones. */
export function indexTerms(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/[\p{L}\p{N}_$]+/gu)) {
    const word = m[0];
    out.push(word);
    if (word.length > 3 && /[a-z][A-Z]|[A-Za-z]_|_[A-Za-z]|[A-Z]{2}[a-z]/.test(word)) {
      for (const part of word.split(/_+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])/)) if (part && part !== word) out.push(part);
    }
  }
  return out;
}

function processTerm(term: string): string | null {
  const t = term.toLowerCase();
  if (t.length < 2 || t.length > 64 || STOPWORDS.has(t)) return null;
  return t;
}

function newIndex(): MiniSearch<{ id: string; path: string; text: string }> {
  return new MiniSearch({
    fields: ['path', 'text'],
    storeFields: [],
    tokenize: indexTerms,
    processTerm,
    searchOptions: { boost: { path: 3 }, prefix: false, fuzzy: false },
  });
}

export interface RankedFile {
  path: string;
  score: number;
  /** Lowercased question terms the file matched. */
  terms: string[];
}

export class RetrievalIndex {
  private constructor(
    private ms: MiniSearch<{ id: string; path: string; text: string }>,
    /** Stream path → sha256 of the text indexed. */
    private readonly docs: Map<string, string>,
    private dirty: boolean,
  ) {}

  static empty(): RetrievalIndex {
    return new RetrievalIndex(newIndex(), new Map(), true);
  }

  /** The saved index, or null if there is none usable. */
  static async load(file: string): Promise<RetrievalIndex | null> {
    try {
      const raw = JSON.parse(await fsp.readFile(file, 'utf8')) as { version?: unknown; docs?: unknown; index?: unknown };
      if (raw.version !== INDEX_VERSION || !Array.isArray(raw.docs) || typeof raw.index !== 'object' || raw.index === null) return null;
      const ms = MiniSearch.loadJS(raw.index as Parameters<typeof MiniSearch.loadJS>[0], {
        fields: ['path', 'text'], storeFields: [], tokenize: indexTerms, processTerm, searchOptions: { boost: { path: 3 }, prefix: false, fuzzy: false },
      });
      return new RetrievalIndex(ms, new Map(raw.docs as [string, string][]), false);
    } catch {
      return null;
    }
  }

  get size(): number {
    return this.docs.size;
  }

  /**
   * Brings the index in line with `files`: drops files that are gone or changed, adds new and
   * changed ones (read with `read`, which returns null for a file that cannot be read now).
   */
  async refresh(files: readonly WorkspaceFile[], read: (f: WorkspaceFile) => Promise<{ text: string; sha256: string } | null>, signal?: AbortSignal): Promise<void> {
    const wanted = new Map(files.map((f) => [f.streamPath, f]));
    for (const [id, sha] of [...this.docs]) {
      const f = wanted.get(id);
      if (!f || f.sha256 !== sha) {
        this.ms.discard(id);
        this.docs.delete(id);
        this.dirty = true;
      }
    }
    for (const f of files) {
      if (this.docs.has(f.streamPath)) continue;
      signal?.throwIfAborted();
      const got = await read(f);
      if (!got) continue;
      this.ms.add({ id: f.streamPath, path: f.streamPath, text: got.text });
      this.docs.set(f.streamPath, got.sha256);
      this.dirty = true;
    }
  }

  async save(file: string): Promise<void> {
    if (!this.dirty) return;
    await writeAtomic(file, JSON.stringify({ version: INDEX_VERSION, docs: [...this.docs], index: this.ms.toJSON() }));
    this.dirty = false;
  }

  /** Files ranked against the question, best first. */
  search(question: string, limit: number): RankedFile[] {
    return this.ms
      .search(question, { combineWith: 'OR' })
      .slice(0, limit)
      .map((r) => ({ path: String(r.id), score: r.score, terms: r.terms }));
  }

  /** Files whose text contains every index term of `identifier` (a superset of exact occurrences). */
  candidates(identifier: string): string[] {
    return this.ms.search(identifier, { combineWith: 'AND', fields: ['text'], boost: {} }).map((r) => String(r.id));
  }

  get documentCount(): number {
    return this.ms.documentCount;
  }
}

export interface QuestionIdentifier {
  text: string;
  /** Shaped like code (camelCase, snake_case, a call, a file name, or quoted in backticks). */
  strong: boolean;
}

/** The identifiers a question names: code-shaped words and backticked ones first, then other rare-looking words. */
export function questionIdentifiers(question: string): QuestionIdentifier[] {
  const seen = new Set<string>();
  const out: QuestionIdentifier[] = [];
  const push = (text: string, strong: boolean): void => {
    const t = text.replace(/\(\)$/, '');
    if (t.length < 2 || seen.has(t)) return;
    seen.add(t);
    out.push({ text: t, strong });
  };
  for (const m of question.matchAll(/`([^`\n]+)`/g)) for (const w of m[1].matchAll(/[\p{L}\p{N}_$][\p{L}\p{N}_$.]*/gu)) push(w[0].replace(/\.+$/, ''), true);
  // File names (with - and / inside), then words; a file name's pieces are not words of their own.
  const FILE = /[\p{L}\p{N}_$][\p{L}\p{N}_$./-]*\.[A-Za-z][A-Za-z0-9]{0,4}(?![\p{L}\p{N}_$])/gu;
  for (const m of question.matchAll(FILE)) push(m[0], true);
  for (const m of question.replace(FILE, ' ').matchAll(/[\p{L}\p{N}_$][\p{L}\p{N}_$.]*(?:\(\))?/gu)) {
    const w = m[0].replace(/\.+$/, '');
    const codeShaped = /[a-z0-9][A-Z]|_|\(\)$|^[A-Z]{2,}[a-z]|\.[A-Za-z]{1,5}$|^[A-Z][a-z0-9]+[A-Z]/.test(m[0]) || (/\./.test(w) && !/^\d/.test(w));
    if (codeShaped) push(w, true);
    else if (w.length >= 3 && !STOPWORDS.has(w.toLowerCase()) && /^[\p{L}_$][\p{L}\p{N}_$]*$/u.test(w)) push(w, false);
  }
  return out;
}

/** A regex matching `identifier` as a whole word (dotted names match literally). */
export function identifierPattern(identifier: string): RegExp {
  const escaped = identifier.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<![\\p{L}\\p{N}_$])${escaped}(?![\\p{L}\\p{N}_$])`, 'u');
}

/**
 * The lines of `text` that best cover the question's terms within `maxChars`: the window of
 * consecutive lines with the highest total weight of term occurrences (ties: the earliest). A
 * term's weight is scaled by its rarity among the file's lines, so the one line defining a named
 * function outweighs a page of lines sharing a common word with the question.
 */
export function bestExcerpt(text: string, terms: ReadonlyMap<string, number>, maxChars: number): { text: string; startLine: number; endLine: number } {
  const lines = text.split('\n');
  const found = lines.map((line) => [...new Set(indexTerms(line).map((w) => w.toLowerCase()))].filter((w) => terms.has(w)));
  const linesWith = new Map<string, number>();
  for (const ws of found) for (const w of ws) linesWith.set(w, (linesWith.get(w) ?? 0) + 1);
  const weight = (w: string): number => terms.get(w)! * Math.log((lines.length + 1) / (linesWith.get(w)! + 0.5));
  const score = found.map((ws) => ws.reduce((a, w) => a + weight(w), 0));
  // For each last line, the longest window that fits; of the best-scoring windows, the middle one,
  // which centres the lines that matter instead of pushing them to an edge.
  const prefix = [0];
  for (const v of score) prefix.push(prefix[prefix.length - 1] + v);
  const windows: { start: number; end: number; score: number }[] = [];
  let start = 0;
  let chars = 0;
  for (let end = 0; end < lines.length; end++) {
    chars += lines[end].length + 1;
    while (chars > maxChars && start < end) chars -= lines[start++].length + 1;
    if (chars <= maxChars) windows.push({ start, end: end + 1, score: prefix[end + 1] - prefix[start] });
  }
  if (windows.length === 0) return { text: lines[0].slice(0, maxChars), startLine: 1, endLine: 1 };
  const top = Math.max(...windows.map((w) => w.score));
  const isTop = (w: { score: number }): boolean => w.score >= top - 1e-9 * Math.max(1, top);
  const first = windows.findIndex(isTop);
  let last = first;
  while (last + 1 < windows.length && isTop(windows[last + 1])) last++;
  const best = windows[first + Math.floor((last - first) / 2)];
  return { text: lines.slice(best.start, best.end).join('\n') + '\n', startLine: best.start + 1, endLine: best.end };
}
