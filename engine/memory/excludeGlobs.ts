// The caller's excludes: VS Code's `files.exclude` / `search.exclude` globs, matched with
// picomatch against paths relative to a workspace folder.

import * as path from 'node:path';
import picomatch from 'picomatch';

/**
 * Globs relative to a workspace folder: a list, or the object of VS Code's `files.exclude`
 * and `search.exclude` ({"**\/node_modules": true, "**\/*.js": {"when": "$(basename).ts"}}).
 * A glob that matches a directory leaves out everything below it.
 */
export type ExcludeGlobs = readonly string[] | Readonly<Record<string, boolean | { readonly when: string }>>;

export type ExcludeMatcher = (rel: string, isDirectory: boolean, siblings: () => ReadonlySet<string>) => boolean;

export interface ExcludeEntry {
  readonly glob: string;
  /** VS Code's sibling clause: excluded only if a sibling named like this exists. */
  readonly when?: string;
}

export function excludeEntries(globs: ExcludeGlobs | undefined): ExcludeEntry[] {
  if (!globs) return [];
  if (isGlobList(globs)) return globs.map((glob) => ({ glob }));
  return Object.entries(globs).flatMap(([glob, value]): ExcludeEntry[] => {
    if (value === true) return [{ glob }];
    if (value && typeof value === 'object' && typeof value.when === 'string') return [{ glob, when: value.when }];
    return [];
  });
}

function isGlobList(globs: ExcludeGlobs): globs is readonly string[] {
  return Array.isArray(globs);
}

export function compileExclude(entries: readonly ExcludeEntry[], nocase: boolean): ExcludeMatcher {
  const glob = (g: string): string => g.replace(/^\.\//, '');
  const always = entries.filter((e) => e.when === undefined).map((e) => glob(e.glob));
  const plain = always.length > 0 ? picomatch(always, { dot: true, nocase }) : undefined;
  const conditional = entries.filter((e) => e.when !== undefined)
    .map((e) => ({ test: picomatch(glob(e.glob), { dot: true, nocase }), when: e.when as string }));
  if (!plain && conditional.length === 0) return () => false;
  return (rel, isDirectory, siblings) => {
    if (plain && (plain(rel) || (isDirectory && plain(`${rel}/`)))) return true;
    if (conditional.length === 0) return false;
    const name = path.posix.basename(rel);
    const dot = name.lastIndexOf('.');
    const basename = dot > 0 ? name.slice(0, dot) : name;
    return conditional.some((c) => c.test(rel) && siblings().has(c.when.replaceAll('$(basename)', basename)));
  };
}
