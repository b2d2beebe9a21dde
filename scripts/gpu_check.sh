#!/usr/bin/env bash
# The prepared device check (one command, under 8 minutes on one GPU): versions and device, then
# kvae.fit (quickstart, and the 16 kHz rave preset; float32 and mixed precision) against the plain
# PyTorch loop of benchmarks/train_benchmark.py, steps/s, audio-seconds/s and peak GPU memory, and
# 2-rank DDP when there are two GPUs. `--cpu` hides the GPUs (a few minutes on a CPU); `--quick`
# keeps the quickstart rows only. See scripts/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
