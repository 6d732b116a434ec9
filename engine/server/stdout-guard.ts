// stdout carries JSON-RPC frames and nothing else. Anything else that writes to process.stdout (a
// stray console.log in a library, a worker thread's output, which Node forwards to the parent's
// stdout) would corrupt the stream, so the connection gets a private handle on the real stdout and
// every other writer is redirected to stderr.
import { Writable } from 'node:stream';

export function takeStdout(): Writable {
  const stdout = process.stdout;
  const realWrite = stdout.write.bind(stdout) as (chunk: unknown, encoding?: BufferEncoding, cb?: (err?: Error | null) => void) => boolean;
  const channel = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      realWrite(chunk, undefined, (err?: Error | null) => callback(err ?? null));
    },
  });
  stdout.on('error', (e) => channel.destroy(e));
  stdout.on('close', () => channel.destroy());
  const toStderr = ((chunk: unknown, encoding?: unknown, cb?: unknown) => process.stderr.write(chunk as string, encoding as BufferEncoding, cb as () => void)) as typeof stdout.write;
  stdout.write = toStderr;
  for (const name of ['log', 'info', 'debug'] as const) console[name] = console.error.bind(console);
  return channel;
}
