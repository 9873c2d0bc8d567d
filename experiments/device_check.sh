#!/usr/bin/env bash
# One short run for a lent GPU (the `device` tool): the accelerator tests, then the search and
# retraining benchmarks at the sizes. Prints one JSON line per benchmark. Fits 10 minutes.
#
# The GPU image has jax (CUDA), flax, optax and chex and no network; jaxnas also needs
# ml_collections, so build it here first and carry it along:
#   .venv/bin/pip install --quiet --no-deps --target .devdeps --python-version 3.12 \
#       --platform manylinux2014_x86_64 --only-binary=:all: ml_collections absl-py pyyaml
#   run(command="bash experiments/device_check.sh", carry=[".devdeps"], timeout_s=590)
set -uo pipefail
export PYTHONPATH="$PWD:$PWD/.devdeps:${PYTHONPATH:-}"
python -c "import jax; print('devices:', jax.devices(), 'jax', jax.__version__)"
date -u
# correctness on the accelerator: several devices agree, exact second order, the XLA kernel forms
timeout 170 python -m pytest -q -x -p no:cacheprovider tests/test_bilevel.py tests/test_parallel.py \
  tests/test_ops.py tests/test_spaces_edges.py 2>&1 | tail -4
# speed: the CPU issue's size in both orders, DARTS's GPU batch size, and retraining
timeout 100 python experiments/bench_search_step.py --order first --steps 10
timeout 120 python experiments/bench_search_step.py --order second_fd --steps 10
timeout 80 python experiments/bench_search_step.py --order first --batch 64 --steps 10
timeout 100 python experiments/bench_train_step.py --genotype DARTS_V2 --C 36 --layers 20 --batch 96 --steps 10
date -u
