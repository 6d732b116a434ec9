// Ignore rules as git and ripgrep read them, for one workspace folder.
//
// `ignore` implements the pattern language of one .gitignore whose paths are relative to
// its own directory. A tree has many such files, and git lets a deeper one override a
// shallower one ("!build/" in pkg/.gitignore re-includes pkg/build that the root's "build/"
// excluded). We keep that by rebasing each file's patterns onto the folder root and handing
// one `ignore` instance the whole chain from the root down, in precedence order: for a
// given path the last matching pattern wins, and deeper files come later. The rebasing is
// the only gitignore syntax we touch; matching is left to `ignore`.

import ignore, { type Ignore } from 'ignore';

export type RulesSource = 'gitignore' | 'ignore' | 'exclude';

// Rewrites one line of a rules file that lives in `base` (a POSIX path relative to the
// folder root, '' for the root) so that it means the same thing relative to the root.
// Returns undefined for blank lines and comments.
//
//   in a/.gitignore:  foo      ->  a/**/foo    no slash: matches at any depth below a/
//                     /foo     ->  a/foo       a slash anchors it to a/
//                     b/*.js   ->  a/b/*.js
//                     !keep/   ->  !a/**/keep/
export function rebasePattern(line: string, base: string): string | undefined {
  if (line.trim() === '' || line.startsWith('#')) return undefined;
  if (base === '') return line;
  let body = line;
  let negated = false;
  if (body.startsWith('!')) {
    negated = true;
    body = body.slice(1);
  }
  // "\!x" and "\#x" escape a leading ! or #; once a prefix is in front they are literal anyway.
  if (body.startsWith('\\!') || body.startsWith('\\#')) body = body.slice(1);
  // A trailing slash only says "directories only"; a slash anywhere else anchors the pattern.
  const anchored = body.replace(/\/$/, '').includes('/');
  if (body.replace(/\/$/, '') === '') return undefined;
  const rebased = anchored ? `${escapeGlob(base)}/${body.replace(/^\//, '')}` : `${escapeGlob(base)}/**/${body}`;
  return negated ? `!${rebased}` : rebased;
}

/** A directory name taken literally inside a gitignore pattern. */
function escapeGlob(path: string): string {
  return path.replace(/[\\*?[\]]/g, '\\$&').replace(/ $/, '\\ ');
}

/** The rules in force in one directory: its own files' patterns after its ancestors'. */
export class IgnoreRules {
  private matcherCache?: Ignore;

  private constructor(
    // .git/info/exclude and .gitignore patterns, shallow to deep (git's own precedence).
    private readonly gitPatterns: readonly string[],
    // .ignore patterns, shallow to deep. ripgrep lets any .ignore match win over any
    // .gitignore match, so these always come after the git chain.
    private readonly ignorePatterns: readonly string[],
    private readonly ignoreCase: boolean,
  ) {}

  static empty(ignoreCase: boolean): IgnoreRules {
    return new IgnoreRules([], [], ignoreCase);
  }

  /**
   * The rules for the directory `base` (relative to the folder root), given the text of the
   * rules files it holds. Returns `this` when it holds none, so siblings share one matcher.
   */
  extend(base: string, files: ReadonlyArray<{ source: RulesSource; text: string }>): IgnoreRules {
    if (files.length === 0) return this;
    const rebase = (source: RulesSource): string[] =>
      files.filter((f) => f.source === source)
        .flatMap((f) => f.text.split(/\r?\n/))
        .map((line) => rebasePattern(line, base))
        .filter((p): p is string => p !== undefined);
    const git = [...rebase('exclude'), ...rebase('gitignore')];
    const own = rebase('ignore');
    if (git.length === 0 && own.length === 0) return this;
    return new IgnoreRules([...this.gitPatterns, ...git], [...this.ignorePatterns, ...own], this.ignoreCase);
  }

  /** `relativePath` is POSIX and relative to the folder root; directories are asked about as such. */
  ignores(relativePath: string, isDirectory: boolean): boolean {
    if (this.gitPatterns.length === 0 && this.ignorePatterns.length === 0) return false;
    this.matcherCache ??= ignore({ ignorecase: this.ignoreCase, allowRelativePaths: true })
      .add(this.gitPatterns)
      .add(this.ignorePatterns);
    return this.matcherCache.ignores(isDirectory ? `${relativePath}/` : relativePath);
  }
}
