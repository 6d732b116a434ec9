// Conversion settings as the Titanize form holds them: shared by the engine protocol and the webview
// protocol (this module has no vscode-jsonrpc import, so the browser bundle can use it).
import * as v from 'valibot';

/** Names of the Titanize form's fields, as the engine reports inline errors against them. */
export const SETTINGS_FIELDS = ['operator', 'magWeight', 'window', 'chunk', 'semantics', 'dtype', 'crossGate', 'adapter'] as const;
export type SettingsField = (typeof SETTINGS_FIELDS)[number];

/**
 * The conversion settings as a form holds them. Values stay loosely typed on purpose: a field the
 * user typed "abc" into reaches the engine's validator, which names the field and the problem.
 */
export const ConversionSettingsSchema = v.object({
  operator: v.optional(v.unknown()),
  magWeight: v.optional(v.unknown()),
  /** null or empty = unbounded softmax window. */
  window: v.optional(v.unknown()),
  chunk: v.optional(v.unknown()),
  semantics: v.optional(v.unknown()),
  dtype: v.optional(v.unknown()),
  crossGate: v.optional(v.unknown()),
  /** Folder of a LoRA adapter to merge; empty = none. */
  adapter: v.optional(v.unknown()),
});
export type ConversionSettings = v.InferOutput<typeof ConversionSettingsSchema>;


/**
 * The conversion settings an adapter folder records (the TPTT settings `titan align` writes into its
 * config.json), as form values: the Titanize form fills its fields with them when the adapter is chosen.
 */
export const AdapterFormValuesSchema = v.object({
  operator: v.optional(v.pipe(v.string(), v.maxLength(100))),
  magWeight: v.optional(v.number()),
  window: v.optional(v.nullable(v.number())),
  chunk: v.optional(v.number()),
  semantics: v.optional(v.picklist(['exact', 'tptt-0.12'])),
  crossGate: v.optional(v.boolean()),
});
export type AdapterFormValues = v.InferOutput<typeof AdapterFormValuesSchema>;

export interface FieldError {
  /** The form field at fault, or null for a problem with the model folder as a whole. */
  field: SettingsField | null;
  message: string;
}

// ---------------------------------------------------------------------------------------------
// Alignment settings (the Align panel's form)

/** Names of the Align form's fields, as the engine reports inline errors against them. */
export const ALIGN_FIELDS = ['budget', 'steps', 'minutes', 'lr', 'magSchedule', 'batch', 'sequence'] as const;
export type AlignField = (typeof ALIGN_FIELDS)[number];

export const MAG_SCHEDULES = ['constant', 'gradual', 'cyclic'] as const;
export type MagScheduleName = (typeof MAG_SCHEDULES)[number];

/**
 * The alignment settings as the form holds them: how long (a number of optimizer steps, or minutes of
 * training), the peak learning rate, the μ schedule, and the sequences per step and tokens per
 * sequence. Loosely typed for the same reason as ConversionSettings: the engine names each problem.
 */
export const AlignSettingsSchema = v.object({
  /** 'steps' or 'minutes': which of the two limits the run. */
  budget: v.optional(v.unknown()),
  steps: v.optional(v.unknown()),
  minutes: v.optional(v.unknown()),
  lr: v.optional(v.unknown()),
  magSchedule: v.optional(v.unknown()),
  batch: v.optional(v.unknown()),
  sequence: v.optional(v.unknown()),
});
export type AlignSettings = v.InferOutput<typeof AlignSettingsSchema>;

/** The form's starting values: the paper's learning rate and schedule, a run short enough for a CPU. */
export const ALIGN_DEFAULTS = { budget: 'minutes', steps: 100, minutes: 10, lr: 5e-4, magSchedule: 'constant', batch: 4, sequence: 512 } as const satisfies Record<AlignField, string | number>;

export interface AlignFieldError {
  /** The form field at fault, or null for a problem with the package or the workspace. */
  field: AlignField | null;
  message: string;
}

const Finite = v.pipe(v.number(), v.finite());
const Count = v.pipe(v.number(), v.integer(), v.minValue(0));
const Message = v.pipe(v.string(), v.maxLength(2000));
/** null where the value is not finite (an fp16 step that overflowed): JSON has no NaN; plotted as a gap. */
const Loss = v.nullable(v.number());

/**
 * One alignment progress report, as the engine sends it and the Align panel receives it; `step`
 * arrives once per optimizer step (the loss plot's points), `eval` with each validation.
 */
export const AlignProgressSchema = v.variant('kind', [
  v.object({ kind: v.literal('stage'), message: Message }),
  v.object({
    kind: v.literal('start'),
    totalSteps: v.nullable(Count),
    minutes: v.nullable(Finite),
    startStep: Count,
    provider: v.pipe(v.string(), v.maxLength(100)),
    trainSequences: Count,
    validationSequences: Count,
    trainTokens: Count,
  }),
  v.object({ kind: v.literal('step'), step: Count, totalSteps: Count, loss: Loss, lr: Finite, mu: Finite, gradNorm: Loss, tokensPerSecond: Finite, elapsed: Finite, eta: Finite }),
  v.object({ kind: v.literal('eval'), step: Count, loss: Loss, perplexity: Loss }),
  v.object({ kind: v.literal('checkpoint'), step: Count }),
]);
export type AlignProgressValue = v.InferOutput<typeof AlignProgressSchema>;
