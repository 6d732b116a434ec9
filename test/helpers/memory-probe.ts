// Child-process probe for the constant-memory test: feeds a long token stream through a package in
// calls of <call> tokens and prints one JSON line every <every> tokens:
//   {"tokens":N,"rss":bytes,"seconds":s,"finite":true}
// then {"done":true,...}. Run: node --import tsx test/helpers/memory-probe.ts <package> <tokens> <every> <call>
// The stream repeats real token sequences: the repository's engine sources through the model's tokenizer.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadTokenizer } from '../../engine/model/tokenizer';
import { ModelRunner } from '../../engine/runtime/session';

function sourceText(root: string): string {
  const parts: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.name.endsWith('.ts')) parts.push(fs.readFileSync(p, 'utf8'));
    }
  };
  walk(root);
  return parts.join('\n');
}

async function main(): Promise<void> {
  const [pkg, tokensArg, everyArg, callArg] = process.argv.slice(2);
  const total = Number(tokensArg);
  const every = Number(everyArg);
  const call = Number(callArg);
  if (!pkg || !(total > 0) || !(every > 0) || !(call > 0)) throw new Error('usage: memory-probe <package> <tokens> <every> <call>');
  const corpus = loadTokenizer(pkg).encode(sourceText(path.resolve(__dirname, '../../engine/model')), { addSpecialTokens: false });
  const runner = await ModelRunner.open(pkg, { provider: 'cpu' });
  const t0 = performance.now();
  let fed = 0;
  let finite = true;
  let cursor = 0;
  const emit = (extra: Record<string, unknown> = {}): void => {
    process.stdout.write(JSON.stringify({ tokens: fed, rss: process.memoryUsage().rss, seconds: (performance.now() - t0) / 1000, finite, ...extra }) + '\n');
  };
  emit();
  while (fed < total) {
    const ids: number[] = [];
    // Calls of `call` tokens, cut short where a sample is due.
    while (ids.length < Math.min(call, total - fed, every - (fed % every))) {
      ids.push(corpus[cursor]);
      cursor = (cursor + 1) % corpus.length;
    }
    const [logits] = await runner.forward(ids, [ids.length - 1]);
    for (let i = 0; i < logits.length; i++) if (!Number.isFinite(logits[i])) finite = false;
    fed += ids.length;
    if (fed % every === 0 || fed === total) emit();
  }
  await runner.release();
  emit({ done: true, corpusTokens: corpus.length });
}

main().catch((e: Error) => {
  process.stderr.write(`memory-probe: ${e.message}\n`);
  process.exitCode = 1;
});
