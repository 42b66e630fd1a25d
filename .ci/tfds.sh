#!/usr/bin/env bash
# CI step: the TFDS adapter's test in its own environment with the [tfds] extra
# (TensorFlow + tensorflow-datasets), apart from the main .venv so that TensorFlow never
# shares a process or a dependency resolution with the rest of the suite.
#   .ci/tfds.sh            set up ${TFDS_VENV:-.venv-tfds} on first use, then run tests/test_tfds.py
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TFDS_VENV:-.venv-tfds}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.pyproject.sha256"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
have=""
[ -f "$STAMP" ] && have=$(cat "$STAMP")
if [ ! -x "$VENV/bin/python" ] || [ "$want" != "$have" ]; then
  echo "tfds.sh: setting up $VENV with the [tfds] extra ..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e ".[dev,tfds]" >&2
  echo "$want" > "$STAMP"
fi
# The test must run here, not skip: SPEECHMUSIC_REQUIRE_TFDS turns a skip into a failure.
export SPEECHMUSIC_REQUIRE_TFDS=1 TF_CPP_MIN_LOG_LEVEL=2
exec "$VENV/bin/python" -m pytest -q tests/test_tfds.py "$@"
