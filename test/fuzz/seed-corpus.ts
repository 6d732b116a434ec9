// Writes the hand-made seeds of each target's corpus (test/fuzz/corpus/<target>/seed-*): one valid
// input per shape the parser reads, and the inputs of bugs fuzzing found (regress-*), so every
// test run replays them. Run with `node --import tsx test/fuzz/seed-corpus.ts` after changing a seed;
// the corpus files themselves are committed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { encodeState } from '../../engine/runtime/state-blob';
import { CORPUS_ROOT } from './harness';
import { frame } from './targets/safetensors';

function write(target: string, name: string, data: Uint8Array | string): void {
  const dir = path.join(CORPUS_ROOT, target);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, name), data);
}
const mode = (m: number, text: string): Buffer => Buffer.concat([Buffer.from([m]), Buffer.from(text, 'utf8')]);

const f32 = (n: number) => new Uint8Array(new Float32Array(n).map((_, i) => i).buffer);
write('safetensors', 'seed-two-tensors', frame({ __metadata__: { format: 'pt' }, 'model.norm.weight': { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, 'model.embed_tokens.weight': { dtype: 'BF16', shape: [2, 2], data_offsets: [16, 24] } }, new Uint8Array([...f32(4), ...new Uint8Array(8)])));
write('safetensors', 'seed-int-and-empty', frame({ ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] }, empty: { dtype: 'F16', shape: [0, 3], data_offsets: [8, 8] }, flag: { dtype: 'BOOL', shape: [], data_offsets: [8, 9] } }, new Uint8Array(9)));
write('safetensors', 'regress-long-tensor-name', frame({ ['x'.repeat(5000)]: { dtype: 'F99', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4)));

write('safetensors-index', 'seed-two-shards', JSON.stringify({ metadata: { total_size: 32 }, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors', d: 'model-00002-of-00002.safetensors' } }));
write('safetensors-index', 'seed-subfolder', JSON.stringify({ weight_map: { e: 'sub/model-00003.safetensors', f: 'sub/model-00003.safetensors' } }));
write('safetensors-index', 'regress-symlink-out-of-folder', JSON.stringify({ weight_map: { outside: 'link.safetensors' } }));
write('safetensors-index', 'regress-dotdot', JSON.stringify({ weight_map: { outside: '../outside.safetensors', a: 'sub/../../outside.safetensors' } }));
write('safetensors-index', 'regress-long-file-name', JSON.stringify({ weight_map: { a: 'x'.repeat(5000) } }));

const llama = { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 300, rms_norm_eps: 1e-5, rope_theta: 10000, torch_dtype: 'float32', bos_token_id: 1, eos_token_id: 2 };
write('model-config', 'seed-llama', JSON.stringify(llama));
write('model-config', 'seed-llama3-rope', JSON.stringify({ ...llama, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }, eos_token_id: [2, 3] }));
write('model-config', 'seed-qwen3-new-style', JSON.stringify({ ...llama, model_type: 'qwen3', head_dim: 32, dtype: 'bfloat16', rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 1e6 }, use_sliding_window: false, sliding_window: 4096 }));
write('model-config', 'seed-text-config', JSON.stringify({ architectures: ['Mistral3ForConditionalGeneration'], text_config: { ...llama, model_type: 'mistral', sliding_window: 256 } }));
write('model-config', 'regress-huge-integer', JSON.stringify({ ...llama, intermediate_size: 1e308, head_dim: 9007199254740992 }));
write('model-config', 'regress-long-value', JSON.stringify({ ...llama, attention_bias: 'x'.repeat(5000) }));

write('tokenizer', 'seed-config-inline-template', mode(0, JSON.stringify({ bos_token: '<s>', eos_token: '</s>', add_bos_token: true, chat_template: '{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}' })));
write('tokenizer', 'seed-config-named-templates', mode(0, JSON.stringify({ eos_token: { content: '</s>' }, chat_template: [{ name: 'default', template: '{{ messages[0].content }}' }, { name: 'tool_use', template: '{{ tools }}' }] })));
write('tokenizer', 'seed-template-file', mode(2, '{{ bos_token }}{% for message in messages %}{% if loop.first %}[INST] {% endif %}{{ message.content | trim }}{% endfor %}'));
write('tokenizer', 'seed-generation-config', mode(3, JSON.stringify({ eos_token_id: [2, 3], bos_token_id: 1 })));
write('tokenizer', 'regress-template-nested-loops', mode(2, '{% for a in range(3000) %}{% for b in range(3000) %}{% endfor %}{% endfor %}'));
write('tokenizer', 'regress-template-huge-range', mode(2, '{% for a in range(1000000000) %}{{ a }}{% endfor %}'));

const state = (dtype: 'float32' | 'float16') => encodeState({ position: 1234, packageKey: 'pkg-key', tensors: [{ name: 'state.0', dims: [2, 3], dtype, data: dtype === 'float32' ? new Float32Array(6).map((_, i) => i) : new Uint16Array(6).map((_, i) => 0x3c00 + i) }, { name: 'kv.0', dims: [0, 4], dtype, data: dtype === 'float32' ? new Float32Array(0) : new Uint16Array(0) }] });
write('state-blob', 'seed-float32', Buffer.concat([Buffer.from([1]), state('float32')]));
write('state-blob', 'seed-float16', Buffer.concat([Buffer.from([1]), state('float16')]));
write('state-blob', 'seed-no-fixup', Buffer.concat([Buffer.from([0]), state('float32')]));

const rpc = (msgs: unknown) => mode(0, JSON.stringify(msgs));
write('jsonrpc', 'seed-initialize-list', rpc([{ jsonrpc: '2.0', id: 1, method: 'titan/initialize', params: { clientName: 'fuzz', globalStorageDir: 'storage', demoModelDir: 'demo' } }, { jsonrpc: '2.0', id: 2, method: 'titan/listModels', params: {} }, { jsonrpc: '2.0', id: 3, method: 'titan/status' }]));
write('jsonrpc', 'seed-configure', rpc([{ jsonrpc: '2.0', id: 1, method: 'titan/initialize', params: { clientName: 'fuzz', globalStorageDir: 'storage', demoModelDir: 'demo' } }, { jsonrpc: '2.0', id: 2, method: 'titan/configure', params: { modelPath: 'pkg', provider: 'cpu', threads: 1, workspaces: [], exclude: [], memoryStorageDir: null, maxFileBytes: 1048576, storageCapBytes: 1048576, progressToken: 'p' } }]));
write('jsonrpc', 'seed-validate', rpc({ jsonrpc: '2.0', id: 'v', method: 'titan/validateSettings', params: { settings: { operator: 'delta_rule', magWeight: 0.5, window: 512, chunk: 64, semantics: 'exact', dtype: 'fp32', crossGate: false, adapter: '' } } }));
write('jsonrpc', 'seed-ask-without-model', rpc([{ jsonrpc: '2.0', id: 7, method: 'titan/ask', params: { question: 'where?', maxNewTokens: 4 } }, { jsonrpc: '2.0', method: '$/cancelRequest', params: { id: 7 } }, { jsonrpc: '2.0', id: 8, method: 'titan/stop' }]));
write('jsonrpc', 'seed-notification', rpc({ jsonrpc: '2.0', method: 'titan/filesChanged', params: { changes: [{ path: 'a.ts', kind: 'changed' }] } }));
write('jsonrpc', 'seed-raw-framing', mode(1, 'Content-Length: 40\r\n\r\n{"jsonrpc":"2.0","id":1,"method":"x"}  Content-Length: 2\r\n\r\n{}'));

write('webview-messages', 'seed-chat-ask', mode(0, JSON.stringify({ type: 'ask', id: 'q1', question: 'where is main?' })));
write('webview-messages', 'seed-chat-open-link', mode(0, JSON.stringify({ type: 'openLink', href: 'javascript:alert(1)' })));
write('webview-messages', 'seed-form-convert', mode(1, JSON.stringify({ type: 'convert', id: 'c1', settings: { operator: 'delta_rule', window: '512', chunk: 64, adapter: '' } })));
write('webview-messages', 'seed-host-answer', mode(2, JSON.stringify({ type: 'answerEnd', id: 'q1', text: '<script>alert(1)</script>', sources: [{ path: 'a.ts', line: 3, reason: 'retrieved', snippet: '<img src=x onerror=alert(1)>' }], stats: { promptTokens: 1, answerTokens: 2, seconds: 0.5, tokensPerSecond: 4 }, stopReason: 'eos' })));
write('webview-messages', 'seed-host-init', mode(2, JSON.stringify({ type: 'init', busy: false, history: [{ id: 'a', role: 'user', text: 'hi', time: 1 }] })));
write('webview-messages', 'seed-form-progress', mode(3, JSON.stringify({ type: 'progress', done: 1, total: 10, message: 'layers' })));
