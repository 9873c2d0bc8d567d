#!/usr/bin/env bash
# The CPU benchmarks for this machine's own target and for AVX2, one after the other (run it alone).
# On an AVX-512 machine the AVX2 rows are an emulation: jaxnas's kernels built with
# -march=x86-64-v3 (AVX2 + FMA; JAXNAS_NATIVE_MARCH) and XLA's generated code limited to AVX2
# (--xla_cpu_max_isa=AVX2). Same cores, caches and clocks, so it isolates the instruction set,
# not the other differences of an AVX2-only CPU.
#
#   bash experiments/cpu_targets.sh [OUT_DIR]     (default: /tmp/cpu_targets; about 10 minutes on 2 cores)
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${1:-/tmp/cpu_targets}
mkdir -p "$OUT"
for target in native avx2; do
  if [ "$target" = avx2 ]; then
    export JAXNAS_NATIVE_MARCH=x86-64-v3 XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_max_isa=AVX2"
  fi
  echo "== $target: kernels" >&2
  $PY experiments/bench_kernels.py --out "$OUT/kernels-$target.jsonl" | tee "$OUT/kernels-$target.txt"
  echo "== $target: first-order search step" >&2
  $PY experiments/bench_search_step.py --order first --batch 32 --C 16 --layers 8 --image 32 --warmup 1 --steps 3 \
    | tee "$OUT/step-$target.jsonl"
done
