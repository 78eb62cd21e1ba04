#!/usr/bin/env bash
# The whole test suite: set-up, the Python lint, the C++ core tests under ctest (plain and ThreadSanitizer builds),
# then pytest. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# vLLM for the connector tests; kept out of setup.sh so that the demo's set-up stays small.
./scripts/install_vllm.sh
VENV=${KVDUMP_VENV:-.venv}
NINJA="$(pwd)/$VENV/bin/ninja"
JOBS=${KVDUMP_JOBS:-2}

echo "==> lint: ruff check and ruff format --check (configuration in pyproject.toml)"
# ruff for the lint; mypy for tests/test_type_stubs.py (stubtest and stubgen against kvdump._C).
"$VENV/bin/python" -m pip install -q "ruff==0.17.5" "mypy==2.4.1"
"$VENV/bin/ruff" check runtime tests bench examples
"$VENV/bin/ruff" format --check runtime tests bench examples

run_ctest() {  # $1 = build dir, $2 = sanitizer ('' | thread | address)
  echo "==> C++ core tests (${2:-no sanitizer})"
  cmake -S . -B "$1" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKVDUMP_BUILD_TESTS=ON -DKVDUMP_BUILD_PYTHON=OFF -DKVDUMP_SANITIZE="$2" >/dev/null
  cmake --build "$1" -j "$JOBS"
  (cd "$1" && ctest --output-on-failure -j "$JOBS")
}

run_ctest build/core ""
# TSan: halt_on_error makes any data race fail the run instead of only printing a report.
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" run_ctest build/tsan thread
if [ "${KVDUMP_ASAN:-0}" = 1 ]; then
  ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" run_ctest build/asan address
fi

echo "==> pytest"
# vLLM was installed above, so the connector tests must run: a failed vLLM import fails them.
KVDUMP_REQUIRE_VLLM=1 "$VENV/bin/python" -m pytest "$@"
