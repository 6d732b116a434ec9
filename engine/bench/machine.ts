// What a benchmark ran on: enough to judge whether two reports can be compared.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryBytes: number;
  os: string;
  node: string;
  onnxruntime: string;
  transformersJs: string | null;
  /** GPUs nvidia-smi lists (empty where there is none or no nvidia-smi). */
  gpus: string[];
  /** The load average when the run started: other work on the machine skews timings. */
  loadAverage: number[];
}

function packageVersion(name: string): string | null {
  try {
    const file = require.resolve(`${name}/package.json`);
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version?: string }).version ?? null;
  } catch {
    // Packages whose "exports" hide package.json: find it beside the resolved entry.
    try {
      let dir = path.dirname(require.resolve(name));
      while (dir !== path.dirname(dir)) {
        const pj = path.join(dir, 'package.json');
        if (fs.existsSync(pj)) {
          const json = JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string; version?: string };
          if (json.name === name) return json.version ?? null;
        }
        dir = path.dirname(dir);
      }
    } catch {
      /* not installed */
    }
    return null;
  }
}

/** Names and memory of the NVIDIA GPUs, or [] without nvidia-smi. */
export function nvidiaGpus(): string[] {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
    return out.split('\n').map((l) => l.trim()).filter(Boolean);
  } catch {
    return [];
  }
}

/** Device memory in use on GPU `index` (bytes), from nvidia-smi; null where it cannot be asked. */
export function nvidiaMemoryUsed(index = 0): number | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits', `--id=${index}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
    const mib = Number(out.trim());
    return Number.isFinite(mib) ? mib * 2 ** 20 : null;
  } catch {
    return null;
  }
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  let osName = `${os.type()} ${os.release()} ${os.arch()}`;
  try {
    const rel = fs.readFileSync('/etc/os-release', 'utf8');
    const pretty = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(rel);
    if (pretty) osName = `${pretty[1]} (${os.type()} ${os.release()} ${os.arch()})`;
  } catch {
    /* not Linux */
  }
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryBytes: os.totalmem(),
    os: osName,
    node: process.version,
    onnxruntime: packageVersion('onnxruntime-node') ?? 'unknown',
    transformersJs: packageVersion('@huggingface/transformers'),
    gpus: nvidiaGpus(),
    loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
  };
}
