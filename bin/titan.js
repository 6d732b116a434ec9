#!/usr/bin/env node
// The `titan` CLI: a thin launcher for the bundled engine CLI (built by `npm run build`).
const path = require('node:path');
const fs = require('node:fs');
const cli = path.join(__dirname, '..', 'dist', 'engine', 'cli.js');
if (!fs.existsSync(cli)) {
  process.stderr.write('titan: the engine is not built yet; run `npm run build` in ' + path.dirname(__dirname) + '\n');
  process.exit(2);
}
require(cli).run();
