// Extension ⇄ webview: tagged unions posted with postMessage, one set per view.
//
// Both directions are checked against their schemas before use (`parseChatToHost` etc.): the webview
// renders untrusted text, so the host treats whatever it posts as untrusted too, and the webview only
// acts on messages of the shapes below. No vscode-jsonrpc here: this module is bundled into the
// browser-side webview.
import * as v from 'valibot';
import { ALIGN_FIELDS, AdapterFormValuesSchema, AlignProgressSchema, AlignSettingsSchema, ConversionSettingsSchema, MAG_SCHEDULES, SETTINGS_FIELDS } from './settings';

const Id = v.pipe(v.string(), v.minLength(1), v.maxLength(100));
const Text = (max: number) => v.pipe(v.string(), v.maxLength(max));
const Line = v.pipe(v.number(), v.integer(), v.minValue(1));

export const SourceSchema = v.object({
  path: Text(4096),
  line: v.optional(Line),
  reason: Text(2000),
  snippet: v.optional(Text(20000)),
});

export const AnswerStatsSchema = v.object({
  promptTokens: v.number(),
  answerTokens: v.number(),
  seconds: v.number(),
  tokensPerSecond: v.number(),
});

/** One entry of a conversation, as kept in workspace storage and in the webview's state. */
export const ChatEntrySchema = v.object({
  id: Id,
  role: v.picklist(['user', 'assistant', 'error']),
  text: Text(200000),
  sources: v.optional(v.array(SourceSchema)),
  stats: v.optional(AnswerStatsSchema),
  stopReason: v.optional(v.picklist(['eos', 'length', 'cancelled'])),
  time: v.number(),
});
export type ChatEntry = v.InferOutput<typeof ChatEntrySchema>;

// ---------------------------------------------------------------------------------------------
// Chat view

export const ChatToHostSchema = v.variant('type', [
  v.object({ type: v.literal('ready') }),
  v.object({ type: v.literal('ask'), id: Id, question: v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(20000)) }),
  v.object({ type: v.literal('stop') }),
  v.object({ type: v.literal('openSource'), path: Text(4096), line: v.optional(Line) }),
  v.object({ type: v.literal('openLink'), href: Text(4096) }),
  v.object({ type: v.literal('copy'), text: Text(1_000_000) }),
  v.object({ type: v.literal('insert'), text: Text(1_000_000) }),
  /** From the model picker: a package folder, or null to browse / pick in a quick pick. */
  v.object({ type: v.literal('selectModel'), path: v.nullable(Text(4096)) }),
  v.object({ type: v.literal('rebuildMemory') }),
  v.object({ type: v.literal('titanize') }),
  v.object({ type: v.literal('clearHistory') }),
]);
export type ChatToHost = v.InferOutput<typeof ChatToHostSchema>;

export const ModelChoiceSchema = v.object({ path: Text(4096), label: Text(500), detail: Text(2000) });
export type ModelChoice = v.InferOutput<typeof ModelChoiceSchema>;

export const ChatStatusSchema = v.object({
  engine: v.picklist(['starting', 'running', 'restarting', 'stopped', 'failed']),
  model: v.nullable(Text(500)),
  modelPath: v.nullable(Text(4096)),
  provider: v.nullable(Text(100)),
  /** The memory's one-line state for #memory-status, e.g. "12.3k tokens · 40 files · fresh". */
  memory: Text(500),
  memoryUpdating: v.boolean(),
  models: v.array(ModelChoiceSchema),
});
export type ChatStatus = v.InferOutput<typeof ChatStatusSchema>;

export const HostToChatSchema = v.variant('type', [
  v.object({ type: v.literal('init'), history: v.array(ChatEntrySchema), busy: v.boolean() }),
  v.object({ type: v.literal('status'), status: ChatStatusSchema }),
  v.object({ type: v.literal('answerStart'), id: Id, question: Text(20000) }),
  v.object({ type: v.literal('answerText'), id: Id, text: Text(1_000_000) }),
  v.object({
    type: v.literal('answerEnd'),
    id: Id,
    text: Text(1_000_000),
    sources: v.array(SourceSchema),
    stats: AnswerStatsSchema,
    stopReason: v.picklist(['eos', 'length', 'cancelled']),
  }),
  v.object({ type: v.literal('answerError'), id: Id, message: Text(20000) }),
  v.object({ type: v.literal('focusPrompt') }),
]);
export type HostToChat = v.InferOutput<typeof HostToChatSchema>;

// ---------------------------------------------------------------------------------------------
// Titanize settings form

export const TitanizeFormSchema = ConversionSettingsSchema;

export const TitanizeToHostSchema = v.variant('type', [
  v.object({ type: v.literal('ready') }),
  v.object({ type: v.literal('validate'), id: Id, settings: TitanizeFormSchema }),
  v.object({ type: v.literal('convert'), id: Id, settings: TitanizeFormSchema }),
  v.object({ type: v.literal('cancel') }),
  v.object({ type: v.literal('browseAdapter') }),
  v.object({ type: v.literal('openChat') }),
  /** "Align on this workspace…" after a conversion: the Align panel for the new package. */
  v.object({ type: v.literal('align'), path: Text(4096) }),
]);
export type TitanizeToHost = v.InferOutput<typeof TitanizeToHostSchema>;

export const FormDefaultsSchema = v.object({
  operator: v.string(),
  magWeight: v.number(),
  window: v.nullable(v.number()),
  chunk: v.number(),
  semantics: v.picklist(['exact', 'tptt-0.12']),
  dtype: v.picklist(['fp32', 'fp16', 'int4']),
  crossGate: v.boolean(),
  adapter: v.string(),
});
export type FormDefaults = v.InferOutput<typeof FormDefaultsSchema>;

export const FieldErrorSchema = v.object({ field: v.nullable(v.picklist(SETTINGS_FIELDS)), message: Text(2000) });

export const HostToTitanizeSchema = v.variant('type', [
  v.object({ type: v.literal('init'), source: Text(4096), sourceLabel: Text(500), defaults: FormDefaultsSchema, operators: v.array(Text(100)) }),
  /** adapterSettings: what the chosen adapter was trained under (the form fills its fields with them once). */
  v.object({ type: v.literal('validation'), id: Id, errors: v.array(FieldErrorSchema), adapterSettings: v.optional(AdapterFormValuesSchema) }),
  v.object({ type: v.literal('progress'), done: v.number(), total: v.number(), message: Text(2000) }),
  v.object({ type: v.literal('done'), id: Id, model: Text(500), path: Text(4096), seconds: v.number() }),
  v.object({ type: v.literal('failed'), id: Id, message: Text(20000), errors: v.array(FieldErrorSchema) }),
  v.object({ type: v.literal('cancelled'), id: Id }),
  v.object({ type: v.literal('adapterPicked'), path: Text(4096) }),
]);
export type HostToTitanize = v.InferOutput<typeof HostToTitanizeSchema>;

// ---------------------------------------------------------------------------------------------
// Align panel: settings, a live loss plot, Stop

export const AlignToHostSchema = v.variant('type', [
  v.object({ type: v.literal('ready') }),
  v.object({ type: v.literal('validate'), id: Id, settings: AlignSettingsSchema }),
  /** resume: continue the cancelled run from its checkpoint (same settings). */
  v.object({ type: v.literal('start'), id: Id, settings: AlignSettingsSchema, resume: v.boolean() }),
  v.object({ type: v.literal('stop') }),
  /** Switch the chat to the aligned package. */
  v.object({ type: v.literal('useModel'), path: Text(4096) }),
  v.object({ type: v.literal('openChat') }),
]);
export type AlignToHost = v.InferOutput<typeof AlignToHostSchema>;

export const AlignDefaultsSchema = v.object({
  budget: v.picklist(['steps', 'minutes']),
  steps: v.number(),
  minutes: v.number(),
  lr: v.number(),
  magSchedule: v.picklist(MAG_SCHEDULES),
  batch: v.number(),
  sequence: v.number(),
});
export type AlignDefaults = v.InferOutput<typeof AlignDefaultsSchema>;

export const AlignFieldErrorSchema = v.object({ field: v.nullable(v.picklist(ALIGN_FIELDS)), message: Text(2000) });

export const HostToAlignSchema = v.variant('type', [
  v.object({
    type: v.literal('init'),
    packagePath: Text(4096),
    packageLabel: Text(500),
    /** The folders the model trains on, for the heading. */
    workspaceLabel: Text(2000),
    defaults: AlignDefaultsSchema,
  }),
  /** resumable: a cancelled run of this package on these folders left a checkpoint. */
  v.object({ type: v.literal('validation'), id: Id, errors: v.array(AlignFieldErrorSchema), resumable: v.boolean() }),
  v.object({ type: v.literal('progress'), value: AlignProgressSchema }),
  v.object({
    type: v.literal('done'),
    id: Id,
    model: v.nullable(Text(500)),
    path: v.nullable(Text(4096)),
    seconds: v.number(),
    steps: v.number(),
    before: v.nullable(v.number()),
    after: v.nullable(v.number()),
    notes: v.array(Text(2000)),
  }),
  v.object({ type: v.literal('failed'), id: Id, message: Text(20000), errors: v.array(AlignFieldErrorSchema) }),
  v.object({ type: v.literal('cancelled'), id: Id, message: Text(2000), resumable: v.boolean() }),
]);
export type HostToAlign = v.InferOutput<typeof HostToAlignSchema>;

// ---------------------------------------------------------------------------------------------
// Guards: the parsed message, or null (the caller logs and drops it)

function parser<S extends v.GenericSchema>(schema: S) {
  return (value: unknown): v.InferOutput<S> | null => {
    const r = v.safeParse(schema, value);
    return r.success ? r.output : null;
  };
}

export const parseChatToHost = parser(ChatToHostSchema);
export const parseHostToChat = parser(HostToChatSchema);
export const parseTitanizeToHost = parser(TitanizeToHostSchema);
export const parseHostToTitanize = parser(HostToTitanizeSchema);
export const parseAlignToHost = parser(AlignToHostSchema);
export const parseHostToAlign = parser(HostToAlignSchema);
export const parseChatEntries = parser(v.array(ChatEntrySchema));

/** Why a message was rejected, for the log (one line). */
export function explainRejection(schema: 'chat' | 'titanize' | 'align', value: unknown): string {
  const s = schema === 'chat' ? ChatToHostSchema : schema === 'titanize' ? TitanizeToHostSchema : AlignToHostSchema;
  const r = v.safeParse(s, value);
  if (r.success) return 'valid';
  const i = r.issues[0];
  const where = v.getDotPath(i);
  return `${where ? where + ': ' : ''}${i.message}`;
}
