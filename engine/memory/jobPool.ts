// A pool that runs async jobs with bounded concurrency, where jobs spawn more jobs (a
// directory listing spawns its files and subdirectories).

/**
 * Runs jobs with at most `limit` in flight. `finished` settles when none is left, or
 * rejects with the first failure (or a cancellation), after which queued jobs are dropped.
 */
export class JobPool {
  readonly finished: Promise<void>;
  private active = 0;
  private outstanding = 0;
  private failure = false;
  // A FIFO of waiting jobs; `head` moves instead of shift(), which is O(n) on long queues.
  private queue: Array<() => Promise<void>> = [];
  private head = 0;
  private resolve!: () => void;
  private reject!: (err: unknown) => void;

  constructor(private readonly limit: number) {
    this.finished = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.finished.catch(() => undefined); // reported to whoever awaits `finished`
  }

  get stopped(): boolean {
    return this.failure;
  }

  spawn(job: () => Promise<void>): void {
    if (this.failure) return;
    this.outstanding++;
    if (this.active < this.limit) {
      this.active++;
      void this.run(job);
    } else {
      this.queue.push(job);
    }
  }

  fail(err: unknown): void {
    if (this.failure) return;
    this.failure = true;
    this.queue = [];
    this.head = 0;
    this.reject(err);
  }

  private async run(first: () => Promise<void>): Promise<void> {
    // A slot runs queued jobs one after another until the queue is empty.
    for (let job: (() => Promise<void>) | undefined = first; job; job = this.take()) {
      try {
        if (!this.failure) await job();
      } catch (err) {
        this.fail(err);
      }
      if (--this.outstanding === 0) this.resolve();
    }
    this.active--;
  }

  private take(): (() => Promise<void>) | undefined {
    if (this.head === this.queue.length) return undefined;
    const job = this.queue[this.head++];
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return job;
  }
}
