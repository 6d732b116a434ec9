// The CPU as the fallback of a failing GPU provider, in the model worker: a GPU provider that was
// asked for by name but cannot start, or that fails during a run (a lost device, a driver fault), is
// replaced by the CPU provider, and the runner's ProviderReport says so in `fallback`, which the
// engine's status carries to the extension. A run that failed mid-call is run again on the CPU from
// the state before it: the answer or ingestion in progress goes on as if nothing happened. When that
// state cannot be read back from the device, the call fails with one line, and the next one runs on
// the CPU from whatever state its caller loads (a question loads the memory's state anyway).
import { ModelError } from '../model/errors';
import { floatToHalf, halfToFloat } from '../model/safetensors';
import { ModelRunner, type RunnerOptions } from './session';
import { decodeState, encodeState, type StateTensor } from './state-blob';

function errorLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0].slice(0, 300);
}

/** Opens the package on the requested provider, or with cpuFallback, on the CPU when an explicitly requested GPU provider cannot start. */
export async function openRunner(packageDir: string, options: RunnerOptions): Promise<ModelRunner> {
  const requested = options.provider ?? 'auto';
  try {
    return await ModelRunner.open(packageDir, options);
  } catch (e) {
    // `auto` already moves on to the CPU itself (createSession notes the failure in `fallback`).
    if (!options.cpuFallback || requested === 'auto' || requested === 'cpu' || !(e instanceof ModelError)) throw e;
    // createSession's message ("execution provider webgpu failed to start: …") without its preamble.
    return cpuRunner(packageDir, options, errorLine(e).replace(/^execution provider /, ''));
  }
}

async function cpuRunner(packageDir: string, options: RunnerOptions, why: string): Promise<ModelRunner> {
  const cpu = await ModelRunner.open(packageDir, { ...options, provider: 'cpu', profilePrefix: undefined });
  Object.assign(cpu.provider, { reason: `cpu (fallback: ${why})`, fallback: why });
  return cpu;
}

/**
 * runner.forward, with a GPU failure during the call handled as the file's header says. `swap` is
 * told of the CPU runner as soon as it exists, whether the call then succeeds or not.
 */
export async function forwardWithFallback(
  runner: ModelRunner,
  ids: readonly number[],
  rows: readonly number[],
  options: RunnerOptions,
  swap: (cpu: ModelRunner) => void,
): Promise<Float32Array[]> {
  const start = runner.position;
  try {
    return await runner.forward(ids, rows);
  } catch (e) {
    // A ModelError is bad input (a token outside the vocabulary), not a device fault.
    if (runner.provider.provider === 'cpu' || e instanceof ModelError) throw e;
    const why = `${runner.provider.provider} failed during a run: ${errorLine(e)}`;
    if (!options.cpuFallback) throw new ModelError(`execution provider ${why}`);
    // Tokens of this call the GPU got through before the failing run (its state is after them).
    const done = runner.position - start;
    let blob: Uint8Array | null;
    try {
      blob = await runner.saveState();
    } catch {
      blob = null; // the state lived in device memory and went with the device
    }
    await runner.release().catch(() => undefined);
    const cpu = await cpuRunner(runner.pkg.dir, options, why);
    swap(cpu);
    if (!blob) throw new ModelError(`execution provider ${why}; the model now runs on the CPU, but the state of this request was lost with the device: run it again`);
    cpu.loadState(stateForRunner(cpu, blob));
    if (rows.some((r) => r < done)) {
      throw new ModelError(`execution provider ${why}; the model now runs on the CPU, but logits this request needed were lost with the device: run it again`);
    }
    return cpu.forward(ids.slice(done), rows.map((r) => r - done));
  }
}

/**
 * runner.saveState, with a GPU failure while the state is copied off the device (device-resident
 * state) handled like one during a run: the CPU takes over, and as the state went with the device,
 * the request fails with one line (the caller restores what it last saved).
 */
export async function saveStateWithFallback(runner: ModelRunner, options: RunnerOptions, swap: (cpu: ModelRunner) => void): Promise<Uint8Array> {
  try {
    return await runner.saveState();
  } catch (e) {
    if (runner.provider.provider === 'cpu' || e instanceof ModelError || !options.cpuFallback) throw e;
    const why = `${runner.provider.provider} failed while its state was read back: ${errorLine(e)}`;
    await runner.release().catch(() => undefined);
    swap(await cpuRunner(runner.pkg.dir, options, why));
    throw new ModelError(`execution provider ${why}; the model now runs on the CPU, but the state was lost with the device: run the request again`);
  }
}

/**
 * A state blob in the precision `runner`'s graphs take: a state saved from an fp16 GPU graph is
 * widened for the CPU's float32 graphs (after a fallback, or when the memory was built on the GPU),
 * and one saved on the CPU is narrowed for the GPU's fp16 graphs (the next session after a fallback).
 */
export function stateForRunner(runner: ModelRunner, blob: Uint8Array): Uint8Array {
  const types = runner.stateTypes;
  const differs = (t: Pick<StateTensor, 'name' | 'dtype'>) => (types.get(t.name) === 'float16' ? 'float16' : 'float32') !== t.dtype;
  // The header alone says whether anything needs converting (the usual case: nothing, no decoding).
  const listed = tensorTypes(blob);
  if (!listed || !listed.some(differs)) return blob;
  const snap = decodeState(blob);
  return encodeState({
    ...snap,
    tensors: snap.tensors.map((t) => {
      if (!differs(t)) return t;
      return t.dtype === 'float16'
        ? { ...t, dtype: 'float32' as const, data: Float32Array.from(t.data as Uint16Array, halfToFloat) }
        : { ...t, dtype: 'float16' as const, data: Uint16Array.from(t.data as Float32Array, floatToHalf) };
    }),
  });
}

/** The tensor table of a state blob's header (state-blob.ts), or null when it is not one: loadState then says why. */
function tensorTypes(blob: Uint8Array): { name: string; dtype: StateTensor['dtype'] }[] | null {
  try {
    const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    if (buf.subarray(0, 8).toString('latin1') !== 'TITANST1') return null;
    const header = JSON.parse(buf.subarray(12, 12 + buf.readUInt32LE(8)).toString('utf8')) as { tensors?: { name: string; dtype?: StateTensor['dtype'] }[] };
    return Array.isArray(header.tensors) ? header.tensors.map((t) => ({ name: t.name, dtype: t.dtype ?? 'float32' })) : null;
  } catch {
    return null;
  }
}
