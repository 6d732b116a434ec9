// Every `titan.*` setting, read through one typed class: one getter per setting, with its default
// and its bounds, so a bad value in settings.json degrades to the default instead of reaching the
// engine. No runtime `vscode` import: the class reads through a `ConfigurationReader`, which the
// extension backs with workspace.getConfiguration and the unit tests with plain objects.
import type { ConfigureParams, ProviderChoice, WorkspaceFolderParam } from '../protocol/engine';
import type { FormDefaults } from '../protocol/webview';

export const CONFIG_SECTION = 'titan';

/** What VS Code's WorkspaceConfiguration offers, reduced to what the class needs. */
export interface ConfigurationReader {
  get<T>(key: string): T | undefined;
}

/** The defaults, as package.json's contributes.configuration declares them (a unit test compares). */
export const DEFAULTS = {
  executionProvider: 'auto' as ProviderChoice,
  'conversion.operator': 'delta_rule',
  'conversion.magWeight': 0.05,
  'conversion.window': 512,
  'conversion.chunk': 64,
  'conversion.semantics': 'exact' as 'exact' | 'tptt-0.12',
  'conversion.dtype': 'fp32' as 'fp32' | 'fp16' | 'int4',
  'conversion.crossGate': false,
  'memory.autoBuild': true,
  'memory.maxFileKB': 1024,
  'memory.storageCapMB': 1024,
  'memory.maxFiles': 100_000,
  'memory.maxTokens': 32 * 1024 * 1024,
  'memory.exclude': [] as string[],
  'retrieval.enabled': true,
  'engine.threads': 0,
  'model.path': '',
  'answer.maxNewTokens': 256,
} as const;

export type SettingKey = keyof typeof DEFAULTS;

const PROVIDERS: readonly ProviderChoice[] = ['auto', 'webgpu', 'cuda', 'cpu'];

/** Settings whose change needs the engine reconfigured (model reopened, memory reopened). */
const ENGINE_KEYS: readonly SettingKey[] = ['executionProvider', 'engine.threads', 'model.path', 'memory.exclude', 'memory.maxFileKB', 'memory.storageCapMB', 'memory.maxFiles', 'memory.maxTokens'];

export class TitanConfig {
  constructor(
    private readonly read: () => ConfigurationReader,
    /** Writes a user (global) setting; absent in tests that only read. */
    private readonly write?: (key: SettingKey, value: unknown) => PromiseLike<void>,
  ) {}

  /** Makes a package the model in use ('' = the bundled demo model). */
  async setModelPath(packagePath: string): Promise<void> {
    if (!this.write) throw new Error('this configuration is read-only');
    await this.write('model.path', packagePath);
  }

  private value<K extends SettingKey>(key: K): unknown {
    const v = this.read().get<unknown>(key);
    return v === undefined ? DEFAULTS[key] : v;
  }

  private num(key: SettingKey, min: number, max: number, integer = false): number {
    const v = this.value(key);
    const fallback = DEFAULTS[key] as number;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) return fallback;
    return integer ? Math.round(v) : v;
  }

  private bool(key: SettingKey): boolean {
    const v = this.value(key);
    return typeof v === 'boolean' ? v : (DEFAULTS[key] as boolean);
  }

  private choice<T extends string>(key: SettingKey, choices: readonly T[]): T {
    const v = this.value(key);
    return choices.includes(v as T) ? (v as T) : (DEFAULTS[key] as T);
  }

  get executionProvider(): ProviderChoice {
    return this.choice('executionProvider', PROVIDERS);
  }

  get threads(): number {
    return this.num('engine.threads', 0, 1024, true);
  }

  /** The model package folder; null = the bundled demo model. */
  get modelPath(): string | null {
    const v = this.value('model.path');
    return typeof v === 'string' && v.trim() !== '' ? v.trim() : null;
  }

  get autoBuild(): boolean {
    return this.bool('memory.autoBuild');
  }

  get maxFileBytes(): number {
    return Math.round(this.num('memory.maxFileKB', 1, 1024 * 1024) * 1024);
  }

  get storageCapBytes(): number {
    return Math.round(this.num('memory.storageCapMB', 1, 1024 * 1024) * 1024 * 1024);
  }

  get maxFiles(): number {
    return this.num('memory.maxFiles', 1, Number.MAX_SAFE_INTEGER, true);
  }

  get maxStreamTokens(): number {
    return this.num('memory.maxTokens', 1, Number.MAX_SAFE_INTEGER, true);
  }

  get memoryExclude(): string[] {
    const v = this.value('memory.exclude');
    return Array.isArray(v) ? v.filter((g): g is string => typeof g === 'string' && g.trim() !== '') : [];
  }

  get retrieval(): boolean {
    return this.bool('retrieval.enabled');
  }

  get maxNewTokens(): number {
    return this.num('answer.maxNewTokens', 1, 4096, true);
  }

  /** The Titanize form's starting values. */
  get conversionDefaults(): FormDefaults {
    const window = this.value('conversion.window');
    return {
      operator: typeof this.value('conversion.operator') === 'string' ? (this.value('conversion.operator') as string) : DEFAULTS['conversion.operator'],
      magWeight: this.num('conversion.magWeight', 0, 1),
      // 0 or null in settings = unbounded.
      window: window === null || window === 0 ? null : this.num('conversion.window', 1, 1 << 24, true),
      chunk: this.num('conversion.chunk', 1, 512, true),
      semantics: this.choice('conversion.semantics', ['exact', 'tptt-0.12'] as const),
      dtype: this.choice('conversion.dtype', ['fp32', 'fp16', 'int4'] as const),
      crossGate: this.bool('conversion.crossGate'),
      adapter: '',
    };
  }

  /** The engine's configure params for these settings and workspace folders. */
  engineParams(workspaces: WorkspaceFolderParam[], memoryStorageDir: string | null): Omit<ConfigureParams, 'progressToken'> {
    return {
      modelPath: this.modelPath,
      provider: this.executionProvider,
      threads: this.threads,
      workspaces,
      exclude: this.memoryExclude,
      memoryStorageDir,
      maxFileBytes: this.maxFileBytes,
      storageCapBytes: this.storageCapBytes,
      maxFiles: this.maxFiles,
      maxStreamTokens: this.maxStreamTokens,
    };
  }

  /** Whether a configuration change (VS Code's affectsConfiguration) needs the engine reconfigured. */
  static affectsEngine(affects: (section: string) => boolean): boolean {
    return ENGINE_KEYS.some((k) => affects(`${CONFIG_SECTION}.${k}`)) || affects('files.exclude') || affects('search.exclude');
  }
}

/**
 * A folder's files.exclude and search.exclude merged (VS Code's own search does the same): both
 * are objects of glob → true | false | {when}. Entries set to false in either are dropped.
 */
export function mergeExcludes(...sources: (Record<string, unknown> | undefined)[]): Record<string, boolean | { when: string }> {
  const out: Record<string, boolean | { when: string }> = {};
  for (const src of sources) {
    if (!src || typeof src !== 'object') continue;
    for (const [glob, value] of Object.entries(src)) {
      if (value === true) out[glob] = true;
      else if (value && typeof value === 'object' && typeof (value as { when?: unknown }).when === 'string') out[glob] = { when: (value as { when: string }).when };
      else if (value === false && out[glob] === undefined) out[glob] = false;
    }
  }
  for (const [glob, value] of Object.entries(out)) if (value === false) delete out[glob];
  return out;
}
