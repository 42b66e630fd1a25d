#!/usr/bin/env bash
# Set up a local virtualenv on first use (or when pyproject.toml changed), then run a command.
#   ./run.sh train [FLAGS]   python -m speechmusic_jax.train FLAGS
#   ./run.sh test [ARGS]     the pytest suite (soak tests excluded)
#   ./run.sh setup           set-up only
#   ./run.sh MODULE [FLAGS]  python -m speechmusic_jax.MODULE FLAGS (evaluate, predict, benchmark, ...)
set -euo pipefail
cd "$(dirname "$0")"

VENV="${SPEECHMUSIC_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.pyproject.sha256"

setup() {
  local want have=""
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  [ -f "$STAMP" ] && have=$(cat "$STAMP")
  if [ -x "$VENV/bin/python" ] && [ "$want" = "$have" ]; then
    return 0
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "run.sh: Python >= 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1))." >&2
    exit 1
  fi
  echo "run.sh: setting up $VENV (first use or pyproject.toml changed) ..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e ".[dev]" >&2
  echo "$want" > "$STAMP"
  echo "run.sh: set-up done." >&2
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  train) setup; exec "$VENV/bin/python" -m speechmusic_jax.train "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  lint)  setup; exec "$VENV/bin/ruff" check . ;;
  "" | -h | --help)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *)     setup; exec "$VENV/bin/python" -m "speechmusic_jax.$cmd" "$@" ;;
esac
