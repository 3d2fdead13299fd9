#!/usr/bin/env bash
# The GPU check: proves the GPU paths and measures them in one run of at most 8 minutes
# (devtools/gpu/check.py). Files go to $OUT (default ./gpu-out): gpu-check.json, gpu-check.txt,
# gpu-tests.xml, gpu-check.log. Run from the repository root of a working tree, with the
# payload of scripts/gpu-payload.sh beside it (.gpu-payload/call-N/).
#
#   bash scripts/gpu-check.sh                        # on a GPU machine
#   GPU_CHECK_DRY_RUN=1 bash scripts/gpu-check.sh    # every part, tiny sizes, on the CPU
#
# Exit: 0 every part passed, 1 a part failed or was skipped, 2 no GPU here (one line, at
# once), 3 the check itself broke. GPU_CHECK_NVIDIA_SMI names the nvidia-smi to ask
# (tests point it at `false`); PYTHON the interpreter (default .venv/bin/python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=${OUT:-./gpu-out}
SMI=${GPU_CHECK_NVIDIA_SMI:-nvidia-smi}
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi

if [ "${GPU_CHECK_DRY_RUN:-0}" = "1" ]; then
  exec "$PY" -m devtools.gpu check --dry-run --out "$OUT_DIR" "$@"
fi
if ! "$SMI" -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi lists none); GPU_CHECK_DRY_RUN=1 runs every part on the CPU" >&2
  exit 2
fi
exec "$PY" -m devtools.gpu check --out "$OUT_DIR" "$@"
