#!/usr/bin/env bash
# One prepared run for a lent GPU (the `device` tool): fits one 10-minute call, leaving the rest of a
# 15-minute budget to rerun it. Prints JSON lines; the figures go, dated, into docs/accelerators.md.
#
#   1. the device and versions;
#   2. correctness on the device: several devices agree, exact second order, the XLA kernel forms;
#   3. the search step of each order at DARTS's GPU size (8 cells, C=16, batch 64), the first order
#      also in bfloat16 (search.dtype), with XLA's fusion autotuner on (run.fusion_autotune) and with
#      its passes as one loop (search.passes=loop), its compile and step times beside; a profiler
#      trace of 3 first-order steps, summarised, the trace left in $OUT/trace-first;
#   4. one epoch of the first-order search on CIFAR-sized synthetic data through the real input
#      pipeline (experiments/search_epoch.py): the 50-epoch search time it implies;
#   5. the retraining step at DARTS's size; the reweighting steps and hypergradients
#      (experiments/bench_hypergrad.py), CIFAR-sized; then each DARTS-family method while time is left.
#
# The GPU image has jax (CUDA; 0.11.2 when last seen), flax, optax and chex and no network. jaxnas also
# needs ml_collections (and absl, yaml); build them here and carry them (under 64 MiB):
#   .venv/bin/pip install --quiet --no-deps --target .devdeps --python-version 3.12 \
#       --platform manylinux2014_x86_64 --only-binary=:all: ml_collections absl-py pyyaml
#   run(command="bash experiments/device_check.sh", carry=[".devdeps"], timeout_s=590)
set -uo pipefail
export PYTHONPATH="$PWD:$PWD/.devdeps:${PYTHONPATH:-}"
export JAXNAS_HUGE_PAGES=0
CACHE=/tmp/jaxnas_cache
deadline=$((SECONDS + ${DEVICE_CHECK_SECONDS:-560}))
left() { echo $((deadline - SECONDS)); }
python -c "import jax, json; print(json.dumps({'what': 'device', 'devices': [str(d) for d in jax.devices()], 'jax': jax.__version__, 'date': __import__('time').strftime('%Y-%m-%d %H:%M UTC', __import__('time').gmtime())}))"
timeout 120 python -m pytest -q -x -p no:cacheprovider -o addopts="" tests/test_bilevel.py tests/test_parallel.py \
  tests/test_spaces_edges.py 2>&1 | tail -2 | sed 's/^/# pytest: /'
for order in first second second_fd; do
  [ "$(left)" -gt 120 ] || break
  timeout $(($(left) - 60)) python experiments/bench_search_step.py --order $order --batch 64 --steps 10 --cache $CACHE \
    2>/dev/null | grep -v machine
done
# the first-order step in mixed precision (search.dtype=bfloat16: half the bytes a step, deviceless)
[ "$(left)" -gt 150 ] && timeout $(($(left) - 90)) python experiments/bench_search_step.py --order first --batch 64 \
  --steps 10 --dtype bfloat16 --cache $CACHE 2>/dev/null | grep -v machine
# the same first-order step with XLA's fusion autotuner on (jaxnas turns it off: half the compile time)
[ "$(left)" -gt 150 ] && timeout $(($(left) - 90)) python experiments/bench_search_step.py --order first --batch 64 \
  --steps 10 --fusion-autotune 2>/dev/null | grep -v machine | sed 's/^{/{"fusion_autotune": true, /'
# the first order's two passes as one compiled body (search.passes=loop: less compile, a sixth more bytes)
[ "$(left)" -gt 150 ] && timeout $(($(left) - 90)) python experiments/bench_search_step.py --order first --batch 64 \
  --steps 10 --passes loop --cache $CACHE 2>/dev/null | grep -v machine
# a profiler trace of 3 first-order steps (compiled above, from the cache): the top kernels, and the trace in $OUT
if [ -n "${OUT:-}" ] && [ "$(left)" -gt 120 ]; then
  timeout $(($(left) - 60)) python experiments/bench_search_step.py --order first --batch 64 --steps 3 --cache $CACHE \
    --profile "$OUT/trace-first" 2>/dev/null | grep -v machine
  python experiments/profile_summary.py "$OUT/trace-first" --top 15 2>&1 | sed 's/^/# profile: /'
  gzip -f "$OUT/trace-first/step.hlo.txt" 2>/dev/null
fi
[ "$(left)" -gt 90 ] && timeout $(($(left) - 30)) python experiments/search_epoch.py --order first --batch 64
[ "$(left)" -gt 120 ] && timeout $(($(left) - 60)) python experiments/search_epoch.py --order first --batch 64 \
  --dtype bfloat16
[ "$(left)" -gt 90 ] && timeout $(($(left) - 30)) python experiments/bench_train_step.py --genotype DARTS_V2 --C 36 \
  --layers 20 --batch 96 --steps 10 2>/dev/null | grep -v machine
# the reweighting steps and hypergradients against a plain step, CIFAR-sized (docs/hypergradients.md's cost table)
[ "$(left)" -gt 90 ] && timeout $(($(left) - 30)) python experiments/bench_hypergrad.py --steps 5 --image 32 \
  --channels 3 --ks 1,5,20 2>/dev/null | grep '^{' | sed 's/^{/{"what": "hypergrad", /'
for method in pcdarts gdas drnas fairdarts sdarts_rs betadarts darts_minus snas sdarts_adv; do
  [ "$(left)" -gt 90 ] || { echo "{\"what\": \"skipped\", \"method\": \"$method\", \"why\": \"out of time\"}"; continue; }
  timeout $(($(left) - 30)) python experiments/bench_search_step.py --method $method --batch 64 --steps 5 --cache $CACHE \
    --child 2>/dev/null
done
echo "{\"what\": \"done\", \"seconds\": $SECONDS}"
