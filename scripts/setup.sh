#!/usr/bin/env bash
# Set up a fresh machine for coldstream: a virtualenv in .venv with the pinned torch
# installed FIRST (so no loose requirement can pull a second torch), the project with
# its dev extras, the MovieLens-100K files (recbole package, --no-deps), the Apache
# Kafka jars (Maven) and the command-line tools the tests use (kcat, promtool, ...).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
TORCH_VERSION=${COLDSTREAM_TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

have_torch=$($VPY -c "import torch,sys;print(torch.__version__.split('+')[0])" 2>/dev/null || true)
if [ "$have_torch" != "$TORCH_VERSION" ]; then
  echo "[setup] installing torch==$TORCH_VERSION (first; a CPU build where one is on disk, else the CUDA build, which also runs on CPU)"
  $VPY -m pip install -q "torch==$TORCH_VERSION"
fi

echo "[setup] installing coldstream and its dev extras"
$VPY -m pip install -q -e '.[dev]' "torch==$TORCH_VERSION"
$VPY -m pip install -q --no-deps "recbole==1.2.1"

# Fail loudly if anything replaced the pinned torch.
$VPY - <<PYEOF
import torch, sys
v = torch.__version__.split('+')[0]
sys.exit(0 if v == "$TORCH_VERSION" else f"torch {torch.__version__} installed, expected $TORCH_VERSION")
PYEOF

for s in .ci/install-kafka.sh .ci/install-deploy-tools.sh; do
  if [ -f "$s" ]; then
    echo "[setup] $s"
    bash "$s"
  fi
done
echo "[setup] done"
