#!/usr/bin/env bash
# The main job end to end on the embedded MemoryStore: set-up, then `kvdump demo` (args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >&2
exec "${KVDUMP_VENV:-.venv}/bin/kvdump" demo "$@"
