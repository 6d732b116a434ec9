// titan stream: sustained prefill over one long token stream (constant cost and memory at any
// context), decode speed at points along it, and the provider's matmul peak for comparison.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { measureMatmulPeak, type MatmulPeak } from '../bench/matmul-peak';
import { ModelError } from '../model/errors';
import { WorkerModel } from '../runtime/worker-client';
import type { ProviderChoice } from '../runtime/session';
import { choice, flag, int, noExtraPositionals, positional, str } from './args';
import { providerOption, threadsOption } from './model-commands';
import type { Command } from './types';

/** Used GPU memory in MiB from nvidia-smi (NVIDIA machines), or null. */
function deviceMemoryMiB(): number | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
    const v = Number(out.trim().split('\n')[0]);
    return Number.isFinite(v) ? v : null;
  } catch {
    return null;
  }
}

interface StreamPoint {
  tokens: number;
  /** Prefill tokens/s over the last interval. */
  tokensPerSecond: number;
  rssMiB: number;
  deviceMiB: number | null;
  /** Decode ms/token measured at this point (a few greedy steps), when requested. */
  decodeMsPerToken?: number;
}

export const streamCommand: Command = {
  name: 'stream',
  usage: 'stream <package-dir> [--tokens N] [--segment N] [--every N] [--decode-at 4k,64k,…] [--deadline S] [--peak] [--provider P] [--json] [--out FILE]',
  summary: 'Sustained prefill over one long stream: tokens/s, resident and device memory along it, decode speed at chosen points, and the matmul peak.',
  options: {
    tokens: { type: 'string', help: 'stream length in tokens (default 65536)' },
    segment: { type: 'string', help: 'tokens per call (default 512)' },
    every: { type: 'string', help: 'report a point every N tokens (default 8192)' },
    'decode-at': { type: 'string', help: 'measure decode after these many tokens, comma-separated, k = ×1024 (default: 4k and the end)' },
    deadline: { type: 'string', help: 'stop the stream after this many seconds and report how far it got (default: none)' },
    profile: { type: 'string', help: "write onnxruntime's per-node profiles with this path prefix (see scripts/ort-profile-summary.mjs)" },
    peak: { type: 'boolean', help: "also measure the provider's fp16 (GPU) or fp32 (CPU) matmul throughput" },
    provider: providerOption,
    threads: threadsOption,
    'host-state': { type: 'boolean', help: 'WebGPU: copy the run state through host memory every run (the default keeps it on the device), for comparison' },
    json: { type: 'boolean', help: 'print the report as JSON' },
    out: { type: 'string', help: 'also write the JSON report to this file' },
  },
  async run(ctx) {
    const dir = positional(ctx, 0, '<package-dir>');
    noExtraPositionals(ctx, 1);
    const total = int(ctx, 'tokens', 65536, 1);
    const segment = int(ctx, 'segment', 512, 1);
    const every = int(ctx, 'every', 8192, 1);
    const deadline = int(ctx, 'deadline', 0, 0);
    const decodeAt = (str(ctx, 'decode-at') ?? `4k,${total}`).split(',').map((s) => {
      const m = /^(\d+)(k?)$/i.exec(s.trim());
      if (!m) throw new ModelError(`--decode-at: "${s}" is not a token count like 4096 or 4k`);
      return Number(m[1]) * (m[2] ? 1024 : 1);
    });
    const provider = choice<ProviderChoice>(ctx, 'provider', ['auto', 'webgpu', 'cuda', 'cpu'], 'auto');
    const threads = int(ctx, 'threads', 0, 0) || undefined;
    const model = await WorkerModel.open(dir, { provider, threads, profilePrefix: str(ctx, 'profile'), stateOnDevice: !flag(ctx, 'host-state') });
    const log = (line: string) => process.stderr.write(line + '\n');
    try {
      const V = model.pkg.config.vocabSize;
      // A deterministic stream of ordinary token ids (the speed of a run does not depend on them).
      const tokenAt = (i: number) => 5 + ((i * 7919 + 13) % Math.max(1, V - 10));
      const idle = deviceMemoryMiB();
      const points: StreamPoint[] = [];
      const decodes: { context: number; msPerToken: number }[] = [];
      const t0 = performance.now();
      let mark = t0;
      let markTokens = 0;
      let fed = 0;
      let stopped: string | null = null;
      let segments = 0;
      let segmentBytesCopied = 0;
      const pending = [...decodeAt].sort((a, b) => a - b);
      while (fed < total) {
        if (ctx.signal.aborted) throw new ModelError('cancelled');
        if (deadline && (performance.now() - t0) / 1000 > deadline) {
          stopped = `deadline of ${deadline} s reached`;
          break;
        }
        const n = Math.min(segment, total - fed, pending.length && pending[0] > fed ? pending[0] - fed : segment);
        const copiedBefore = model.stateBytesCopied;
        await model.forward(Array.from({ length: n }, (_, i) => tokenAt(fed + i)), [n - 1]);
        segmentBytesCopied += model.stateBytesCopied - copiedBefore;
        segments++;
        fed += n;
        if (pending.length && fed >= pending[0]) {
          pending.shift();
          // Decode from a saved state, so the stream itself continues unchanged.
          const saved = await model.saveState();
          const steps = 8;
          await model.forward([tokenAt(fed)], [0]);
          const d0 = performance.now();
          for (let s = 1; s <= steps; s++) await model.forward([tokenAt(fed + s)], [0]);
          const ms = (performance.now() - d0) / steps;
          await model.loadState(saved);
          decodes.push({ context: fed, msPerToken: ms });
          log(`decode at ${fed} tokens: ${ms.toFixed(2)} ms/token (${(1000 / ms).toFixed(1)} tokens/s)`);
        }
        if (fed - markTokens >= every || fed === total) {
          const now = performance.now();
          const point: StreamPoint = { tokens: fed, tokensPerSecond: (fed - markTokens) / ((now - mark) / 1000), rssMiB: process.memoryUsage().rss / 2 ** 20, deviceMiB: deviceMemoryMiB() };
          points.push(point);
          log(`${fed} tokens: ${point.tokensPerSecond.toFixed(0)} tokens/s, RSS ${point.rssMiB.toFixed(0)} MiB${point.deviceMiB !== null ? `, device ${point.deviceMiB} MiB` : ''}`);
          mark = now;
          markTokens = fed;
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      let peak: MatmulPeak | null = null;
      if (flag(ctx, 'peak')) {
        const ep = model.provider.provider;
        await model.release();
        peak = await measureMatmulPeak(ep);
        log(`matmul peak (${peak.dtype}, n=${peak.n}, ${ep}): ${peak.tflops.toFixed(2)} TFLOP/s best, ${peak.medianTflops.toFixed(2)} median`);
      }
      const m = model.pkg.manifest;
      const c = model.pkg.config;
      // Forward FLOPs per token: 2 × the projection and MLP weights (the embedding is a lookup; the
      // vocabulary projection runs for one row per call).
      const perLayer = c.hiddenSize * (c.numHeads + 2 * c.numKvHeads) * c.headDim + c.numHeads * c.headDim * c.hiddenSize * (m.kind === 'titan' ? 2 : 1) + 3 * c.hiddenSize * c.intermediateSize;
      const flopPerToken = 2 * c.numLayers * perLayer;
      const sustained = fed / seconds;
      const report = {
        package: dir,
        kind: m.kind,
        dtype: m.dtype,
        window: m.window,
        provider: model.provider,
        tokens: fed,
        stopped,
        seconds,
        sustainedTokensPerSecond: sustained,
        modelTflops: (sustained * flopPerToken) / 1e12,
        fractionOfMatmulPeak: peak ? (sustained * flopPerToken) / 1e12 / peak.tflops : null,
        idleDeviceMiB: idle,
        stateOnDevice: !flag(ctx, 'host-state') && model.provider.provider === 'webgpu',
        // Run state copied between host and device memory per prefill call (0 on the CPU provider).
        stateBytesCopiedPerSegment: segments ? segmentBytesCopied / segments : 0,
        points,
        decodes,
        matmulPeak: peak,
      };
      const json = JSON.stringify(report, null, 2);
      const out = str(ctx, 'out');
      if (out) fs.writeFileSync(out, json + '\n');
      if (flag(ctx, 'json')) process.stdout.write(json + '\n');
      else process.stdout.write(`${fed} tokens in ${seconds.toFixed(1)} s: ${sustained.toFixed(0)} tokens/s sustained (${report.modelTflops.toFixed(2)} TFLOP/s of model math${peak ? `, ${(100 * report.fractionOfMatmulPeak!).toFixed(0)}% of the matmul peak` : ''})\n`);
    } finally {
      await model.release().catch(() => undefined);
    }
  },
};
