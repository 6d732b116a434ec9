// Preloaded (`node --require`) by the limits test: writes the process's peak resident memory (KiB,
// process.resourceUsage().maxRSS) to TITAN_MAX_RSS_FILE when the process exits.
/* eslint-disable @typescript-eslint/no-require-imports -- a CommonJS preload */
'use strict';
const fs = require('node:fs');
const { isMainThread } = require('node:worker_threads');

if (isMainThread && process.env.TITAN_MAX_RSS_FILE) {
  process.on('exit', () => fs.writeFileSync(process.env.TITAN_MAX_RSS_FILE, String(process.resourceUsage().maxRSS)));
}
