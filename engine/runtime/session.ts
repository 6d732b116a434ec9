// Running a model package with onnxruntime-node: execution provider choice, the run state carried
// between runs (softmax window + any recurrent state), and segment-by-segment forward passes.
//
// `session.run` blocks the thread it runs on: the engine hosts this class in a worker thread
// (runtime/worker.ts); tests and the CLI's one-shot commands may use it directly.
import * as ort from 'onnxruntime-node';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../model/errors';
import { ropeInverseFrequencies } from '../model/config';
import { readPackage, type LoadedPackage } from '../titanize/package';
import { decodeState, encodeState } from './state-blob';
import * as crypto from 'node:crypto';
import { onnx } from 'onnx-proto';
import { GraphBuilder, type DType } from '../graph/builder';
import { GarbageBudget } from './garbage';

export type ProviderChoice = 'auto' | 'webgpu' | 'cuda' | 'cpu';

export interface ProviderReport {
  /** The provider the session runs on. */
  provider: 'webgpu' | 'cuda' | 'cpu';
  /** Why: which were tried and why they were passed over. */
  reason: string;
  /**
   * Set when a GPU provider that should have worked failed (to start, or during a run) and the model
   * runs on the CPU instead: what failed and why (runtime/cpu-fallback.ts). The extension warns.
   */
  fallback?: string;
}

export interface RunnerOptions {
  provider?: ProviderChoice;
  /**
   * A GPU provider that fails to start or fails during a run is replaced by the CPU provider, with
   * ProviderReport.fallback saying why (runtime/cpu-fallback.ts, in the model worker). The engine's
   * memory and chat set it; benchmarks leave it off, as they measure the provider they asked for.
   */
  cpuFallback?: boolean;
  /** Intra-op threads for the CPU provider (default: ORT's choice, all cores). */
  threads?: number;
  /** Write onnxruntime's per-node profile (JSON) with this path prefix, for performance work. */
  profilePrefix?: string;
  /**
   * WebGPU: keep the run state (recurrent state and softmax window) in device memory from one run to
   * the next instead of copying it to the host and back every run; it crosses only when saved.
   * Default true: on the H200 it made decode 2.7× and prefill 1.6× faster (bench/gpu/README.md).
   */
  stateOnDevice?: boolean;
}

/** Session settings beyond the provider order, applied where the provider uses them. */
export interface SessionTuning {
  /** Intra-op threads (CPU provider); absent: onnxruntime's choice. */
  threads?: number;
  /** Write onnxruntime's per-node profile with this path prefix. */
  profilePrefix?: string;
  /** Outputs to leave in WebGPU device memory. */
  deviceOutputs?: string[];
}

/** Every graph input that carries state from one run to the next, by name. */
export type RunState = Map<string, ort.Tensor>;

/** The initial value of a state input: zero-sized along its symbolic axes (the graph supplies defaults), zeros along fixed ones (a ring window's slots, masked until filled). */
function emptyLike(dims: readonly (number | string)[], type: string): ort.Tensor {
  const shape = dims.map((d) => (typeof d === 'number' ? d : 0));
  const size = shape.reduce((a, b) => a * b, 1);
  return type === 'float16' ? new ort.Tensor('float16', new Uint16Array(size), shape) : new ort.Tensor('float32', new Float32Array(size), shape);
}

/** The directory holding onnxruntime-node's native binding (and any installed provider libraries). */
function bindingDir(): string {
  const pkgJson = require.resolve('onnxruntime-node/package.json');
  return path.join(path.dirname(pkgJson), 'bin', 'napi-v6', process.platform, process.arch);
}

/**
 * Why a provider cannot work on this machine, found without trying it (trying prints native errors
 * to stderr): the CUDA provider is an opt-in download; WebGPU on Linux needs the Vulkan loader.
 */
function providerUnavailable(ep: 'cuda' | 'webgpu', auto: boolean): string | null {
  if (ep === 'cuda') {
    const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
    return fs.existsSync(path.join(bindingDir(), lib)) ? null : 'CUDA provider not installed (opt in with `npm run install-cuda`)';
  }
  if (process.platform === 'linux') {
    const dirs = [...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu', '/usr/local/lib'];
    if (!dirs.some((d) => fs.existsSync(path.join(d, 'libvulkan.so.1')))) return 'no Vulkan loader (libvulkan.so.1) on this machine';
    // Without a GPU device node the only Vulkan driver is a software one (lavapipe), slower than
    // the CPU provider; `auto` passes it over (an explicit --provider webgpu still uses it).
    if (auto && !process.env.VK_DRIVER_FILES && !process.env.VK_ICD_FILENAMES && !hasGpuDeviceNode()) return 'no GPU device (/dev/dri render node or /dev/nvidia*)';
  }
  return null;
}

function hasGpuDeviceNode(): boolean {
  const list = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);
  return list('/dev/dri').some((n) => n.startsWith('renderD')) || list('/dev').some((n) => /^nvidia\d+$/.test(n));
}

/** Opens a graph on the requested provider (auto: cuda, then webgpu, then cpu), with the reasons for the choice. */
export async function createSession(fileFor: (ep: 'cuda' | 'webgpu' | 'cpu') => string, provider: ProviderChoice, tuning: SessionTuning = {}): Promise<{ session: ort.InferenceSession; report: ProviderReport }> {
  const { threads, profilePrefix } = tuning;
  const base: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    // Native warnings (e.g. shape ops placed on the CPU by design) would clutter the CLI's stderr.
    logSeverityLevel: 3,
    ...(threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}),
    ...(profilePrefix ? { enableProfiling: true, profileFilePrefix: profilePrefix } : {}),
  };
  const order: ('cuda' | 'webgpu' | 'cpu')[] = provider === 'auto' ? ['cuda', 'webgpu', 'cpu'] : [provider];
  const skipped: string[] = [];
  /** Providers that are installed but failed to start: a fault worth a warning, unlike a missing one. */
  const failed: string[] = [];
  for (const ep of order) {
    const missing = ep === 'cpu' ? null : providerUnavailable(ep, provider === 'auto');
    if (missing) {
      if (provider !== 'auto') throw new ModelError(`execution provider ${ep} is not available: ${missing}`);
      skipped.push(`${ep}: ${missing}`);
      continue;
    }
    try {
      const session = await ort.InferenceSession.create(fileFor(ep), { ...base, executionProviders: [ep], ...(ep === 'webgpu' ? webgpuOptions(tuning) : {}) });
      const reason = skipped.length ? `${ep} (passed over: ${skipped.join('; ')})` : `${ep} (${provider === 'auto' ? 'first available' : 'requested'})`;
      return { session, report: { provider: ep, reason, ...(failed.length ? { fallback: failed.join('; ') } : {}) } };
    } catch (e) {
      const msg = String((e as Error).message ?? e).split('\n')[0];
      if (provider !== 'auto') throw new ModelError(`execution provider ${ep} failed to start: ${msg}`);
      skipped.push(`${ep}: ${msg}`);
      failed.push(`${ep} failed to start: ${msg}`);
    }
  }
  throw new ModelError(`no execution provider could start the model (${skipped.join('; ')})`);
}

/** Dawn/onnxruntime validation levels the WebGPU provider accepts (TITAN_WEBGPU_VALIDATION, for measuring). */
const WEBGPU_VALIDATION = ['disabled', 'wgpuOnly', 'basic', 'full'] as const;

/** WebGPU-only session settings: which outputs stay in device memory, and the validation level. */
function webgpuOptions(tuning: SessionTuning): ort.InferenceSession.SessionOptions {
  const options: ort.InferenceSession.SessionOptions = {};
  if (tuning.deviceOutputs?.length) options.preferredOutputLocation = Object.fromEntries(tuning.deviceOutputs.map((name) => [name, 'gpu-buffer' as const]));
  // Validation costs host time on every kernel launch, and launches bound decoding; this switch lets
  // the benchmarks measure it (bench/gpu/README.md) without making it a user setting.
  const validation = process.env.TITAN_WEBGPU_VALIDATION;
  if (validation) {
    const mode = WEBGPU_VALIDATION.find((m) => m === validation);
    if (!mode) throw new ModelError(`TITAN_WEBGPU_VALIDATION must be one of ${WEBGPU_VALIDATION.join(', ')} (got ${validation})`);
    return { ...options, executionProviders: [{ name: 'webgpu', validationMode: mode }] };
  }
  return options;
}

/** The output names of an ONNX file's graph, read without loading its weights. */
function graphOutputNames(file: string): string[] {
  return (onnx.ModelProto.decode(fs.readFileSync(file)).graph?.output ?? []).map((o) => o.name ?? '');
}

/** The graph output that carries a state input forward to the next run. */
function stateOutputName(input: string): string {
  return input.startsWith('past_') ? input.replace('past_', 'present_') : input.replace(/^state_in\./, 'state_out.');
}

function byteSize(t: ort.Tensor): number {
  return t.size * (t.type === 'float16' ? 2 : t.type === 'int64' ? 8 : 4);
}

/** Graph inputs that describe the run itself rather than carry state. */
const RUN_INPUTS = new Set(['input_ids', 'logits_rows', 'call_start', 'stream_position', 'rope_cos', 'rope_sin']);

/**
 * cos and sin of RoPE's angles for positions from, from+1, … (count rows of frequencies.length):
 * [count, d/2] row-major. Angles are taken in float64 and only the results rounded to float32, so a
 * key rotated at position 1,000,000 is as exact as one at 10 (a float32 angle there is off by ~0.03).
 */
export function ropeTables(frequencies: Float64Array, from: number, count: number): { cos: Float32Array; sin: Float32Array } {
  const half = frequencies.length;
  const cos = new Float32Array(count * half);
  const sin = new Float32Array(count * half);
  for (let t = 0; t < count; t++) {
    for (let j = 0; j < half; j++) {
      const angle = (from + t) * frequencies[j];
      cos[t * half + j] = Math.cos(angle);
      sin[t * half + j] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** Largest divisor of `length` not above `max` (the reference's chunk choice). */
export function largestDivisorAtMost(length: number, max: number): number {
  for (let c = Math.min(max, length); c > 1; c--) if (length % c === 0) return c;
  return 1;
}

/**
 * How a call of `length` tokens starting at stream position `position` is cut into graph runs. The
 * runtime and the training graphs (engine/train/graph.ts) both use it, so they cut alike.
 */
export function planRuns(manifest: Pick<LoadedPackage['manifest'], 'tptt' | 'runCapacity'>, position: number, length: number): number[] {
  const tptt = manifest.tptt as { max_chunk_size?: number; semantics?: string } | undefined;
  if (!tptt?.max_chunk_size) return [length];
  const C = tptt.max_chunk_size;
  const capacity = manifest.runCapacity ?? C;
  const plan: number[] = [];
  if (tptt.semantics === 'tptt-0.12') {
    // The reference processes a call in equal chunks: the largest divisor of its length ≤ C.
    const c = largestDivisorAtMost(length, C);
    for (let i = 0; i < length; i += c) plan.push(c);
    return plan;
  }
  // Exact semantics: a run holds up to `capacity` tokens counted from the start of the current
  // chunk (runs are chunk-aligned inside the graph), so it ends at or before a multiple of C.
  let pos = position;
  let left = length;
  while (left > 0) {
    const size = Math.min(left, capacity - (pos % C));
    plan.push(size);
    pos += size;
    left -= size;
  }
  return plan;
}

export class ModelRunner {
  private state: RunState = new Map();
  /** Tokens consumed since the last reset. */
  position = 0;
  /**
   * Bytes of run state copied between host and device memory by runs so far (GPU providers only):
   * up as inputs in host memory, down as outputs returned to the host.
   */
  stateBytesCopied = 0;
  /** Dropped host copies of the state: collected every 8 MiB so resident memory stays flat (garbage.ts). */
  private readonly garbage = new GarbageBudget(8 * 2 ** 20);

  private constructor(
    readonly pkg: LoadedPackage,
    private readonly session: ort.InferenceSession,
    readonly provider: ProviderReport,
    private readonly stateInputs: { name: string; dims: readonly (number | string)[]; type: string }[],
    private readonly hasRunInput: { call_start: boolean; stream_position: boolean; rope: boolean },
    /** The one-token decode graph, when the package has one (same state interface). */
    private readonly stepSession: ort.InferenceSession | null,
    /** Copies device-resident state to the host (WebGPU with stateOnDevice), else null. */
    private readonly download: ort.InferenceSession | null,
  ) {
    this.reset();
  }

  static async open(packageDir: string, options: RunnerOptions = {}): Promise<ModelRunner> {
    const pkg = readPackage(packageDir);
    // GPU providers run the half-precision graphs when the package has them.
    const graphs = pkg.manifest.graphs;
    const pick = (ep: string, fp32: string | undefined, fp16: string | undefined) => (ep !== 'cpu' && fp16 ? fp16 : fp32);
    const fileFor = (ep: string) => path.join(pkg.dir, pick(ep, graphs.decoder, graphs.decoderFp16)!);
    const stateOnDevice = options.stateOnDevice ?? true;
    // Only WebGPU sessions use the list; an explicit CPU run need not read the graph for it.
    const deviceOutputs = (file: string) => (stateOnDevice && options.provider !== 'cpu' ? graphOutputNames(file).filter((n) => n !== 'logits') : undefined);
    const { session, report } = await createSession(fileFor, options.provider ?? 'auto', { threads: options.threads, profilePrefix: options.profilePrefix, deviceOutputs: deviceOutputs(fileFor('webgpu')) });
    const meta = session.inputMetadata as readonly { name: string; isTensor: boolean; type?: string; shape?: readonly (number | string)[] }[];
    const stateInputs = meta
      .filter((m) => !RUN_INPUTS.has(m.name))
      .map((m) => ({ name: m.name, dims: m.shape ?? [], type: m.type ?? 'float32' }));
    const names = new Set(session.inputNames);
    let step: ort.InferenceSession | null = null;
    const stepFile = pick(report.provider, graphs.step, graphs.stepFp16);
    if (stepFile) {
      const file = path.join(pkg.dir, stepFile);
      step = (await createSession(() => file, report.provider, { threads: options.threads, profilePrefix: options.profilePrefix && `${options.profilePrefix}-step`, deviceOutputs: deviceOutputs(file) })).session;
    }
    const download = stateOnDevice && report.provider === 'webgpu' ? await openDownloadSession(stateInputs) : null;
    return new ModelRunner(pkg, session, report, stateInputs, { call_start: names.has('call_start'), stream_position: names.has('stream_position'), rope: names.has('rope_cos') }, step, download);
  }

  get config() {
    return this.pkg.config;
  }

  /**
   * RoPE's inverse frequencies, for graphs that take the run's rotation tables as inputs (ring
   * windows): rounded to float32 as the reference (and the sliding graphs) hold them.
   */
  private get ropeFrequencies(): Float64Array {
    return (this.ropeFrequencyCache ??= ropeInverseFrequencies(this.config.rope, this.config.headDim).map(Math.fround));
  }
  private ropeFrequencyCache: Float64Array | undefined;

  /** Forgets everything: the next run starts a new stream. */
  reset(): void {
    this.replaceState(new Map(this.stateInputs.map((s) => [s.name, emptyLike(s.dims, s.type)])));
    this.position = 0;
  }

  /** Whether the state stays in device memory between runs (WebGPU with stateOnDevice). */
  get stateOnDevice(): boolean {
    return this.download !== null;
  }

  /** The element type each state input takes: float32, or float16 in the fp16 graphs GPU providers run. */
  get stateTypes(): ReadonlyMap<string, string> {
    return new Map(this.stateInputs.map((s) => [s.name, s.type]));
  }

  /** Device buffers are freed only by dispose(): the state they held is released once replaced. */
  private replaceState(next: RunState): void {
    const kept = new Set(next.values());
    for (const t of this.state.values()) {
      if (kept.has(t)) continue;
      if (t.location === 'gpu-buffer') t.dispose();
      else this.garbage.drop(byteSize(t));
    }
    this.state = next;
  }

  /** How one forward call is cut into graph runs (Titan graphs take at most max_chunk_size tokens). */
  runPlan(length: number): number[] {
    return planRuns(this.pkg.manifest, this.position, length);
  }

  /**
   * Runs `ids` as one call after everything fed so far, returning the next-token logits after
   * each of `rows` (indices into `ids`).
   */
  async forward(ids: readonly number[], rows: readonly number[]): Promise<Float32Array[]> {
    if (ids.length === 0) throw new ModelError('forward needs at least one token');
    const V = this.config.vocabSize;
    for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= V) throw new ModelError(`token id ${id} is outside the vocabulary (0..${V - 1})`);
    for (const r of rows) if (!Number.isInteger(r) || r < 0 || r >= ids.length) throw new ModelError(`logits row ${r} is outside the segment (0..${ids.length - 1})`);
    const result: Float32Array[] = new Array(rows.length);
    let start = 0;
    for (const [index, size] of this.runPlan(ids.length).entries()) {
      const wanted = rows.map((r, i) => [r - start, i] as const).filter(([r]) => r >= 0 && r < size);
      const out = await this.run(ids.slice(start, start + size), wanted.map(([r]) => r), index === 0);
      wanted.forEach(([, i], j) => (result[i] = out[j]));
      start += size;
    }
    return result;
  }

  /** One graph run: `ids` continue the state; returns logits rows for `rows` (may be empty). */
  private async run(ids: readonly number[], rows: readonly number[], callStart: boolean): Promise<Float32Array[]> {
    const V = this.config.vocabSize;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [ids.length]),
      logits_rows: new ort.Tensor('int64', BigInt64Array.from(rows.map(BigInt)), [rows.length]),
    };
    if (this.hasRunInput.call_start) feeds.call_start = new ort.Tensor('bool', Uint8Array.from([callStart ? 1 : 0]), [1]);
    if (this.hasRunInput.stream_position) feeds.stream_position = new ort.Tensor('int64', BigInt64Array.from([BigInt(this.position)]), [1]);
    if (this.hasRunInput.rope) {
      const { cos, sin } = ropeTables(this.ropeFrequencies, this.position, ids.length);
      feeds.rope_cos = new ort.Tensor('float32', cos, [ids.length, this.ropeFrequencies.length]);
      feeds.rope_sin = new ort.Tensor('float32', sin, [ids.length, this.ropeFrequencies.length]);
    }
    for (const [name, t] of this.state) feeds[name] = t;
    const out = await (ids.length === 1 && this.stepSession ? this.stepSession : this.session).run(feeds);
    const next: RunState = new Map();
    for (const s of this.stateInputs) {
      const outName = stateOutputName(s.name);
      const t = out[outName];
      if (!t) throw new Error(`graph returned no ${outName}`);
      next.set(s.name, t);
    }
    if (this.provider.provider !== 'cpu') {
      for (const t of this.state.values()) if (t.location === 'cpu') this.stateBytesCopied += byteSize(t);
      for (const t of next.values()) if (t.location === 'cpu') this.stateBytesCopied += byteSize(t);
    }
    this.replaceState(next);
    this.position += ids.length;
    const logits = out.logits.data as Float32Array;
    return rows.map((_, i) => logits.slice(i * V, (i + 1) * V));
  }

  /** Identifies what a saved state is valid for: the weights, dtype, window and TPTT settings. */
  get packageKey(): string {
    const m = this.pkg.manifest;
    const parts: unknown[] = [m.source.weightsSha256, m.kind, m.dtype, m.window, m.tptt ?? null];
    // A merged adapter changes the weights but not the source's hash. Only then is it added, so the
    // keys (and saved memories) of packages without one stay as they were.
    if (m.adapter) parts.push({ adapter: m.adapter.sha256 });
    // int4 weights compute other numbers from the same source weights (added likewise, only when present).
    if (m.quantization) parts.push({ quantization: m.quantization });
    // A ring window's state has another layout than a sliding one's (likewise only when present).
    if (m.windowLayout) parts.push({ windowLayout: m.windowLayout });
    return crypto.createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);
  }

  /** The run state as a checksummed blob (see state-blob.ts). */
  async saveState(): Promise<Buffer> {
    const host = await this.hostState();
    return encodeState({
      position: this.position,
      packageKey: this.packageKey,
      tensors: this.stateInputs.map((s) => {
        const t = host.get(s.name)!;
        return { name: s.name, dims: [...t.dims], dtype: t.type === 'float16' ? ('float16' as const) : ('float32' as const), data: t.data as Float32Array | Uint16Array };
      }),
    });
  }

  /** The state with every tensor in host memory (device-resident tensors copied down, one run). */
  private async hostState(): Promise<RunState> {
    if (!this.download || ![...this.state.values()].some((t) => t.location === 'gpu-buffer')) return this.state;
    const feeds = Object.fromEntries(this.stateInputs.map((s) => [`in.${s.name}`, this.state.get(s.name)!]));
    const out = await this.download.run(feeds);
    return new Map(this.stateInputs.map((s) => [s.name, out[`out.${s.name}`]]));
  }

  loadState(blob: Uint8Array): void {
    const snap = decodeState(blob, this.packageKey);
    const byName = new Map(snap.tensors.map((t) => [t.name, t]));
    const next: RunState = new Map();
    for (const s of this.stateInputs) {
      const t = byName.get(s.name);
      if (!t) throw new ModelError(`state blob lacks ${s.name}`);
      if (t.dtype !== (s.type === 'float16' ? 'float16' : 'float32')) throw new ModelError(`state blob: ${s.name} is ${t.dtype}, the graph expects ${s.type}`);
      // Fixed axes must match here: a mismatch would otherwise surface as a native error at the next run.
      if (t.dims.length !== s.dims.length || s.dims.some((d, j) => typeof d === 'number' && d !== t.dims[j])) {
        throw new ModelError(`state blob: ${s.name} has shape [${t.dims}], the graph expects [${s.dims}]`);
      }
      next.set(s.name, t.dtype === 'float16' ? new ort.Tensor('float16', t.data as Uint16Array, t.dims) : new ort.Tensor('float32', t.data as Float32Array, t.dims));
    }
    this.replaceState(next);
    this.position = snap.position;
  }

  async release(): Promise<void> {
    this.replaceState(new Map());
    // Profiles are written when profiling ends (no-op otherwise).
    for (const session of [this.session, this.stepSession, this.download]) {
      if (!session) continue;
      try {
        (session as unknown as { endProfiling?: () => void }).endProfiling?.();
      } catch {
        // not profiling
      }
      await session.release();
    }
  }
}

/**
 * A WebGPU session of Identity nodes, one per state tensor: onnxruntime-node cannot read a device
 * tensor directly (its download is not implemented), but a run whose outputs default to host memory
 * copies them down.
 */
async function openDownloadSession(stateInputs: readonly { name: string; dims: readonly (number | string)[]; type: string }[]): Promise<ort.InferenceSession> {
  const g = new GraphBuilder('titan-state-download', 'none.bin');
  for (const s of stateInputs) {
    const dims = s.dims.map((d, i) => (typeof d === 'number' ? d : `${s.name}_${i}`));
    const x = g.input(`in.${s.name}`, s.type as DType, dims);
    g.output(x, `out.${s.name}`, s.type as DType, dims);
  }
  return ort.InferenceSession.create(g.toBytes(), { executionProviders: ['webgpu'], logSeverityLevel: 3 });
}
