// Where a source the engine cites lives on disk. Sources come from model output and the memory, so
// they are untrusted: only paths inside an open workspace folder resolve. No vscode import.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface FolderRef {
  name: string;
  path: string;
}

/** The absolute file for a source path (stream path, folder-relative or absolute), or null. */
export function resolveSourcePath(source: string, folders: readonly FolderRef[]): string | null {
  if (!source || source.includes('\0') || folders.length === 0) return null;
  const inside = (abs: string): string | null => {
    const resolved = path.resolve(abs);
    return folders.some((f) => resolved === path.resolve(f.path) || resolved.startsWith(path.resolve(f.path) + path.sep)) ? resolved : null;
  };
  if (path.isAbsolute(source)) return inside(source);
  const rel = source.replace(/\\/g, '/').replace(/^\.\//, '');
  if (folders.length > 1) {
    const slash = rel.indexOf('/');
    const head = slash >= 0 ? rel.slice(0, slash) : rel;
    const folder = folders.find((f) => f.name === head);
    if (folder && slash >= 0) return inside(path.join(folder.path, rel.slice(slash + 1)));
  }
  for (const f of folders) {
    const candidate = inside(path.join(f.path, rel));
    if (candidate && (folders.length === 1 || fs.existsSync(candidate))) return candidate;
  }
  return null;
}

