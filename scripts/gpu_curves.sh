#!/usr/bin/env bash
# Issue 23's learning curves in GPU-minutes (vocos-mel, vocos) on a real-music WAV subset carried
# with the working tree. Here: `python scripts/gpu_curves.py prepare --source /tmp/ufoai-corpus
# --out runs/ufoai-subset`. On the GPU machine: `scripts/gpu_curves.sh run --data runs/ufoai-subset`
# (about 8 minutes); `--cpu` runs it anywhere. See scripts/gpu_curves.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python}" scripts/gpu_curves.py "$@"
