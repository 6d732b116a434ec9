// Merging a LoRA adapter into the base projections at conversion, so a published Titans checkpoint
// (base model + TPTT/PEFT adapter) becomes one plain set of weights:
//
//   W' = W + s · B·A        A [r, in], B [out, r], s = lora_alpha / r  (lora_alpha / √r with use_rslora)
//
// Two layouts are read. PEFT's: adapter_config.json + adapter_model.safetensors with keys like
//   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
// and the one tptt 0.12's save_tptt_safetensors writes: the LoRA config inside config.json ("lora_config")
// and keys with the wrappers' names stripped, the attention wrapper kept and PEFT's adapter name:
//   model.model.layers.0.self_attn.base_attn.q_proj.lora_A.default.weight
// Any mix of those prefixes, `.base_attn.` and `.default` is accepted. Everything is validated before any
// work starts: each key must name a LoRA matrix of a projection the checkpoint has, with shapes that fit
// the base tensor and the configured rank; a key we cannot place is an error, never silently dropped
// (a half-applied adapter is worse than a failure). Only JSON and safetensors are read, only inside
// the adapter folder.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModelConfig, type ModelConfig } from '../model/config';
import { ModelError } from '../model/errors';
import { Checkpoint, readSafetensorsHeader, toFloat32, type TensorInfo } from '../model/safetensors';
import { RECURRENT_MODES, TPTT_DEFAULT_MAG_WEIGHT, type LoraConfig, type RecurrentConfig, type TpttSettingsInput } from './settings';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_INDEX_FILE = 'adapter_model.safetensors.index.json';
/** tptt keeps the LoRA config in its model config.json instead of adapter_config.json. */
export const TPTT_CONFIG_FILE = 'config.json';

/** The projections an adapter may target, with the block that holds them. */
const PROJECTIONS: Record<string, 'self_attn' | 'mlp'> = {
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp',
};

export interface LoraAdapter {
  /** Rewrites a source tensor: targeted projections come back merged, everything else unchanged. */
  transformTensor(sourceName: string, data: Float32Array, shape: number[]): Float32Array;
  /** What was loaded, for the command's report. */
  summary: Record<string, unknown>;
  /** The adapter's LoRA settings, recorded in the package manifest. */
  loraConfig: LoraConfig;
  /**
   * sha256 of what the merge adds: every targeted tensor's name, rank, scaling and factors. Recorded in
   * the package manifest, so packages merged from different adapters never share saved states.
   */
  sha256: string;
}

/** adapter_config.json (or tptt's lora_config), the fields that change the merged weights. */
interface AdapterSettings {
  file: string;
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** A list matched by name suffix, or one regular expression matched against the whole module name. */
  targetModules: string[] | string;
  useRslora: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  layersToTransform: number[] | null;
}

/** One targeted projection: the base tensor and its two factors. */
interface LoraPair {
  /** The checkpoint tensor rewritten, e.g. model.layers.0.self_attn.q_proj.weight. */
  target: string;
  keyA: string;
  keyB: string;
  a: Float32Array;
  b: Float32Array;
  rows: number; // out
  cols: number; // in
  r: number;
  scaling: number;
}

/** A LoRA bias (PEFT's lora_bias): s · b added to the base bias. */
interface LoraBias {
  target: string;
  key: string;
  values: Float32Array;
  scaling: number;
}

/**
 * Reads and validates the adapter in `adapterDir` against the checkpoint in `sourceDir`.
 * Throws a one-line ModelError naming the file, key and shapes on any problem.
 */
export function loadLoraAdapter(adapterDir: string, sourceDir: string): LoraAdapter {
  const root = adapterRoot(adapterDir);
  const settings = readAdapterSettings(root);
  const tensors = adapterTensors(root);
  const model = loadModelConfig(sourceDir);
  const ck = Checkpoint.openSync(sourceDir);
  let pairs: LoraPair[];
  let biases: LoraBias[];
  try {
    ({ pairs, biases } = planMerge(root, settings, tensors, ck, model));
  } finally {
    ck.close();
  }

  const byTarget = new Map<string, LoraPair>(pairs.map((p) => [p.target, p]));
  const biasByTarget = new Map<string, LoraBias>(biases.map((b) => [b.target, b]));
  const transformTensor = (sourceName: string, data: Float32Array, shape: number[]): Float32Array => {
    const pair = byTarget.get(sourceName);
    if (pair) {
      if (shape.length !== 2 || shape[0] !== pair.rows || shape[1] !== pair.cols) {
        throw new ModelError(`adapter: ${sourceName} has shape [${shape}] at conversion but [${pair.rows},${pair.cols}] when the adapter was checked`);
      }
      return mergeLowRank(data, pair.a, pair.b, pair.rows, pair.cols, pair.r, pair.scaling);
    }
    const bias = biasByTarget.get(sourceName);
    if (bias) {
      const out = new Float32Array(data.length);
      for (let i = 0; i < data.length; i++) out[i] = data[i] + bias.scaling * bias.values[i];
      return out;
    }
    return data;
  };

  const perModule: Record<string, number> = {};
  for (const p of pairs) {
    const proj = p.target.split('.').at(-2)!;
    perModule[proj] = (perModule[proj] ?? 0) + 1;
  }
  const scalings = [...new Set(pairs.map((p) => p.scaling))];
  const ranks = [...new Set(pairs.map((p) => p.r))];
  const targetList = typeof settings.targetModules === 'string' ? [settings.targetModules] : settings.targetModules;
  const summary: Record<string, unknown> = {
    path: root,
    configFile: settings.file,
    weightFiles: [...new Set(tensors.map((t) => path.relative(root, t.file)))],
    r: settings.r,
    lora_alpha: settings.loraAlpha,
    use_rslora: settings.useRslora,
    scaling: scalings.length === 1 ? scalings[0] : scalings,
    ...(ranks.length > 1 || ranks[0] !== settings.r ? { ranks } : {}),
    target_modules: targetList,
    mergedMatrices: pairs.length,
    mergedBiases: biases.length,
    perModule,
    ...tpttSettingsOf(root),
  };
  const loraConfig: LoraConfig = { r: settings.r, lora_alpha: settings.loraAlpha, lora_dropout: settings.loraDropout, target_modules: targetList };
  return { transformTensor, summary, loraConfig, sha256: mergeHash(pairs, biases) };
}

/** The content hash of a merge: independent of the key layout and file dtype that carried it. */
function mergeHash(pairs: readonly LoraPair[], biases: readonly LoraBias[]): string {
  const h = createHash('sha256');
  const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  for (const p of pairs) {
    h.update(JSON.stringify(['pair', p.target, p.rows, p.cols, p.r, p.scaling]));
    h.update(bytes(p.a));
    h.update(bytes(p.b));
  }
  for (const b of biases) {
    h.update(JSON.stringify(['bias', b.target, b.scaling]));
    h.update(bytes(b.values));
  }
  return h.digest('hex');
}

/** W + s·B·A for W [rows, cols], A [r, cols], B [rows, r]; the low-rank product accumulates in float64. */
export function mergeLowRank(w: Float32Array, a: Float32Array, b: Float32Array, rows: number, cols: number, r: number, scaling: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const acc = new Float64Array(cols);
  for (let o = 0; o < rows; o++) {
    acc.fill(0);
    for (let k = 0; k < r; k++) {
      const bk = b[o * r + k];
      if (bk === 0) continue;
      const ak = k * cols;
      for (let i = 0; i < cols; i++) acc[i] += bk * a[ak + i];
    }
    const row = o * cols;
    for (let i = 0; i < cols; i++) out[row + i] = w[row + i] + scaling * acc[i];
  }
  return out;
}

// --- files ---------------------------------------------------------------------------------------

function adapterRoot(adapterDir: string): string {
  let real: string;
  try {
    real = fs.realpathSync(adapterDir);
  } catch {
    throw new ModelError(`adapter folder ${adapterDir} does not exist`);
  }
  if (!fs.statSync(real).isDirectory()) throw new ModelError(`adapter ${adapterDir} is not a folder; pass the folder holding ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`);
  return real;
}

/**
 * The real path of `rel` inside the adapter folder, or null when it does not exist. Refuses names that
 * leave the folder (absolute, `..`) and symbolic links that resolve outside it, and anything not a file.
 */
function insideAdapter(root: string, rel: string, what: string): string | null {
  if (typeof rel !== 'string' || rel.length === 0 || rel.includes('\0')) throw new ModelError(`${what}: ${JSON.stringify(rel)} is not a file name`);
  if (path.isAbsolute(rel)) throw new ModelError(`${what}: points at ${rel}, an absolute path; adapter files must be inside the adapter folder ${root}`);
  const full = path.resolve(root, rel);
  if (!full.startsWith(root + path.sep)) throw new ModelError(`${what}: points at ${rel}, outside the adapter folder ${root}`);
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(full);
  } catch {
    return null;
  }
  let real = full;
  if (stat.isSymbolicLink()) {
    try {
      real = fs.realpathSync(full);
    } catch {
      throw new ModelError(`${what}: ${rel} is a broken symbolic link`);
    }
    if (!real.startsWith(root + path.sep)) throw new ModelError(`${what}: ${rel} is a symbolic link to ${real}, outside the adapter folder ${root}`);
    stat = fs.statSync(real);
  }
  if (!stat.isFile()) throw new ModelError(`${what}: ${rel} is not a regular file`);
  return real;
}

function readJson(file: string, display: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ModelError(`${display}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
}

function readAdapterSettings(root: string): AdapterSettings {
  const peftFile = insideAdapter(root, ADAPTER_CONFIG_FILE, 'adapter');
  if (peftFile) {
    const raw = readJson(peftFile, ADAPTER_CONFIG_FILE);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ModelError(`${ADAPTER_CONFIG_FILE}: not a JSON object`);
    return parseSettings(raw as Record<string, unknown>, ADAPTER_CONFIG_FILE);
  }
  const tpttFile = insideAdapter(root, TPTT_CONFIG_FILE, 'adapter');
  if (tpttFile) {
    const raw = readJson(tpttFile, TPTT_CONFIG_FILE) as Record<string, unknown> | null;
    const lora = raw && typeof raw === 'object' ? raw.lora_config : undefined;
    if (lora && typeof lora === 'object' && !Array.isArray(lora)) return parseSettings(lora as Record<string, unknown>, `${TPTT_CONFIG_FILE} lora_config`);
  }
  throw new ModelError(`adapter folder ${root} has no ${ADAPTER_CONFIG_FILE} (PEFT) and no ${TPTT_CONFIG_FILE} with a "lora_config" (tptt); the LoRA rank and alpha are needed to merge it`);
}

/** tptt config.json fields worth reporting: the settings the adapter was trained under. */
const TPTT_FIELDS = ['base_model_name', 'operator_mode', 'recurrent_config', 'mag_weight', 'cross_gate', 'max_self_attn_length', 'max_chunk_size', 'base_scale_attn'];

/** A tptt folder's config.json: the conversion settings the adapter was trained with, reported (not applied). */
function tpttSettingsOf(root: string): { trainedWith?: Record<string, unknown> } {
  const file = insideAdapter(root, TPTT_CONFIG_FILE, 'adapter');
  if (!file) return {};
  const raw = readJson(file, TPTT_CONFIG_FILE) as Record<string, unknown> | null;
  if (!raw || typeof raw !== 'object' || !('lora_config' in raw || raw.model_type === 'tptt')) return {};
  return { trainedWith: Object.fromEntries(TPTT_FIELDS.filter((k) => raw[k] !== undefined).map((k) => [k, raw[k]])) };
}

/** The TPTT settings an adapter folder records (tptt's config.json, as `titan align` writes it). */
export interface AdapterTrainedSettings {
  /** The config.json read. */
  file: string;
  settings: TpttSettingsInput;
}

/**
 * The conversion settings the adapter was trained under, from its tptt config.json (operator,
 * recurrent config, μ, cross gate, window, chunk, base scale, and `titan_semantics` when `titan align`
 * wrote it); null for a folder without one (a plain PEFT adapter).
 */
export function adapterTrainedSettings(adapterDir: string): AdapterTrainedSettings | null {
  const root = adapterRoot(adapterDir);
  const file = insideAdapter(root, TPTT_CONFIG_FILE, 'adapter');
  if (!file) return null;
  const raw = readJson(file, TPTT_CONFIG_FILE) as Record<string, unknown> | null;
  if (!raw || typeof raw !== 'object' || !('lora_config' in raw || raw.model_type === 'tptt')) return null;
  const where = `${TPTT_CONFIG_FILE} of the adapter ${root}`;
  const settings: TpttSettingsInput = {};
  const bool = (key: 'cross_gate' | 'base_scale_attn') => {
    if (raw[key] === undefined || raw[key] === null) return;
    if (typeof raw[key] !== 'boolean') throw new ModelError(`${where}: "${key}" must be true or false, got ${JSON.stringify(raw[key])}`);
    settings[key] = raw[key];
  };
  if (raw.operator_mode !== undefined && raw.operator_mode !== null) {
    if (typeof raw.operator_mode !== 'string') throw new ModelError(`${where}: "operator_mode" must be a string, got ${JSON.stringify(raw.operator_mode)}`);
    settings.operator_mode = raw.operator_mode;
  }
  if (raw.recurrent_config !== undefined && raw.recurrent_config !== null) {
    if (typeof raw.recurrent_config !== 'object' || Array.isArray(raw.recurrent_config)) throw new ModelError(`${where}: "recurrent_config" must be an object`);
    settings.recurrent_config = raw.recurrent_config as Partial<RecurrentConfig>;
  }
  if (raw.mag_weight !== undefined && raw.mag_weight !== null) {
    if (typeof raw.mag_weight !== 'number') throw new ModelError(`${where}: "mag_weight" must be a number, got ${JSON.stringify(raw.mag_weight)}`);
    settings.mag_weight = raw.mag_weight;
  } else {
    // A tptt config without the field was trained under tptt's default, not ours.
    settings.mag_weight = TPTT_DEFAULT_MAG_WEIGHT;
  }
  bool('cross_gate');
  bool('base_scale_attn');
  // max_self_attn_length: null is a setting (unbounded), a missing field is not.
  if ('max_self_attn_length' in raw) {
    const w = raw.max_self_attn_length;
    if (w !== null && typeof w !== 'number') throw new ModelError(`${where}: "max_self_attn_length" must be a number or null, got ${JSON.stringify(w)}`);
    settings.max_self_attn_length = w as number | null;
  }
  if (raw.max_chunk_size !== undefined && raw.max_chunk_size !== null) {
    if (typeof raw.max_chunk_size !== 'number') throw new ModelError(`${where}: "max_chunk_size" must be a number, got ${JSON.stringify(raw.max_chunk_size)}`);
    settings.max_chunk_size = raw.max_chunk_size;
  }
  if (raw.titan_semantics !== undefined) {
    if (raw.titan_semantics !== 'exact' && raw.titan_semantics !== 'tptt-0.12') throw new ModelError(`${where}: "titan_semantics" must be "exact" or "tptt-0.12", got ${JSON.stringify(raw.titan_semantics)}`);
    settings.semantics = raw.titan_semantics;
  }
  return { file, settings };
}

/** A TPTT setting of the conversion, compared and filled from an adapter. */
export type TrainedSettingKey = 'operator_mode' | 'recurrent_config' | 'mag_weight' | 'cross_gate' | 'base_scale_attn' | 'max_self_attn_length' | 'max_chunk_size' | 'semantics';
const TRAINED_KEYS: TrainedSettingKey[] = ['operator_mode', 'recurrent_config', 'mag_weight', 'cross_gate', 'base_scale_attn', 'max_self_attn_length', 'max_chunk_size', 'semantics'];

export interface SettingsConflict {
  key: TrainedSettingKey;
  /** The value given, and the adapter's, as the user would write them. */
  given: string;
  trained: string;
  /** The adapter's config.json. */
  file: string;
}

/** The recurrence a setting pair (operator mode + explicit config) stands for, for comparison. */
function recurrenceOf(s: TpttSettingsInput): string {
  const base = RECURRENT_MODES[s.operator_mode ?? 'delta_rule'] ?? {};
  const rc = { ...base, ...(s.recurrent_config ?? {}) } as Record<string, unknown>;
  return JSON.stringify(Object.keys(rc).sort().map((k) => [k, rc[k]]));
}

/**
 * `input` with every setting the user left out taken from the adapter's recorded ones, and the
 * conflicts: settings the user gave that contradict what the adapter was trained under (a model
 * converted with another window or operator than its adapter's is silently a different model).
 * `given(key)` says whether the user set a key.
 */
export function withTrainedSettings(input: TpttSettingsInput, trained: AdapterTrainedSettings, given: (key: TrainedSettingKey) => boolean): { input: TpttSettingsInput; conflicts: SettingsConflict[] } {
  const out: TpttSettingsInput = { ...input };
  const t = trained.settings;
  const conflicts: SettingsConflict[] = [];
  const show = (v: unknown) => (v === null ? 'unbounded' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const conflict = (key: TrainedSettingKey, mine: unknown, theirs: unknown) => conflicts.push({ key, given: show(mine), trained: show(theirs), file: trained.file });
  for (const key of TRAINED_KEYS) {
    if (!(key in t)) continue;
    if (!given(key)) {
      (out as Record<string, unknown>)[key] = t[key];
      continue;
    }
    if (key === 'operator_mode' || key === 'recurrent_config') continue; // compared below, as one recurrence
    const mine = input[key] === undefined && key === 'max_self_attn_length' ? null : input[key];
    if (JSON.stringify(mine) !== JSON.stringify(t[key])) conflict(key, mine, t[key]);
  }
  if (given('operator_mode') || given('recurrent_config')) {
    const mine = { operator_mode: input.operator_mode, recurrent_config: input.recurrent_config };
    // What the user did not give of the pair comes from the adapter before the two are compared.
    if (!given('operator_mode')) mine.operator_mode = t.operator_mode;
    if (!given('recurrent_config')) mine.recurrent_config = given('operator_mode') ? undefined : t.recurrent_config;
    if (recurrenceOf(mine) !== recurrenceOf(t)) {
      const key: TrainedSettingKey = given('operator_mode') ? 'operator_mode' : 'recurrent_config';
      conflict(key, key === 'operator_mode' ? input.operator_mode : input.recurrent_config, key === 'operator_mode' ? (t.operator_mode ?? 'delta_rule') : t.recurrent_config);
    }
  }
  return { input: out, conflicts };
}

function parseSettings(raw: Record<string, unknown>, file: string): AdapterSettings {
  const peftType = raw.peft_type;
  if (peftType !== undefined && peftType !== null && peftType !== 'LORA') throw new ModelError(`${file}: peft_type ${JSON.stringify(peftType)} is not LORA; only LoRA adapters can be merged`);
  if (raw.use_dora === true) throw new ModelError(`${file}: use_dora is true; DoRA adapters (a learned magnitude per column) cannot be merged, only plain LoRA`);
  const r = raw.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw new ModelError(`${file}: "r" must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = raw.lora_alpha;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) throw new ModelError(`${file}: "lora_alpha" must be a positive number, got ${JSON.stringify(alpha)}`);
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new ModelError(`${file}: "lora_dropout" must be a number in [0, 1), got ${JSON.stringify(raw.lora_dropout)}`);
  const targets = raw.target_modules;
  const isList = Array.isArray(targets) && targets.length > 0 && targets.every((t) => typeof t === 'string' && t.length > 0);
  if (!isList && !(typeof targets === 'string' && targets.length > 0)) throw new ModelError(`${file}: "target_modules" must be a list of module names or a regular expression, got ${JSON.stringify(targets)}`);
  if (typeof targets === 'string' && targets !== 'all-linear') compilePattern(`^(?:${targets})$`, file, 'target_modules');
  // fan_in_fan_out is not read: it only concerns GPT-2's Conv1D, and PEFT itself turns it off for the
  // nn.Linear projections merged here (their weights are [out, in] either way).
  const rslora = raw.use_rslora ?? false;
  if (typeof rslora !== 'boolean') throw new ModelError(`${file}: "use_rslora" must be true or false, got ${JSON.stringify(rslora)}`);
  const pattern = (field: string, check: (v: number) => boolean, what: string): Record<string, number> => {
    const p = raw[field] ?? {};
    if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new ModelError(`${file}: "${field}" must be an object of module pattern → ${what}`);
    for (const [k, v] of Object.entries(p)) {
      if (typeof v !== 'number' || !check(v)) throw new ModelError(`${file}: ${field}["${k}"] must be a ${what}, got ${JSON.stringify(v)}`);
      compilePattern(`^(.*\\.)?(${k})$`, file, `${field} key "${k}"`);
    }
    return p as Record<string, number>;
  };
  const rankPattern = pattern('rank_pattern', (v) => Number.isInteger(v) && v >= 1, 'positive integer');
  const alphaPattern = pattern('alpha_pattern', (v) => Number.isFinite(v) && v > 0, 'positive number');
  let layers: number[] | null = null;
  const lt = raw.layers_to_transform;
  if (lt !== undefined && lt !== null) {
    const list = typeof lt === 'number' ? [lt] : lt;
    if (!Array.isArray(list) || !list.every((v) => Number.isInteger(v) && v >= 0)) throw new ModelError(`${file}: "layers_to_transform" must be a layer index or a list of them, got ${JSON.stringify(lt)}`);
    layers = list as number[];
  }
  return {
    file,
    r,
    loraAlpha: alpha,
    loraDropout: dropout as number,
    targetModules: isList ? (targets as string[]) : (targets as string),
    useRslora: rslora,
    rankPattern,
    alphaPattern,
    layersToTransform: layers,
  };
}

function compilePattern(source: string, file: string, what: string): RegExp {
  try {
    return new RegExp(source);
  } catch {
    throw new ModelError(`${file}: ${what} is not a regular expression this engine can read`);
  }
}

/** Every tensor of the adapter: adapter_model.safetensors, or the shards its index lists. */
function adapterTensors(root: string): TensorInfo[] {
  const index = insideAdapter(root, ADAPTER_INDEX_FILE, 'adapter');
  const single = insideAdapter(root, ADAPTER_WEIGHTS_FILE, 'adapter');
  let infos: TensorInfo[];
  if (single) {
    infos = readSafetensorsHeader(single);
  } else if (index) {
    const raw = readJson(index, ADAPTER_INDEX_FILE) as { weight_map?: unknown } | null;
    const map = raw?.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new ModelError(`${ADAPTER_INDEX_FILE}: missing "weight_map" object`);
    const byShard = new Map<string, string[]>();
    for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
      const what = `${ADAPTER_INDEX_FILE} entry for ${name}`;
      const file = insideAdapter(root, shard as string, what);
      if (!file) throw new ModelError(`${what}: points at ${String(shard)}, which is missing from ${root}`);
      if (!byShard.has(file)) byShard.set(file, []);
      byShard.get(file)!.push(name);
    }
    infos = [];
    for (const [file, names] of byShard) {
      const header = new Map(readSafetensorsHeader(file).map((t) => [t.name, t]));
      for (const name of names) {
        const t = header.get(name);
        if (!t) throw new ModelError(`${ADAPTER_INDEX_FILE} says ${name} is in ${path.basename(file)}, but that file has no such tensor`);
        infos.push(t);
      }
    }
  } else {
    const pickles = ['adapter_model.bin', 'adapter_model.pt', 'adapter_model.pth', 'pytorch_model.bin'].filter((f) => fs.existsSync(path.join(root, f)));
    if (pickles.length) throw new ModelError(`adapter folder ${root} has only ${pickles.join(', ')}: pickle files are never loaded (they can run code); convert the adapter to ${ADAPTER_WEIGHTS_FILE} first`);
    throw new ModelError(`adapter folder ${root} has no ${ADAPTER_WEIGHTS_FILE}`);
  }
  if (infos.length === 0) throw new ModelError(`${ADAPTER_WEIGHTS_FILE}: the adapter holds no tensors`);
  return infos;
}

function readAdapterTensor(t: TensorInfo): Float32Array {
  const what = `${path.basename(t.file)}: tensor ${t.name}`;
  if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) throw new ModelError(`${what} has dtype ${t.dtype}; LoRA matrices must be F32, F16, BF16 or F64`);
  const buf = Buffer.allocUnsafe(t.byteLength);
  const fd = fs.openSync(t.file, 'r');
  try {
    let done = 0;
    while (done < t.byteLength) {
      const n = fs.readSync(fd, buf, done, t.byteLength - done, t.byteOffset + done);
      if (n === 0) throw new ModelError(`${what} ends early (file truncated while reading)`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  const values = toFloat32(buf, t.dtype, what);
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new ModelError(`${what} holds a non-finite value (${values[i]}) at index ${i}; the adapter is corrupt`);
  }
  return values;
}

// --- keys ----------------------------------------------------------------------------------------

/**
 * One adapter key taken apart. Accepted prefixes: none, `base_model.model.` (PEFT), `model.` (tptt's save
 * strips `tptt_model.` and `base_model.`), optionally `tptt_model.` first; `.base_attn.` after self_attn
 * (tptt's LiZA wrapper); an adapter name such as `.default` before `.weight`.
 */
const KEY = /^(?:tptt_model\.)?(?:base_model\.)?(?:model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(base_attn\.)?([a-z_]+)\.(lora_A|lora_B)(?:\.([A-Za-z0-9_-]+))?\.(weight|bias)$/;

interface ParsedKey {
  layer: number;
  block: 'self_attn' | 'mlp';
  proj: string;
  factor: 'lora_A' | 'lora_B';
  param: 'weight' | 'bias';
  adapterName: string | null;
}

function parseKey(key: string, where: string): ParsedKey {
  const m = KEY.exec(key);
  if (!m || !(m[4] in PROJECTIONS) || PROJECTIONS[m[4]] !== m[2] || (m[3] && m[2] !== 'self_attn')) {
    let why = 'is not a LoRA matrix of q/k/v/o_proj or gate/up/down_proj in model.layers.N';
    if (key.includes('lora_magnitude_vector')) why = 'is a DoRA magnitude; DoRA adapters cannot be merged, only plain LoRA';
    else if (key.includes('modules_to_save')) why = 'is a whole replaced module (modules_to_save), which is not supported';
    else if (key.includes('lora_embedding')) why = 'is an embedding LoRA, which is not supported';
    else if (/\.(bias|weight)$/.test(key) && !key.includes('lora_')) why = 'is a trained base weight or bias (PEFT bias="all"/"lora_only"), which is not supported';
    throw new ModelError(`${where}: key ${key} ${why}; an adapter is merged whole or not at all`);
  }
  return { layer: Number(m[1]), block: m[2] as ParsedKey['block'], proj: m[4], factor: m[5] as ParsedKey['factor'], param: m[7] as ParsedKey['param'], adapterName: m[6] ?? null };
}

/** PEFT's name matching: a list matches a module name or a dotted suffix of it; a string is a full-match regex. */
function isTargeted(settings: AdapterSettings, names: string[]): boolean {
  const t = settings.targetModules;
  if (t === 'all-linear') return true;
  if (typeof t === 'string') {
    const re = new RegExp(`^(?:${t})$`);
    return names.some((n) => re.test(n));
  }
  return names.some((n) => t.some((target) => n === target || n.endsWith(`.${target}`)));
}

/** rank_pattern / alpha_pattern lookup: the first key that matches the end of the module name. */
function patternValue(patterns: Record<string, number>, names: string[], fallback: number): number {
  for (const [k, v] of Object.entries(patterns)) {
    const re = new RegExp(`^(.*\\.)?(${k})$`);
    if (names.some((n) => re.test(n))) return v;
  }
  return fallback;
}

function planMerge(root: string, settings: AdapterSettings, tensors: TensorInfo[], ck: Checkpoint, model: ModelConfig): { pairs: LoraPair[]; biases: LoraBias[] } {
  const numLayers = model.numLayers;
  const where = (t: TensorInfo) => path.relative(root, t.file);
  // Group the keys by the checkpoint tensor they rewrite; two keys for one slot is an error.
  const groups = new Map<string, { A?: TensorInfo; B?: TensorInfo; biasB?: TensorInfo; parsed: ParsedKey }>();
  const adapterNames = new Set<string>();
  for (const t of tensors) {
    const p = parseKey(t.name, where(t));
    adapterNames.add(p.adapterName ?? 'default'); // PEFT's save drops the name of its one adapter, "default"
    if (p.factor === 'lora_A' && p.param === 'bias') throw new ModelError(`${where(t)}: key ${t.name} is a bias on lora_A, which LoRA never has`);
    const module = `model.layers.${p.layer}.${p.block}.${p.proj}`;
    const g = groups.get(module) ?? { parsed: p };
    groups.set(module, g);
    const slot = p.param === 'bias' ? 'biasB' : p.factor === 'lora_A' ? 'A' : 'B';
    if (g[slot]) throw new ModelError(`${where(t)}: keys ${g[slot]!.name} and ${t.name} are the same LoRA matrix; the adapter holds it twice`);
    g[slot] = t;
  }
  if (adapterNames.size > 1) throw new ModelError(`${path.relative(root, tensors[0].file)}: keys carry several adapter names (${[...adapterNames].join(', ')}); save one adapter per folder`);

  const pairs: LoraPair[] = [];
  const biases: LoraBias[] = [];
  for (const [module, g] of [...groups].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))) {
    const p = g.parsed;
    const any = (g.A ?? g.B ?? g.biasB)!;
    const target = `${module}.weight`;
    if (!ck.has(target)) {
      const why = p.layer >= numLayers ? `the model has ${numLayers} layers (0–${numLayers - 1})` : 'the checkpoint has no such tensor';
      throw new ModelError(`${where(any)}: key ${any.name} is for ${target}, which the base model does not have (${why}); is this adapter for another model?`);
    }
    const names = [module, `model.layers.${p.layer}.self_attn.base_attn.${p.proj}`];
    if (p.block !== 'self_attn') names.pop();
    if (!isTargeted(settings, names)) throw new ModelError(`${where(any)}: key ${any.name} is for ${p.proj}, which ${settings.file}'s target_modules ${JSON.stringify(settings.targetModules)} does not include`);
    if (settings.layersToTransform && !settings.layersToTransform.includes(p.layer)) throw new ModelError(`${where(any)}: key ${any.name} is for layer ${p.layer}, which ${settings.file}'s layers_to_transform ${JSON.stringify(settings.layersToTransform)} excludes`);
    if (!g.A || !g.B) {
      const [have, missing] = g.A ? [g.A.name, 'lora_B'] : g.B ? [g.B.name, 'lora_A'] : [g.biasB!.name, 'lora_A and lora_B'];
      throw new ModelError(`${where(any)}: key ${have} has no matching ${missing} for ${module}; the adapter is incomplete`);
    }
    const r = patternValue(settings.rankPattern, names, settings.r);
    const alpha = patternValue(settings.alphaPattern, names, settings.loraAlpha);
    const scaling = settings.useRslora ? alpha / Math.sqrt(r) : alpha / r;
    const [rows, cols] = ck.info(target).shape;
    const sa = g.A.shape;
    const sb = g.B.shape;
    const rNote = r === settings.r ? `r ${r}` : `r ${r} from rank_pattern`;
    if (sa.length !== 2 || sa[1] !== cols || sa[0] !== r) {
      throw new ModelError(`${where(g.A)}: key ${g.A.name} has shape [${sa}] but ${target} [${rows},${cols}] with ${rNote} needs lora_A [${r},${cols}]`);
    }
    if (sb.length !== 2 || sb[0] !== rows || sb[1] !== r) {
      throw new ModelError(`${where(g.B)}: key ${g.B.name} has shape [${sb}] but ${target} [${rows},${cols}] with ${rNote} needs lora_B [${rows},${r}]`);
    }
    pairs.push({ target, keyA: g.A.name, keyB: g.B.name, a: readAdapterTensor(g.A), b: readAdapterTensor(g.B), rows, cols, r, scaling });
    if (g.biasB) {
      const biasTarget = `${module}.bias`;
      const biasKept = p.block === 'mlp' ? model.mlpBias : p.proj === 'o_proj' ? model.oBias : model.qkvBias;
      if (!ck.has(biasTarget) || !biasKept) throw new ModelError(`${where(g.biasB)}: key ${g.biasB.name} is a LoRA bias, but the base model has no ${biasTarget} to merge it into`);
      const sbias = g.biasB.shape;
      if (sbias.length !== 1 || sbias[0] !== rows) throw new ModelError(`${where(g.biasB)}: key ${g.biasB.name} has shape [${sbias}] but ${biasTarget} needs [${rows}]`);
      biases.push({ target: biasTarget, key: g.biasB.name, values: readAdapterTensor(g.biasB), scaling });
    }
  }
  return { pairs, biases };
}
