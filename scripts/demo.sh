#!/usr/bin/env bash
# The main job of the Quick start: build, convert the bundled demo model into a package (once),
# and generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/build.mjs
pkg=.titan/packages/code-llama-19m
if [ ! -f "$pkg/titan-package.json" ]; then
  ./bin/titan.js convert media/models/code-llama-19m --out "$pkg"
fi
./bin/titan.js generate "$pkg" --prompt "${1:-export function debounce(fn, wait) {}" --max-new-tokens 80
