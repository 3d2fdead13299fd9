#!/usr/bin/env bash
# The payload of the GPU check, prepared here on the CPU (devtools/gpu/payload.py): the
# faiss-cpu wheel for CPython 3.12 and the MiniLM teacher in fp16, planned into call folders
# .gpu-payload/call-N/ (ignored by git) that each travel with the working tree in one call
# of at most 64 MiB. Prints the plan (with each call's size); --plan-only downloads nothing.
#
#   bash scripts/gpu-payload.sh [--plan-only] [--no-minilm] [--no-faiss]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m devtools.gpu payload "$@"
