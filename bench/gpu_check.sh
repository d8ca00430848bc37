#!/usr/bin/env bash
# The GPU checks of the Kernels and Trainer issues as one prepared run, for a session that is lent a GPU
# machine: one device call of at most 600 s on an H100/H200 (each step has its own time limit, so one hang cannot
# eat the lease). It uses that machine's own python3 (torch and triton preinstalled, no package index) and
# gristmill from this checkout; the data-side dependencies (Beam, kenlm, fastText, ...) are not needed.
#
#   bash bench/gpu_check.sh                 # every step (limits 140 + 190 + 220 s): one device call
#   bash bench/gpu_check.sh tests kernels   # some steps (tests, kernels, trainer), e.g. to rerun what failed
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh   # on a machine with the project's venv
#
# A bare GPU box may lack pytest. `bash bench/gpu_check.sh prepare`, run where the project's venv is (or with
# PYTHON=/path/to/that/venv/bin/python, e.g. from a worktree), copies pytest and its pure-Python dependencies into
# .gpu_pylib/ (git-ignored, about 7 MB); carry that folder to the device and the run puts it on PYTHONPATH when
# the machine's python cannot import pytest by itself.
#
# Steps: GPU kernel tests (fp32 and bf16 at realistic shapes), bench/kernels.py (fwd+bwd time and peak memory
# against eager and torch.compile, and a PASS/FAIL line per target), bench/trainer.py --gpu-only (MFU of the
# 125m and 350m presets in bf16, eager and compiled blocks). Paste the logs into bench/README.md with the GPU
# model and date.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
  site=$("${PYTHON:-.venv/bin/python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || exit 1
  rm -rf .gpu_pylib && mkdir -p .gpu_pylib
  for m in pytest _pytest pluggy iniconfig packaging pygments py.py; do cp -r "$site/$m" .gpu_pylib/ || exit 1; done
  find .gpu_pylib -name __pycache__ -prune -exec rm -rf {} +
  du -sh .gpu_pylib; exit 0
fi
PY=${PYTHON:-python3}
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c 'import pytest' 2>/dev/null && [ -d .gpu_pylib ]; then export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_pylib"; fi
status=0
steps=${*:-tests kernels trainer}
for s in $steps; do
  case $s in tests|kernels|trainer) ;; *) echo "gpu_check.sh: unknown step '$s' (choose from: tests kernels trainer)" >&2; exit 2 ;; esac
done
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt, remember a failure
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "=== $name: exit $rc"; status=1; }
}
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1;
  "$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$OUT/machine.txt"
for s in $steps; do
  case $s in
    # Two pytest runs under one limit: the trainer tests' conftest imports PyYAML and pyarrow, and where the box
    # lacks them pytest stops at that import and runs nothing, the kernel tests included.
    tests) step gpu_tests 140 bash -c '"$1" -m pytest -q -p no:cacheprovider -m gpu tests/kernels; k=$?
                                       "$1" -m pytest -q -p no:cacheprovider -m gpu tests/trainer/test_train.py
                                       t=$?; exit $((k > t ? k : t))' gpu_tests "$PY" ;;
    kernels) step kernels 190 "$PY" bench/kernels.py --repeat 20 ;;
    trainer) step trainer_mfu 220 "$PY" bench/trainer.py --gpu-only ;;
  esac
done
exit $status
