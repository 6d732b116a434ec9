// The memory stream: what the model reads, token by token. Each file enters as its header line and
// its text; the text is tokenized in pieces cut at line starts (so a large file never blocks the
// event loop for long), and fed in segments cut at fixed absolute positions and at file starts.
//
// Everything here is a pure function of the files and the settings, so that re-reading the tail of
// the stream after a checkpoint performs exactly the runs a full read performs: same tokens, same
// run boundaries, hence the same state.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { TitanTokenizer } from '../model/tokenizer';
import { DEFAULT_FILE_HEADER, renderFileHeader } from './discovery';

/** Bump when the stream's form changes (header, separators, piece cuts): stored memories are then rebuilt. */
export const STREAM_FORMAT_VERSION = 1;

/** Characters per tokenization piece (a piece ends at the next line start after this many). */
const PIECE_CHARS = 16 * 1024;

/** The text a file contributes: header, text, and a final newline if the file lacks one. */
export function fileStreamText(streamPath: string, text: string, header: string = DEFAULT_FILE_HEADER): string {
  const body = text.length === 0 || text.endsWith('\n') ? text : `${text}\n`;
  return renderFileHeader(streamPath, header) + body;
}

/**
 * Tokenizes a file's stream text in pieces that end at a line start followed by a non-blank
 * character (where byte-level BPE pre-tokenizers cut anyway), yielding to the event loop between
 * pieces. Deterministic: the same text always gives the same ids.
 */
export async function encodeStreamText(tokenizer: TitanTokenizer, text: string): Promise<number[]> {
  const ids: number[] = [];
  let start = 0;
  while (start < text.length) {
    let end = text.length;
    if (text.length - start > PIECE_CHARS) {
      const cut = /\n(?=\S)/g;
      cut.lastIndex = start + PIECE_CHARS;
      const m = cut.exec(text);
      end = m ? m.index + 1 : text.length;
    }
    const piece = tokenizer.encode(text.slice(start, end), { addSpecialTokens: false });
    for (const id of piece) ids.push(id);
    start = end;
    if (start < text.length) await yieldToEventLoop();
  }
  return ids;
}

/**
 * Tokens per forward call: a multiple of the package's chunk size (Titan graphs take at most
 * max_chunk_size tokens per run and the exact semantics cut runs at its multiples), about 512.
 */
export function segmentSizeFor(chunk: number | undefined): number {
  const c = chunk && chunk > 0 ? chunk : 64;
  return c * Math.max(1, Math.ceil(512 / c));
}

/** Where the segment starting at stream position `pos` ends: the next multiple of `size`, or `fileEnd`. */
export function segmentEnd(pos: number, fileEnd: number, size: number): number {
  return Math.min(fileEnd, (Math.floor(pos / size) + 1) * size);
}

/**
 * How one segment is fed as forward calls. The exact semantics cut runs at absolute multiples of
 * the chunk size by themselves: one call. tptt-0.12 runs each call in equal chunks of the largest
 * divisor of its length, so a segment of prime length would run token by token; it is fed as a
 * multiple of the chunk size, then the rest in falling powers of two.
 */
export function segmentCalls(length: number, chunk: number, semantics: string | undefined): number[] {
  if (semantics !== 'tptt-0.12' || length <= chunk) return semantics === 'tptt-0.12' ? powersOfTwo(length) : [length];
  const whole = Math.floor(length / chunk) * chunk;
  return [whole, ...powersOfTwo(length - whole)];
}

function powersOfTwo(n: number): number[] {
  const out: number[] = [];
  for (let bit = 1 << 30; bit >= 1; bit >>>= 1) if (n & bit) out.push(bit);
  return out;
}

/** Hash of the package's tokenizer files: a stored stream is only valid for the same tokenization. */
export function tokenizerHash(packageDir: string): string {
  const h = createHash('sha256');
  for (const name of ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja']) {
    const file = path.join(packageDir, name);
    h.update(`${name}\0`);
    if (fs.existsSync(file)) h.update(fs.readFileSync(file));
    h.update('\0');
  }
  return h.digest('hex');
}

/** Everything besides the files that fixes the stream and the states along it. */
export function streamKey(parts: { packageKey: string; tokenizerHash: string; header: string; segmentSize: number }): string {
  return createHash('sha256')
    .update(JSON.stringify([STREAM_FORMAT_VERSION, parts.packageKey, parts.tokenizerHash, parts.header, parts.segmentSize, PIECE_CHARS]))
    .digest('hex');
}
