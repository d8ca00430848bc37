#!/usr/bin/env bash
# The GPU checks of the Kernels and Trainer issues as one prepared run, for a session that is lent a GPU
# machine (about 10 minutes on an H100/H200; each step has its own time limit so one hang cannot eat the
# lease). It uses that machine's own python3 (torch and triton preinstalled, no package index) and gristmill
# from this checkout; the data-side dependencies (Beam, kenlm, fastText, ...) are not needed.
#
#   bash bench/gpu_check.sh                 # writes logs under $OUT (default out/gpu)
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh   # on a machine with the project's venv
#
# Steps: GPU kernel tests (fp32 and bf16 at realistic shapes), bench/kernels.py (fwd+bwd time and peak memory
# against eager and torch.compile, and a PASS/FAIL line per target), bench/trainer.py --gpu-only (MFU of the
# 125m and 350m presets in bf16). Paste the logs into bench/README.md with the GPU model and date.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt, remember a failure
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "=== $name: exit $rc"; status=1; }
}
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1;
  "$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$OUT/machine.txt"
step gpu_tests 180 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/kernels
step kernels 300 "$PY" bench/kernels.py --repeat 20
step trainer_mfu 180 "$PY" bench/trainer.py --gpu-only
exit $status
