// Workspace discovery on real trees written to a temp directory: ignore rules (checked
// against git itself when it is installed), skip reasons, multi-root, stream order,
// cancellation, and a 50,000-file tree with progress and a responsive event loop.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, promises as fsp, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  compareStreamOrder, DEFAULT_FILE_HEADER, discoverWorkspace, nodeDiscoveryFs, readWorkspaceFile, renderFileHeader,
  WorkspaceFileSkippedError, type DiscoveryProgress, type SkippedFile, type WorkspaceDiscovery,
} from '../../engine/memory/discovery';

// --- helpers ----------------------------------------------------------------------------

type Tree = Record<string, string | Uint8Array | { readonly link: string }>;

const temps: string[] = [];
after(async () => {
  for (const dir of temps) await fsp.rm(dir, { recursive: true, force: true });
});

async function tempDir(label: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `titan-discovery-${label}-`));
  temps.push(dir);
  return dir;
}

/** Writes files (parents created) and symlinks ({ link: target }, target as written). */
async function writeTree(root: string, tree: Tree): Promise<void> {
  for (const [rel, content] of Object.entries(tree)) {
    const file = path.join(root, rel);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    if (typeof content === 'object' && 'link' in content) await fsp.symlink(content.link, file);
    else await fsp.writeFile(file, content);
  }
}

const accepted = (r: WorkspaceDiscovery): string[] => r.files.map((f) => f.streamPath).sort();
const skipsByPath = (r: WorkspaceDiscovery): Record<string, SkippedFile['reason']> =>
  Object.fromEntries(r.skipped.map((s) => [s.path, s.reason]));

function gitAvailable(): boolean {
  return spawnSync('git', ['--version']).status === 0;
}

// --- ignore rules -----------------------------------------------------------------------

describe('ignore rules', () => {
  // Only .gitignore and .git/info/exclude here, so that git can tell us the truth.
  const gitTree: Tree = {
    '.gitignore': [
      '# comment', '*.log', '!important.log', 'build/', '/root-only.txt', 'docs/**/*.tmp',
      'temp*', '!temp-keep/', 'out/', '!out/keep.txt', 'spaced\\ name.txt', '',
    ].join('\n'),
    'root-only.txt': 'ignored: anchored to the root\n',
    'sub/root-only.txt': 'kept: the anchor is the root, not sub/\n',
    'sub/deeper/secret.txt': 'ignored by .git/info/exclude at any depth\n',
    'secret.txt': 'ignored by .git/info/exclude\n',
    'app.log': 'ignored\n',
    'important.log': 'kept by negation\n',
    'build/out.js': 'ignored: directory pattern\n',
    'src/build': 'kept: a file named build is not a directory\n',
    'src/main.ts': 'export {};\n',
    'src/.gitignore': '*.gen.ts\n!keep.gen.ts\n/local.txt\nnested/\n',
    'src/a.gen.ts': 'ignored\n',
    'src/keep.gen.ts': 'kept\n',
    'src/deep/b.gen.ts': 'ignored: a pattern without a slash applies at every depth below src/\n',
    'src/local.txt': 'ignored\n',
    'src/deep/local.txt': 'kept: /local.txt is anchored to src/\n',
    'src/nested/x.ts': 'ignored\n',
    'nested/x.ts': 'kept: src/.gitignore does not reach outside src/\n',
    'lib/.gitignore': '!*.log\n',
    'lib/debug.log': 'kept: a deeper negation beats the root\'s *.log\n',
    'pkg/.gitignore': '!build/\n',
    'pkg/build/x.js': 'kept: pkg/.gitignore re-includes the build/ the root excluded\n',
    'temp1.txt': 'ignored\n',
    'temp-keep/a.txt': 'kept\n',
    'docs/readme.md': '# docs\n',
    'docs/c.tmp': 'ignored: ** matches zero directories\n',
    'docs/a/b/c.tmp': 'ignored\n',
    'out/keep.txt': 'ignored: a file cannot be re-included inside an excluded directory\n',
    'spaced name.txt': 'ignored: escaped space\n',
  };
  const expected = [
    '.gitignore', 'docs/readme.md', 'important.log', 'lib/.gitignore', 'lib/debug.log', 'nested/x.ts',
    'pkg/.gitignore', 'pkg/build/x.js', 'src/.gitignore', 'src/build', 'src/deep/local.txt',
    'src/keep.gen.ts', 'src/main.ts', 'sub/root-only.txt', 'temp-keep/a.txt',
  ];
  let root: string;

  before(async () => {
    root = await tempDir('git');
    await writeTree(root, gitTree);
    if (gitAvailable()) execFileSync('git', ['init', '-q', root]);
    await writeTree(root, { '.git/info/exclude': 'secret.txt\n' });
  });

  it('honours nested .gitignore files, negations, directory patterns and .git/info/exclude', async () => {
    const result = await discoverWorkspace([root]);
    assert.deepEqual(accepted(result), expected);
    assert.deepEqual(result.skipped, []);
    assert.ok(result.counts.ignored >= 12, `ignored count ${result.counts.ignored}`);
    assert.ok(!result.files.some((f) => f.relativePath.startsWith('.git/')));
  });

  it('agrees with git ls-files --exclude-standard', async (t) => {
    if (!gitAvailable()) return t.skip('git is not installed');
    const listed = execFileSync('git', ['-c', 'core.excludesFile=/dev/null', 'ls-files', '-co', '--exclude-standard', '-z'], { cwd: root, encoding: 'utf8' })
      .split('\0').filter(Boolean).sort();
    const result = await discoverWorkspace([root]);
    assert.deepEqual(accepted(result), listed);
  });

  it('lets .ignore override .gitignore and applies caller globs, VS Code record form included', async () => {
    const dir = await tempDir('globs');
    await writeTree(dir, {
      '.gitignore': '*.tmp\n',
      '.ignore': '!keep.tmp\nvendor/\n',
      'keep.tmp': 'kept: .ignore beats .gitignore\n',
      'other.tmp': 'ignored\n',
      'vendor/v.js': 'ignored by .ignore\n',
      'node_modules/pkg/index.js': 'excluded\n',
      'web/node_modules/x.js': 'excluded\n',
      'snapshots/a.snap': 'excluded\n',
      'fixtures/f.txt': 'kept: its glob is set to false\n',
      'src/a.ts': 'export const a = 1;\n',
      'src/a.js': 'excluded: a.ts is next to it\n',
      'src/b.js': 'kept: no b.ts\n',
      'src/c.generated.ts': 'excluded by the list form\n',
    });
    const result = await discoverWorkspace([{ path: dir, exclude: ['**/*.generated.ts'] }], {
      exclude: { '**/node_modules': true, '**/*.snap': true, '**/fixtures': false, '**/*.js': { when: '$(basename).ts' } },
    });
    assert.deepEqual(accepted(result), ['.gitignore', '.ignore', 'fixtures/f.txt', 'keep.tmp', 'src/a.ts', 'src/b.js']);
    assert.equal(result.counts.excluded, 5); // two node_modules directories, a.snap, a.js, c.generated.ts
    assert.equal(result.counts.ignored, 2); // other.tmp, vendor/

    const withoutIgnoreFiles = await discoverWorkspace([dir], { useIgnoreFiles: false });
    assert.ok(accepted(withoutIgnoreFiles).includes('vendor/v.js'));
  });
});

// --- skip reasons -----------------------------------------------------------------------

describe('skip reasons', () => {
  let root: string;
  let outside: string;
  let result: WorkspaceDiscovery;

  before(async () => {
    root = await tempDir('skips');
    outside = await tempDir('outside');
    await writeTree(outside, { 'ext.txt': 'reached through a link\n' });
    const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52]);
    const lateNul = Buffer.concat([Buffer.from('x'.repeat(700)), Buffer.from([0]), Buffer.from('tail\n')]);
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('hello, world\n', 'utf16le')]);
    await writeTree(root, {
      'ok.txt': 'plain text\n',
      'notes.md': `${'line\n'.repeat(20)}The @generated marker only counts near the top.\n`,
      'image.png': png,
      'late-nul.dat': lateNul,
      'big.txt': 'a\n'.repeat(600 * 1024), // 1.2 MB
      'bundle.js': `var x=${'1+'.repeat(100_000)}1;`, // one 200 KB line
      'dense.css': `${'.a{color:red;margin:0;padding:0;border:0}'.repeat(8)}\n`.repeat(20),
      'app.min.js': 'var a=1;\n',
      'app.js.map': '{"version":3}\n',
      'gen.go': '// Code generated by protoc-gen-go. DO NOT EDIT.\npackage x\n',
      'latin1.txt': Buffer.from('caf\xe9 au lait, cr\xe8me br\xfbl\xe9e, and a good deal of plain ASCII text\n', 'latin1'),
      'utf16.txt': utf16,
      'package-lock.json': '{}\n',
      'yarn.lock': '# yarn\n',
      'Cargo.lock': '# cargo\n',
      'poetry.lock': '# poetry\n',
      'sub/pnpm-lock.yaml': 'lockfileVersion: 9\n',
      'broken': { link: 'does-not-exist.txt' },
      'loop-a': { link: 'loop-b' },
      'loop-b': { link: 'loop-a' },
      'dir/up': { link: '..' },
      'src/real.ts': 'export const real = true;\n',
      'alias.ts': { link: 'src/real.ts' },
      'linked-src': { link: 'src' },
      'outside': { link: outside },
    });
    result = await discoverWorkspace([root]);
  });

  it('accepts text files, including ones reached through links', () => {
    assert.deepEqual(accepted(result), ['notes.md', 'ok.txt', 'outside/ext.txt', 'src/real.ts']);
  });

  it('reports every other file with its reason', () => {
    assert.deepEqual(skipsByPath(result), {
      'image.png': 'binary',
      'late-nul.dat': 'binary',
      'big.txt': 'too-large',
      'bundle.js': 'minified',
      'dense.css': 'minified',
      'app.min.js': 'minified',
      'app.js.map': 'minified',
      'gen.go': 'generated',
      'latin1.txt': 'invalid-utf8',
      'utf16.txt': 'invalid-utf8',
      'package-lock.json': 'lock-file',
      'yarn.lock': 'lock-file',
      'Cargo.lock': 'lock-file',
      'poetry.lock': 'lock-file',
      'sub/pnpm-lock.yaml': 'lock-file',
      'broken': 'broken-symlink',
      'loop-a': 'symlink-loop',
      'loop-b': 'symlink-loop',
      'dir/up': 'symlink-loop',
      'alias.ts': 'duplicate',
      'linked-src/real.ts': 'duplicate',
    });
    for (const s of result.skipped) assert.ok(s.detail.length > 0, `${s.path} has a detail`);
    const byPath = new Map(result.skipped.map((s) => [s.path, s]));
    assert.match(byPath.get('late-nul.dat')!.detail, /NUL byte at offset 700/);
    assert.match(byPath.get('latin1.txt')!.detail, /near byte 3/);
    assert.match(byPath.get('utf16.txt')!.detail, /UTF-16 LE/);
    assert.match(byPath.get('bundle.js')!.detail, /line 1 is 200008 bytes/);
    assert.match(byPath.get('alias.ts')!.detail, /same file as src\/real\.ts/);
    assert.equal(result.counts.skipped, result.skipped.length);
  });

  it('honours a smaller size limit and longer lines when asked', async () => {
    const relaxed = await discoverWorkspace([root], {
      maxFileSize: 4 * 1024 * 1024, maxLineLength: 1_000_000, maxAverageLineLength: 1_000_000, skipGenerated: false,
    });
    assert.ok(accepted(relaxed).includes('big.txt'));
    assert.ok(accepted(relaxed).includes('bundle.js'));
    assert.ok(accepted(relaxed).includes('gen.go'));
    const strict = await discoverWorkspace([root], { maxFileSize: 10 });
    assert.equal(skipsByPath(strict)['notes.md'], 'too-large');
  });

  it('reports a file or directory that vanishes between listing and reading as unreadable', async () => {
    const dir = await tempDir('vanish');
    await writeTree(dir, { 'stays.txt': 'here\n', 'goes.txt': 'gone\n', 'gone-dir/x.txt': 'gone\n' });
    const r = await discoverWorkspace([dir], {
      fs: {
        loadFile: async (file, maxBytes) => {
          if (file.endsWith('goes.txt')) await fsp.rm(file);
          return nodeDiscoveryFs.loadFile(file, maxBytes);
        },
        readdir: async (d) => {
          if (d.endsWith('gone-dir')) await fsp.rm(d, { recursive: true });
          return fsp.readdir(d, { withFileTypes: true });
        },
      },
    });
    assert.deepEqual(accepted(r), ['stays.txt']);
    assert.deepEqual(skipsByPath(r), { 'goes.txt': 'unreadable', 'gone-dir/': 'unreadable' });
    assert.match(r.skipped[0].detail, /ENOENT/);
  });

  it('reports a chmod 000 file as unreadable', async (t) => {
    const dir = await tempDir('chmod');
    await writeTree(dir, { 'open.txt': 'readable\n', 'closed.txt': 'secret\n' });
    await fsp.chmod(path.join(dir, 'closed.txt'), 0o000);
    if (process.getuid?.() !== 0) {
      const r = await discoverWorkspace([dir]);
      assert.equal(skipsByPath(r)['closed.txt'], 'unreadable');
      return;
    }
    // root reads chmod 000 files, so the check runs as `nobody` in a child process.
    await fsp.chmod(dir, 0o755);
    const script = [
      `const m = await import(${JSON.stringify(path.resolve(__dirname, '../../engine/memory/discovery.ts'))});`,
      'const discover = m.discoverWorkspace ?? m.default.discoverWorkspace;',
      'const r = await discover([process.argv[1]]);',
      'console.log(JSON.stringify(r.skipped));',
    ].join('\n');
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], {
      uid: 65534, gid: 65534, cwd: path.resolve(__dirname, '../..'), encoding: 'utf8', timeout: 30_000,
    });
    if (child.error || child.status !== 0) {
      return t.skip(`running as root and could not re-run as nobody (${child.error?.message ?? child.stderr.trim().split('\n').pop()}); the EACCES path is still covered by the vanishing-file test`);
    }
    const skipped = JSON.parse(child.stdout) as SkippedFile[];
    assert.deepEqual(skipped.map((s) => [s.path, s.reason]), [['closed.txt', 'unreadable']]);
    assert.match(skipped[0].detail, /permission denied \(EACCES\)/);
  });
});

// --- multi-root -------------------------------------------------------------------------

describe('multi-root workspaces', () => {
  it('prefixes stream paths with unique folder names and keeps overlapping files once', async () => {
    const base = await tempDir('multi');
    const one = path.join(base, 'one', 'app');
    const two = path.join(base, 'two', 'app');
    await writeTree(one, { 'main.ts': 'one\n', 'lib/util.ts': 'shared\n', '.gitignore': 'secret/\n', 'secret/k.txt': 'x\n' });
    await writeTree(two, { 'main.ts': 'two\n', 'dist/out.js': 'excluded for this folder only\n' });
    const result = await discoverWorkspace([
      one,
      { path: two, exclude: ['dist'] },
      { path: path.join(one, 'lib'), name: 'lib' },
      path.join(base, 'missing'),
    ]);
    assert.deepEqual(result.folders.map((f) => f.name), ['app', 'app (2)', 'lib', 'missing']);
    assert.deepEqual(accepted(result), ['app (2)/main.ts', 'app/.gitignore', 'app/lib/util.ts', 'app/main.ts']);
    assert.deepEqual(skipsByPath(result), { 'lib/util.ts': 'duplicate', 'missing/': 'unreadable' });
    const util = result.files.find((f) => f.streamPath === 'app/lib/util.ts')!;
    assert.equal(util.folder, 'app');
    assert.equal(util.relativePath, 'lib/util.ts');
    assert.equal(util.absolutePath, path.join(one, 'lib', 'util.ts'));
    assert.equal(result.counts.excluded, 1);
  });
});

// --- order ------------------------------------------------------------------------------

describe('stream order', () => {
  it('puts the oldest files first and the newest last, ties by path, the same every time', async () => {
    const dir = await tempDir('order');
    const names = ['z/old.ts', 'b.ts', 'a.ts', 'd.ts', 'c.ts', 'new.ts'];
    await writeTree(dir, Object.fromEntries(names.map((n) => [n, `// ${n}\n`])));
    const at = async (rel: string, seconds: number): Promise<void> => fsp.utimes(path.join(dir, rel), seconds, seconds);
    await at('z/old.ts', 1_000);
    for (const n of ['b.ts', 'a.ts', 'd.ts', 'c.ts']) await at(n, 2_000);
    await at('new.ts', 3_000);

    const order = async (): Promise<string[]> => (await discoverWorkspace([dir], { concurrency: 3 })).files.map((f) => f.streamPath);
    const first = await order();
    assert.deepEqual(first, ['z/old.ts', 'a.ts', 'b.ts', 'c.ts', 'd.ts', 'new.ts']);
    assert.deepEqual(await order(), first);

    // Editing a file moves only it, to the end: the stream before it is unchanged.
    await at('b.ts', 4_000);
    assert.deepEqual(await order(), ['z/old.ts', 'a.ts', 'c.ts', 'd.ts', 'new.ts', 'b.ts']);
  });

  it('compares mtimes first, then paths by code units', () => {
    assert.ok(compareStreamOrder({ mtimeMs: 1, streamPath: 'z' }, { mtimeMs: 2, streamPath: 'a' }) < 0);
    assert.ok(compareStreamOrder({ mtimeMs: 1, streamPath: 'B' }, { mtimeMs: 1, streamPath: 'a' }) < 0);
    assert.equal(compareStreamOrder({ mtimeMs: 1, streamPath: 'a' }, { mtimeMs: 1, streamPath: 'a' }), 0);
  });
});

// --- reading and headers --------------------------------------------------------------

describe('reading files for the stream', () => {
  it('re-reads a file, tells whether it changed, and re-checks it', async () => {
    const dir = await tempDir('read');
    await writeTree(dir, { 'a.ts': 'export const a = 1;\n' });
    const [file] = (await discoverWorkspace([dir])).files;
    assert.match(file.sha256, /^[0-9a-f]{64}$/);
    assert.equal(file.size, 20);

    const same = await readWorkspaceFile(file);
    assert.equal(same.text, 'export const a = 1;\n');
    assert.equal(same.changed, false);

    await fsp.writeFile(file.absolutePath, 'export const a = 2;\n');
    const edited = await readWorkspaceFile(file);
    assert.equal(edited.changed, true);
    assert.notEqual(edited.file.sha256, file.sha256);

    await fsp.writeFile(file.absolutePath, Buffer.from([0x41, 0, 0x42]));
    await assert.rejects(readWorkspaceFile(file), (err: unknown) =>
      err instanceof WorkspaceFileSkippedError && err.skip.reason === 'binary');

    await fsp.rm(file.absolutePath);
    await assert.rejects(readWorkspaceFile(file), (err: unknown) =>
      err instanceof WorkspaceFileSkippedError && err.skip.reason === 'unreadable' && /a\.ts/.test(err.message));
  });

  it('renders the header a file enters the stream with', () => {
    assert.equal(DEFAULT_FILE_HEADER, '<|file|> {path}\n');
    assert.equal(renderFileHeader('src/a.ts'), '<|file|> src/a.ts\n');
    assert.equal(renderFileHeader({ streamPath: 'app/src/a.ts', folder: 'app' }, '### {path} ({folder})\n'), '### app/src/a.ts (app)\n');
    assert.equal(renderFileHeader('a.ts', (p) => `<file path="${p}">\n`), '<file path="a.ts">\n');
    assert.equal(renderFileHeader('odd\nname.ts'), '<|file|> odd\\nname.ts\n');
    assert.equal(renderFileHeader('$&.ts'), '<|file|> $&.ts\n');
  });
});

// --- scale and cancellation -----------------------------------------------------------

describe('a 50,000-file workspace', () => {
  const TOP = 100, SUB = 10, PER = 50; // 50,000 files
  const DEEP = 120; // plus a chain of directories this deep, one file each
  let root: string;
  let wroteIn = 0;

  before(async () => {
    root = await tempDir('scale');
    const started = performance.now();
    // Synchronous writes: the fastest way to make 50,000 files, and nothing else runs meanwhile.
    for (let i = 0; i < TOP; i++) {
      for (let j = 0; j < SUB; j++) {
        const dir = path.join(root, `pkg${i}`, `mod${j}`);
        mkdirSync(dir, { recursive: true });
        for (let k = 0; k < PER; k++) writeFileSync(path.join(dir, `f${k}.ts`), `export const v${k} = ${k};\n`);
      }
    }
    for (let i = 0; i < TOP; i += 10) await fsp.writeFile(path.join(root, `pkg${i}`, '.gitignore'), 'mod9/\n');
    let deep = root;
    for (let i = 0; i < DEEP; i++) {
      deep = path.join(deep, `d${i}`);
      await fsp.mkdir(deep);
      await fsp.writeFile(path.join(deep, 'leaf.txt'), `depth ${i}\n`);
    }
    wroteIn = (performance.now() - started) / 1000;
  });

  it('is discovered with progress while the event loop keeps ticking', async (t) => {
    const progress: DiscoveryProgress[] = [];
    let ticks = 0;
    let last = performance.now();
    let longestGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
      ticks++;
    }, 5);
    const started = performance.now();
    let result: WorkspaceDiscovery;
    try {
      result = await discoverWorkspace([root], { onProgress: (p) => progress.push(p), progressIntervalMs: 50 });
    } finally {
      clearInterval(timer);
    }
    const seconds = (performance.now() - started) / 1000;
    const ignoredDirs = TOP / 10; // mod9 under every tenth package
    const expected = TOP * SUB * PER - ignoredDirs * PER + DEEP + TOP / 10;
    t.diagnostic(`wrote the tree in ${wroteIn.toFixed(1)} s; discovered ${result.files.length} files in ${seconds.toFixed(2)} s`);
    t.diagnostic(`${progress.length} progress reports; a 5 ms timer ticked ${ticks} times, longest gap ${longestGap.toFixed(0)} ms`);

    assert.equal(result.files.length, expected);
    assert.equal(result.counts.ignored, ignoredDirs);
    assert.ok(result.files.some((f) => f.relativePath.split('/').length === DEEP + 1), 'the deepest leaf is found');
    assert.ok(progress.length >= 3, 'progress is reported while walking');
    assert.ok(progress.slice(0, -1).every((p) => !p.done) && progress.at(-1)!.done);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].seen >= progress[i - 1].seen);
    assert.equal(progress.at(-1)!.accepted, expected);
    assert.ok(ticks > 0, 'a 5 ms interval ticked during discovery');
    assert.ok(longestGap < 1000, `the event loop was blocked for ${longestGap.toFixed(0)} ms`);
  });

  it('stops with an AbortError when cancelled', async (t) => {
    const controller = new AbortController();
    let reportsAfterAbort = 0;
    const started = performance.now();
    await assert.rejects(
      discoverWorkspace([root], {
        signal: controller.signal,
        progressIntervalMs: 0,
        onProgress: (p) => {
          if (controller.signal.aborted) reportsAfterAbort++;
          else if (p.seen >= 1000) controller.abort();
        },
      }),
      (err: unknown) => err instanceof Error && err.name === 'AbortError' && /cancelled after \d+ files/.test(err.message),
    );
    t.diagnostic(`rejected ${((performance.now() - started) / 1000).toFixed(2)} s after the start`);
    assert.ok(reportsAfterAbort < 100, `${reportsAfterAbort} progress reports after the abort`);

    await assert.rejects(discoverWorkspace([root], { signal: AbortSignal.abort() }), { name: 'AbortError' });
  });
});
