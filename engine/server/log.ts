// Engine logs: one line per event on stderr, which the extension shows in its output channel.
// stdout belongs to JSON-RPC (see stdout-guard.ts).
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

function write(level: LogLevel, message: string): void {
  const text = message.replace(/\r?\n/g, '\n    ');
  process.stderr.write(`[${level}] ${text}\n`);
}

export const log = {
  trace: (m: string) => write('trace', m),
  debug: (m: string) => write('debug', m),
  info: (m: string) => write('info', m),
  warn: (m: string) => write('warn', m),
  error: (m: string) => write('error', m),
};

export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
