// Extension ⇄ engine: JSON-RPC 2.0 over the engine process's stdio (vscode-jsonrpc).
//
// Every request's params have a valibot schema: the engine validates what it receives before use
// (a bad message is a one-line ResponseError, never a crash), and the TypeScript types both sides
// use are inferred from the same schemas. Long operations report through a ProgressType whose
// token travels in the params (`progressToken`); cancellation is JSON-RPC's own $/cancelRequest.
import { NotificationType, ProgressType, RequestType, RequestType0 } from 'vscode-jsonrpc';
import * as v from 'valibot';
import { AlignSettingsSchema, ConversionSettingsSchema, type AdapterFormValues, type AlignFieldError, type AlignProgressValue, type FieldError } from './settings';

export * from './settings';

// ---------------------------------------------------------------------------------------------
// Shared shapes

const Token = v.union([v.string(), v.number()]);
const NonEmpty = v.pipe(v.string(), v.minLength(1));

export const ProviderChoiceSchema = v.picklist(['auto', 'webgpu', 'cuda', 'cpu']);
export type ProviderChoice = v.InferOutput<typeof ProviderChoiceSchema>;


export interface ModelInfo {
  /** Package folder. */
  path: string;
  /** Display name (the folder's name). */
  name: string;
  kind: 'titan' | 'base';
  /** The bundled demo model's package. */
  demo: boolean;
  dtype: string;
  modelType: string;
  /** One-line summary of the TPTT settings, e.g. "delta_rule μ 0.5 · window 512 · chunk 64 · exact". */
  summary: string;
  createdAt: string | null;
}

export interface ProviderInfo {
  provider: 'webgpu' | 'cuda' | 'cpu';
  reason: string;
  /** Set when a GPU provider failed (to start or during a run) and the model runs on the CPU instead: what failed. */
  fallback?: string;
}

export interface MemoryProgress {
  phase: 'discover' | 'restore' | 'read' | 'checkpoint' | 'done';
  /** Files (and tokens) this update feeds: the tail after the checkpoint it resumed from. */
  filesDone: number;
  filesTotal: number;
  tokens: number;
  /** An estimate from file sizes until the files are tokenized. */
  tokensTotal: number;
  /** Tokens in the memory (absolute stream position), when known. */
  position: number | null;
  tokensPerSecond: number;
  /** null while unknown. */
  etaSeconds: number | null;
  currentFile: string | null;
  message: string;
}

export interface MemoryStatusInfo {
  /** Tokens in the memory state. */
  position: number;
  files: number;
  /** True when the state covers the workspace as it is on disk. */
  fresh: boolean;
  /** ISO time of the last completed update, null before the first. */
  lastUpdate: string | null;
  /** Set while an update runs. */
  updating: MemoryProgress | null;
  /** The last update's failure, cleared by the next success. */
  error: string | null;
  /** The last update's notices: a cap reached (engine/limits.ts), the storage folder re-created. */
  notices?: string[];
}

export interface MemoryStatsInfo {
  filesRead: number;
  filesSkipped: number;
  /** Skip counts by reason. */
  skippedByReason: Record<string, number>;
  tokensIngested: number;
  tokensReread: number;
  stateBytes: number;
  checkpointBytes: number;
  seconds: number;
  tokensPerSecond: number;
  /** The update resumed from a checkpoint instead of reading from the start. */
  restoredFromCheckpoint: boolean;
  cancelled: boolean;
  /** Caps reached (engine/limits.ts), the storage folder re-created after a deletion. */
  notices?: string[];
}

export interface EngineStatus {
  model: ModelInfo | null;
  provider: ProviderInfo | null;
  /** Set while the model opens (or the demo model is converted on first use). */
  modelLoading: string | null;
  /** The last failure to open the model. */
  modelError: string | null;
  memory: MemoryStatusInfo | null;
  /** Operations in flight, e.g. ["ask", "memory"]. */
  busy: string[];
}

export interface Source {
  /** Workspace path as the model saw it (relative, prefixed with the folder name in multi-root), or absolute. */
  path: string;
  /** 1-based line, when the source is a place in the file. */
  line?: number;
  reason: string;
  snippet?: string;
}

// ---------------------------------------------------------------------------------------------
// initialize

export const InitializeParamsSchema = v.object({
  clientName: v.string(),
  /** Folder the engine owns across workspaces: converted models live under models/. */
  globalStorageDir: NonEmpty,
  /** The bundled demo model (Hugging Face layout), converted into globalStorageDir on first use. */
  demoModelDir: NonEmpty,
});
export type InitializeParams = v.InferOutput<typeof InitializeParamsSchema>;
export interface InitializeResult {
  engineVersion: string;
  pid: number;
  node: string;
}
export const InitializeRequest = new RequestType<InitializeParams, InitializeResult, void>('titan/initialize');

// ---------------------------------------------------------------------------------------------
// configure: the model and the workspace memory the engine should hold

export const WorkspaceFolderSchema = v.object({
  path: NonEmpty,
  name: v.optional(v.string()),
  /** This folder's files.exclude + search.exclude, VS Code style. */
  exclude: v.optional(v.union([v.array(v.string()), v.record(v.string(), v.union([v.boolean(), v.object({ when: v.string() })]))])),
});
export type WorkspaceFolderParam = v.InferOutput<typeof WorkspaceFolderSchema>;

export const ConfigureParamsSchema = v.object({
  /** Package folder; null = the bundled demo model. */
  modelPath: v.nullable(v.string()),
  provider: ProviderChoiceSchema,
  /** CPU threads; 0 = onnxruntime's choice. */
  threads: v.pipe(v.number(), v.integer(), v.minValue(0)),
  workspaces: v.array(WorkspaceFolderSchema),
  /** titan.memory.exclude, for every folder. */
  exclude: v.array(v.string()),
  /** Per-workspace storage for memory checkpoints. */
  memoryStorageDir: v.nullable(v.string()),
  maxFileBytes: v.pipe(v.number(), v.minValue(1)),
  storageCapBytes: v.pipe(v.number(), v.minValue(1)),
  /** Caps of engine/limits.ts; absent = the engine's defaults. */
  maxFiles: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  maxStreamTokens: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  progressToken: v.optional(Token),
});
export type ConfigureParams = v.InferOutput<typeof ConfigureParamsSchema>;
/** Progress of configure: the demo model's first conversion, opening the model. */
export const ConfigureProgress = new ProgressType<{ message: string; done?: number; total?: number }>();
export const ConfigureRequest = new RequestType<ConfigureParams, EngineStatus, void>('titan/configure');

export const StatusRequest = new RequestType0<EngineStatus, void>('titan/status');
/** Engine → extension, whenever the status changes (throttled while progress moves). */
export const StatusNotification = new NotificationType<EngineStatus>('titan/statusChanged');

// ---------------------------------------------------------------------------------------------
// models

export const ListModelsParamsSchema = v.object({
  /** Package folders known to the extension (recent, configured) besides those in global storage. */
  extraPaths: v.optional(v.array(v.string())),
});
export type ListModelsParams = v.InferOutput<typeof ListModelsParamsSchema>;
export const ListModelsRequest = new RequestType<ListModelsParams, ModelInfo[], void>('titan/listModels');

export const ValidateSettingsParamsSchema = v.object({
  settings: ConversionSettingsSchema,
  /** Hugging Face model folder, for checks that need its config (head size, adapter fit). */
  source: v.optional(v.string()),
});
export type ValidateSettingsParams = v.InferOutput<typeof ValidateSettingsParamsSchema>;
export interface ValidateSettingsResult {
  errors: FieldError[];
  /** The settings the chosen adapter was trained under, when its folder records them. */
  adapterSettings?: AdapterFormValues;
}
export const ValidateSettingsRequest = new RequestType<ValidateSettingsParams, ValidateSettingsResult, void>('titan/validateSettings');

export const TitanizeParamsSchema = v.object({
  source: NonEmpty,
  settings: ConversionSettingsSchema,
  /** Package folder to write; default: <globalStorage>/models/<name from source and settings>. */
  out: v.optional(v.string()),
  progressToken: v.optional(Token),
});
export type TitanizeParams = v.InferOutput<typeof TitanizeParamsSchema>;
export interface TitanizeProgressValue {
  done: number;
  total: number;
  message: string;
}
export const TitanizeProgress = new ProgressType<TitanizeProgressValue>();
export interface TitanizeResult {
  model: ModelInfo;
  seconds: number;
  weightsBytes: number;
}
export const TitanizeRequest = new RequestType<TitanizeParams, TitanizeResult, void>('titan/titanize');

// ---------------------------------------------------------------------------------------------
// align: LoRA fine-tuning of a package on the open workspace's code (engine/train/align.ts)

export const ValidateAlignSettingsParamsSchema = v.object({
  settings: AlignSettingsSchema,
  /** The package to align, for checks that need it (a μ schedule needs a Titan package). */
  packageDir: v.optional(v.string()),
  /** The workspace folders it would train on: is there a cancelled run of the two to resume? */
  workspaces: v.optional(v.array(v.string())),
});
export type ValidateAlignSettingsParams = v.InferOutput<typeof ValidateAlignSettingsParamsSchema>;
export interface ValidateAlignSettingsResult {
  errors: AlignFieldError[];
  /** A cancelled run of this package on these folders left a checkpoint (AlignParams.resume continues it). */
  resumable: boolean;
}
export const ValidateAlignSettingsRequest = new RequestType<ValidateAlignSettingsParams, ValidateAlignSettingsResult, void>('titan/validateAlignSettings');

export const AlignParamsSchema = v.object({
  /** The package to align (a Titan package, or a base package with the constant μ schedule). */
  packageDir: NonEmpty,
  /** The training data: these folders' code, with their excludes (as in configure). */
  workspaces: v.pipe(v.array(WorkspaceFolderSchema), v.minLength(1, 'alignment needs at least one workspace folder')),
  /** titan.memory.exclude, for every folder. */
  exclude: v.optional(v.array(v.string())),
  settings: AlignSettingsSchema,
  /** Continue the cancelled run of this package on these folders from its checkpoint. */
  resume: v.optional(v.boolean()),
  provider: v.optional(ProviderChoiceSchema),
  threads: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  progressToken: v.optional(Token),
});
export type AlignParams = v.InferOutput<typeof AlignParamsSchema>;

/** One alignment progress report (the schema is in settings.ts, shared with the webview). */
export const AlignProgress = new ProgressType<AlignProgressValue>();

export interface AlignResult {
  /** The package with the LoRA merged, registered among the models (in <globalStorage>/models). */
  model: ModelInfo | null;
  /** The run's folder: adapter/, checkpoint/, report.json, train-log.jsonl. */
  out: string;
  adapter: string;
  steps: { done: number; total: number; resumedFrom: number | null };
  seconds: number;
  tokensPerSecond: number;
  validation: { before: number | null; after: number | null; best: number | null };
  notes: string[];
}
export const AlignRequest = new RequestType<AlignParams, AlignResult, void>('titan/align');

// ---------------------------------------------------------------------------------------------
// memory

export const UpdateMemoryParamsSchema = v.object({
  /** Absolute paths known to have changed; absent = check the whole workspace. */
  changedPaths: v.optional(v.array(v.string())),
  /** Forget the checkpoints and read everything again. */
  rebuild: v.optional(v.boolean()),
  progressToken: v.optional(Token),
});
export type UpdateMemoryParams = v.InferOutput<typeof UpdateMemoryParamsSchema>;
export const MemoryProgressType = new ProgressType<MemoryProgress>();
export const UpdateMemoryRequest = new RequestType<UpdateMemoryParams, MemoryStatsInfo, void>('titan/updateMemory');

export const FileChangeSchema = v.object({ path: NonEmpty, kind: v.picklist(['created', 'changed', 'deleted']) });
export type FileChange = v.InferOutput<typeof FileChangeSchema>;
export const FilesChangedParamsSchema = v.object({ changes: v.array(FileChangeSchema) });
export type FilesChangedParams = v.InferOutput<typeof FilesChangedParamsSchema>;
/** Extension → engine: files saved, created or deleted (already debounced); the engine updates the memory incrementally. */
export const FilesChangedNotification = new NotificationType<FilesChangedParams>('titan/filesChanged');

// ---------------------------------------------------------------------------------------------
// ask

export const AskParamsSchema = v.object({
  question: v.pipe(v.string(), v.trim(), v.minLength(1, 'the question is empty'), v.maxLength(20000, 'the question is longer than 20000 characters')),
  retrieval: v.optional(v.boolean()),
  memory: v.optional(v.boolean()),
  maxNewTokens: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(4096))),
  temperature: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(5))),
  progressToken: v.optional(Token),
});
export type AskParams = v.InferOutput<typeof AskParamsSchema>;
/** Streamed answer text, in order; the fragments concatenate to AskResult.answer. */
export const AskProgress = new ProgressType<{ text: string }>();
export interface AskResult {
  answer: string;
  sources: Source[];
  stopReason: 'eos' | 'length' | 'cancelled';
  stats: { promptTokens: number; answerTokens: number; seconds: number; tokensPerSecond: number };
}
export const AskRequest = new RequestType<AskParams, AskResult, void>('titan/ask');

// ---------------------------------------------------------------------------------------------
// stop / shutdown

/** Cancels every operation in flight (answers, conversions, alignments, memory updates). */
export const StopRequest = new RequestType0<{ stopped: number }, void>('titan/stop');
/** Releases the model and memory; the process exits on the following exit notification. */
export const ShutdownRequest = new RequestType0<null, void>('titan/shutdown');
export const ExitNotification = new NotificationType<null>('titan/exit');

/** Error codes in ResponseError.code beyond JSON-RPC's own. */
export const EngineErrorCodes = {
  /** A ModelError: bad model files, settings or input (message is one line for the user). */
  ModelError: -32001,
  /** The operation was cancelled. */
  Cancelled: -32800,
  /** Params failed their schema. */
  InvalidParams: -32602,
  /** A state the request cannot run in (no model, no workspace). */
  NotReady: -32002,
} as const;

/** Validates params against a schema: the value, or one line naming the offending field. */
export function parseParams<S extends v.GenericSchema>(schema: S, value: unknown, method: string): { ok: true; value: v.InferOutput<S> } | { ok: false; message: string } {
  const r = v.safeParse(schema, value);
  if (r.success) return { ok: true, value: r.output };
  return { ok: false, message: `${method}: ${describeIssues(r.issues)}` };
}

export function describeIssues(issues: readonly v.BaseIssue<unknown>[]): string {
  return issues
    .slice(0, 3)
    .map((i) => {
      const where = v.getDotPath(i);
      return where ? `${where}: ${i.message}` : i.message;
    })
    .join('; ');
}
