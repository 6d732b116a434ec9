#!/usr/bin/env bash
# The whole test suite: type check, lint, build, then every test under test/ with node's test runner.
# Node's runner prints the closing summary CI reads ("ℹ tests N … ℹ fail 0").
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== type check"; npx --no-install tsc --noEmit -p tsconfig.json
echo "== lint"; npx --no-install eslint .
echo "== build"; node scripts/build.mjs
echo "== tests"
mapfile -t files < <(find test -name '*.test.ts' -not -path 'test/vscode/*' | sort)
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
