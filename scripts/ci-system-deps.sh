#!/usr/bin/env bash
# System packages the test suite needs beyond Node and npm, from Debian (root, as on CI):
# Mesa's software Vulkan driver (lavapipe) from bookworm-backports, so the WebGPU provider of
# onnxruntime-node runs on machines without a GPU. Idempotent; skips what is already there.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "ci-system-deps: not root, skipping apt installs" >&2; exit 0; fi
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 || ! dpkg -s mesa-vulkan-drivers | grep -q '^Version: 2[5-9]'; then
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > /etc/apt/sources.list.d/titan-backports.sources
  fi
  apt-get update -qq
  target=(); [ "${VERSION_CODENAME:-}" = bookworm ] && target=(-t bookworm-backports)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${target[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null
fi
