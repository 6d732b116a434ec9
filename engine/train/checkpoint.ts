// Trainer checkpoints: everything a run needs to continue exactly where it stopped.
//
//   <out>/checkpoint/trainer-state.json        step, the run's settings (checked on resume), losses so far
//   <out>/checkpoint/trainer-tensors.safetensors  every LoRA matrix with its AdamW moments (F32):
//                                              {name}, {name}.exp_avg, {name}.exp_avg_sq
//
// Data order, dropout masks and initial values are pure functions of the seed and the step, so the
// state above is all there is. A checkpoint is written beside the old one and swapped in by renames:
// an interrupted write leaves the previous checkpoint intact.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readJsonFile } from '../model/config';
import { ModelError } from '../model/errors';
import { readSafetensorsHeader, toFloat32 } from '../model/safetensors';
import { writeSafetensorsSync } from '../model/safetensors-writer';
import type { ParamState } from './optimizer';

export const CHECKPOINT_DIR = 'checkpoint';
const STATE_FILE = 'trainer-state.json';
const TENSORS_FILE = 'trainer-tensors.safetensors';
const FORMAT = 'titan-align-checkpoint';
const VERSION = 1;

export interface CheckpointState {
  format: typeof FORMAT;
  version: number;
  /** Optimizer steps completed. */
  step: number;
  /** The settings that fix the run (compared on resume). */
  settings: Record<string, unknown>;
  /** Per-step and evaluation records so far (kept for the final report). */
  history: unknown[];
  evals: unknown[];
  /** Training seconds, loop wall seconds and tokens so far (for throughput and time budgets across resumes). */
  seconds: number;
  wallSeconds?: number;
  tokens: number;
  savedAt: string;
}

export function checkpointDir(out: string): string {
  return path.join(out, CHECKPOINT_DIR);
}

export function hasCheckpoint(out: string): boolean {
  return fs.existsSync(path.join(checkpointDir(out), STATE_FILE));
}

export function saveCheckpoint(out: string, state: Omit<CheckpointState, 'format' | 'version' | 'savedAt'>, params: ParamState[]): string {
  const dir = checkpointDir(out);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  writeSafetensorsSync(
    path.join(tmp, TENSORS_FILE),
    params.flatMap((p) => [
      { name: p.name, dtype: 'F32' as const, shape: [p.value.length], data: p.value },
      { name: `${p.name}.exp_avg`, dtype: 'F32' as const, shape: [p.m.length], data: p.m },
      { name: `${p.name}.exp_avg_sq`, dtype: 'F32' as const, shape: [p.v.length], data: p.v },
    ]),
    { metadata: { format: FORMAT } },
  );
  const full: CheckpointState = { format: FORMAT, version: VERSION, savedAt: new Date().toISOString(), ...state };
  fs.writeFileSync(path.join(tmp, STATE_FILE), JSON.stringify(full, null, 1) + '\n');
  const old = `${dir}.old-${process.pid}`;
  if (fs.existsSync(dir)) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  fs.rmSync(old, { recursive: true, force: true });
  return dir;
}

/** The settings that differ between a checkpoint and this run, as "name: was → now". */
export function settingsDifferences(saved: Record<string, unknown>, now: Record<string, unknown>): string[] {
  const keys = [...new Set([...Object.keys(saved), ...Object.keys(now)])].sort();
  return keys.filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(now[k])).map((k) => `${k}: ${JSON.stringify(saved[k])} → ${JSON.stringify(now[k])}`);
}

/** Reads a checkpoint into `params` (matched by name and size). */
export function loadCheckpoint(out: string, params: ParamState[]): CheckpointState {
  const dir = checkpointDir(out);
  const state = readJsonFile(path.join(dir, STATE_FILE), `${CHECKPOINT_DIR}/${STATE_FILE}`) as CheckpointState;
  if (state.format !== FORMAT || state.version !== VERSION) throw new ModelError(`${dir}: not a checkpoint this engine can resume (format ${state.format} v${state.version})`);
  const file = path.join(dir, TENSORS_FILE);
  const infos = new Map(readSafetensorsHeader(file).map((t) => [t.name, t]));
  const fd = fs.openSync(file, 'r');
  try {
    for (const p of params) {
      for (const [name, into] of [
        [p.name, p.value],
        [`${p.name}.exp_avg`, p.m],
        [`${p.name}.exp_avg_sq`, p.v],
      ] as const) {
        const info = infos.get(name);
        if (!info) throw new ModelError(`${dir}: the checkpoint has no ${name}; it was written for other LoRA settings`);
        const buf = Buffer.alloc(info.byteLength);
        fs.readSync(fd, buf, 0, buf.length, info.byteOffset);
        const data = toFloat32(buf, info.dtype, `${TENSORS_FILE}: ${name}`);
        if (data.length !== into.length) throw new ModelError(`${dir}: ${name} holds ${data.length} values, this run needs ${into.length}`);
        into.set(data);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return state;
}
