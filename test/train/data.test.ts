// Alignment data: workspace files split by file (never a file on both sides), sequences that are the
// memory stream's own tokens; JSONL instruction data in alpaca and chat form rendered with the demo
// model's chat template with the loss on exactly the assistant's text and end-of-turn tokens; and a
// one-line error for every malformed input.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeStreamText, fileStreamText } from '../../engine/memory/stream';
import { ModelError } from '../../engine/model/errors';
import { loadTokenizer, type TitanTokenizer } from '../../engine/model/tokenizer';
import { bucketFor, bucketLengths, jsonlDataset, parseDataSpec, workspaceDataset, type TrainingSequence } from '../../engine/train/data';
import { DEMO_MODEL, writeSyntheticWorkspace } from '../helpers/workspace';

let root: string;
let tokenizer: TitanTokenizer;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'titan-train-data-'));
  tokenizer = loadTokenizer(DEMO_MODEL);
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const learned = (seq: TrainingSequence) => tokenizer.decode(Array.from(seq.tokens.slice(1)).filter((_, i) => seq.scored[i]));

function writeJsonl(name: string, lines: unknown[]): string {
  const file = path.join(root, name);
  fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

describe('workspace data', () => {
  test('files are held out whole, and the sequences are the memory stream of the training files', async () => {
    const ws = path.join(root, 'ws');
    const files = writeSyntheticWorkspace(ws, { count: 20, lines: 40 });
    const ds = await workspaceDataset(ws, tokenizer, { sequence: 128, validationFraction: 0.25 });
    assert.equal(ds.summary.trainItems + ds.summary.validationItems, files.length);
    assert.ok(ds.summary.validationItems >= 1 && ds.summary.trainItems >= 1);
    const valSources = new Set(ds.validation.map((s) => s.source.replace(/ @\d+$/, '')));
    // Every held-out sequence comes from one held-out file; no held-out file's text is in the training stream.
    const trainText = tokenizer.decode(ds.train.flatMap((s, i) => Array.from(i === 0 ? s.tokens : s.tokens.slice(1))));
    for (const v of valSources) assert.ok(!trainText.includes(`<|file|> ${v}\n`), `${v} is held out but appears in the training stream`);
    // The training stream is the files' stream text, consecutive sequences overlapping by one token.
    for (let i = 1; i < ds.train.length; i++) assert.equal(ds.train[i].tokens[0], ds.train[i - 1].tokens.at(-1));
    assert.ok(ds.train.every((s) => s.tokens.length <= 129 && s.scored.every((x) => x === 1)));
    const one = ds.train[0].source.replace(/ @\d+$/, '');
    assert.equal(one, 'workspace');
    const firstFile = trainText.slice(0, trainText.indexOf('\n<|file|>') + 1);
    const name = /^<\|file\|> (.+)\n/.exec(firstFile)![1];
    assert.deepEqual(await encodeStreamText(tokenizer, fileStreamText(name, fs.readFileSync(path.join(ws, name), 'utf8'))), tokenizer.encode(firstFile, { addSpecialTokens: false }));
  });
  test('the split is a function of the paths, not of the order files are found in', async () => {
    const ws = path.join(root, 'ws');
    const a = await workspaceDataset(ws, tokenizer, { sequence: 128, validationFraction: 0.25 });
    const b = await workspaceDataset(ws, tokenizer, { sequence: 128, validationFraction: 0.25 });
    assert.deepEqual(
      a.validation.map((s) => s.source),
      b.validation.map((s) => s.source),
    );
  });
  test('a workspace with one text file is refused with the reason', async () => {
    const ws = path.join(root, 'one');
    fs.mkdirSync(ws);
    fs.writeFileSync(path.join(ws, 'a.ts'), 'export const a = 1;\n');
    await assert.rejects(workspaceDataset(ws, tokenizer, { sequence: 64 }), (e: Error) => e instanceof ModelError && /1 usable text file .* needs at least 2/.test(e.message));
    await assert.rejects(workspaceDataset(path.join(root, 'missing'), tokenizer, { sequence: 64 }), /does not exist or is not a folder/);
  });
});

describe('instruction data (JSONL)', () => {
  test('alpaca: the loss covers exactly the response and the end-of-turn tokens', async () => {
    const lines = Array.from({ length: 6 }, (_, i) => ({ instruction: `Write function number ${i}.`, input: i % 2 ? `It takes ${i} arguments.` : '', output: `function f${i}() {\n  return ${i};\n}` }));
    const ds = await jsonlDataset(writeJsonl('alpaca.jsonl', lines), tokenizer, { sequence: 256, validationFraction: 0.34 });
    const all = [...ds.train, ...ds.validation];
    assert.equal(all.length, 6);
    assert.ok(ds.validation.length >= 1);
    for (const seq of all) {
      const i = Number(/function f(\d)/.exec(learned(seq))![1]);
      assert.equal(learned(seq), `${lines[i].output}<|im_end|>\n`);
      const text = tokenizer.decode(Array.from(seq.tokens));
      assert.ok(text.startsWith(`<|im_start|>user\n${lines[i].instruction}`), text);
      if (lines[i].input) assert.ok(text.includes(`\n\n${lines[i].input}<|im_end|>`));
    }
  });
  test('chat messages: every assistant turn is learned, no user or system text', async () => {
    const conv = {
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'First?' },
        { role: 'assistant', content: 'One.' },
        { role: 'user', content: 'Second?' },
        { role: 'assistant', content: 'Two.' },
      ],
    };
    const ds = await jsonlDataset(writeJsonl('chat.jsonl', [conv, conv, { ...conv, messages: conv.messages.slice(0, 3) }]), tokenizer, { sequence: 256 });
    const full = [...ds.train, ...ds.validation].find((s) => tokenizer.decode(Array.from(s.tokens)).includes('Two.'))!;
    assert.equal(learned(full), 'One.<|im_end|>\nTwo.<|im_end|>\n');
  });
  test('samples longer than a sequence are cut and counted; prompts that fill it are skipped', async () => {
    const long = { instruction: 'Repeat.', output: 'word '.repeat(400) };
    const prompt = { instruction: 'x '.repeat(400), output: 'y' };
    const ok = { instruction: 'Say hi.', output: 'hi' };
    const ds = await jsonlDataset(writeJsonl('long.jsonl', [long, prompt, ok, ok]), tokenizer, { sequence: 64 });
    assert.equal(ds.summary.truncated, 2);
    assert.equal(ds.summary.skipped, 1);
    assert.ok([...ds.train, ...ds.validation].every((s) => s.tokens.length <= 65));
  });
  test('malformed lines are one-line errors naming the line', async () => {
    const cases: [unknown[], RegExp][] = [
      [[{ instruction: 'a', output: 'b' }, '{"instruction": "a",'], /bad\.jsonl:2: not valid JSON/],
      [[{ instruction: 'a' }], /bad\.jsonl:1: expected alpaca fields "instruction" and "output"/],
      [[{ messages: [{ role: 'user', content: 'hi' }] }], /bad\.jsonl:1: the conversation has no "assistant" message/],
      [[{ messages: [{ role: 'user' }] }], /bad\.jsonl:1: messages\[0\] needs a string "role" and a string "content"/],
      [[[1, 2]], /bad\.jsonl:1: expected a JSON object/],
      [[{ instruction: 'a', output: 'b' }], /1 usable distinct sample; alignment holds out samples for validation and needs at least 2/],
    ];
    for (const [lines, re] of cases) {
      await assert.rejects(jsonlDataset(writeJsonl('bad.jsonl', lines), tokenizer, { sequence: 64 }), (e: Error) => e instanceof ModelError && re.test(e.message) && !e.message.includes('\n'), String(re));
    }
    await assert.rejects(jsonlDataset(path.join(root, 'nope.jsonl'), tokenizer, { sequence: 64 }), /nope\.jsonl does not exist/);
  });
});

describe('data specs and sequence buckets', () => {
  test('workspace:/jsonl: prefixes, bare folders and .jsonl files', () => {
    assert.deepEqual(parseDataSpec('workspace:/x'), { kind: 'workspace', dir: '/x' });
    assert.deepEqual(parseDataSpec('jsonl:d.txt'), { kind: 'jsonl', file: 'd.txt' });
    assert.deepEqual(parseDataSpec(root), { kind: 'workspace', dir: root });
    assert.deepEqual(parseDataSpec('train.jsonl'), { kind: 'jsonl', file: 'train.jsonl' });
    assert.throws(() => parseDataSpec('csv:x'), /--data must be workspace:<dir> or jsonl:<file>/);
  });
  test('short sequences run in the smallest graph that holds them', () => {
    assert.deepEqual(bucketLengths(512), [64, 128, 256, 512]);
    assert.deepEqual(bucketLengths(100), [100]);
    assert.equal(bucketFor(65, bucketLengths(512)), 128);
    assert.equal(bucketFor(512, bucketLengths(512)), 512);
  });
});
