// Lint rules: the recommended sets, plus the layering rules of docs/house.md —
// the engine never imports vscode, the webview never imports Node modules.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

const nodeBuiltins = ['fs', 'path', 'os', 'child_process', 'worker_threads', 'crypto', 'stream', 'net', 'http', 'https', 'url', 'util', 'events', 'readline', 'zlib', 'buffer'];

export default tseslint.config(
  { ignores: ['dist/**', '.titan/**', 'test-output/**', 'out/**', 'node_modules/**', '.gpu/**', 'media/**', '.vscode-test/**', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['engine/**/*.ts', 'protocol/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: [{ name: 'vscode', message: 'The engine never imports vscode.' }] }] },
  },
  {
    files: ['webview/**/*.ts'],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      'no-restricted-imports': ['error', {
        paths: ['vscode', ...nodeBuiltins].map((name) => ({ name, message: 'The webview runs in a browser: no Node or vscode modules.' })),
        patterns: [{ group: ['node:*'], message: 'The webview runs in a browser: no Node modules.' }],
      }],
    },
  },
  { files: ['scripts/**/*.mjs', 'bin/**/*.js'], languageOptions: { globals: { ...globals.node } } },
);
