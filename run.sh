#!/usr/bin/env bash
# Set up a local virtualenv on first use (or when pyproject.toml changed), then run a command.
# ./run.sh --help lists the commands.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${SPEECHMUSIC_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.pyproject.sha256"

# name|what it does (each a python -m speechmusic_jax.NAME module, except test, setup and lint)
COMMANDS="train|train and test an experiment (first use: sets up .venv)
test|the test suite (slow-marked tests excluded)
setup|set up .venv only
lint|ruff over the project
list|what exists: presets, optimizers, schedules, experiments, sources
evaluate|a trained run's scores on a labelled data source
predict|classify audio files with a trained run
crossval|k-fold cross-validation of an experiment
benchmark|time the compiled step (--what=step) or the data loader (--what=data)
baseline|logistic regression on global audio statistics, on a run's split
cues|how well simple cues (pauses, level, bandwidth, zeros) alone separate the classes
export|write a trained model as a portable StableHLO file
ship|ship a finished run as the package's model (--model=pretrained), with its provenance
sweep|a hyperparameter sweep or optimizer comparison
report|write docs/results.md (and the README's table) from run folders and benchmark JSONs
segment_bench|timelines of a trained run: boundary accuracy (--what=accuracy) or speed"

usage() {
  echo "usage: ./run.sh COMMAND [FLAGS]   (./run.sh COMMAND --help for a command's flags)"
  echo
  echo "commands:"
  while IFS='|' read -r name what; do
    if is_command "$name"; then printf '  %-14s %s\n' "$name" "$what"; fi
  done <<< "$COMMANDS"
}

is_command() {  # a built-in one, or a module that exists in this checkout
  case "$1" in
    test | setup | lint) return 0 ;;
  esac
  grep -q "^$1|" <<< "$COMMANDS" && [ -f "speechmusic_jax/$1.py" ]
}

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
  # The stamp is written last: an interrupted set-up is done again by the next command.
  trap 'echo "run.sh: set-up interrupted; the next ./run.sh command sets up again" >&2; exit 130' INT
  trap 'echo "run.sh: set-up interrupted; the next ./run.sh command sets up again" >&2; exit 143' TERM
  echo "run.sh: setting up $VENV (first use or pyproject.toml changed) ..." >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e ".[dev]" >&2
  echo "$want" > "$STAMP"
  trap - INT TERM
  echo "run.sh: set-up done." >&2
}

# --help of the built-in commands: printed here, without setting up or running anything.
builtin_help() {
  case "$1" in
    setup) cat <<EOF
usage: ./run.sh setup

Creates the virtualenv $VENV (python -m venv, then pip install -e ".[dev]": the CPU build of JAX
and the test tools) and records pyproject.toml's hash in it. It does nothing when $VENV is
there and pyproject.toml is unchanged; every other command sets up the same way first.
An interrupted set-up is done again by the next command.

environment:
  PYTHON=python3.12     the interpreter the virtualenv is made from (>= 3.11; default python3)
  SPEECHMUSIC_VENV=DIR  where the virtualenv goes (default .venv)
EOF
    ;;
    test) cat <<EOF
usage: ./run.sh test [PYTEST ARGUMENTS]

Runs the test suite with pytest (sets up $VENV first); every argument goes to pytest. Tests
marked slow (soaks, and the costlier variants of parametrized families: each family keeps a
variant in the suite) are left out unless you ask for them with -m slow. The test files are
spread over one worker process per core, at most 4 (pytest-xdist, a file's tests in one
worker); -n 0 runs them in this process (for --pdb), SPEECHMUSIC_TEST_WORKERS=N sets N.

  ./run.sh test                                # the whole suite
  ./run.sh test tests/test_train.py            # one file
  ./run.sh test tests/test_train.py -k resume  # its tests whose name contains "resume"
  ./run.sh test -x -q                          # stop at the first failure, terse output
  ./run.sh test -m slow                        # the slow-marked tests only

pytest's own options: $VENV/bin/python -m pytest --help
EOF
    ;;
    lint) cat <<EOF
usage: ./run.sh lint

Runs ruff check over the project (sets up $VENV first) with the rules in pyproject.toml
([tool.ruff]). It takes no options; ruff's own (e.g. --fix): $VENV/bin/ruff check --help
EOF
    ;;
  esac
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  test | setup | lint)
    for arg in "$@"; do
      case "$arg" in
        -h | --help) builtin_help "$cmd"; exit 0 ;;
      esac
    done ;;
esac
case "$cmd" in
  "" | -h | --help | help) usage ;;
  setup) setup ;;
  test)  setup
         workers="${SPEECHMUSIC_TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
         [ "$workers" -gt 4 ] && workers=4
         exec "$VENV/bin/python" -m pytest -n "$workers" --dist loadfile "$@" ;;
  lint)  setup; exec "$VENV/bin/ruff" check . ;;
  *)
    if ! is_command "$cmd"; then
      echo "run.sh: unknown command '$cmd'" >&2
      usage >&2
      exit 2
    fi
    setup; exec "$VENV/bin/python" -m "speechmusic_jax.$cmd" "$@" ;;
esac
