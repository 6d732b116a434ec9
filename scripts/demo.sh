#!/usr/bin/env bash
# The main job of the Quick start: build, Titanize the bundled demo model (once), read this
# repository into its memory (the first run reads every file; later runs restore the checkpoint
# and re-read only what changed), and answer a question about it with sources.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/build.mjs
pkg=.titan/packages/code-llama-19m-titan
mu=0.05 # the engine's default μ, named here so a package an older run made with μ 0.5 is replaced
converted_with_mu() { node -e 'const m = require(process.argv[1]); process.exit(m.tptt && m.tptt.mag_weight === Number(process.argv[2]) ? 0 : 1)' "$PWD/$pkg/titan-package.json" "$mu" 2> /dev/null; }
if ! converted_with_mu; then
  rm -rf "$pkg"
  ./bin/titan.js titanize media/models/code-llama-19m --out "$pkg" --window 512 --mag-weight "$mu"
fi
./bin/titan.js ask "$pkg" --workspace . --max-new-tokens 64 "${1:-Where does the engine choose the execution provider?}"
