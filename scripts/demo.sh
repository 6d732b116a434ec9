#!/usr/bin/env bash
# The main job of the Quick start: build, Titanize the bundled demo model (once), read this
# repository into its memory (the first run reads every file; later runs restore the checkpoint
# and re-read only what changed), and answer a question about it with sources.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/build.mjs
pkg=.titan/packages/code-llama-19m-titan
if [ ! -f "$pkg/titan-package.json" ]; then
  ./bin/titan.js titanize media/models/code-llama-19m --out "$pkg" --window 512
fi
./bin/titan.js ask "$pkg" --workspace . --max-new-tokens 64 "${1:-Where does the engine choose the execution provider?}"
