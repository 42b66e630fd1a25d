#!/usr/bin/env bash
# CI step: the PyTorch twin of `benchmark --compare=torch` in its own environment with the
# [bench] extra (torch==2.13.0, CPU build), apart from the main .venv.
#   .ci/bench.sh           set up ${BENCH_VENV:-.venv-bench} on first use, then run
#                          tests/test_torch_reference.py (PyTorch eager)
#   .ci/bench.sh -m slow   the torch.compile arm too (minutes: inductor compiles on 2 cores);
#                          arguments go to pytest. torch.compile needs g++ (or $CXX).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${BENCH_VENV:-.venv-bench}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.pyproject.sha256"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
have=""
[ -f "$STAMP" ] && have=$(cat "$STAMP")
if [ ! -x "$VENV/bin/python" ] || [ "$want" != "$have" ]; then
  echo "bench.sh: setting up $VENV with the [bench] extra ..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e ".[dev,bench]" >&2
  echo "$want" > "$STAMP"
fi
# The tests must run here, not skip: SPEECHMUSIC_REQUIRE_TORCH turns a skip into a failure.
export SPEECHMUSIC_REQUIRE_TORCH=1
exec "$VENV/bin/python" -m pytest -q tests/test_torch_reference.py "$@"
