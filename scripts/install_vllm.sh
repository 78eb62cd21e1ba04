#!/usr/bin/env bash
# Installs vLLM 0.32.0 into the kvdump virtualenv for the KvdumpConnector tests (idempotent).
# vLLM's wheel goes in with --no-deps: its full requirements pull CUDA wheels and other torch builds,
# and only its pure-Python scheduler and connector modules run on a CPU machine. The packages those
# modules import are in requirements/vllm.txt; torch stays pinned at the project's version.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KVDUMP_VENV:-.venv}
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
pip() { "$VENV/bin/python" -m pip "$@"; }

if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm') != '$VLLM_VERSION')" 2>/dev/null; then
  echo "==> pip install --no-deps vllm==$VLLM_VERSION"
  pip install -q --no-deps "vllm==$VLLM_VERSION"
fi
echo "==> pip install vLLM's pure-Python imports (requirements/vllm.txt)"
# pip's resolver complains that vLLM's own (CUDA) requirements are missing: expected with --no-deps,
# so those lines are dropped; a failed install still fails this script.
if ! log=$(pip install -q -r requirements/vllm.txt "torch==$TORCH_VERSION" 2>&1); then
  echo "$log" >&2
  exit 1
fi
echo "$log" | grep -v -e "^\s*$" -e "vllm $VLLM_VERSION requires" -e "dependency resolver does not currently take" || true
VLLM_TARGET_DEVICE=cpu "$VENV/bin/python" -c "
import torch, vllm
from vllm.v1.core.sched.scheduler import Scheduler
assert torch.__version__.split('+')[0] == '$TORCH_VERSION', torch.__version__
print('vllm', vllm.__version__, 'ready (torch', torch.__version__ + ')')"
