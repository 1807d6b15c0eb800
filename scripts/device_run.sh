#!/usr/bin/env bash
# One call on the lent GPU machine (see docs/GPU.md): the CUDA tests on hardware (the torch
# drop-in on CUDA tensors included), torch/CuPy interop, and `embench perf --device cuda`; on
# request `train` (one training step of the layer: bert_embedding_kernels.bench.perf.gpu_train), `diag`
# (scripts/gpu_diagnose.py), `cpu` (embench perf on the CPU; CPU_BUDGET seconds, default 10) and
# `scaling` (embench scaling: the CPU kernels at 1, 2, 4, ... threads), `sizes`
# (scripts/threads_by_size.py: serial against parallel kernel by call size). Logs and tables go to
# $OUT. The image has no TBB, the threading layer a pip install brings on x86-64 Linux: copy
# .venv/lib/libtbb.so.12* into .tbb/ (ignored by git) and carry it, and the CPU steps use it.
#     bash scripts/device_run.sh            # tests, interop, gpu perf (~3 minutes on an H100)
#     STEPS="tests train gpu" GPU_ARGS=--no-compile bash scripts/device_run.sh
#     STEPS="cpu scaling" CPU_BUDGET=30 bash scripts/device_run.sh   # carry .tbb
set -u
export PYTHONPATH=$PWD/kernels:$PWD PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
STEPS=${STEPS:-"tests interop gpu"}
[ -e .tbb/libtbb.so.12 ] && export LD_LIBRARY_PATH=$PWD/.tbb${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{ date -u; nvidia-smi -L; nproc; uptime; lscpu | head -n 25
  cat /sys/kernel/mm/transparent_hugepage/enabled
  python3 -c "import numba, numpy, torch; print('numba', numba.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
  python3 -m pip list 2>/dev/null | grep -i -E "^(numba|numba-cuda|llvmlite|cupy|ml.dtypes) "; } 2>&1 | tee "$OUT/env.txt"
for step in $STEPS; do
  echo "=== $step $(date -u +%T)"
  case $step in
    tests) timeout 240 python3 -m pytest tests/cuda -q -p no:cacheprovider -p no:randomly -p no:warnings ${TEST_ARGS:-} 2>&1 | tail -n 60 | tee "$OUT/tests.txt" ;;
    train) timeout 200 python3 -m bert_embedding_kernels.bench.perf.gpu_train --write "$OUT/train.md" 2>&1 | tail -n 30 ;;
    interop) timeout 120 python3 scripts/device_interop.py 2>&1 | tee "$OUT/interop.txt" ;;
    gpu) timeout 270 python3 -m bert_embedding_kernels.bench perf --device cuda ${GPU_ARGS:-} --write "$OUT/gpu.md" > "$OUT/gpu.log" 2>&1; tail -n 40 "$OUT/gpu.log" ;;
    profile) timeout 120 python3 scripts/gpu_profile_step.py 2>&1 | grep -v -i warn | tee "$OUT/profile.txt" | head -n 120 ;;
    diag) timeout 150 python3 scripts/gpu_diagnose.py > "$OUT/diag.txt" 2>&1; grep -v "^ *[0-9]" "$OUT/diag.txt" | grep -v Warn | grep -v "warn(" ;;
    cpu) timeout 300 python3 -m bert_embedding_kernels.bench perf --budget ${CPU_BUDGET:-10} --write "$OUT/cpu.md" > "$OUT/cpu.log" 2>&1; tail -n 40 "$OUT/cpu.log" ;;
    sizes) timeout 120 python3 scripts/threads_by_size.py 2>&1 | tee "$OUT/threads_by_size.md" ;;
    scaling) timeout 200 python3 -m bert_embedding_kernels.bench scaling --budget ${CPU_BUDGET:-10} --write "$OUT/scaling.md" > "$OUT/scaling.log" 2>&1; tail -n 12 "$OUT/scaling.log" ;;
  esac
done
echo "=== done $(date -u +%T)"
