// The Titanize form's values → the TPTT settings of engine/titanize/settings.ts, and the
// validator's messages → the form field each one belongs to (inline errors in the settings form).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AdapterFormValues, ConversionSettings, FieldError, SettingsField } from '../../protocol/settings';
import { loadModelConfig } from '../model/config';
import { ModelError } from '../model/errors';
import { INT4_DEFAULTS } from '../titanize/int4';
import type { PackageDType, PackageQuantization } from '../titanize/package';
import { adapterTrainedSettings, withTrainedSettings, type TrainedSettingKey } from '../titanize/adapter';
import { validateTpttSettings, type TpttSettingsInput } from '../titanize/settings';

/** The form field and label of each TPTT setting an adapter records (base_scale_attn has no field). */
const FORM_FIELD_OF: Record<TrainedSettingKey, [SettingsField | null, string]> = {
  operator_mode: ['operator', 'operator'],
  recurrent_config: ['operator', 'recurrent config'],
  mag_weight: ['magWeight', 'MaG weight'],
  cross_gate: ['crossGate', 'cross gate'],
  base_scale_attn: [null, 'base scale'],
  max_self_attn_length: ['window', 'window'],
  max_chunk_size: ['chunk', 'chunk size'],
  semantics: ['semantics', 'semantics'],
};

export interface ResolvedForm {
  input: TpttSettingsInput;
  dtype: PackageDType;
  /** Precision "int4": fp32 compute with int4 projection weights (the CLI's --quantize int4 defaults). */
  quantization: PackageQuantization | null;
  /** Adapter folder to merge, or null. */
  adapter: string | null;
  /** Problems found while reading the form itself (types the validator cannot see). */
  errors: FieldError[];
}

/** A form value as a number when it reads as one; otherwise the raw value, for the validator to name. */
export function numeric(value: unknown): unknown {
  if (typeof value === 'number') return value;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  return value;
}

export function blank(value: unknown): boolean {
  return value === undefined || value === null || (typeof value === 'string' && value.trim() === '');
}

export function readForm(form: ConversionSettings): ResolvedForm {
  const errors: FieldError[] = [];
  const input: TpttSettingsInput = {};
  if (!blank(form.operator)) input.operator_mode = String(form.operator);
  if (!blank(form.magWeight)) input.mag_weight = numeric(form.magWeight) as number;
  if (blank(form.window) || form.window === 0 || form.window === '0') input.max_self_attn_length = null;
  else input.max_self_attn_length = numeric(form.window) as number;
  if (!blank(form.chunk)) input.max_chunk_size = numeric(form.chunk) as number;
  if (!blank(form.semantics)) input.semantics = form.semantics as TpttSettingsInput['semantics'];
  if (form.crossGate !== undefined && form.crossGate !== null) {
    if (typeof form.crossGate === 'boolean') input.cross_gate = form.crossGate;
    else errors.push({ field: 'crossGate', message: `cross gate must be on or off, got ${JSON.stringify(form.crossGate)}` });
  }
  let dtype: PackageDType = 'fp32';
  let quantization: PackageQuantization | null = null;
  if (!blank(form.dtype)) {
    if (form.dtype === 'fp32' || form.dtype === 'fp16') dtype = form.dtype;
    else if (form.dtype === 'int4') quantization = INT4_DEFAULTS;
    else errors.push({ field: 'dtype', message: `precision must be fp32 or fp16 (or int4: 4-bit projection weights), got ${JSON.stringify(form.dtype)}` });
  }
  let adapter: string | null = null;
  if (!blank(form.adapter)) {
    if (typeof form.adapter !== 'string') errors.push({ field: 'adapter', message: 'the adapter must be a folder path' });
    else adapter = form.adapter.trim();
  }
  return { input, dtype, quantization, adapter, errors };
}

/** Which form field a validateTpttSettings message is about (its messages start with the field's name). */
export function fieldOfMessage(message: string): SettingsField | null {
  const prefixes: [string, SettingsField][] = [
    ['operator_mode', 'operator'],
    ['recurrent_config', 'operator'],
    ['mag_weight', 'magWeight'],
    ['max_self_attn_length', 'window'],
    ['max_chunk_size', 'chunk'],
    ['semantics', 'semantics'],
    ['cross_gate', 'crossGate'],
    ['lora_config', 'adapter'],
  ];
  for (const [prefix, field] of prefixes) if (message.startsWith(prefix)) return field;
  return null;
}

/**
 * Every problem with the form, each against its field: the engine's own TPTT validation, plus the
 * checks that need the source folder (its config's head size, the adapter folder's existence).
 */
export function validateForm(form: ConversionSettings, source?: string): FieldError[] {
  const { input, adapter, errors } = readForm(form);
  let headDim: number | undefined;
  if (source !== undefined && source !== '') {
    try {
      if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) throw new ModelError(`${source} is not a folder`);
      headDim = loadModelConfig(source).headDim;
    } catch (e) {
      errors.push({ field: null, message: e instanceof Error ? e.message : String(e) });
    }
  }
  for (const message of validateTpttSettings(input, headDim)) errors.push({ field: fieldOfMessage(message), message });
  if (adapter !== null) {
    if (!path.isAbsolute(adapter)) errors.push({ field: 'adapter', message: `adapter folder must be an absolute path, got ${adapter}` });
    else if (!fs.existsSync(adapter) || !fs.statSync(adapter).isDirectory()) errors.push({ field: 'adapter', message: `adapter folder ${adapter} does not exist` });
    else {
      // An adapter trained under other TPTT settings (titan align records them) would make another model.
      try {
        const trained = adapterTrainedSettings(adapter);
        const conflicts = trained ? withTrainedSettings(input, trained, (key) => input[key] !== undefined).conflicts : [];
        for (const c of conflicts) {
          const [field, label] = FORM_FIELD_OF[c.key];
          errors.push({ field, message: `the adapter was trained with ${label} ${c.trained}, not ${c.given} (${c.file}); set ${c.trained}` });
        }
      } catch (e) {
        errors.push({ field: 'adapter', message: e instanceof Error ? e.message : String(e) });
      }
    }
  }
  return errors;
}

/** The settings the form's adapter folder records, as form values; undefined when it records none (or is unreadable: validateForm says why). */
export function adapterFormValues(form: ConversionSettings): AdapterFormValues | undefined {
  const { adapter } = readForm(form);
  if (adapter === null || !path.isAbsolute(adapter)) return undefined;
  try {
    const t = adapterTrainedSettings(adapter)?.settings;
    if (!t) return undefined;
    const values: AdapterFormValues = {};
    if (t.operator_mode !== undefined) values.operator = t.operator_mode;
    if (t.mag_weight !== undefined) values.magWeight = t.mag_weight;
    if (t.max_self_attn_length !== undefined) values.window = t.max_self_attn_length;
    if (t.max_chunk_size !== undefined) values.chunk = t.max_chunk_size;
    if (t.semantics !== undefined) values.semantics = t.semantics;
    if (t.cross_gate !== undefined) values.crossGate = t.cross_gate;
    return values;
  } catch {
    return undefined;
  }
}
