// Preloaded (`node --require`) into a `titan` process by the full-disk test: the disk under
// TITAN_FAULT_FULL_DISK_DIR holds only TITAN_FAULT_FULL_DISK_BYTES more bytes. Writes below that
// folder count against the budget; the write that crosses it writes what still fits and then fails
// with ENOSPC, as a real full disk does, and so does every later one. Other folders are untouched.
// Covers the calls the engine writes through: fs.open + fs.write (write-file-atomic), their sync
// forms, and fs/promises writeFile and appendFile.
/* eslint-disable @typescript-eslint/no-require-imports -- a CommonJS preload */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = process.env.TITAN_FAULT_FULL_DISK_DIR ? path.resolve(process.env.TITAN_FAULT_FULL_DISK_DIR) + path.sep : null;
let left = Number(process.env.TITAN_FAULT_FULL_DISK_BYTES ?? Infinity);
const log = process.env.TITAN_FAULT_LOG;
const appendUnhooked = fs.appendFileSync;
const note = (entry) => {
  if (log) appendUnhooked.call(fs, log, JSON.stringify({ pid: process.pid, ...entry }) + '\n');
};

const under = (p) => root !== null && typeof p === 'string' && (path.resolve(p) + path.sep).startsWith(root);
const tracked = new Map(); // fd → path, for files opened below the folder
const enospc = (p) => Object.assign(new Error(`ENOSPC: no space left on device, write '${p}'`), { code: 'ENOSPC', errno: -28, syscall: 'write', path: p });

/** How many of `length` bytes to `p` fit; notes the failure when not all do. */
function take(p, length) {
  const fits = Math.max(0, Math.min(length, left));
  left -= fits;
  if (fits < length) {
    left = 0;
    note({ enospc: p, wanted: length, wrote: fits });
  }
  return fits;
}

function wrap(owner, name, make) {
  const original = owner[name];
  owner[name] = make(original);
  owner[name].original = original;
}

wrap(fs, 'open', (original) => function open(p, ...args) {
  const cb = args[args.length - 1];
  if (!under(p) || typeof cb !== 'function') return original.call(fs, p, ...args);
  return original.call(fs, p, ...args.slice(0, -1), (err, fd) => {
    if (!err) tracked.set(fd, String(p));
    cb(err, fd);
  });
});
wrap(fs, 'openSync', (original) => function openSync(p, ...args) {
  const fd = original.call(fs, p, ...args);
  if (under(p)) tracked.set(fd, String(p));
  return fd;
});
wrap(fs, 'close', (original) => function close(fd, ...args) {
  tracked.delete(fd);
  return original.call(fs, fd, ...args);
});
wrap(fs, 'closeSync', (original) => function closeSync(fd) {
  tracked.delete(fd);
  return original.call(fs, fd);
});

// fs.write(fd, buffer, offset, length, position, cb) and fs.write(fd, string, position, encoding, cb)
wrap(fs, 'write', (original) => function write(fd, data, ...args) {
  const cb = args[args.length - 1];
  if (!tracked.has(fd) || typeof cb !== 'function') return original.call(fs, fd, data, ...args);
  const p = tracked.get(fd);
  const buf = typeof data === 'string' ? Buffer.from(data, typeof args[1] === 'string' ? args[1] : 'utf8') : data;
  const offset = typeof data === 'string' ? 0 : (typeof args[0] === 'number' ? args[0] : 0);
  const length = typeof data === 'string' ? buf.length : (typeof args[1] === 'number' ? args[1] : buf.length - offset);
  const position = typeof data === 'string' ? (typeof args[0] === 'number' ? args[0] : null) : (typeof args[2] === 'number' ? args[2] : null);
  const fits = take(p, length);
  if (fits === length) return original.call(fs, fd, data, ...args);
  if (fits === 0) return process.nextTick(cb, enospc(p));
  return original.call(fs, fd, buf, offset, fits, position, (err) => cb(err ?? enospc(p)));
});
wrap(fs, 'writeSync', (original) => function writeSync(fd, data, ...args) {
  if (!tracked.has(fd)) return original.call(fs, fd, data, ...args);
  const p = tracked.get(fd);
  const buf = typeof data === 'string' ? Buffer.from(data, typeof args[1] === 'string' ? args[1] : 'utf8') : data;
  const offset = typeof data === 'string' ? 0 : (typeof args[0] === 'number' ? args[0] : 0);
  const length = typeof data === 'string' ? buf.length : (typeof args[1] === 'number' ? args[1] : buf.length - offset);
  const position = typeof data === 'string' ? (typeof args[0] === 'number' ? args[0] : null) : (typeof args[2] === 'number' ? args[2] : null);
  const fits = take(p, length);
  if (fits === length) return original.call(fs, fd, data, ...args);
  if (fits > 0) original.call(fs, fd, buf, offset, fits, position);
  throw enospc(p);
});

const byteLength = (data, options) => (typeof data === 'string' ? Buffer.byteLength(data, (typeof options === 'string' ? options : options?.encoding) || 'utf8') : data.byteLength);
for (const [owner, name] of [[fs.promises, 'writeFile'], [fs.promises, 'appendFile']]) {
  wrap(owner, name, (original) => async function writeWhole(p, data, options) {
    if (!under(p)) return original.call(owner, p, data, options);
    const length = byteLength(data, options);
    const fits = take(String(p), length);
    if (fits === length) return original.call(owner, p, data, options);
    const buf = typeof data === 'string' ? Buffer.from(data, (typeof options === 'string' ? options : options?.encoding) || 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await original.call(owner, p, buf.subarray(0, fits));
    throw enospc(String(p));
  });
}
for (const name of ['writeFileSync', 'appendFileSync']) {
  wrap(fs, name, (original) => function writeWholeSync(p, data, options) {
    if (!under(p)) return original.call(fs, p, data, options);
    const length = byteLength(data, options);
    const fits = take(String(p), length);
    if (fits === length) return original.call(fs, p, data, options);
    const buf = typeof data === 'string' ? Buffer.from(data, (typeof options === 'string' ? options : options?.encoding) || 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    original.call(fs, p, buf.subarray(0, fits));
    throw enospc(String(p));
  });
}
note({ loaded: true, root, budget: left });
