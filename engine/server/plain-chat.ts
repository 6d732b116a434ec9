// Questions without a workspace (no folder open): the model answers from the question alone, in its
// chat template, with no memory and no sources.
import type { AskResult, ProviderInfo } from '../../protocol/engine';
import { loadTokenizer, type TitanTokenizer } from '../model/tokenizer';
import { generate } from '../runtime/generate';
import type { ProviderChoice } from '../runtime/session';
import { WorkerModel } from '../runtime/worker-client';

export interface AskOptions {
  maxNewTokens: number;
  temperature: number;
  signal?: AbortSignal;
  onText?: (text: string) => void;
}

export class PlainChat {
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly model: WorkerModel,
    private readonly tokenizer: TitanTokenizer,
  ) {}

  static async open(packageDir: string, provider: ProviderChoice, threads: number): Promise<PlainChat> {
    const tokenizer = loadTokenizer(packageDir);
    const model = await WorkerModel.open(packageDir, { provider, threads: threads || undefined, cpuFallback: true });
    return new PlainChat(model, tokenizer);
  }

  get provider(): ProviderInfo {
    const { provider, reason, fallback } = this.model.provider;
    return { provider, reason, ...(fallback ? { fallback } : {}) };
  }

  ask(question: string, options: AskOptions): Promise<AskResult> {
    const turn = this.chain.then(() => this.run(question, options));
    this.chain = turn.catch(() => undefined);
    return turn;
  }

  private async run(question: string, options: AskOptions): Promise<AskResult> {
    const t0 = performance.now();
    await this.model.reset();
    let prompt: string;
    let addSpecialTokens = false;
    try {
      prompt = this.tokenizer.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true });
    } catch {
      prompt = question;
      addSpecialTokens = true;
    }
    const ids = this.tokenizer.encode(prompt, { addSpecialTokens });
    const r = await generate(this.model, this.tokenizer, ids, {
      maxNewTokens: options.maxNewTokens,
      temperature: options.temperature,
      signal: options.signal,
      onText: options.onText,
      restart: () => this.model.reset(),
    });
    const seconds = (performance.now() - t0) / 1000;
    return {
      answer: r.text,
      sources: [],
      stopReason: r.stopReason,
      stats: { promptTokens: r.promptTokens, answerTokens: r.tokens.length, seconds, tokensPerSecond: r.tokens.length / Math.max(r.decodeSeconds, 1e-9) },
    };
  }

  async close(): Promise<void> {
    await this.chain;
    await this.model.release();
  }
}
