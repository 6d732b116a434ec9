// The tptt 0.12.1 reference logits for code-llama-19m (shared/reference/tptt-0.12.1-goldens, see its
// README.md): two token sequences, the base model and ten operator configs, logits at recorded positions.
//
//   const g = loadGoldens();
//   g.inputs.len96                 // token ids
//   g.rows(g.case('base'), 'len96') // Float32Array per recorded position
import * as fs from 'node:fs';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '../..');

/** shared/ beside the clone (CI and the work tree) or inside it. */
export function sharedDir(): string {
  for (const dir of [path.join(REPO_ROOT, 'shared'), path.resolve(REPO_ROOT, '../shared')]) if (fs.existsSync(dir)) return dir;
  throw new Error(`shared/ (reference goldens) not found beside ${REPO_ROOT}`);
}

/** The demo model bundled in the repository (the same files the goldens were computed from). */
export const DEMO_MODEL_DIR = path.join(REPO_ROOT, 'media/models/code-llama-19m');

export interface GoldenConfig {
  operator_mode: string;
  mag_weight: number;
  cross_gate?: boolean;
  base_scale_attn?: boolean;
}

export interface GoldenBlock {
  /** Positions of the input whose next-token logits were recorded. */
  positions: number[];
  offset: number;
  shape: [number, number];
  /** Argmax at every position of the input. */
  argmax: number[];
}

export interface GoldenCase {
  case: string;
  config: GoldenConfig | null;
  logits: Record<string, GoldenBlock>;
  /** 16 tokens greedily decoded (cached decoding) after the first 32 tokens of len96. */
  greedy_from_32?: number[];
}

export interface Goldens {
  inputs: Record<string, number[]>;
  cases: GoldenCase[];
  case(name: string): GoldenCase;
  /** The recorded logits rows of one case and input, in `positions` order. */
  rows(c: GoldenCase, input: string): Float32Array[];
}

export function loadGoldens(): Goldens {
  const dir = path.join(sharedDir(), 'reference/tptt-0.12.1-goldens');
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'goldens.json'), 'utf8')) as { inputs: Record<string, number[]>; cases: GoldenCase[] };
  const file = fs.readFileSync(path.join(dir, 'logits.f32'));
  return {
    inputs: json.inputs,
    cases: json.cases,
    case(name) {
      const c = json.cases.find((x) => x.case === name);
      if (!c) throw new Error(`goldens.json has no case ${name}`);
      return c;
    },
    rows(c, input) {
      const block = c.logits[input];
      if (!block) throw new Error(`golden case ${c.case} has no input ${input}`);
      const [rows, vocab] = block.shape;
      const bytes = file.subarray(block.offset, block.offset + rows * vocab * 4);
      if (bytes.length !== rows * vocab * 4) throw new Error(`logits.f32 is too short for ${c.case}/${input}`);
      // Copy into an aligned buffer (little-endian float32, as written).
      const all = new Float32Array(new Uint8Array(bytes).buffer);
      return Array.from({ length: rows }, (_, r) => all.subarray(r * vocab, (r + 1) * vocab));
    },
  };
}

/** The `titan titanize` flags that reproduce a golden case's config. */
export function titanizeFlags(config: GoldenConfig): string[] {
  const known = new Set(['operator_mode', 'mag_weight', 'cross_gate', 'base_scale_attn']);
  const unknown = Object.keys(config).filter((k) => !known.has(k));
  if (unknown.length) throw new Error(`golden config has settings this helper does not map to flags: ${unknown.join(', ')}`);
  const flags = ['--operator', config.operator_mode, '--mag-weight', String(config.mag_weight)];
  if (config.cross_gate) flags.push('--cross-gate');
  if (config.base_scale_attn) flags.push('--base-scale-attn');
  return flags;
}
