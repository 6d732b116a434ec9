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


export interface FieldError {
  /** The form field at fault, or null for a problem with the model folder as a whole. */
  field: SettingsField | null;
  message: string;
}
