// What the engine holds for one configuration: the model package and either the workspace memory
// (a folder is open) or a plain chat with the model (no folder). Reconfiguring closes one session
// and opens the next.
import * as fs from 'node:fs';
import type { AskParams, AskResult, ConfigureParams, MemoryStatusInfo, ModelInfo, ProviderInfo } from '../../protocol/engine';
import { ModelError } from '../model/errors';
import type { MemoryHost } from './memory-host';
import { MemoryHost as Host } from './memory-host';
import { openMemoryBackend } from './memory-backend';
import { PlainChat } from './plain-chat';
import { errorText, log } from './log';

export const DEFAULT_MAX_NEW_TOKENS = 256;

export class ModelSession {
  private constructor(
    readonly key: string,
    readonly model: ModelInfo,
    readonly params: ConfigureParams,
    readonly packageDir: string,
    public memory: MemoryHost | null,
    public chat: PlainChat | null,
    public memoryError: string | null,
    private readonly onChange: () => void,
  ) {}

  /** The parts of a configuration that need a new session when they change. */
  static keyOf(params: ConfigureParams, packageDir: string): string {
    const { progressToken: _t, ...rest } = params;
    return JSON.stringify({ ...rest, packageDir });
  }

  static async open(params: ConfigureParams, packageDir: string, model: ModelInfo, onChange: () => void): Promise<ModelSession> {
    const key = ModelSession.keyOf(params, packageDir);
    const session = new ModelSession(key, model, params, packageDir, null, null, null, onChange);
    await session.openBackends();
    return session;
  }

  private async openBackends(): Promise<void> {
    const p = this.params;
    if (p.workspaces.length > 0) {
      if (!p.memoryStorageDir) {
        this.memoryError = 'no storage folder for the workspace memory';
      } else {
        try {
          const backend = await openMemoryBackend({
            packageDir: this.packageDir,
            workspaces: p.workspaces,
            storageDir: p.memoryStorageDir,
            exclude: p.exclude,
            provider: p.provider,
            threads: p.threads,
            maxFileBytes: p.maxFileBytes,
            storageCapBytes: p.storageCapBytes,
            maxFiles: p.maxFiles,
            maxStreamTokens: p.maxStreamTokens,
            onNotice: (message) => log.warn(`memory: ${message}`),
          });
          this.memory = new Host(backend, this.onChange);
          this.memoryError = null;
        } catch (e) {
          this.memoryError = errorText(e);
          log.warn(`workspace memory unavailable: ${this.memoryError}; questions are answered without it`);
        }
      }
    }
    if (!this.memory) this.chat = await PlainChat.open(this.packageDir, p.provider, p.threads);
  }

  get provider(): ProviderInfo | null {
    if (this.memory) return this.memory.backend.status().provider;
    return this.chat?.provider ?? null;
  }

  memoryStatus(): MemoryStatusInfo | null {
    if (this.memory) return this.memory.status();
    if (this.params.workspaces.length === 0) return null;
    return { position: 0, files: 0, fresh: false, lastUpdate: null, updating: null, error: this.memoryError };
  }

  async ask(params: AskParams, signal: AbortSignal, onText: (text: string) => void): Promise<AskResult> {
    const options = {
      maxNewTokens: params.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS,
      temperature: params.temperature ?? 0,
      signal,
      onText,
    };
    const fallbackBefore = this.provider?.fallback;
    try {
      if (this.memory) {
        const memory = this.memory;
        return await memory.exclusive(() => memory.backend.ask(params.question, { ...options, retrieval: params.retrieval ?? true, memory: params.memory ?? true }));
      }
      if (this.chat) return await this.chat.ask(params.question, options);
      throw new ModelError('no model is open');
    } finally {
      const fallback = this.provider?.fallback;
      if (fallback && fallback !== fallbackBefore) {
        log.warn(`execution provider: ${fallback}; the model runs on the CPU from now on`);
        this.onChange();
      }
    }
  }

  /** Forgets the memory's checkpoints and reads the workspace again. */
  async rebuildMemory(): Promise<void> {
    if (!this.memory || !this.params.memoryStorageDir) return;
    await this.memory.close();
    this.memory = null;
    fs.rmSync(this.params.memoryStorageDir, { recursive: true, force: true });
    await this.openBackends();
  }

  async close(): Promise<void> {
    const closing: Promise<void>[] = [];
    if (this.memory) closing.push(this.memory.close());
    if (this.chat) closing.push(this.chat.close());
    this.memory = null;
    this.chat = null;
    await Promise.allSettled(closing);
  }
}
