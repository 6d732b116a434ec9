// What the memory fault tests compare against: a clean read of a small synthetic workspace through a
// tiny Titan package that checkpoints after every segment, so there is a reference state wherever a
// faulty run could have left a checkpoint; and the check that a storage folder holds only intact
// checkpoints equal to those states.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WorkspaceMemory } from '../../engine/memory/workspace-memory';
import { decodeState } from '../../engine/runtime/state-blob';
import { memoryDirIn, readStoredMemory, stateDifference, tinyTitanPackage, writeSyntheticWorkspace } from '../helpers/workspace';

export interface MemoryReference {
  pkg: string;
  ws: string;
  /** Tokens of the whole stream. */
  total: number;
  /** Position → state blob of the clean read. */
  states: Map<number, Buffer>;
  /** Bytes of one state blob. */
  stateBytes: number;
  /** Milliseconds the clean read took (checkpointing after every segment). */
  updateMs: number;
}

/** Writes the package and the workspace under `dir` and reads it cleanly once. */
export async function memoryReference(dir: string, workspace: { count: number; lines: number } = { count: 16, lines: 40 }): Promise<MemoryReference> {
  const pkg = await tinyTitanPackage(path.join(dir, 'model'));
  const ws = path.join(dir, 'ws');
  writeSyntheticWorkspace(ws, workspace);
  const storage = path.join(dir, 'reference');
  const m = await WorkspaceMemory.open({ packageDir: pkg, workspaces: [ws], storageDir: storage, provider: 'cpu', checkpointEveryTokens: 1, storageCapBytes: 2 ** 40 });
  let total: number;
  const started = performance.now();
  try {
    total = (await m.update()).position;
  } finally {
    await m.close();
  }
  const updateMs = performance.now() - started;
  const stored = readStoredMemory(memoryDirIn(storage));
  const states = new Map<number, Buffer>();
  for (const c of stored.manifest.checkpoints) states.set(c.position, stored.state(c.position));
  return { pkg, ws, total, states, stateBytes: states.get(total)!.length, updateMs };
}

/** Files a memory folder may hold besides the states its manifest names. */
const OWN_FILES = new Set(['manifest.json', 'retrieval-index.json', '.lock-owner', '.lock']);
/**
 * What a SIGKILL may leave that the manifest does not name (the next open removes it, which the check
 * after a clean run verifies): the temp file of a write-file-atomic write cut short, or a complete
 * state file — written before the manifest that would name it, or pruned from the manifest just
 * written and not yet deleted — when the kill fell between the two writes.
 */
const KILLED_WRITE = /^(?:(?:state-\d+\.bin|manifest\.json|retrieval-index\.json)\.[0-9a-f]+|state-\d+\.bin)$/;

/**
 * Every checkpoint the manifest names is intact and equals the clean read's state there, and the
 * folder holds nothing else of ours (no leftover of a cut-short write, unless `killed`: the process
 * was just SIGKILLed and has not cleaned up). Returns the newest position (0 when there is no manifest).
 */
export function checkStorage(memDir: string, ref: MemoryReference, options: { killed?: boolean } = {}): number {
  if (!fs.existsSync(path.join(memDir, 'manifest.json'))) return 0;
  const raw = JSON.parse(fs.readFileSync(path.join(memDir, 'manifest.json'), 'utf8')) as Record<string, unknown> & { checksum: string };
  const { checksum, ...body } = raw;
  assert.equal(createHash('sha256').update(JSON.stringify(body)).digest('hex'), checksum, 'manifest checksum');
  const stored = readStoredMemory(memDir);
  let newest = 0;
  for (const c of stored.manifest.checkpoints) {
    const blob = stored.state(c.position);
    assert.equal(createHash('sha256').update(blob).digest('hex'), c.sha256, `${c.file} does not match its manifest entry`);
    assert.equal(decodeState(blob).position, c.position);
    const want = ref.states.get(c.position);
    assert.ok(want, `checkpoint at ${c.position} is not at a segment boundary of the stream`);
    const diff = stateDifference(blob, want);
    assert.ok(diff <= 1e-5, `checkpoint at ${c.position} differs from a clean read by ${diff}`);
    newest = Math.max(newest, c.position);
  }
  const named = new Set(stored.manifest.checkpoints.map((c) => c.file));
  const stray = fs.readdirSync(memDir).filter((f) => !OWN_FILES.has(f) && !named.has(f) && !(options.killed && KILLED_WRITE.test(f)));
  assert.deepEqual(stray, [], `files no manifest names in ${memDir}`);
  return newest;
}

/** The state of the newest checkpoint in a storage folder, compared with the clean read's at the end of the stream. */
export function finalDifference(storage: string, ref: MemoryReference): number {
  return stateDifference(readStoredMemory(memoryDirIn(storage)).last(), ref.states.get(ref.total)!);
}
