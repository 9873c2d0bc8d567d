#!/usr/bin/env bash
# One short run for a lent GPU (the `device` tool): a few tests on the accelerator, then the
# search and retraining benchmarks at the sizes. Prints one JSON line per benchmark.
#
# The GPU image has jax (CUDA), flax, optax, chex and no network; jaxnas also needs
# ml_collections, so build it here first and carry it along:
#   .venv/bin/pip install --quiet --no-deps --target .devdeps ml_collections
#   run(command="bash experiments/device_check.sh", carry=[".devdeps"], timeout_s=540)
set -uo pipefail
export PYTHONPATH="$PWD:$PWD/.devdeps:${PYTHONPATH:-}"
python -c "import jax; print('devices:', jax.devices())"
date -u
# correctness on the accelerator: one, two... devices agree, exact second order, resume
timeout 240 python -m pytest -q -x tests/test_bilevel.py tests/test_parallel.py tests/test_ops.py 2>&1 | tail -3
# speed: the CPU size, then DARTS's GPU batch size
for order in first second second_fd; do
  timeout 150 python experiments/bench_search_step.py --order $order --batch 32 --C 16 --layers 8 --image 32 --steps 10
done
timeout 120 python experiments/bench_search_step.py --order first --batch 64 --C 16 --layers 8 --image 32 --steps 10
timeout 150 python experiments/bench_train_step.py --genotype DARTS_V2 --C 36 --layers 20 --batch 96 --steps 10
# the other depthwise form of the search supernet (jaxnas/spaces/edges.py), last: it may not fit the time left
timeout 120 python experiments/bench_search_step.py --order first --batch 32 --C 16 --layers 8 --image 32 --steps 10 --depthwise shift
date -u
