#!/usr/bin/env bash
# The first run of hnas's CUDA paths (issue 20): AMP training, `hnas search --workers 2`, prediction under a
# device-memory cap. At most ~8 minutes on one NVIDIA GPU; prints one table (benchmarks/gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
test -x "$PY" || PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 540 "$PY" benchmarks/gpu_check.py "$@"
