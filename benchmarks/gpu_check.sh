#!/usr/bin/env bash
# The GPU check (issue 13): the smoke suite on CUDA, 200 training steps of the CIFAR-10 NCSN++ cont. preset at batch
# 128 in bf16 and fp32 (images/s, fraction of the measured matmul peak), 1,000 ALD and PC samples; prints a table.
# Under 8 minutes on one H100/H200-class GPU. Usage, from the repository root after `make install`:
#   benchmarks/gpu_check.sh                      # the full check; JSON in gpu_check.json
#   benchmarks/gpu_check.sh --device cpu --tiny  # a dry run of the code paths on the CPU, in seconds
#   benchmarks/gpu_check.sh --switches --skip smoke --skip sample  # issue 15's switches: training.compile (bf16,
#                                                # fp32), sampling.compile, sampling.cuda_graphs, each vs eager
# Extra arguments go to benchmarks/gpu_check.py (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PATH="$(dirname "$PY"):$PATH" DVC_NO_ANALYTICS=1
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check.sh: PyTorch is not importable with $PY; run 'make install' first (or set PYTHON=...)." >&2
  exit 2
fi
if [[ " $* " != *" --device cpu "* ]] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check.sh: no CUDA GPU visible to PyTorch on this machine (torch.cuda.is_available() is False)." >&2
  echo "  Run it on a GPU machine, or 'benchmarks/gpu_check.sh --device cpu --tiny' for a CPU dry run." >&2
  exit 2
fi
LIMIT=480  # seconds; compilation (--switches) gets a 10-minute run
[[ " $* " == *" --switches "* ]] && LIMIT=590
exec timeout "$LIMIT" "$PY" benchmarks/gpu_check.py --out gpu_check.json "$@"
