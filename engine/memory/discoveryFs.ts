// The file-system calls workspace discovery makes, behind one small interface so that tests
// (and virtual file systems) can stand in for the disk.

import * as fs from 'node:fs';

export interface DirEntry {
  readonly name: string;
  isFile(): boolean;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
}

export interface LoadedFile {
  /** Of the opened file (links followed). */
  readonly stats: fs.Stats;
  /** The bytes; absent when the file is not a regular file or is larger than maxBytes. */
  readonly bytes?: Buffer;
}

export interface DiscoveryFs {
  readdir(dir: string): Promise<readonly DirEntry[]>;
  /** Follows links, like fs.stat. */
  stat(file: string): Promise<fs.Stats>;
  realpath(file: string): Promise<string>;
  /** Opens a file once for its stats and, if it is small enough, its bytes. */
  loadFile(file: string, maxBytes: number): Promise<LoadedFile>;
}

export const nodeDiscoveryFs: DiscoveryFs = {
  readdir: (dir) => fs.promises.readdir(dir, { withFileTypes: true }),
  stat: (file) => fs.promises.stat(file),
  realpath: (file) => fs.promises.realpath(file),
  loadFile,
};

// O_NONBLOCK: a FIFO put where a file was listed must not hang the open.
const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0);

/**
 * open, fstat, read, close: four calls on the thread pool, where stat + readFile take six.
 * The callback API, not FileHandle, because at 50,000 files its overhead is what shows.
 */
function loadFile(file: string, maxBytes: number): Promise<LoadedFile> {
  return new Promise((resolve, reject) => {
    fs.open(file, OPEN_FLAGS, (openErr, fd) => {
      if (openErr) return reject(openErr);
      const finish = (err: NodeJS.ErrnoException | null, result?: LoadedFile): void =>
        fs.close(fd, () => (err ? reject(err) : resolve(result!)));
      fs.fstat(fd, (statErr, stats) => {
        if (statErr) return finish(statErr);
        if (!stats.isFile() || stats.size > maxBytes) return finish(null, { stats });
        // One byte more than the size tells a file that grew since fstat.
        readAll(fd, Buffer.allocUnsafe(stats.size + 1), 0, stats.size, maxBytes, (err, bytes) => finish(err, { stats, bytes }));
      });
    });
  });
}

function readAll(
  fd: number, buf: Buffer, filled: number, expected: number, maxBytes: number,
  done: (err: NodeJS.ErrnoException | null, bytes?: Buffer) => void,
): void {
  fs.read(fd, buf, filled, buf.length - filled, filled, (err, n) => {
    if (err) return done(err);
    const total = filled + n;
    // The usual case ends here: one read returned exactly the size fstat gave.
    if (n === 0 || total === expected) return done(null, buf.subarray(0, total));
    if (total > maxBytes) return done(null, buf.subarray(0, total)); // the caller reports it too large
    const next = total < buf.length ? buf : Buffer.concat([buf, Buffer.allocUnsafe(Math.min(buf.length, maxBytes + 1))]);
    readAll(fd, next, total, -1, maxBytes, done);
  });
}
