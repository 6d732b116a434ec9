// Webview ⇄ extension message guards (protocol/webview.ts): what a webview posts (it renders
// untrusted text, so the host treats its messages as untrusted) and what the host posts back.
// Post-conditions: a guard never throws; it returns null or a value of the declared shape (tagged
// with a known type, strings within their bounds); explainRejection names a reason for every
// rejected message.
import * as fc from 'fast-check';
import * as W from '../../../protocol/webview';
import { OracleViolation, utf8, type FuzzTarget } from '../target';

const GUARDS = {
  chatToHost: { parse: W.parseChatToHost, types: ['ready', 'ask', 'stop', 'openSource', 'openLink', 'copy', 'insert', 'selectModel', 'rebuildMemory', 'titanize', 'clearHistory'], explain: 'chat' as const },
  titanizeToHost: { parse: W.parseTitanizeToHost, types: ['ready', 'validate', 'convert', 'cancel', 'browseAdapter', 'openChat'], explain: 'titanize' as const },
  hostToChat: { parse: W.parseHostToChat, types: ['init', 'status', 'answerStart', 'answerText', 'answerEnd', 'answerError', 'focusPrompt'], explain: null },
  hostToTitanize: { parse: W.parseHostToTitanize, types: ['init', 'validation', 'progress', 'done', 'failed', 'cancelled', 'adapterPicked'], explain: null },
};
const ALL_TYPES = [...new Set(Object.values(GUARDS).flatMap((g) => g.types))];
const HOSTILE = ['<script>alert(1)</script>', 'javascript:alert(1)', '[x](javascript:alert(1))', '<img src=x onerror=alert(1)>', '\u0000', '\ud800', 'x'.repeat(30000), '__proto__', 'constructor', ''];

const str = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom(...HOSTILE));
const anyValue = fc.oneof(str, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constant(undefined), fc.array(str, { maxLength: 2 }));
const message = fc.record({
  type: fc.oneof({ arbitrary: fc.constantFrom(...ALL_TYPES), weight: 9 }, { arbitrary: anyValue, weight: 1 }),
  id: fc.oneof(fc.string({ minLength: 1, maxLength: 8 }), anyValue),
  question: anyValue, text: anyValue, path: anyValue, line: fc.oneof(fc.nat(), anyValue), href: anyValue, busy: fc.boolean(), message: str,
  history: fc.array(fc.record({ id: str, role: fc.constantFrom('user', 'assistant', 'error', 'system'), text: str, time: fc.oneof(fc.nat(), anyValue) }), { maxLength: 2 }),
  settings: fc.record({ operator: anyValue, window: anyValue, chunk: anyValue, adapter: anyValue }, { requiredKeys: [] }),
  sources: fc.array(fc.record({ path: str, line: fc.nat(), reason: str, snippet: str }, { requiredKeys: [] }), { maxLength: 2 }),
  stats: fc.record({ promptTokens: fc.nat(), answerTokens: fc.nat(), seconds: fc.double(), tokensPerSecond: fc.double() }),
  stopReason: fc.constantFrom('eos', 'length', 'cancelled', 'x'),
  errors: fc.array(fc.record({ field: fc.constantFrom('window', null, 'x'), message: str }), { maxLength: 2 }),
}, { requiredKeys: ['type'] });

const arbitrary = fc.tuple(fc.nat(3), fc.oneof(message, fc.jsonValue({ maxDepth: 3 }))).map(([mode, m]) => {
  // The mode byte picks the guard; undefined values vanish in JSON, as they do in postMessage's clone.
  const body = utf8(JSON.stringify(m) ?? 'null');
  const out = new Uint8Array(body.length + 1);
  out.set(body, 1);
  out[0] = mode;
  return out;
});

/** Every string in an accepted message, with where it is. */
function strings(v: unknown, at: string, out: [string, string][]): [string, string][] {
  if (typeof v === 'string') out.push([at, v]);
  else if (Array.isArray(v)) v.forEach((x, i) => strings(x, `${at}[${i}]`, out));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) strings(x, `${at}.${k}`, out);
  return out;
}

export const target: FuzzTarget = {
  name: 'webview-messages',
  description: 'webview ⇄ extension message guards (chat and Titanize form, both directions): tags, ids, string bounds, nested sources/history/settings',
  coverage: ['/protocol/', 'valibot'],
  arbitrary,
  json: false,
  mutate(input, rnd) {
    // Keep the mode byte; edit the JSON after it.
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder().decode(input.subarray(1)));
    } catch {
      return null;
    }
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      const o = value as Record<string, unknown>;
      const keys = Object.keys(o);
      const k = keys.length && rnd.chance(0.7) ? rnd.pick(keys) : rnd.pick(['type', 'id', 'text', 'extra', '__proto__']);
      o[k] = rnd.pick<unknown>([null, 0, -1, 1.5, '', 'x'.repeat(rnd.pick([1, 100, 20001, 1_000_001])), [], {}, rnd.pick(ALL_TYPES), ...HOSTILE]);
    }
    const body = utf8(JSON.stringify(value) ?? 'null');
    const out = new Uint8Array(body.length + 1);
    out[0] = rnd.below(4);
    out.set(body, 1);
    return out;
  },
  dictionary: [...ALL_TYPES.map((t) => JSON.stringify(t)), ...HOSTILE.slice(0, 5).map((h) => JSON.stringify(h)), '"type"', '"id"', '"sources"', '"history"', '"settings"'],
  maxLen: 1 << 21,
  run(input) {
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder().decode(input.subarray(1)));
    } catch {
      return 'rejected';
    }
    const guard = Object.values(GUARDS)[(input[0] ?? 0) % 4];
    const parsed = guard.parse(value);
    if (guard.explain) {
      const why = W.explainRejection(guard.explain, value);
      if ((parsed === null) !== (why !== 'valid')) throw new OracleViolation(`explainRejection says ${JSON.stringify(why)} for a message the guard ${parsed ? 'accepted' : 'rejected'}`);
    }
    if (parsed === null) return 'rejected';
    const type = (parsed as { type?: unknown }).type;
    if (typeof type !== 'string' || !guard.types.includes(type)) throw new OracleViolation(`accepted a message of type ${JSON.stringify(type)}`);
    for (const [at, s] of strings(parsed, 'message', [])) if (s.length > 1_000_000) throw new OracleViolation(`accepted ${at} of ${s.length} characters`);
    return 'accepted';
  },
};
