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
# Then the tests in a real VS Code (test/vscode/, after the others, in the same run so node's summary
# stays the last line). Their installs (Chromium, Node 24, code-server) come from the setup script; if it
# fails, those tests fail with its reason. TITAN_SKIP_VSCODE=1 leaves them out (a quick local run).
if [[ "${TITAN_SKIP_VSCODE:-}" != 1 ]]; then
  echo "== VS Code test setup"; bash scripts/vscode-e2e-setup.sh || echo "VS Code test setup failed: the test/vscode tests will fail"
  mapfile -t -O "${#files[@]}" files < <(find test/vscode -name '*.test.ts' | sort)
fi
exec node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
