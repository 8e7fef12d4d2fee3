#!/usr/bin/env bash
# The GPU measurements in one command (benchmarks/gpu_check.py), for a machine with a GPU and
# only torch, torchvision, opencv, onnxruntime, safetensors and pytest installed: no ROS, no
# network, nothing to build. Runs from a plain checkout; at most 8 minutes (the script keeps
# to its --budget-s, this wrapper stops it at 480 s whatever happens). Arguments go to the
# script, e.g. --out FILE; default file benchmarks/results/gpu_<gpu name>.md.
#
# Usage: benchmarks/gpu_check.sh [--out FILE] [--budget-s 420]
#        PYTHON=.venv/bin/python benchmarks/gpu_check.sh --smoke --device cpu --out /tmp/x.md
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT:$ROOT/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout --signal=TERM --kill-after=10 480 "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
