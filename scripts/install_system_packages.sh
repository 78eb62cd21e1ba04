#!/usr/bin/env bash
# The Debian packages kvdump's build and tests need, installed with apt-get when any is missing:
# GoogleTest and xxHash for the C++ core and its tests, the toolchain, and libibverbs1, which
# Mooncake's transfer engine loads even for TCP. Idempotent; needs root or sudo only to install.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

packages=(libgtest-dev libxxhash-dev cmake g++ libibverbs1)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
