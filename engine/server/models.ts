// The models the engine can run: packages in <globalStorage>/models (the demo model's conversion and
// every Titanize result), plus package folders the extension knows of. Also where conversions go.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelInfo } from '../../protocol/engine';
import { ModelError } from '../model/errors';
import { readPackage, type LoadedPackage } from '../titanize/package';
import { DEFAULT_MAG_WEIGHT, type TpttSettingsInput } from '../titanize/settings';
import { runTitanizeJob } from './titanize-job';

/** The bundled demo model's conversion: delta_rule, the default μ, window 512, chunk 64, exact. */
export const DEMO_SETTINGS: TpttSettingsInput = { operator_mode: 'delta_rule', mag_weight: DEFAULT_MAG_WEIGHT, max_self_attn_length: 512, max_chunk_size: 64, semantics: 'exact' };
export const DEMO_PACKAGE_NAME = 'code-llama-19m-titan';

export function describePackage(pkg: LoadedPackage, demo: boolean): ModelInfo {
  const m = pkg.manifest;
  const t = (m.tptt ?? {}) as Record<string, unknown>;
  const summary =
    m.kind === 'titan'
      ? `${t.operator_mode ?? '?'} μ ${t.mag_weight ?? '?'} · window ${t.max_self_attn_length ?? 'unbounded'} · chunk ${t.max_chunk_size ?? '?'} · ${t.semantics ?? 'exact'} · ${m.quantization ? 'int4' : m.dtype}`
      : `base model · window ${m.window ?? 'unbounded'} · ${m.quantization ? 'int4' : m.dtype}`;
  const lora = t.lora_config as { r?: number } | null | undefined;
  const merged = m.adapter || lora ? ` · LoRA${lora?.r ? ` r${lora.r}` : ''} merged` : '';
  return {
    path: pkg.dir,
    name: path.basename(pkg.dir),
    kind: m.kind,
    demo,
    dtype: m.dtype,
    modelType: m.source?.modelType ?? 'unknown',
    summary: summary + merged,
    createdAt: m.createdAt ?? null,
  };
}

/** A folder name for a conversion: the source's name and the settings that make it different. */
export function packageNameFor(source: string, input: TpttSettingsInput, dtype: string, adapter: string | null): string {
  const parts = [
    path.basename(path.resolve(source)),
    input.operator_mode ?? 'delta_rule',
    `mu${input.mag_weight ?? DEFAULT_MAG_WEIGHT}`,
    `w${input.max_self_attn_length ?? 'inf'}`,
    `c${input.max_chunk_size ?? 64}`,
    input.semantics ?? 'exact',
    dtype,
  ];
  if (input.cross_gate) parts.push('xgate');
  if (adapter) parts.push(`lora-${path.basename(adapter)}`);
  return parts.join('-').replace(/[^A-Za-z0-9._-]+/g, '_');
}

/** Whether a package's recorded TPTT settings are the demo conversion's (DEMO_SETTINGS). */
function convertedWithDemoSettings(pkg: LoadedPackage): boolean {
  const t = (pkg.manifest.tptt ?? {}) as Record<string, unknown>;
  return pkg.manifest.kind === 'titan' && !pkg.manifest.adapter && Object.entries(DEMO_SETTINGS).every(([key, value]) => t[key] === value);
}

export class ModelCatalog {
  constructor(
    readonly globalStorageDir: string,
    readonly demoModelDir: string,
  ) {}

  get modelsDir(): string {
    return path.join(this.globalStorageDir, 'models');
  }

  get demoPackageDir(): string {
    return path.join(this.modelsDir, DEMO_PACKAGE_NAME);
  }

  /** Alignment runs: a run in progress (or cancelled, with its checkpoint) and every finished run's adapter and report. */
  get alignmentsDir(): string {
    return path.join(this.globalStorageDir, 'alignments');
  }

  /**
   * The folder of the alignment run of `packageDir` on `folders`: one per pair, so a cancelled run is
   * found again and resumed; a finished run moves out of it (registerAlignment).
   */
  alignmentRunDir(packageDir: string, folders: readonly string[]): string {
    const key = createHash('sha256').update(JSON.stringify([path.resolve(packageDir), ...folders.map((f) => path.resolve(f))])).digest('hex').slice(0, 10);
    const name = `${path.basename(path.resolve(packageDir))}-on-${path.basename(path.resolve(folders[0] ?? 'workspace'))}`.replace(/[^A-Za-z0-9._-]+/g, '_');
    return path.join(this.alignmentsDir, `${name}-${key}.run`);
  }

  /**
   * Makes a finished run's merged package a model: <runDir>/package moves to models/<name> (a name not
   * yet taken: earlier alignments stay selectable), the rest of the run (adapter, report, log) to
   * alignments/<name>. Returns the package's new folder and the run's.
   */
  registerAlignment(runDir: string, packageDir: string, folders: readonly string[]): { packageDir: string; runDir: string } {
    const base = `${path.basename(path.resolve(packageDir))}-aligned-${path.basename(path.resolve(folders[0] ?? 'workspace'))}`.replace(/[^A-Za-z0-9._-]+/g, '_');
    fs.mkdirSync(this.modelsDir, { recursive: true });
    let name = base;
    for (let n = 2; fs.existsSync(path.join(this.modelsDir, name)) || fs.existsSync(path.join(this.alignmentsDir, name)); n++) name = `${base}-${n}`;
    const target = path.join(this.modelsDir, name);
    fs.renameSync(path.join(runDir, 'package'), target);
    const kept = path.join(this.alignmentsDir, name);
    fs.renameSync(runDir, kept);
    return { packageDir: target, runDir: kept };
  }

  isDemo(dir: string): boolean {
    return path.resolve(dir) === path.resolve(this.demoPackageDir);
  }

  describe(dir: string): ModelInfo {
    return describePackage(readPackage(dir), this.isDemo(dir));
  }

  /**
   * The demo model's package, converting the bundled checkpoint on first use (or when the package
   * is unreadable or was converted with other settings, e.g. by an older engine: before the default
   * μ became 0.05 the demo was converted with 0.5, which wrecks the unaligned model past its window).
   */
  async ensureDemoPackage(options: { signal?: AbortSignal; onProgress?: (message: string, done?: number, total?: number) => void } = {}): Promise<string> {
    const dir = this.demoPackageDir;
    try {
      if (convertedWithDemoSettings(readPackage(dir))) return dir;
    } catch {
      // convert below
    }
    if (!fs.existsSync(path.join(this.demoModelDir, 'config.json'))) throw new ModelError(`the bundled demo model is missing from ${this.demoModelDir}; reinstall the extension`);
    fs.mkdirSync(this.modelsDir, { recursive: true });
    options.onProgress?.('Converting the bundled demo model (first use)…');
    await runTitanizeJob(
      { source: this.demoModelDir, out: dir, input: DEMO_SETTINGS, dtype: 'fp32', adapter: null },
      { signal: options.signal, onProgress: (done, total) => options.onProgress?.('Converting the bundled demo model (first use)…', done, total) },
    );
    return dir;
  }

  /** Readable packages under models/ and among `extraPaths`, the demo first, then by name. */
  list(extraPaths: readonly string[] = []): ModelInfo[] {
    const dirs = new Set<string>();
    if (fs.existsSync(this.modelsDir)) {
      for (const e of fs.readdirSync(this.modelsDir, { withFileTypes: true })) {
        if (e.isDirectory() && !e.name.includes('.tmp-')) dirs.add(path.join(this.modelsDir, e.name));
      }
    }
    for (const p of extraPaths) if (p) dirs.add(path.resolve(p));
    const models: ModelInfo[] = [];
    for (const dir of dirs) {
      try {
        models.push(this.describe(dir));
      } catch {
        // not a (current) package: left out of the list
      }
    }
    return models.sort((a, b) => Number(b.demo) - Number(a.demo) || a.name.localeCompare(b.name));
  }
}
