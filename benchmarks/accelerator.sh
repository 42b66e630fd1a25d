#!/usr/bin/env bash
# The GPU check of issue 31 part 4, in one command: JAX for CUDA in its own environment, the
# device-related tests, the compiled step at several batch sizes, grouped trials against alone,
# and the input pipeline (`benchmark --what=data`, with data.cache=device where this version has
# it), all written to one JSON file with the device's name.
#
#   benchmarks/accelerator.sh [--output=FILE.json] [--overwrite] [--no-tests]
#       on a machine with an NVIDIA GPU: sets up ${ACCEL_VENV:-.venv-accel} on first use with
#       jax[${JAX_CUDA:-cuda12}]==${JAX_VERSION:-0.10.2} (cuda13 needs a driver >= 580), then runs
#   benchmarks/accelerator.sh --cpu [...]
#       the same steps on this machine's CPU with the :tiny configs and the project's .venv
#       (${PYTHON_BIN:-.venv/bin/python}): a check of the script, not a benchmark
#   benchmarks/accelerator.sh --dry-run [--cpu]
#       print every command, check that each program and module it calls exists; run nothing
#
# Installing needs the network (PyPI's CUDA wheels are several GB); on a machine without it,
# point ACCEL_VENV at an environment that has CUDA JAX and the project installed. Every part
# runs even if an earlier one fails; the JSON records each part's command and exit status, and
# the script exits 1 if any part failed. The output is written once, at the end (temp, then
# rename), and an existing file is never replaced without --overwrite.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
DRY=0
TESTS=1
OUTPUT=""
OVERWRITE=0
for arg in "$@"; do
  case "$arg" in
    --cpu) MODE=cpu ;;
    --dry-run) DRY=1 ;;
    --output=*) OUTPUT="${arg#--output=}" ;;
    --overwrite) OVERWRITE=1 ;;
    --no-tests) TESTS=0 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    *) echo "accelerator.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
OUTPUT="${OUTPUT:-runs/accelerator/accelerator-$MODE.json}"
if [ -e "$OUTPUT" ] && [ "$OVERWRITE" = 0 ] && [ "$DRY" = 0 ]; then
  echo "accelerator.sh: $OUTPUT exists; pass --overwrite to replace it" >&2
  exit 2
fi

if [ "$MODE" = gpu ]; then
  VENV="${ACCEL_VENV:-.venv-accel}"
  PY="$VENV/bin/python"
  TINY=""
  STEP_CONFIGS="experiments/m5.py experiments/default.py"
  BATCH_SIZES="32,128,512"
  STEPS=30
  GROUP_SIZES="1,4,8,16"
  GROUP_STEPS=10
else
  PY="${PYTHON_BIN:-.venv/bin/python}"
  TINY=":tiny"
  STEP_CONFIGS="experiments/m5_small.py"
  BATCH_SIZES="8,16"
  STEPS=3
  GROUP_SIZES="1,2"
  GROUP_STEPS=3
  export JAX_PLATFORMS=cpu
fi

run() {  # print the command; run it unless --dry-run
  echo "+ $*" >&2
  [ "$DRY" = 1 ] || "$@"
}

need() {  # a program the script calls must exist
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "accelerator.sh: $1 not found ($2)" >&2
    exit 2
  fi
}

# --- the environment -------------------------------------------------------------------------
need "${PYTHON:-python3}" "the Python to make the environment with (PYTHON=...)"
if [ "$MODE" = gpu ] && [ ! -x "$PY" ]; then
  run "${PYTHON:-python3}" -m venv "$VENV" || exit 2
  run "$PY" -m pip install -q --upgrade pip || exit 2
  run "$PY" -m pip install -q -e ".[dev]" \
    "jax[${JAX_CUDA:-cuda12}]==${JAX_VERSION:-0.10.2}" || exit 2
fi
if [ "$DRY" = 1 ] && [ ! -x "$PY" ]; then
  echo "accelerator.sh: (dry run) $PY does not exist yet; it would be set up as above" >&2
  PY="${PYTHON_BIN:-.venv/bin/python}"
fi
need "$PY" "the environment's Python"
for module in speechmusic_jax.benchmark speechmusic_jax.tuning.group pytest; do
  "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" \
    || { echo "accelerator.sh: $PY cannot import $module" >&2; exit 2; }
done

WORK=$(mktemp -d -t smj-accelerator-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m speechmusic_jax.benchmark --helpfull > "$WORK/flags" 2>&1
for flag in what config batch_sizes devices steps output; do  # the flags used below
  grep -q -- "--$flag" "$WORK/flags" \
    || { echo "accelerator.sh: benchmark has no --$flag flag" >&2; exit 2; }
done
# data.cache=device comes with issue 31 part 1: skip that line cleanly where it is unknown
if "$PY" -c "import sys; from speechmusic_jax import config; sys.exit('device' not in config.CACHES)"; then
  DATA_CACHES="memory device"
else
  DATA_CACHES="memory"
  echo "accelerator.sh: data.cache=device is not in this version: --what=data without it" >&2
fi

# --- the parts ---------------------------------------------------------------------------------
# Each part: a name, then its command; its status goes to $WORK/NAME.rc, its JSON (if any) to
# $WORK/NAME.json.
part() {
  local name="$1"; shift
  echo "$*" > "$WORK/$name.cmd"
  run "$@"
  local rc=$?
  echo "$rc" > "$WORK/$name.rc"
  [ "$rc" = 0 ] || echo "accelerator.sh: part $name failed (exit $rc)" >&2
}

if [ "$DRY" = 0 ]; then
  "$PY" -c "import jax; print(jax.default_backend())" > "$WORK/backend" || exit 2
  if [ "$MODE" = gpu ] && [ "$(cat "$WORK/backend")" != gpu ]; then
    echo "accelerator.sh: JAX sees no GPU here (backend $(cat "$WORK/backend")); run with --cpu" \
      "for the CPU check of this script" >&2
    exit 2
  fi
fi

# 1. The tests that touch devices: sharding, several devices, FLOPs per device, device memory
# (the slow-marked ones too). Several test processes share the GPU: no process takes 75 % of its
# memory up front.
[ "$TESTS" = 1 ] && part tests env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -q -p no:cacheprovider -m "slow or not slow" \
  --junitxml="$WORK/tests.xml" tests/test_distributed.py tests/test_builder.py tests/test_benchmark.py \
  tests/test_reliability.py tests/test_config.py \
  -k "device or devices or distributed or mesh or flops"

# 2. The compiled step at several batch sizes (on every device too, where there are several).
DEVICES=1
if [ "$DRY" = 0 ]; then
  n=$("$PY" -c "import jax; print(len(jax.devices()))")
  [ "$n" -gt 1 ] && DEVICES="1,$n"
fi
for config in $STEP_CONFIGS; do
  name="step_$(basename "$config" .py)"
  part "$name" "$PY" -m speechmusic_jax.benchmark --config="$config$TINY" \
    --batch_sizes="$BATCH_SIZES" --devices="$DEVICES" --steps="$STEPS" \
    --output="$WORK/$name.json"
done

# 3. Grouped trials (vmap, map) against one trial alone, ms per trial-step.
part group "$PY" -c "
import json, sys
from speechmusic_jax import config
from speechmusic_jax.tuning import group
cfg = config.load_experiment('experiments/default.py', sys.argv[1] or None)
config.validate(cfg)
rows = group.time_modes(cfg, sizes=[int(s) for s in sys.argv[2].split(',')],
                        steps=int(sys.argv[3]))
json.dump({'what': 'group', 'config': cfg.name, 'batch_size': cfg.train.batch_size,
           'results': rows}, open(sys.argv[4], 'w'))
" "${TINY#:}" "$GROUP_SIZES" "$GROUP_STEPS" "$WORK/group.json"

# 4. The input pipeline against the step, with the corpus in memory and (if known) on the device.
for cache in $DATA_CACHES; do
  part "data_$cache" "$PY" -m speechmusic_jax.benchmark --what=data \
    --config="experiments/default.py$TINY" --config.data.cache="$cache" \
    --steps="$STEPS" --output="$WORK/data_$cache.json"
done

[ "$DRY" = 1 ] && { echo "accelerator.sh: dry run: every program and module is here" >&2; exit 0; }

# --- one JSON --------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUTPUT")"
"$PY" - "$WORK" "$OUTPUT" "$MODE" <<'PY'
import glob, json, os, platform, subprocess, sys, time
import xml.etree.ElementTree as ET

import jax

work, output, mode = sys.argv[1:4]
out = {"what": "accelerator", "mode": mode, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "device_kind": jax.devices()[0].device_kind, "device_count": len(jax.devices()),
       "backend": jax.default_backend(), "jax": jax.__version__, "python": platform.python_version(),
       "host": platform.node(), "parts": {}}
try:
    out["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
except (OSError, subprocess.SubprocessError):
    out["nvidia_smi"] = None
for cmd in sorted(glob.glob(os.path.join(work, "*.cmd"))):
    name = os.path.basename(cmd)[:-4]
    part = {"command": open(cmd).read().strip(),
            "returncode": int(open(os.path.join(work, name + ".rc")).read())}
    result = os.path.join(work, name + ".json")
    if os.path.exists(result):
        part["result"] = json.load(open(result))
    if name == "tests" and os.path.exists(os.path.join(work, "tests.xml")):
        suite = ET.parse(os.path.join(work, "tests.xml")).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        part["counts"] = {**n, "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"]}
    out["parts"][name] = part
out["ok"] = all(p["returncode"] == 0 for p in out["parts"].values())
tmp = output + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
os.replace(tmp, output)
print(f"accelerator.sh: {out['device_kind']} x {out['device_count']}: "
      + ", ".join(f"{k} {'ok' if p['returncode'] == 0 else 'FAILED'}" for k, p in out["parts"].items())
      + f"; wrote {os.path.abspath(output)}")
sys.exit(0 if out["ok"] else 1)
PY
