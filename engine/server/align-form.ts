// The Align form's values → the options of engine/train/align.ts, and every problem with them against
// the form field it belongs to (inline errors in the Align panel, as the Titanize form has).
import * as fs from 'node:fs';
import type { AlignFieldError, AlignSettings, MagScheduleName } from '../../protocol/settings';
import { ALIGN_DEFAULTS, MAG_SCHEDULES } from '../../protocol/settings';
import { readPackage } from '../titanize/package';
import { blank, numeric } from './settings-form';

export interface ResolvedAlignForm {
  /** Exactly one of steps and minutes is set. */
  steps?: number;
  minutes?: number;
  lr: number;
  magSchedule: MagScheduleName;
  batch: number;
  sequence: number;
  errors: AlignFieldError[];
}

/** Limits that keep a run within what a workstation can do; beyond them a typo is likelier than intent. */
const MAX_STEPS = 100_000;
const MAX_MINUTES = 7 * 24 * 60;
const MAX_BATCH = 256;
const MAX_SEQUENCE = 8192;

export function readAlignForm(form: AlignSettings): ResolvedAlignForm {
  const errors: AlignFieldError[] = [];
  const integer = (field: 'steps' | 'batch' | 'sequence', what: string, min: number, max: number, fallback: number): number => {
    const raw = form[field];
    if (blank(raw)) return fallback;
    const n = numeric(raw);
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      errors.push({ field, message: `${what} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}` });
      return fallback;
    }
    return n;
  };
  const budget = blank(form.budget) ? ALIGN_DEFAULTS.budget : form.budget;
  if (budget !== 'steps' && budget !== 'minutes') errors.push({ field: 'budget', message: `the run is limited by "steps" or "minutes", got ${JSON.stringify(form.budget)}` });
  let steps: number | undefined;
  let minutes: number | undefined;
  if (budget === 'steps') steps = integer('steps', 'steps', 1, MAX_STEPS, ALIGN_DEFAULTS.steps);
  else if (budget === 'minutes') {
    const n = numeric(form.minutes);
    if (blank(form.minutes)) minutes = ALIGN_DEFAULTS.minutes;
    else if (typeof n !== 'number' || !(n > 0) || n > MAX_MINUTES) errors.push({ field: 'minutes', message: `minutes must be a number above 0 and at most ${MAX_MINUTES} (a week), got ${JSON.stringify(form.minutes)}` });
    else minutes = n;
  }
  let lr: number = ALIGN_DEFAULTS.lr;
  if (!blank(form.lr)) {
    const n = numeric(form.lr);
    if (typeof n !== 'number' || !(n > 0) || n > 1) errors.push({ field: 'lr', message: `learning rate must be a number above 0 and at most 1 (the paper: 5e-4), got ${JSON.stringify(form.lr)}` });
    else lr = n;
  }
  let magSchedule: MagScheduleName = ALIGN_DEFAULTS.magSchedule;
  if (!blank(form.magSchedule)) {
    if (typeof form.magSchedule === 'string' && (MAG_SCHEDULES as readonly string[]).includes(form.magSchedule)) magSchedule = form.magSchedule as MagScheduleName;
    else errors.push({ field: 'magSchedule', message: `μ schedule must be one of ${MAG_SCHEDULES.join(', ')}, got ${JSON.stringify(form.magSchedule)}` });
  }
  const batch = integer('batch', 'sequences per step', 1, MAX_BATCH, ALIGN_DEFAULTS.batch);
  const sequence = integer('sequence', 'tokens per sequence', 16, MAX_SEQUENCE, ALIGN_DEFAULTS.sequence);
  return { ...(steps !== undefined ? { steps } : {}), ...(minutes !== undefined ? { minutes } : {}), lr, magSchedule, batch, sequence, errors };
}

/** Every problem with the form and the package it is for, each against its field (null: the package). */
export function validateAlignForm(form: AlignSettings, packageDir?: string): AlignFieldError[] {
  const { magSchedule, errors } = readAlignForm(form);
  if (packageDir !== undefined && packageDir !== '') {
    try {
      if (!fs.existsSync(packageDir) || !fs.statSync(packageDir).isDirectory()) throw new Error(`${packageDir} is not a folder`);
      const pkg = readPackage(packageDir);
      if (pkg.manifest.adapter || (pkg.manifest.tptt as { lora_config?: unknown } | undefined)?.lora_config) errors.push({ field: null, message: `${pkg.dir} was itself produced with a LoRA adapter; align the package it was converted from (its merged package would lose the first adapter)` });
      if (pkg.manifest.kind !== 'titan' && magSchedule !== 'constant') errors.push({ field: 'magSchedule', message: `${pkg.manifest.kind} package: μ schedules need a Titan package (Memory-as-Gate); use constant` });
    } catch (e) {
      errors.push({ field: null, message: e instanceof Error ? e.message : String(e) });
    }
  }
  return errors;
}
