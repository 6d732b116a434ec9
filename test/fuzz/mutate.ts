// Mutations for the coverage-guided loop: libFuzzer's byte-level ones (flip, set, insert, erase, copy,
// splice, dictionary tokens, ASCII integers) plus edits of the parsed value when inputs are JSON.
import type { Rng } from './target';

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x0a];
const INTERESTING_NUMBERS = ['0', '-1', '1', '2', '3', '7', '8', '255', '256', '65535', '65536', '2147483647', '2147483648', '4294967295', '4294967296',
  '9007199254740991', '9007199254740992', '18446744073709551615', '1e308', '-1e308', '1e-320', '0.5', '-0', '1.5', '3.4028235e38', '123456789012345678901234567890'];

/** Values JSON edits put in place of a node: boundary numbers, wrong types, huge and odd strings. */
const JSON_VALUES: unknown[] = [null, true, false, 0, -1, 1, 2, 0.5, -0.5, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, 2 ** 31, 2 ** 32, 2 ** 64, '', ' ', '0', 'a', '../x', '/etc/passwd',
  '\u0000', '\ud800', '<script>alert(1)</script>', 'javascript:alert(1)', '__proto__', 'constructor', [], [[]], {}, { __proto__: null }, [0], ['a'], 'x'.repeat(5000)];

export function mutateBytes(input: Uint8Array, rnd: Rng, dictionary: readonly string[], pool: readonly Uint8Array[], maxLen: number): Uint8Array {
  let out: Uint8Array = Uint8Array.from(input);
  const rounds = 1 + rnd.below(rnd.chance(0.2) ? 8 : 3);
  for (let r = 0; r < rounds; r++) out = mutateOnce(out, rnd, dictionary, pool);
  return out.length > maxLen ? out.subarray(0, maxLen) : out;
}

function mutateOnce(b: Uint8Array, rnd: Rng, dictionary: readonly string[], pool: readonly Uint8Array[]): Uint8Array {
  const at = (): number => rnd.below(b.length + 1);
  switch (rnd.below(11)) {
    case 0: { // flip a bit
      if (b.length === 0) return b;
      const i = rnd.below(b.length);
      b[i] ^= 1 << rnd.below(8);
      return b;
    }
    case 1: { // set an interesting or random byte
      if (b.length === 0) return b;
      b[rnd.below(b.length)] = rnd.chance(0.5) ? rnd.pick(INTERESTING_BYTES) : rnd.below(256);
      return b;
    }
    case 2: { // insert random bytes
      const n = 1 + rnd.below(rnd.chance(0.1) ? 256 : 8);
      const ins = new Uint8Array(n).map(() => rnd.below(256));
      return splice(b, at(), 0, ins);
    }
    case 3: { // erase a range
      if (b.length === 0) return b;
      const i = rnd.below(b.length);
      return splice(b, i, 1 + rnd.below(Math.min(b.length - i, rnd.chance(0.2) ? 4096 : 16)), new Uint8Array());
    }
    case 4: { // duplicate a range somewhere else
      if (b.length === 0) return b;
      const i = rnd.below(b.length);
      const n = 1 + rnd.below(Math.min(b.length - i, 64));
      return splice(b, at(), 0, b.slice(i, i + n));
    }
    case 5: // truncate
      return b.subarray(0, rnd.below(b.length + 1));
    case 6: { // splice with another pool entry (crossover)
      if (pool.length === 0) return b;
      const other = rnd.pick(pool);
      const i = rnd.below(other.length + 1);
      return splice(b, at(), rnd.below(8), other.subarray(i, i + 1 + rnd.below(Math.max(1, other.length - i))));
    }
    case 7:
    case 8: { // insert or overwrite with a dictionary token
      if (dictionary.length === 0) return b;
      const tok = new TextEncoder().encode(rnd.pick(dictionary));
      return splice(b, at(), rnd.chance(0.5) ? 0 : Math.min(tok.length, b.length), tok);
    }
    case 9: { // replace an ASCII integer with an interesting one
      const text = new TextDecoder('latin1').decode(b);
      const nums = [...text.matchAll(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi)];
      if (nums.length === 0) return b;
      const m = rnd.pick(nums);
      return splice(b, m.index!, m[0].length, new TextEncoder().encode(rnd.pick(INTERESTING_NUMBERS)));
    }
    default: { // overwrite a little-endian integer field with a boundary value
      if (b.length < 4) return b;
      const i = rnd.below(b.length - 3);
      const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const v = rnd.pick([0, 1, 0x7fffffff, 0x80000000, 0xffffffff, b.length, b.length - 8, b.length + 1]);
      view.setUint32(i, v >>> 0, true);
      return b;
    }
  }
}

function splice(b: Uint8Array, start: number, deleteCount: number, insert: Uint8Array): Uint8Array {
  start = Math.min(start, b.length);
  deleteCount = Math.min(deleteCount, b.length - start);
  const out = new Uint8Array(b.length - deleteCount + insert.length);
  out.set(b.subarray(0, start), 0);
  out.set(insert, start);
  out.set(b.subarray(start + deleteCount), start + insert.length);
  return out;
}

/** Parses `input` as JSON and edits one node of the value (replace, delete, duplicate, retype); null if not JSON. */
export function mutateJson(input: Uint8Array, rnd: Rng, dictionary: readonly string[], extraValues: () => unknown): Uint8Array | null {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(input));
  } catch {
    return null;
  }
  const rounds = 1 + rnd.below(3);
  for (let r = 0; r < rounds; r++) value = editJson(value, rnd, dictionary, extraValues);
  return new TextEncoder().encode(JSON.stringify(value) ?? 'null');
}

function editJson(root: unknown, rnd: Rng, dictionary: readonly string[], extraValues: () => unknown): unknown {
  // Collect containers and pick one node to edit.
  const nodes: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const walk = (v: unknown, depth: number): void => {
    if (depth > 12 || nodes.length > 2000) return;
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        nodes.push({ parent: v, key: i });
        walk(x, depth + 1);
      });
    } else if (v && typeof v === 'object') {
      for (const k of Object.keys(v)) {
        nodes.push({ parent: v as Record<string, unknown>, key: k });
        walk((v as Record<string, unknown>)[k], depth + 1);
      }
    }
  };
  walk(root, 0);
  const replacement = (): unknown => {
    const k = rnd.below(4);
    // A copy: JSON_VALUES' arrays and objects are shared, and a later edit inside the inserted value
    // would change the constant for every later input — and could make it contain itself (a cycle
    // JSON.stringify refuses; seed 916722345, safetensors-index).
    if (k === 0) return structuredClone(rnd.pick(JSON_VALUES));
    if (k === 1 && dictionary.length) return rnd.pick(dictionary).replace(/^"|"$/g, '');
    if (k === 2) return extraValues();
    return rnd.below(1000) - 500;
  };
  if (nodes.length === 0 || rnd.chance(0.05)) return replacement();
  const { parent, key } = rnd.pick(nodes);
  const get = (): unknown => (parent as Record<string | number, unknown>)[key];
  const set = (v: unknown): void => {
    (parent as Record<string | number, unknown>)[key] = v;
  };
  switch (rnd.below(7)) {
    case 0:
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
      break;
    case 1: // duplicate into a sibling
      if (Array.isArray(parent)) parent.push(structuredClone(get()));
      else parent[rnd.chance(0.5) && dictionary.length ? rnd.pick(dictionary).replace(/^"|"$/g, '') : `${String(key)}_`] = structuredClone(get());
      break;
    case 2: { // retype
      const v = get();
      set(typeof v === 'number' ? String(v) : typeof v === 'string' ? (Number.isFinite(Number(v)) ? Number(v) : [v]) : Array.isArray(v) ? v[0] ?? null : v && typeof v === 'object' ? Object.values(v) : { value: v });
      break;
    }
    case 3: { // numeric nudge
      const v = get();
      if (typeof v === 'number') set(rnd.pick([v + 1, v - 1, -v, v * 2, v * 1e6, v + 0.5, 0]));
      else set(replacement());
      break;
    }
    case 4: { // wrap in an array / object
      set(rnd.chance(0.5) ? [get()] : { [String(key)]: get() });
      break;
    }
    default:
      set(replacement());
  }
  return root;
}
