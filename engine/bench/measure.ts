// One measurement: one contender, one context length, in a process of its own (see child.ts), so
// each peak resident memory belongs to that contender and context alone.
//
//   load     open the model (not timed as prefill); one short warm-up call, then a fresh stream
//   prefill  the first `context` tokens of the stream, in calls of `prefillChunk` tokens, logits only
//            for the last token: tokens/s = context / time
//   decode   `decodeTokens` greedy steps after that context, one token per call: ms/token
//
// The contenders run as their users would run them: Titan and base packages through ModelRunner
// (the engine's forward call); the transformers.js export through `@huggingface/transformers`:
// chunked prefill with its DynamicCache (one call over a 64k prompt would need the full T×T score
// matrix), then `generate` continuing from that cache.
import * as fs from 'node:fs';
import { argmax } from '../runtime/generate';
import { ModelRunner, type ProviderChoice } from '../runtime/session';

export type ContenderEngine = 'package' | 'transformers-js';

export interface MeasureJob {
  contender: { id: string; engine: ContenderEngine; dir: string; dtype: 'fp32' | 'fp16' };
  context: number;
  decodeTokens: number;
  prefillChunk: number;
  /** File of little-endian int32 token ids; the first `context` are the prompt. */
  streamFile: string;
  provider: ProviderChoice;
  threads?: number;
}

export interface MeasureResult {
  provider: string;
  loadSeconds: number;
  prefillSeconds: number;
  prefillTokensPerSecond: number;
  decodeSeconds: number;
  decodeMsPerToken: number;
  decodeTokensPerSecond: number;
  /**
   * CPU time of the whole process (all its threads) per prefill token and per decode step: the cost
   * that contention on a shared machine does not inflate the way it inflates wall time.
   */
  prefillCpuMsPerToken: number;
  decodeCpuMsPerToken: number;
  /** The greedy tokens generated (a check that every contender really decoded). */
  generated: number[];
  /** Resident set after load and warm-up, and at the end (after decode). */
  rssAfterLoadBytes: number;
  rssEndBytes: number;
  /** Peak resident set of the whole process (getrusage). */
  maxRssBytes: number;
}

export function readStream(file: string, count: number): number[] {
  const buf = fs.readFileSync(file);
  const all = new Int32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  if (all.length < count) throw new Error(`token stream ${file} has ${all.length} tokens, ${count} needed`);
  return Array.from(all.subarray(0, count));
}

export function writeStream(file: string, ids: readonly number[]): void {
  fs.writeFileSync(file, Buffer.from(Int32Array.from(ids).buffer));
}

const maxRss = () => process.resourceUsage().maxRSS * 1024;

/** CPU time of this process so far, in ms (user + system, every thread). */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** Wall-clock and CPU timestamps of the phase boundaries: start, loaded, prefilled, decoded. */
interface Marks {
  wall: [number, number, number, number];
  cpu: [number, number, number, number];
}

export async function measure(job: MeasureJob): Promise<MeasureResult> {
  const ids = readStream(job.streamFile, job.context);
  return job.contender.engine === 'package' ? measurePackage(job, ids) : measureTransformersJs(job, ids);
}

async function measurePackage(job: MeasureJob, ids: number[]): Promise<MeasureResult> {
  const t0 = performance.now();
  const c0 = cpuMs();
  const model = await ModelRunner.open(job.contender.dir, { provider: job.provider, threads: job.threads });
  try {
    await model.forward(ids.slice(0, Math.min(8, ids.length)), [0]);
    model.reset();
    const t1 = performance.now();
    const c1 = cpuMs();
    const rssAfterLoad = process.memoryUsage.rss();
    let last: Float32Array | null = null;
    for (let start = 0; start < ids.length; start += job.prefillChunk) {
      const seg = ids.slice(start, start + job.prefillChunk);
      const isLast = start + job.prefillChunk >= ids.length;
      const out = await model.forward(seg, isLast ? [seg.length - 1] : []);
      if (isLast) last = out[0];
    }
    const t2 = performance.now();
    const c2 = cpuMs();
    const generated: number[] = [];
    let next = argmax(last!);
    for (let i = 0; i < job.decodeTokens; i++) {
      generated.push(next);
      [last] = await model.forward([next], [0]);
      next = argmax(last);
    }
    const marks: Marks = { wall: [t0, t1, t2, performance.now()], cpu: [c0, c1, c2, cpuMs()] };
    return result(model.provider.provider, marks, ids.length, job.decodeTokens, generated, rssAfterLoad);
  } finally {
    await model.release();
  }
}

function result(provider: string, marks: Marks, context: number, decodeTokens: number, generated: number[], rssAfterLoad: number): MeasureResult {
  const [t0, t1, t2, t3] = marks.wall;
  const [, c1, c2, c3] = marks.cpu;
  const prefillSeconds = (t2 - t1) / 1000;
  const decodeSeconds = (t3 - t2) / 1000;
  return {
    provider,
    loadSeconds: (t1 - t0) / 1000,
    prefillSeconds,
    prefillTokensPerSecond: context / prefillSeconds,
    decodeSeconds,
    decodeMsPerToken: (decodeSeconds * 1000) / decodeTokens,
    decodeTokensPerSecond: decodeTokens / decodeSeconds,
    prefillCpuMsPerToken: (c2 - c1) / context,
    decodeCpuMsPerToken: (c3 - c2) / decodeTokens,
    generated,
    rssAfterLoadBytes: rssAfterLoad,
    rssEndBytes: process.memoryUsage.rss(),
    maxRssBytes: maxRss(),
  };
}

const TJS_DEVICE: Record<string, string> = { cpu: 'cpu', webgpu: 'webgpu', cuda: 'cuda', auto: 'cpu' };

async function measureTransformersJs(job: MeasureJob, ids: number[]): Promise<MeasureResult> {
  const tf = await import('@huggingface/transformers');
  const path = await import('node:path');
  tf.env.allowRemoteModels = false;
  tf.env.useFSCache = false;
  tf.env.localModelPath = path.dirname(job.contender.dir);
  const t0 = performance.now();
  const c0 = cpuMs();
  const model = await tf.AutoModelForCausalLM.from_pretrained(path.basename(job.contender.dir), {
    dtype: job.contender.dtype,
    device: TJS_DEVICE[job.provider] as 'cpu',
    ...(job.threads ? { session_options: { intraOpNumThreads: job.threads, interOpNumThreads: 1 } } : {}),
  });
  try {
    const int64 = (values: readonly number[], dims: number[]) => new tf.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
    const ones = (n: number) => int64(new Array<number>(n).fill(1), [1, n]);
    const keepLast = new tf.Tensor('int64', BigInt64Array.from([1n]), []);
    const warm = ids.slice(0, Math.min(8, ids.length));
    await model({ input_ids: int64(warm, [1, warm.length]), attention_mask: ones(warm.length), num_logits_to_keep: keepLast });
    const t1 = performance.now();
    const c1 = cpuMs();
    const rssAfterLoad = process.memoryUsage.rss();

    // Prefill all but the last token into the library's cache, chunk by chunk.
    let cache: InstanceType<typeof tf.DynamicCache> | null = null;
    for (let start = 0; start < ids.length - 1; start += job.prefillChunk) {
      const seg = ids.slice(start, Math.min(ids.length - 1, start + job.prefillChunk));
      const out = (await model({
        input_ids: int64(seg, [1, seg.length]),
        attention_mask: ones(start + seg.length),
        num_logits_to_keep: keepLast,
        ...(cache ? { past_key_values: cache } : {}),
      })) as Record<string, InstanceType<typeof tf.Tensor>>;
      const entries: Record<string, InstanceType<typeof tf.Tensor>> = {};
      for (const [name, t] of Object.entries(out)) if (name.startsWith('present.')) entries[name.replace('present.', 'past_key_values.')] = t;
      cache = new tf.DynamicCache(entries);
    }
    // generate() feeds the last prompt token (the end of prefill), then decodes; the streamer
    // timestamps every token it is handed (the first call is the prompt itself).
    const stamps: number[] = [];
    const cpuStamps: number[] = [];
    const generated: number[] = [];
    const streamer = {
      put(value: bigint[][]) {
        cpuStamps.push(cpuMs());
        if (stamps.push(performance.now()) > 1) generated.push(Number(value[0][0]));
      },
      end() {},
    };
    await model.generate({
      inputs: int64(ids, [1, ids.length]),
      attention_mask: ones(ids.length),
      ...(cache ? { past_key_values: cache } : {}),
      max_new_tokens: job.decodeTokens + 1,
      min_new_tokens: job.decodeTokens + 1,
      do_sample: false,
      streamer,
    } as unknown as Parameters<typeof model.generate>[0]);
    const marks: Marks = { wall: [t0, t1, stamps[1], stamps[stamps.length - 1]], cpu: [c0, c1, cpuStamps[1], cpuStamps[cpuStamps.length - 1]] };
    return result(TJS_DEVICE[job.provider], marks, ids.length, stamps.length - 2, generated.slice(0, -1), rssAfterLoad);
  } finally {
    await model.dispose();
  }
}
