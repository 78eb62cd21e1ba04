#!/usr/bin/env bash
# One-time (and idempotent) set-up: system packages, a virtualenv with torch==2.13.0 pinned, and the
# kvdump build. Every README command runs this first, so a fresh machine needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KVDUMP_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0

./scripts/install_system_packages.sh

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }

# torch first and exactly pinned: anything that later asks for "torch" is then already satisfied
# and pip never resolves a different (CUDA) build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "==> pip install torch==$TORCH_VERSION"
  pip install -q "torch==$TORCH_VERSION"
fi
echo "==> pip install kvdump's own, build and test requirements (pydantic for the PD config, rich for the CLI's progress, Mooncake's client, transformers for the HF tests)"
pip install -q "torch==$TORCH_VERSION" "scikit-build-core>=0.10" "pybind11>=3.0" ninja numpy "pydantic>=2.10" "rich>=13" \
  "pytest>=8" "pytest-timeout>=2.3" mooncake-transfer-engine-non-cuda "transformers>=4.56"

echo "==> building kvdump (C++ core, torch ops, pybind11 extension)"
pip install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v "^\s*$" || true
"$VENV/bin/python" -c "import kvdump; print('kvdump', kvdump.__version__, 'ready')"
