// Test harness for the real-VS-Code tests (../shared/docs/vscode-e2e.md): the VS Code server bundled in
// code-server (scripts/vscode-server.mjs), driven by playwright-core in Debian's Chromium.
//
// Every wait is bounded; every session writes what it saw (page console, the workbench's own logs, the
// server log, screenshots) under test-output/vscode/<name>/, and its server and browser are always ended.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import { chromium, type Browser, type BrowserContext, type Frame, type FrameLocator, type Page } from 'playwright-core';
import { startServer, vscodeTestPaths, workbenchUrl, type ServerHandle } from '../../scripts/vscode-server.mjs';

export const repoRoot = path.resolve(__dirname, '..', '..');
export const outputRoot = path.join(repoRoot, 'test-output', 'vscode');
export const fixtureWorkspace = path.join(__dirname, 'fixtures', 'workspace');
export const suiteBundle = path.join(repoRoot, 'out', 'test', 'index.js');
export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

/** Throws a one-line reason when the setup script has not run (or the extension is not built). */
export function requireSetup(needDist = true): void {
  const p = vscodeTestPaths(repoRoot);
  const missing = [
    [p.node24, 'Node 24'],
    [p.serverMain, 'the VS Code server'],
    [CHROMIUM, 'Chromium'],
  ].filter(([file]) => !fs.existsSync(file));
  if (missing.length) throw new Error(`${missing.map(([f, w]) => `${w} (${f})`).join(', ')} missing: run bash scripts/vscode-e2e-setup.sh`);
  if (needDist && !fs.existsSync(path.join(repoRoot, 'dist', 'extension.js'))) throw new Error('dist/extension.js missing: run npm run build');
  const demo = path.join(repoRoot, 'media', 'models', 'code-llama-19m', 'config.json');
  if (needDist && !fs.existsSync(demo)) throw new Error(`the bundled demo model is missing (${demo}): the extension cannot answer without it`);
}

/** Bundles the Mocha suites under test/vscode/suite/ into out/test/index.js (vscode and mocha stay external). */
export async function buildSuiteBundle(): Promise<string> {
  await esbuild.build({
    entryPoints: [path.join(__dirname, 'suite', 'index.ts')],
    outfile: suiteBundle,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    sourcemap: 'inline',
    external: ['vscode', 'mocha'],
    logLevel: 'warning',
  });
  return suiteBundle;
}

/**
 * A fresh output folder for one session: test-output/vscode/<name>/, or <name>-<pid>/ while another live
 * process still owns <name>/ (two runs in one working tree must not delete each other's servers' data).
 */
export function sessionDir(name: string): string {
  let dir = path.join(outputRoot, name);
  const owner = Number(fs.existsSync(path.join(dir, 'owner.pid')) ? fs.readFileSync(path.join(dir, 'owner.pid'), 'utf8') : 0);
  if (owner && owner !== process.pid && processAlive(owner)) dir = `${dir}-${process.pid}`;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'owner.pid'), String(process.pid));
  return dir;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Copies the fixture workspace into dir/workspace (tests edit it) and adds `extraFiles` (path → text). */
export function prepareWorkspace(dir: string, extraFiles: Record<string, string> = {}): string {
  const ws = path.join(dir, 'workspace');
  fs.cpSync(fixtureWorkspace, ws, { recursive: true });
  for (const [rel, text] of Object.entries(extraFiles)) {
    fs.mkdirSync(path.dirname(path.join(ws, rel)), { recursive: true });
    fs.writeFileSync(path.join(ws, rel), text);
  }
  return ws;
}

/** Rejects with `what` after `ms`; the timer never keeps the process alive. */
export async function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s: ${what}`)), ms);
        timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface SessionOptions {
  name: string;
  workspace: string;
  /** Folder holding the extension under development; null when it is installed (a VSIX). Default: the repo. */
  extensionDevelopmentPath?: string | null;
  extensionTestsPath?: string;
  /** Environment of the server, inherited by the extension host and the engine it spawns. */
  env?: Record<string, string>;
  /** Reuse this server data folder (e.g. one with a VSIX installed) instead of dir/data. */
  dataDir?: string;
  viewport?: { width: number; height: number };
}

interface AutomationLog {
  relativePath: string;
  contents: string;
}

/** One VS Code server + one Chromium page on its workbench. */
export class VscodeSession {
  readonly consoleLines: string[] = [];
  readonly exitCode: Promise<number>;
  private resolveExit!: (code: number) => void;
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly server: ServerHandle,
    readonly browser: Browser,
    readonly context: BrowserContext,
    readonly page: Page,
  ) {
    this.exitCode = new Promise((resolve) => (this.resolveExit = resolve));
  }

  static async open(dir: string, options: SessionOptions): Promise<VscodeSession> {
    requireSetup();
    const dataDir = options.dataDir ?? path.join(dir, 'data');
    const server = await startServer({ dataDir, env: options.env, timeoutMs: 60_000 });
    let browser: Browser | undefined;
    try {
      browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, timeout: 60_000 });
      const context = await browser.newContext({ viewport: options.viewport ?? { width: 1440, height: 900 } });
      context.setDefaultTimeout(30_000);
      const page = await context.newPage();
      const session = new VscodeSession(dir, server, browser, context, page);
      await session.attach(options);
      return session;
    } catch (e) {
      await browser?.close().catch(() => undefined);
      await server.stop();
      throw e;
    }
  }

  private async attach(options: SessionOptions): Promise<void> {
    const { page } = this;
    const stamp = () => new Date().toISOString().slice(11, 23);
    page.on('console', (m) => this.consoleLines.push(`${stamp()} [${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => this.consoleLines.push(`${stamp()} [pageerror] ${e.stack ?? e.message}`));
    page.on('crash', () => this.consoleLines.push(`${stamp()} [crash] the page crashed`));
    await page.exposeFunction('codeAutomationLog', (level: string, args: unknown) => {
      this.consoleLines.push(`${stamp()} [automation:${level}] ${Array.isArray(args) ? args.join(' ') : String(args)}`);
    });
    await page.exposeFunction('codeAutomationExit', (code: number, logs?: AutomationLog[]) => {
      this.saveAutomationLogs(logs);
      this.resolveExit(code);
    });
    const extensionDevelopmentPath = options.extensionDevelopmentPath === undefined ? repoRoot : options.extensionDevelopmentPath ?? undefined;
    const url = workbenchUrl(this.server, { folder: options.workspace, extensionDevelopmentPath, extensionTestsPath: options.extensionTestsPath });
    this.consoleLines.push(`${stamp()} [harness] open ${url}`);
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  }

  private saveAutomationLogs(logs: AutomationLog[] | undefined): void {
    if (!Array.isArray(logs)) return;
    for (const log of logs) {
      const rel = String(log.relativePath ?? '').replace(/^[/\\]+/, '');
      if (!rel || rel.includes('..')) continue;
      const file = path.join(this.dir, 'workbench-logs', rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, String(log.contents ?? ''));
    }
  }

  /** Waits for the workbench to be laid out. */
  async waitForWorkbench(timeoutMs = 90_000): Promise<void> {
    await this.page.locator('.monaco-workbench').waitFor({ state: 'visible', timeout: timeoutMs });
  }

  /** Runs a command from the palette (F1), reopening it while the command is not listed yet. */
  async runCommand(title: string, timeoutMs = 60_000): Promise<void> {
    const { page } = this;
    const deadline = Date.now() + timeoutMs;
    const input = page.locator('.quick-input-widget input');
    for (;;) {
      await page.keyboard.press('Escape');
      await page.keyboard.press('F1');
      await input.waitFor({ state: 'visible', timeout: 10_000 });
      await input.fill(`>${title}`);
      // The palette lists what was registered when it opened: a missing row means "not yet".
      const row = page.locator('.quick-input-widget [role=option]', { hasText: title }).first();
      try {
        await row.waitFor({ state: 'visible', timeout: 3_000 });
        await page.keyboard.press('Enter');
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`the command palette never listed "${title}" within ${timeoutMs / 1000} s`, { cause: e });
      }
    }
  }

  /** The content frame of the visible webview whose outer iframe matches `outer` (default: the first ready one). */
  webview(outer = 'iframe.webview.ready'): FrameLocator {
    return this.page.frameLocator(outer).frameLocator('iframe#active-frame');
  }

  /**
   * The content frame of the webview that contains `selector`. A Frame, not a FrameLocator by index: it
   * stays the same frame while other webviews open and close around it.
   */
  async webviewWith(selector: string, timeoutMs = 60_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const frame of this.page.frames()) {
        if (frame === this.page.mainFrame() || frame.isDetached()) continue;
        if ((await frame.locator(selector).count().catch(() => 0)) > 0) return frame;
      }
      if (Date.now() > deadline) throw new Error(`no webview contains ${selector} after ${timeoutMs / 1000} s (${this.page.frames().length - 1} frames)`);
      await this.page.waitForTimeout(500);
    }
  }

  /**
   * Waits until the Titan status bar item's text matches `want`; fails at once when the item turns to its
   * error colours instead (no model could be opened, or the engine stopped for good): no point waiting on.
   */
  async waitForStatusBar(want: RegExp, timeoutMs = 300_000): Promise<string> {
    const handle = await this.page.waitForFunction(
      (w) => {
        const item = Array.from(document.querySelectorAll('.statusbar-item')).find((e) => e.textContent?.includes('Titan'));
        const text = item?.textContent?.trim() ?? '';
        if (new RegExp(w).test(text)) return { ok: true, text };
        if (item?.classList.contains('error-kind')) return { ok: false, text: `${text} (${item.getAttribute('aria-label') ?? ''})` };
        return false;
      },
      want.source,
      { timeout: timeoutMs, polling: 250 },
    );
    const { ok, text } = (await handle.jsonValue()) as { ok: boolean; text: string };
    if (!ok) throw new Error(`the status bar shows an error: "${text}" (waiting for ${want})`);
    return text;
  }

  /** Pids of the engine processes (dist/engine/server.js) in this server's process group. */
  enginePids(): number[] {
    const ps = spawnSync('ps', ['-eo', 'pid=,pgid=,args='], { encoding: 'utf8' });
    return ps.stdout
      .split('\n')
      .map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => !!m && Number(m[2]) === this.server.pid && /engine[/\\]server\.js/.test(m[3]))
      .map((m) => Number(m[1]));
  }

  async screenshot(file: string): Promise<string> {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await this.page.screenshot({ path: file, timeout: 30_000 });
    return file;
  }

  /** Writes the page console (and a screenshot when possible) into the session folder; returns a short summary. */
  async dump(reason: string): Promise<string> {
    const consoleFile = path.join(this.dir, 'console.log');
    fs.writeFileSync(consoleFile, `${reason}\n${this.consoleLines.join('\n')}\n`);
    let shot = '';
    if (!this.page.isClosed()) shot = await this.screenshot(path.join(this.dir, 'failure.png')).catch(() => '');
    const serverLog = fs.existsSync(this.server.logFile) ? fs.readFileSync(this.server.logFile, 'utf8') : '';
    const tail = (text: string, n: number) => text.trim().split('\n').slice(-n).join('\n');
    const titanLog = extensionLog(this.server.dataDir);
    return [
      `${reason}`,
      `page console: ${consoleFile}${shot ? `, screenshot: ${shot}` : ''}, server log: ${this.server.logFile}${titanLog ? `, extension log: ${titanLog}` : ''}`,
      '--- last console lines', tail(this.consoleLines.join('\n'), 25),
      '--- last server log lines', tail(serverLog, 15),
      ...(titanLog ? ['--- last extension log lines', tail(fs.readFileSync(titanLog, 'utf8'), 25)] : []),
    ].join('\n');
  }

  /** Closes the browser and ends the server's process group; safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    fs.writeFileSync(path.join(this.dir, 'console.log'), `${this.consoleLines.join('\n')}\n`);
    await bounded(this.browser.close(), 20_000, 'closing Chromium').catch(() => undefined);
    const gone = await this.server.stop();
    if (!gone) throw new Error(`the VS Code server's process group ${this.server.pid} survived SIGKILL`);
  }
}

/** One Mocha test as the suite's runner (test/vscode/suite/index.ts) reports it. */
export interface MochaTestResult {
  title: string;
  fullTitle: string;
  state: 'passed' | 'failed' | 'pending';
  durationMs: number;
  error?: string;
  notes?: string[];
}
export interface MochaResults {
  tests: MochaTestResult[];
  passes: number;
  failures: number;
  pending: number;
  durationMs: number;
}

/** Runs the Mocha bundle inside the real extension host; resolves with the exit code and the Mocha results. */
export async function runExtensionHostTests(options: {
  name: string;
  workspace: (dir: string) => string;
  env?: Record<string, string>;
  grep?: string;
  timeoutMs: number;
}): Promise<{ exitCode: number; results: MochaResults | null; dir: string; report: string }> {
  requireSetup();
  const dir = sessionDir(options.name);
  const workspace = options.workspace(dir);
  const bundle = await buildSuiteBundle();
  const resultsFile = path.join(dir, 'mocha-results.json');
  const env: Record<string, string> = {
    ...options.env,
    TITAN_E2E_RESULTS: resultsFile,
    TITAN_E2E_WORKSPACE: workspace,
    TITAN_E2E_OUTPUT: dir,
  };
  if (options.grep) env.TITAN_E2E_GREP = options.grep;
  const session = await VscodeSession.open(dir, { name: options.name, workspace, extensionTestsPath: bundle, env });
  let exitCode = -1;
  let report = '';
  try {
    exitCode = await bounded(session.exitCode, options.timeoutMs, 'the extension-host tests to finish (codeAutomationExit)');
  } catch (e) {
    report = await session.dump((e as Error).message);
  } finally {
    await session.close();
  }
  const results = fs.existsSync(resultsFile) ? (JSON.parse(fs.readFileSync(resultsFile, 'utf8')) as MochaResults) : null;
  if (exitCode !== 0 && !report) report = await reportFromFiles(session, `extension-host tests exited with ${exitCode}`);
  return { exitCode, results, dir, report };
}

async function reportFromFiles(session: VscodeSession, reason: string): Promise<string> {
  const consoleFile = path.join(session.dir, 'console.log');
  const titanLog = extensionLog(session.server.dataDir);
  return `${reason}\npage console: ${consoleFile}, workbench logs: ${path.join(session.dir, 'workbench-logs')}, server log: ${session.server.logFile}${titanLog ? `, extension log: ${titanLog}` : ''}`;
}

/** The newest Titan output channel log ("Titan.log") the extension host wrote under a server data folder. */
export function extensionLog(dataDir: string): string | null {
  const logs = path.join(dataDir, 'user', 'logs');
  if (!fs.existsSync(logs)) return null;
  const found = (fs.readdirSync(logs, { recursive: true }) as string[])
    .filter((f) => path.basename(f) === 'Titan.log')
    .map((f) => path.join(logs, f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  return found[0] ?? null;
}

/**
 * Builds the VSIX into `outFile` with the project's own packaging command (`npm run package-vsix`, which
 * runs vsce), passing `--out`. Throws with the command's output when it fails.
 */
export async function buildVsix(outFile: string, timeoutMs = 10 * 60_000): Promise<string> {
  fs.rmSync(outFile, { force: true });
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
  const [cmd, args] = pkg.scripts?.['package-vsix']
    ? ['npm', ['run', '--silent', 'package-vsix', '--', '--out', outFile]]
    : ['npx', ['--no-install', 'vsce', 'package', '--out', outFile]];
  const r = spawnSync(cmd, args, { cwd: repoRoot, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' } });
  if (r.status !== 0 || !fs.existsSync(outFile)) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${`${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-30).join('\n')}`);
  }
  return outFile;
}
